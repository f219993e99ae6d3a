"""Validate: a Great Expectations suite as the result of a check that an asset runs in its step.

The catalogue, predictions and findings suites are blocking checks of `instance_catalog`,
`instance_predictions` and `study_findings`, evaluated in those assets' steps on the frames they
have just written, once per partition. Each suite's Data Docs go into the research zone's evidence
folder of the batch, beside the other suites of that batch, for clinical governance to read.
The check's metadata does not name that folder (its name is the batch's keyed token), and the
evidence names the run by a keyed token of its run ID (`layout.research_run_id`): either would
otherwise pair the batch with the partition's real date, which Dagster shows.
"""

# No `from __future__ import annotations`: Dagster reads the context and resource annotations.

from typing import TYPE_CHECKING

import dagster as dg

from orchestration.partitions import batch_of
from resources.zones import ZoneStore
from screenlake import layout

if TYPE_CHECKING:
    # Imported where the checks run: the module pulls in scipy and Great Expectations (~3 s).
    from screenlake.quality_suites import Suite

DATA_DOCS = layout.DATA_DOCS


def suite_check(
    context: dg.AssetExecutionContext,
    research_zone: ZoneStore,
    suite: "Suite",
    key: bytes,
    check_name: str,
) -> dg.AssetCheckResult:
    """Run `suite` with the batch's evidence folder, publish its Data Docs, and report it as
    the result of the check `check_name`."""
    from screenlake.gx_runner import run_suite

    evidence = layout.evidence_dir(batch_of(context), key, DATA_DOCS)
    # The other suites' results of this batch are kept there, so that the index lists them all.
    research_zone.pull(evidence)
    run_token = layout.research_run_id(key, context.run.run_id)
    result = run_suite(suite, research_zone.path(evidence), run_name=run_token)
    research_zone.push(evidence)
    failed = result.failed()
    return dg.AssetCheckResult(
        check_name=check_name,
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
