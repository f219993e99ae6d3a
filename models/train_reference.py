"""Train the reference models on synthetic images and write their weights and manifests.

    python -m models.train_reference [--programme lung_ldct|cxr_tb|all] [--seed N] [--threads N]

Each model is trained on CPU from `screenlake.synth.images`, its threshold is picked on a
separate validation set for a target sensitivity, and it is evaluated once, at study level, on a
held-out set drawn from a third random stream. Preprocessing and aggregation are the inference
code's own, so the figures describe what the pipeline does. These are reference models for
exercising the pipeline, not clinical models.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import os
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import torch
import torch.nn.functional as F

from models.architectures import build
from screenlake.inference.manifest import InputSpec, parse_manifest, sha256_bytes
from screenlake.inference.predict import STATUS_OK, aggregate_study_scores, scores_for
from screenlake.inference.preprocess import fit_to_input, normalise
from screenlake.performance import auc, sensitivity_specificity
from screenlake.programmes import PROGRAMMES
from screenlake.synth.images import (
    CT_RESCALE_INTERCEPT,
    chest_radiograph,
    ct_stored_values,
    ct_volume,
)

VERSION = "2.0.0"
TARGET_SENSITIVITY = 0.9
# A second operating point in each manifest, for programmes that prefer to miss less.
HIGH_SENSITIVITY = 0.97
BATCH = 64
# What a programme accepts in service: the nightly positive-rate band (the synthetic exports
# flag about a third of studies) and the least audited AUC, sensitivity and specificity.
MONITORING = {
    "positive_rate_band": [0.05, 0.6],
    "minimum_auc": 0.85,
    "minimum_sensitivity": 0.8,
    "minimum_specificity": 0.7,
}
AGGREGATION = "max"
VALIDATION_PER_CLASS, HELD_OUT_PER_CLASS = 75, 150
CT_SLICES, CT_SIZE, CXR_SIZE, CXR_BITS = 24, 96, 256, 12
DISCLAIMER = (
    "Reference model for the screenlake pipeline, trained and evaluated on synthetic images only. "
    "NOT a clinical model: it has never seen a patient's image, its figures say nothing about "
    "real-world performance, and its output must not inform any clinical decision."
)
# Independent random streams per split: numpy.random.default_rng([seed, stream]).
TRAIN, VALIDATION, HELD_OUT = 0, 1, 2


@dataclass(frozen=True)
class Study:
    """One synthetic study as preprocessed slices (k, S, S) in spatial order, with per-instance
    labels. Model inputs stack each slice with its neighbours (`neighbour_index`) when a batch
    is drawn, so a 2.5D training set is held once, not three times."""

    slices: np.ndarray
    instance_labels: np.ndarray
    positive: bool


@dataclass(frozen=True)
class Recipe:
    """What differs between the reference models: data, sizes, schedule and manifest text."""

    programme: str
    architecture: str
    input: InputSpec
    make_study: Callable[[np.random.Generator, bool], Study]
    generator: str
    train_studies: int
    epochs: int
    negatives_per_positive: int
    task: str
    output_label: str
    intended_use: str


def ct_study(rng: np.random.Generator, positive: bool) -> Study:
    """A synthetic CT study as preprocessed slices, stored values rounded as in a DICOM file."""
    volume = ct_volume(rng, positive, slices=CT_SLICES, size=CT_SIZE)
    hounsfield = ct_stored_values(volume.hounsfield).astype(np.float32) + CT_RESCALE_INTERCEPT
    slices = fit_to_input(normalise(hounsfield, LUNG.input), LUNG.input)
    return Study(slices, volume.slice_has_lesion.copy(), positive)


def cxr_study(rng: np.random.Generator, positive: bool) -> Study:
    """A synthetic chest radiograph study (one image)."""
    image = chest_radiograph(rng, positive, size=CXR_SIZE)
    slices = fit_to_input(normalise(image[None], CXR.input, bits_stored=CXR_BITS), CXR.input)
    return Study(slices, np.array([positive]), positive)


def neighbour_index(studies: Sequence[Study], context: int) -> np.ndarray:
    """For every slice of `studies` laid end to end, the rows of itself and its `context`
    neighbours on each side within its own study (edges repeat), shape (total, 2*context+1):
    what `screenlake.inference.series.neighbour_stacks` builds at inference."""
    parts, start = [], 0
    offsets = np.arange(-context, context + 1)
    for study in studies:
        count = len(study.slices)
        local = np.clip(np.arange(count)[:, None] + offsets[None, :], 0, count - 1)
        parts.append(local + start)
        start += count
    return np.concatenate(parts)


def model_inputs(bank: torch.Tensor, index: np.ndarray, rows: np.ndarray) -> torch.Tensor:
    """Model inputs (len(rows), C, S, S) gathered from the slice bank (total, S, S)."""
    return bank[torch.from_numpy(index[rows])]


LUNG = Recipe(
    programme="lung_ldct",
    architecture="screening_cnn_25d_v2",
    input=InputSpec(
        size=CT_SIZE,
        channels=3,
        normalisation="ct_window",
        window_center_hu=-300.0,
        window_width_hu=1400.0,
        context_slices=1,
    ),
    make_study=ct_study,
    generator=f"screenlake.synth.images.ct_volume(slices={CT_SLICES}, size={CT_SIZE})",
    train_studies=640,
    epochs=8,
    negatives_per_positive=3,
    task="2.5D: per-slice probability that a solid lung nodule is visible on a chest CT slice, "
    "read between its two neighbours (slices ordered along the slice normal); the study score "
    "is the maximum over the series' slices",
    output_label="lung_nodule_suspected",
    intended_use="Exercise and demonstrate the lung_ldct screening pipeline (inference, "
    "aggregation, flagging, worklists, drift and audit reporting) on synthetic low-dose chest CT.",
)

CXR = Recipe(
    programme="cxr_tb",
    architecture="screening_cnn_2d_v2",
    input=InputSpec(size=224, channels=1, normalisation="bits_stored"),
    make_study=cxr_study,
    generator=f"screenlake.synth.images.chest_radiograph(size={CXR_SIZE})",
    train_studies=800,
    epochs=8,
    negatives_per_positive=1,
    task="Probability that a chest radiograph shows a focal opacity in a lung field; "
    "the study score is the maximum over the study's images",
    output_label="focal_opacity_suspected",
    intended_use="Exercise and demonstrate the cxr_tb screening pipeline (inference, "
    "aggregation, flagging, worklists, drift and audit reporting) on synthetic chest radiographs.",
)

RECIPES: dict[str, Recipe] = {r.programme: r for r in (LUNG, CXR)}


def choose_threshold(
    scores: Sequence[float] | np.ndarray, labels: Sequence[bool] | np.ndarray, target: float
) -> float:
    """A threshold (flag when score >= threshold) with sensitivity >= `target` on these cases.

    Among the thresholds that reach the target, the one with the highest sensitivity +
    specificity wins, then the highest. Candidates lie midway between adjacent distinct scores,
    so a threshold never sits on a validation case's score and leaves margin on both sides.
    """
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(labels, dtype=bool)
    if not y.any():
        raise ValueError("choosing a threshold needs positive cases")
    distinct = np.unique(s)
    candidates = np.concatenate([distinct[:1], (distinct[:-1] + distinct[1:]) / 2.0])
    best: tuple[float, float] | None = None
    for threshold in candidates:
        sensitivity, specificity = sensitivity_specificity(s, y, float(threshold))
        if sensitivity >= target and (
            best is None or (sensitivity + specificity, threshold) > best
        ):
            best = (sensitivity + specificity, float(threshold))
    assert best is not None  # the lowest candidate flags every case
    return best[1]


def make_studies(recipe: Recipe, seed: int, stream: int, per_class: int) -> list[Study]:
    """`per_class` positive then `per_class` negative studies from one random stream."""
    rng = np.random.default_rng([seed, stream])
    return [
        recipe.make_study(rng, positive) for positive in [True] * per_class + [False] * per_class
    ]


def study_scores(module: torch.nn.Module, studies: list[Study], context: int) -> np.ndarray:
    """Study scores via the inference code's scoring and aggregation, in the order of `studies`."""
    module.eval()
    bank = torch.from_numpy(np.concatenate([s.slices for s in studies]))
    index = neighbour_index(studies, context)
    rows = np.arange(len(index))
    instance = np.concatenate(
        [
            scores_for(module, model_inputs(bank, index, rows[i : i + 256]), "cpu")
            for i in range(0, len(rows), 256)
        ]
    )
    uids = [f"study-{i}" for i, s in enumerate(studies) for _ in range(len(s.slices))]
    predictions = pl.DataFrame(
        {"study_instance_uid": uids, "status": [STATUS_OK] * len(uids), "score": instance}
    )
    per_study = aggregate_study_scores(predictions, AGGREGATION)
    lookup = dict(zip(per_study["study_instance_uid"], per_study["score"], strict=True))
    return np.array([lookup[f"study-{i}"] for i in range(len(studies))], dtype=np.float64)


