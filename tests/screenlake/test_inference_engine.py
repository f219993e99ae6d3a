"""The inference engine end to end on files: 2.5D series assembled by position, bad series
reported per instance, and shards that let a crashed run resume with the same rows."""

from __future__ import annotations

import dataclasses
import io
import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch
from pydicom.uid import generate_uid

from models import bundled_models_root
from models.architectures import build
from screenlake.inference.manifest import sha256_bytes
from screenlake.inference.predict import STATUS_FAILED, STATUS_OK, Progress, run_predictions
from screenlake.inference.preprocess import fit_to_input, normalise
from screenlake.inference.registry import LoadedModel, load_model
from screenlake.inference.series import neighbour_stacks
from tests.dicom_factory import ct_slice, write

SIZE = 16


def _model(directory: Path, seed: int = 0) -> LoadedModel:
    """A small 2.5D model (random weights) registered like the lung reference model."""
    torch.manual_seed(seed)
    module = build("screening_cnn_25d_v2")
    buffer = io.BytesIO()
    torch.save(module.state_dict(), buffer)
    directory.mkdir(parents=True)
    (directory / "weights.pt").write_bytes(buffer.getvalue())
    manifest = json.loads(
        (bundled_models_root() / "lung_ldct_reference" / "manifest.json").read_text()
    )
    manifest.update(
        architecture="screening_cnn_25d_v2",
        format="state_dict",
        weights_file="weights.pt",
        weights_sha256=sha256_bytes(buffer.getvalue()),
        version=f"0.0.{seed}",
    )
    manifest.pop("weights_uri", None)
    manifest["input"] = {
        **manifest["input"],
        "size": SIZE,
        "channels": 3,
        "context_slices": 1,
    }
    (directory / "manifest.json").write_text(json.dumps(manifest))
    return load_model(directory, device="cpu")


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> LoadedModel:
    return _model(tmp_path_factory.mktemp("model") / "lung_25d")


def _series(
    root: Path, study: str, positions: list[float], seed: int, reverse_numbers: bool = False
) -> list[dict[str, object]]:
    """A CT series whose slices hold distinct random pixels, written out of order; returns
    catalogue rows with the slice's true position."""
    rng = np.random.default_rng(seed)
    series = generate_uid()
    rows = []
    for number, z in enumerate(positions, start=1):
        ds = ct_slice(study_uid=study, series_uid=series, z=z, size=SIZE)
        ds.InstanceNumber = len(positions) - number + 1 if reverse_numbers else number
        ds.PixelData = rng.integers(0, 2000, (SIZE, SIZE), dtype=np.uint16).tobytes()
        path = f"{study}/{series}/{ds.SOPInstanceUID}.dcm"
        write(ds, root / path)
        rows.append(
            {
                "batch_id": "B1",
                "programme": "lung_ldct",
                "sop_instance_uid": str(ds.SOPInstanceUID),
                "study_instance_uid": study,
                "series_instance_uid": series,
                "research_path": path,
                "modality": "CT",
                "z": z,
                "pixels": np.frombuffer(ds.PixelData, dtype=np.uint16).reshape(SIZE, SIZE),
            }
        )
    return rows


def _frame(rows: list[dict[str, object]]) -> pl.DataFrame:
    return pl.DataFrame([{k: v for k, v in r.items() if k not in ("z", "pixels")} for r in rows])


def _expected_scores(model: LoadedModel, rows: list[dict[str, object]]) -> dict[str, float]:
    """Scores computed by hand: slices sorted by position, each between its neighbours."""
    ordered = sorted(rows, key=lambda r: r["z"])  # type: ignore[arg-type, return-value]
    hounsfield = np.stack([r["pixels"] for r in ordered]).astype(np.float32) - 1024  # type: ignore[misc]
    spec = model.manifest.input
    stacks = fit_to_input(neighbour_stacks(normalise(hounsfield, spec), 1), spec)
    with torch.inference_mode():
        logits = model.module(torch.from_numpy(np.ascontiguousarray(stacks)))
    scores = torch.sigmoid(logits).reshape(-1).tolist()
    return {str(r["sop_instance_uid"]): s for r, s in zip(ordered, scores, strict=True)}


def test_a_series_is_read_in_spatial_order_not_by_instance_number(
    model: LoadedModel, tmp_path: Path
) -> None:
    # Written in a shuffled order, with InstanceNumber running against the positions.
    rows = _series(tmp_path, "1.2.3.1", [10.0, 0.0, 5.0, 15.0, -5.0], 1, reverse_numbers=True)
    run = run_predictions(_frame(rows), tmp_path, model, batch_size=2)
    got = dict(zip(run.predictions["sop_instance_uid"], run.predictions["score"], strict=True))
    expected = _expected_scores(model, rows)
    assert run.predictions["status"].to_list() == [STATUS_OK] * 5
    assert got == pytest.approx(expected, abs=1e-6)
    # Rows come back in the catalogue's order, whatever order the volume was read in.
    assert run.predictions["sop_instance_uid"].to_list() == [r["sop_instance_uid"] for r in rows]


