"""The image series of each modality: low-dose chest CT, and chest radiographs from CR or DX."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import numpy as np
from pydicom.dataset import Dataset

from screenlake.synth.dicom import (
    format_ds,
    instance_dataset,
    private_block,
    seeded_uid,
    series_module,
    set_pixels,
)
from screenlake.synth.images import (
    CT_PADDING_VALUE,
    ct_phantom,
    ct_slices,
    ct_stored_signed,
    ct_stored_values,
    detector_radiograph,
)
from screenlake.synth.people import age_on
from screenlake.synth.plan import PlannedStudy

CT_FIELD_OF_VIEW_MM = 360.0
CXR_FIELD_OF_VIEW_MM = 430.0


def ct_datasets(
    study: PlannedStudy, seed: int, slices: int, size: int, device_storage: bool = False
) -> Iterator[Dataset]:
    """The axial series of a low-dose chest CT, superior slice first.

    With `device_storage`, slices are made as they are written (a 300-slice series never sits
    in memory whole) and stored as signed int16 with padding outside the reconstruction circle.
    """
    rng = np.random.default_rng([seed, int(study.accession)])
    phantom = ct_phantom(rng, study.positive, slices=slices, size=size)
    hounsfield: Iterable[np.ndarray]
    if device_storage:
        hounsfield = ct_slices(phantom, rng)
        # The table position cannot wait for every slice's noise: it gets its own stream.
        table_rng = np.random.default_rng([seed, int(study.accession), 1])
    else:
        # The demo's bytes draw the table position after the whole volume's noise.
        hounsfield = list(ct_slices(phantom, rng))
        table_rng = rng
    spacing = CT_FIELD_OF_VIEW_MM / size
    # ct_volume draws slices twice as thick as pixels are wide.
    thickness = 2 * spacing
    corner = -CT_FIELD_OF_VIEW_MM / 2 + spacing / 2
    z_top = round(-20.0 - 30.0 * float(table_rng.random()), 1)
    patient = study.patient
    comment = (
        f"LDCT screening ronde {study.visit} - {patient.full_name}, "
        f"{age_on(patient.birth_date, study.day)} jr. "
        f"Verwezen door {study.referrer.title} {study.referrer.family_name}."
    )
    for k, slice_hu in enumerate(hounsfield):
        ds = instance_dataset(study, seed, k + 1, study.start_s + 180 + 0.125 * k, comment)
        series_module(ds, study, seed, "Thorax lage dosis longkernel")
        ds.FrameOfReferenceUID = seeded_uid(seed, "frame", study.accession)
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
        ds.ReconstructionDiameter = format_ds(CT_FIELD_OF_VIEW_MM)
        ds.GantryDetectorTilt = "0"
        ds.TableHeight = "155"
        ds.RotationDirection = "CW"
        ds.ConvolutionKernel = "LUNG"
        ds.SliceThickness = ds.SpacingBetweenSlices = format_ds(thickness)
        ds.PixelSpacing = [format_ds(spacing), format_ds(spacing)]
        ds.ImageOrientationPatient = ["1", "0", "0", "0", "1", "0"]
        z = z_top - k * thickness
        ds.ImagePositionPatient = [format_ds(corner), format_ds(corner), format_ds(z)]
        ds.SliceLocation = format_ds(z)
        ds.RescaleIntercept = "-1024"
        ds.RescaleSlope = "1"
        ds.RescaleType = "HU"
        ds.WindowCenter = "-600"
        ds.WindowWidth = "1500"
        ds.WindowCenterWidthExplanation = "LUNG"
        if device_storage:
            set_pixels(ds, ct_stored_signed(slice_hu), bits_stored=16)
            ds.PixelPaddingValue = CT_PADDING_VALUE
        else:
            set_pixels(ds, ct_stored_values(slice_hu))
        private_block(ds, study, str(ds.ProtocolName))
        yield ds


def cxr_datasets(
    study: PlannedStudy, seed: int, size: int, columns: int | None = None, dx_bits_stored: int = 12
) -> Iterator[Dataset]:
    """A PA chest radiograph, followed by a left lateral for some studies.

    Images have `size` rows and `columns` columns (default `size`); the longer side spans the
    detector's field of view. DX images store `dx_bits_stored` bits, CR images 12.
    """
    rng = np.random.default_rng([seed, int(study.accession)])
    columns = size if columns is None else columns
    bits = dx_bits_stored if study.modality == "DX" else 12
    views = ("PA", "LL") if study.lateral else ("PA",)
    description = "Thorax PA + LAT" if study.lateral else "Thorax PA"
    spacing = format_ds(CXR_FIELD_OF_VIEW_MM / max(size, columns))
    for number, view in enumerate(views, start=1):
        comment = f"TB-screening {study.patient.full_name} ({study.patient.patient_id}), {view}"
        ds = instance_dataset(study, seed, number, study.start_s + 120 + 40 * number, comment)
        series_module(ds, study, seed, description)
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
        ds.WindowCenter = str(2 ** (bits - 1))
        ds.WindowWidth = str(2**bits)
        if study.modality == "DX":
            _dx_attributes(ds)
        image = detector_radiograph(rng, study.positive, size, columns, bits)
        set_pixels(ds, image, bits_stored=bits)
        private_block(ds, study, str(ds.ProtocolName))
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
