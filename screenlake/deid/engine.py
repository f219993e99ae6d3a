"""De-identifying one DICOM instance under a `Profile`.

The engine checks what would make the result unsafe or inconsistent (a missing identifier,
pixels that may carry identity), walks every element at every depth with the profile's
actions (`elements`), cleans the collected text once every identifier is known
(`descriptors`), sets the patient pseudonym, records the method and rebuilds the file meta
(`filemeta`). Instances it cannot de-identify safely raise `UnreadableInstanceError`, whose
message is the quarantine reason: `category: detail`, with no identifying value in it.
"""

from __future__ import annotations

import copy
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from pydicom import config as pydicom_config
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from screenlake.deid.dates import missing_age, shift_date, shift_datetime
from screenlake.deid.elements import Walk, clean_dataset, finish_text, strings
from screenlake.deid.filemeta import (
    IMPLEMENTATION_CLASS_UID,
    original_transfer_syntax,
    put,
    rebuild_file_meta,
    record_method,
)
from screenlake.deid.pixels import PixelRules, clean_pixels, load_pixel_rules, pixel_identity_risk
from screenlake.deid.profile import Action, Profile
from screenlake.deid.reading import READ_ERRORS, identity_problem, malformed, read_instance
from screenlake.deid.writing import write_file
from screenlake.errors import UnreadableInstanceError
from screenlake.keys import date_shift_days, patient_pseudonym

__all__ = [
    "IMPLEMENTATION_CLASS_UID",
    "DeidentifiedResult",
    "deidentify_dataset",
    "deidentify_file",
    "read_instance",
    "shift_date",
    "shift_datetime",
    "write_deidentified",
]
_PATIENT_AGE = 0x00101010
_OTHER_PATIENT_IDS_SEQUENCE = 0x00101002
_PATIENT_ID = 0x00100020


@dataclass(frozen=True)
class DeidentifiedResult:
    """A de-identified dataset and what the audit trail records about it."""

    dataset: Dataset
    actions_applied: int
    # Kept free-text values the sweep cleaned (also counted in actions_applied).
    kept_text_cleaned: int
    patient_pseudonym: str
    study_instance_uid: str
    sop_instance_uid: str
    profile_version: str


def deidentify_dataset(ds: Dataset, key: bytes, profile: Profile) -> DeidentifiedResult:
    """De-identify a copy of `ds` under `profile`; `ds` itself is left as it was.

    The copy is structural: data sets and sequences are new, elements are shared, and the
    engine replaces elements rather than changing them, so copying costs little even with
    large pixel data. Raises UnreadableInstanceError (the quarantine reason) when the instance
    lacks a SOPClassUID, SOPInstanceUID, StudyInstanceUID, SeriesInstanceUID or PatientID, when
    its pixels may carry identity and the profile quarantines such instances, or when a value
    does not fit its VR (the mark of a damaged file).
    """
    with _values_unlogged():
        return _deidentify(structural_copy(ds), key, profile)


def deidentify_file(src: Path, key: bytes, profile: Profile) -> DeidentifiedResult:
    """Read `src` and de-identify it in place (nothing else holds the data set); unreadable,
    incomplete or unsafe files raise UnreadableInstanceError with the quarantine reason."""
    with _values_unlogged():
        return _deidentify(read_instance(src), key, profile)


