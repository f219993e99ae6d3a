"""A synthetic PACS export: DICOM studies with realistic fake PHI, laid out as hospitals export.

Layout: ``out/<YYYYMMDD>/<FAMILY>_<GIVEN>_<PATIENTID>/<ACCESSION>/<Series>_<Modality>/IM00001.dcm``.
Each day also gets a few bad files inside study series folders, so that quarantine has work to do.
Same arguments, same bytes: every random draw comes from the seed, nothing from the clock.
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from datetime import date, timedelta
from pathlib import Path

import numpy as np
from faker import Faker
from pydicom import dcmread
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    ComputedRadiographyImageStorage,
    CTImageStorage,
    DigitalXRayImageStorageForPresentation,
    ExplicitVRLittleEndian,
    generate_uid,
)

from screenlake.errors import ConfigurationError
from screenlake.synth.images import chest_radiograph, ct_stored_values, ct_volume
from screenlake.synth.people import (
    BSN_ISSUER,
    Institution,
    Patient,
    Person,
    Station,
    age_on,
    fake_institution,
    fake_patient,
)

LUNG_LDCT = "lung_ldct"
CXR_TB = "cxr_tb"
POSITIVE_RATE = 0.35
PRIVATE_CREATOR = "SYNTHVENDOR 1.0"
PRIVATE_GROUP = 0x0029
CT_FIELD_OF_VIEW_MM = 360.0
CXR_FIELD_OF_VIEW_MM = 430.0
TRUNCATED_NAME = "IM99999.dcm"
NO_SOP_UID_NAME = "IM99998.dcm"
EMPTY_NAME = "IM99997.dcm"
NOT_DICOM_NAMES = ("thumbnail.jpg", "notes.txt")
_AGES = {LUNG_LDCT: (55, 79), CXR_TB: (18, 80)}
_SOP_CLASSES = {
    "CT": CTImageStorage,
    "CR": ComputedRadiographyImageStorage,
    "DX": DigitalXRayImageStorageForPresentation,
}
_DESCRIPTIONS = {"CT": "CT thorax lage dosis", "CR": "X-thorax", "DX": "X-thorax"}


@dataclass(frozen=True)
class ExportSummary:
    """What `generate_export` wrote: good studies and files, bad files, patients and days."""

    studies: int
    instances: int
    bad_files: int
    patients: int
    days: tuple[date, ...]
    labels_path: Path


@dataclass(frozen=True)
class _Study:
    """Everything needed to write one study, drawn before any file is written."""

    patient: Patient
    visit: int
    programme: str
    modality: str
    positive: bool
    day: date
    start_s: int
    accession: str
    lateral: bool
    station: Station
    referrer: Person
    radiologist: Person
    operator: Person
    institution: Institution


def generate_export(
    out: Path,
    studies: int,
    seed: int,
    labels_path: Path,
    start_date: date = date(2024, 3, 11),
    days: int = 2,
    ct_slices: int = 24,
    ct_size: int = 96,
    cxr_size: int = 256,
) -> ExportSummary:
    """Write a synthetic PACS export of `studies` studies into the empty folder `out`.

    Studies are spread over `days` days from `start_date`, half low-dose chest CT and half chest
    radiographs, about 35% positive. Ground truth goes to the CSV `labels_path`, outside `out`.
    Each day gets four bad files inside study folders. Same arguments give the same bytes.
    """
    out, labels_path = Path(out), Path(labels_path)
    _check_arguments(out, studies, seed, days, labels_path)
    fake = Faker("nl_NL")
    fake.seed_instance(seed)
    planned = _plan(fake, np.random.default_rng(seed), studies, start_date, days)
    instances = 0
    for study in planned:
        if study.modality == "CT":
            datasets = _ct_datasets(study, seed, ct_slices, ct_size)
        else:
            datasets = _cxr_datasets(study, seed, cxr_size)
        for number, ds in enumerate(datasets, start=1):
            _write(ds, _series_dir(out, study) / f"IM{number:05d}.dcm")
            instances += 1
    study_days = tuple(sorted({s.day for s in planned}))
    bad_files = 0
    for day in study_days:
        day_index = (day - start_date).days
        rng = np.random.default_rng([seed, day_index])
        bad_files += _write_bad_files(out, [s for s in planned if s.day == day], day_index, rng)
    _write_labels(labels_path, planned)
    return ExportSummary(
        studies=len(planned),
        instances=instances,
        bad_files=bad_files,
        patients=len({s.patient.patient_id for s in planned}),
        days=study_days,
        labels_path=labels_path,
    )


def _check_arguments(out: Path, studies: int, seed: int, days: int, labels_path: Path) -> None:
    if studies < 1:
        raise ConfigurationError(f"studies must be at least 1; got {studies}")
    if days < 1:
        raise ConfigurationError(f"days must be at least 1; got {days}")
    if seed < 0:
        raise ConfigurationError(f"seed must be a non-negative integer; got {seed}")
    if out.exists() and not out.is_dir():
        raise ConfigurationError(f"export folder {out} is a file; give a folder path")
    if out.is_dir() and any(out.iterdir()):
        raise ConfigurationError(
            f"export folder {out} is not empty; give an empty or new folder so that two "
            "exports are never mixed"
        )
    if labels_path.resolve().is_relative_to(out.resolve()):
        raise ConfigurationError(
            f"labels file {labels_path} is inside the export folder {out}; ground truth must "
            "not travel with the export, write it elsewhere"
        )


# Planning: every random draw for headers happens here, in a fixed order.


def _patient_days(rng: np.random.Generator, studies: int, days: int) -> list[tuple[int, ...]]:
    """Day offsets of each patient's studies; about one patient in five is seen twice."""
    longitudinal = max(1, round(studies / 6)) if days >= 2 and studies >= 3 else 0
    plans = [
        tuple(sorted(int(d) for d in rng.choice(days, size=2, replace=False)))
        for _ in range(longitudinal)
    ]
    # Single visits cycle through the days, so that every day has studies when there are enough.
    first = int(rng.integers(days))
    plans += [((first + i) % days,) for i in range(studies - 2 * longitudinal)]
    return [plans[int(i)] for i in rng.permutation(len(plans))]


