"""Time the residual-PHI check against de-identification on the same batch of files.

A synthetic export (`screenlake.synth.export.generate_export`, one day, half chest CT and half
radiographs, with its bad files) is de-identified by `deidentify_batch` as the asset calls it,
then checked as `no_identifiers_in_research_zone` checks it: `index_originals` over the landed
originals with the profile's options, `scan_files` over the research-zone files.

Sizes: `small` is today's demo (CT slices of 96x96, radiographs of 256x256); `ct512` has CT
slices of 512x512 and radiographs of 2048x2048, nearer what a hospital exports.
Each figure is the best of `--rounds`; de-identification and the check use `--workers`
processes (every core by default, as the deidentification settings do). `ratio` compares wall
clock times; `cpu_ratio` compares CPU seconds (this process and its worker pools), which other
load on the machine distorts less.

`--verify FILE` loads another copy of `screenlake/verify.py` (say, the one before a change) in
place of the package's, to compare the two on one machine. `--profile` prints a cProfile of
one check.

Usage: .venv/bin/python benchmarks/residual_phi_scan.py [--studies 300] [--size small|ct512]
           [--workers N] [--rounds 3] [--verify FILE] [--profile]
The last line holds every figure as name=value pairs.
"""

from __future__ import annotations

import argparse
import cProfile
import importlib.util
import inspect
import os
import pstats
import resource
import sys
import tempfile
import time
import warnings
from pathlib import Path, PurePosixPath
from types import ModuleType
from typing import Any

from screenlake.deid.batch import LandedFile, deidentify_batch
from screenlake.deid.profile import load_default_profile
from screenlake.synth.export import generate_export

KEY = b"benchmark-key-benchmark-key-benchmark-key"
SIZES = {"small": {"ct_size": 96, "cxr_size": 256}, "ct512": {"ct_size": 512, "cxr_size": 2048}}


def _verify_module(path: str | None) -> ModuleType:
    if path is None:
        import screenlake.verify

        return screenlake.verify
    spec = importlib.util.spec_from_file_location("verify_under_test", path)
    if spec is None or spec.loader is None:
        raise SystemExit(f"--verify {path}: not a Python file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # worker processes unpickle its functions by this name
    spec.loader.exec_module(module)
    return module


def _cpu_seconds() -> float:
    """CPU time of this process and of its ended children (the worker pools)."""
    own, children = (
        resource.getrusage(w) for w in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)
    )
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def _check(verify: ModuleType, originals: list[Path], batch_dir: Path, workers: int) -> Any:
    """(index seconds, scan seconds, files scanned, findings, CPU seconds), as the check runs."""
    cpu = _cpu_seconds()
    started = time.perf_counter()
    index = verify.index_originals(originals, load_default_profile().options)
    indexed = time.perf_counter()
    files = sorted(batch_dir.rglob("*.dcm"))
    pairs = ((f, f.relative_to(batch_dir).as_posix()) for f in files)
    # The scan before this change took no worker count.
    takes_workers = "workers" in inspect.signature(verify.scan_files).parameters
    kwargs = {"workers": workers} if takes_workers else {}
    findings = verify.scan_files(pairs, index, **kwargs)
    scanned = time.perf_counter()
    return indexed - started, scanned - indexed, len(files), len(findings), _cpu_seconds() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--studies", type=int, default=300)
    parser.add_argument("--size", choices=sorted(SIZES), default="small")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--verify", default=None, help="another verify.py to time")
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()
    verify = _verify_module(args.verify)
    warnings.simplefilter("ignore")
    profile = load_default_profile()
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        started = time.perf_counter()
        summary = generate_export(
            root / "drop",
            studies=args.studies,
            seed=7,
            labels_path=root / "labels.csv",
            days=1,
            **SIZES[args.size],
        )
        originals = sorted(p for p in (root / "drop").rglob("*") if p.is_file())
        megabytes = sum(p.stat().st_size for p in originals) / 1e6
        print(
            f"# export: {summary.instances} instances, {len(originals)} files, "
            f"{megabytes:.0f} MB, made in {time.perf_counter() - started:.0f} s",
            file=sys.stderr,
        )
        landed = [LandedFile(n, p, None) for n, p in enumerate(originals)]
        batch_dir = root / "research" / "batch"
        deid_s: list[float] = []
        deid_cpu_s: list[float] = []
        for _ in range(args.rounds):
            cpu = _cpu_seconds()
            started = time.perf_counter()
            result = deidentify_batch(
                landed,
                key=KEY,
                profile=profile,
                batch_id="bench",
                programme="bench",
                output_dir=batch_dir,
                output_prefix=PurePosixPath("batch"),
                quarantine_dir=root / "phi" / "quarantine",
                workers=args.workers,
            )
            deid_s.append(time.perf_counter() - started)
            deid_cpu_s.append(_cpu_seconds() - cpu)
        runs = [_check(verify, originals, batch_dir, args.workers) for _ in range(args.rounds)]
        if args.profile:
            profiler = cProfile.Profile()
            profiler.enable()
            _check(verify, originals, batch_dir, 1)
            profiler.disable()
            pstats.Stats(profiler, stream=sys.stderr).sort_stats("cumulative").print_stats(30)
    index_s = min(r[0] for r in runs)
    scan_s = min(r[1] for r in runs)
    check_s = min(r[0] + r[1] for r in runs)
    check_cpu_s = min(r[4] for r in runs)
    figures = {
        "size": args.size,
        "studies": summary.studies,
        "files": len(originals),
        "deidentified": result.deidentified,
        "workers": args.workers,
        "deid_s": f"{min(deid_s):.2f}",
        "index_s": f"{index_s:.2f}",
        "scan_s": f"{scan_s:.2f}",
        "check_s": f"{check_s:.2f}",
        "deid_cpu_s": f"{min(deid_cpu_s):.2f}",
        "check_cpu_s": f"{check_cpu_s:.2f}",
        "findings": runs[0][3],
        "ratio": f"{check_s / min(deid_s):.2f}",
        "cpu_ratio": f"{check_cpu_s / min(deid_cpu_s):.2f}",
    }
    print(" ".join(f"{k}={v}" for k, v in figures.items()))


if __name__ == "__main__":
    main()
