"""Print how fast a backfill goes and where its time goes: the same partitions of a synthetic
export run in one process, then as a production site runs them (PostgreSQL, code server,
daemon, a backfill launched through the webserver's GraphQL API as the UI launches it) with the
multiprocess executor, and on Celery with one and with two workers.

Usage: .venv/bin/python benchmarks/backfill_throughput.py [--days 3] [--studies 24]
           [--modes in_process,multiprocess,celery1,celery2]

Each mode starts from empty zones (landing is incremental: a second pass would skip the work)
in folders on this host, so the figures compare orchestration, not storage. Per mode it prints
partitions per hour and instances per second over the whole backfill (from the launch until
every run has ended, including the daemon's ticks), and per run: its seconds from creation to
start (queue and launch), its wall time, the seconds inside step compute (the union of
STEP_START..STEP_SUCCESS intervals) and the seconds outside them (process start-up, event
writes, Celery hand-offs). The last line holds every figure as name=value pairs.
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from unittest import mock

import dagster as dg
from cryptography.fernet import Fernet

from screenlake.devservers.process import free_port
from screenlake.devservers.stack import Stack, Worker
from screenlake.programmes import PROGRAMME_NAMES
from screenlake.synth.export import generate_export

REPO = Path(__file__).resolve().parents[1]
START = date(2024, 3, 11)
JOB = "screening_pipeline"
MODES = ("in_process", "multiprocess", "celery1", "celery2")
_STEP_END = (dg.DagsterEventType.STEP_SUCCESS, dg.DagsterEventType.STEP_FAILURE)


@dataclass(frozen=True)
class RunTiming:
    """Where one run's time went."""

    queued_s: float
    wall_s: float
    in_steps_s: float

    @property
    def outside_steps_s(self) -> float:
        """Seconds of the run with no step computing."""
        return self.wall_s - self.in_steps_s


@dataclass(frozen=True)
class ModeResult:
    """One mode's backfill: its wall time and its runs."""

    mode: str
    wall_s: float
    runs: list[RunTiming]


def union_seconds(intervals: list[tuple[float, float]]) -> float:
    """Seconds covered by at least one of the (start, end) intervals."""
    total, end = 0.0, float("-inf")
    for start, stop in sorted(intervals):
        if stop <= end:
            continue
        total += stop - max(start, end)
        end = stop
    return total


def run_timing(instance: dg.DagsterInstance, run_id: str) -> RunTiming:
    """A run's queue time, wall time and time inside step compute, from its records."""
    record = instance.get_run_record_by_id(run_id)
    assert record is not None and record.start_time and record.end_time
    started: dict[str, float] = {}
    intervals = []
    events = instance.get_records_for_run(run_id, limit=100_000).records
    for event in events:
        entry = event.event_log_entry
        kind = entry.dagster_event.event_type if entry.dagster_event else None
        if kind == dg.DagsterEventType.STEP_START and entry.step_key:
            started[entry.step_key] = entry.timestamp
        elif kind in _STEP_END and entry.step_key in started:
            intervals.append((started.pop(entry.step_key), entry.timestamp))
    return RunTiming(
        queued_s=record.start_time - record.create_timestamp.timestamp(),
        wall_s=record.end_time - record.start_time,
        in_steps_s=union_seconds(intervals),
    )


def partitions_of(days: int) -> list[str]:
    """The `date|programme` partition keys of the export's days."""
    return [
        f"{(START + timedelta(days=d)).isoformat()}|{programme}"
        for d in range(days)
        for programme in PROGRAMME_NAMES
    ]


def _local_settings(root: Path, drop: Path) -> dict[str, str]:
    return {
        "SCREENLAKE_ENV": "production",
        "SCREENLAKE_DROP": str(drop),
        "SCREENLAKE_PHI_ZONE": str(root / "phi"),
        "SCREENLAKE_RESEARCH_ZONE": str(root / "research"),
        "SCREENLAKE_MODELS": "bundled",
    }


@contextmanager
def _environment(settings: Mapping[str, str]) -> Iterator[None]:
    with mock.patch.dict(os.environ, settings):
        yield


def run_in_process(root: Path, drop: Path, partitions: list[str]) -> ModeResult:
    """Every partition one after the other in this process (the in-process executor)."""
    from orchestration.definitions import definitions_for

    settings = _local_settings(root, drop)
    (root / "dagster").mkdir(parents=True, exist_ok=True)
    with (
        _environment(settings),
        dg.DagsterInstance.local_temp(
            str(root / "dagster"), overrides={"telemetry": {"enabled": False}}
        ) as instance,
    ):
        job = definitions_for("production", os.environ).resolve_job_def(JOB)
        quiet = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}
        started, run_ids = time.perf_counter(), []
        for key in partitions:
            result = job.execute_in_process(
                partition_key=key, instance=instance, run_config=quiet, raise_on_error=True
            )
            run_ids.append(result.run_id)
        wall = time.perf_counter() - started
        runs = [run_timing(instance, run_id) for run_id in run_ids]
    return ModeResult("in_process", wall, runs)


