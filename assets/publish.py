"""Publish: what screening coordinators read."""

# No `from __future__ import annotations`: Dagster reads the context and resource annotations.

from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import polars as pl

from assets._shared import (
    StepChecks,
    check_result,
    landed_manifest,
    read_batch_table,
    record_reidentification,
    step_check,
)
from assets.deidentify import pseudonym_vault
from assets.validate import validated_findings
from orchestration.partitions import batch_of, screening_partitions
from resources.secrets import PseudonymKey, VaultKey
from resources.sources import StudySource
from resources.zones import ZoneStore
from screenlake import layout
from screenlake.pacs.store import WRITTEN_TO_OUTBOX
from screenlake.reconcile import outcome_of, worklist_step
from screenlake.reidentify import audit_record
from screenlake.reviews import carried_entries, carry_over, decisions_path, read_decisions
from screenlake.tables import VALIDATED_FINDINGS
from screenlake.vault import read_vault
from screenlake.worklist import WorklistAbout, export_frame, models_of, write_csv, write_xlsx
from screenlake.worklist import coordinator_worklist as worklist_of

WORKLIST_MATCHES = "worklist_matches_findings"


@dg.asset(
    group_name="publish",
    partitions_def=screening_partitions,
    deps=[validated_findings, pseudonym_vault],
    kinds={"csv", "excel"},
    check_specs=[
        step_check(
            "coordinator_worklist",
            WORKLIST_MATCHES,
            "Every flagged validated finding is one worklist row, and nothing else is.",
        )
    ],
)
def coordinator_worklist(
    context: dg.AssetExecutionContext,
    phi_zone: ZoneStore,
    research_zone: ZoneStore,
    pseudonym_key: PseudonymKey,
    vault_key: VaultKey,
) -> dg.MaterializeResult:
    """Flagged studies for clinician review, re-identified through the vault so that patients can
    be recalled, ordered by priority, as XLSX (for the coordinators) and CSV, each with review
    columns to fill in and import back (`screenlake import-reviews`). A re-run keeps the review
    entries already made. Written to the PHI zone only; its check, in its step, compares the
    CSV read back with the flagged validated findings."""
    batch, key = batch_of(context), pseudonym_key.key()
    findings = read_batch_table(research_zone, VALIDATED_FINDINGS, batch, key)
    vault = read_vault(phi_zone.pull(layout.vault_path(batch)), vault_key.cipher())
    worklist = worklist_of(findings, vault)
    xlsx_path, csv_path = layout.worklist_path(batch, "xlsx"), layout.worklist_path(batch, "csv")
    recorded = read_decisions(phi_zone.pull(decisions_path(batch.programme, batch.day)))
    entries = carried_entries([phi_zone.pull(xlsx_path), phi_zone.pull(csv_path)], recorded)
    export, carried = carry_over(export_frame(worklist), entries, recorded, xlsx_path.name)
    about = WorklistAbout(batch.programme, batch.day, models_of(findings), datetime.now(UTC))
    write_xlsx(export, phi_zone.path(xlsx_path), about)
    write_csv(export, phi_zone.path(csv_path))
    phi_zone.push(xlsx_path)
    phi_zone.push(csv_path)
    record_reidentification(
        phi_zone,
        audit_record(
            requested_by=f"dagster run {context.run.run_id}",
            purpose=f"coordinator worklist {batch.programme}",
            source="validated_findings",
            rows_in=worklist.height,
            rows_reidentified=worklist.height,
        ),
        writer=f"{context.run.run_id}-{context.asset_key.to_user_string()}",
    )
    checks = StepChecks()
    checks.run(lambda: _worklist_check(phi_zone.path(csv_path), findings))
    return checks.materialize_result(
        {
            "studies_to_review": worklist.height,
            "review_entries_carried_over": carried,
            "worklist_xlsx": f"PHI zone: {xlsx_path}",
            "worklist_csv": f"PHI zone: {csv_path}",
            "models": ", ".join(about.models),
        }
    )


def _worklist_check(csv: Path, findings: pl.DataFrame) -> dg.AssetCheckResult:
    """The worklist as written against the flagged validated findings."""
    written = pl.read_csv(csv, infer_schema=False)
    flagged_rows = written.filter(pl.col("flag").str.to_lowercase() == "true").height
    step = worklist_step(findings, written.height, flagged_rows)
    return check_result(outcome_of([step]), WORKLIST_MATCHES)


@dg.asset(
    group_name="publish",
    partitions_def=screening_partitions,
    deps=[validated_findings, pseudonym_vault],
    kinds={"dicom"},
    pool="pacs",
)
def pacs_findings_reports(
    context: dg.AssetExecutionContext,
    source: StudySource,
    phi_zone: ZoneStore,
    research_zone: ZoneStore,
    pseudonym_key: PseudonymKey,
    vault_key: VaultKey,
) -> dg.MaterializeResult:
    """A DICOM Structured Report per flagged study (score, flag, model identification, and that
    it is decision support for clinician review), filed into the original study and sent to the
    PACS by the source (STOW-RS or C-STORE), or left in the PHI zone's outbox when the source
    cannot store. Which reports were accepted is recorded in the PHI zone."""
    # highdicom takes a while to import: only runs that build reports pay for it.
    from screenlake.findings_report import SR_SOP_CLASS_UID
    from screenlake.pacs_reports import (
        build_reports,
        evidence_by_study,
        patients_by_study,
        pending_reports,
        send_reports,
        sent_table,
        with_evidence,
    )

    batch, key = batch_of(context), pseudonym_key.key()
    findings = read_batch_table(research_zone, VALIDATED_FINDINGS, batch, key)
    vault = read_vault(phi_zone.pull(layout.vault_path(batch)), vault_key.cipher())
    manifest, raw_dir = landed_manifest(phi_zone, batch)
    patients = patients_by_study(manifest, raw_dir)
    pending = pending_reports(findings, vault, patients)
    studies = [p.finding.original_study_instance_uid for p in pending]
    pending = with_evidence(pending, evidence_by_study(manifest, raw_dir, studies))
    reports = build_reports(pending, key)
    outcomes = send_reports(source.store, reports, phi_zone.path(layout.outbox_dir(batch)))
    sent = sent_table(reports, outcomes, datetime.now(UTC))
    path = layout.reports_sent_path(batch)
    write_csv(sent, phi_zone.path(path))
    phi_zone.push(path)
    phi_zone.push(layout.outbox_dir(batch))
    record_reidentification(
        phi_zone,
        audit_record(
            requested_by=f"dagster run {context.run.run_id}",
            purpose=f"findings reports to the PACS {batch.programme}",
            source="validated_findings",
            rows_in=len(pending),
            rows_reidentified=len(reports),
        ),
        writer=f"{context.run.run_id}-{context.asset_key.to_user_string()}",
    )
    outboxed = sum(o.reason == WRITTEN_TO_OUTBOX for o in outcomes)
    accepted = sum(o.accepted for o in outcomes)
    if len(outcomes) - accepted - outboxed:
        context.log.warning(
            f"the PACS did not accept {len(outcomes) - accepted - outboxed} of "
            f"{len(outcomes)} findings reports; see the sent table in the PHI zone"
        )
    return dg.MaterializeResult(
        metadata={
            "reports": len(reports),
            "reports_accepted": accepted,
            "reports_refused": len(outcomes) - accepted - outboxed,
            "reports_written_to_outbox": outboxed,
            "sop_class": SR_SOP_CLASS_UID.name,
            "sent": f"PHI zone: {path}",
        }
    )
