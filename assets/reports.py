"""Publish: the programme report, one self-contained HTML page per programme in the research
zone, for coordinators and clinical governance."""

# No `from __future__ import annotations`: Dagster reads the context and resource annotations.

from collections.abc import Sequence
from datetime import UTC, date, datetime
from typing import TYPE_CHECKING

import dagster as dg

from assets._checks import check_keys, latest_evaluations
from assets.validate import validated_findings
from orchestration.partitions import batch_of, partition_key, screening_partitions
from resources.models import ModelRegistry
from resources.secrets import PseudonymKey
from resources.zones import ZoneStore
from screenlake import layout
from screenlake.tables import (
    DEIDENTIFICATION_AUDIT,
    DRIFT_METRICS,
    PERFORMANCE_AUDIT,
    STUDY_FINDINGS,
    VALIDATED_FINDINGS,
)

if TYPE_CHECKING:
    from screenlake.inference.manifest import MonitoringLimits

# A programme has a night for each day its files were de-identified: the first research-zone
# asset, so that a night whose findings were held back still counts.
NIGHTS_FROM = dg.AssetKey("deidentified_instances")


@dg.asset(
    group_name="publish",
    partitions_def=screening_partitions,
    # By key: the monitoring assets live in modules of their own and need not be imported here.
    deps=[validated_findings, "drift_metrics", "performance_audit"],
    kinds={"html"},
)
def programme_report(
    context: dg.AssetExecutionContext,
    research_zone: ZoneStore,
    pseudonym_key: PseudonymKey,
    models: ModelRegistry,
) -> dg.MaterializeResult:
    """The programme's report over all its nights: volumes, the positive rate on a p-chart,
    scores against the reference window, drift, data-quality checks, the performance audit
    and quarantine reasons. Nights are numbered in day order; the page shows no real date and
    no identifier. Any partition's run rewrites the programme's one page."""
    from screenlake import report

    batch, key = batch_of(context), pseudonym_key.key()
    # The real days stay here: the report only learns the order of the batches.
    days = _programme_days(context.instance, batch)
    batches = [layout.Batch(day, batch.programme) for day in days]
    nights = report.Nights.in_day_order([b.research_id(key) for b in batches])
    tables = {
        table.name: report.read_nights(
            research_zone.pull(layout.lake_table_path(table, batch, key).parent), table, nights
        )
        for table in (
            VALIDATED_FINDINGS,
            STUDY_FINDINGS,
            DEIDENTIFICATION_AUDIT,
            DRIFT_METRICS,
            PERFORMANCE_AUDIT,
        )
    }
    inputs = report.ReportInputs(
        programme=batch.programme,
        nights=nights,
        findings=tables[VALIDATED_FINDINGS.name],
        scored=tables[STUDY_FINDINGS.name],
        audit=tables[DEIDENTIFICATION_AUDIT.name],
        drift=tables[DRIFT_METRICS.name],
        performance=tables[PERFORMANCE_AUDIT.name],
        checks=_latest_check_results(context, batches),
        limits=_monitoring_limits(models, batch.programme),
    )
    rendered = report.render_report(inputs, datetime.now(UTC), forbidden_days=days)
    path = layout.programme_report_path(batch.programme)
    report.write_page(rendered.html, research_zone.path(path))
    research_zone.push(path)
    return dg.MaterializeResult(
        metadata={
            "path": f"research zone: {path}",
            "nights": nights.total,
            "this_partition_is_night": days.index(batch.day) + 1,
            "sections_with_data": dg.MetadataValue.json(list(rendered.sections_with_data)),
            "sections_without_data": dg.MetadataValue.json(
                [s for s in report.SECTIONS if s not in rendered.sections_with_data]
            ),
            "size_bytes": len(rendered.html.encode("utf-8")),
        }
    )


def nights(instance: dg.DagsterInstance) -> list[layout.Batch]:
    """Every programme's nights: the batches whose files were de-identified."""
    found = []
    for key in instance.get_materialized_partitions(NIGHTS_FROM):
        day, programme = key.split("|")  # the string form orders dimensions: date|programme
        found.append(layout.Batch(date.fromisoformat(day), programme))
    return found


def _programme_days(instance: dg.DagsterInstance, batch: layout.Batch) -> list[date]:
    """The days of the programme's nights, in order, and the partition's own."""
    days = {batch.day} | {n.day for n in nights(instance) if n.programme == batch.programme}
    return sorted(days)


def _latest_check_results(
    context: dg.AssetExecutionContext, batches: Sequence[layout.Batch]
) -> list[dict[str, object]]:
    """The latest completed evaluation of every check in each of the report's latest nights,
    as plain rows: asset, check, night, passed, severity."""
    from screenlake.report.metrics import CHECK_NIGHTS

    first = max(0, len(batches) - CHECK_NIGHTS)
    nights = {
        str(partition_key(b.day, b.programme)): n for n, b in enumerate(batches, 1) if n > first
    }
    rows: list[dict[str, object]] = []
    for check_key in check_keys():
        latest = latest_evaluations(context.instance, check_key, set(nights))
        rows.extend(
            {
                "asset": check_key.asset_key.to_user_string(),
                "check": check_key.name,
                "night": nights[partition],
                "passed": evaluation.passed,
                "severity": evaluation.severity.value,
            }
            for partition, evaluation in latest.items()
        )
    return rows


def _monitoring_limits(models: ModelRegistry, programme: str) -> "MonitoringLimits | None":
    """The accepted positive-rate band and performance minimums of the model in service."""
    return models.manifest_for(programme).monitoring