def run_on_stack(
    mode: str, root: Path, drop: Path, partitions: list[str], base: Mapping[str, str]
) -> ModeResult:
    """The partitions as one backfill through the webserver of a fresh stack."""
    settings = {**base, **_local_settings(root, drop)}
    workers: list[Worker] = []
    if mode == "multiprocess":
        settings["SCREENLAKE_EXECUTOR"] = "multiprocess"
    else:
        settings["SCREENLAKE_EXECUTOR"] = "celery"
        count = int(mode.removeprefix("celery"))
        workers = [Worker(queue="dagster,gpu", name=f"worker{i + 1}") for i in range(count)]
    ports = {name: free_port() for name in ("postgres", "redis", "code_server", "webserver")}
    stack = Stack(root / "stack", REPO / "deploy", settings, ports)
    try:
        stack.start(workers)
        started = time.perf_counter()
        backfill = stack.webserver.launch_backfill(JOB, partitions)
        runs = stack.webserver.wait_for_backfill(backfill, len(partitions), timeout_s=7200)
        wall = time.perf_counter() - started
        failed = [r["runId"] for r in runs if r["status"] != "SUCCESS"]
        if failed:
            raise SystemExit(f"{mode}: runs failed: {failed}; see {root / 'stack' / 'logs'}")
        with _environment(stack.env()), dg.DagsterInstance.get() as instance:
            timings = [run_timing(instance, r["runId"]) for r in runs]
    finally:
        stack.stop()
    return ModeResult(mode, wall, timings)


def report(results: list[ModeResult], partitions: int, instances: int) -> None:
    """The table and the name=value line."""
    print()
    print(
        f"{'mode':<13} {'wall s':>7} {'part/h':>7} {'inst/s':>7} "
        f"{'queued s':>9} {'run s':>7} {'in steps':>9} {'outside':>8} {'outside %':>9}"
    )
    figures: dict[str, object] = {"partitions": partitions, "instances": instances}
    for result in results:
        runs = result.runs
        per_hour = partitions / result.wall_s * 3600
        rate = instances / result.wall_s
        queued = statistics.mean(r.queued_s for r in runs)
        wall = statistics.mean(r.wall_s for r in runs)
        inside = statistics.mean(r.in_steps_s for r in runs)
        outside = statistics.mean(r.outside_steps_s for r in runs)
        share = sum(r.outside_steps_s for r in runs) / sum(r.wall_s for r in runs)
        print(
            f"{result.mode:<13} {result.wall_s:>7.1f} {per_hour:>7.0f} {rate:>7.2f} "
            f"{queued:>9.1f} {wall:>7.1f} {inside:>9.1f} {outside:>8.1f} {share:>9.0%}"
        )
        figures.update(
            {
                f"{result.mode}_wall_s": round(result.wall_s, 1),
                f"{result.mode}_partitions_per_hour": round(per_hour),
                f"{result.mode}_instances_per_s": round(rate, 2),
                f"{result.mode}_run_outside_steps_s": round(outside, 1),
                f"{result.mode}_run_outside_share": round(share, 3),
            }
        )
    print("(per run: mean over the mode's runs; outside = run wall - union of step compute)")
    print(" ".join(f"{k}={v}" for k, v in figures.items()))


def main() -> None:
    """Make the export, run every mode asked for, print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=int, default=3, help="days of studies (2 partitions each)")
    parser.add_argument("--studies", type=int, default=24, help="studies over all days")
    parser.add_argument("--modes", default=",".join(MODES))
    parser.add_argument("--keep", type=Path, help="work here and keep it (default: a temp dir)")
    args = parser.parse_args()
    modes = args.modes.split(",")
    unknown = set(modes) - set(MODES)
    if unknown:
        parser.error(f"unknown modes {sorted(unknown)}; choose from {', '.join(MODES)}")
    root = args.keep or Path(tempfile.mkdtemp(prefix="screenlake-backfill-"))
    root.mkdir(parents=True, exist_ok=True)
    root.chmod(0o711)  # PostgreSQL runs as its own account when this runs as root
    keys = {
        "SCREENLAKE_PSEUDONYM_KEY": secrets.token_hex(32),
        "SCREENLAKE_VAULT_KEY": Fernet.generate_key().decode(),
    }
    os.environ.update(keys)
    base = {k: v for k, v in os.environ.items() if not k.startswith("DAGSTER_")}
    try:
        summary = generate_export(
            root / "drop",
            studies=args.studies,
            seed=5,
            labels_path=root / "labels.csv",
            days=args.days,
        )
        partitions = partitions_of(args.days)
        print(
            f"{len(partitions)} partitions, {summary.instances} instances "
            f"(+{summary.bad_files} bad files) over {args.days} days; modes: {', '.join(modes)}",
            flush=True,
        )
        results = []
        for mode in modes:
            where = root / mode
            if mode == "in_process":
                results.append(run_in_process(where, root / "drop", partitions))
            else:
                results.append(run_on_stack(mode, where, root / "drop", partitions, base))
            print(f"{mode}: {results[-1].wall_s:.1f} s", flush=True)
        report(results, len(partitions), summary.instances)
    finally:
        if args.keep is None:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
