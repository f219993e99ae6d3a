"""Validate: findings are published only when the checks that guard publication passed."""

# No `from __future__ import annotations`: Dagster reads the context and resource annotations.

from collections.abc import Callable
from datetime import UTC, datetime

import dagster as dg
import polars as pl

from assets._checks import latest_evaluations
from assets._shared import (
    JUDGED,
    StepChecks,
    read_batch_table,
    step_check,
    table_digest,
    write_batch_table,
)
from assets.catalog import instance_catalog
from assets.deidentify import deidentified_instances, pseudonym_vault
from assets.infer import instance_predictions, study_findings
from orchestration.partitions import batch_of, screening_partitions
from resources.lake import LakeDatabase
from resources.secrets import PseudonymKey, VaultKey
from resources.zones import ZoneStore
from screenlake import layout
from screenlake.erasure.ledger import erased_only, read_ledger, table_rewrites
from screenlake.errors import ScreenlakeError
from screenlake.tables import (
    DEIDENTIFICATION_AUDIT,
    INSTANCE_CATALOG,
    INSTANCE_PREDICTIONS,
    STUDY_FINDINGS,
    VALIDATED_FINDINGS,
)
from screenlake.vault import read_vault

# The assets whose blocking checks guard publication; each runs them in its own step, on the
# lake tables named here, whose digests it records.
GUARDED = (deidentified_instances, instance_catalog, instance_predictions, study_findings)
JUDGED_TABLES = {
    t.name: t
    for t in (DEIDENTIFICATION_AUDIT, INSTANCE_CATALOG, INSTANCE_PREDICTIONS, STUDY_FINDINGS)
}


class PublicationBlocked(ScreenlakeError):
    """A check that guards publication failed, or has not judged what is there now: the
    findings stay unpublished."""


def publication_guards() -> list[dg.AssetCheckKey]:
    """The blocking checks of the guarded assets, upstream first."""
    return [spec.key for asset in GUARDED for spec in asset.check_specs if spec.blocking]


def unmet_guards(
    instance: dg.DagsterInstance,
    partition: str,
    digest_now: Callable[[str], str],
    erasures_explain: Callable[[str, str, str], bool] = lambda table, judged, now: False,
) -> dict[str, str]:
    """Each guard that does not vouch for what the partition holds now, with why: it failed,
    it was never evaluated, its asset has been materialised since, or a lake file it judged
    has changed since by more than erasures (`digest_now` gives a lake table's file digest by
    the table's name; `erasures_explain(table, judged, now)` whether erasures alone made the file
    judged into the file there now)."""
    unmet: dict[str, str] = {}
    for asset in GUARDED:
        latest = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=asset.key, asset_partitions=[partition]), limit=1
        ).records
        materialization = latest[0].asset_materialization if latest else None
        judged = materialization.metadata.get(JUDGED) if materialization else None
        for table, digest in (judged.value if judged else {}).items():  # type: ignore[union-attr]
            now = digest_now(table)
            if now != digest and not erasures_explain(table, str(digest), now):
                unmet[f"{asset.key.to_user_string()}:{table}"] = (
                    "the lake file its checks judged has changed since"
                )
    for check in publication_guards():
        name = f"{check.asset_key.to_user_string()}:{check.name}"
        latest = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=check.asset_key, asset_partitions=[partition]),
            limit=1,
        ).records
        evaluation = latest_evaluations(instance, check, {partition}).get(partition)
        if not latest:
            unmet[name] = "its asset has not been materialised"
        elif evaluation is None:
            unmet[name] = "never evaluated"
        elif not evaluation.passed:
            unmet[name] = f"failed: {evaluation.description or 'no description'}"
        elif (
            evaluation.target_materialization_data is None
            or evaluation.target_materialization_data.storage_id != latest[0].storage_id
        ):
            unmet[name] = "not evaluated on the latest materialisation of its asset"
    return unmet


NO_OBJECTING_PATIENT = "no_finding_of_an_objecting_patient"