def _programmes(rng: np.random.Generator, visit_counts: list[int]) -> list[str]:
    """A programme per patient, keeping the two programmes' study counts level."""
    totals = {LUNG_LDCT: 0, CXR_TB: 0}
    chosen = []
    for count in visit_counts:
        low = min(totals.values())
        candidates = [name for name, total in totals.items() if total == low]
        pick = candidates[int(rng.integers(len(candidates)))]
        totals[pick] += count
        chosen.append(pick)
    return chosen


def _positives(rng: np.random.Generator, programmes: list[str]) -> list[bool]:
    """About 35% positives per programme, at least one when a programme has two studies."""
    flags = [False] * len(programmes)
    for name in sorted(set(programmes)):
        members = [i for i, p in enumerate(programmes) if p == name]
        count = round(POSITIVE_RATE * len(members))
        if len(members) >= 2:
            count = max(count, 1)
        for i in rng.choice(members, size=count, replace=False):
            flags[int(i)] = True
    return flags


def _unique_number(fake: Faker, digits: int, taken: set[str]) -> str:
    while True:
        number = str(fake.random.randint(10 ** (digits - 1), 10**digits - 1))
        if number not in taken:
            taken.add(number)
            return number


def _plan(
    fake: Faker, rng: np.random.Generator, studies: int, start: date, days: int
) -> list[_Study]:
    """Draw patients, programmes, labels, dates and staff for every study, in export order."""
    institution = fake_institution(fake)
    patient_days = _patient_days(rng, studies, days)
    programmes = _programmes(rng, [len(d) for d in patient_days])
    visits = [(p, v, d) for p, ds in enumerate(patient_days) for v, d in enumerate(ds, start=1)]
    positives = _positives(rng, [programmes[p] for p, _, _ in visits])
    patient_ids: set[str] = set()
    patients = []
    for p, offsets in enumerate(patient_days):
        age = fake.random.randint(*_AGES[programmes[p]])
        patient_id = _unique_number(fake, 7, patient_ids)
        patients.append(fake_patient(fake, patient_id, age, start + timedelta(days=offsets[0])))
    rnd = fake.random
    accessions: set[str] = set()
    planned = [
        _Study(
            patient=patients[p],
            visit=visit,
            programme=programmes[p],
            modality="CT" if programmes[p] == LUNG_LDCT else "CR",
            positive=positive,
            day=start + timedelta(days=offset),
            start_s=rnd.randint(7 * 3600 + 1800, 16 * 3600 + 1800),
            accession=_unique_number(fake, 10, accessions),
            lateral=rnd.random() < 0.3,
            # Chest radiographs get their CR or DX device later, in export order.
            station=rnd.choice(institution.stations_for("CT")),
            referrer=rnd.choice(institution.referrers),
            radiologist=rnd.choice(institution.radiologists),
            operator=rnd.choice(institution.operators),
            institution=institution,
        )
        for (p, visit, offset), positive in zip(visits, positives)
    ]
    planned.sort(key=lambda s: (s.day, s.start_s, s.accession))
    return _alternate_cxr(planned)


