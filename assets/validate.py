"""Validate: findings are published only when the checks that guard publication passed."""

# No `from __future__ import annotations`: Dagster reads the context and resource annotations.

from collections.abc import Callable
from datetime import UTC, datetime

import dagster as dg
import polars as pl

from assets._checks import latest_evaluations
from assets._shared import JUDGED, read_batch_table, table_digest, write_batch_table
from assets.catalog import instance_catalog
from assets.deidentify import deidentified_instances
from assets.infer import instance_predictions, study_findings
from orchestration.partitions import batch_of, screening_partitions
from resources.lake import LakeDatabase
from resources.secrets import PseudonymKey
from resources.zones import ZoneStore
from screenlake.errors import ScreenlakeError
from screenlake.tables import (
    DEIDENTIFICATION_AUDIT,
    INSTANCE_CATALOG,
    INSTANCE_PREDICTIONS,
    STUDY_FINDINGS,
    VALIDATED_FINDINGS,
)

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
    instance: dg.DagsterInstance, partition: str, digest_now: Callable[[str], str]
) -> dict[str, str]:
    """Each guard that does not vouch for what the partition holds now, with why: it failed,
    it was never evaluated, its asset has been materialised since, or a lake file it judged
    has changed since (`digest_now` gives a lake table's file digest by the table's name)."""
    unmet: dict[str, str] = {}
    for asset in GUARDED:
        latest = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=asset.key, asset_partitions=[partition]), limit=1
        ).records
        materialization = latest[0].asset_materialization if latest else None
        judged = materialization.metadata.get(JUDGED) if materialization else None
        for table, digest in (judged.value if judged else {}).items():  # type: ignore[union-attr]
            if digest_now(table) != digest:
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


@dg.asset(
    group_name="validate",
    partitions_def=screening_partitions,
    deps=[study_findings],
    kinds={"parquet", "duckdb"},
)
def validated_findings(
    context: dg.AssetExecutionContext,
    research_zone: ZoneStore,
    lake: LakeDatabase,
    pseudonym_key: PseudonymKey,
) -> dg.MaterializeResult:
    """Study findings that passed every check that guards publication, stamped with when they
    were validated.

    The checks run once per partition, in the steps of the assets they guard, and block this
    asset within a run. It reads their outcomes back from the instance, and compares the lake
    files they judged with those there now, so that a run that selects it alone publishes only
    findings whose every guard passed on the data there now.
    """
    batch, key = batch_of(context), pseudonym_key.key()
    unmet = unmet_guards(
        context.instance,
        context.partition_key,
        lambda table: table_digest(research_zone, JUDGED_TABLES[table], batch, key),
    )
    if unmet:
        raise PublicationBlocked(
            "findings not published: " + "; ".join(f"{k}: {v}" for k, v in unmet.items())
        )
    findings = read_batch_table(research_zone, STUDY_FINDINGS, batch, key)
    validated = findings.with_columns(pl.lit(datetime.now(UTC)).alias("validated_at"))
    rows = write_batch_table(research_zone, lake, validated, VALIDATED_FINDINGS, batch, key)
    return dg.MaterializeResult(
        metadata={
            "studies": rows,
            "studies_flagged": validated.filter(pl.col("flag").fill_null(False)).height,
            "guards_passed": dg.MetadataValue.json(
                [f"{c.asset_key.to_user_string()}:{c.name}" for c in publication_guards()]
            ),
        }
    )
