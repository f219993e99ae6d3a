"""Infer: the programme's registered model scores every catalogued instance, then each study."""

# No `from __future__ import annotations`: Dagster reads the context and resource annotations.

import json
import time

import dagster as dg

from assets._shared import check_result, markdown_preview, read_batch_table, write_batch_table
from assets.catalog import instance_catalog, study_catalog
from orchestration.partitions import batch_of, screening_partitions
from resources.lake import LakeDatabase
from resources.models import DEFAULT_MODELS_ROOT, ModelRegistry
from resources.secrets import PseudonymKey
from resources.zones import ZoneStore
from screenlake import layout, quality
from screenlake.programmes import PROGRAMMES, get_programme
from screenlake.tables import INSTANCE_CATALOG, INSTANCE_PREDICTIONS, STUDY_CATALOG, STUDY_FINDINGS


def _registered_models_version() -> str:
    """Name, version and weights hash of every programme's model: the inference code version."""
    parts = []
    for programme in sorted(PROGRAMMES.values(), key=lambda p: p.name):
        manifest = json.loads(
            (DEFAULT_MODELS_ROOT / programme.model_name / "manifest.json").read_text("utf-8")
        )
        parts.append(f"{manifest['name']}@{manifest['version']}#{manifest['weights_sha256'][:12]}")
    return "+".join(parts)


MODELS_VERSION = _registered_models_version()


@dg.asset(
    deps=[instance_catalog],
    pool="gpu",
    group_name="infer",
    partitions_def=screening_partitions,
    kinds={"pytorch", "parquet"},
    code_version=MODELS_VERSION,
)
def instance_predictions(
    context: dg.AssetExecutionContext,
    research_zone: ZoneStore,
    lake: LakeDatabase,
    pseudonym_key: PseudonymKey,
    models: ModelRegistry,
) -> dg.MaterializeResult:
    """A score per catalogued image from the programme's model, or a failure with its reason;
    every row carries the model's name, version and weights hash."""
    from screenlake.inference.predict import predict_instances

    batch, key = batch_of(context), pseudonym_key.key()
    model = models.load(get_programme(batch.programme).model_name)
    instances = read_batch_table(research_zone, INSTANCE_CATALOG, batch, key)
    research_zone.pull(layout.research_dicom_dir(batch, key))
    started = time.perf_counter()
    predictions = predict_instances(
        instances,
        research_zone.path(),
        model,
        batch_size=models.batch_size,
        num_workers=models.loader_workers,
    )
    seconds = time.perf_counter() - started
    rows = write_batch_table(research_zone, lake, predictions, INSTANCE_PREDICTIONS, batch, key)
    failed = predictions.filter(predictions["status"] == "failed").height
    return dg.MaterializeResult(
        metadata={
            "instances": rows,
            "instances_failed": failed,
            "images_per_second": round(rows / seconds, 1) if seconds > 0 else 0.0,
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
    code_version=MODELS_VERSION,
)
def study_findings(
    context: dg.AssetExecutionContext,
    research_zone: ZoneStore,
    lake: LakeDatabase,
    pseudonym_key: PseudonymKey,
    models: ModelRegistry,
) -> dg.MaterializeResult:
    """A triage score, flag (at the model's threshold) and priority per study: a flag for a
    clinician to review, never a diagnosis."""
    from screenlake.inference.predict import study_findings as findings_of
    from screenlake.inference.registry import load_manifest, model_dir_for

    batch, key = batch_of(context), pseudonym_key.key()
    manifest = load_manifest(
        model_dir_for(models.models_root_path(), get_programme(batch.programme).model_name)
        / "manifest.json"
    )
    frame = findings_of(
        read_batch_table(research_zone, INSTANCE_PREDICTIONS, batch, key),
        read_batch_table(research_zone, STUDY_CATALOG, batch, key),
        manifest,
    )
    rows = write_batch_table(research_zone, lake, frame, STUDY_FINDINGS, batch, key)
    flagged = frame.filter(frame["flag"].fill_null(False)).height
    return dg.MaterializeResult(
        metadata={
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


@dg.asset_check(asset=instance_predictions, blocking=True, partitions_def=screening_partitions)
def scores_in_unit_interval(
    context: dg.AssetCheckExecutionContext, research_zone: ZoneStore, pseudonym_key: PseudonymKey
) -> dg.AssetCheckResult:
    """Every image score is a probability in [0, 1]."""
    batch, key = batch_of(context), pseudonym_key.key()
    frame = read_batch_table(research_zone, INSTANCE_PREDICTIONS, batch, key)
    return check_result(quality.scores_in_unit_interval(frame, "sop_instance_uid"))


@dg.asset_check(asset=instance_predictions, blocking=True, partitions_def=screening_partitions)
def every_instance_has_prediction(
    context: dg.AssetCheckExecutionContext, research_zone: ZoneStore, pseudonym_key: PseudonymKey
) -> dg.AssetCheckResult:
    """Each catalogued instance has one prediction row: a score or a recorded failure."""
    batch, key = batch_of(context), pseudonym_key.key()
    return check_result(
        quality.every_instance_has_prediction(
            read_batch_table(research_zone, INSTANCE_CATALOG, batch, key),
            read_batch_table(research_zone, INSTANCE_PREDICTIONS, batch, key),
        )
    )


@dg.asset_check(asset=study_findings, blocking=True, partitions_def=screening_partitions)
def study_scores_in_unit_interval(
    context: dg.AssetCheckExecutionContext, research_zone: ZoneStore, pseudonym_key: PseudonymKey
) -> dg.AssetCheckResult:
    """Every study score is a probability in [0, 1]."""
    batch, key = batch_of(context), pseudonym_key.key()
    frame = read_batch_table(research_zone, STUDY_FINDINGS, batch, key)
    return check_result(quality.scores_in_unit_interval(frame, "study_instance_uid"))
