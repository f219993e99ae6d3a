"""Print de-identification throughput, peak memory and residual identifiers for screenlake and
its peers (deid's default recipe, dicognito) on one corpus of public DICOM test files.

Usage: .venv/bin/python benchmarks/deid_throughput.py [--files 2000] [--workers N]
           [--keep DIR] [--no-leaks] [--exclude NAME ...]

The corpus (see `_corpus.py`) is every usable file of pydicom's test files, pydicom-data and
deid-data, copied with fresh UIDs up to `--files`. Every run is a fresh process (`_runners.py`):
screenlake's `deidentify_batch`, deid's default recipe with private tags removed, dicognito
seeded, each on one process and on `--workers` (all cores by default); and two reference loops
on one process: reading headers alone, and a plain pydicom loop that blanks or deletes a fixed
list of identifying attributes and saves. screenlake runs once more on the first tenth of the
corpus: its peak there against its peak on the whole corpus shows whether memory stays flat.

The leak scan (`--no-leaks` skips it) runs `screenlake.verify` over each tool's single-process
outputs, each against the identifying values of its own original. `leaks` counts findings
(one per element per file); `leak_sources` counts distinct (source file, element, kind), i.e.
leaks before copying. Public test files use placeholders as identifiers (AccessionNumber "2",
InstitutionName "TOSHIBA"), so part of every tool's count is such coincidences; the kinds
printed under each tool tell them from left UIDs and names.
The last line holds every figure as name=value pairs.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from collections import Counter
from dataclasses import dataclass, field
from multiprocessing import Pool
from pathlib import Path

import _corpus
from _runners import PLAIN_TAG_ACTIONS

RUNNER = Path(__file__).with_name("_runners.py")
PEERS = ("deid", "dicognito")
LEAK_TOOLS = ("screenlake", "deid", "dicognito", "plain")


@dataclass
class Run:
    """The figures of one run, as its process reported them, or why it failed."""

    label: str
    tool: str
    workers: int
    files: int
    figures: dict[str, object] = field(default_factory=dict)
    error: str | None = None

    @property
    def seconds(self) -> float:
        return float(self.figures["seconds"])  # type: ignore[arg-type]

    def rate(self, count: str = "processed") -> float:
        return float(self.figures[count]) / self.seconds  # type: ignore[arg-type]

    @property
    def peak_mb(self) -> float:
        return float(self.figures["peak_bytes"]) / 2**20  # type: ignore[arg-type]


def _spin(n: int) -> float:
    started = time.perf_counter()
    total = 0
    for i in range(n):
        total += i * i
    return time.perf_counter() - started


def cpu_scaling(workers: int, n: int = 5_000_000, rounds: int = 3) -> float:
    """How much faster `workers` processes finish `workers` pure-Python loops than one process:
    the ceiling for any multi-process speed-up on this machine (hyperthreads, shared cores).
    Best of `rounds` after a warm-up round, as a virtual machine's idle vCPU wakes late."""
    serial = min(sum(_spin(n) for _ in range(workers)) for _ in range(rounds))
    with Pool(workers) as pool:
        pool.map(_spin, [n] * workers)
        parallel = []
        for _ in range(rounds):
            started = time.perf_counter()
            pool.map(_spin, [n] * workers)
            parallel.append(time.perf_counter() - started)
    return serial / min(parallel)


def run_tool(tool: str, workers: int, paths: list[Path], work: Path, label: str) -> Run:
    """Run `tool` over `paths` in a fresh process; its outputs land in `work / label`, its
    standard error in `work / label.stderr.txt` (kept with `--keep`)."""
    listing = work / f"{label}.txt"
    listing.write_text("".join(f"{p}\n" for p in paths))
    result = work / f"{label}.json"
    out = work / label
    command = [sys.executable, str(RUNNER), tool, "--workers", str(workers)]
    command += ["--list", str(listing), "--out", str(out), "--result", str(result)]
    completed = subprocess.run(command, check=False, capture_output=True, text=True)
    run = Run(label, tool, workers, len(paths))
    (work / f"{label}.stderr.txt").write_text(completed.stderr)
    if completed.returncode != 0:
        lines = completed.stderr.strip().splitlines() or ["no output"]
        run.error = lines[-1]
        return run
    run.figures = json.loads(result.read_text())
    return run


