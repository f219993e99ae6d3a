"""Infer: the programme's registered model scores every catalogued instance, then each study."""

# No `from __future__ import annotations`: Dagster reads the context and resource annotations.

import dagster as dg

from assets._shared import (
    StepChecks,
    markdown_preview,
    read_batch_table,
    step_check,
    with_code_version,
    write_batch_table,
)
from assets.catalog import instance_catalog, study_catalog
from assets.quality_suites import suite_check
from orchestration.partitions import batch_of, screening_partitions
from orchestration.routing import gpu_step_tags
from resources.lake import LakeDatabase
from resources.models import ModelRegistry
from resources.secrets import PseudonymKey
from resources.zones import ZoneStore
from screenlake import layout
from screenlake.programmes import PROGRAMMES
from screenlake.tables import INSTANCE_CATALOG, INSTANCE_PREDICTIONS, STUDY_CATALOG, STUDY_FINDINGS


def models_version(models: ModelRegistry) -> str:
    """Name, version and weights hash of the model each programme uses in the registry `models`:
    the inference assets' code version, e.g. `cxr_tb_reference@1.0.0#5abb6b6509e3+...`.

    Only the manifests are read (no torch): this runs when the code location loads, so a
    missing model or a wrong manifest stops the location loading. The weights are checked
    against the manifest's hash when a run loads the model.
    """
    parts = []
    for programme in sorted(PROGRAMMES):
        manifest = models.manifest_for(programme)
        parts.append(f"{manifest.name}@{manifest.version}#{manifest.weights_sha256[:12]}")
    return "+".join(parts)


def inference_assets(models: ModelRegistry) -> list[dg.AssetsDefinition]:
    """`instance_predictions` and `study_findings` with the code version of the models the
    registry `models` uses, so that registering a new model version makes them (and what follows
    them) stale and nothing upstream.

    The version covers every programme's model: Dagster has one code version per asset, not per
    partition, so a new model for one programme makes every programme's partitions stale.
    """
    return with_code_version([instance_predictions, study_findings], models_version(models))


# No code_version on the two inference assets: it depends on the deployment's models folder,
# so `inference_assets` sets it when the Definitions are built.
PREDICTIONS_SUITE = "predictions_suite_passes"
FINDINGS_SUITE = "findings_suite_passes"


@dg.asset(
    deps=[instance_catalog],
    pool="gpu",
    op_tags=gpu_step_tags(),
    group_name="infer",
    partitions_def=screening_partitions,
    kinds={"pytorch", "parquet"},
    check_specs=[
        step_check(
            "instance_predictions",
            PREDICTIONS_SUITE,
            "The predictions' Great Expectations suite: a prediction or a failure row for every"
            " catalogued instance, statuses, scores in [0, 1], model provenance, no identifiers.",
        )
    ],
)
def instance_predictions(
    context: dg.AssetExecutionContext,
    research_zone: ZoneStore,
    lake: LakeDatabase,
    pseudonym_key: PseudonymKey,
    models: ModelRegistry,
) -> dg.MaterializeResult:
    """A score per catalogued image from the programme's model, or a failure with its reason;
    every row carries the model's name, version and weights hash. Its check runs in its step,
    on the table read back from the lake."""
    from screenlake.inference.predict import Progress, run_predictions
    from screenlake.inference.shards import ShardStore
    from screenlake.quality_suites import predictions_suite

    batch, key = batch_of(context), pseudonym_key.key()
    model = models.load(models.model_name_for(batch.programme))
    instances = read_batch_table(research_zone, INSTANCE_CATALOG, batch, key)
    research_zone.pull(layout.research_dicom_dir(batch, key))
    shards = layout.inference_shards_dir(batch, key, model.manifest.name)
    # Shards a crashed run finished, wherever it ran, are taken over rather than recomputed.
    store = ShardStore(research_zone.pull(shards))

    def progress(done: Progress) -> None:
        research_zone.push(shards)
        context.log.info(
            f"inference {done.studies_done}/{done.studies_total} studies, "
            f"{done.images_done}/{done.images_total} images, {done.images_per_second:.0f} images/s"
        )

    run = run_predictions(
        instances,
        research_zone.path(),
        model,
        batch_size=models.batch_size,
        num_workers=models.loader_workers,
        shard_store=store,
        on_progress=progress,
    )
    rows = write_batch_table(research_zone, lake, run.predictions, INSTANCE_PREDICTIONS, batch, key)
    store.clear()
    research_zone.push(shards)
    checks = StepChecks()
    written = checks.judge(research_zone, INSTANCE_PREDICTIONS, batch, key)
    checks.run(
        lambda: suite_check(
            context,
            research_zone,
            predictions_suite(
                written,
                instances,
                batch.research_id(key),
                batch.programme,
            ),
            key,
            PREDICTIONS_SUITE,
        )
    )
    return checks.materialize_result(
        {
            "instances": rows,
            "instances_failed": run.failed,
            "images_per_second": round(run.images_per_second, 1),
            "loading_share": round(run.loading_share, 3),
            "seconds_loading": round(run.loader_seconds, 2),
            "seconds_computing": round(run.model_seconds, 2),
            "shards": run.shards,
            "shards_resumed": run.shards_reused,
            "model": f"{model.manifest.name} {model.manifest.version}",
            "weights_sha256": model.manifest.weights_sha256,
            "device": str(model.device),
        }
    )


@dg.asset(
    deps=[instance_predictions, study_catalog],
    group_name="infer",
    partitions_def=screening_partitions,
    kinds={"pytorch", "parquet"},
    check_specs=[
        step_check(
            "study_findings",
            FINDINGS_SUITE,
            "The findings' Great Expectations suite, which guards publication: scores and flags,"
            " unique studies and ranks, model provenance, the positive rate within the band the"
            " model's manifest declares, no identifiers.",
        )
    ],
)
def study_findings(
    context: dg.AssetExecutionContext,
    research_zone: ZoneStore,
    lake: LakeDatabase,
    pseudonym_key: PseudonymKey,
    models: ModelRegistry,
) -> dg.MaterializeResult:
    """A triage score, flag (at the model's threshold) and priority per study: a flag for a
    clinician to review, never a diagnosis. Its check runs in its step, on the table read back
    from the lake."""
    from screenlake.inference.predict import study_findings as findings_of
    from screenlake.quality_suites import findings_suite

    batch, key = batch_of(context), pseudonym_key.key()
    manifest = models.manifest_for(batch.programme)
    frame = findings_of(
        read_batch_table(research_zone, INSTANCE_PREDICTIONS, batch, key),
        read_batch_table(research_zone, STUDY_CATALOG, batch, key),
        manifest,
    )
    rows = write_batch_table(research_zone, lake, frame, STUDY_FINDINGS, batch, key)
    flagged = frame.filter(frame["flag"].fill_null(False)).height
    checks = StepChecks()
    written = checks.judge(research_zone, STUDY_FINDINGS, batch, key)
    checks.run(
        lambda: suite_check(
            context,
            research_zone,
            findings_suite(
                written,
                batch.research_id(key),
                batch.programme,
                manifest,
            ),
            key,
            FINDINGS_SUITE,
        )
    )
    return checks.materialize_result(
        {
            "studies": rows,
            "studies_flagged": flagged,
            "studies_unscored": frame.filter(frame["score"].is_null()).height,
            "threshold": manifest.threshold,
            "preview": markdown_preview(
                frame.sort("priority_rank").select(
                    "priority_rank", "score", "flag", "instances_scored"
                )
            ),
        }
    )
