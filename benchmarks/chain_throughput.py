"""Print where a night's time and memory go through every asset of the screening job: one day of
a synthetic export (both programmes) in real Dagster runs, in one process, with Dagster's
multiprocess executor, and launched as a backfill through the webserver and the daemon.

Usage: .venv/bin/python benchmarks/chain_throughput.py [--preset real|demo] [--ct-slices N]
           [--ldct-studies 20] [--cxr-studies 200] [--days 1]
           [--modes in_process,multiprocess,daemon] [--keep]

The default night is 20 low-dose CT studies of 300 slices of 512x512 and 200 radiographs at
detector size (several GB; `screenlake synth --size real`), backdated three hours as a night's
drop is when its run starts. Each mode starts from empty zones and a fresh Dagster instance in
the work folder (under the system temp folder):

- `in_process`: the day's partitions one after the other, each a run in this process;
- `multiprocess`: the same with the multiprocess executor (`execute_job`), a process per step;
- `daemon`: a fresh stack (PostgreSQL, code server, daemon, webserver; `deploy/dagster.yaml`)
  and the day's partitions as one backfill launched through the webserver's GraphQL API as the
  UI launches it; the daemon's run queue starts the runs together, each with the multiprocess
  executor. Its span against the multiprocess mode's runs summed shows what running the two
  partitions at once buys.

Figures:

- per step: seconds from STEP_START to STEP_SUCCESS summed over the partitions, and peak memory:
  the largest sampled memory (every 200 ms) summed over the step's process and its descendants,
  each process's PSS so that pages a forked worker shares with its step count once, and for a
  step in its own process at least that process's VmHWM. In one process every step shares the
  run's process, so a step's peak is the whole process's memory during the step.
- per mode: wall seconds, instances per second end to end, seconds inside step compute (the
  union of a run's step intervals) and outside it (run start-up, step process spawns, event
  writes), the runs' seconds summed and their span, this process's own peak RSS, and the
  essential share: landing + de-identification + inference seconds over all step seconds. A
  step that runs its asset's checks reports their seconds (`seconds_checking`); they are taken
  out of the essential stages, so a check moved into an essential step never counts as work.
  Cores busy: the machine's CPU seconds not idle over the mode's wall seconds (of all cores);
  inference's own split between waiting for decoded images and computing comes from its
  metadata (`seconds_loading`, `seconds_computing`).
- runs at once: with the multiprocess and daemon modes both run, the daemon's span (two
  partitions at once) over the multiprocess mode's runs summed (the same partitions one after
  the other, same executor).

The last line holds every figure as name=value pairs.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Self
from unittest import mock

import dagster as dg
import psutil
from _memory import TreeSampler, reset_own_peak, vm_hwm
from backfill_throughput import REPO, partitions_of, run_timing, union_seconds
from cryptography.fernet import Fernet

from screenlake.devservers.process import free_port
from screenlake.devservers.stack import Stack
from screenlake.synth.export import generate_export
from screenlake.synth.presets import PRESETS, ImagePreset, image_preset

JOB = "screening_pipeline"
MODES = ("in_process", "multiprocess", "daemon")
LANDING = ("raw_instances",)
DEIDENTIFICATION = ("deidentified_instances",)
INFERENCE_GROUP = "infer"
_STEP_END = (dg.DagsterEventType.STEP_SUCCESS, dg.DagsterEventType.STEP_FAILURE)
_QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}
MB = 1024 * 1024


def step_sampler() -> TreeSampler:
    """PSS of every process in the steps' trees (see TreeSampler), every 200 ms: reading PSS
    wants a longer interval than RSS does."""
    return TreeSampler(interval=0.2, proportional=True)


class BusyCores:
    """The machine's CPU seconds spent not idle (nor waiting for I/O) while the block runs."""

    def __enter__(self) -> Self:
        self._start = self._busy()
        return self

    def __exit__(self, *exc: object) -> None:
        self._end = self._busy()

    @staticmethod
    def _busy() -> float:
        times = psutil.cpu_times()
        return sum(times) - times.idle - getattr(times, "iowait", 0.0)

    def seconds(self) -> float:
        """Busy CPU seconds between entering and leaving (or now, inside the block)."""
        return getattr(self, "_end", self._busy()) - self._start


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


