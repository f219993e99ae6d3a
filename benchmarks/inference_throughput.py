"""Print how fast each reference model scores DICOM files end to end, next to how fast the model
alone scores the same images held in memory, and the ratio of the two.

Usage: .venv/bin/python benchmarks/inference_throughput.py [--images 2000] [--device cpu|cuda]
           [--batch-size N] [--workers N] [--threads N] [--models-root DIR] [--seed N]
           [--keep DIR]

On a CUDA machine (the project installed with a CUDA build of torch), well within 10 minutes:
    PYTHONUNBUFFERED=1 timeout 600 .venv/bin/python benchmarks/inference_throughput.py --device cuda

The workload is written with `screenlake.synth`'s own study builders (those of
`generate_export`): whole low-dose CT series (24 slices each, as the 2.5D lung model reads them)
and chest radiographs (CR and DX, one or two images a study), the first studies of each kind
until each model has at least `--images` images. The export's bad files are left out, so every
image must score (`failed` is 0). Writing it and reading its headers into the catalogue are
timed apart and not counted.

Each model (`cxr_tb_reference`, `lung_ldct_reference` from `--models-root`) is measured in a
fresh process (its DataLoader workers still start as this script's would: fork on Linux), after
a few untimed batches of random inputs:

- model: `scores_for` over the model's images, decoded beforehand by the engine's own
  `UnitDataset` (in one DataLoader worker; that loading rate is printed too) into one tensor
  and cut into batches of the engine's size in the engine's order; on CUDA that tensor is
  pinned host memory, as the engine's loader hands batches over, so the copy to the GPU
  counts in both runs;
- e2e: then `run_predictions` over the catalogue, from the files on disk (in the page cache,
  since they were just written) to prediction rows, with `--workers` DataLoader workers; its
  own split (waiting for the loader, model, other) and loading share are printed with it;
- ratio: e2e images/s over model images/s, next to its target (>= 0.9 on CPU, >= 0.8 on CUDA;
  printed, never enforced). On CUDA each model's peak of `torch.cuda.max_memory_allocated`
  over both runs is printed too.

On CPU the model's speed depends on the state of the process's heap: its activations are
mostly pages taken fresh from the kernel for every batch, and a heap left holding freed blocks
(by decoding 2,000 images in the same process, say) doubled it here. Hence the fresh process
per model, and the main process's minor page faults an image, printed for both runs: when they
differ, so does what the two runs measured.

Both runs use the same torch intra-op thread count (`--threads`, printed; by default the cores
the workers leave). Workers default as the engine's do (`default_loader_workers`): one per core
up to 8 on the CPU, two fewer with CUDA. The last line holds every figure as name=value pairs.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import resource
import shutil
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from datetime import date
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import polars as pl
import torch
from faker import Faker
from torch.utils.data import DataLoader

from models import bundled_models_root
from screenlake.catalog import instance_catalog
from screenlake.errors import ConfigurationError
from screenlake.inference.loading import UnitDataset
from screenlake.inference.manifest import model_dir_for
from screenlake.inference.predict import (
    PredictionRun,
    default_batch_size,
    default_loader_workers,
    run_predictions,
    scores_for,
)
from screenlake.inference.registry import (
    LoadedModel,
    load_model,
    resolve_device,
)
from screenlake.inference.shards import plan_shards
from screenlake.synth.export import write_dataset
from screenlake.synth.modalities import ct_datasets, cxr_datasets
from screenlake.synth.plan import PlannedStudy, plan_studies, series_dir

MODELS = (("cxr", "cxr_tb_reference"), ("lung", "lung_ldct_reference"))
TARGETS = {"cpu": 0.9, "cuda": 0.8}
CT_SLICES, CT_SIZE, CXR_SIZE = 24, 96, 256  # generate_export's defaults
START, DAYS = date(2024, 3, 11), 2
BATCH_ID = "Bbenchmark"
WARMUP_BATCHES = 3


@dataclass(frozen=True)
class Workload:
    """The written files, as one catalogue per programme, and what writing them cost."""

    root: Path
    catalogues: dict[str, pl.DataFrame]
    files: int
    bytes: int
    write_seconds: float
    catalogue_seconds: float


@dataclass(frozen=True)
class ModelAlone:
    """`scores_for` over a model's images held in memory, and what loading them took."""

    images: int
    seconds: float
    faults: int
    preprocess_seconds: float


