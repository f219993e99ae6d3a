"""DICOM module builders for the synthetic export: one function per module group.

All values come from the plan and the seed; UIDs are derived from the seed, never random.
"""

from __future__ import annotations

from datetime import date

import numpy as np
from pydicom.dataset import Dataset
from pydicom.uid import (
    ComputedRadiographyImageStorage,
    CTImageStorage,
    DigitalXRayImageStorageForPresentation,
    generate_uid,
)

from screenlake.synth.people import BSN_ISSUER
from screenlake.synth.plan import PlannedStudy

PRIVATE_CREATOR = "SYNTHVENDOR 1.0"
PRIVATE_GROUP = 0x0029
_SOP_CLASSES = {
    "CT": CTImageStorage,
    "CR": ComputedRadiographyImageStorage,
    "DX": DigitalXRayImageStorageForPresentation,
}
_DESCRIPTIONS = {"CT": "CT thorax lage dosis", "CR": "X-thorax", "DX": "X-thorax"}


def seeded_uid(seed: int, *parts: object) -> str:
    """A UID that depends only on the seed and `parts`."""
    return generate_uid(entropy_srcs=["screenlake-synth", str(seed), *map(str, parts)])


def format_da(day: date) -> str:
    """A DICOM DA value."""
    return day.strftime("%Y%m%d")


def format_tm(seconds: float) -> str:
    """A DICOM TM value with milliseconds, from seconds after midnight."""
    ms = round(seconds * 1000)
    s, ms = divmod(ms, 1000)
    return f"{s // 3600:02d}{s // 60 % 60:02d}{s % 60:02d}.{ms:03d}"


def format_ds(value: float) -> str:
    """A DICOM DS value, short enough for the 16-character limit."""
    return f"{value:.6g}"


def _patient_module(ds: Dataset, study: PlannedStudy) -> None:
    patient = study.patient
    ds.PatientName = patient.dicom_name
    ds.PatientID = patient.patient_id
    ds.IssuerOfPatientID = study.institution.issuer_of_patient_id
    ds.TypeOfPatientID = "TEXT"
    ds.PatientBirthDate = format_da(patient.birth_date)
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
    ds.PatientSize = format_ds(patient.height_m)


def _study_module(ds: Dataset, study: PlannedStudy, seed: int) -> None:
    ds.StudyInstanceUID = seeded_uid(seed, "study", study.accession)
    ds.StudyDate = format_da(study.day)
    ds.StudyTime = format_tm(study.start_s)
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


def series_module(ds: Dataset, study: PlannedStudy, seed: int, description: str) -> None:
    """The general series attributes of the study's single series."""
    ds.Modality = study.modality
    ds.SeriesInstanceUID = seeded_uid(seed, "series", study.accession, 1)
    ds.SeriesNumber = 1
    ds.SeriesDate = format_da(study.day)
    ds.SeriesTime = format_tm(study.start_s + 60)
    ds.SeriesDescription = description
    ds.ProtocolName = "LDCT_THORAX_SCREENING" if study.modality == "CT" else "THORAX_TB_SCREENING"
    ds.BodyPartExamined = "CHEST"
    ds.PerformingPhysicianName = study.radiologist.dicom_name
    ds.OperatorsName = study.operator.dicom_name


def _equipment_module(ds: Dataset, study: PlannedStudy) -> None:
    station, institution = study.station, study.institution
    ds.Manufacturer = station.manufacturer
    ds.ManufacturerModelName = station.model
    ds.SoftwareVersions = station.software
    ds.DeviceSerialNumber = station.serial
    ds.StationName = station.station_name
    ds.InstitutionName = institution.name
    ds.InstitutionAddress = institution.address
    ds.InstitutionalDepartmentName = institution.department


def private_block(ds: Dataset, study: PlannedStudy, protocol: str) -> None:
    """The vendor's private block, holding copies of the patient's identifiers."""
    # Vendors copy identifiers into their own private groups; de-identification must find them.
    block = ds.private_block(PRIVATE_GROUP, PRIVATE_CREATOR, create=True)
    patient = study.patient
    block.add_new(0x10, "LO", f"{patient.family_name}, {patient.given_name}")
    block.add_new(0x11, "LO", patient.patient_id)
    block.add_new(0x12, "LO", protocol)
    block.add_new(0x13, "US", study.visit)


def instance_dataset(
    study: PlannedStudy, seed: int, number: int, content_s: float, comment: str
) -> Dataset:
    """A dataset with every module common to CT, CR and DX filled in for one instance."""
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID = _SOP_CLASSES[study.modality]
    ds.SOPInstanceUID = seeded_uid(seed, "instance", study.accession, 1, number)
    ds.InstanceCreationDate = format_da(study.day)
    ds.InstanceCreationTime = format_tm(content_s + 45)
    _patient_module(ds, study)
    _study_module(ds, study, seed)
    _equipment_module(ds, study)
    ds.InstanceNumber = number
    ds.AcquisitionNumber = 1
    ds.ContentDate = ds.AcquisitionDate = format_da(study.day)
    ds.ContentTime = ds.AcquisitionTime = format_tm(content_s)
    ds.ImageComments = comment
    ds.BurnedInAnnotation = "NO"
    ds.LossyImageCompression = "00"
    return ds


def set_pixels(ds: Dataset, image: np.ndarray, bits_stored: int = 12) -> None:
    """The image pixel module: monochrome values of `bits_stored` bits in 16-bit cells, signed
    (PixelRepresentation 1) when `image` is a signed integer array."""
    signed = np.issubdtype(image.dtype, np.signedinteger)
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = image.shape
    ds.BitsAllocated = 16
    ds.BitsStored = bits_stored
    ds.HighBit = bits_stored - 1
    ds.PixelRepresentation = int(signed)
    ds.PixelData = image.astype("<i2" if signed else "<u2").tobytes()
