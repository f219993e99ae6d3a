from __future__ import annotations

from datetime import date
from pathlib import Path

from screenlake.catalog import instance_catalog, series_catalog, study_catalog
from screenlake.tables import INSTANCE_CATALOG, SERIES_CATALOG, STUDY_CATALOG, conform
from tests.dicom_factory import ct_slice, write


def _research_files(root: Path) -> list[str]:
    paths = []
    for study, slices in (("2.25.1", 3), ("2.25.2", 2)):
        for i in range(slices):
            ds = ct_slice(
                patient_id="SLAAAA",
                study_uid=study,
                series_uid=study + "1",
                sop_uid=f"{study}9{i}",
                z=-2.5 * i,
                study_date="20231103",
            )
            rel = f"dicom/{study}/{ds.SOPInstanceUID}.dcm"
            write(ds, root / rel)
            paths.append(rel)
    return paths


def test_instance_rows_follow_the_headers(tmp_path: Path) -> None:
    frame = instance_catalog(tmp_path, _research_files(tmp_path), "B1", "lung_ldct")
    conform(frame, INSTANCE_CATALOG)
    assert frame.height == 5
    row = frame.filter(frame["sop_instance_uid"] == "2.25.191").row(0, named=True)
    assert row["study_date"] == date(2023, 11, 3)
    assert row["slice_position_mm"] == -2.5
    assert row["pixel_spacing_row_mm"] == 0.7 and row["kvp"] == 120.0
    assert row["patient_pseudonym"] == "SLAAAA" and row["batch_id"] == "B1"
    assert row["size_bytes"] == (tmp_path / row["research_path"]).stat().st_size


def test_series_and_study_roll_ups(tmp_path: Path) -> None:
    instances = instance_catalog(tmp_path, _research_files(tmp_path), "B1", "lung_ldct")
    series = series_catalog(instances)
    studies = study_catalog(instances)
    conform(series, SERIES_CATALOG)
    conform(studies, STUDY_CATALOG)
    assert sorted(series["instances"].to_list()) == [2, 3]
    assert sorted(studies["instances"].to_list()) == [2, 3]
    assert studies["modalities"].to_list() == ["CT", "CT"]
    assert studies["series"].to_list() == [1, 1]