def write_deidentified(result: DeidentifiedResult, dest: Path) -> None:
    """Write the de-identified dataset as a DICOM file at `dest`, atomically (temp, then rename).

    Elements the engine left untouched, pixel data included, are written as the bytes read
    (`writing`). No fsync per file: a batch is swapped in whole once it is complete.
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    temporary = dest.with_name(f".{dest.name}.{uuid.uuid4().hex}.tmp")
    placed = False
    try:
        with temporary.open("xb") as handle, _values_unlogged():
            write_file(result.dataset, handle)
        os.replace(temporary, dest)
        placed = True
    finally:
        if not placed:
            temporary.unlink(missing_ok=True)


@contextmanager
def _values_unlogged() -> Iterator[None]:
    """pydicom warns about, and logs, a value that does not fit its VR by quoting it, and such
    a value may identify someone; nothing is validated on the way in (the engine checks what
    it keeps, and quarantines a damaged value with a reason that quotes nothing)."""
    settings = pydicom_config.settings
    before = settings.reading_validation_mode
    settings.reading_validation_mode = pydicom_config.IGNORE
    try:
        yield
    finally:
        settings.reading_validation_mode = before


def structural_copy(ds: Dataset) -> Dataset:
    """A copy of `ds` with its own data sets and sequences at every depth, sharing elements."""
    copied = copy.copy(ds)
    copied._dict = {tag: _copied(element) for tag, element in ds._dict.items()}
    copied._private_blocks = {}
    return copied


def _copied(element: DataElement | RawDataElement) -> DataElement | RawDataElement:
    if isinstance(element, DataElement) and element.VR == "SQ" and element.value is not None:
        items = Sequence([structural_copy(item) for item in element.value])
        return DataElement(
            element.tag, "SQ", items, is_undefined_length=element.is_undefined_length
        )
    return element


def _deidentify(ds: Dataset, key: bytes, profile: Profile) -> DeidentifiedResult:
    try:
        return _run(ds, key, profile)
    except READ_ERRORS as error:
        # Values are decoded only when the engine needs them, so a damaged one fails here.
        raise malformed(error) from error
    except OSError as error:
        if error.errno is not None:
            raise
        raise malformed(error) from error


def _run(ds: Dataset, key: bytes, profile: Profile) -> DeidentifiedResult:
    problem = identity_problem(ds)
    if problem is not None:
        raise UnreadableInstanceError(problem)
    masked = _pixels(ds, profile)
    patient_id = str(ds.PatientID).strip("\x00 ")
    walk = Walk(
        profile=profile,
        key=key,
        patient_pseudonym=patient_pseudonym(key, patient_id),
        shift_days=date_shift_days(key, patient_id),
    )
    syntax = original_transfer_syntax(ds)
    # Age is kept as a patient characteristic; derive it before the birth date goes.
    age = missing_age(ds) if profile.resolve(_PATIENT_AGE) is Action.KEEP else None
    _other_patient_ids(ds, walk)
    clean_dataset(ds, walk)
    finish_text(walk)
    if age is not None:
        put(ds, "PatientAge", "AS", age)
        walk.applied += 1
    # Type 2 identifiers stay present, as pseudonyms, whatever the input held.
    put(ds, "PatientID", "LO", walk.patient_pseudonym)
    if "PatientName" not in ds:
        put(ds, "PatientName", "PN", walk.patient_pseudonym)
    if "AccessionNumber" not in ds:
        put(ds, "AccessionNumber", "SH", "")
    record_method(ds, profile, pixels_cleaned=masked > 0)
    rebuild_file_meta(ds, syntax)
    return DeidentifiedResult(
        dataset=ds,
        actions_applied=masked + walk.applied,
        kept_text_cleaned=walk.swept,
        patient_pseudonym=walk.patient_pseudonym,
        study_instance_uid=str(ds.StudyInstanceUID),
        sop_instance_uid=str(ds.SOPInstanceUID),
        profile_version=profile.version,
    )


def _pixels(ds: Dataset, profile: Profile) -> int:
    """Quarantine or clean an instance whose pixels may carry identity (decided on the
    original header); other pixel data stays the bytes read. Returns regions masked."""
    reason = pixel_identity_risk(ds)
    if reason is None:
        return 0
    if profile.pixel_policy == "quarantine":
        raise UnreadableInstanceError(f"pixels may carry identity: {reason}")
    # Masking sets attributes in place; elements a caller's data set may share are copied first.
    for tag, element in list(ds._dict.items()):
        if isinstance(element, DataElement) and element.VR != "SQ":
            ds._dict[tag] = copy.copy(element)
    meta = getattr(ds, "file_meta", None)
    if meta is not None:
        ds.file_meta = copy.deepcopy(meta)
    return clean_pixels(ds, _pixel_rules(profile.pixel_rules))


@lru_cache(maxsize=8)
def _pixel_rules(path: Path | None) -> PixelRules:
    return load_pixel_rules(path)


def _other_patient_ids(ds: Dataset, walk: Walk) -> None:
    # The sequence is removed without being walked; its IDs (a BSN among them) may still be
    # written in descriptor text, so they join the instance's identifiers first.
    if _OTHER_PATIENT_IDS_SEQUENCE not in ds:
        return
    for item in ds[_OTHER_PATIENT_IDS_SEQUENCE].value or ():
        if _PATIENT_ID in item:
            element = item._dict[_PATIENT_ID]
            walk.identifiers.add("id", strings(item, _PATIENT_ID, element, "LO"))
