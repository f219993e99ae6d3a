"""De-identifying one DICOM instance under a `Profile`: header attributes at every sequence depth.

The engine applies the profile's action per attribute (see `screenlake.deid.profile`), replaces
identifiers with keyed values from `screenlake.keys`, and records what it did in the dataset
(PatientIdentityRemoved, DeidentificationMethod and its CID 7050 codes). Pixel data is copied
untouched. Instances it cannot de-identify safely raise `UnreadableInstanceError`, whose message
is the quarantine reason: `category: detail`, with no identifying value in it.

Not done yet, and the seams for it: pixel cleaning (`_quarantine_reason` quarantines burned-in
annotation instead), SR and presentation-state content (`_dummy` empties a sequence the table
marks D), descriptor cleaning and safe private attributes (their options fall back in the
profile).
"""

from __future__ import annotations

import copy
import os
import re
import struct
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pydicom
from pydicom.datadict import dictionary_VR
from pydicom.dataelem import DataElement, empty_value_for_VR
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.errors import BytesLengthException, InvalidDicomError
from pydicom.pixels.utils import get_expected_length
from pydicom.sequence import Sequence
from pydicom.uid import UID, ExplicitVRLittleEndian, UID_dictionary

from screenlake.deid.profile import DUMMY_VRS, REPLACEMENT_GENERATORS, Action, Profile
from screenlake.errors import UnreadableInstanceError
from screenlake.keys import accession_pseudonym, date_shift_days, keyed_uid, patient_pseudonym

# A 2.25 UUID-derived UID: uuid5(NAMESPACE_URL, "urn:screenlake:deid:implementation").
IMPLEMENTATION_CLASS_UID = "2.25.41257615229872814164315913826944616066"
IMPLEMENTATION_VERSION_NAME = "SCREENLAKE_DEID1"
_PATIENT_AGE = 0x00101010
_DATE_RE = re.compile(r"(\d{4})\.?(\d{2})\.?(\d{2})")
_DATETIME_RE = re.compile(
    r"(\d{4})(\d{2})?(\d{2})?(\d{2}(?:\d{2}(?:\d{2}(?:\.\d{1,6})?)?)?)?([+-]\d{4})?"
)
_IMAGE_ATTRIBUTES = (
    "Rows",
    "Columns",
    "BitsAllocated",
    "SamplesPerPixel",
    "PhotometricInterpretation",
)
_TEXT_VRS = DUMMY_VRS | {"UI"}
# Control characters no text VR allows (TAB, LF, FF, CR and ESC are allowed in some).
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0e-\x1a\x1c-\x1f\x7f]")
# Characters a value of these VRs can hold, leniently (lower case and the punctuation some
# vendors use are tolerated); a name or an ID that lands here through damage does not fit.
_VR_CHARACTERS = {
    vr: re.compile(pattern)
    for vr, pattern in (
        ("UI", r"[0-9.]{0,64}"),
        ("DS", r"[0-9+\-.eE ]{0,32}"),
        ("IS", r"[0-9+\-. ]{0,16}"),
        ("AS", r"[0-9DWMY ]{0,8}"),
        ("CS", r"[A-Za-z0-9 _\-./]{0,32}"),
        ("DA", r"[0-9.\- ]{0,18}"),
        ("TM", r"[0-9.: ]{0,28}"),
        ("DT", r"[0-9.+\- ]{0,54}"),
    )
}
# What pydicom raises on damaged input: unknown VRs (NotImplementedError), ambiguous VRs it
# cannot resolve (AttributeError), a character set of the wrong type (TypeError), values of
# the wrong length or form, items past the end.
_READ_ERRORS = (
    EOFError,
    ValueError,
    BytesLengthException,
    struct.error,
    OverflowError,
    NotImplementedError,
    AttributeError,
    TypeError,
)


@dataclass(frozen=True)
class DeidentifiedResult:
    """A de-identified dataset and what the audit trail records about it."""

    dataset: Dataset
    actions_applied: int
    patient_pseudonym: str
    study_instance_uid: str
    sop_instance_uid: str
    profile_version: str


