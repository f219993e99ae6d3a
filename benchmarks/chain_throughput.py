"""Print where a night's time and memory go through every asset of the screening job: one day of
a synthetic export (both programmes) in a real Dagster run, in one process and with Dagster's
multiprocess executor.

Usage: .venv/bin/python benchmarks/chain_throughput.py [--preset real|demo] [--ct-slices N]
           [--studies 40] [--days 1] [--modes in_process,multiprocess] [--keep]

The export is half low-dose CT, half radiographs (`generate_export`), so the default 40 studies
are 20 LDCT series and 20 radiographs. Each mode starts from empty zones and a fresh Dagster
instance in the work folder (under the system temp folder), and runs the day's partitions one
after the other. Figures:

- per step: seconds from STEP_START to STEP_SUCCESS summed over the partitions, and peak memory:
  the largest sampled RSS (every 50 ms) summed over the step's process and its descendants, and
  for a step in its own process (multiprocess) also that process's VmHWM. In one process every
  step shares the run's process, so a step's peak is the whole process's RSS during the step.
- per mode: wall seconds, instances per second end to end, seconds inside step compute (the
  union of step intervals) and outside it (run start-up, step process spawns, event writes), the
  process's own peak RSS, and the essential share: landing + de-identification + inference
  seconds over all step seconds.

The last line holds every figure as name=value pairs.
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import sys
import tempfile
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Self

import dagster as dg
import psutil
from backfill_throughput import partitions_of, run_timing
from cryptography.fernet import Fernet

from screenlake.synth.export import generate_export
from screenlake.synth.presets import PRESETS, image_preset

JOB = "screening_pipeline"
MODES = ("in_process", "multiprocess")
LANDING = ("raw_instances",)
DEIDENTIFICATION = ("deidentified_instances",)
INFERENCE_GROUP = "infer"
_STEP_END = (dg.DagsterEventType.STEP_SUCCESS, dg.DagsterEventType.STEP_FAILURE)
_QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}
MB = 1024 * 1024


def screening_job() -> dg.JobDefinition:
    """The screening job as the production code location builds it from the environment; the
    multiprocess executor's step processes rebuild it through this function."""
    from orchestration.definitions import definitions_for

    return definitions_for("production", os.environ).resolve_job_def(JOB)


def essential_steps() -> dict[str, tuple[str, ...]]:
    """Step keys per essential stage, the inference ones read from the definitions' group."""
    from orchestration.definitions import definitions_for

    defs = definitions_for("production", os.environ)
    graph = defs.resolve_asset_graph()
    names = {key.to_user_string() for key in graph.get_all_asset_keys()}
    missing = set(LANDING + DEIDENTIFICATION) - names
    if missing:
        raise SystemExit(f"the definitions have no asset {sorted(missing)}; update this script")
    inference = tuple(
        sorted(
            key.to_user_string()
            for key in graph.get_all_asset_keys()
            if graph.get(key).group_name == INFERENCE_GROUP
        )
    )
    return {"landing": LANDING, "deidentification": DEIDENTIFICATION, "inference": inference}


