"""Small synthetic DICOM files for unit tests (fake identifiers only)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid


def ct_slice(
    *,
    patient_id: str = "7654321",
    patient_name: str = "Jansen^Pieter",
    study_uid: str | None = None,
    series_uid: str | None = None,
    sop_uid: str | None = None,
    accession: str = "1000000001",
    modality: str = "CT",
    body_part: str = "CHEST",
    study_date: str = "20240312",
    z: float = 0.0,
    size: int = 16,
) -> pydicom.Dataset:
    """A tiny, valid CT slice with fake PHI in the usual places."""
    sop_uid = sop_uid or generate_uid()
    ds = pydicom.Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
    ds.file_meta.MediaStorageSOPInstanceUID = sop_uid
    ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, sop_uid
    ds.StudyInstanceUID = study_uid or generate_uid()
    ds.SeriesInstanceUID = series_uid or generate_uid()
    ds.FrameOfReferenceUID = generate_uid()
    ds.PatientName, ds.PatientID, ds.PatientBirthDate = patient_name, patient_id, "19580312"
    ds.PatientSex, ds.PatientAge = "F", "066Y"
    ds.AccessionNumber, ds.StudyDate, ds.StudyTime = accession, study_date, "101500"
    ds.Modality, ds.BodyPartExamined, ds.Manufacturer = modality, body_part, "SYNTH"
    ds.SeriesNumber, ds.InstanceNumber = 1, 1
    ds.ImagePositionPatient = [0.0, 0.0, z]
    ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
    ds.PixelSpacing, ds.SliceThickness, ds.KVP = [0.7, 0.7], 2.5, 120
    ds.Rows = ds.Columns = size
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.RescaleIntercept, ds.RescaleSlope = -1024, 1
    ds.PixelData = np.full((size, size), 1000, dtype=np.uint16).tobytes()
    return ds


def write(ds: pydicom.Dataset, path: Path) -> Path:
    """Save a dataset as a proper DICOM file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path
