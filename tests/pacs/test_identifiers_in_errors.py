"""Nothing identifying leaves the PHI zone through errors, logs or warnings from the PACS
sources, on a real Orthanc each test may break: a PACS that stops in the middle of a
retrieval, loses an instance, refuses us, or is down. The study's UIDs and its patient's name,
ID and accession are searched for in each error's message, repr and traceback with its whole
chain (what Dagster records of a failed step), and in every log record and warning."""

from __future__ import annotations

import logging
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import pydicom
import pytest
import requests
from pydicom import config as pydicom_config

import resources.dicomweb as dicomweb_module
from resources.sources import StudySource
from screenlake.devservers.orthanc import ORTHANC_AET, Orthanc
from screenlake.errors import (
    IncompleteRetrievalError,
    PacsError,
    PacsRefusedError,
    PacsUnavailableError,
)
from screenlake.ingest import SourceFile, batch_files, land_files, source_files_of
from screenlake.layout import Batch
from tests.dicom_factory import ct_slice, write
from tests.leaks import assert_names_none, leaks
from tests.pacs.checks import StopAfter, dicomweb, dimse

pytestmark = pytest.mark.pacs

DAY = date(2024, 3, 11)
PATIENT_NAME, PATIENT_ID, ACCESSION = "Jansen^Pieter", "PID7730911", "ACC99120417"
MARK = "7730911"  # in every UID of the study
STUDY_UID = f"1.2.826.0.1.3680043.8.498.{MARK}"
SERIES = 2
SLICES = 6  # per series
# A component with a leading zero: not conformant, as real PACS data sometimes is; libraries
# that validate UIDs put such values into their warnings.
ODD_SOP_UID = f"{STUDY_UID}.1.09"
IDENTIFIERS = (PATIENT_NAME, "Jansen", "Pieter", PATIENT_ID, ACCESSION, MARK)
KINDS = ["dicomweb", "dimse-get", "dimse-move"]


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """One chest CT of two series whose headers and UIDs name the patient."""
    folder = tmp_path_factory.mktemp("planted")
    paths = []
    previous = pydicom_config.settings.writing_validation_mode
    pydicom_config.settings.writing_validation_mode = pydicom_config.IGNORE
    try:
        for series in range(1, SERIES + 1):
            for n in range(1, SLICES + 1):
                sop = f"{STUDY_UID}.{series}.{n}" if (series, n) != (1, 1) else ODD_SOP_UID
                ds = ct_slice(
                    patient_id=PATIENT_ID,
                    patient_name=PATIENT_NAME,
                    study_uid=STUDY_UID,
                    series_uid=f"{STUDY_UID}.{series}",
                    sop_uid=sop,
                    accession=ACCESSION,
                    study_date=f"{DAY:%Y%m%d}",
                    z=float(n),
                )
                ds.SeriesNumber = series
                ds.InstanceNumber = n
                paths.append(write(ds, folder / f"{series}-{n}.dcm"))
    finally:
        pydicom_config.settings.writing_validation_mode = previous
    return paths


@pytest.fixture
def pacs(study: list[Path], tmp_path: Path, dicomweb_password: str) -> Iterator[Orthanc]:
    """An Orthanc of the test's own holding the study."""
    server = Orthanc(tmp_path / "orthanc").start()
    try:
        assert server.upload(study) == len(study)
        yield server
    finally:
        server.stop()


def _source(kind: str, server: Orthanc, **settings: Any) -> StudySource:
    if kind == "dicomweb":
        return dicomweb(server, connections=1, retry_attempts=2, retry_delay_s=0.05, **settings)
    return dimse(
        server,
        retrieve=kind.split("-")[1],
        associations=1,
        retry_attempts=2,
        retry_delay_s=0.05,
        **settings,
    )


def _listed(source: StudySource) -> tuple[Batch, list[SourceFile]]:
    batch = Batch(DAY, "lung_ldct")
    files = source_files_of(batch_files(source.list_day(DAY), batch))
    assert len(files) == SERIES * SLICES
    assert all(MARK in f.ref for f in files)  # the references themselves are PHI
    return batch, files


@dataclass
class Heard:
    """Log records (WARNING and up, what reaches a handler by default) and warnings."""

    records: list[logging.LogRecord]
    warned: list[warnings.WarningMessage]

    def texts(self) -> list[str]:
        formatter = logging.Formatter()
        return [formatter.format(r) for r in self.records] + [str(w.message) for w in self.warned]


class _Keep(logging.Handler):
    def __init__(self, into: list[logging.LogRecord]) -> None:
        super().__init__(logging.WARNING)
        self.into = into

    def emit(self, record: logging.LogRecord) -> None:
        self.into.append(record)


