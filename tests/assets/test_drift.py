"""The drift asset and its checks: rows in the lake, warnings that never block publication."""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path
from typing import Any

import dagster as dg
import polars as pl
import pytest

from assets.monitoring import DriftWindow, drift_metrics
from assets.validate import publication_guards
from orchestration.definitions import defs
from orchestration.partitions import partition_key
from orchestration.resources import resources_for
from screenlake import layout
from screenlake.drift import PartitionTables
from screenlake.lake import query, use_lake
from screenlake.programmes import PROGRAMME_NAMES
from screenlake.tables import (
    DRIFT_METRICS,
    INSTANCE_CATALOG,
    INSTANCE_PREDICTIONS,
    STUDY_FINDINGS,
    read_parquet,
    write_parquet,
)
from tests.conftest import Export
from tests.screenlake.test_drift import partition_tables

PROGRAMME = "cxr_tb"
DAY = date(2024, 3, 10)
PUBLICATION = ("validated_findings", "coordinator_worklist", "pacs_findings_reports")


def _resources(root: Path, drop: Path | None = None) -> dict[str, Any]:
    return resources_for(
        "local",
        {
            "SCREENLAKE_DROP": str(drop or root / "drop"),
            "SCREENLAKE_PHI_ZONE": str(root / "phi"),
            "SCREENLAKE_RESEARCH_ZONE": str(root / "research"),
            "SCREENLAKE_DEID_WORKERS": "1",
        },
    )


def _as_published(frame: pl.DataFrame) -> pl.DataFrame:
    """The hand-made rows in the forms the data-quality suites demand of real ones: `2.25.` UIDs,
    `SL` pseudonyms, and the registered model's provenance, so that `validated_findings`
    publishes them and the test shows what drift alone does."""
    import json

    from models import bundled_models_root

    manifest = json.loads(
        (bundled_models_root() / "cxr_tb_reference" / "manifest.json").read_text("utf-8")
    )
    uids = ("study_instance_uid", "series_instance_uid", "sop_instance_uid")
    columns = [
        (pl.lit("2.25.") + pl.col(c).hash(seed=1).cast(pl.String)).alias(c)
        for c in uids
        if c in frame.columns
    ]
    if "patient_pseudonym" in frame.columns:
        columns.append(
            pl.col("patient_pseudonym")
            .hash(seed=2)
            .map_elements(lambda v: f"SL{v:016X}", return_dtype=pl.String)
            .alias("patient_pseudonym")
        )
    if "weights_sha256" in frame.columns:
        columns += [
            pl.lit(manifest["name"]).alias("model_name"),
            pl.lit(manifest["version"]).alias("model_version"),
            pl.lit(manifest["weights_sha256"]).alias("weights_sha256"),
        ]
    if "threshold" in frame.columns:
        columns.append(pl.lit(manifest["threshold"]).alias("threshold"))
    return frame.with_columns(columns)


def _land(research: Path, day: date, key: bytes, tables: PartitionTables) -> None:
    """Write one day's catalog, predictions and findings where the upstream assets would."""
    batch = layout.Batch(day, PROGRAMME)
    for table, frame in (
        (INSTANCE_CATALOG, tables.catalog),
        (INSTANCE_PREDICTIONS, tables.predictions),
        (STUDY_FINDINGS, tables.findings),
    ):
        batch_id = pl.lit(batch.research_id(key))
        write_parquet(
            _as_published(frame).with_columns(batch_id.alias("batch_id")),
            table,
            research / layout.lake_table_path(table, batch, key),
        )


@pytest.fixture
def drifted_day(tmp_path: Path, session_keys: dict[str, str]) -> dict[str, Any]:
    """Two ordinary days of chest X-rays, then a day from a new scanner at another kVp."""
    resources = _resources(tmp_path)
    key = resources["pseudonym_key"].key()
    research = tmp_path / "research"
    for back, seed in ((2, 100), (1, 101)):
        _land(research, DAY - timedelta(days=back), key, partition_tables(seed=seed))
    drifted = partition_tables(seed=7, manufacturers=("Canon",), kvps=(90.0,))
    _land(research, DAY, key, drifted)
    return resources


def _lake_query(resources: dict[str, Any], sql: str, programme: str = PROGRAMME) -> pl.DataFrame:
    lake = resources["lake"]
    with lake.lake_connection() as con:
        use_lake(con, lake.lake_root())
        return query(con, sql, [programme])


def _drift_run(resources: dict[str, Any], **kwargs: Any) -> dg.ExecuteInProcessResult:
    return dg.materialize(
        [drift_metrics],
        resources=resources,
        partition_key=partition_key(DAY, PROGRAMME),
        **kwargs,
    )


