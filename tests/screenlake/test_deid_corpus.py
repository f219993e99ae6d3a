"""The PHI-injection corpus the de-identification tests share, and the whole-corpus checks.

Each builder makes one kind of instance full of fake identifying values, planted where a PACS
export or a probe puts them: standard attributes, sequences three deep, private blocks with
colliding creators, orphan private and UN elements, the file meta header, overlays and curves,
OriginalAttributesSequence, free-text descriptors, SR content, presentation-state annotations
and per-frame functional groups. The tests here check that every planted value is there before
and nowhere after (in values, raw bytes and the residual-PHI scan); the tests per module check
the exact outcome of each case.
"""

from __future__ import annotations

import json
from pathlib import Path, PurePosixPath

import numpy as np
import pydicom
import pytest
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence
from pydicom.uid import (
    UID,
    ComprehensiveSRStorage,
    CTImageStorage,
    EnhancedCTImageStorage,
    ExplicitVRLittleEndian,
    GrayscaleSoftcopyPresentationStateStorage,
)

from screenlake.deid import Profile, deidentify_dataset, load_default_profile, load_profile
from screenlake.deid.batch import LandedFile, deidentify_batch
from screenlake.deid.profile import DEFAULT_PROFILE_PATH
from screenlake.keys import validate_pseudonym_key
from screenlake.verify import index_originals, scan_file

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
VERIFIER = "Dekker^Sanne"
AUTHOR = "Brouwer^Lotte"
SOURCE_AE = "PACS_NOORD"
PRIVATE_CREATOR = "NOORD HOSPITAL 1.0"
ALTERNATIVE_BIRTH_DATE = "13341223"
DESCRIPTION = "Longscreening Jansen"
SERIES_DESCRIPTION = "Thorax Jansen P 14-03-1956 PID-8403921"
IMAGE_COMMENTS = "Pt Jansen, BSN 123456782, tel 030-1234567, Kerkstraat 12"
SR_TEXT = "Patient Pieter Jansen (geb. 14 maart 1956), BSN 123456782: nodule 6 mm"
GSPS_TEXT = "Jansen P 19560314"
# Values that identify someone; none may survive anywhere in an output.
IDENTIFYING = [
    PATIENT_ID, "Jansen", "Pieter", "Hendrik", BSN, BIRTH_DATE, "Kerkstraat", "Utrecht",
    "123 4567", "1234567", ACCESSION, "Vries", "Bakker", "Noorderlicht", STATION, SERIAL,
    "Smit", "Visser", "Mulder", "Dekker", "Brouwer", SOURCE_AE, PRIVATE_CREATOR,
    ALTERNATIVE_BIRTH_DATE, "14-03-1956", "14 maart 1956",
]  # fmt: skip

STUDY_UID = "1.2.826.0.1.3680043.8.498.10000000000000000000000000000000001"
SERIES_UID = "1.2.826.0.1.3680043.8.498.10000000000000000000000000000000002"
SOP_UID = "1.2.826.0.1.3680043.8.498.10000000000000000000000000000000003"
FRAME_UID = "1.2.826.0.1.3680043.8.498.10000000000000000000000000000000004"
SOURCE_SOP_UID = "1.2.826.0.1.3680043.8.498.10000000000000000000000000000000005"
CONCATENATION_UID = "1.2.826.0.1.3680043.8.498.10000000000000000000000000000000006"
SR_UID = "1.2.826.0.1.3680043.8.498.10000000000000000000000000000000007"
GSPS_UID = "1.2.826.0.1.3680043.8.498.10000000000000000000000000000000008"
ENHANCED_UID = "1.2.826.0.1.3680043.8.498.10000000000000000000000000000000009"
ORIGINAL_UIDS = [
    STUDY_UID, SERIES_UID, SOP_UID, FRAME_UID, SOURCE_SOP_UID, CONCATENATION_UID, SR_UID,
    GSPS_UID, ENHANCED_UID,
]  # fmt: skip

ROWS = COLUMNS = 64
PIXELS = np.arange(ROWS * COLUMNS, dtype=np.uint16).reshape(ROWS, COLUMNS).tobytes()


def item(**attributes: object) -> Dataset:
    """A sequence item with the given attributes."""
    made = Dataset()
    for keyword, value in attributes.items():
        setattr(made, keyword, value)
    return made