@dataclass(frozen=True)
class Figures:
    """One model's runs: the model alone on images in memory, and end to end from files."""

    key: str
    name: str
    version: str
    input_shape: tuple[int, int, int]
    run: PredictionRun
    e2e_faults: int
    alone: ModelAlone
    gpu_peak_bytes: int | None

    @property
    def e2e_rate(self) -> float:
        return self.run.images_per_second

    @property
    def model_rate(self) -> float:
        return self.alone.images / self.alone.seconds

    @property
    def ratio(self) -> float:
        return self.e2e_rate / self.model_rate

    @property
    def preprocess_rate(self) -> float:
        return self.alone.images / self.alone.preprocess_seconds

    @property
    def other_seconds(self) -> float:
        """The run's time outside loader waits and model calls: planning, batching, rows."""
        return self.run.wall_seconds - self.run.loader_seconds - self.run.model_seconds


def default_threads(workers: int, cores: int) -> int:
    """torch intra-op threads when none are asked for: the cores the workers leave, since a
    parallel region whose threads outnumber free cores waits for the slowest one."""
    return max(1, cores - workers) if workers else torch.get_num_threads()


def _planned(images: int, seed: int) -> list[PlannedStudy]:
    """Enough planned studies that each programme's first studies hold `images` images."""
    # About half the planned studies are radiographs, each of one or two images.
    studies = 2 * images + 40
    fake = Faker("nl_NL")
    fake.seed_instance(seed)
    return plan_studies(fake, np.random.default_rng(seed), studies, START, DAYS)


def write_workload(root: Path, images: int, seed: int) -> Workload:
    """The first CT studies until `images` slices and the first chest radiograph studies until
    `images` images, written under `root` in the export layout, and their catalogues."""
    started = time.perf_counter()
    paths: dict[str, list[str]] = {}
    counts: dict[str, int] = {}
    size = 0
    for study in _planned(images, seed):
        if counts.get(study.programme, 0) >= images:
            continue
        if study.modality == "CT":
            datasets = ct_datasets(study, seed, CT_SLICES, CT_SIZE)
        else:
            datasets = cxr_datasets(study, seed, CXR_SIZE)
        for number, ds in enumerate(datasets, start=1):
            path = series_dir(root, study) / f"IM{number:05d}.dcm"
            write_dataset(ds, path)
            size += path.stat().st_size
            paths.setdefault(study.programme, []).append(path.relative_to(root).as_posix())
            counts[study.programme] = counts.get(study.programme, 0) + 1
        if len(counts) == 2 and min(counts.values()) >= images:
            break
    written = time.perf_counter() - started
    short = {p: n for p, n in counts.items() if n < images}
    if short or len(counts) < 2:
        raise SystemExit(f"the plan held too few studies: {counts}; this is a benchmark bug")
    started = time.perf_counter()
    catalogues = {p: instance_catalog(root, rel, BATCH_ID, p) for p, rel in sorted(paths.items())}
    return Workload(
        root, catalogues, sum(counts.values()), size, written, time.perf_counter() - started
    )


def in_memory_batches(
    root: Path, instances: pl.DataFrame, model: LoadedModel, batch_size: int
) -> tuple[list[torch.Tensor], float]:
    """The model inputs of `instances` in the engine's unit order, cut into batches as the
    engine cuts them (views of one tensor, pinned on CUDA); and the seconds loading took.

    The engine's `UnitDataset` decodes them in one DataLoader worker, and they are copied into
    one tensor allocated up front: decoding here would leave this process's heap holding
    hundreds of MB of freed blocks, which the model's activations then reuse instead of taking
    fresh pages from the kernel; that alone made the model twice as fast as in a fresh process.
    """
    started = time.perf_counter()
    spec = model.manifest.input
    shards = plan_shards(instances, model.manifest)
    dataset = UnitDataset(root, [u for s in shards for u in s.units], model.manifest)
    shape = (instances.height, spec.channels, spec.size, spec.size)
    bank = torch.empty(shape, pin_memory=model.device.startswith("cuda"))
    filled = failures = 0
    for loaded in DataLoader(dataset, batch_size=None, num_workers=1):
        failures += len(loaded.failures)
        if loaded.images is not None:
            bank[filled : filled + loaded.images.shape[0]] = loaded.images
            filled += loaded.images.shape[0]
    if failures or not filled:
        raise SystemExit(f"{model.manifest.name}: {failures} images of the workload did not load")
    return list(bank[:filled].split(batch_size)), time.perf_counter() - started


def _faults() -> int:
    """Minor page faults of this process so far: pages the allocator took fresh from the kernel."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def _synchronise(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize(device)


def warm_up(model: LoadedModel, batch_size: int) -> None:
    """A few untimed batches of random inputs of the model's shape (allocator, kernels, cuDNN)."""
    spec = model.manifest.input
    generator = torch.Generator().manual_seed(0)
    shape = (batch_size, spec.channels, spec.size, spec.size)
    for _ in range(WARMUP_BATCHES):
        scores_for(model.module, torch.rand(shape, generator=generator), model.device)
    _synchronise(model.device)