def train(recipe: Recipe, studies: list[Study], seed: int) -> tuple[torch.nn.Module, int]:
    """Train a fresh module on `studies`' instances; returns it and the instances seen per epoch.

    Each epoch takes every positive instance and a fresh draw of negatives, so that slice-level
    imbalance in CT (a nodule shows on 1-3 of 24 slices) does not swamp the lesion class.
    """
    torch.manual_seed(seed)
    rng = np.random.default_rng([seed, 99])
    bank = torch.from_numpy(np.concatenate([s.slices for s in studies]))
    index = neighbour_index(studies, recipe.input.context_slices)
    labels = torch.from_numpy(
        np.concatenate([s.instance_labels for s in studies]).astype(np.float32)
    )
    positive_idx = np.flatnonzero(labels.numpy() > 0.5)
    negative_idx = np.flatnonzero(labels.numpy() < 0.5)
    draw = min(len(negative_idx), recipe.negatives_per_positive * len(positive_idx))
    module = build(recipe.architecture)
    optimiser = torch.optim.AdamW(module.parameters(), lr=3e-3, weight_decay=1e-4)
    steps_per_epoch = math.ceil((len(positive_idx) + draw) / BATCH)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimiser, max_lr=3e-3, total_steps=recipe.epochs * steps_per_epoch
    )
    for _ in range(recipe.epochs):
        module.train()
        chosen = np.concatenate([positive_idx, rng.choice(negative_idx, draw, replace=False)])
        rng.shuffle(chosen)
        for start in range(0, len(chosen), BATCH):
            rows = chosen[start : start + BATCH]
            x = model_inputs(bank, index, rows)
            # Flips are label-preserving here (lesions appear on either side) and cheap.
            if rng.random() < 0.5:
                x = torch.flip(x, dims=[3])
            target = labels[torch.from_numpy(rows)]
            loss = F.binary_cross_entropy_with_logits(module(x).reshape(-1), target)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            schedule.step()
    module.eval()
    return module, len(positive_idx) + draw