@dataclass
class ModeResult:
    """One mode's runs: wall time, step seconds and peaks, and where the run time went."""

    mode: str
    wall_s: float = 0.0
    run_wall_s: float = 0.0
    in_steps_s: float = 0.0
    own_peak: int = 0
    step_s: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    # Seconds an asset's own checks took inside its step (its `seconds_checking` metadata).
    check_s: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    # Inference's wait for decoded images and its model time (its metadata), summed.
    loading_s: float = 0.0
    computing_s: float = 0.0
    cpu_busy_s: float = 0.0
    step_peak: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    run_spans: list[tuple[float, float]] = field(default_factory=list)
    step_spans: list[tuple[float, float]] = field(default_factory=list)

    @property
    def idle_s(self) -> float:
        """Seconds of the span in which no step of any run was computing: with runs at once,
        a run waiting for a pool slot another run holds is not idle machinery."""
        return self.runs_span_s - union_seconds(self.step_spans)

    @property
    def runs_span_s(self) -> float:
        """From the first run's start to the last run's end."""
        return max(e for _, e in self.run_spans) - min(s for s, _ in self.run_spans)

    @property
    def outside_steps_s(self) -> float:
        """Seconds of the runs with no step computing."""
        return self.run_wall_s - self.in_steps_s

    def work_s(self, keys: tuple[str, ...]) -> float:
        """The steps' seconds less the seconds their own checks took in them."""
        return sum(self.step_s.get(key, 0.0) - self.check_s.get(key, 0.0) for key in keys)

    def essential_share(self, stages: dict[str, tuple[str, ...]]) -> float:
        """Landing + de-identification + inference seconds (without the checks those steps run)
        over all step seconds."""
        return sum(self.work_s(keys) for keys in stages.values()) / sum(self.step_s.values())


def _record_steps(
    result: ModeResult, instance: dg.DagsterInstance, run_id: str, sampler: TreeSampler
) -> None:
    timing = run_timing(instance, run_id)
    record = instance.get_run_record_by_id(run_id)
    assert record is not None and record.start_time and record.end_time
    result.run_spans.append((record.start_time, record.end_time))
    result.run_wall_s += timing.wall_s
    result.in_steps_s += timing.in_steps_s
    started: dict[str, tuple[float, int]] = {}
    for record in instance.get_records_for_run(run_id, limit=100_000).records:
        entry = record.event_log_entry
        event = entry.dagster_event
        if event is None or not entry.step_key:
            continue
        if event.event_type == dg.DagsterEventType.ASSET_MATERIALIZATION:
            metadata = event.step_materialization_data.materialization.metadata
            checking = metadata.get("seconds_checking")
            if checking is not None:
                result.check_s[entry.step_key] += float(checking.value)  # type: ignore[arg-type]
            if "seconds_loading" in metadata and "seconds_computing" in metadata:
                result.loading_s += float(metadata["seconds_loading"].value)  # type: ignore[arg-type]
                result.computing_s += float(metadata["seconds_computing"].value)  # type: ignore[arg-type]
        elif event.event_type == dg.DagsterEventType.STEP_START:
            started[entry.step_key] = (entry.timestamp, event.pid or os.getpid())
        elif event.event_type in _STEP_END and entry.step_key in started:
            start, pid = started.pop(entry.step_key)
            peak = sampler.tree_peak(pid, start, entry.timestamp)
            if pid != os.getpid():
                peak = max(peak, sampler.hwm.get(pid, 0))
            result.step_s[entry.step_key] += entry.timestamp - start
            result.step_spans.append((start, entry.timestamp))
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
            "SCREENLAKE_EXECUTOR": "multiprocess" if mode == "daemon" else mode,
        }
    )


