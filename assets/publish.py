"""Publish: what screening coordinators read."""

# No `from __future__ import annotations`: Dagster reads the context and resource annotations.

import dagster as dg

from assets._shared import read_batch_table
from assets.deidentify import pseudonym_vault
from assets.validate import validated_findings
from orchestration.partitions import batch_of, screening_partitions
from resources.secrets import PseudonymKey, VaultKey
from resources.zones import ZoneStore
from screenlake import layout
from screenlake.reidentify import append_audit, audit_record
from screenlake.tables import VALIDATED_FINDINGS
from screenlake.vault import read_vault
from screenlake.worklist import coordinator_worklist as worklist_of
from screenlake.worklist import write_csv


@dg.asset(
    group_name="publish",
    partitions_def=screening_partitions,
    deps=[validated_findings, pseudonym_vault],
    kinds={"csv"},
)
def coordinator_worklist(
    context: dg.AssetExecutionContext,
    phi_zone: ZoneStore,
    research_zone: ZoneStore,
    pseudonym_key: PseudonymKey,
    vault_key: VaultKey,
) -> dg.MaterializeResult:
    """Flagged studies for clinician review, re-identified through the vault so that patients can
    be recalled, ordered by priority. Written to the PHI zone only."""
    batch, key = batch_of(context), pseudonym_key.key()
    findings = read_batch_table(research_zone, VALIDATED_FINDINGS, batch, key)
    vault = read_vault(phi_zone.path(layout.vault_path(batch)), vault_key.cipher())
    worklist = worklist_of(findings, vault)
    path = layout.worklist_path(batch, "csv")
    write_csv(worklist, phi_zone.path(path))
    append_audit(
        phi_zone.path(layout.REIDENTIFICATION_LOG),
        audit_record(
            requested_by=f"dagster run {context.run.run_id}",
            purpose=f"coordinator worklist {batch.programme}",
            source="validated_findings",
            rows_in=worklist.height,
            rows_reidentified=worklist.height,
        ),
    )
    return dg.MaterializeResult(
        metadata={
            "studies_to_review": worklist.height,
            "worklist": f"PHI zone: {path}",
        }
    )
