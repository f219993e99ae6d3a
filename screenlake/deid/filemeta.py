"""What a de-identified instance says about itself: a rebuilt file meta header and the record
of the method (PatientIdentityRemoved, DeidentificationMethod and its CID 7050 codes)."""

from __future__ import annotations

from pydicom import config
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.tag import BaseTag
from pydicom.uid import UID, ExplicitVRLittleEndian

from screenlake.deid.profile import Profile

# A 2.25 UUID-derived UID: uuid5(NAMESPACE_URL, "urn:screenlake:deid:implementation").
IMPLEMENTATION_CLASS_UID = "2.25.41257615229872814164315913826944616066"
IMPLEMENTATION_VERSION_NAME = "SCREENLAKE_DEID2"
CLEAN_PIXEL_DATA_CODE = ("113101", "Clean Pixel Data Option")
_TRANSFER_SYNTAX_UID = 0x00020010
_SOP_CLASS_UID, _SOP_INSTANCE_UID = 0x00080016, 0x00080018


def original_transfer_syntax(ds: Dataset) -> UID | None:
    """The transfer syntax the instance was encoded in, from its file meta, if it has one."""
    meta = getattr(ds, "file_meta", None)
    if meta is None:
        return None
    syntax = meta.get(_TRANSFER_SYNTAX_UID)
    if syntax is None or not syntax.value:
        return None
    return UID(str(syntax.value).strip("\x00 "))


def rebuild_file_meta(ds: Dataset, syntax: UID | None) -> None:
    """Replace the file meta header with one built from an allow-list.

    Source and sending AE titles, presentation addresses and private information of the
    original header never reach the research zone; MediaStorageSOPInstanceUID is the
    (already keyed) SOPInstanceUID. The transfer syntax stays, so that pixel data is copied as
    it was, compressed or not.
    """
    meta = FileMetaDataset()
    for tag, vr, value in (
        (0x00020001, "OB", b"\x00\x01"),
        (0x00020002, "UI", ds[_SOP_CLASS_UID].value),
        (0x00020003, "UI", ds[_SOP_INSTANCE_UID].value),
        (_TRANSFER_SYNTAX_UID, "UI", syntax or ExplicitVRLittleEndian),
        (0x00020012, "UI", IMPLEMENTATION_CLASS_UID),
        (0x00020013, "SH", IMPLEMENTATION_VERSION_NAME),
    ):
        meta._dict[BaseTag(tag)] = DataElement(tag, vr, value, validation_mode=config.IGNORE)
    ds.file_meta = meta
    # The preamble is free for any use, and some exporters put data there.
    ds.preamble = b"\x00" * 128


def record_method(ds: Dataset, profile: Profile, pixels_cleaned: bool) -> None:
    """PatientIdentityRemoved, the profile name and version, the CID 7050 codes of the profile
    and its options (and of Clean Pixel Data when this instance's pixels were masked), and the
    temporal information flag."""
    codes = []
    used = profile.method_codes + ((CLEAN_PIXEL_DATA_CODE,) if pixels_cleaned else ())
    for value, meaning in sorted(used):
        code = Dataset()
        for tag, vr, text in (
            (0x00080100, "SH", value),
            (0x00080102, "SH", "DCM"),
            (0x00080104, "LO", meaning),
        ):
            code._dict[BaseTag(tag)] = DataElement(tag, vr, text, validation_mode=config.IGNORE)
        codes.append(code)
    for keyword, vr, value in (
        ("PatientIdentityRemoved", "CS", "YES"),
        ("DeidentificationMethod", "LO", profile.method),
        ("LongitudinalTemporalInformationModified", "CS", profile.temporal_information),
    ):
        put(ds, keyword, vr, value)
    ds["DeidentificationMethodCodeSequence"] = DataElement(0x00120064, "SQ", Sequence(codes))


def put(ds: Dataset, keyword: str, vr: str, value: object) -> None:
    """Set an attribute through a new element, never by changing a shared one in place."""
    element = DataElement(keyword, vr, value, validation_mode=config.IGNORE)
    ds[element.tag] = element