def scan_leaks(
    corpus: list[_corpus.CorpusFile], runs: dict[str, Run], work: Path
) -> dict[str, dict[str, object]]:
    """Findings of `screenlake.verify` in each tool's single-process outputs.

    Each output is scanned for its own original's identifying values: a tool sees one file at
    a time, and one index over the whole corpus would mostly count coincidences between public
    test files (one's AccessionNumber "2" against another's SeriesNumber 2).
    """
    from screenlake.verify import index_originals, scan_file

    by_name = {f.path.name: f for f in corpus}
    leaks: dict[str, dict[str, object]] = {}
    for tool in LEAK_TOOLS:
        run = runs.get(f"{tool}_1p")
        if run is None or run.error:
            continue
        if tool == "screenlake":
            outputs = run.figures["outputs"]
            assert isinstance(outputs, dict)
            files = [(work / run.label / path, path, name) for path, name in outputs.items()]
        else:
            files = [(p, p.name, p.name) for p in sorted((work / run.label).glob("*.dcm"))]
        findings = []
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for path, label, name in files:
                index = index_originals([by_name[name].path])
                findings += [(by_name[name].source, f) for f in scan_file(path, label, index)]
        kinds = Counter(f.kind for _, f in findings)
        leaks[tool] = {
            "leaks": len(findings),
            "leak_files": len({f.file for _, f in findings}),
            "leak_sources": len({(s, f.element, f.kind) for s, f in findings}),
            "kinds": dict(kinds.most_common()),
        }
    return leaks


def figures_of(
    runs: dict[str, Run], leaks: dict[str, dict[str, object]], scaling: tuple[float, ...]
) -> dict[str, str]:
    """Every figure, by name, formatted for the last line."""
    out = {
        "machine_cpu_scaling_before": f"{scaling[0]:.2f}",
        "machine_cpu_scaling_after": f"{scaling[-1]:.2f}",
    }
    for label, run in runs.items():
        if run.error:
            out[f"{label}_files_per_s"] = "failed"
            continue
        out[f"{label}_files_per_s"] = f"{run.rate():.1f}"
        if label == "screenlake_1p":
            out["screenlake_peak_mb"] = f"{run.peak_mb:.0f}"
        if run.tool == "screenlake":
            out[f"{label}_deidentified_per_s"] = f"{run.rate('deidentified'):.1f}"
            out[f"{label}_deidentified"] = str(run.figures["deidentified"])
            out[f"{label}_quarantined"] = str(run.figures["quarantined"])
        elif run.tool != "headers":
            failures = run.figures["failures"]
            assert isinstance(failures, dict)
            out[f"{label}_failed"] = str(sum(failures.values()))
        out[f"{label}_peak_mb"] = f"{run.peak_mb:.0f}"
    one, many = runs.get("screenlake_1p"), runs.get("screenlake_Np")
    tenth = runs.get("screenlake_10pct_1p")
    if one and many and not (one.error or many.error):
        out["screenlake_Np_speedup"] = f"{many.rate() / one.rate():.2f}"
    if one and tenth and not (one.error or tenth.error):
        out["screenlake_peak_mb_growth"] = f"{one.peak_mb / tenth.peak_mb:.2f}"
    for tool, counts in leaks.items():
        for name in ("leaks", "leak_files", "leak_sources"):
            out[f"{tool}_{name}"] = str(counts[name])
    return out


