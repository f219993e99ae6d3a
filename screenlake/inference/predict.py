"""Batched inference over research-zone DICOM instances, and per-study findings from its scores.

Decoding and preprocessing happen in the DataLoader's workers (`loading`); a file that cannot be
used becomes a `failed` prediction with its reason, never an exception, so one bad file does not
stop a partition and every input instance ends in exactly one output row. Work goes in shards of
whole studies (`shards`) that a crashed run resumes from.
"""

from __future__ import annotations

import functools
import math
import os
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
import torch
from torch import nn
from torch.utils.data import DataLoader

from screenlake.errors import ConfigurationError, ModelIntegrityError
from screenlake.inference.loading import LoadedUnit, UnitDataset, WorkUnit
from screenlake.inference.manifest import ModelManifest
from screenlake.inference.registry import LoadedModel
from screenlake.inference.shards import IMAGES_PER_SHARD, Shard, ShardStore, plan_shards
from screenlake.lifeline import loader_worker_init
from screenlake.tables import INSTANCE_PREDICTIONS, STUDY_FINDINGS

STATUS_OK = "ok"
_WORKER_START = "fork" if sys.platform.startswith("linux") else None
STATUS_FAILED = "failed"

_PREDICTED = (
    "status",
    "score",
    "failure_reason",
    "input_mean",
    "input_std",
    "model_name",
    "model_version",
    "weights_sha256",
)
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
    """Predictions plus where the time went, so that the slower of loader and model is known.

    `loader_seconds` is time the model waited for the loader; with workers loading ahead it is
    what loading costs beyond what overlaps with computing. `shards_reused` were finished by an
    earlier run and read back instead of computed.
    """

    predictions: pl.DataFrame
    instances: int
    failed: int
    batches: int
    loader_seconds: float
    model_seconds: float
    wall_seconds: float
    shards: int
    shards_reused: int

    @property
    def images_per_second(self) -> float:
        """Instances through the model (or failed) per wall-clock second of this run."""
        return self.instances / self.wall_seconds if self.wall_seconds > 0 else 0.0

    @property
    def loading_share(self) -> float:
        """Share of the loop's time spent waiting for inputs rather than computing."""
        busy = self.loader_seconds + self.model_seconds
        return self.loader_seconds / busy if busy > 0 else 0.0


@dataclass(frozen=True)
class Progress:
    """How far a run is: studies and images done of the total, and images/s so far."""

    studies_done: int
    studies_total: int
    images_done: int
    images_total: int
    images_per_second: float


def default_batch_size(device: str) -> int:
    """Images per model call when none is configured: larger on a GPU, whose memory holds more."""
    return 256 if device.startswith("cuda") else 64


def default_loader_workers(device: str, cores: int | None = None) -> int:
    """DataLoader workers when none are configured: one per core, up to 8 (with CUDA two cores
    are left to the main process, which feeds the GPU).

    At real image sizes reading and decoding cost more than the model, on the CPU too: a
    3,000 x 3,000 JPEG 2000 radiograph takes 1.5 s to decode on one core, the reference model
    milliseconds to score it. Without workers a step decodes on one core whatever the machine
    has (`benchmarks/chain_throughput.py` measured 2 cores at half use through inference);
    with them every core decodes while the model scores what is ready.
    """
    cores = cores or os.cpu_count() or 1
    if device.startswith("cuda"):
        return max(1, min(8, cores - 2))
    return min(8, cores)


def scores_for(module: nn.Module, images: torch.Tensor, device: str) -> np.ndarray:
    """Sigmoid of the module's logit for each image in `images` (N, C, H, W), as float64 (N,).

    Runs under `torch.inference_mode()`; on CUDA with float16 autocast and channels-last memory.
    """
    count = images.shape[0]
    with torch.inference_mode():
        if device.startswith("cuda"):
            batch = images.to(device, non_blocking=True, memory_format=torch.channels_last)
            with torch.autocast(device_type="cuda", dtype=torch.float16):
                logits = module(batch)
        else:
            logits = module(images.to(device))
        scores = torch.sigmoid(logits.float()).reshape(-1).cpu().numpy().astype(np.float64)
    if scores.shape != (count,):
        raise ModelIntegrityError(
            f"the model returned {scores.size} values for {count} images; "
            "it must return one logit per image"
        )
    return scores