def _alternate_cxr(planned: list[_Study]) -> list[_Study]:
    """Chest radiographs alternate between the CR and the DX device, in export order."""
    result: list[_Study] = []
    for study in planned:
        if study.programme == CXR_TB:
            modality = "CR" if sum(s.programme == CXR_TB for s in result) % 2 == 0 else "DX"
            station = study.institution.stations_for(modality)[0]
            study = replace(study, modality=modality, station=station)
        result.append(study)
    return result


# DICOM building: one function per module group, all values from the plan and the seed.


def _uid(seed: int, *parts: object) -> str:
    return generate_uid(entropy_srcs=["screenlake-synth", str(seed), *map(str, parts)])


def _da(day: date) -> str:
    return day.strftime("%Y%m%d")


def _tm(seconds: float) -> str:
    ms = round(seconds * 1000)
    s, ms = divmod(ms, 1000)
    return f"{s // 3600:02d}{s // 60 % 60:02d}{s % 60:02d}.{ms:03d}"


def _ds(value: float) -> str:
    return f"{value:.6g}"


def _patient_module(ds: Dataset, study: _Study) -> None:
    patient = study.patient
    ds.PatientName = patient.dicom_name
    ds.PatientID = patient.patient_id
    ds.IssuerOfPatientID = study.institution.issuer_of_patient_id
    ds.TypeOfPatientID = "TEXT"
    ds.PatientBirthDate = _da(patient.birth_date)
    ds.PatientSex = patient.sex
    bsn = Dataset()
    bsn.PatientID = patient.bsn
    bsn.IssuerOfPatientID = BSN_ISSUER
    bsn.TypeOfPatientID = "TEXT"
    ds.OtherPatientIDsSequence = [bsn]
    ds.PatientAddress = patient.address
    ds.PatientTelephoneNumbers = patient.telephone
    ds.PatientAge = patient.dicom_age(study.day)
    ds.PatientWeight = str(patient.weight_kg)
    ds.PatientSize = _ds(patient.height_m)


def _study_module(ds: Dataset, study: _Study, seed: int) -> None:
    ds.StudyInstanceUID = _uid(seed, "study", study.accession)
    ds.StudyDate = _da(study.day)
    ds.StudyTime = _tm(study.start_s)
    ds.AccessionNumber = study.accession
    ds.StudyID = study.accession[-8:]
    ds.StudyDescription = _DESCRIPTIONS[study.modality]
    ds.ReferringPhysicianName = study.referrer.dicom_name
    ds.RequestingPhysician = study.referrer.dicom_name
    ds.NameOfPhysiciansReadingStudy = study.radiologist.dicom_name
    request = Dataset()
    request.AccessionNumber = study.accession
    request.RequestedProcedureID = study.accession
    request.ScheduledProcedureStepID = f"{study.accession}01"
    request.RequestedProcedureDescription = _DESCRIPTIONS[study.modality]
    request.StudyInstanceUID = ds.StudyInstanceUID
    ds.RequestAttributesSequence = [request]


def _series_module(ds: Dataset, study: _Study, seed: int, description: str) -> None:
    ds.Modality = study.modality
    ds.SeriesInstanceUID = _uid(seed, "series", study.accession, 1)
    ds.SeriesNumber = 1
    ds.SeriesDate = _da(study.day)
    ds.SeriesTime = _tm(study.start_s + 60)
    ds.SeriesDescription = description
    ds.ProtocolName = "LDCT_THORAX_SCREENING" if study.modality == "CT" else "THORAX_TB_SCREENING"
    ds.BodyPartExamined = "CHEST"
    ds.PerformingPhysicianName = study.radiologist.dicom_name
    ds.OperatorsName = study.operator.dicom_name


