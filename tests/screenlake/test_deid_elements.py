"""Tests for screenlake.deid.elements: every element at every depth gets its profile action."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pydicom
import pytest
from pydicom.dataelem import DataElement
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset, write_file_meta_info
from pydicom.tag import Tag
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, RLELossless

from screenlake.deid import (
    Profile,
    deidentify_dataset,
    deidentify_file,
    load_default_profile,
    load_profile,
    write_deidentified,
)
from screenlake.deid.filemeta import IMPLEMENTATION_CLASS_UID, IMPLEMENTATION_VERSION_NAME
from screenlake.deid.profile import DEFAULT_PROFILE_PATH
from screenlake.keys import accession_pseudonym, patient_pseudonym
from tests.screenlake.test_deid_corpus import (
    ACCESSION,
    COLUMNS,
    KEY,
    NAME,
    PATIENT_ID,
    PIXELS,
    ROWS,
    make_ct,
    save,
)

NEGATIVE_CONTROLS = (
    "PatientSex",
    "PatientAge",
    "PatientWeight",
    "KVP",
    "SliceThickness",
    "PixelSpacing",
    "BodyPartExamined",
    "Modality",
    "ImageType",
    "Manufacturer",
    "Rows",
    "Columns",
    "BitsStored",
    "SOPClassUID",
    "SpecificCharacterSet",
    "StudyTime",
)


@pytest.fixture(scope="module")
def profile() -> Profile:
    return load_default_profile()


def test_standard_attributes(profile: Profile) -> None:
    out = deidentify_dataset(make_ct(), KEY, profile).dataset
    pseudonym = patient_pseudonym(KEY, PATIENT_ID)
    assert out.PatientID == out.PatientName == pseudonym
    assert out.AccessionNumber == accession_pseudonym(KEY, ACCESSION)
    assert out.PatientBirthDate == ""
    assert out.ReferringPhysicianName == ""
    assert out.InstitutionName == ""
    assert out.StationName == ""
    assert out.OperatorsName == ""
    assert out.DeviceSerialNumber == "ANONYMIZED"
    for keyword in (
        "PatientAddress",
        "PatientTelephoneNumbers",
        "OtherPatientIDsSequence",
        "PerformingPhysicianName",
        "InstitutionAddress",
        "StudyDescription",  # Clean Descriptors is off: descriptors go
        "SeriesDescription",
        "ImageComments",
        "PatientBirthDateInAlternativeCalendar",  # additional rule: the table lacks it
        "IssuerOfAccessionNumberSequence",
        "OriginalAttributesSequence",
    ):
        assert keyword not in out, keyword
    assert out.PatientIdentityRemoved == "YES"
    assert out.DeidentificationMethod == "screenlake-research 2024b-3"
    assert out.LongitudinalTemporalInformationModified == "MODIFIED"
    codes = [
        (c.CodeValue, c.CodingSchemeDesignator) for c in out.DeidentificationMethodCodeSequence
    ]
    assert codes == [("113100", "DCM"), ("113107", "DCM"), ("113108", "DCM")]


def test_sequences_three_deep(profile: Profile) -> None:
    out = deidentify_dataset(make_ct(), KEY, profile).dataset
    series = out.ReferencedImageEvidenceSequence[0].ReferencedSeriesSequence[0]
    instance = series.ReferencedSOPSequence[0]
    assert "PerformingPhysicianName" not in instance
    assert instance.ReferringPhysicianName == ""
    assert [e.tag for e in series if e.tag.is_private] == []
    assert sorted(e.keyword for e in instance) == [
        "ContentDate",
        "ReferencedSOPClassUID",
        "ReferencedSOPInstanceUID",
        "ReferringPhysicianName",
    ]


def test_file_meta_is_rebuilt(profile: Profile, tmp_path: Path) -> None:
    result = deidentify_file(save(make_ct(), tmp_path / "in.dcm"), KEY, profile)
    write_deidentified(result, tmp_path / "out.dcm")
    meta = pydicom.dcmread(tmp_path / "out.dcm").file_meta
    assert sorted(e.keyword for e in meta) == [
        "FileMetaInformationGroupLength",
        "FileMetaInformationVersion",
        "ImplementationClassUID",
        "ImplementationVersionName",
        "MediaStorageSOPClassUID",
        "MediaStorageSOPInstanceUID",
        "TransferSyntaxUID",
    ]
    assert meta.MediaStorageSOPInstanceUID == result.sop_instance_uid
    assert meta.MediaStorageSOPClassUID == CTImageStorage
    assert meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert meta.ImplementationClassUID == IMPLEMENTATION_CLASS_UID
    assert meta.ImplementationVersionName == IMPLEMENTATION_VERSION_NAME
    assert (tmp_path / "out.dcm").read_bytes()[:128] == b"\x00" * 128


def test_overlays_curves_private_and_unknown_elements(profile: Profile) -> None:
    out = deidentify_dataset(make_ct(), KEY, profile).dataset
    groups = {element.tag.group for element in out.iterall()}
    # Overlay Data goes (X), and the overlay's description, label, rows and columns with it.
    assert not [g for g in groups if 0x6000 <= g <= 0x601E or 0x5000 <= g <= 0x501E]
    assert not [element for element in out.iterall() if element.tag.is_private]
    assert not [element for element in out.iterall() if element.VR == "UN"]
    assert 0x44441002 not in out and 0x44441000 not in out


def test_a_public_attribute_sent_as_un_is_read_with_its_vr(
    profile: Profile, tmp_path: Path
) -> None:
    ds = make_ct()
    ds.add(DataElement(Tag("BodyPartExamined"), "UN", b"CHEST "))
    ds.add(DataElement(Tag("StudyComments"), "UN", f"about {NAME}".encode()))
    out = deidentify_file(save(ds, tmp_path / "un.dcm"), KEY, profile).dataset
    assert out["BodyPartExamined"].VR == "CS" and out.BodyPartExamined == "CHEST"
    assert "StudyComments" not in out


def test_negative_controls_are_untouched(profile: Profile, tmp_path: Path) -> None:
    original = make_ct()
    out = deidentify_dataset(original, KEY, profile).dataset
    for keyword in NEGATIVE_CONTROLS:
        assert out[keyword].value == original[keyword].value, keyword
    assert out.PixelData == PIXELS
    # Through a file too, where untouched elements stay raw and are written as read.
    source = save(make_ct(), tmp_path / "in.dcm")
    result = deidentify_file(source, KEY, profile)
    write_deidentified(result, tmp_path / "out.dcm")
    again = pydicom.dcmread(tmp_path / "out.dcm")
    for keyword in NEGATIVE_CONTROLS:
        assert again[keyword].value == original[keyword].value, keyword
    assert again.PixelData == PIXELS
    assert (again.Rows, again.Columns) == (ROWS, COLUMNS)


@pytest.mark.filterwarnings("ignore")
def test_compressed_pixel_data_is_copied_byte_for_byte(profile: Profile, tmp_path: Path) -> None:
    ds = make_ct()
    ds.compress(RLELossless)
    source = save(ds, tmp_path / "rle.dcm")
    result = deidentify_file(source, KEY, profile)
    write_deidentified(result, tmp_path / "out.dcm")
    out = pydicom.dcmread(tmp_path / "out.dcm")
    assert out.file_meta.TransferSyntaxUID == RLELossless
    assert out.PixelData == ds.PixelData
    # The encapsulated bytes appear unchanged in the file, fragment for fragment.
    assert ds.PixelData in (tmp_path / "out.dcm").read_bytes()


def test_large_pixel_data_is_read_only_to_be_written(profile: Profile, tmp_path: Path) -> None:
    ds = make_ct()
    ds.Rows = ds.Columns = 256
    pixels = struct.pack("<65536H", *range(65536))
    ds.PixelData = pixels
    result = deidentify_file(save(ds, tmp_path / "big.dcm"), KEY, profile)
    assert result.dataset._dict[Tag("PixelData")].value is None  # deferred until written
    write_deidentified(result, tmp_path / "out.dcm")
    assert pydicom.dcmread(tmp_path / "out.dcm").PixelData == pixels


def test_an_element_of_the_wrong_vr_is_removed(profile: Profile) -> None:
    ds = make_ct()
    ds.add(DataElement(Tag("BodyPartExamined"), "PN", NAME))
    out = deidentify_dataset(ds, KEY, profile).dataset
    assert "BodyPartExamined" not in out


@pytest.mark.filterwarnings("ignore")
def test_an_implicit_data_set_under_an_explicit_syntax(profile: Profile, tmp_path: Path) -> None:
    """pydicom reads a data set encoded otherwise than its meta says; the output is written
    in the declared encoding, every element with its VR."""
    ds = make_ct()
    fp = DicomBytesIO()
    fp.write(b"\x00" * 128 + b"DICM")
    write_file_meta_info(fp, ds.file_meta, enforce_standard=True)
    fp.is_implicit_VR, fp.is_little_endian = True, True
    write_dataset(fp, ds)
    path = tmp_path / "mixed.dcm"
    path.write_bytes(fp.getvalue())
    result = deidentify_file(path, KEY, profile)
    write_deidentified(result, tmp_path / "out.dcm")
    out = pydicom.dcmread(tmp_path / "out.dcm")
    assert out.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert out["BodyPartExamined"].VR == "CS" and out.BodyPartExamined == "CHEST"
    assert out.PixelData == PIXELS


def test_kept_text_is_swept_for_identifiers_by_default(profile: Profile, tmp_path: Path) -> None:
    ds = make_ct()
    ds.ManufacturerModelName = f"Force for {NAME.split('^')[0]}"  # kept by the table
    ds.SoftwareVersions = ["VB20", PATIENT_ID]
    result = deidentify_dataset(ds, KEY, profile)
    out = result.dataset
    assert out.Manufacturer == "SIEMENS"
    assert out.ManufacturerModelName == "Force for"
    assert out.SoftwareVersions == ["VB20", "ANONYMIZED"]
    assert result.kept_text_cleaned == 2
    # Switched off, the values stay, for the residual-PHI scan to catch.
    config = json.loads(DEFAULT_PROFILE_PATH.read_text())
    config["kept_text_sweep"] = False
    (tmp_path / "unswept.json").write_text(json.dumps(config))
    unswept = deidentify_dataset(ds, KEY, load_profile(tmp_path / "unswept.json"))
    assert unswept.dataset.ManufacturerModelName == "Force for Jansen"
    assert unswept.dataset.SoftwareVersions == ["VB20", PATIENT_ID]
    assert unswept.kept_text_cleaned == 0


@pytest.mark.parametrize(
    ("written", "left"),
    [
        ("ref. de Vries", "ref."),  # the referring physician
        ("by Smit", "by"),  # the operator
        ("born 14-03-1956", "born"),  # the birth date as people write it
        ("dob 14 maart 1956", "dob"),
        ("BSN 123456782", "BSN"),  # a valid BSN, whoever it is
        ("call 06-12345678", "call"),  # a Dutch mobile number
        ("from 3512 AB", "from"),  # a postcode
        ("acc ACC20240117-0042", "acc"),
    ],
)
def test_the_sweep_knows_every_identifier_of_the_instance_at_any_depth(
    profile: Profile, written: str, left: str
) -> None:
    ds = make_ct()
    ds.ManufacturerModelName = written
    region = pydicom.Dataset()
    region.CodeValue, region.CodingSchemeDesignator = "51185008", "SCT"
    region.CodeMeaning = f"Chest {written}"  # kept text inside a kept sequence's item
    ds.AnatomicRegionSequence = [region]
    result = deidentify_dataset(ds, KEY, profile)
    assert result.dataset.ManufacturerModelName == left
    assert result.dataset.AnatomicRegionSequence[0].CodeMeaning == f"Chest {left}"
    assert result.kept_text_cleaned == 2