def _code(value: str, meaning: str, scheme: str = "DCM") -> Dataset:
    return item(CodeValue=value, CodingSchemeDesignator=scheme, CodeMeaning=meaning)


def _header(ds: Dataset, sop_class: str, sop_uid: str, study_uid: str, patient_id: str) -> None:
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = UID(sop_class)
    ds.file_meta.MediaStorageSOPInstanceUID = UID(sop_uid)
    ds.file_meta.SourceApplicationEntityTitle = SOURCE_AE
    ds.file_meta.SendingApplicationEntityTitle = SOURCE_AE
    ds.file_meta.PrivateInformationCreatorUID = UID("1.2.826.0.1.3680043.8.498.77")
    ds.file_meta.PrivateInformation = NAME.encode()
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = sop_uid
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = SERIES_UID
    ds.PatientName = NAME
    ds.PatientID = patient_id
    ds.PatientBirthDate = BIRTH_DATE
    ds.PatientSex = "F"
    ds.PatientAge = "067Y"
    ds.PatientAddress = ADDRESS
    ds.PatientTelephoneNumbers = PHONE
    ds.AccessionNumber = ACCESSION
    ds.ReferringPhysicianName = REFERRING
    ds.InstitutionName = INSTITUTION


def _pixels(ds: Dataset) -> None:
    ds.Rows, ds.Columns = ROWS, COLUMNS
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.PixelSpacing = [0.703125, 0.703125]
    ds.PixelData = PIXELS


