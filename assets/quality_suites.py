"""Validate: the Great Expectations suites on the catalogue, the predictions and the findings.

Each suite is one blocking asset check; its Data Docs go into the research zone's evidence
folder of the batch, beside the other suites of that batch, for clinical governance to read.
The check's metadata does not name that folder (its name is the batch's keyed token), and the
evidence names the run by a keyed token of its run ID (`layout.research_run_id`): either would
otherwise pair the batch with the partition's real date, which Dagster shows.
"""

# No `from __future__ import annotations`: Dagster reads the context and resource annotations.

from typing import TYPE_CHECKING

import dagster as dg

from assets._shared import read_batch_table
from assets.catalog import instance_catalog
from assets.infer import instance_predictions, study_findings
from orchestration.partitions import batch_of, screening_partitions
from resources.models import ModelRegistry
from resources.secrets import PseudonymKey
from resources.zones import ZoneStore
from screenlake import layout
from screenlake.tables import INSTANCE_CATALOG, INSTANCE_PREDICTIONS, STUDY_FINDINGS

if TYPE_CHECKING:
    # Imported where the checks run: the module pulls in scipy and Great Expectations (~3 s).
    from screenlake.quality_suites import Suite

DATA_DOCS = "data_docs"


def _suite_result(
    context: dg.AssetCheckExecutionContext, research_zone: ZoneStore, suite: "Suite", key: bytes
) -> dg.AssetCheckResult:
    """Run `suite` with the batch's evidence folder, publish its Data Docs, and report it."""
    from screenlake.gx_runner import run_suite

    evidence = layout.evidence_dir(batch_of(context), key, DATA_DOCS)
    # The other suites' results of this batch are kept there, so that the index lists them all.
    research_zone.pull(evidence)
    run_token = layout.research_run_id(key, context.run.run_id)
    result = run_suite(suite, research_zone.path(evidence), run_name=run_token)
    research_zone.push(evidence)
    failed = result.failed()
    return dg.AssetCheckResult(
        passed=result.success,
        description=result.summary,
        metadata={
            "expectations": len(result.outcomes),
            "expectations_failed": len(failed),
            "failed_by_group": dg.MetadataValue.json(result.failed_by_group()),
            "failures": dg.MetadataValue.json([o.as_metadata() for o in failed]),
            "outcomes": dg.MetadataValue.json(
                [
                    {
                        "expectation": f"{o.validation}: {o.expectation}",
                        "success": o.success,
                        **({"unexpected": o.unexpected} if o.unexpected is not None else {}),
                    }
                    for o in result.outcomes
                ]
            ),
        },
    )


@dg.asset_check(
    asset=instance_catalog,
    blocking=True,
    partitions_def=screening_partitions,
    description="The catalogue's Great Expectations suite: schema and types, required values, "
    "unique SOPInstanceUIDs, sizes and geometry in range, pseudonymous keys, no identifiers.",
)
def catalogue_suite_passes(
    context: dg.AssetCheckExecutionContext, research_zone: ZoneStore, pseudonym_key: PseudonymKey
) -> dg.AssetCheckResult:
    """Every expectation of the catalogue suite holds for the batch's `instance_catalog`."""
    from screenlake.quality_suites import catalogue_suite

    batch, key = batch_of(context), pseudonym_key.key()
    catalog = read_batch_table(research_zone, INSTANCE_CATALOG, batch, key)
    suite = catalogue_suite(catalog, batch.research_id(key), batch.programme)
    return _suite_result(context, research_zone, suite, key)


@dg.asset_check(
    asset=instance_predictions,
    blocking=True,
    partitions_def=screening_partitions,
    description="The predictions' Great Expectations suite: a prediction or a failure row for "
    "every catalogued instance, statuses, scores in [0, 1], model provenance, no identifiers.",
)
def predictions_suite_passes(
    context: dg.AssetCheckExecutionContext, research_zone: ZoneStore, pseudonym_key: PseudonymKey
) -> dg.AssetCheckResult:
    """Every expectation of the predictions suite holds for the batch's `instance_predictions`,
    checked against its `instance_catalog`."""
    from screenlake.quality_suites import predictions_suite

    batch, key = batch_of(context), pseudonym_key.key()
    suite = predictions_suite(
        read_batch_table(research_zone, INSTANCE_PREDICTIONS, batch, key),
        read_batch_table(research_zone, INSTANCE_CATALOG, batch, key),
        batch.research_id(key),
        batch.programme,
    )
    return _suite_result(context, research_zone, suite, key)


@dg.asset_check(
    asset=study_findings,
    blocking=True,
    partitions_def=screening_partitions,
    description="The findings' Great Expectations suite, which guards publication: scores and "
    "flags, unique studies and ranks, model provenance, the positive rate within the band the "
    "model's manifest declares, no identifiers.",
)
def findings_suite_passes(
    context: dg.AssetCheckExecutionContext,
    research_zone: ZoneStore,
    pseudonym_key: PseudonymKey,
    models: ModelRegistry,
) -> dg.AssetCheckResult:
    """Every expectation of the findings suite holds for the batch's `study_findings`, with the
    positive-rate band of the programme's registered model."""
    from screenlake.quality_suites import findings_suite

    batch, key = batch_of(context), pseudonym_key.key()
    manifest = models.manifest_for(batch.programme)
    suite = findings_suite(
        read_batch_table(research_zone, STUDY_FINDINGS, batch, key),
        batch.research_id(key),
        batch.programme,
        manifest,
    )
    return _suite_result(context, research_zone, suite, key)