def time_model(
    root: Path, instances: pl.DataFrame, model: LoadedModel, batch_size: int
) -> ModelAlone:
    """`scores_for` timed over the images of `instances`, loaded into memory beforehand."""
    batches, preprocess_seconds = in_memory_batches(root, instances, model, batch_size)
    _synchronise(model.device)
    faults = _faults()
    started = time.perf_counter()
    for batch in batches:
        scores_for(model.module, batch, model.device)
    _synchronise(model.device)
    seconds = time.perf_counter() - started
    images = sum(b.shape[0] for b in batches)
    return ModelAlone(images, seconds, _faults() - faults, preprocess_seconds)


def bench_model(
    key: str, name: str, workload: Workload, args: argparse.Namespace, batch_size: int
) -> Figures:
    """Load model `name`, warm it up, then time it alone on its programme's images in memory
    and end to end on their files. Run in a fresh process (`bench_in_fresh_process`)."""
    torch.set_num_threads(args.threads)
    model = load_model(model_dir_for(args.models_root, name), device=args.device)
    manifest = model.manifest
    instances = workload.catalogues[manifest.programme]
    cuda = model.device.startswith("cuda")
    if cuda:
        # run_predictions does the same before its first batch; done here so that the
        # model-alone run sees the same memory format.
        model.module.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        torch.cuda.reset_peak_memory_stats(model.device)
    warm_up(model, batch_size)
    # Alone first: its images are freed before the DataLoader forks workers for the e2e run.
    alone = time_model(workload.root, instances, model, batch_size)
    faults = _faults()
    run = run_predictions(
        instances, workload.root, model, batch_size=batch_size, num_workers=args.workers
    )
    faults = _faults() - faults
    peak = torch.cuda.max_memory_allocated(model.device) if cuda else None
    spec = manifest.input
    figures = Figures(
        key=key,
        name=manifest.name,
        version=manifest.version,
        input_shape=(spec.channels, spec.size, spec.size),
        run=run,
        e2e_faults=faults,
        alone=alone,
        gpu_peak_bytes=peak,
    )
    print(
        f"# {name}: e2e {figures.e2e_rate:.0f} img/s, model {figures.model_rate:.0f} img/s",
        file=sys.stderr,
        flush=True,
    )
    return figures


def bench_in_fresh_process(
    key: str, name: str, workload: Workload, args: argparse.Namespace, batch_size: int
) -> Figures:
    """`bench_model` in a new interpreter, so that neither the other model's run nor writing
    the workload leaves this model a warmer heap (see `in_memory_batches`)."""
    start_method = multiprocessing.get_start_method()
    with ProcessPoolExecutor(
        1, mp_context=get_context("spawn"), initializer=_start_like, initargs=(start_method,)
    ) as pool:
        return pool.submit(bench_model, key, name, workload, args, batch_size).result()


def _start_like(method: str) -> None:
    """DataLoader workers start as they would in this script's own process (fork on Linux),
    not by spawn, as the fresh process itself was; spawning one costs over a second."""
    multiprocessing.set_start_method(method, force=True)


