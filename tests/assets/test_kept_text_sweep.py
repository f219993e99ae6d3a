"""A device that writes the patient's own name into a kept attribute: the sweep cleans it and
counts it, and the partition is published instead of blocked."""

from __future__ import annotations

import shutil
from pathlib import Path

import dagster as dg
import polars as pl
import pydicom
import pytest

from orchestration.definitions import defs
from orchestration.partitions import partition_key
from tests.assets.zones import local_resources
from tests.conftest import Export

pytestmark = pytest.mark.slow
PROGRAMME = "cxr_tb"
DEIDENTIFICATION = dg.AssetSelection.assets(
    "pacs_studies", "raw_instances", "deidentified_instances"
)


def test_the_patients_own_name_in_kept_text_is_cleaned_counted_and_not_blocking(
    synthetic_export: Export, session_keys: dict[str, str], tmp_path: Path
) -> None:
    drop = tmp_path / "drop"
    shutil.copytree(synthetic_export.drop, drop)
    day = synthetic_export.days[0].strftime("%Y%m%d")
    target = next(
        p
        for p in sorted((drop / day).rglob("IM00001.dcm"))
        if p.parent.name.endswith(("_CR", "_DX"))
    )
    ds = pydicom.dcmread(target)
    family = str(ds.PatientName).split("^")[0]
    ds.ManufacturerModelName = f"DR unit of {family}"
    ds.save_as(target, enforce_file_format=True)

    result = dg.materialize(
        defs.assets,  # type: ignore[arg-type]
        selection=DEIDENTIFICATION,
        resources=local_resources(drop, tmp_path),
        partition_key=partition_key(synthetic_export.days[0], PROGRAMME),
    )

    assert result.success
    assert all(e.passed for e in result.get_asset_check_evaluations())
    [made] = [
        e.materialization
        for e in result.get_asset_materialization_events()
        if e.materialization.asset_key == dg.AssetKey("deidentified_instances")
    ]
    assert made.metadata["kept_text_values_cleaned"].value == 1
    audit = pl.read_parquet(
        str(tmp_path / "research" / "lake" / "deidentification_audit" / "*" / "*.parquet")
    )
    assert audit["kept_text_cleaned"].sum() == 1
    research = tmp_path / "research" / "dicom"
    models = {
        str(pydicom.dcmread(p, stop_before_pixels=True).get("ManufacturerModelName", ""))
        for p in research.rglob("*.dcm")
    }
    assert "DR unit of" in models
    assert not [m for m in models if family.lower() in m.lower()]
