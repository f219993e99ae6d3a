"""Bad files for the synthetic export, placed inside study series folders for quarantine to find.

Each day gets one of each kind: a non-DICOM file, a truncated file, an empty file and a file
without a SOP Instance UID.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
from pydicom import dcmread

from screenlake.synth.plan import PlannedStudy, series_dir

TRUNCATED_NAME = "IM99999.dcm"
NO_SOP_UID_NAME = "IM99998.dcm"
EMPTY_NAME = "IM99997.dcm"
NOT_DICOM_NAMES = ("thumbnail.jpg", "notes.txt")


def _not_dicom(folder: Path, day_index: int, rng: np.random.Generator) -> None:
    if day_index % 2 == 0:
        # A JPEG start-of-image marker, then noise: a viewer's thumbnail left in the export.
        (folder / NOT_DICOM_NAMES[0]).write_bytes(b"\xff\xd8\xff\xe0" + rng.bytes(2048))
    else:
        (folder / NOT_DICOM_NAMES[1]).write_text(
            "Export gecontroleerd door laborant. Serie compleet.\n", encoding="utf-8"
        )


def _truncated(folder: Path, day_index: int, rng: np.random.Generator) -> None:
    data = (folder / "IM00001.dcm").read_bytes()
    (folder / TRUNCATED_NAME).write_bytes(data[: len(data) // 2])


def _empty(folder: Path, day_index: int, rng: np.random.Generator) -> None:
    (folder / EMPTY_NAME).write_bytes(b"")


def _without_sop_instance_uid(folder: Path, day_index: int, rng: np.random.Generator) -> None:
    ds = dcmread(folder / "IM00001.dcm")
    del ds.SOPInstanceUID
    del ds.file_meta.MediaStorageSOPInstanceUID
    ds.InstanceNumber = 99998
    # enforce_file_format would refuse the missing UID; the preamble read above is kept.
    ds.save_as(folder / NO_SOP_UID_NAME, enforce_file_format=False)


_BAD_FILE_WRITERS: tuple[Callable[[Path, int, np.random.Generator], None], ...] = (
    _not_dicom,
    _truncated,
    _empty,
    _without_sop_instance_uid,
)


def write_bad_files(
    out: Path, day_studies: list[PlannedStudy], day_index: int, rng: np.random.Generator
) -> int:
    """Four bad files in the day's study folders, shared between the programmes present."""
    programmes = sorted({s.programme for s in day_studies})
    hosts = {name: next(s for s in day_studies if s.programme == name) for name in programmes}
    for kind, writer in enumerate(_BAD_FILE_WRITERS):
        # Rotate by day so that, over two days, each programme gets every kind of bad file.
        host = hosts[programmes[(kind + day_index) % len(programmes)]]
        writer(series_dir(out, host), day_index, rng)
    return len(_BAD_FILE_WRITERS)