def test_input_drift_warns_and_the_run_goes_on(drifted_day: dict[str, Any]) -> None:
    result = _drift_run(drifted_day)
    assert result.success
    checks = {e.check_name: e for e in result.get_asset_check_evaluations()}
    warned = checks["input_drift"]
    assert not warned.passed
    assert warned.severity == dg.AssetCheckSeverity.WARN
    rows: list[dict[str, Any]] = warned.metadata["drifted"].value  # type: ignore[assignment]
    drifted = {(d["feature"], d["statistic"]) for d in rows}
    assert {("manufacturer", "psi"), ("kvp", "psi"), ("kvp", "ks")} <= drifted
    assert warned.metadata["reference_batches"].value == 2
    assert checks["output_drift"].passed
    [materialisation] = result.get_asset_materialization_events()
    assert materialisation.asset_key == dg.AssetKey("drift_metrics")


def test_the_rows_land_in_the_lake_and_the_drift_view_answers(
    drifted_day: dict[str, Any],
) -> None:
    _drift_run(drifted_day)
    key = drifted_day["pseudonym_key"].key()
    batch = layout.Batch(DAY, PROGRAMME)
    zone = drifted_day["research_zone"]
    rows = read_parquet(DRIFT_METRICS, zone.path(layout.lake_table_path(DRIFT_METRICS, batch, key)))
    assert set(rows["batch_id"]) == {batch.research_id(key)}
    assert set(rows["reference_batches"]) == {2}
    kvp = rows.filter((pl.col("feature") == "kvp") & (pl.col("statistic") == "psi")).row(
        0, named=True
    )
    assert kvp["warning"] and kvp["value"] > kvp["threshold"] >= 0.2
    assert (kvp["current_rows"], kvp["reference_rows"]) == (60, 120)
    view = _lake_query(drifted_day, "SELECT * FROM drift WHERE programme = ?")
    assert view.height == rows.height
    assert view["warning"][0]  # warnings first
    assert set(view.filter(pl.col("warning"))["feature"]) == {
        "manufacturer",
        "manufacturer_model_name",
        "kvp",
    }
    assert set(view["batches_measured"]) == {1}


def test_the_reference_window_reaches_as_far_back_as_configured(
    drifted_day: dict[str, Any],
) -> None:
    result = _drift_run(
        drifted_day,
        run_config=dg.RunConfig(ops={"drift_metrics": DriftWindow(reference_days=1)}),
        selection=[drift_metrics],
    )
    [materialisation] = result.get_asset_materialization_events()
    metadata = materialisation.materialization.metadata
    assert metadata["reference_batches"].value == 1
    assert metadata["reference_days"].value == 1


def test_a_first_day_has_no_reference_and_warns_about_nothing(
    tmp_path: Path, session_keys: dict[str, str]
) -> None:
    resources = _resources(tmp_path)
    _land(tmp_path / "research", DAY, resources["pseudonym_key"].key(), partition_tables(seed=7))
    result = _drift_run(resources)
    assert all(e.passed for e in result.get_asset_check_evaluations())
    [materialisation] = result.get_asset_materialization_events()
    assert materialisation.materialization.metadata["reference_batches"].value == 0


def test_drift_never_guards_publication() -> None:
    graph = defs.resolve_asset_graph()
    downstream = dg.AssetSelection.assets("drift_metrics").downstream().resolve(graph)
    assert not {dg.AssetKey(name) for name in PUBLICATION} & downstream
    assert [spec.blocking for spec in drift_metrics.check_specs] == [False, False]
    assert not {c for c in publication_guards() if c.asset_key == dg.AssetKey("drift_metrics")}


@pytest.mark.slow
@pytest.mark.parametrize("programme", PROGRAMME_NAMES)
def test_two_days_of_the_synthetic_export_get_drift_rows(
    programme: str, synthetic_export: Export, session_keys: dict[str, str], tmp_path: Path
) -> None:
    resources = _resources(tmp_path, synthetic_export.drop)
    instance = dg.DagsterInstance.ephemeral()
    # Up to publication, so that a night with drift checks is seen to publish.
    upstream = dg.AssetSelection.assets("drift_metrics", "validated_findings").upstream()
    graph: list[Any] = [*defs.assets, *defs.asset_checks]  # type: ignore[list-item, misc]
    for day in synthetic_export.days:
        result = dg.materialize(
            graph,
            resources=resources,
            partition_key=partition_key(day, programme),
            instance=instance,
            selection=upstream,
        )
        assert result.success
        checks = {e.check_name: e for e in result.get_asset_check_evaluations()}
        assert checks["input_drift"].passed and checks["output_drift"].passed
        published = {e.asset_key for e in result.get_asset_materialization_events()}
        assert dg.AssetKey("validated_findings") in published
    counts = _lake_query(
        resources,
        "SELECT reference_batches, count(*) AS rows, count(value) AS measured, "
        "count(*) FILTER (WHERE warning) AS warned FROM drift_metrics "
        "WHERE programme = ? GROUP BY ALL ORDER BY reference_batches",
        programme,
    )
    view = _lake_query(resources, "SELECT * FROM drift WHERE programme = ?", programme)
    # A few studies a day: every statistic waits for more, and nothing warns.
    assert counts.rows() == [(0, 17, 0, 0), (1, 17, 0, 0)]
    assert view.height == 17 and not view["warning"].any()