class _Outcomes:
    """Per-row status, score and reason, filled in as batches come back from the model."""

    def __init__(self, count: int) -> None:
        self.statuses = [STATUS_FAILED] * count
        self.scores: list[float | None] = [None] * count
        self.reasons: list[str | None] = ["not scored"] * count
        self.means: list[float | None] = [None] * count
        self.stds: list[float | None] = [None] * count

    def fail(self, row: int, reason: str) -> None:
        self.reasons[row] = reason

    def score(self, rows: Sequence[int], values: np.ndarray, images: torch.Tensor) -> None:
        flat = images.reshape(images.shape[0], -1).float()
        means, stds = flat.mean(dim=1).tolist(), flat.std(dim=1).tolist()
        for row, mean, std in zip(rows, means, stds, strict=True):
            self.means[row], self.stds[row] = mean, std
        for row, value in zip(rows, values.tolist(), strict=True):
            if np.isfinite(value):
                self.statuses[row], self.scores[row], self.reasons[row] = STATUS_OK, value, None
            else:
                self.reasons[row] = "the model returned a non-finite score"

    def frame(
        self, instances: pl.DataFrame, rows: Sequence[int], manifest: ModelManifest
    ) -> pl.DataFrame:
        keep = [c for c in INSTANCE_PREDICTIONS.columns if c not in _PREDICTED]
        return (
            instances[list(rows)]
            .select(keep)
            .with_columns(
                pl.Series("status", [self.statuses[r] for r in rows], dtype=pl.String),
                pl.Series("score", [self.scores[r] for r in rows], dtype=pl.Float64),
                pl.Series("failure_reason", [self.reasons[r] for r in rows], dtype=pl.String),
                pl.Series("input_mean", [self.means[r] for r in rows], dtype=pl.Float64),
                pl.Series("input_std", [self.stds[r] for r in rows], dtype=pl.Float64),
                pl.lit(manifest.name, dtype=pl.String).alias("model_name"),
                pl.lit(manifest.version, dtype=pl.String).alias("model_version"),
                pl.lit(manifest.weights_sha256, dtype=pl.String).alias("weights_sha256"),
            )
            .select(INSTANCE_PREDICTIONS.columns)
        )


def run_predictions(
    instances: pl.DataFrame,
    root: Path,
    model: LoadedModel,
    batch_size: int | None = None,
    num_workers: int | None = 0,
    shard_store: ShardStore | None = None,
    images_per_shard: int = IMAGES_PER_SHARD,
    on_progress: Callable[[Progress], None] | None = None,
) -> PredictionRun:
    """Score every instance: the predictions (as `predict_instances`), and where the time went.

    Work is planned in shards of whole studies (`plan_shards`); with a `shard_store`, each
    shard is kept as it finishes and a later run with the same instances and model re-uses it,
    so a run that crashed resumes where it stopped. Batches of `batch_size` images (default per
    device) span units and studies, decoded by `num_workers` DataLoader workers (None: by
    device, `default_loader_workers`); `on_progress` hears after each shard.
    """
    batch_size = batch_size or default_batch_size(model.device)
    if num_workers is None:
        num_workers = default_loader_workers(model.device)
    if batch_size < 1 or num_workers < 0:
        raise ConfigurationError(
            f"batch_size must be >= 1 and num_workers >= 0 (got {batch_size}, {num_workers})"
        )
    keep = [c for c in INSTANCE_PREDICTIONS.columns if c not in _PREDICTED]
    needed = [*keep, "research_path", "modality", "series_instance_uid"]
    _require_columns(instances, needed, "instances")
    manifest = model.manifest
    _require_programme(instances, manifest)
    started = time.perf_counter()
    shards = plan_shards(instances, manifest, images_per_shard)
    finished = {s.number: shard_store.finished(s) for s in shards} if shard_store else {}
    todo = [s for s in shards if finished.get(s.number) is None]
    frames = {n: f for n, f in finished.items() if f is not None}
    outcomes = _Outcomes(instances.height)
    timer = _Timer()
    done_images = sum(f.height for f in frames.values())
    done_studies = sum(s.studies for s in shards if s.number in frames)

    if todo:
        if model.device.startswith("cuda"):
            model.module.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        units = [(shard, unit) for shard in todo for unit in shard.units]
        loader = DataLoader(
            UnitDataset(root, [u for _, u in units], manifest),
            batch_size=None,
            shuffle=False,
            num_workers=num_workers,
            pin_memory=model.device.startswith("cuda"),
            # Fork, as on a plain Linux process, also inside a Dagster step (which spawn starts
            # and would pass on): spawning workers costs over a second every run.
            multiprocessing_context=_WORKER_START if num_workers else None,
            prefetch_factor=_units_ahead(units, batch_size, num_workers),
            worker_init_fn=functools.partial(loader_worker_init, os.getpid()),
        )
        pending = _PendingBatch(batch_size)
        left = {shard.number: len(shard.units) for shard in todo}
        for (shard, _), loaded in zip(units, timer.waiting(loader), strict=True):
            for row, reason in loaded.failures:
                outcomes.fail(row, reason)
            if loaded.images is not None:
                pending.add(loaded.rows, loaded.images)
            while pending.full():
                timer.compute(model, *pending.take(), outcomes)
            left[shard.number] -= 1
            if left[shard.number]:
                continue
            # The shard is complete only once its images left the pending batch too.
            if pending:
                timer.compute(model, *pending.take(), outcomes)
            frames[shard.number] = outcomes.frame(instances, shard.rows, manifest)
            if shard_store is not None:
                shard_store.write(shard, frames[shard.number])
            done_images += len(shard.rows)
            done_studies += shard.studies
            if on_progress is not None:
                elapsed = time.perf_counter() - started
                on_progress(
                    Progress(
                        done_studies,
                        sum(s.studies for s in shards),
                        done_images,
                        instances.height,
                        done_images / elapsed if elapsed > 0 else 0.0,
                    )
                )

    predictions = outcomes.frame(instances, [], manifest)
    if shards:
        # Shards hold whole studies in study order; the table keeps the catalogue's row order.
        positions = pl.Series("_row", [row for s in shards for row in s.rows])
        predictions = (
            pl.concat([frames[s.number] for s in shards])
            .with_columns(positions)
            .sort("_row")
            .drop("_row")
        )
    return PredictionRun(
        predictions=predictions,
        instances=instances.height,
        failed=predictions.filter(pl.col("status") == STATUS_FAILED).height,
        batches=timer.batches,
        loader_seconds=timer.loader_seconds,
        model_seconds=timer.model_seconds,
        wall_seconds=time.perf_counter() - started,
        shards=len(shards),
        shards_reused=len(shards) - len(todo),
    )