def print_report(
    runs: dict[str, Run],
    leaks: dict[str, dict[str, object]],
    corpus_line: str,
    workers: int,
    scaling: tuple[float, ...],
) -> None:
    """A readable table, then one line of name=value pairs."""
    print(corpus_line)
    print(
        f"Np runs use {workers} processes; a pure-Python loop runs "
        f"{' then '.join(f'{s:.2f}x' for s in scaling)} faster on {workers} processes than on "
        "one here, before and after the runs (the ceiling for any speed-up)"
    )
    print(f"{'run':<22}{'files':>7}{'seconds':>9}{'files/s':>9}{'deid/s':>9}{'peak MB':>9}  notes")
    for run in runs.values():
        if run.error:
            print(f"{run.label:<22}{run.files:>7}  FAILED: {run.error[:90]}")
            continue
        notes = ""
        deid_rate = ""
        if run.tool == "screenlake":
            deid_rate = f"{run.rate('deidentified'):.1f}"
            notes = f"de-identified {run.figures['deidentified']}, quarantined "
            notes += f"{run.figures['quarantined']} {run.figures['quarantine_reasons']}"
        elif run.figures.get("failures"):
            notes = f"failed {run.figures['failures']}"
        if run.tool == "plain":
            notes = f"{PLAIN_TAG_ACTIONS} tag actions; " + notes
        print(
            f"{run.label:<22}{run.files:>7}{run.seconds:>9.2f}{run.rate():>9.1f}{deid_rate:>9}"
            f"{run.peak_mb:>9.0f}  {notes}"
        )
    if leaks:
        print("residual identifiers (screenlake.verify over single-process outputs):")
        for tool, counts in leaks.items():
            print(
                f"  {tool:<12} {counts['leaks']:>6} findings in {counts['leak_files']:>5} files; "
                f"{counts['leak_sources']:>4} distinct (source, element, kind)"
            )
            print(f"  {'':<12} by kind: {counts['kinds']}")
    figures = figures_of(runs, leaks, scaling)
    print(" ".join(f"{k}={v}" for k, v in {"workers": str(workers), **figures}.items()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=2000, help="corpus size (default 2000)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--keep", type=Path, help="build the corpus and outputs here and keep")
    parser.add_argument(
        "--leaks", action=argparse.BooleanOptionalAction, default=True, help="scan for leaks"
    )
    parser.add_argument(
        "--exclude", action="append", default=[], metavar="NAME", help="leave a source out"
    )
    args = parser.parse_args()
    if args.files < 10:
        parser.error("--files must be at least 10")
    if args.workers < 1:
        parser.error("--workers must be at least 1")
    if args.keep is not None and args.keep.exists() and any(args.keep.iterdir()):
        parser.error(f"--keep {args.keep} is not empty; name a new or empty folder")
    started = time.perf_counter()
    # Before and after the runs: on a shared or throttled machine the ceiling moves.
    scaling: tuple[float, ...] = (cpu_scaling(args.workers) if args.workers > 1 else 1.0,)
    work = args.keep or Path(tempfile.mkdtemp(prefix="deid-throughput-"))
    try:
        corpus_line, runs, leaks = _measure(args, work)
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)
    scaling += (cpu_scaling(args.workers) if args.workers > 1 else 1.0,)
    print_report(runs, leaks, corpus_line, args.workers, scaling)
    print(f"# whole benchmark took {time.perf_counter() - started:.0f} s", file=sys.stderr)


def _measure(
    args: argparse.Namespace, work: Path
) -> tuple[str, dict[str, Run], dict[str, dict[str, object]]]:
    sources, skipped = _corpus.usable_sources()
    unknown = set(args.exclude) - {s.name for s in sources}
    if unknown:
        raise SystemExit(f"--exclude names no source: {sorted(unknown)}")
    sources = [s for s in sources if s.name not in args.exclude]
    corpus = _corpus.build_corpus(sources, args.files, work / "corpus")
    size = sum(f.path.stat().st_size for f in corpus)
    corpus_line = (
        f"corpus: {len(corpus)} files, {size / 2**20:.0f} MiB, copies of {len(sources)} sources "
        f"({sum(1 for s in sources if s.synthetic_patient_id)} given a synthetic PatientID; "
        f"left out: {skipped}{', excluded ' + str(args.exclude) if args.exclude else ''})"
    )
    print(corpus_line, file=sys.stderr)
    paths = [f.path for f in corpus]
    plan = [
        ("headers_1p", "headers", 1, paths),
        ("plain_1p", "plain", 1, paths),
        ("screenlake_1p", "screenlake", 1, paths),
        ("screenlake_Np", "screenlake", args.workers, paths),
        ("screenlake_10pct_1p", "screenlake", 1, paths[: len(paths) // 10]),
    ]
    for peer in PEERS:
        plan += [(f"{peer}_1p", peer, 1, paths), (f"{peer}_Np", peer, args.workers, paths)]
    runs: dict[str, Run] = {}
    for label, tool, workers, subset in plan:
        runs[label] = run = run_tool(tool, workers, subset, work, label)
        status = run.error or f"{run.rate():.1f} files/s"
        print(f"# {label}: {status}", file=sys.stderr)
        if label != f"{tool}_1p" or tool not in LEAK_TOOLS or not args.leaks:
            # Only the single-process outputs are scanned; the rest only take disk.
            shutil.rmtree(work / label, ignore_errors=True)
    leaks = scan_leaks(corpus, runs, work) if args.leaks else {}
    return corpus_line, runs, leaks


if __name__ == "__main__":
    main()
