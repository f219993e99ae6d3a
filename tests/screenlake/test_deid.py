"""Tests for screenlake.deid: the profile derived from PS3.15 Table E.1-1 and the engine."""

from __future__ import annotations

import json
import pickle
from collections.abc import Callable
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence
from pydicom.tag import Tag
from pydicom.uid import UID, CTImageStorage, ExplicitVRLittleEndian, RLELossless

from screenlake.deid import (
    Action,
    deidentify_dataset,
    deidentify_file,
    load_default_profile,
    load_profile,
    write_deidentified,
)
from screenlake.deid.engine import IMPLEMENTATION_CLASS_UID, shift_date, shift_datetime
from screenlake.deid.profile import DEFAULT_PROFILE_PATH, TABLE_PATH, Profile
from screenlake.errors import ConfigurationError, UnreadableInstanceError
from screenlake.keys import (
    accession_pseudonym,
    date_shift_days,
    keyed_uid,
    patient_pseudonym,
    validate_pseudonym_key,
)

KEY = validate_pseudonym_key("a-test-key-that-is-long-enough-for-hmac-0001")
OTHER_KEY = validate_pseudonym_key("another-test-key-long-enough-for-hmac-0002")

PATIENT_ID = "PID-8403921"
NAME = "Jansen^Pieter^Hendrik"
BSN = "123456782"
BIRTH_DATE = "19560314"
ADDRESS = "Kerkstraat 12, 3512 AB Utrecht"
PHONE = "+31 30 123 4567"
ACCESSION = "ACC20240117-0042"
REFERRING = "de Vries^Anna"
PERFORMING = "Bakker^Jan"
INSTITUTION = "Ziekenhuis Noorderlicht"
STATION = "CTSCAN-NL-07"
SERIAL = "SN-99812734"
OPERATOR = "Smit^Karin"
NESTED_NAME = "Visser^Els"
NESTED_REFERRER = "Mulder^Tom"
SOURCE_AE = "PACS_NOORD"
DESCRIPTION = "Longscreening Jansen"
PRIVATE_CREATOR = "NOORD HOSPITAL 1.0"
ALTERNATIVE_BIRTH_DATE = "13341223"
IDENTIFYING = [
    PATIENT_ID, "Jansen", "Pieter", "Hendrik", BSN, BIRTH_DATE, "Kerkstraat", "Utrecht",
    "123 4567", ACCESSION, "Vries", "Bakker", "Noorderlicht", STATION, SERIAL, "Smit", "Visser",
    "Mulder", SOURCE_AE, PRIVATE_CREATOR, ALTERNATIVE_BIRTH_DATE,
]  # fmt: skip

STUDY_UID = "1.2.826.0.1.3680043.8.498.10000000000000000000000000000000001"
SERIES_UID = "1.2.826.0.1.3680043.8.498.10000000000000000000000000000000002"
SOP_UID = "1.2.826.0.1.3680043.8.498.10000000000000000000000000000000003"
FRAME_UID = "1.2.826.0.1.3680043.8.498.10000000000000000000000000000000004"
SOURCE_SOP_UID = "1.2.826.0.1.3680043.8.498.10000000000000000000000000000000005"
CONCATENATION_UID = "1.2.826.0.1.3680043.8.498.10000000000000000000000000000000006"
ORIGINAL_UIDS = [STUDY_UID, SERIES_UID, SOP_UID, FRAME_UID, SOURCE_SOP_UID, CONCATENATION_UID]

ROWS = COLUMNS = 64
PIXELS = np.arange(ROWS * COLUMNS, dtype=np.uint16).reshape(ROWS, COLUMNS).tobytes()


def _item(**attributes: object) -> Dataset:
    item = Dataset()
    for keyword, value in attributes.items():
        setattr(item, keyword, value)
    return item