@dg.asset(
    group_name="validate",
    partitions_def=screening_partitions,
    deps=[study_findings, pseudonym_vault],
    kinds={"parquet", "duckdb"},
    check_specs=[
        step_check(
            "validated_findings",
            NO_OBJECTING_PATIENT,
            "No published finding belongs to a patient with an objection in force (either "
            "scope), judged on the file as written against the register as it is then.",
        )
    ],
)
def validated_findings(
    context: dg.AssetExecutionContext,
    phi_zone: ZoneStore,
    research_zone: ZoneStore,
    lake: LakeDatabase,
    pseudonym_key: PseudonymKey,
    vault_key: VaultKey,
) -> dg.MaterializeResult:
    """Study findings that passed every check that guards publication, stamped with when they
    were validated.

    The checks run once per partition, in the steps of the assets they guard, and block this
    asset within a run. It reads their outcomes back from the instance, and compares the lake
    files they judged with those there now, so that a run that selects it alone publishes only
    findings whose every guard passed on the data there now. A file an erasure rewrote (the
    erasure ledger says so, digest to digest) still counts as judged: it lost rows, no row
    changed.
    """
    batch, key = batch_of(context), pseudonym_key.key()
    ledger = read_ledger(research_zone.pull(layout.ERASURE_LEDGER_DIR))
    batch_id = batch.research_id(key)
    unmet = unmet_guards(
        context.instance,
        context.partition_key,
        lambda table: table_digest(research_zone, JUDGED_TABLES[table], batch, key),
        lambda table, judged, now: erased_only(
            judged, now, table_rewrites(ledger, batch_id, table)
        ),
    )
    if unmet:
        raise PublicationBlocked(
            "findings not published: " + "; ".join(f"{k}: {v}" for k, v in unmet.items())
        )
    findings = read_batch_table(research_zone, STUDY_FINDINGS, batch, key)
    vault = read_vault(phi_zone.pull(layout.vault_path(batch)), vault_key.cipher())
    withheld = objecting_studies(phi_zone, vault, batch, key)
    validated = findings.filter(~pl.col("study_instance_uid").is_in(list(withheld))).with_columns(
        pl.lit(datetime.now(UTC)).alias("validated_at")
    )
    rows = write_batch_table(research_zone, lake, validated, VALIDATED_FINDINGS, batch, key)
    checks = StepChecks()
    checks.run(
        lambda: objection_check(
            read_batch_table(research_zone, VALIDATED_FINDINGS, batch, key),
            objecting_studies(phi_zone, vault, batch, key),
        )
    )
    return checks.materialize_result(
        {
            "studies": rows,
            "studies_withheld_by_objection": findings.height - validated.height,
            "studies_flagged": validated.filter(pl.col("flag").fill_null(False)).height,
            "guards_passed": dg.MetadataValue.json(
                [f"{c.asset_key.to_user_string()}:{c.name}" for c in publication_guards()]
            ),
        }
    )


def objecting_studies(
    phi_zone: ZoneStore, vault: pl.DataFrame, batch: layout.Batch, key: bytes
) -> frozenset[str]:
    """The pseudonymous study UIDs in a batch's `vault` of patients whose objection (either
    scope) is in force in the register now."""
    from screenlake.erasure.traces import traces_of
    from screenlake.objections import ObjectionRegister

    in_force = ObjectionRegister(phi_zone, key).in_force()
    if not in_force:
        return frozenset()
    return traces_of(in_force.keys(), [(batch, vault)], key).study_uids


def objection_check(published: pl.DataFrame, objecting: frozenset[str]) -> dg.AssetCheckResult:
    """The check `no_finding_of_an_objecting_patient` on the `published` findings: fails when a published finding is a study of a patient with an objection in force;
    counts only, never which."""
    found = published.filter(pl.col("study_instance_uid").is_in(list(objecting))).height
    return dg.AssetCheckResult(
        check_name=NO_OBJECTING_PATIENT,
        passed=found == 0,
        description=(
            "no published finding belongs to a patient with an objection"
            if not found
            else f"{found} published findings belong to patients with an objection in force"
        ),
        metadata={"findings_of_objecting_patients": found},
    )