def run_mode(mode: str, root: Path, drop: Path, partitions: list[str]) -> ModeResult:
    """The day's partitions under `mode`, from empty zones: one after the other in this process
    (`in_process`) or with the multiprocess executor (`multiprocess`), or all at once as a
    backfill through a fresh stack's webserver and daemon (`daemon`)."""
    configure(mode, root, drop)
    if mode == "daemon":
        return _run_on_stack(root, partitions)
    (root / "dagster").mkdir(parents=True, exist_ok=True)
    result = ModeResult(mode)
    reset_own_peak()
    with (
        dg.DagsterInstance.local_temp(
            str(root / "dagster"), overrides={"telemetry": {"enabled": False}}
        ) as instance,
        step_sampler() as sampler,
        BusyCores() as busy,
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
        result.cpu_busy_s = busy.seconds()
        result.own_peak = vm_hwm()
        for run_id in run_ids:
            _record_steps(result, instance, run_id, sampler)
    return result


def _run_on_stack(root: Path, partitions: list[str]) -> ModeResult:
    """The partitions as one backfill launched through the webserver of a fresh stack
    (PostgreSQL, code server, daemon), as the UI launches it; the daemon's run queue starts
    them together, each with the multiprocess executor."""
    ports = {name: free_port() for name in ("postgres", "redis", "code_server", "webserver")}
    stack = Stack(root / "stack", REPO / "deploy", dict(os.environ), ports)
    result = ModeResult("daemon")
    with step_sampler() as sampler:
        try:
            stack.start()
            started = time.perf_counter()
            with BusyCores() as busy:
                backfill = stack.webserver.launch_backfill(JOB, partitions)
                runs = stack.webserver.wait_for_backfill(backfill, len(partitions), timeout_s=7200)
            result.wall_s = time.perf_counter() - started
            result.cpu_busy_s = busy.seconds()
            result.own_peak = vm_hwm()
            failed = [r["runId"] for r in runs if r["status"] != "SUCCESS"]
            if failed:
                raise SystemExit(f"daemon: runs failed: {failed}; see {root / 'stack' / 'logs'}")
            print(f"  daemon: {len(runs)} runs done", flush=True)
            with mock.patch.dict(os.environ, stack.env()), dg.DagsterInstance.get() as instance:
                for run in runs:
                    _record_steps(result, instance, run["runId"], sampler)
        finally:
            stack.stop()
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
        f"{'outside':>8} {'outside %':>9} {'runs s':>7} {'span s':>7} {'idle %':>6} "
        f"{'own peak MB':>11} {'essential':>9} {'cores busy':>10} {'infer wait %':>12}"
    )
    for r in results:
        rate = instances / r.wall_s
        share = r.essential_share(stages)
        total_steps = sum(r.step_s.values())
        outside_pct = 100 * r.outside_steps_s / r.run_wall_s
        print(
            f"{r.mode:<13} {r.wall_s:>7.1f} {rate:>7.2f} {total_steps:>7.1f} "
            f"{r.in_steps_s:>9.1f} {r.outside_steps_s:>8.1f} {outside_pct:>9.1f} "
            f"{r.run_wall_s:>7.1f} {r.runs_span_s:>7.1f} {100 * r.idle_s / r.runs_span_s:>6.1f} "
            f"{r.own_peak / MB:>11.0f} {share:>9.2f} {r.cpu_busy_s / r.wall_s:>10.2f} "
            f"{100 * r.loading_s / max(r.loading_s + r.computing_s, 1e-9):>12.1f}"
        )
        figures.update(
            {
                f"{r.mode}_wall_s": round(r.wall_s, 1),
                f"{r.mode}_instances_per_s": round(rate, 2),
                f"{r.mode}_step_s": round(total_steps, 1),
                f"{r.mode}_outside_steps_s": round(r.outside_steps_s, 1),
                f"{r.mode}_outside_steps_pct": round(outside_pct, 1),
                f"{r.mode}_runs_s": round(r.run_wall_s, 1),
                f"{r.mode}_runs_span_s": round(r.runs_span_s, 1),
                f"{r.mode}_idle_s": round(r.idle_s, 1),
                f"{r.mode}_idle_pct": round(100 * r.idle_s / r.runs_span_s, 1),
                f"{r.mode}_own_peak_mb": round(r.own_peak / MB),
                f"{r.mode}_max_step_peak_mb": round(max(r.step_peak.values()) / MB),
                f"{r.mode}_essential_share": round(share, 3),
                f"{r.mode}_cores_busy": round(r.cpu_busy_s / r.wall_s, 2),
                f"{r.mode}_inference_loading_s": round(r.loading_s, 1),
                f"{r.mode}_inference_computing_s": round(r.computing_s, 1),
            }
        )
        for stage, keys in stages.items():
            figures[f"{r.mode}_{stage}_s"] = round(r.work_s(keys), 1)
        figures[f"{r.mode}_checks_in_steps_s"] = round(sum(r.check_s.values()), 1)
    print(
        "(step s = sum of step seconds; in steps = the union of a run's steps over time, summed"
        " over runs; outside = runs s - in steps; runs s = the runs' wall seconds summed; span s ="
        " first run start to last run end, less than runs s when runs overlap; idle = share of"
        " the span in which no step of any run computed; own peak = this process's VmHWM during"
        " the mode; cores busy = the machine's busy CPU seconds over wall seconds, of"
        f" {os.cpu_count()}; infer wait = inference's share of its loop spent waiting for decoded"
        " images)"
    )
    by_mode = {r.mode: r for r in results}
    if {"multiprocess", "daemon"} <= by_mode.keys():
        alone, together = by_mode["multiprocess"], by_mode["daemon"]
        ratio = together.runs_span_s / alone.run_wall_s
        print(
            f"runs at once: the daemon's {len(together.run_spans)} runs spanned"
            f" {together.runs_span_s:.1f} s; one after the other (multiprocess) they took"
            f" {alone.run_wall_s:.1f} s: {ratio:.2f} of it"
        )
        figures["at_once_over_one_after_another"] = round(ratio, 3)
    print(" ".join(f"{k}={v}" for k, v in figures.items()))