def _equipment_module(ds: Dataset, study: _Study) -> None:
    station, institution = study.station, study.institution
    ds.Manufacturer = station.manufacturer
    ds.ManufacturerModelName = station.model
    ds.SoftwareVersions = station.software
    ds.DeviceSerialNumber = station.serial
    ds.StationName = station.station_name
    ds.InstitutionName = institution.name
    ds.InstitutionAddress = institution.address
    ds.InstitutionalDepartmentName = institution.department


def _private_block(ds: Dataset, study: _Study, protocol: str) -> None:
    # Vendors copy identifiers into their own private groups; de-identification must find them.
    block = ds.private_block(PRIVATE_GROUP, PRIVATE_CREATOR, create=True)
    patient = study.patient
    block.add_new(0x10, "LO", f"{patient.family_name}, {patient.given_name}")
    block.add_new(0x11, "LO", patient.patient_id)
    block.add_new(0x12, "LO", protocol)
    block.add_new(0x13, "US", study.visit)


def _instance(study: _Study, seed: int, number: int, content_s: float, comment: str) -> Dataset:
    """A dataset with every module common to CT, CR and DX filled in for one instance."""
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID = _SOP_CLASSES[study.modality]
    ds.SOPInstanceUID = _uid(seed, "instance", study.accession, 1, number)
    ds.InstanceCreationDate = _da(study.day)
    ds.InstanceCreationTime = _tm(content_s + 45)
    _patient_module(ds, study)
    _study_module(ds, study, seed)
    _equipment_module(ds, study)
    ds.InstanceNumber = number
    ds.AcquisitionNumber = 1
    ds.ContentDate = ds.AcquisitionDate = _da(study.day)
    ds.ContentTime = ds.AcquisitionTime = _tm(content_s)
    ds.ImageComments = comment
    ds.BurnedInAnnotation = "NO"
    ds.LossyImageCompression = "00"
    return ds


def _pixels(ds: Dataset, image: np.ndarray) -> None:
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = image.shape
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    ds.PixelData = image.astype("<u2").tobytes()