@contextmanager
def heard() -> Iterator[Heard]:
    """What the code inside logs at WARNING or above, anywhere, and the warnings it emits."""
    found = Heard([], [])
    handler = _Keep(found.records)
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            yield found
            found.warned.extend(caught)
    finally:
        root.removeHandler(handler)


def _quiet(found: Heard) -> None:
    said = [t for t in found.texts() if leaks(t, IDENTIFIERS)]
    assert not said, said


@pytest.mark.parametrize("kind", KINDS)
def test_a_whole_landing_logs_and_warns_nothing_identifying(
    pacs: Orthanc, tmp_path: Path, kind: str
) -> None:
    source = _source(kind, pacs)
    with heard() as found:
        batch, files = _listed(source)
        manifest = land_files(files, batch, source, tmp_path / "raw")
    assert manifest.height == len(files)
    _quiet(found)


@pytest.mark.parametrize("kind", KINDS)
def test_a_pacs_stopped_mid_retrieval_names_no_patient(
    pacs: Orthanc, tmp_path: Path, kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = _source(kind, pacs)
    batch, files = _listed(source)
    if kind == "dicomweb":
        # A series comes in one answer, all sent before the PACS can stop on loopback: read it
        # slowly, and cut it short once the PACS is down, as a large series would be.
        written_parts = dicomweb_module._written_parts

        def cut_when_down(events: Any, temporary: Path) -> Any:
            for written in written_parts(events, temporary):
                time.sleep(0.05)
                if pacs.process is None:
                    raise requests.ConnectionError(f"cut short: {pacs.url}/studies/{STUDY_UID}")
                yield written

        monkeypatch.setattr(dicomweb_module, "_written_parts", cut_when_down)

    with heard() as found, pytest.raises(PacsUnavailableError) as down:
        land_files(files, batch, StopAfter(source, pacs, count=3), tmp_path / "raw")

    assert_names_none(down.value, IDENTIFIERS)
    _quiet(found)


@pytest.mark.parametrize("kind", KINDS)
def test_an_instance_gone_since_listing_names_no_uid(
    pacs: Orthanc, tmp_path: Path, kind: str
) -> None:
    source = _source(kind, pacs)
    batch, files = _listed(source)
    for gone in (files[0], files[-1]):  # the odd UID, and one in a series of its own now
        assert gone.sop_instance_uid is not None
        pacs.delete(gone.sop_instance_uid)

    with heard() as found:
        with pytest.raises(IncompleteRetrievalError) as missing:
            land_files(files, batch, source, tmp_path / "raw")
        with pytest.raises(IncompleteRetrievalError) as one:
            source.fetch(files[0], tmp_path / "one.dcm")

    assert "2 of" in str(missing.value)
    assert_names_none(missing.value, IDENTIFIERS)
    assert_names_none(one.value, IDENTIFIERS)
    _quiet(found)


@pytest.mark.parametrize("kind", KINDS)
def test_a_pacs_that_refuses_us_names_no_patient(
    pacs: Orthanc, tmp_path: Path, kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    batch, files = _listed(_source(kind, pacs))
    if kind == "dicomweb":
        monkeypatch.setenv("SCREENLAKE_DICOMWEB_PASSWORD", "not-the-password")
        refusing = _source(kind, pacs)
    else:
        refusing = _source(kind, pacs, called_aet=f"NOT{ORTHANC_AET}"[:16])

    with heard() as found:
        with pytest.raises(PacsRefusedError) as landing:
            land_files(files, batch, refusing, tmp_path / "raw")
        with pytest.raises(PacsRefusedError) as listing:
            refusing.list_day(DAY)

    assert_names_none(landing.value, IDENTIFIERS)
    assert_names_none(listing.value, IDENTIFIERS)
    _quiet(found)


@pytest.mark.parametrize("kind", KINDS)
def test_a_pacs_that_is_down_names_no_patient(pacs: Orthanc, tmp_path: Path, kind: str) -> None:
    source = _source(kind, pacs)
    batch, files = _listed(source)
    pacs.crash()

    with heard() as found:
        with pytest.raises(PacsUnavailableError) as landing:
            land_files(files, batch, source, tmp_path / "raw")
        with pytest.raises(PacsError) as listing:
            source.list_day(DAY)

    assert_names_none(landing.value, IDENTIFIERS)
    assert_names_none(listing.value, IDENTIFIERS)
    _quiet(found)


def test_the_planted_study_is_what_the_pacs_holds(pacs: Orthanc) -> None:
    """The fixture plants what the tests look for: without it they could not fail."""
    stored = pydicom.dcmread(pacs.uploaded[ODD_SOP_UID], stop_before_pixels=True)
    assert (str(stored.PatientName), stored.PatientID) == (PATIENT_NAME, PATIENT_ID)
    assert stored.AccessionNumber == ACCESSION