def make_ct(
    *,
    patient_id: str = PATIENT_ID,
    study_uid: str = STUDY_UID,
    sop_uid: str = SOP_UID,
    study_date: str = "20240117",
) -> Dataset:
    """A CT slice full of fake PHI, with the nesting, private data and dates a PACS export has."""
    ds = Dataset()
    _header(ds, CTImageStorage, sop_uid, study_uid, patient_id)
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.FrameOfReferenceUID = FRAME_UID
    ds.SOPInstanceUIDOfConcatenationSource = CONCATENATION_UID
    ds.StudyDate = ds.SeriesDate = ds.AcquisitionDate = ds.ContentDate = study_date
    ds.StudyTime = "101530"
    ds.AcquisitionDateTime = f"{study_date}101530.123456+0100"
    ds.DateOfLastCalibration = ["20231201", "20240110"]
    ds.Modality = "CT"
    ds.Manufacturer = "SIEMENS"
    ds.InstitutionAddress = "Ziekenhuisweg 1, Groningen Noorderlicht"
    ds.PerformingPhysicianName = PERFORMING
    ds.OperatorsName = OPERATOR
    ds.StationName = STATION
    ds.StudyDescription = DESCRIPTION
    ds.SeriesDescription = SERIES_DESCRIPTION
    ds.ImageComments = IMAGE_COMMENTS
    ds.PatientWeight = "72.5"
    ds.PatientBirthDateInAlternativeCalendar = ALTERNATIVE_BIRTH_DATE
    ds.IssuerOfAccessionNumberSequence = Sequence([item(LocalNamespaceEntityID=INSTITUTION)])
    ds.OtherPatientIDsSequence = Sequence(
        [item(PatientID=BSN, IssuerOfPatientID="NLMINBIZA", TypeOfPatientID="TEXT")]
    )
    ds.BodyPartExamined = "CHEST"
    ds.KVP = "120"
    ds.SliceThickness = "1.25"
    ds.DeviceSerialNumber = SERIAL
    ds.SourceImageSequence = Sequence(
        [
            item(
                ReferencedSOPClassUID=CTImageStorage,
                ReferencedSOPInstanceUID=SOURCE_SOP_UID,
                PurposeOfReferenceCodeSequence=Sequence([_code("121320", "x")]),
            )
        ]
    )
    # Depth 3: evidence -> series -> instance, with person names, a date and a UID reference.
    instance = item(
        ReferencedSOPClassUID=CTImageStorage,
        ReferencedSOPInstanceUID=SOURCE_SOP_UID,
        PerformingPhysicianName=NESTED_NAME,
        ReferringPhysicianName=NESTED_REFERRER,
        ContentDate=study_date,
    )
    series = item(SeriesInstanceUID=SERIES_UID, ReferencedSOPSequence=Sequence([instance]))
    series.private_block(0x0011, PRIVATE_CREATOR, create=True).add_new(0x01, "LO", NAME)
    evidence = item(StudyInstanceUID=study_uid, ReferencedSeriesSequence=Sequence([series]))
    ds.ReferencedImageEvidenceSequence = Sequence([evidence])
    # The attributes an earlier correction replaced, names and IDs among them.
    modified = item(PatientName=NAME, PatientID=patient_id, PatientBirthDate=BIRTH_DATE)
    ds.OriginalAttributesSequence = Sequence(
        [
            item(
                ModifiedAttributesSequence=Sequence([modified]),
                SourceOfPreviousValues=INSTITUTION,
                ModifyingSystem=STATION,
                ReasonForTheAttributeModification="CORRECT",
                AttributeModificationDateTime=f"{study_date}101530",
            )
        ]
    )
    block = ds.private_block(0x0029, PRIVATE_CREATOR, create=True)
    block.add_new(0x01, "LO", NAME)
    block.add_new(0x02, "OB", patient_id.encode())
    ds.add(DataElement(0x44441000, "UN", NAME.encode()))
    ds.add(DataElement(0x44441002, "LO", NAME))  # a public tag no dictionary knows
    ds.add_new(0x60000010, "US", ROWS)
    ds.add_new(0x60000011, "US", COLUMNS)
    ds.add_new(0x60000022, "LO", f"overlay of {NAME}")  # Overlay Description
    ds.add_new(0x60001500, "LO", PATIENT_ID)  # Overlay Label
    ds.add_new(0x60003000, "OW", b"\x01" * (ROWS * COLUMNS // 8))
    ds.add_new(0x50003000, "OW", b"\x02\x00" * 8)
    ds.add_new(0x50002500, "LO", NAME)  # Curve Label
    _pixels(ds)
    return ds


def make_sr(*, sop_uid: str = SR_UID, study_date: str = "20240118") -> Dataset:
    """A comprehensive SR: person names, text, dates and UID references in content at depth 3,
    verifying and author observers, participants and a person identification code."""
    ds = Dataset()
    _header(ds, ComprehensiveSRStorage, sop_uid, STUDY_UID, PATIENT_ID)
    ds.Modality = "SR"
    ds.StudyDate = ds.ContentDate = study_date
    ds.ContentTime = "120000"
    ds.ValueType = "CONTAINER"
    ds.ConceptNameCodeSequence = Sequence([_code("126000", "Imaging Measurement Report")])
    ds.CompletionFlag, ds.VerificationFlag = "COMPLETE", "VERIFIED"
    ds.VerifyingObserverSequence = Sequence(
        [
            item(
                VerifyingObserverName=VERIFIER,
                VerifyingOrganization=INSTITUTION,
                VerificationDateTime=f"{study_date}130000",
                VerifyingObserverIdentificationCodeSequence=Sequence(
                    [_code("NL-7781", VERIFIER, "99NOORD")]
                ),
            )
        ]
    )
    ds.AuthorObserverSequence = Sequence(
        [item(ObserverType="PSN", PersonName=AUTHOR, InstitutionName=INSTITUTION)]
    )
    ds.ParticipantSequence = Sequence(
        [item(ParticipationType="ENT", PersonName=OPERATOR, ParticipationDateTime=study_date)]
    )
    ds.PersonIdentificationCodeSequence = Sequence([_code("EMP-4471", PERFORMING, "99NOORD")])
    text = item(RelationshipType="CONTAINS", ValueType="TEXT", TextValue=SR_TEXT)
    text.ConceptNameCodeSequence = Sequence([_code("121071", "Finding")])
    name = item(RelationshipType="HAS OBS CONTEXT", ValueType="PNAME", PersonName=NAME)
    name.ConceptNameCodeSequence = Sequence([_code("121008", "Person Observer Name")])
    when = item(RelationshipType="HAS OBS CONTEXT", ValueType="DATE", Date=BIRTH_DATE)
    when.ConceptNameCodeSequence = Sequence([_code("121033", "Subject Birth Date")])
    stamp = item(RelationshipType="CONTAINS", ValueType="DATETIME", DateTime=f"{study_date}093000")
    stamp.ConceptNameCodeSequence = Sequence([_code("111526", "DateTime Started")])
    uid = item(RelationshipType="CONTAINS", ValueType="UIDREF", UID=SOURCE_SOP_UID)
    uid.ConceptNameCodeSequence = Sequence([_code("121232", "Source image")])
    deep_text = item(RelationshipType="CONTAINS", ValueType="TEXT", TextValue=f"see {NAME}")
    deep_text.ConceptNameCodeSequence = Sequence([_code("121106", "Comment")])
    inner = item(RelationshipType="CONTAINS", ValueType="CONTAINER", ContinuityOfContent="SEPARATE")
    inner.ConceptNameCodeSequence = Sequence([_code("125007", "Measurement Group")])
    inner.ContentSequence = Sequence([deep_text, uid])
    middle = item(
        RelationshipType="CONTAINS", ValueType="CONTAINER", ContinuityOfContent="SEPARATE"
    )
    middle.ConceptNameCodeSequence = Sequence([_code("126010", "Imaging Measurements")])
    middle.ContentSequence = Sequence([inner, stamp])
    ds.ContinuityOfContent = "SEPARATE"
    ds.ContentSequence = Sequence([name, when, text, middle])
    return ds


def make_gsps(*, sop_uid: str = GSPS_UID) -> Dataset:
    """A grayscale softcopy presentation state with a text annotation naming the patient."""
    ds = Dataset()
    _header(ds, GrayscaleSoftcopyPresentationStateStorage, sop_uid, STUDY_UID, PATIENT_ID)
    ds.Modality = "PR"
    ds.StudyDate = "20240117"
    ds.ContentLabel = "JANSEN"
    ds.ContentDescription = f"Annotated for {NAME}"
    ds.ContentCreatorName = OPERATOR
    ds.PresentationCreationDate = "20240119"
    ds.PresentationCreationTime = "140000"
    ds.ReferencedSeriesSequence = Sequence(
        [
            item(
                SeriesInstanceUID=SERIES_UID,
                ReferencedImageSequence=Sequence(
                    [item(ReferencedSOPClassUID=CTImageStorage, ReferencedSOPInstanceUID=SOP_UID)]
                ),
            )
        ]
    )
    text_object = item(
        UnformattedTextValue=GSPS_TEXT,
        BoundingBoxAnnotationUnits="PIXEL",
        AnchorPointAnnotationUnits="PIXEL",
        BoundingBoxTopLeftHandCorner=[1.0, 1.0],
        BoundingBoxBottomRightHandCorner=[40.0, 10.0],
        BoundingBoxTextHorizontalJustification="LEFT",
    )
    graphic = item(
        GraphicAnnotationUnits="PIXEL",
        GraphicDimensions=2,
        NumberOfGraphicPoints=2,
        GraphicData=[1.0, 1.0, 20.0, 20.0],
        GraphicType="POLYLINE",
    )
    text_only = item(GraphicLayer="TEXT", TextObjectSequence=Sequence([text_object]))
    both = item(
        GraphicLayer="ROI",
        TextObjectSequence=Sequence([item(**{k: text_object[k].value for k in text_object.dir()})]),
        GraphicObjectSequence=Sequence([graphic]),
    )
    ds.GraphicAnnotationSequence = Sequence([text_only, both])
    return ds


def make_enhanced(*, sop_uid: str = ENHANCED_UID, frames: int = 3) -> Dataset:
    """An enhanced CT with per-frame acquisition and reference date-times and per-frame
    source references."""
    ds = Dataset()
    _header(ds, EnhancedCTImageStorage, sop_uid, STUDY_UID, PATIENT_ID)
    ds.Modality = "CT"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL", "NONE"]
    ds.StudyDate = ds.ContentDate = "20240117"
    ds.ContentTime = "101500"
    ds.AcquisitionDateTime = "20240117101500"
    ds.FrameOfReferenceUID = FRAME_UID
    ds.NumberOfFrames = frames
    ds.SharedFunctionalGroupsSequence = Sequence(
        [item(PixelMeasuresSequence=Sequence([item(SliceThickness="1.0")]))]
    )
    per_frame = []
    for number in range(frames):
        content = item(
            FrameAcquisitionDateTime=f"20240117{10 + number:02d}1500.5+0100",
            FrameReferenceDateTime=f"2024011710{number:02d}00",
            FrameAcquisitionNumber=number + 1,
        )
        source = item(
            ReferencedSOPClassUID=CTImageStorage,
            ReferencedSOPInstanceUID=SOURCE_SOP_UID,
            PurposeOfReferenceCodeSequence=Sequence([_code("121322", "Source")]),
        )
        derivation = item(SourceImageSequence=Sequence([source]))
        per_frame.append(
            item(
                FrameContentSequence=Sequence([content]),
                DerivationImageSequence=Sequence([derivation]),
            )
        )
    ds.PerFrameFunctionalGroupsSequence = Sequence(per_frame)
    _pixels(ds)
    ds.PixelData = PIXELS * frames
    return ds


def all_strings(ds: Dataset) -> list[str]:
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


def leftovers(ds: Dataset) -> list[str]:
    """The identifying values and original UIDs still somewhere in `ds`."""
    strings = [s.lower() for s in all_strings(ds)]
    return [v for v in IDENTIFYING + ORIGINAL_UIDS if any(v.lower() in s for s in strings)]


def save(ds: Dataset, path: Path) -> Path:
    """Write `ds` as a DICOM file at `path`."""
    ds.save_as(path, enforce_file_format=True)
    return path


def profile_with(tmp_path: Path, **options: bool) -> Profile:
    """The default profile with `options` switched as given."""
    config = json.loads(DEFAULT_PROFILE_PATH.read_text())
    config["options"].update(options)
    path = tmp_path / f"profile-{len(list(tmp_path.glob('profile-*.json')))}.json"
    path.write_text(json.dumps(config))
    return load_profile(path)


BUILDERS = {"ct": make_ct, "sr": make_sr, "gsps": make_gsps, "enhanced": make_enhanced}


@pytest.fixture(scope="module")
def profile() -> Profile:
    return load_default_profile()


@pytest.mark.parametrize("kind", sorted(BUILDERS))
def test_the_corpus_plants_what_the_tests_look_for(kind: str) -> None:
    strings = [s.lower() for s in all_strings(BUILDERS[kind]())]
    for value in ("Jansen", PATIENT_ID, ACCESSION, SOURCE_AE):
        assert [s for s in strings if value.lower() in s], (kind, value)


@pytest.mark.parametrize("kind", sorted(BUILDERS))
@pytest.mark.parametrize(
    "options",
    [{}, {"cleanDescOpt": True, "cleanStructContOpt": True, "cleanGraphOpt": True,
          "rtnSafePrivOpt": True}],
    ids=["default", "cleaning options"],
)  # fmt: skip
def test_no_identifying_value_survives(kind: str, options: dict[str, bool], tmp_path: Path) -> None:
    profile = profile_with(tmp_path, **options)
    result = deidentify_dataset(BUILDERS[kind](), KEY, profile)
    assert leftovers(result.dataset) == []


@pytest.mark.parametrize(
    "options",
    [{}, {"cleanDescOpt": True, "cleanStructContOpt": True, "cleanGraphOpt": True,
          "rtnSafePrivOpt": True}],
    ids=["default", "cleaning options"],
)  # fmt: skip
def test_a_batch_of_the_corpus_passes_the_residual_scan(
    options: dict[str, bool], tmp_path: Path
) -> None:
    profile = profile_with(tmp_path, **options)
    originals = [save(build(), tmp_path / f"{kind}.dcm") for kind, build in BUILDERS.items()]
    result = deidentify_batch(
        [LandedFile(i, path, None) for i, path in enumerate(originals)],
        key=KEY,
        profile=profile,
        batch_id="corpus",
        programme="lung_ldct",
        output_dir=tmp_path / "research",
        output_prefix=PurePosixPath("research"),
        quarantine_dir=tmp_path / "quarantine",
    )
    assert (result.deidentified, result.quarantined) == (len(BUILDERS), 0)
    outputs = sorted((tmp_path / "research").rglob("*.dcm"))
    assert len(outputs) == len(BUILDERS)
    index = index_originals(originals)
    findings = [f for out in outputs for f in scan_file(out, out.name, index)]
    assert findings == []
    for out in outputs:
        raw = out.read_bytes().lower()
        assert [v for v in IDENTIFYING + ORIGINAL_UIDS if v.lower().encode() in raw] == []
        assert leftovers(pydicom.dcmread(out)) == []