def _vm_hwm(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass  # the process ended between the listing and the read
    return 0


def _reset_own_peak() -> None:
    # Linux resets VmHWM on "5" (since 4.0), so each mode's own peak is its own.
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


class TreeSampler:
    """Samples RSS and parent of this process and every descendant; keeps each one's VmHWM."""

    def __init__(self, interval: float = 0.05) -> None:
        self.samples: list[tuple[float, dict[int, tuple[int, int]]]] = []
        self.hwm: dict[int, int] = {}
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        me = psutil.Process()
        while not self._stop.is_set():
            now, sample = time.time(), {}
            for process in [me, *me.children(recursive=True)]:
                try:
                    sample[process.pid] = (process.ppid(), process.memory_info().rss)
                except psutil.Error:
                    continue
                if process.pid != me.pid:
                    self.hwm[process.pid] = max(self.hwm.get(process.pid, 0), _vm_hwm(process.pid))
            self.samples.append((now, sample))
            self._stop.wait(self._interval)

    def tree_peak(self, root: int, start: float, end: float) -> int:
        """Largest sampled RSS summed over `root` and its descendants between start and end."""
        peak = 0
        for when, sample in self.samples:
            # One interval of slack either side, so a step shorter than it still gets a sample.
            if not start - self._interval <= when <= end + self._interval:
                continue
            children: dict[int, list[int]] = defaultdict(list)
            for pid, (ppid, _) in sample.items():
                children[ppid].append(pid)
            total, stack = 0, [root]
            while stack:
                pid = stack.pop()
                total += sample.get(pid, (0, 0))[1]
                stack.extend(children.get(pid, ()))
            peak = max(peak, total)
        return peak


@dataclass
class ModeResult:
    """One mode's runs: wall time, step seconds and peaks, and where the run time went."""

    mode: str
    wall_s: float = 0.0
    run_wall_s: float = 0.0
    in_steps_s: float = 0.0
    own_peak: int = 0
    step_s: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    step_peak: dict[str, int] = field(default_factory=lambda: defaultdict(int))

    @property
    def outside_steps_s(self) -> float:
        """Seconds of the runs with no step computing."""
        return self.run_wall_s - self.in_steps_s

    def essential_share(self, stages: dict[str, tuple[str, ...]]) -> float:
        """Landing + de-identification + inference step seconds over all step seconds."""
        essential = sum(self.step_s.get(key, 0.0) for keys in stages.values() for key in keys)
        return essential / sum(self.step_s.values())


def _record_steps(
    result: ModeResult, instance: dg.DagsterInstance, run_id: str, sampler: TreeSampler
) -> None:
    timing = run_timing(instance, run_id)
    result.run_wall_s += timing.wall_s
    result.in_steps_s += timing.in_steps_s
    started: dict[str, tuple[float, int]] = {}
    for record in instance.get_records_for_run(run_id, limit=100_000).records:
        entry = record.event_log_entry
        event = entry.dagster_event
        if event is None or not entry.step_key:
            continue
        if event.event_type == dg.DagsterEventType.STEP_START:
            started[entry.step_key] = (entry.timestamp, event.pid or os.getpid())
        elif event.event_type in _STEP_END and entry.step_key in started:
            start, pid = started.pop(entry.step_key)
            peak = sampler.tree_peak(pid, start, entry.timestamp)
            if pid != os.getpid():
                peak = max(peak, sampler.hwm.get(pid, 0))
            result.step_s[entry.step_key] += entry.timestamp - start
            result.step_peak[entry.step_key] = max(result.step_peak[entry.step_key], peak)


def configure(mode: str, root: Path, drop: Path) -> None:
    """Point the production settings at `root`'s zones and pick `mode`'s executor; step
    processes inherit them."""
    os.environ.update(
        {
            "SCREENLAKE_ENV": "production",
            "SCREENLAKE_DROP": str(drop),
            "SCREENLAKE_PHI_ZONE": str(root / "phi"),
            "SCREENLAKE_RESEARCH_ZONE": str(root / "research"),
            "SCREENLAKE_MODELS": "bundled",
            "SCREENLAKE_EXECUTOR": mode,
        }
    )


def run_mode(mode: str, root: Path, drop: Path, partitions: list[str]) -> ModeResult:
    """The day's partitions one after the other under `mode`, from empty zones."""
    configure(mode, root, drop)
    (root / "dagster").mkdir(parents=True, exist_ok=True)
    result = ModeResult(mode)
    _reset_own_peak()
    with (
        dg.DagsterInstance.local_temp(
            str(root / "dagster"), overrides={"telemetry": {"enabled": False}}
        ) as instance,
        TreeSampler() as sampler,
    ):
        job = screening_job()
        started, run_ids = time.perf_counter(), []
        for key in partitions:
            if mode == "in_process":
                run = job.execute_in_process(
                    partition_key=key, instance=instance, run_config=_QUIET, raise_on_error=True
                )
            else:
                run = dg.execute_job(
                    dg.reconstructable(screening_job),
                    instance=instance,
                    run_config=_QUIET,
                    tags={"dagster/partition": key},
                )
                if not run.success:
                    raise SystemExit(f"{mode}: run {run.run_id} of {key} failed; see {root}")
            run_ids.append(run.run_id)
            print(f"  {mode} {key}: done", flush=True)
        result.wall_s = time.perf_counter() - started
        result.own_peak = max(_vm_hwm(os.getpid()), 0)
        for run_id in run_ids:
            _record_steps(result, instance, run_id, sampler)
    return result


def report(results: list[ModeResult], stages: dict[str, tuple[str, ...]], instances: int) -> None:
    """The per-step table, the per-mode table and the name=value line."""
    figures: dict[str, object] = {"instances": instances}
    steps = list(dict.fromkeys(key for r in results for key in r.step_s))
    essential = {key for keys in stages.values() for key in keys}
    width = max(len(step) for step in steps) + 1
    print()
    print(f"{'step':<{width}}" + "".join(f" {r.mode + ' s':>16} {'peak MB':>8}" for r in results))
    for step in steps:
        mark = "*" if step in essential else " "
        cells = "".join(
            f" {r.step_s.get(step, 0.0):>16.1f} {r.step_peak.get(step, 0) / MB:>8.0f}"
            for r in results
        )
        print(f"{mark}{step:<{width - 1}}{cells}")
    print("(* essential; seconds summed and peaks maxed over the partitions)")
    print()
    print(
        f"{'mode':<13} {'wall s':>7} {'inst/s':>7} {'step s':>7} {'in steps':>9} "
        f"{'outside':>8} {'own peak MB':>11} {'essential':>9}"
    )
    for r in results:
        rate = instances / r.wall_s
        share = r.essential_share(stages)
        total_steps = sum(r.step_s.values())
        print(
            f"{r.mode:<13} {r.wall_s:>7.1f} {rate:>7.2f} {total_steps:>7.1f} "
            f"{r.in_steps_s:>9.1f} {r.outside_steps_s:>8.1f} {r.own_peak / MB:>11.0f} "
            f"{share:>9.2f}"
        )
        figures.update(
            {
                f"{r.mode}_wall_s": round(r.wall_s, 1),
                f"{r.mode}_instances_per_s": round(rate, 2),
                f"{r.mode}_step_s": round(total_steps, 1),
                f"{r.mode}_outside_steps_s": round(r.outside_steps_s, 1),
                f"{r.mode}_own_peak_mb": round(r.own_peak / MB),
                f"{r.mode}_max_step_peak_mb": round(max(r.step_peak.values()) / MB),
                f"{r.mode}_essential_share": round(share, 3),
            }
        )
        for stage, keys in stages.items():
            figures[f"{r.mode}_{stage}_s"] = round(sum(r.step_s.get(k, 0.0) for k in keys), 1)
    print(
        "(step s = sum of step seconds; in steps = their union over time; outside = run wall -"
        " in steps; own peak = this process's VmHWM during the mode)"
    )
    print(" ".join(f"{k}={v}" for k, v in figures.items()))


def main() -> None:
    """Make the export, run every mode asked for, print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", choices=sorted(PRESETS), default="real")
    parser.add_argument("--ct-slices", type=int, help="CT slices per series (default: preset's)")
    parser.add_argument("--studies", type=int, default=40, help="studies, half LDCT half CXR")
    parser.add_argument("--days", type=int, default=1, help="days of studies (2 partitions each)")
    parser.add_argument("--modes", default=",".join(MODES))
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    args = parser.parse_args()
    modes = args.modes.split(",")
    unknown = set(modes) - set(MODES)
    if unknown:
        parser.error(f"unknown modes {sorted(unknown)}; choose from {', '.join(MODES)}")
    if args.studies < 2 or args.days < 1:
        parser.error("--studies must be at least 2 and --days at least 1")
    preset = image_preset(args.preset, args.ct_slices)
    root = Path(tempfile.mkdtemp(prefix="screenlake-chain-"))
    os.environ.update(
        {
            "SCREENLAKE_PSEUDONYM_KEY": secrets.token_hex(32),
            "SCREENLAKE_VAULT_KEY": Fernet.generate_key().decode(),
        }
    )
    try:
        started = time.perf_counter()
        summary = generate_export(
            root / "drop",
            studies=args.studies,
            seed=5,
            labels_path=root / "labels.csv",
            days=args.days,
            preset=preset,
        )
        size = sum(p.stat().st_size for p in (root / "drop").rglob("*") if p.is_file())
        partitions = partitions_of(args.days)
        print(
            f"export: {summary.instances} instances (+{summary.bad_files} bad files), "
            f"{size / 1e9:.2f} GB, preset {preset.name} with {preset.ct_slices} CT slices, "
            f"{time.perf_counter() - started:.0f} s to write; {len(partitions)} partitions; "
            f"modes: {', '.join(modes)}; {os.cpu_count()} CPUs",
            flush=True,
        )
        configure(modes[0], root / modes[0], root / "drop")
        stages = essential_steps()
        results = [run_mode(mode, root / mode, root / "drop", partitions) for mode in modes]
        report(results, stages, summary.instances)
    finally:
        if args.keep:
            print(f"work folder kept: {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