@dataclass(frozen=True)
class _Context:
    key: bytes
    profile: Profile
    patient_pseudonym: str
    shift_days: int


def deidentify_dataset(ds: Dataset, key: bytes, profile: Profile) -> DeidentifiedResult:
    """De-identify a copy of `ds` under `profile`; `ds` itself is left as it was.

    Raises UnreadableInstanceError (the quarantine reason) when the instance lacks a
    SOPClassUID, SOPInstanceUID, StudyInstanceUID, SeriesInstanceUID or PatientID, declares
    burned-in annotation (which this version cannot clean), or keeps a value that does not fit
    its VR (the mark of a damaged file).
    """
    return _deidentify(copy.deepcopy(ds), key, profile)


def deidentify_file(src: Path, key: bytes, profile: Profile) -> DeidentifiedResult:
    """Read `src` in full and de-identify it; unreadable or incomplete files raise
    UnreadableInstanceError with the quarantine reason."""
    return _deidentify(read_instance(src), key, profile)


def read_instance(src: Path) -> Dataset:
    """Read a DICOM file with its pixel data, and fail on empty, non-DICOM or truncated files."""
    try:
        if src.stat().st_size == 0:
            raise UnreadableInstanceError("empty file: 0 bytes; re-export the instance")
        ds = pydicom.dcmread(src, defer_size=None, force=False)
        # Decode every element now, so that a damaged value fails here and not half way
        # through de-identification.
        for _ in ds.iterall():
            pass
    except InvalidDicomError as error:
        raise UnreadableInstanceError(
            "not DICOM: no valid DICOM file header (preamble, 'DICM' prefix and file meta "
            "information); the file is not a DICOM instance"
        ) from error
    except OSError as error:
        if error.errno is None:
            # pydicom raises a bare OSError when an item or value runs past the end of the file.
            raise _malformed(error) from error
        raise UnreadableInstanceError(f"unreadable file: {error.strerror}") from error
    except _READ_ERRORS as error:
        raise _malformed(error) from error
    if len(ds) == 0:
        # pydicom returns an empty data set when the file ends inside an undefined length.
        raise UnreadableInstanceError(
            "truncated file: no data set after the file meta header; re-export the instance"
        )
    _check_pixel_data(ds)
    return ds


def _malformed(error: BaseException) -> UnreadableInstanceError:
    # The exception's own text can quote element values, so only its type is kept.
    kind = "struct.error" if isinstance(error, struct.error) else type(error).__name__
    return UnreadableInstanceError(
        f"malformed DICOM: {kind} while parsing; the file is truncated or damaged, "
        "re-export the instance"
    )


