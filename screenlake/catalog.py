"""The catalogue: one row per de-identified instance, and its series and study roll-ups.

Only de-identified headers are read here, without pixels, so nothing in the catalogue can hold
more than the research zone's files already do.
"""

from __future__ import annotations

from datetime import date
from pathlib import Path

import polars as pl
import pydicom
from pydicom.multival import MultiValue

from screenlake.tables import INSTANCE_CATALOG, SERIES_CATALOG, STUDY_CATALOG, conform, frame_of


def _str(ds: pydicom.Dataset, keyword: str) -> str | None:
    value = ds.get(keyword)
    return None if value is None or str(value) == "" else str(value)


def _int(ds: pydicom.Dataset, keyword: str) -> int | None:
    value = ds.get(keyword)
    if value is None or value == "":
        return None
    return int(value)


def _float(value: object) -> float | None:
    if value is None or value == "":
        return None
    return float(value)  # type: ignore[arg-type]


def _date(value: str | None) -> date | None:
    if not value or len(value) < 8:
        return None
    return date(int(value[:4]), int(value[4:6]), int(value[6:8]))


def _slice_position(ds: pydicom.Dataset) -> float | None:
    """Position along the slice normal, the order in which a volume's slices belong."""
    position, orientation = ds.get("ImagePositionPatient"), ds.get("ImageOrientationPatient")
    if not isinstance(position, MultiValue) or not isinstance(orientation, MultiValue):
        return None
    row, col = [float(v) for v in orientation[:3]], [float(v) for v in orientation[3:6]]
    normal = (
        row[1] * col[2] - row[2] * col[1],
        row[2] * col[0] - row[0] * col[2],
        row[0] * col[1] - row[1] * col[0],
    )
    return sum(float(p) * n for p, n in zip(position, normal, strict=True))


def instance_row(
    path: Path, research_path: str, batch_id: str, programme: str
) -> dict[str, object]:
    """The catalogue row of one de-identified file."""
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    spacing = ds.get("PixelSpacing")
    return {
        "batch_id": batch_id,
        "programme": programme,
        "sop_instance_uid": str(ds.SOPInstanceUID),
        "series_instance_uid": str(ds.SeriesInstanceUID),
        "study_instance_uid": str(ds.StudyInstanceUID),
        "patient_pseudonym": str(ds.PatientID),
        "sop_class_uid": _str(ds, "SOPClassUID"),
        "transfer_syntax_uid": str(ds.file_meta.TransferSyntaxUID),
        "modality": _str(ds, "Modality"),
        "body_part_examined": _str(ds, "BodyPartExamined"),
        "study_date": _date(_str(ds, "StudyDate")),
        "series_number": _int(ds, "SeriesNumber"),
        "instance_number": _int(ds, "InstanceNumber"),
        "rows": _int(ds, "Rows"),
        "columns": _int(ds, "Columns"),
        "number_of_frames": _int(ds, "NumberOfFrames") or 1,
        "pixel_spacing_row_mm": _float(spacing[0]) if spacing else None,
        "pixel_spacing_col_mm": _float(spacing[1]) if spacing else None,
        "slice_thickness_mm": _float(ds.get("SliceThickness")),
        "slice_position_mm": _slice_position(ds),
        "kvp": _float(ds.get("KVP")),
        "manufacturer": _str(ds, "Manufacturer"),
        "manufacturer_model_name": _str(ds, "ManufacturerModelName"),
        "patient_sex": _str(ds, "PatientSex"),
        "patient_age": _str(ds, "PatientAge"),
        "research_path": research_path,
        "size_bytes": path.stat().st_size,
    }


def instance_catalog(
    research_root: Path, research_paths: list[str], batch_id: str, programme: str
) -> pl.DataFrame:
    """Catalogue rows for the de-identified files at `research_paths` under `research_root`."""
    rows = [
        instance_row(research_root / rel, rel, batch_id, programme)
        for rel in sorted(research_paths)
    ]
    return frame_of(rows, INSTANCE_CATALOG)


def series_catalog(instances: pl.DataFrame) -> pl.DataFrame:
    """One row per series, rolled up from the instance catalogue."""
    frame = instances.group_by("series_instance_uid", maintain_order=True).agg(
        pl.col("batch_id").first(),
        pl.col("programme").first(),
        pl.col("study_instance_uid").first(),
        pl.col("patient_pseudonym").first(),
        pl.col("modality").first(),
        pl.col("series_number").first(),
        pl.len().cast(pl.Int32).alias("instances"),
        pl.col("slice_thickness_mm").median(),
        pl.col("manufacturer").first(),
        pl.col("size_bytes").sum(),
    )
    return pl.from_arrow(conform(frame, SERIES_CATALOG))  # type: ignore[return-value]


def study_catalog(instances: pl.DataFrame) -> pl.DataFrame:
    """One row per study, rolled up from the instance catalogue."""
    frame = instances.group_by("study_instance_uid", maintain_order=True).agg(
        pl.col("batch_id").first(),
        pl.col("programme").first(),
        pl.col("patient_pseudonym").first(),
        pl.col("study_date").min(),
        pl.col("modality").unique().sort().str.join("\\").alias("modalities"),
        pl.col("series_instance_uid").n_unique().cast(pl.Int32).alias("series"),
        pl.len().cast(pl.Int32).alias("instances"),
        pl.col("patient_sex").first(),
        pl.col("patient_age").first(),
    )
    return pl.from_arrow(conform(frame, STUDY_CATALOG))  # type: ignore[return-value]
