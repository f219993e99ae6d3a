"""Audit: the chain reconciled before publication, and the append-only trail of each run."""

# No `from __future__ import annotations`: Dagster reads the context and resource annotations.

from datetime import UTC, datetime

import dagster as dg
import polars as pl

from assets._shared import check_result, landed_manifest, read_batch_table
from assets.publish import coordinator_worklist, pacs_findings_reports
from assets.validate import validated_findings
from orchestration.partitions import batch_of, screening_partitions
from resources.lake import LakeDatabase
from resources.secrets import PseudonymKey
from resources.zones import ZoneStore
from screenlake import layout
from screenlake.audit_trail import RunEvent, trail_rows
from screenlake.reconcile import chain_steps, outcome_of, worklist_step
from screenlake.tables import (
    AUDIT_TRAIL,
    DEIDENTIFICATION_AUDIT,
    INSTANCE_CATALOG,
    INSTANCE_PREDICTIONS,
    VALIDATED_FINDINGS,
    write_parquet,
)


@dg.asset_check(
    asset=validated_findings,
    blocking=True,
    partitions_def=screening_partitions,
    description="Landed = de-identified + quarantined; de-identified = catalogued; catalogued ="
    " predicted + failed. A difference blocks publication and names the step.",
)
def chain_reconciled(
    context: dg.AssetCheckExecutionContext,
    phi_zone: ZoneStore,
    research_zone: ZoneStore,
    pseudonym_key: PseudonymKey,
) -> dg.AssetCheckResult:
    """Follow every landed file of the partition to a row of each later table."""
    batch, key = batch_of(context), pseudonym_key.key()
    landed, _ = landed_manifest(phi_zone, batch, with_files=False)
    steps = chain_steps(
        landed.height,
        read_batch_table(research_zone, DEIDENTIFICATION_AUDIT, batch, key),
        read_batch_table(research_zone, INSTANCE_CATALOG, batch, key),
        read_batch_table(research_zone, INSTANCE_PREDICTIONS, batch, key),
    )
    return check_result(outcome_of(steps))


@dg.asset_check(
    asset=coordinator_worklist,
    blocking=True,
    partitions_def=screening_partitions,
    description="Every flagged validated finding is one worklist row, and nothing else is.",
)
def worklist_matches_findings(
    context: dg.AssetCheckExecutionContext,
    phi_zone: ZoneStore,
    research_zone: ZoneStore,
    pseudonym_key: PseudonymKey,
) -> dg.AssetCheckResult:
    """Compare the worklist written to the PHI zone with the flagged validated findings."""
    batch, key = batch_of(context), pseudonym_key.key()
    worklist = pl.read_csv(phi_zone.pull(layout.worklist_path(batch, "csv")), infer_schema=False)
    flagged_rows = worklist.filter(pl.col("flag").str.to_lowercase() == "true").height
    step = worklist_step(
        read_batch_table(research_zone, VALIDATED_FINDINGS, batch, key),
        worklist.height,
        flagged_rows,
    )
    return check_result(outcome_of([step]))


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