def _units_ahead(
    units: Sequence[tuple[Shard, WorkUnit]], batch_size: int, workers: int
) -> int | None:
    """Units each worker keeps ready: enough that two full batches wait for the model, since a
    unit (a series, or a few instances) is smaller than a batch. None without workers."""
    if not workers:
        return None
    per_unit = max(1.0, sum(len(u.rows) for _, u in units) / max(1, len(units)))
    return max(2, math.ceil(2 * batch_size / per_unit / workers))


class _PendingBatch:
    """Images waiting for the model, gathered across units until a batch is full."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.rows: list[int] = []
        self.images: list[torch.Tensor] = []
        self.count = 0

    def __bool__(self) -> bool:
        return self.count > 0

    def add(self, rows: list[int], images: torch.Tensor) -> None:
        self.rows.extend(rows)
        self.images.append(images)
        self.count += images.shape[0]

    def full(self) -> bool:
        return self.count >= self.size

    def take(self) -> tuple[list[int], torch.Tensor]:
        """Up to one batch of images, oldest first, and their rows. Only the images taken are
        copied: what is left of a unit stays a view until its own batch."""
        pieces, wanted = [], min(self.size, self.count)
        while wanted:
            head = self.images[0]
            if head.shape[0] <= wanted:
                pieces.append(self.images.pop(0))
                wanted -= head.shape[0]
            else:
                pieces.append(head[:wanted])
                self.images[0] = head[wanted:]
                wanted = 0
        taken = pieces[0] if len(pieces) == 1 else torch.cat(pieces)
        rows, self.rows = self.rows[: taken.shape[0]], self.rows[taken.shape[0] :]
        self.count -= taken.shape[0]
        return rows, taken


class _Timer:
    """Time spent waiting for the loader and time spent in the model."""

    def __init__(self) -> None:
        self.loader_seconds = self.model_seconds = 0.0
        self.batches = 0

    def waiting(self, loader: Iterable[LoadedUnit]) -> Iterator[LoadedUnit]:
        iterator = iter(loader)
        while True:
            asked = time.perf_counter()
            try:
                loaded = next(iterator)
            except StopIteration:
                return
            self.loader_seconds += time.perf_counter() - asked
            yield loaded

    def compute(
        self, model: LoadedModel, rows: list[int], images: torch.Tensor, outcomes: _Outcomes
    ) -> None:
        began = time.perf_counter()
        outcomes.score(rows, scores_for(model.module, images, model.device), images)
        self.model_seconds += time.perf_counter() - began
        self.batches += 1


def predict_instances(
    instances: pl.DataFrame,
    root: Path,
    model: LoadedModel,
    batch_size: int | None = None,
    num_workers: int = 0,
) -> pl.DataFrame:
    """One `INSTANCE_PREDICTIONS` row per row of `instances`, in the same order.

    `instances` needs the table's identifying columns (the partition key, programme,
    sop_instance_uid, study_instance_uid) plus `series_instance_uid`, `research_path` (relative
    to `root`) and `modality`. A row is `ok` with the sigmoid score in [0, 1], or `failed` with
    a null score and the reason. Batches span studies; decoding runs in `num_workers`
    DataLoader workers.
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