def write_deidentified(result: DeidentifiedResult, dest: Path) -> None:
    """Write the de-identified dataset as a DICOM file at `dest`, atomically (temp, then rename)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    temporary = dest.with_name(f".{dest.name}.{uuid.uuid4().hex}.tmp")
    placed = False
    try:
        with temporary.open("xb") as handle:
            result.dataset.save_as(handle, enforce_file_format=True)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, dest)
        placed = True
    finally:
        if not placed:
            temporary.unlink(missing_ok=True)


def shift_date(value: str, days: int) -> str:
    """A DA value moved `days` days back; raises ValueError when it is not a date."""
    match = _DATE_RE.fullmatch(value.strip())
    if match is None:
        raise ValueError("not a DA value")
    year, month, day = (int(g) for g in match.groups())
    return (date(year, month, day) - timedelta(days=days)).strftime("%Y%m%d")


def shift_datetime(value: str, days: int) -> str:
    """A DT value whose date part is moved `days` days back, at the same precision, with its time
    and timezone suffix kept; raises ValueError when it is not a DT."""
    match = _DATETIME_RE.fullmatch(value.strip())
    if match is None:
        raise ValueError("not a DT value")
    year, month, day, time, zone = match.groups()
    shifted = date(int(year), int(month or 1), int(day or 1)) - timedelta(days=days)
    precision = 8 if day else 6 if month else 4
    return shifted.strftime("%Y%m%d")[:precision] + (time or "") + (zone or "")


def patient_age(birth_date: str, on: str) -> str | None:
    """The AS value for a patient born on `birth_date` at date `on` (both DA), or None."""
    try:
        born, then = (date.fromisoformat(_iso(v)) for v in (birth_date, on))
    except ValueError:
        return None
    if then < born:
        return None
    years = then.year - born.year - ((then.month, then.day) < (born.month, born.day))
    months = (then.year - born.year) * 12 + then.month - born.month - (then.day < born.day)
    days = (then - born).days
    if years >= 1:
        return f"{min(years, 999):03d}Y"
    if months >= 1:
        return f"{months:03d}M"
    return f"{days // 7:03d}W" if days >= 7 else f"{days:03d}D"


def _iso(value: str) -> str:
    match = _DATE_RE.fullmatch(value.strip())
    if match is None:
        raise ValueError("not a DA value")
    return "-".join(match.groups())


def _deidentify(ds: Dataset, key: bytes, profile: Profile) -> DeidentifiedResult:
    reason = _quarantine_reason(ds)
    if reason is not None:
        raise UnreadableInstanceError(reason)
    patient_id = str(ds.PatientID)
    context = _Context(
        key=key,
        profile=profile,
        patient_pseudonym=patient_pseudonym(key, patient_id),
        shift_days=date_shift_days(key, patient_id),
    )
    # Age is kept as a patient characteristic; derive it before the birth date goes.
    age = _missing_age(ds) if profile.action_for(_PATIENT_AGE) is Action.KEEP else None
    applied = _clean(ds, context)
    if age is not None:
        ds.PatientAge = age
        applied += 1
    # Type 2 identifiers stay present, as pseudonyms, whatever the input held.
    ds.PatientID = context.patient_pseudonym
    if "PatientName" not in ds:
        ds.PatientName = context.patient_pseudonym
    if "AccessionNumber" not in ds:
        ds.AccessionNumber = ""
    _record_method(ds, profile)
    _reset_file_meta(ds)
    # The preamble is free for any use, and some exporters put data there.
    ds.preamble = b"\x00" * 128
    return DeidentifiedResult(
        dataset=ds,
        actions_applied=applied,
        patient_pseudonym=context.patient_pseudonym,
        study_instance_uid=str(ds.StudyInstanceUID),
        sop_instance_uid=str(ds.SOPInstanceUID),
        profile_version=profile.version,
    )


def _quarantine_reason(ds: Dataset) -> str | None:
    for keyword, why in (
        ("SOPClassUID", "the instance cannot be written as a DICOM file"),
        ("SOPInstanceUID", "the instance cannot be identified or deduplicated"),
        ("StudyInstanceUID", "the instance cannot be placed in a study"),
        ("SeriesInstanceUID", "the instance cannot be placed in a series"),
        ("PatientID", "no pseudonym or date shift can be derived"),
    ):
        if not str(ds.get(keyword) or "").strip():
            return f"missing {keyword}: {why}; fix the export"
        element = ds.data_element(keyword)
        if element is not None and not _vr_matches(element):
            return f"malformed DICOM: {keyword} has VR {element.VR}; the file is damaged"
    if str(ds.get("BurnedInAnnotation") or "").strip().upper() == "YES":
        return (
            "burned-in annotation: BurnedInAnnotation is YES and pixel cleaning is not "
            "implemented yet"
        )
    return None


def _missing_age(ds: Dataset) -> str | None:
    if str(ds.get("PatientAge") or "").strip():
        return None
    birth = str(ds.get("PatientBirthDate") or "")
    for keyword in ("StudyDate", "SeriesDate", "AcquisitionDate", "ContentDate"):
        on = str(ds.get(keyword) or "")
        if birth and on:
            return patient_age(birth, on)
    return None


def _clean(ds: Dataset, context: _Context) -> int:
    applied = 0
    for tag in list(ds.keys()):
        element = ds[tag]
        # Group lengths would be stale after removals; command and file meta elements do not
        # belong in a stored data set (the file meta is rebuilt); a value of unknown VR cannot
        # be checked against any rule.
        if tag.element == 0 or tag.group in (0x0000, 0x0002) or element.VR == "UN":
            del ds[tag]
            applied += 1
            continue
        if not _vr_matches(element):
            # A damaged or mis-encoded element: the rule for its tag cannot vouch for a value
            # of another VR, and a replacement of the tag's VR would not fit it.
            del ds[tag]
            applied += 1
            continue
        action = context.profile.action_for(tag)
        if action is None:
            action = context.profile.unlisted_action(tag, element.VR)
        applied += _apply(ds, element, action, context)
        if tag in ds and element.VR == "SQ":
            for item in ds[tag].value:
                applied += _clean(item, context)
    return applied


def _apply(ds: Dataset, element: DataElement, action: Action, context: _Context) -> int:
    if action is Action.KEEP:
        return _check_kept(ds, element)
    if action is Action.REMOVE:
        del ds[element.tag]
    elif action is Action.ZERO:
        element.value = empty_value_for_VR(element.VR)
    elif action is Action.DUMMY:
        element.value = _dummy(element, context)
    elif action is Action.UID:
        _set_values(element, [_uid(v, context.key) for v in _values(element)])
    else:
        return _clean_temporal(ds, element, context.shift_days)
    return 1


def _clean_temporal(ds: Dataset, element: DataElement, days: int) -> int:
    """C under the modified dates option: dates move back by the patient's offset, times stay."""
    if element.VR == "TM":
        return _check_kept(ds, element)
    if element.VR in ("DA", "DT"):
        shift = shift_date if element.VR == "DA" else shift_datetime
        _set_values(element, [_shifted(shift, v, days) for v in _values(element)])
    else:
        # The profile asks for C only on temporal attributes; nothing else is cleaned here.
        del ds[element.tag]
    return 1