def test_series_that_are_not_one_volume_fail_every_instance_with_the_reason(
    model: LoadedModel, tmp_path: Path
) -> None:
    good = _series(tmp_path, "1.2.3.1", [0.0, 2.5, 5.0], 1)
    gap = _series(tmp_path, "1.2.3.2", [0.0, 2.5, 10.0, 12.5], 2)
    single = _series(tmp_path, "1.2.3.3", [0.0], 3)
    broken = _series(tmp_path, "1.2.3.4", [0.0, 2.5, 5.0], 4)
    (tmp_path / str(broken[1]["research_path"])).write_bytes(b"truncated")

    run = run_predictions(_frame(good + gap + single + broken), tmp_path, model)
    by_study = run.predictions.group_by("study_instance_uid").agg(
        pl.col("status"), pl.col("failure_reason")
    )
    outcome = {r["study_instance_uid"]: r for r in by_study.iter_rows(named=True)}

    assert outcome["1.2.3.1"]["status"] == [STATUS_OK] * 3
    assert outcome["1.2.3.2"]["status"] == [STATUS_FAILED] * 4
    assert all("missing slices" in r for r in outcome["1.2.3.2"]["failure_reason"])
    single_reason = (
        "series has a single slice; model lung_ldct_reference reads each slice with 1 "
        "neighbour(s) on either side"
    )
    assert outcome["1.2.3.3"]["failure_reason"] == [single_reason]
    reasons = outcome["1.2.3.4"]["failure_reason"]
    assert reasons[1].startswith("not a DICOM file")
    assert reasons[0] == reasons[2]
    assert reasons[0].startswith("series not scored: 1 of its slices unreadable")
    assert run.predictions.height == 11 and run.failed == 8


class _Crash(RuntimeError):
    pass


class _Counting(torch.nn.Module):
    """The model, counting the images it is given."""

    def __init__(self, inner: torch.nn.Module) -> None:
        super().__init__()
        self.inner, self.images = inner, 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.images += x.shape[0]
        return self.inner(x)


@pytest.fixture
def studies(tmp_path: Path) -> Iterator[tuple[Path, pl.DataFrame]]:
    rows = []
    for index in range(6):
        rows += _series(tmp_path, f"1.2.9.{index}", [0.0, 2.5, 5.0, 7.5], 10 + index)
    yield tmp_path, _frame(rows)


def test_a_crashed_run_resumes_from_its_finished_shards_with_the_same_rows(
    model: LoadedModel, studies: tuple[Path, pl.DataFrame], tmp_path: Path
) -> None:
    from screenlake.inference.shards import ShardStore

    root, instances = studies
    clean = run_predictions(instances, root, model, images_per_shard=8)
    assert clean.shards == 3

    store = ShardStore(tmp_path / "shards")

    def crash_after_first(progress: Progress) -> None:
        if progress.studies_done >= 2:
            raise _Crash("the worker died")

    with pytest.raises(_Crash):
        run_predictions(
            instances,
            root,
            model,
            images_per_shard=8,
            shard_store=store,
            on_progress=crash_after_first,
        )

    counting = _Counting(model.module)
    resumed_model = dataclasses.replace(model, module=counting)
    resumed = run_predictions(instances, root, resumed_model, images_per_shard=8, shard_store=store)

    assert resumed.shards_reused == 1
    assert counting.images == 16  # the two unfinished shards' 4 + 4 slices each
    assert resumed.predictions.equals(clean.predictions)


def test_shards_of_other_weights_are_not_reused(
    model: LoadedModel, studies: tuple[Path, pl.DataFrame], tmp_path: Path
) -> None:
    from screenlake.inference.shards import ShardStore

    root, instances = studies
    store = ShardStore(tmp_path / "shards")
    run_predictions(instances, root, model, images_per_shard=8, shard_store=store)
    other = _model(tmp_path / "other", seed=1)
    again = run_predictions(instances, root, other, images_per_shard=8, shard_store=store)
    assert again.shards_reused == 0
    assert set(again.predictions["weights_sha256"]) == {other.manifest.weights_sha256}
    assert len(list((tmp_path / "shards").glob("*.parquet"))) == 3


def test_progress_is_reported_per_shard(
    model: LoadedModel, studies: tuple[Path, pl.DataFrame]
) -> None:
    root, instances = studies
    heard: list[Progress] = []
    run_predictions(instances, root, model, images_per_shard=8, on_progress=heard.append)
    assert [(p.studies_done, p.images_done) for p in heard] == [(2, 8), (4, 16), (6, 24)]
    assert all(p.studies_total == 6 and p.images_total == 24 for p in heard)


def test_workers_default_by_device_and_cores() -> None:
    from screenlake.inference.predict import default_loader_workers

    assert default_loader_workers("cpu", 1) == 1
    assert default_loader_workers("cpu", 2) == 2
    assert default_loader_workers("cpu", 16) == 8
    assert default_loader_workers("cuda", 16) == 8
    assert default_loader_workers("cuda:0", 2) == 1


def test_workers_decode_ahead_and_give_the_same_rows(
    model: LoadedModel, studies: tuple[Path, pl.DataFrame]
) -> None:
    root, instances = studies
    alone = run_predictions(instances, root, model, batch_size=5)
    with_workers = run_predictions(instances, root, model, batch_size=5, num_workers=2)
    assert with_workers.predictions.equals(alone.predictions)
    # Batches are exactly 5 images across series (6 series of 4 slices): 24 = 4 x 5 + 4.
    assert with_workers.batches == alone.batches == 5


def test_cpu_inference_keeps_freed_memory_for_the_next_batch() -> None:
    import ctypes.util

    from screenlake.inference.memory import keep_freed_memory_for_reuse

    glibc = ctypes.util.find_library("c") is not None
    assert keep_freed_memory_for_reuse() is glibc
    assert keep_freed_memory_for_reuse() is glibc  # once per process; repeating is harmless