def make_ct(
    *,
    patient_id: str = PATIENT_ID,
    study_uid: str = STUDY_UID,
    sop_uid: str = SOP_UID,
    study_date: str = "20240117",
) -> Dataset:
    """A CT slice full of fake PHI, with the nesting, private data and dates a PACS export has."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
    ds.file_meta.MediaStorageSOPInstanceUID = UID(sop_uid)
    ds.file_meta.SourceApplicationEntityTitle = SOURCE_AE
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = sop_uid
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = SERIES_UID
    ds.FrameOfReferenceUID = FRAME_UID
    ds.SOPInstanceUIDOfConcatenationSource = CONCATENATION_UID
    ds.StudyDate = ds.SeriesDate = ds.AcquisitionDate = ds.ContentDate = study_date
    ds.StudyTime = "101530"
    ds.AcquisitionDateTime = f"{study_date}101530.123456+0100"
    ds.DateOfLastCalibration = ["20231201", "20240110"]
    ds.Modality = "CT"
    ds.AccessionNumber = ACCESSION
    ds.InstitutionName = INSTITUTION
    ds.InstitutionAddress = "Ziekenhuisweg 1, Groningen Noorderlicht"
    ds.ReferringPhysicianName = REFERRING
    ds.PerformingPhysicianName = PERFORMING
    ds.OperatorsName = OPERATOR
    ds.StationName = STATION
    ds.StudyDescription = DESCRIPTION
    ds.PatientName = NAME
    ds.PatientID = patient_id
    ds.PatientBirthDate = BIRTH_DATE
    ds.PatientSex = "F"
    ds.PatientAge = "067Y"
    ds.PatientWeight = "72.5"
    ds.PatientAddress = ADDRESS
    ds.PatientBirthDateInAlternativeCalendar = ALTERNATIVE_BIRTH_DATE
    ds.IssuerOfAccessionNumberSequence = Sequence([_item(LocalNamespaceEntityID=INSTITUTION)])
    ds.PatientTelephoneNumbers = PHONE
    ds.OtherPatientIDsSequence = Sequence(
        [_item(PatientID=BSN, IssuerOfPatientID="NLMINBIZA", TypeOfPatientID="TEXT")]
    )
    ds.BodyPartExamined = "CHEST"
    ds.KVP = "120"
    ds.SliceThickness = "1.25"
    ds.DeviceSerialNumber = SERIAL
    ds.SourceImageSequence = Sequence(
        [
            _item(
                ReferencedSOPClassUID=CTImageStorage,
                ReferencedSOPInstanceUID=SOURCE_SOP_UID,
                PurposeOfReferenceCodeSequence=Sequence(
                    [_item(CodeValue="121320", CodingSchemeDesignator="DCM", CodeMeaning="x")]
                ),
            )
        ]
    )
    # Depth 3: evidence -> series -> instance, with a person name, a date and a UID reference.
    instance = _item(
        ReferencedSOPClassUID=CTImageStorage,
        ReferencedSOPInstanceUID=SOURCE_SOP_UID,
        PerformingPhysicianName=NESTED_NAME,
        ReferringPhysicianName=NESTED_REFERRER,
        ContentDate=study_date,
    )
    series = _item(SeriesInstanceUID=SERIES_UID, ReferencedSOPSequence=Sequence([instance]))
    series.private_block(0x0011, PRIVATE_CREATOR, create=True).add_new(0x01, "LO", NAME)
    evidence = _item(StudyInstanceUID=study_uid, ReferencedSeriesSequence=Sequence([series]))
    ds.ReferencedImageEvidenceSequence = Sequence([evidence])
    block = ds.private_block(0x0029, PRIVATE_CREATOR, create=True)
    block.add_new(0x01, "LO", NAME)
    block.add_new(0x02, "OB", PATIENT_ID.encode())
    ds.add(DataElement(0x44441000, "UN", NAME.encode()))
    ds.add(DataElement(0x44441002, "LO", NAME))  # a public tag no dictionary knows
    ds.add_new(0x60000010, "US", ROWS)
    ds.add_new(0x60003000, "OW", b"\x01" * (ROWS * COLUMNS // 8))
    ds.add_new(0x50003000, "OW", b"\x02\x00" * 8)
    ds.Rows, ds.Columns = ROWS, COLUMNS
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.PixelSpacing = [0.703125, 0.703125]
    ds.PixelData = PIXELS
    return ds


@pytest.fixture(scope="module")
def profile() -> Profile:
    return load_default_profile()


def _all_strings(ds: Dataset) -> list[str]:
    """Every element value of `ds` and its file meta, at every depth, as text."""
    datasets: list[Dataset] = [ds]
    if getattr(ds, "file_meta", None) is not None:
        datasets.append(ds.file_meta)
    found: list[str] = []
    for dataset in datasets:
        for element in dataset.iterall():
            value = element.value
            if isinstance(value, bytes):
                found.append(value.decode("latin-1"))
            elif isinstance(value, MultiValue | list):
                found.extend(str(v) for v in value)
            elif element.VR != "SQ":
                found.append(str(value))
    return found


def _shift(value: str, patient_id: str = PATIENT_ID, key: bytes = KEY) -> str:
    return shift_date(value, date_shift_days(key, patient_id))


# The profile ------------------------------------------------------------------------------


def test_profile_is_derived_from_the_table(profile: Profile) -> None:
    rows = json.loads(TABLE_PATH.read_text())
    assert profile.attribute_count == len(rows) == 621
    assert profile.name == "screenlake-research"
    assert profile.version == "2024b-1"
    assert profile.options == {"rtnLongModifDatesOpt", "rtnPatCharsOpt"}
    # Every simple code the switched-on options leave alone is taken over as the table says.
    for row, rule in zip(rows, profile.rules, strict=True):
        touched = any(option in row for option in profile.options)
        if "/" not in row["basicProfile"] and not touched and rule.decided_by == "basicProfile":
            assert rule.action == Action(row["basicProfile"]), row["name"]
    assert sum(rule.action is Action.UID for rule in profile.rules) == 54


@pytest.mark.parametrize(
    ("keyword_or_tag", "action"),
    [
        ("PatientName", Action.DUMMY),  # replaced by the patient pseudonym
        ("PatientID", Action.DUMMY),
        ("AccessionNumber", Action.DUMMY),
        ("PatientBirthDate", Action.ZERO),
        ("PatientAddress", Action.REMOVE),
        ("OtherPatientIDsSequence", Action.REMOVE),
        ("StudyInstanceUID", Action.UID),
        ("ReferencedSOPInstanceUID", Action.UID),
        ("StudyDate", Action.CLEAN),
        ("StudyTime", Action.CLEAN),
        ("PatientSex", Action.KEEP),
        ("PatientAge", Action.KEEP),
        ("PatientWeight", Action.KEEP),
        ("InstitutionName", Action.ZERO),  # X/Z/D
        ("SeriesDescription", Action.REMOVE),
        ("DeviceSerialNumber", Action.DUMMY),  # X/Z/D, type 1 override
        ("SourceImageSequence", Action.KEEP),  # X/Z/U*
        ("ContentDate", Action.CLEAN),
        ("TimezoneOffsetFromUTC", Action.REMOVE),  # C of another VR falls back
        (0x60023000, Action.REMOVE),  # Overlay Data, repeating group
        (0x601E4000, Action.REMOVE),  # Overlay Comments
        (0x50101234, Action.REMOVE),  # Curve Data
        (0x00291001, Action.REMOVE),  # private
        (0x00290010, Action.REMOVE),  # private creator
        ("Modality", None),
        (0x60000010, None),  # Overlay Rows is not listed
    ],
)
def test_profile_actions(
    profile: Profile, keyword_or_tag: str | int, action: Action | None
) -> None:
    assert profile.action_for(Tag(keyword_or_tag)) is action


def test_profile_options_are_switchable(tmp_path: Path) -> None:
    config = json.loads(DEFAULT_PROFILE_PATH.read_text())
    config["options"] = {name: False for name in config["options"]}
    basic = load_profile(_write(tmp_path / "basic.json", config))
    assert basic.action_for(Tag("PatientSex")) is Action.ZERO
    assert basic.action_for(Tag("PatientAge")) is Action.REMOVE
    assert basic.action_for(Tag("StudyDate")) is Action.ZERO
    assert basic.action_for(Tag("AcquisitionDateTime")) is Action.ZERO  # X/Z/D
    assert basic.action_for(Tag("SeriesDate")) is Action.REMOVE  # X/D
    assert basic.temporal_information == "REMOVED"
    assert [code for code, _ in basic.method_codes] == ["113100"]

    config["options"].update(rtnDevIdOpt=True, cleanDescOpt=True, rtnSafePrivOpt=True)
    device = load_profile(_write(tmp_path / "device.json", config))
    assert device.action_for(Tag("StationName")) is Action.KEEP
    assert device.action_for(Tag("DeviceSerialNumber")) is Action.KEEP
    assert device.action_for(Tag("StationAETitle")) is Action.REMOVE  # its C falls back
    assert device.action_for(Tag("StudyDescription")) is Action.REMOVE  # cleanDescOpt falls back
    assert device.action_for(0x00291001) is Action.REMOVE  # rtnSafePrivOpt falls back
    assert [code for code, _ in device.method_codes] == ["113100", "113109"]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"options": {"rtnEverythingOpt": True}}, "unknown options"),
        ({"options": {"rtnLongModifDatesOpt": True, "rtnLongFullDatesOpt": True}}, "exclude"),
        ({"compound_resolution": {"X/Z": "K"}}, "cannot resolve"),
        ({"table_sha256": "0" * 64}, "table_sha256"),
        ({"replacements": {"(0008,0060)": "patient_pseudonym"}}, "replacement"),
        ({"dummy_values": {"CS": "lower case"}}, "dummy"),
        ({"option": {}}, "unknown fields"),
        (
            {"additional_rules": {"(0010,0010)": {"name": "n", "action": "K", "reason": "r"}}},
            "additional rule",
        ),
    ],
)
def test_profile_rejects_invalid_configuration(
    tmp_path: Path, change: dict[str, object], message: str
) -> None:
    config = json.loads(DEFAULT_PROFILE_PATH.read_text())
    for field, value in change.items():
        if isinstance(value, dict) and isinstance(config.get(field), dict) and field != "options":
            config[field] = {**config[field], **value}
        else:
            config[field] = value
    with pytest.raises(ConfigurationError, match=message):
        load_profile(_write(tmp_path / "profile.json", config))


def test_profile_survives_pickling_for_worker_processes(profile: Profile) -> None:
    assert pickle.loads(pickle.dumps(profile)) == profile


def _write(path: Path, config: dict[str, object]) -> Path:
    path.write_text(json.dumps(config))
    return path


# The engine -------------------------------------------------------------------------------


def test_the_identifier_scan_sees_every_planted_value() -> None:
    strings = _all_strings(make_ct())
    for value in IDENTIFYING + ORIGINAL_UIDS + [DESCRIPTION]:
        assert [s for s in strings if value.lower() in s.lower()], value


def test_no_identifying_value_survives_at_any_depth(profile: Profile, tmp_path: Path) -> None:
    result = deidentify_dataset(make_ct(), KEY, profile)
    strings = _all_strings(result.dataset)
    for value in IDENTIFYING + ORIGINAL_UIDS + [DESCRIPTION]:
        assert not [s for s in strings if value.lower() in s.lower()], value
    write_deidentified(result, tmp_path / "out.dcm")
    raw = (tmp_path / "out.dcm").read_bytes().lower()
    for value in IDENTIFYING + ORIGINAL_UIDS:
        assert value.lower().encode() not in raw, value


def test_identifiers_are_replaced_or_removed(profile: Profile) -> None:
    out = deidentify_dataset(make_ct(), KEY, profile).dataset
    pseudonym = patient_pseudonym(KEY, PATIENT_ID)
    assert out.PatientID == pseudonym
    assert out.PatientName == pseudonym
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
        "StudyDescription",
        "PatientBirthDateInAlternativeCalendar",  # additional rule: the table lacks it
        "IssuerOfAccessionNumberSequence",
    ):
        assert keyword not in out, keyword
    instance = out.ReferencedImageEvidenceSequence[0].ReferencedSeriesSequence[0]
    instance = instance.ReferencedSOPSequence[0]
    assert "PerformingPhysicianName" not in instance
    assert instance.ReferringPhysicianName == ""
    assert out.PatientIdentityRemoved == "YES"
    assert out.DeidentificationMethod == "screenlake-research 2024b-1"
    assert out.LongitudinalTemporalInformationModified == "MODIFIED"
    codes = [
        (c.CodeValue, c.CodingSchemeDesignator) for c in out.DeidentificationMethodCodeSequence
    ]
    assert codes == [("113100", "DCM"), ("113107", "DCM"), ("113108", "DCM")]


def test_private_unknown_overlay_and_curve_data_are_removed(profile: Profile) -> None:
    out = deidentify_dataset(make_ct(), KEY, profile).dataset
    tags = [element.tag for element in out.iterall()]
    assert not [tag for tag in tags if tag.is_private]
    assert not [element for element in out.iterall() if element.VR == "UN"]
    assert 0x44441002 not in out
    assert 0x60003000 not in out and 0x50003000 not in out
    assert out[0x60000010].value == ROWS


def test_uids_are_remapped_consistently(profile: Profile) -> None:
    result = deidentify_dataset(make_ct(), KEY, profile)
    out = result.dataset
    assert out.StudyInstanceUID == keyed_uid(KEY, STUDY_UID) == result.study_instance_uid
    assert out.SeriesInstanceUID == keyed_uid(KEY, SERIES_UID)
    assert out.SOPInstanceUID == keyed_uid(KEY, SOP_UID) == result.sop_instance_uid
    assert out.FrameOfReferenceUID == keyed_uid(KEY, FRAME_UID)
    assert out.SOPInstanceUIDOfConcatenationSource == keyed_uid(KEY, CONCATENATION_UID)
    assert out.file_meta.MediaStorageSOPInstanceUID == out.SOPInstanceUID
    assert out.SOPClassUID == out.file_meta.MediaStorageSOPClassUID == CTImageStorage
    assert out.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert out.file_meta.ImplementationClassUID == IMPLEMENTATION_CLASS_UID
    assert "SourceApplicationEntityTitle" not in out.file_meta
    # A reference follows its target: the source instance de-identified on its own.
    source = deidentify_dataset(make_ct(sop_uid=SOURCE_SOP_UID), KEY, profile).dataset
    evidence = out.ReferencedImageEvidenceSequence[0]
    series = evidence.ReferencedSeriesSequence[0]
    assert evidence.StudyInstanceUID == out.StudyInstanceUID
    assert series.SeriesInstanceUID == out.SeriesInstanceUID
    assert series.ReferencedSOPSequence[0].ReferencedSOPInstanceUID == source.SOPInstanceUID
    assert out.SourceImageSequence[0].ReferencedSOPInstanceUID == source.SOPInstanceUID
    assert out.SourceImageSequence[0].ReferencedSOPClassUID == CTImageStorage
    for element in [*out.iterall(), *out.file_meta]:
        if element.VR == "UI" and element.value:
            assert UID(element.value).is_valid and len(element.value) <= 64, element


def test_same_key_same_output_and_another_key_another(profile: Profile) -> None:
    first = deidentify_dataset(make_ct(), KEY, profile)
    again = deidentify_dataset(make_ct(), KEY, profile)
    other = deidentify_dataset(make_ct(), OTHER_KEY, profile)
    assert again.dataset == first.dataset
    assert other.patient_pseudonym != first.patient_pseudonym
    assert other.dataset.PatientID != first.dataset.PatientID
    assert other.dataset.AccessionNumber != first.dataset.AccessionNumber
    assert other.study_instance_uid != first.study_instance_uid
    assert other.sop_instance_uid != first.sop_instance_uid
    assert other.dataset.FrameOfReferenceUID != first.dataset.FrameOfReferenceUID


def test_dates_shift_by_the_patient_offset_and_times_stay(profile: Profile) -> None:
    out = deidentify_dataset(make_ct(), KEY, profile).dataset
    days = date_shift_days(KEY, PATIENT_ID)
    assert 1 <= days <= 365
    shifted = (date(2024, 1, 17) - timedelta(days=days)).strftime("%Y%m%d")
    assert out.StudyDate == out.SeriesDate == out.AcquisitionDate == out.ContentDate == shifted
    assert list(out.DateOfLastCalibration) == [_shift("20231201"), _shift("20240110")]
    assert out.AcquisitionDateTime == f"{shifted}101530.123456+0100"
    assert out.StudyTime == "101530"
    nested = out.ReferencedImageEvidenceSequence[0].ReferencedSeriesSequence[0]
    assert nested.ReferencedSOPSequence[0].ContentDate == shifted


def test_two_studies_of_one_patient_keep_their_interval(profile: Profile) -> None:
    first = deidentify_dataset(make_ct(), KEY, profile).dataset
    later = make_ct(study_uid=STUDY_UID + "9", sop_uid=SOP_UID + "9", study_date="20250203")
    second = deidentify_dataset(later, KEY, profile).dataset

    def day(value: str) -> date:
        return date(int(value[:4]), int(value[4:6]), int(value[6:]))

    assert day(second.StudyDate) - day(first.StudyDate) == date(2025, 2, 3) - date(2024, 1, 17)
    assert second.PatientID == first.PatientID
    assert second.StudyInstanceUID != first.StudyInstanceUID


@pytest.mark.parametrize(
    ("shift", "value", "days", "expected"),
    [
        (shift_date, "20240301", 1, "20240229"),
        (shift_date, "2024.03.01", 1, "20240229"),
        (shift_datetime, "20240117101530.123456+0100", 20, "20231228101530.123456+0100"),
        (shift_datetime, "20240117-0500", 17, "20231231-0500"),
        (shift_datetime, "202401", 1, "202312"),
        (shift_datetime, "2024", 1, "2023"),
    ],
)
def test_shift_helpers(
    shift: Callable[[str, int], str], value: str, days: int, expected: str
) -> None:
    assert shift(value, days) == expected


@pytest.mark.filterwarnings("ignore:Invalid value for VR DA")
def test_malformed_date_is_emptied(profile: Profile) -> None:
    ds = make_ct()
    ds.SeriesDate = "not a date"
    assert deidentify_dataset(ds, KEY, profile).dataset.SeriesDate == ""


def test_a_dataset_without_file_meta_gets_one(profile: Profile, tmp_path: Path) -> None:
    ds = make_ct()
    del ds.file_meta
    result = deidentify_dataset(ds, KEY, profile)
    assert result.dataset.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert result.dataset.file_meta.MediaStorageSOPClassUID == CTImageStorage
    write_deidentified(result, tmp_path / "out.dcm")
    assert pydicom.dcmread(tmp_path / "out.dcm").SOPInstanceUID == result.sop_instance_uid


def test_registered_uids_stay(profile: Profile) -> None:
    ds = make_ct()
    talairach = "1.2.840.10008.1.4.1.1"
    ds.FrameOfReferenceUID = talairach
    ds.CodingSchemeUID = "1.2.826.0.1.3680043.8.498.7"
    out = deidentify_dataset(ds, KEY, profile).dataset
    assert out.FrameOfReferenceUID == talairach
    assert out.CodingSchemeUID == ds.CodingSchemeUID


def test_patient_age_is_computed_when_missing(profile: Profile) -> None:
    ds = make_ct()
    del ds.PatientAge
    assert deidentify_dataset(ds, KEY, profile).dataset.PatientAge == "067Y"
    ds.PatientBirthDate = "20231020"
    assert deidentify_dataset(ds, KEY, profile).dataset.PatientAge == "002M"


def test_negative_controls_are_untouched(profile: Profile) -> None:
    original = make_ct()
    out = deidentify_dataset(original, KEY, profile).dataset
    for keyword in (
        "PatientSex",
        "PatientAge",
        "PatientWeight",
        "KVP",
        "SliceThickness",
        "PixelSpacing",
        "BodyPartExamined",
        "Modality",
        "ImageType",
        "Rows",
        "Columns",
        "SOPClassUID",
        "SpecificCharacterSet",
    ):
        assert out[keyword].value == original[keyword].value, keyword
    assert out.PixelData == PIXELS
    # The input dataset is left as it was.
    assert original.PatientName == NAME and original.SOPInstanceUID == SOP_UID


@pytest.mark.parametrize(
    ("keyword", "reason"),
    [
        ("SOPClassUID", "missing SOPClassUID"),
        ("SOPInstanceUID", "missing SOPInstanceUID"),
        ("StudyInstanceUID", "missing StudyInstanceUID"),
        ("SeriesInstanceUID", "missing SeriesInstanceUID"),
        ("PatientID", "missing PatientID"),
    ],
)
def test_quarantine_when_an_identifier_is_missing(
    profile: Profile, keyword: str, reason: str
) -> None:
    ds = make_ct()
    delattr(ds, keyword)
    with pytest.raises(UnreadableInstanceError, match=f"^{reason}:"):
        deidentify_dataset(ds, KEY, profile)
    ds = make_ct()
    setattr(ds, keyword, "")
    with pytest.raises(UnreadableInstanceError, match=f"^{reason}:"):
        deidentify_dataset(ds, KEY, profile)


def test_an_element_of_the_wrong_vr_is_removed(profile: Profile) -> None:
    ds = make_ct()
    ds.add(DataElement(Tag("BodyPartExamined"), "PN", NAME))
    out = deidentify_dataset(ds, KEY, profile).dataset
    assert "BodyPartExamined" not in out


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_a_kept_value_unfit_for_its_vr_is_quarantined(profile: Profile) -> None:
    ds = make_ct()
    ds.PatientSex = NAME  # what a damaged length or tag byte leaves behind
    with pytest.raises(UnreadableInstanceError, match="^malformed DICOM: PatientSex"):
        deidentify_dataset(ds, KEY, profile)


def test_quarantine_burned_in_annotation(profile: Profile) -> None:
    ds = make_ct()
    ds.BurnedInAnnotation = "YES"
    with pytest.raises(UnreadableInstanceError, match="^burned-in annotation:"):
        deidentify_dataset(ds, KEY, profile)
    ds.BurnedInAnnotation = "NO"
    assert deidentify_dataset(ds, KEY, profile).dataset.BurnedInAnnotation == "NO"


def _save(ds: Dataset, path: Path) -> Path:
    ds.save_as(path, enforce_file_format=True)
    return path


def test_quarantine_unreadable_files(profile: Profile, tmp_path: Path) -> None:
    empty = tmp_path / "empty.dcm"
    empty.write_bytes(b"")
    with pytest.raises(UnreadableInstanceError, match="^empty file:"):
        deidentify_file(empty, KEY, profile)
    text = tmp_path / "notes.dcm"
    text.write_text("Patient Jansen, see attached\n" * 20)
    with pytest.raises(UnreadableInstanceError, match="^not DICOM:"):
        deidentify_file(text, KEY, profile)
    with pytest.raises(UnreadableInstanceError, match="^unreadable file:"):
        deidentify_file(tmp_path / "absent.dcm", KEY, profile)
    full = _save(make_ct(), tmp_path / "full.dcm").read_bytes()
    half = tmp_path / "half.dcm"
    half.write_bytes(full[: len(full) // 2])
    with pytest.raises(UnreadableInstanceError, match="^truncated file: pixel data has"):
        deidentify_file(half, KEY, profile)


@pytest.mark.filterwarnings("ignore")
def test_no_prefix_of_a_file_passes(profile: Profile, tmp_path: Path) -> None:
    full = _save(make_ct(), tmp_path / "full.dcm").read_bytes()
    cut = tmp_path / "cut.dcm"
    for length in range(0, len(full), 53):
        cut.write_bytes(full[:length])
        with pytest.raises(UnreadableInstanceError):
            deidentify_file(cut, KEY, profile)


@pytest.mark.filterwarnings("ignore")
def test_truncated_encapsulated_pixel_data_is_quarantined(profile: Profile, tmp_path: Path) -> None:
    ds = make_ct()
    ds.compress(RLELossless)
    full = _save(ds, tmp_path / "rle.dcm").read_bytes()
    assert deidentify_file(tmp_path / "rle.dcm", KEY, profile).dataset.PixelData == ds.PixelData
    cut = tmp_path / "cut.dcm"
    # The last 8 bytes are the sequence delimiter; every fragment is whole before them.
    for length in range(len(full) - len(ds.PixelData), len(full) - 8, 29):
        cut.write_bytes(full[:length])
        with pytest.raises(UnreadableInstanceError, match="^(truncated file|malformed DICOM):"):
            deidentify_file(cut, KEY, profile)


def test_written_file_rereads(profile: Profile, tmp_path: Path) -> None:
    source = _save(make_ct(), tmp_path / "in.dcm")
    result = deidentify_file(source, KEY, profile)
    dest = tmp_path / "research" / "out.dcm"
    write_deidentified(result, dest)
    assert sorted(p.name for p in dest.parent.iterdir()) == ["out.dcm"]
    again = pydicom.dcmread(dest)
    assert again.preamble == b"\x00" * 128
    assert again.SOPInstanceUID == result.sop_instance_uid == keyed_uid(KEY, SOP_UID)
    assert again.file_meta.MediaStorageSOPInstanceUID == again.SOPInstanceUID
    assert again.PatientID == result.patient_pseudonym
    assert again.PixelData == PIXELS
    assert result.profile_version == "2024b-1"
    assert result.actions_applied > 20
    assert pydicom.dcmread(source).PatientName == NAME