def _check_kept(ds: Dataset, element: DataElement) -> int:
    """A kept value must look like its VR; damage (a flipped tag byte, a wrong length
    swallowing the next elements) would otherwise carry identifiers under a harmless tag."""
    if element.VR not in _TEXT_VRS:
        return 0
    values = [v.rstrip("\x00 ") for v in _values(element)]
    characters = _VR_CHARACTERS.get(element.VR)
    if any(_CONTROL.search(v) for v in values) or (
        characters is not None and not all(characters.fullmatch(v) for v in values)
    ):
        raise UnreadableInstanceError(
            f"malformed DICOM: {element.keyword or element.tag} holds a value that is not a "
            f"valid {element.VR}; the file is damaged, re-export the instance"
        )
    return 0


def _vr_matches(element: DataElement) -> bool:
    try:
        expected = dictionary_VR(element.tag)
    except KeyError:
        return True
    # An in-memory element can still carry the dictionary's "OB or OW" until it is written.
    return element.VR == expected or element.VR in expected.split(" or ")


def _dummy(element: DataElement, context: _Context) -> Any:
    generator = context.profile.replacement_for(element.tag)
    if generator is not None:
        return _REPLACEMENTS[generator](context, str(element.value or ""))
    if element.VR == "UI":
        return [_uid(v, context.key) for v in _values(element)]
    # Sequences marked D (SR content, graphic annotations) are emptied until their content
    # can be cleaned item by item; binary values become zero length.
    return context.profile.dummy_values.get(element.VR, empty_value_for_VR(element.VR))


def _uid(value: str, key: bytes) -> str:
    # Registered DICOM UIDs (well-known frames of reference, coding schemes) identify no one.
    if not value or value in UID_dictionary:
        return value
    return keyed_uid(key, value)


def _shifted(shift: Callable[[str, int], str], value: str, days: int) -> str:
    if not value.strip():
        return value
    try:
        return shift(value, days)
    except (ValueError, OverflowError):
        # A date that cannot be shifted cannot be kept either.
        return ""


def _values(element: DataElement) -> list[str]:
    if element.VM == 0:
        return []
    if element.VM == 1:
        return [str(element.value)]
    return [str(v) for v in element.value]


def _set_values(element: DataElement, values: list[str]) -> None:
    element.value = values[0] if len(values) == 1 else values