def report(
    runs: list[Figures], workload: Workload, args: argparse.Namespace, batch_size: int
) -> None:
    """A readable table per model, then one line of name=value pairs."""
    device_type = torch.device(args.device).type
    target = TARGETS[device_type]
    per_programme = ", ".join(f"{p} {c.height}" for p, c in workload.catalogues.items())
    print(
        f"workload: {workload.files} files ({per_programme}), {workload.bytes / 2**20:.0f} MiB, "
        f"written in {workload.write_seconds:.1f} s, catalogued in "
        f"{workload.catalogue_seconds:.1f} s (neither counted)"
    )
    gpu = f" ({torch.cuda.get_device_name(args.device)})" if device_type == "cuda" else ""
    print(
        f"device {args.device}{gpu}; torch {torch.__version__}, {args.threads} intra-op threads "
        f"in the main process (each DataLoader worker runs 1); {args.workers} DataLoader "
        f"workers (started by {multiprocessing.get_start_method()}); batch {batch_size}; "
        f"{os.cpu_count()} CPU cores"
    )
    figures: dict[str, object] = {
        "device": device_type,
        "threads": args.threads,
        "workers": args.workers,
        "batch_size": batch_size,
        "images_asked": args.images,
        "workload_files": workload.files,
        "workload_write_s": round(workload.write_seconds, 1),
        "ratio_target": target,
    }
    for f in runs:
        run = f.run
        verdict = "meets" if f.ratio >= target else "misses"
        print()
        print(f"{f.name} {f.version}, input {f.input_shape}:")
        print(
            f"  e2e    {run.instances:>6} images {run.wall_seconds:>7.2f} s {f.e2e_rate:>8.1f} img/s"
            f"  (failed {run.failed}, {run.batches} batches, {run.shards} shards)"
        )
        print(
            f"  model  {f.alone.images:>6} images {f.alone.seconds:>7.2f} s "
            f"{f.model_rate:>8.1f} img/s  (scores_for on preprocessed batches in memory)"
        )
        print(f"  ratio  {f.ratio:.3f}  target >= {target} on {device_type}: {verdict} it")
        print(
            f"  e2e split: waiting for the loader {run.loader_seconds:.2f} s, model "
            f"{run.model_seconds:.2f} s, other {f.other_seconds:.2f} s; loading share "
            f"{run.loading_share:.3f}"
        )
        print(
            f"  loading alone (one DataLoader worker, model idle): {f.preprocess_rate:.1f} img/s "
            f"({1000 / f.preprocess_rate:.2f} ms an image)"
        )
        print(
            f"  page faults an image in the main process: e2e {f.e2e_faults / run.instances:.0f}, "
            f"model alone {f.alone.faults / f.alone.images:.0f}"
        )
        figures |= {
            f"{f.key}_images": run.instances,
            f"{f.key}_e2e_img_s": round(f.e2e_rate, 1),
            f"{f.key}_model_img_s": round(f.model_rate, 1),
            f"{f.key}_ratio": round(f.ratio, 3),
            f"{f.key}_loading_share": round(run.loading_share, 3),
            f"{f.key}_failed": run.failed,
            f"{f.key}_loader_s": round(run.loader_seconds, 2),
            f"{f.key}_model_s": round(run.model_seconds, 2),
            f"{f.key}_other_s": round(f.other_seconds, 2),
            f"{f.key}_load_img_s": round(f.preprocess_rate, 1),
            f"{f.key}_e2e_faults_per_img": round(f.e2e_faults / run.instances),
            f"{f.key}_model_faults_per_img": round(f.alone.faults / f.alone.images),
        }
        if f.gpu_peak_bytes is not None:
            print(f"  GPU memory peak (max_memory_allocated): {f.gpu_peak_bytes / 2**20:.0f} MiB")
            figures[f"{f.key}_gpu_peak_mib"] = round(f.gpu_peak_bytes / 2**20, 1)
    print(" ".join(f"{k}={v}" for k, v in figures.items()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=2000, help="at least this many per model")
    parser.add_argument("--device", help="cpu, cuda or cuda:N (default: cuda if available)")
    parser.add_argument("--batch-size", type=int, help="default: the engine's for the device")
    parser.add_argument("--workers", type=int, help="DataLoader workers (default: by device)")
    parser.add_argument(
        "--threads", type=int, help="torch intra-op threads (default: the cores workers leave)"
    )
    parser.add_argument("--models-root", type=Path, default=bundled_models_root())
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--keep", type=Path, help="write the workload here and keep it")
    args = parser.parse_args()
    if args.images < 1:
        parser.error("--images must be at least 1")
    if args.keep is not None and args.keep.exists() and any(args.keep.iterdir()):
        parser.error(f"--keep {args.keep} is not empty; name a new or empty folder")
    try:
        args.device = resolve_device(args.device)
    except ConfigurationError as error:
        parser.error(str(error))
    cores = os.cpu_count() or 1
    if args.workers is None:
        args.workers = default_loader_workers(args.device, cores)
    if args.threads is None:
        args.threads = default_threads(args.workers, cores)
    if args.workers < 0 or args.threads < 1 or (args.batch_size or 1) < 1:
        parser.error("--workers must be >= 0, --threads and --batch-size >= 1")
    batch_size = args.batch_size or default_batch_size(args.device)

    started = time.perf_counter()
    work = args.keep or Path(tempfile.mkdtemp(prefix="inference-throughput-"))
    try:
        workload = write_workload(work / "research", args.images, args.seed)
        print(
            f"# workload: {workload.files} files in {workload.write_seconds:.1f} s",
            file=sys.stderr,
            flush=True,
        )
        runs = [bench_in_fresh_process(k, n, workload, args, batch_size) for k, n in MODELS]
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)
    report(runs, workload, args, batch_size)
    print(f"# whole benchmark took {time.perf_counter() - started:.0f} s", file=sys.stderr)


if __name__ == "__main__":
    main()