def run(recipe: Recipe, seed: int, models_root: Path, threads: int) -> dict[str, Any]:
    """Train, pick the threshold, evaluate, and write one model's weights and manifest."""
    started = time.perf_counter()
    train_set = make_studies(recipe, seed, TRAIN, recipe.train_studies // 2)
    module, per_epoch = train(recipe, train_set, seed)
    train_seconds = time.perf_counter() - started

    validation = make_studies(recipe, seed, VALIDATION, VALIDATION_PER_CLASS)
    val_labels = np.array([s.positive for s in validation])
    context = recipe.input.context_slices
    val_scores = study_scores(module, validation, context)
    threshold = choose_threshold(val_scores, val_labels, TARGET_SENSITIVITY)
    high_sensitivity = choose_threshold(val_scores, val_labels, HIGH_SENSITIVITY)
    held_out = make_studies(recipe, seed, HELD_OUT, HELD_OUT_PER_CLASS)
    labels = np.array([s.positive for s in held_out])
    scores = study_scores(module, held_out, context)
    sensitivity, specificity = sensitivity_specificity(scores, labels, threshold)
    figures = {
        "auc": round(auc(scores, labels), 4),
        "sensitivity": round(sensitivity, 4),
        "specificity": round(specificity, 4),
        "validation_auc": round(auc(val_scores, val_labels), 4),
    }

    buffer = io.BytesIO()
    torch.save(module.state_dict(), buffer)
    weights = buffer.getvalue()
    name = PROGRAMMES[recipe.programme].model_name
    instances = sum(len(s.slices) for s in train_set)
    manifest = {
        "name": name,
        "version": VERSION,
        "programme": recipe.programme,
        "modalities": sorted(PROGRAMMES[recipe.programme].modalities),
        "task": recipe.task,
        "architecture": recipe.architecture,
        "format": "state_dict",
        "weights_file": "weights.pt",
        "weights_sha256": sha256_bytes(weights),
        "input": recipe.input.to_json(),
        "aggregation": AGGREGATION,
        "output_label": recipe.output_label,
        "threshold": threshold,
        "operating_points": {"high_sensitivity": high_sensitivity},
        "monitoring": MONITORING,
        "licence": "Apache-2.0, like screenlake",
        "training_data": f"{len(train_set)} synthetic studies from {recipe.generator} "
        "(screenlake.synth), with lesion labels from the generator; no patient data",
        "training": {
            "generator": recipe.generator,
            "seed": seed,
            "random_streams": "numpy.random.default_rng([seed, k]): k=0 training, "
            "1 validation (threshold), 2 held-out evaluation",
            "studies": len(train_set),
            "images": instances,
            "images_per_epoch": per_epoch,
            "epochs": recipe.epochs,
            "labels": "per-instance lesion labels from the generator",
            "optimiser": f"AdamW, one-cycle learning rate up to 3e-3, batch {BATCH}, "
            "horizontal flips",
            "threshold_rule": f"best sensitivity + specificity among thresholds with "
            f"study-level sensitivity >= {TARGET_SENSITIVITY} on {len(validation)} "
            "validation studies; operating point high_sensitivity the same at "
            f"sensitivity >= {HIGH_SENSITIVITY}",
            "device": f"cpu, {threads} thread(s), deterministic algorithms",
            "torch": torch.__version__,
        },
        "evaluation": {
            "auc": figures["auc"],
            "sensitivity": figures["sensitivity"],
            "specificity": figures["specificity"],
            "studies_positive": int(labels.sum()),
            "studies_negative": int((~labels).sum()),
            "description": "study level, max aggregation as in inference, on synthetic studies "
            "from the held-out random stream, at the manifest threshold",
        },
        "intended_use": recipe.intended_use,
        "disclaimer": DISCLAIMER,
    }
    directory = models_root / name
    # Validate with the loader's own rules before anything is written.
    parse_manifest(manifest, directory / "manifest.json")
    _write_atomically(directory / "weights.pt", weights)
    _write_atomically(directory / "manifest.json", (json.dumps(manifest, indent=2) + "\n").encode())
    return {
        "model": name,
        **figures,
        "threshold": round(threshold, 4),
        "train_seconds": round(train_seconds, 1),
        "total_seconds": round(time.perf_counter() - started, 1),
        "weights_bytes": len(weights),
        "images": instances,
    }


def _write_atomically(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        # mkstemp creates 0600; these files are committed and read by other users.
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def main(argv: Sequence[str] | None = None) -> int:
    """Command line entry point; prints each model's held-out figures."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--programme", choices=[*sorted(RECIPES), "all"], default="all")
    parser.add_argument("--seed", type=int, default=20240501)
    parser.add_argument(
        "--threads", type=int, default=2, help="CPU threads (the weights depend on it)"
    )
    parser.add_argument(
        "--models-root",
        type=Path,
        default=Path(__file__).resolve().parent,
        help="folder that receives <model_name>/{weights.pt,manifest.json} (default: models/)",
    )
    args = parser.parse_args(argv)
    if args.seed < 0:
        parser.error(f"--seed must be >= 0, got {args.seed}")
    # A fixed thread count and deterministic kernels: the same seed gives the same weights.
    torch.set_num_threads(max(1, args.threads))
    torch.use_deterministic_algorithms(True)
    names = sorted(RECIPES) if args.programme == "all" else [args.programme]
    for name in names:
        report = run(RECIPES[name], args.seed, args.models_root, max(1, args.threads))
        print(json.dumps(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