def _record_method(ds: Dataset, profile: Profile) -> None:
    ds.PatientIdentityRemoved = "YES"
    ds.DeidentificationMethod = profile.method
    codes = []
    for value, meaning in profile.method_codes:
        code = Dataset()
        code.CodeValue = value
        code.CodingSchemeDesignator = "DCM"
        code.CodeMeaning = meaning
        codes.append(code)
    ds.DeidentificationMethodCodeSequence = Sequence(codes)
    ds.LongitudinalTemporalInformationModified = profile.temporal_information


def _reset_file_meta(ds: Dataset) -> None:
    # Rebuilt from an allow-list: source AE titles, presentation addresses and private
    # information in the original meta header never reach the research zone.
    original = getattr(ds, "file_meta", None)
    syntax = original.get("TransferSyntaxUID") if original is not None else None
    meta = FileMetaDataset()
    meta.FileMetaInformationVersion = b"\x00\x01"
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = syntax or ExplicitVRLittleEndian
    meta.ImplementationClassUID = UID(IMPLEMENTATION_CLASS_UID)
    meta.ImplementationVersionName = IMPLEMENTATION_VERSION_NAME
    ds.file_meta = meta


def _check_pixel_data(ds: Dataset) -> None:
    sop_class = UID(str(ds.get("SOPClassUID") or ""))
    is_image = "Rows" in ds or "Image Storage" in sop_class.name
    has_pixels = any(k in ds for k in ("PixelData", "FloatPixelData", "DoubleFloatPixelData"))
    if is_image and not has_pixels:
        raise UnreadableInstanceError(
            "truncated file: an image instance without pixel data; re-export the instance"
        )
    if "PixelData" not in ds:
        return
    missing = [k for k in _IMAGE_ATTRIBUTES if not isinstance(ds.get(k), int | str)]
    if missing:
        raise UnreadableInstanceError(
            f"incomplete image: pixel data without a valid {', '.join(missing)}; fix the export"
        )
    pixels: bytes = ds.PixelData
    syntax = ds.file_meta.get("TransferSyntaxUID")
    if not isinstance(syntax, str) or not UID(syntax).is_transfer_syntax:
        raise UnreadableInstanceError(
            "malformed DICOM: the file meta has no valid TransferSyntaxUID; fix the export"
        )
    if UID(syntax).is_encapsulated:
        if not _fragments_complete(pixels):
            raise UnreadableInstanceError(
                "truncated file: encapsulated pixel data ends inside a fragment; "
                "re-export the instance"
            )
        return
    try:
        expected = get_expected_length(ds, "bytes")
    except (TypeError, ValueError) as error:
        raise UnreadableInstanceError(
            "incomplete image: the image pixel attributes do not give a pixel data length; "
            "fix the export"
        ) from error
    if len(pixels) < expected:
        raise UnreadableInstanceError(
            f"truncated file: pixel data has {len(pixels)} bytes, expected {expected}; "
            "re-export the instance"
        )


def _fragments_complete(pixels: bytes) -> bool:
    """Whether encapsulated pixel data is whole: an offset table and at least one fragment,
    each item's declared length inside the value (PS3.5 A.4)."""
    offset = items = 0
    while offset + 8 <= len(pixels):
        group, element, length = struct.unpack_from("<HHL", pixels, offset)
        if (group, element) != (0xFFFE, 0xE000):
            return False
        offset += 8 + length
        items += 1
    return offset == len(pixels) and items >= 2


def _patient_replacement(context: _Context, value: str) -> str:
    return context.patient_pseudonym


def _accession_replacement(context: _Context, value: str) -> str:
    return accession_pseudonym(context.key, value) if value.strip() else ""


_REPLACEMENTS: dict[str, Callable[[_Context, str], str]] = {
    "patient_pseudonym": _patient_replacement,
    "accession_pseudonym": _accession_replacement,
}
if set(_REPLACEMENTS) != REPLACEMENT_GENERATORS:  # pragma: no cover - caught by any test run
    raise AssertionError("engine replacements and profile.REPLACEMENT_GENERATORS disagree")