def _ct_datasets(study: _Study, seed: int, slices: int, size: int) -> Iterator[Dataset]:
    """The axial series of a low-dose chest CT, superior slice first."""
    rng = np.random.default_rng([seed, int(study.accession)])
    volume = ct_volume(rng, study.positive, slices=slices, size=size)
    stored = ct_stored_values(volume.hounsfield)
    spacing = CT_FIELD_OF_VIEW_MM / size
    # ct_volume draws slices twice as thick as pixels are wide.
    thickness = 2 * spacing
    corner = -CT_FIELD_OF_VIEW_MM / 2 + spacing / 2
    z_top = round(-20.0 - 30.0 * float(rng.random()), 1)
    patient = study.patient
    comment = (
        f"LDCT screening ronde {study.visit} - {patient.full_name}, "
        f"{age_on(patient.birth_date, study.day)} jr. "
        f"Verwezen door {study.referrer.title} {study.referrer.family_name}."
    )
    for k in range(slices):
        ds = _instance(study, seed, k + 1, study.start_s + 180 + 0.125 * k, comment)
        _series_module(ds, study, seed, "Thorax lage dosis longkernel")
        ds.FrameOfReferenceUID = _uid(seed, "frame", study.accession)
        ds.PositionReferenceIndicator = ""
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.PatientPosition = "HFS"
        ds.ScanOptions = "HELICAL MODE"
        ds.KVP = "100"
        ds.XRayTubeCurrent = str(25 + patient.weight_kg // 5)
        ds.ExposureTime = "500"
        ds.Exposure = str((25 + patient.weight_kg // 5) // 2)
        ds.CTDIvol = round(0.6 + patient.weight_kg / 100, 2)
        ds.DataCollectionDiameter = "500"
        ds.ReconstructionDiameter = _ds(CT_FIELD_OF_VIEW_MM)
        ds.GantryDetectorTilt = "0"
        ds.TableHeight = "155"
        ds.RotationDirection = "CW"
        ds.ConvolutionKernel = "LUNG"
        ds.SliceThickness = ds.SpacingBetweenSlices = _ds(thickness)
        ds.PixelSpacing = [_ds(spacing), _ds(spacing)]
        ds.ImageOrientationPatient = ["1", "0", "0", "0", "1", "0"]
        z = z_top - k * thickness
        ds.ImagePositionPatient = [_ds(corner), _ds(corner), _ds(z)]
        ds.SliceLocation = _ds(z)
        ds.RescaleIntercept = "-1024"
        ds.RescaleSlope = "1"
        ds.RescaleType = "HU"
        ds.WindowCenter = "-600"
        ds.WindowWidth = "1500"
        ds.WindowCenterWidthExplanation = "LUNG"
        _pixels(ds, stored[k])
        _private_block(ds, study, str(ds.ProtocolName))
        yield ds


def _cxr_datasets(study: _Study, seed: int, size: int) -> Iterator[Dataset]:
    """A PA chest radiograph, followed by a left lateral for some studies."""
    rng = np.random.default_rng([seed, int(study.accession)])
    views = ("PA", "LL") if study.lateral else ("PA",)
    description = "Thorax PA + LAT" if study.lateral else "Thorax PA"
    spacing = _ds(CXR_FIELD_OF_VIEW_MM / size)
    for number, view in enumerate(views, start=1):
        comment = f"TB-screening {study.patient.full_name} ({study.patient.patient_id}), {view}"
        ds = _instance(study, seed, number, study.start_s + 120 + 40 * number, comment)
        _series_module(ds, study, seed, description)
        ds.ImageType = ["ORIGINAL", "PRIMARY"]
        ds.ViewPosition = view
        ds.PatientOrientation = ["L", "F"] if view == "PA" else ["P", "F"]
        ds.ImageLaterality = "U"
        ds.KVP = "125" if view == "PA" else "110"
        ds.XRayTubeCurrent = "320"
        ds.ExposureTime = "8" if view == "PA" else "16"
        ds.Exposure = "3" if view == "PA" else "5"
        ds.DistanceSourceToDetector = "1800"
        ds.ImagerPixelSpacing = ds.PixelSpacing = [spacing, spacing]
        ds.WindowCenter = "2048"
        ds.WindowWidth = "4096"
        if study.modality == "DX":
            _dx_attributes(ds)
        _pixels(ds, chest_radiograph(rng, study.positive, size=size))
        _private_block(ds, study, str(ds.ProtocolName))
        yield ds


def _dx_attributes(ds: Dataset) -> None:
    """Type 1 attributes of the DX series, image, anatomy and detector modules."""
    ds.PresentationIntentType = "FOR PRESENTATION"
    ds.PixelIntensityRelationship = "LOG"
    ds.PixelIntensityRelationshipSign = 1
    ds.RescaleIntercept = "0"
    ds.RescaleSlope = "1"
    ds.RescaleType = "US"
    ds.PresentationLUTShape = "IDENTITY"
    ds.DetectorType = "SCINTILLATOR"
    region = Dataset()
    region.CodeValue = "51185008"
    region.CodingSchemeDesignator = "SCT"
    region.CodeMeaning = "Thorax"
    ds.AnatomicRegionSequence = [region]


# Writing: the layout, the bad files and the labels.


def _series_dir(out: Path, study: _Study) -> Path:
    return (
        out / _da(study.day) / study.patient.folder_name / study.accession / f"1_{study.modality}"
    )


def _write(ds: Dataset, path: Path) -> None:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.SourceApplicationEntityTitle = "PACSEXPORT"
    ds.file_meta = meta
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)


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


def _write_bad_files(
    out: Path, day_studies: list[_Study], day_index: int, rng: np.random.Generator
) -> int:
    """Four bad files in the day's study folders, shared between the programmes present."""
    programmes = sorted({s.programme for s in day_studies})
    hosts = {name: next(s for s in day_studies if s.programme == name) for name in programmes}
    for kind, writer in enumerate(_BAD_FILE_WRITERS):
        # Rotate by day so that, over two days, each programme gets every kind of bad file.
        host = hosts[programmes[(kind + day_index) % len(programmes)]]
        writer(_series_dir(out, host), day_index, rng)
    return len(_BAD_FILE_WRITERS)


def _write_labels(path: Path, planned: list[_Study]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(["accession_number", "programme", "label"])
        for study in planned:
            writer.writerow([study.accession, study.programme, int(study.positive)])
