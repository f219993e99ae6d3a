"""The whole graph on a real-sized synthetic export: 512x512 signed CT, detector-size
radiographs, and JPEG-LS and JPEG 2000 lossless series beside uncompressed ones."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dagster as dg
import polars as pl
import pydicom
import pytest
from pydicom.uid import JPEG2000Lossless, JPEGLSLossless

from orchestration.definitions import defs
from orchestration.partitions import partition_key
from screenlake.programmes import PROGRAMME_NAMES
from screenlake.synth.export import ExportSummary, generate_export
from screenlake.synth.presets import image_preset
from tests.assets.zones import local_resources

pytestmark = pytest.mark.slow

# Seed 28 of three studies on one day: a CT on the second scanner (JPEG-LS), a CR radiograph
# (uncompressed) and a positive DX radiograph (JPEG 2000).
SEED, STUDIES, CT_SLICES = 28, 3, 40


@dataclass(frozen=True)
class RealRun:
    drop: Path
    summary: ExportSummary
    research: Path
    phi: Path
    results: list[dg.ExecuteInProcessResult]


@pytest.fixture(scope="module")
def real_run(tmp_path_factory: pytest.TempPathFactory, session_keys: dict[str, str]) -> RealRun:
    root = tmp_path_factory.mktemp("real_sized")
    drop = root / "drop"
    summary = generate_export(
        drop,
        studies=STUDIES,
        seed=SEED,
        labels_path=root / "labels.csv",
        days=1,
        preset=image_preset("real", ct_slices=CT_SLICES),
    )
    resources = local_resources(drop, root / "zones", SCREENLAKE_DROP_SETTLE_SECONDS="0")
    graph: list[Any] = [*(defs.assets or []), *(defs.asset_checks or [])]
    instance = dg.DagsterInstance.ephemeral()
    results = [
        dg.materialize(
            graph,
            resources=resources,
            partition_key=partition_key(summary.days[0], programme),
            instance=instance,
        )
        for programme in PROGRAMME_NAMES
    ]
    return RealRun(drop, summary, root / "zones" / "research", root / "zones" / "phi", results)


def _lake(run: RealRun, table: str) -> pl.DataFrame:
    return pl.read_parquet(str(run.research / "lake" / table / "*" / "*.parquet"))


def _pixel_digests(paths: list[Path]) -> dict[str, str]:
    """SOP class and pixel digest -> transfer syntax, for every readable image among `paths`."""
    found = {}
    for path in paths:
        ds = pydicom.dcmread(path)
        digest = hashlib.sha256(ds.pixel_array.tobytes()).hexdigest()
        found[digest] = str(ds.file_meta.TransferSyntaxUID)
    return found


def test_the_export_is_real_sized_and_partly_compressed(real_run: RealRun) -> None:
    syntaxes = set()
    for path in real_run.drop.rglob("IM0*.dcm"):
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        syntaxes.add(ds.file_meta.TransferSyntaxUID)
        assert ds.Rows == (512 if ds.Modality == "CT" else 3000)
    assert {JPEGLSLossless, JPEG2000Lossless} < syntaxes
    assert real_run.summary.instances == CT_SLICES + 2


def test_every_partition_succeeds_and_every_check_passes(real_run: RealRun) -> None:
    for result in real_run.results:
        assert result.success
        failed = [e for e in result.get_asset_check_evaluations() if not e.passed]
        assert failed == [], [(e.check_name, e.description) for e in failed]


def test_every_image_is_deidentified_and_only_the_bad_files_are_quarantined(
    real_run: RealRun,
) -> None:
    audit = _lake(real_run, "deidentification_audit")
    outcomes = audit.group_by("outcome").len().sort("outcome")
    assert dict(outcomes.iter_rows()) == {
        "deidentified": real_run.summary.instances,
        "quarantined": real_run.summary.bad_files,
    }
    research = sorted((real_run.research / "dicom").rglob("*.dcm"))
    assert len(research) == real_run.summary.instances
    # De-identification leaves pixel data as it came, compressed or not.
    originals = sorted(real_run.drop.rglob("IM0*.dcm"))
    assert _pixel_digests(research) == _pixel_digests(originals)


def test_every_study_is_scored(real_run: RealRun) -> None:
    predictions = _lake(real_run, "instance_predictions")
    assert predictions.height == real_run.summary.instances
    assert predictions["status"].unique().to_list() == ["ok"]
    findings = _lake(real_run, "validated_findings")
    assert findings.height == STUDIES
    assert findings["score"].null_count() == 0
    assert findings["instances_failed"].sum() == 0
