"""Monitor: input and output drift of each partition against the programme's previous days,
with checks that warn and never hold results back."""

# No `from __future__ import annotations`: Dagster reads the context and resource annotations.

from datetime import UTC, datetime, timedelta

import dagster as dg
import polars as pl
from pydantic import Field

from assets._shared import (
    StepChecks,
    markdown_preview,
    read_batch_table,
    step_check,
    write_batch_table,
)
from assets.catalog import instance_catalog
from assets.infer import instance_predictions, study_findings
from orchestration.partitions import batch_of, screening_partitions
from resources.lake import LakeDatabase
from resources.models import ModelRegistry
from resources.secrets import PseudonymKey
from resources.zones import ZoneStore
from screenlake import drift, layout
from screenlake.tables import DRIFT_METRICS, INSTANCE_CATALOG, INSTANCE_PREDICTIONS, STUDY_FINDINGS

_SOURCES = (INSTANCE_CATALOG, INSTANCE_PREDICTIONS, STUDY_FINDINGS)


INPUT_DRIFT = "input_drift"
OUTPUT_DRIFT = "output_drift"


class DriftWindow(dg.Config):
    """How far back the reference window reaches."""

    reference_days: int = Field(
        default=drift.DEFAULT_REFERENCE_DAYS,
        ge=1,
        le=366,
        description="Previous days of the same programme that form the reference window.",
    )


def _tables(research_zone: ZoneStore, batch: layout.Batch, key: bytes) -> drift.PartitionTables:
    catalog, predictions, findings = (
        read_batch_table(research_zone, table, batch, key) for table in _SOURCES
    )
    return drift.PartitionTables(catalog, predictions, findings)


def reference_window(
    research_zone: ZoneStore, batch: layout.Batch, key: bytes, days: int
) -> list[drift.PartitionTables]:
    """The tables of the programme's previous `days` days that were catalogued and scored.

    Research-zone batches are named by keyed tokens, not dates, so each previous day's batch
    name is computed from the partition's own day; a day whose tables are not all there (no
    studies, or not run yet) is left out.
    """
    window = []
    for back in range(1, days + 1):
        earlier = layout.Batch(batch.day - timedelta(days=back), batch.programme)
        paths = [
            research_zone.pull(layout.lake_table_path(table, earlier, key)) for table in _SOURCES
        ]
        if all(path.exists() for path in paths):
            window.append(_tables(research_zone, earlier, key))
    return window


def _positive_rate_band(models: ModelRegistry, programme: str) -> tuple[float, float] | None:
    limits = models.manifest_for(programme).monitoring
    return None if limits is None else (limits.positive_rate_low, limits.positive_rate_high)


@dg.asset(
    deps=[instance_catalog, instance_predictions, study_findings],
    group_name="monitor",
    partitions_def=screening_partitions,
    kinds={"scipy", "parquet"},
    code_version="1",
    check_specs=[
        step_check(
            "drift_metrics",
            INPUT_DRIFT,
            "The scanners, acquisition and input intensities match the reference window (PSI"
            " within its limit, no KS shift); a warning otherwise, which never blocks"
            " publication.",
            blocking=False,
        ),
        step_check(
            "drift_metrics",
            OUTPUT_DRIFT,
            "Scores match the reference window and the positive rate stays in the model's"
            " monitoring band and near the reference rate; a warning otherwise, which never"
            " blocks publication.",
            blocking=False,
        ),
    ],
)
def drift_metrics(
    context: dg.AssetExecutionContext,
    config: DriftWindow,
    research_zone: ZoneStore,
    lake: LakeDatabase,
    pseudonym_key: PseudonymKey,
    models: ModelRegistry,
) -> dg.MaterializeResult:
    """PSI and KS of each input feature (scanner mix, pixel spacing, slice thickness, kVp,
    intensity of the model's input) and output (image and study scores), and the positive rate,
    against the programme's previous days: warnings for a person, never a publication gate.
    Its two checks run in its step, on the metrics read back from the lake."""
    batch, key = batch_of(context), pseudonym_key.key()
    reference = reference_window(research_zone, batch, key, config.reference_days)
    frame = drift.drift_rows(
        _tables(research_zone, batch, key),
        drift.PartitionTables.combined(reference),
        batch_id=batch.research_id(key),
        programme=batch.programme,
        reference_batches=len(reference),
        positive_rate_band=_positive_rate_band(models, batch.programme),
        computed_at=datetime.now(UTC),
    )
    rows = write_batch_table(research_zone, lake, frame, DRIFT_METRICS, batch, key)
    checks = StepChecks()
    written = checks.judge(research_zone, DRIFT_METRICS, batch, key)
    for name, kind in ((INPUT_DRIFT, "input"), (OUTPUT_DRIFT, "output")):
        checks.run(lambda name=name, kind=kind: _drift_check(written, name, kind))
    return checks.materialize_result(
        {
            "rows": rows,
            "reference_days": config.reference_days,
            "reference_batches": len(reference),
            "statistics_computed": frame.filter(pl.col("value").is_not_null()).height,
            "statistics_without_enough_studies": frame.filter(pl.col("value").is_null()).height,
            "warnings": frame.filter(pl.col("warning")).height,
            "preview": markdown_preview(
                frame.sort("warning", descending=True).select(
                    "kind", "feature", "statistic", "value", "p_value", "warning"
                ),
                rows=8,
            ),
        }
    )


def _drift_check(metrics: pl.DataFrame, check_name: str, kind: str) -> dg.AssetCheckResult:
    """A warning when any `kind` (input or output) feature drifted from the reference window."""
    metrics = metrics.filter(pl.col("kind") == kind)
    warned = drift.warnings_of(metrics, kind)
    drifted = [
        {k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items()}
        for row in warned.to_dicts()
    ]
    features = sorted(set(warned["feature"].to_list()))
    return dg.AssetCheckResult(
        check_name=check_name,
        passed=not drifted,
        severity=dg.AssetCheckSeverity.WARN,
        description=(
            (
                f"{len(features)} {kind} features drifted from the reference window: "
                + ", ".join(features)
            )
            if features
            else f"no {kind} drift from the reference window"
        ),
        metadata={
            "drifted": dg.MetadataValue.json(drifted),
            "statistics_computed": metrics.filter(pl.col("value").is_not_null()).height,
            "statistics_without_enough_studies": metrics.filter(pl.col("value").is_null()).height,
            "reference_batches": int(metrics.select(pl.col("reference_batches").max()).item() or 0),
        },
    )
