"""Reading a PACS's answers: an invalid value (a UID with letters, a date out of format) is read
as sent, without a warning or a log line that quotes it (pydicom's reading checks are off for
the whole package, in `screenlake/__init__.py`)."""

from __future__ import annotations

import logging
import warnings
from io import BytesIO

import pytest
from pydicom import config as pydicom_config
from pydicom import dcmread
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian

from screenlake.pacs.query import from_qido, study_hit

BAD_UID = "1.2.826.0.1.3680043.8.498.7730911.x1"
BAD_DATE = "2024-03-11"
PATIENT_ID = "PID7730911"


def _c_find_answer() -> Dataset:
    """A study-level answer as pynetdicom hands it on: decoded lazily, values unread."""
    ds = Dataset()
    previous = pydicom_config.settings.writing_validation_mode
    pydicom_config.settings.writing_validation_mode = pydicom_config.IGNORE
    try:
        ds.StudyInstanceUID = BAD_UID
        ds.StudyDate = BAD_DATE
        ds.PatientID = PATIENT_ID
        ds.file_meta = FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        out = BytesIO()
        ds.save_as(out, enforce_file_format=False)
    finally:
        pydicom_config.settings.writing_validation_mode = previous
    return dcmread(BytesIO(out.getvalue()), force=True)


def _qido_answer() -> Dataset:
    return from_qido(
        {
            "0020000D": {"vr": "UI", "Value": [BAD_UID]},
            "00080020": {"vr": "DA", "Value": [BAD_DATE]},
            "00100020": {"vr": "LO", "Value": [PATIENT_ID]},
        }
    )


@pytest.mark.parametrize("answer", [_c_find_answer, _qido_answer])
def test_invalid_values_are_read_without_quoting_them(
    answer: object, caplog: pytest.LogCaptureFixture
) -> None:
    with warnings.catch_warnings(record=True) as caught, caplog.at_level(logging.DEBUG):
        warnings.simplefilter("always")
        hit = study_hit(answer())  # type: ignore[operator]
    assert hit is not None
    assert (hit.study_uid, hit.patient_id) == (BAD_UID, PATIENT_ID)
    said = [str(w.message) for w in caught] + [r.getMessage() for r in caplog.records]
    assert not [s for s in said if "7730911" in s or BAD_DATE in s], said
