"""Audit: the append-only trail of each run."""

# No `from __future__ import annotations`: Dagster reads the context and resource annotations.

from datetime import UTC, datetime

import dagster as dg
import polars as pl

from assets.publish import coordinator_worklist, pacs_findings_reports
from orchestration.partitions import batch_of, screening_partitions
from resources.lake import LakeDatabase
from resources.secrets import PseudonymKey
from resources.zones import ZoneStore
from screenlake import layout
from screenlake.audit_trail import RunEvent, trail_rows
from screenlake.tables import AUDIT_TRAIL, write_parquet


def _run_events(context: dg.AssetExecutionContext, partition: str) -> list[RunEvent]:
    """This run's materialisations and check evaluations of the partition, oldest first."""
    wanted = {dg.DagsterEventType.ASSET_MATERIALIZATION, dg.DagsterEventType.ASSET_CHECK_EVALUATION}
    events = []
    for entry in context.instance.all_logs(context.run.run_id, of_type=wanted):
        event = entry.dagster_event
        if event is None:
            continue
        at = datetime.fromtimestamp(entry.timestamp, UTC)
        if event.event_type == dg.DagsterEventType.ASSET_MATERIALIZATION:
            materialization = event.step_materialization_data.materialization
            if materialization.partition != partition:
                continue
            events.append(
                RunEvent(
                    at,
                    "materialisation",
                    materialization.asset_key.to_user_string(),
                    None,
                    None,
                    {k: v.value for k, v in materialization.metadata.items()},
                )
            )
        else:
            evaluation = event.asset_check_evaluation_data
            if evaluation.partition not in (None, partition):
                continue
            events.append(
                RunEvent(
                    at,
                    "check",
                    evaluation.asset_key.to_user_string(),
                    evaluation.check_name,
                    evaluation.passed,
                    {"summary": evaluation.description or ""},
                )
            )
    return events


@dg.asset(
    group_name="audit",
    partitions_def=screening_partitions,
    deps=[coordinator_worklist, pacs_findings_reports],
    kinds={"parquet"},
)
def audit_trail(
    context: dg.AssetExecutionContext,
    research_zone: ZoneStore,
    lake: LakeDatabase,
    pseudonym_key: PseudonymKey,
) -> dg.MaterializeResult:
    """What this run did to the partition: profile and model versions, counts in and out, checks
    passed and failed, exports written and rows re-identified (never which patients). Each run
    adds a file; none is rewritten."""
    batch, key = batch_of(context), pseudonym_key.key()
    # The research zone never holds the run ID: the UI shows it beside the partition's date.
    run_token = layout.research_run_id(key, context.run.run_id)
    rows = trail_rows(
        _run_events(context, context.partition_key),
        run_token=run_token,
        batch_id=batch.research_id(key),
        programme=batch.programme,
        actor=f"dagster run {run_token}"
        + (
            f" ({context.run.tags['dagster/schedule_name']})"
            if "dagster/schedule_name" in context.run.tags
            else ""
        ),
    )
    path = layout.audit_trail_path(batch, key, context.run.run_id)
    write_parquet(rows, AUDIT_TRAIL, research_zone.path(path))
    research_zone.push(path)
    lake.refresh_views()
    failed = rows.filter(pl.col("outcome") == "failed").height
    return dg.MaterializeResult(
        metadata={
            "events": rows.height,
            "checks_failed": failed,
            "exports": rows.filter(pl.col("event") == "export").height,
        }
    )
