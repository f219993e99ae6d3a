"""Validate: findings are published only when the rules that guard publication hold."""

# No `from __future__ import annotations`: Dagster reads the context and resource annotations.

from datetime import UTC, datetime

import dagster as dg
import polars as pl

from assets._shared import read_batch_table, write_batch_table
from assets.infer import study_findings
from orchestration.partitions import batch_of, screening_partitions
from resources.lake import LakeDatabase
from resources.models import ModelRegistry
from resources.secrets import PseudonymKey
from resources.zones import ZoneStore
from screenlake import layout, quality
from screenlake.errors import ScreenlakeError
from screenlake.tables import (
    INSTANCE_CATALOG,
    INSTANCE_PREDICTIONS,
    STUDY_FINDINGS,
    VALIDATED_FINDINGS,
)


class PublicationBlocked(ScreenlakeError):
    """A rule that guards publication failed: the findings stay unpublished."""


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
    models: ModelRegistry,
) -> dg.MaterializeResult:
    """Study findings that passed every blocking check, stamped with when they were validated.

    The blocking checks upstream stop this asset within a run; it re-applies the table rules and
    the predictions' and findings' Great Expectations suites itself, so that a run that selects
    it alone cannot publish what a check would refuse.
    """
    from screenlake.gx_runner import run_suite
    from screenlake.quality_suites import findings_suite, predictions_suite

    batch, key = batch_of(context), pseudonym_key.key()
    findings = read_batch_table(research_zone, STUDY_FINDINGS, batch, key)
    predictions = read_batch_table(research_zone, INSTANCE_PREDICTIONS, batch, key)
    catalog = read_batch_table(research_zone, INSTANCE_CATALOG, batch, key)
    outcomes = {
        "study scores in [0, 1]": quality.scores_in_unit_interval(findings, "study_instance_uid"),
        "image scores in [0, 1]": quality.scores_in_unit_interval(predictions, "sop_instance_uid"),
        "every instance predicted": quality.every_instance_has_prediction(catalog, predictions),
        "study UIDs unique": quality.values_unique(findings, "study_instance_uid"),
    }
    failed = {name: o.summary for name, o in outcomes.items() if not o.passed}
    manifest = models.manifest_for(batch.programme)
    batch_id = batch.research_id(key)
    suites = (
        predictions_suite(predictions, catalog, batch_id, batch.programme),
        findings_suite(findings, batch_id, batch.programme, manifest),
    )
    for suite in suites:
        result = run_suite(suite, run_name=layout.research_run_id(key, context.run.run_id))
        if not result.success:
            failed[f"suite {suite.name}"] = result.summary
    if failed:
        raise PublicationBlocked(
            "findings not published: " + "; ".join(f"{k}: {v}" for k, v in failed.items())
        )
    validated = findings.with_columns(pl.lit(datetime.now(UTC)).alias("validated_at"))
    rows = write_batch_table(research_zone, lake, validated, VALIDATED_FINDINGS, batch, key)
    return dg.MaterializeResult(
        metadata={
            "studies": rows,
            "studies_flagged": validated.filter(pl.col("flag").fill_null(False)).height,
            "rules_applied": dg.MetadataValue.json(
                sorted(outcomes) + [f"suite {s.name}" for s in suites]
            ),
        }
    )