def _export(
    drop: Path, args: argparse.Namespace, preset: ImagePreset, studies: int
) -> tuple[int, int]:
    """Instances and bad files of the export in `drop`: written now, or found there from an
    earlier run with the same arguments (`export.json` beside it says which)."""
    wanted = {
        "preset": preset.name,
        "ct_slices": preset.ct_slices,
        "ldct_studies": args.ldct_studies,
        "cxr_studies": args.cxr_studies,
        "days": args.days,
    }
    record = drop.with_name("export.json")
    if record.exists():
        found = json.loads(record.read_text())
        if {k: found.get(k) for k in wanted} == wanted:
            return found["instances"], found["bad_files"]
        raise SystemExit(f"{drop.parent} holds another export ({found}); give another folder")
    summary = generate_export(
        drop,
        studies=studies,
        seed=5,
        labels_path=drop.with_name("labels.csv"),
        days=args.days,
        preset=preset,
        ldct_share=args.ldct_studies / studies,
    )
    counts = {"instances": summary.instances, "bad_files": summary.bad_files}
    record.write_text(json.dumps({**wanted, **counts}))
    return summary.instances, summary.bad_files


def _backdate(drop: Path, hours: float) -> None:
    """Make the export look written `hours` ago, as a night's drop is by the time its run
    starts: listing waits out a drop changed within the settle time (30 s in production)."""
    then = time.time() - hours * 3600
    for path in drop.rglob("*"):
        os.utime(path, (then, then), follow_symlinks=False)


def main() -> None:
    """Make the export, run every mode asked for, print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", choices=sorted(PRESETS), default="real")
    parser.add_argument("--ct-slices", type=int, help="CT slices per series (default: preset's)")
    parser.add_argument("--ldct-studies", type=int, default=20, help="low-dose CT studies")
    parser.add_argument("--cxr-studies", type=int, default=200, help="chest radiograph studies")
    parser.add_argument("--days", type=int, default=1, help="days of studies (2 partitions each)")
    parser.add_argument("--modes", default=",".join(MODES))
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    parser.add_argument(
        "--export",
        type=Path,
        help="keep the synthetic export in this folder and reuse it when it holds one written "
        "with the same arguments (writing the default night takes minutes)",
    )
    args = parser.parse_args()
    modes = args.modes.split(",")
    unknown = set(modes) - set(MODES)
    if unknown:
        parser.error(f"unknown modes {sorted(unknown)}; choose from {', '.join(MODES)}")
    studies = args.ldct_studies + args.cxr_studies
    if min(args.ldct_studies, args.cxr_studies) < 1 or args.days < 1:
        parser.error("give at least one study of each programme and one day")
    preset = image_preset(args.preset, args.ct_slices)
    root = Path(tempfile.mkdtemp(prefix="screenlake-chain-"))
    # The daemon mode's PostgreSQL runs as its own account when we are root: it walks in here.
    root.chmod(0o711)
    os.environ.update(
        {
            "SCREENLAKE_PSEUDONYM_KEY": secrets.token_hex(32),
            "SCREENLAKE_VAULT_KEY": Fernet.generate_key().decode(),
        }
    )
    try:
        started = time.perf_counter()
        drop = args.export.resolve() / "drop" if args.export else root / "drop"
        instances, bad_files = _export(drop, args, preset, studies)
        _backdate(drop, hours=3)
        size = sum(p.stat().st_size for p in drop.rglob("*") if p.is_file())
        partitions = partitions_of(args.days)
        print(
            f"export: {instances} instances (+{bad_files} bad files), "
            f"{size / 1e9:.2f} GB, preset {preset.name} with {preset.ct_slices} CT slices, "
            f"{time.perf_counter() - started:.0f} s to write or find; {len(partitions)} partitions; "
            f"modes: {', '.join(modes)}; {os.cpu_count()} CPUs",
            flush=True,
        )
        configure(modes[0], root / modes[0], drop)
        stages = essential_steps()
        results = []
        for mode in modes:
            results.append(run_mode(mode, root / mode, drop, partitions))
            if not args.keep:  # a mode's zones hold twice the export: free them for the next
                shutil.rmtree(root / mode, ignore_errors=True)
        report(results, stages, instances)
    finally:
        if args.keep:
            print(f"work folder kept: {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
