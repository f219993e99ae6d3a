"""Batched inference over research-zone DICOM instances, and per-study findings from its scores.

Decoding and preprocessing happen in the DataLoader's workers; a file that cannot be used becomes
a `failed` prediction with its reason, never an exception, so one bad file does not stop a
partition and every input instance ends in exactly one output row.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
import pydicom
import torch
from pydicom.errors import InvalidDicomError
from torch import nn
from torch.utils.data import DataLoader, Dataset

from screenlake.errors import ConfigurationError, ModelIntegrityError, UnreadableInstanceError
from screenlake.inference.preprocess import instance_tensor
from screenlake.inference.registry import LoadedModel, ModelManifest
from screenlake.tables import INSTANCE_PREDICTIONS, STUDY_FINDINGS

STATUS_OK = "ok"
STATUS_FAILED = "failed"

_PREDICTED = ("status", "score", "failure_reason", "model_name", "model_version", "weights_sha256")
_FOUND = (
    "score",
    "flag",
    "priority_rank",
    "instances_scored",
    "instances_failed",
    "threshold",
    "model_name",
    "model_version",
    "weights_sha256",
)
# Columns that describe a study rather than the partition it belongs to; the rest rank together.
_STUDY_DESCRIPTORS = ("study_instance_uid", "patient_pseudonym", "study_date")


@dataclass(frozen=True)
class PredictionRun:
    """Predictions plus where the time went, so that the slower of loader and model is known."""

    predictions: pl.DataFrame
    instances: int
    failed: int
    batches: int
    loader_seconds: float
    model_seconds: float


@dataclass(frozen=True)
class _Item:
    index: int
    image: np.ndarray | None
    reason: str | None


@dataclass(frozen=True)
class _Batch:
    indices: list[int]
    images: torch.Tensor | None
    failures: list[tuple[int, str]]

    def pin_memory(self) -> _Batch:
        """Called by the DataLoader when pin_memory is on (CUDA)."""
        images = self.images.pin_memory() if self.images is not None else None
        return _Batch(self.indices, images, self.failures)


class InstanceDataset(Dataset[_Item]):
    """Research-zone DICOM files as model inputs; an unusable file yields a marked item."""

    def __init__(
        self,
        root: Path,
        paths: Sequence[str | None],
        modalities: Sequence[str | None],
        manifest: ModelManifest,
    ) -> None:
        self.root, self.paths, self.modalities, self.manifest = root, paths, modalities, manifest

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> _Item:
        try:
            return _Item(index, self._load(index), None)
        except UnreadableInstanceError as error:
            return _Item(index, None, str(error))

    def _load(self, index: int) -> np.ndarray:
        relative, modality = self.paths[index], self.modalities[index]
        if not relative:
            raise UnreadableInstanceError("instance has no research_path")
        # The catalogue's modality is checked first so that a misrouted series costs no reading.
        if modality is not None and modality.upper() not in self.manifest.modalities:
            raise UnreadableInstanceError(
                f"modality {modality} is not read by model {self.manifest.name} "
                f"(it reads {', '.join(self.manifest.modalities)})"
            )
        path = self.root / relative
        try:
            ds = pydicom.dcmread(path)
        except InvalidDicomError as error:
            raise UnreadableInstanceError(f"not a DICOM file: {error}") from error
        except OSError as error:
            raise UnreadableInstanceError(f"file cannot be read: {error.strerror}") from error
        except (EOFError, ValueError, KeyError) as error:
            raise UnreadableInstanceError(f"DICOM header does not parse: {error}") from error
        return instance_tensor(ds, self.manifest)


def _collate(items: list[_Item]) -> _Batch:
    indices: list[int] = []
    images: list[np.ndarray] = []
    failures: list[tuple[int, str]] = []
    for item in items:
        if item.image is None:
            failures.append((item.index, item.reason or "unknown"))
        else:
            indices.append(item.index)
            images.append(item.image)
    stacked = torch.from_numpy(np.stack(images)) if images else None
    return _Batch(indices, stacked, failures)


def scores_for(module: nn.Module, images: torch.Tensor, device: str) -> np.ndarray:
    """Sigmoid of the module's logit for each image in `images` (N, C, H, W), as float64 (N,).

    Runs under `torch.inference_mode()`, with float16 autocast on CUDA.
    """
    count = images.shape[0]
    with torch.inference_mode():
        batch = images.to(device, non_blocking=True)
        if batch.device.type == "cuda":
            with torch.autocast(device_type="cuda", dtype=torch.float16):
                logits = module(batch)
        else:
            logits = module(batch)
        scores = torch.sigmoid(logits.float()).reshape(-1).cpu().numpy().astype(np.float64)
    if scores.shape != (count,):
        raise ModelIntegrityError(
            f"the model returned {scores.size} values for {count} images; "
            "it must return one logit per image"
        )
    return scores


def run_predictions(
    instances: pl.DataFrame,
    root: Path,
    model: LoadedModel,
    batch_size: int = 64,
    num_workers: int = 0,
) -> PredictionRun:
    """Score every instance: the predictions (as `predict_instances`), loader and model times."""
    if batch_size < 1 or num_workers < 0:
        raise ConfigurationError(
            f"batch_size must be >= 1 and num_workers >= 0 (got {batch_size}, {num_workers})"
        )
    keep = [c for c in INSTANCE_PREDICTIONS.columns if c not in _PREDICTED]
    _require_columns(instances, [*keep, "research_path", "modality"], "instances")
    manifest = model.manifest
    _require_programme(instances, manifest)

    count = instances.height
    statuses = [STATUS_FAILED] * count
    scores: list[float | None] = [None] * count
    reasons: list[str | None] = ["not scored"] * count
    loader_seconds = model_seconds = 0.0
    batches = 0
    if count:
        dataset = InstanceDataset(
            root, instances["research_path"].to_list(), instances["modality"].to_list(), manifest
        )
        loader = DataLoader(
            dataset,
            batch_size=batch_size,
            shuffle=False,
            num_workers=num_workers,
            collate_fn=_collate,
            pin_memory=model.device.startswith("cuda"),
        )
        started = time.perf_counter()
        for batch in loader:
            loaded = time.perf_counter()
            loader_seconds += loaded - started
            batches += 1
            for index, reason in batch.failures:
                reasons[index] = reason
            if batch.images is not None:
                values = scores_for(model.module, batch.images, model.device)
                for index, value in zip(batch.indices, values.tolist(), strict=True):
                    if np.isfinite(value):
                        statuses[index], scores[index], reasons[index] = STATUS_OK, value, None
                    else:
                        reasons[index] = "the model returned a non-finite score"
            started = time.perf_counter()
            model_seconds += started - loaded

    predictions = (
        instances.select(keep)
        .with_columns(
            pl.Series("status", statuses, dtype=pl.String),
            pl.Series("score", scores, dtype=pl.Float64),
            pl.Series("failure_reason", reasons, dtype=pl.String),
            pl.lit(manifest.name, dtype=pl.String).alias("model_name"),
            pl.lit(manifest.version, dtype=pl.String).alias("model_version"),
            pl.lit(manifest.weights_sha256, dtype=pl.String).alias("weights_sha256"),
        )
        .select(INSTANCE_PREDICTIONS.columns)
    )
    return PredictionRun(
        predictions=predictions,
        instances=count,
        failed=statuses.count(STATUS_FAILED),
        batches=batches,
        loader_seconds=loader_seconds,
        model_seconds=model_seconds,
    )


def predict_instances(
    instances: pl.DataFrame,
    root: Path,
    model: LoadedModel,
    batch_size: int = 64,
    num_workers: int = 0,
) -> pl.DataFrame:
    """One `INSTANCE_PREDICTIONS` row per row of `instances`, in the same order.

    `instances` needs the table's identifying columns (the partition key, programme,
    sop_instance_uid, study_instance_uid) plus `research_path` (relative to `root`) and
    `modality`. A row is `ok` with the sigmoid score in [0, 1], or `failed` with a null score and
    the reason. Batches span studies; decoding runs in `num_workers` DataLoader workers.
    """
    return run_predictions(instances, root, model, batch_size, num_workers).predictions


def aggregate_study_scores(predictions: pl.DataFrame, aggregation: str) -> pl.DataFrame:
    """Per study_instance_uid: the aggregated score over `ok` instances and the ok/failed counts.

    A study with no `ok` instance gets a null score. The training script calls this too, so a
    model's held-out figures use exactly the aggregation that inference uses.
    """
    _require_columns(predictions, ["study_instance_uid", "status", "score"], "predictions")
    unknown = predictions.filter(~pl.col("status").is_in([STATUS_OK, STATUS_FAILED]))
    if unknown.height:
        raise ValueError(f"predictions hold unknown status {unknown['status'][0]!r}")
    if predictions.filter((pl.col("status") == STATUS_OK) & pl.col("score").is_null()).height:
        raise ValueError("predictions hold an 'ok' row with a null score")
    ok = pl.col("status") == STATUS_OK
    scored = pl.col("score").filter(ok)
    if aggregation == "max":
        combined = scored.max()
    elif aggregation == "mean":
        combined = scored.mean()
    else:
        raise ValueError(f"unknown aggregation {aggregation!r}; known: max, mean")
    return predictions.group_by("study_instance_uid", maintain_order=True).agg(
        combined.cast(pl.Float64).alias("score"),
        ok.sum().cast(pl.Int32).alias("instances_scored"),
        (~ok).sum().cast(pl.Int32).alias("instances_failed"),
    )


def study_findings(
    predictions: pl.DataFrame, studies: pl.DataFrame, manifest: ModelManifest
) -> pl.DataFrame:
    """One `STUDY_FINDINGS` row per study in `studies`, ranked for review.

    Score: the manifest's aggregation over the study's `ok` instances. Flag: score >= threshold.
    A study with no scored instance has a null score and a null flag: it was not read, which is
    not the same as negative. priority_rank counts from 1 within each partition (the columns
    other than the study's own): highest score first, so flagged studies precede unflagged ones,
    and unscored studies come last; ties go by study_instance_uid.
    """
    keep = [c for c in STUDY_FINDINGS.columns if c not in _FOUND]
    _require_columns(studies, keep, "studies")
    if studies["study_instance_uid"].is_duplicated().any():
        raise ValueError("studies list a study_instance_uid more than once")
    _require_columns(predictions, ["weights_sha256"], "predictions")
    foreign = predictions.filter(pl.col("weights_sha256") != manifest.weights_sha256)
    if foreign.height:
        raise ModelIntegrityError(
            f"{foreign.height} predictions were made with weights {foreign['weights_sha256'][0]}, "
            f"not those of {manifest.name} {manifest.version} ({manifest.weights_sha256}); "
            "re-run instance predictions with this model"
        )
    orphans = predictions.join(studies, on="study_instance_uid", how="anti")
    if orphans.height:
        raise ValueError(
            f"{orphans.height} predictions belong to studies missing from `studies` "
            f"(first: {orphans['study_instance_uid'][0]})"
        )

    per_study = aggregate_study_scores(predictions, manifest.aggregation)
    partition = [c for c in keep if c not in _STUDY_DESCRIPTORS]
    found = (
        studies.select(keep)
        .join(per_study, on="study_instance_uid", how="left")
        .with_columns(
            pl.col("instances_scored").fill_null(0),
            pl.col("instances_failed").fill_null(0),
            (pl.col("score") >= manifest.threshold).alias("flag"),
            pl.lit(manifest.threshold, dtype=pl.Float64).alias("threshold"),
            pl.lit(manifest.name, dtype=pl.String).alias("model_name"),
            pl.lit(manifest.version, dtype=pl.String).alias("model_version"),
            pl.lit(manifest.weights_sha256, dtype=pl.String).alias("weights_sha256"),
        )
        .sort(
            [*partition, "score", "study_instance_uid"],
            descending=[*([False] * len(partition)), True, False],
            nulls_last=True,
        )
    )
    rank = pl.int_range(1, pl.len() + 1, dtype=pl.Int32)
    found = found.with_columns((rank.over(partition) if partition else rank).alias("priority_rank"))
    return found.select(STUDY_FINDINGS.columns)


def _require_columns(frame: pl.DataFrame, columns: Sequence[str], what: str) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(f"{what} lack column(s) {', '.join(missing)}; they have {frame.columns}")


def _require_programme(instances: pl.DataFrame, manifest: ModelManifest) -> None:
    others = instances.filter(pl.col("programme") != manifest.programme)
    if others.height:
        raise ConfigurationError(
            f"model {manifest.name} serves programme {manifest.programme}, but "
            f"{others.height} instances belong to {others['programme'][0]}; load the model the "
            "programme names"
        )
