"""A killed run leaves nothing behind. Real runs of one partition (`dagster asset materialize`,
Dagster's multiprocess executor: each step a child of the run worker) are killed by process id
in the middle of a step; processes are found in /proc, nothing is mocked. Then the partition
is re-executed and must equal an uninterrupted run of the same export and keys."""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import polars as pl
import pytest

from orchestration.definitions import defs
from screenlake.synth.export import generate_export
from tests.assets.zones import local_resources

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc and prctl are Linux's"),
]

REPO = Path(__file__).resolve().parents[2]
PARTITION = "2024-03-11|lung_ldct"
UP_TO_DEIDENTIFICATION = ("pacs_studies", "raw_instances", "deidentified_instances")
COMPARED = (
    *UP_TO_DEIDENTIFICATION,
    "instance_catalog",
    "series_catalog",
    "study_catalog",
    "instance_predictions",
    "study_findings",
)
POOL_WORKERS = 2
# A worker that dies with its parent is gone at once; torch's own watchdog takes about 5 s.
GONE_WITHIN_S = 3.0
WATCH_S = 15.0
STARTS_WITHIN_S = 240.0
# De-identified files in the batch's staging folder before the kill: the pool is at work.
STAGED_BEFORE_KILL = 10


@dataclass
class Site:
    """One partition's zones, Dagster instance and settings, under `root`."""

    root: Path
    drop: Path
    keys: dict[str, str]

    @property
    def home(self) -> Path:
        return self.root / "dagster"

    @property
    def research(self) -> Path:
        return self.root / "research"

    def settings(self) -> dict[str, str]:
        return {
            "SCREENLAKE_HOME": str(self.root),
            "SCREENLAKE_DROP": str(self.drop),
            "SCREENLAKE_PHI_ZONE": str(self.root / "phi"),
            "SCREENLAKE_RESEARCH_ZONE": str(self.research),
            "SCREENLAKE_DEID_WORKERS": str(POOL_WORKERS),
            "SCREENLAKE_INFER_WORKERS": "2",
        }

    def launch(self, assets: tuple[str, ...]) -> subprocess.Popen[bytes]:
        """A run of `assets` for the partition, as an operator starts one, on the instance
        `make ui` would make here (the shipped dagster.yaml)."""
        self.home.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(REPO / "dagster.yaml", self.home / "dagster.yaml")
        env = {k: v for k, v in os.environ.items() if not k.startswith(("SCREENLAKE_", "DAGSTER_"))}
        env.update({**self.keys, **self.settings(), "DAGSTER_HOME": str(self.home)})
        command = [sys.executable, "-m", "dagster", "asset", "materialize"]
        command += ["-m", "orchestration.definitions", "--select", ",".join(assets)]
        command += ["--partition", PARTITION]
        with (self.root / "run.log").open("ab") as log:
            return subprocess.Popen(
                command, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT
            )

    def materialize(self, instance: dg.DagsterInstance) -> dg.ExecuteInProcessResult:
        """The compared assets for the partition, in this process."""
        return dg.materialize(
            _assets(COMPARED),
            resources=local_resources(self.drop, self.root, **self.settings()),
            partition_key=PARTITION,
            instance=instance,
        )


@dataclass(frozen=True)
class Kill:
    """What a kill left: the site, and how long the processes it had to take along lasted."""

    site: Site
    gone_after_s: float | None
    killed_at: float


def _assets(names: tuple[str, ...]) -> list[dg.AssetsDefinition]:
    return [
        a
        for a in defs.assets or []
        if isinstance(a, dg.AssetsDefinition) and {k.path[-1] for k in a.keys} & set(names)
    ]


# --- processes, read from /proc -----------------------------------------------------------------


def _children(pid: int) -> list[int]:
    found: list[int] = []
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            found += [int(c) for c in (task / "children").read_text().split()]
    except OSError:
        pass
    return found


def _step_processes(run_worker: int) -> list[int]:
    """The step processes of a run worker: the children of the forkserver it started."""
    return [step for server in _children(run_worker) for step in _children(server)]


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def _stat(pid: int) -> list[str]:
    """/proc/<pid>/stat from the field after the command name on: state first."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return []


def _alive(pid: int) -> bool:
    """Running, that is: a zombie waiting for a parent to reap it is dead."""
    stat = _stat(pid)
    return bool(stat) and stat[0] not in ("Z", "X")


class Leftovers:
    """Processes a test started or found, by process id and start time (the id of one that
    ended may be another's by now); `kill` ends those that still run."""

    def __init__(self) -> None:
        self._seen: dict[int, str] = {}

    def watch(self, *pids: int) -> None:
        for pid in pids:
            stat = _stat(pid)
            if stat:
                self._seen[pid] = stat[19]

    def kill(self) -> None:
        for pid, started in self._seen.items():
            stat = _stat(pid)
            if _alive(pid) and stat[19] == started:
                os.kill(pid, signal.SIGKILL)


def _python_children(pid: int) -> list[int]:
    """A step's worker processes: its multiprocessing children (spawned, or forked from a
    step that its run worker's forkserver forked), not the helpers Dagster starts to capture
    its logs."""
    return [c for c in _children(pid) if "multiprocessing" in _cmdline(c)]


def _step_with_workers(
    run_worker: int, workers: int, ready: Callable[[list[int]], bool]
) -> tuple[int, list[int]]:
    """The step process under `run_worker` (a child of its forkserver) that has `workers`
    worker processes, once `ready(workers)` says the step is at work."""
    deadline = time.monotonic() + STARTS_WITHIN_S
    while time.monotonic() < deadline:
        for step in _step_processes(run_worker):
            found = _python_children(step)
            if len(found) >= workers and ready(found):
                return step, found
        if not _alive(run_worker):
            break
        time.sleep(0.02)
    raise AssertionError(f"no step of run worker {run_worker} started {workers} workers")


def _decoding(pid: int) -> bool:
    stat = _stat(pid)
    return bool(stat) and stat[0] == "R"


def _seconds_until_gone(pids: list[int], within_s: float = WATCH_S) -> float | None:
    started = time.monotonic()
    while time.monotonic() - started < within_s:
        if not any(_alive(p) for p in pids):
            return time.monotonic() - started
        time.sleep(0.02)
    return None


def _staged(site: Site) -> int:
    return sum(1 for _ in site.research.glob("dicom/**/*.staging/**/*.dcm"))


@pytest.fixture
def leftovers() -> Iterator[Leftovers]:
    """What a test watches is killed after it, if it still runs."""
    found = Leftovers()
    yield found
    found.kill()


# --- fixtures ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def export(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One day of studies: enough CT slices that de-identification takes a few seconds."""
    root = tmp_path_factory.mktemp("export")
    generate_export(root / "drop", studies=12, seed=31, labels_path=root / "labels.csv", days=1)
    return root / "drop"


def _site(factory: pytest.TempPathFactory, name: str, drop: Path, keys: dict[str, str]) -> Site:
    return Site(root=factory.mktemp(name), drop=drop, keys=keys)


@pytest.fixture(scope="module")
def uninterrupted(
    export: Path, session_keys: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Site:
    site = _site(tmp_path_factory, "uninterrupted", export, session_keys)
    assert site.materialize(dg.DagsterInstance.ephemeral()).success
    return site


@pytest.fixture(scope="module")
def step_killed(
    export: Path, session_keys: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Kill]:
    """The de-identification step killed while its pool works."""
    site = _site(tmp_path_factory, "step-killed", export, session_keys)
    run = site.launch(UP_TO_DEIDENTIFICATION)
    found = Leftovers()
    found.watch(run.pid)
    try:
        step, pool = _step_with_workers(
            run.pid, POOL_WORKERS, lambda _: _staged(site) >= STAGED_BEFORE_KILL
        )
        found.watch(step, *pool)
        os.kill(step, signal.SIGKILL)
        killed_at = time.time()
        yield Kill(site, _seconds_until_gone(pool), killed_at)
    finally:
        found.kill()
        run.wait(timeout=120)


@pytest.fixture(scope="module")
def run_worker_killed(
    export: Path, session_keys: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Kill]:
    """The run worker killed while the de-identification step's pool works."""
    site = _site(tmp_path_factory, "run-worker-killed", export, session_keys)
    run = site.launch(UP_TO_DEIDENTIFICATION)
    found = Leftovers()
    found.watch(run.pid)
    try:
        step, pool = _step_with_workers(
            run.pid, POOL_WORKERS, lambda _: _staged(site) >= STAGED_BEFORE_KILL
        )
        found.watch(step, *pool)
        os.kill(run.pid, signal.SIGKILL)
        killed_at = time.time()
        run.wait(timeout=30)
        yield Kill(site, _seconds_until_gone([step, *pool]), killed_at)
    finally:
        found.kill()
        run.wait(timeout=120)


# --- tests -------------------------------------------------------------------------------------


def test_a_killed_deidentification_step_takes_its_pool_along(step_killed: Kill) -> None:
    assert step_killed.gone_after_s is not None, "pool workers still ran after the step died"
    assert step_killed.gone_after_s < GONE_WITHIN_S


def test_a_killed_run_worker_takes_its_step_and_pool_along(run_worker_killed: Kill) -> None:
    assert run_worker_killed.gone_after_s is not None, "the step still ran without its run"
    assert run_worker_killed.gone_after_s < GONE_WITHIN_S
    with dg.DagsterInstance.from_config(str(run_worker_killed.site.home)) as instance:
        (run,) = instance.get_runs()
        recorded = instance.get_records_for_run(
            run.run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION
        ).records
    late = [
        r.event_log_entry.step_key
        for r in recorded
        if r.event_log_entry.timestamp >= run_worker_killed.killed_at
    ]
    assert late == []


@pytest.mark.parametrize("kill", ["step_killed", "run_worker_killed"])
def test_a_reexecution_after_a_kill_equals_an_uninterrupted_run(
    kill: str, uninterrupted: Site, request: pytest.FixtureRequest
) -> None:
    killed: Kill = request.getfixturevalue(kill)
    with dg.DagsterInstance.from_config(str(killed.site.home)) as instance:
        assert killed.site.materialize(instance).success
    assert _research_files(killed.site) == _research_files(uninterrupted)
    # The PHI zone's files by name only: the vault is encrypted afresh each time.
    assert _names(killed.site.root / "phi") == _names(uninterrupted.root / "phi")
    for table in _lake_tables(uninterrupted):
        assert _rows(killed.site, table).equals(_rows(uninterrupted, table)), table


def test_inference_loader_workers_die_with_their_step(
    uninterrupted: Site, tmp_path: Path, leftovers: Leftovers
) -> None:
    # The inference step alone, over a copy of a partition catalogued already.
    site = Site(root=tmp_path, drop=uninterrupted.drop, keys=uninterrupted.keys)
    for zone in ("phi", "research"):
        shutil.copytree(uninterrupted.root / zone, site.root / zone)
    run = site.launch(("instance_predictions",))
    leftovers.watch(run.pid)
    # Killed while a worker decodes: torch's watchdog would let it finish the units it was
    # sent, then notice its parent's death only after 5 s without work.
    step, loaders = _step_with_workers(run.pid, 2, lambda found: any(_decoding(w) for w in found))
    leftovers.watch(*loaders)
    os.kill(step, signal.SIGKILL)
    gone_after = _seconds_until_gone(loaders)
    run.wait(timeout=120)
    assert gone_after is not None and gone_after < GONE_WITHIN_S, gone_after


def test_a_step_whose_run_has_ended_publishes_nothing(
    export: Path, session_keys: dict[str, str], tmp_path: Path
) -> None:
    # As run monitoring or the code server does when a run worker is lost, while the step,
    # elsewhere (a Celery worker), is still de-identifying.
    site = Site(root=tmp_path, drop=export, keys=session_keys)
    site.home.mkdir()
    with dg.instance_for_test(temp_dir=str(site.home)) as instance:
        finished = threading.Event()

        def fail_the_run_mid_step() -> None:
            while _staged(site) < STAGED_BEFORE_KILL:
                if finished.wait(0.02):
                    return
            (run,) = instance.get_runs()
            instance.report_run_failed(run, "run worker lost")

        failer = threading.Thread(target=fail_the_run_mid_step, daemon=True)
        failer.start()
        try:
            result = dg.materialize(
                _assets(UP_TO_DEIDENTIFICATION),
                resources=local_resources(export, tmp_path, **site.settings()),
                partition_key=PARTITION,
                instance=instance,
                raise_on_error=False,
            )
        finally:
            finished.set()
            failer.join(timeout=30)
    failures = [e for e in result.all_events if e.is_step_failure]
    assert [e.step_key for e in failures] == ["deidentified_instances"]
    error = failures[0].step_failure_data.error
    assert error is not None and "RunEndedError" in error.to_string()
    published = {
        e.asset_key.path[-1] for e in result.get_asset_materialization_events() if e.asset_key
    }
    assert "deidentified_instances" not in published
    assert not list((site.research / "lake").rglob("*.parquet"))


# --- comparing zones ---------------------------------------------------------------------------


def _research_files(site: Site) -> dict[str, str]:
    """Every research-zone file: the content's hash, except where the content holds when it
    was made (the key binding, the lake's database and tables: `_rows` compares those). The
    suites' evidence is left out: each run's validation results are named by the run and its
    time, and a re-execution adds its own beside those of the killed run."""
    files = {}
    for path in sorted(p for p in site.research.rglob("*") if p.is_file()):
        relative = path.relative_to(site.research).as_posix()
        if relative.startswith("evidence/"):
            continue
        by_time = relative.startswith(("bindings/", "lake/")) or path.suffix == ".duckdb"
        files[relative] = "" if by_time else hashlib.sha256(path.read_bytes()).hexdigest()
    return files


def _names(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


def _lake_tables(site: Site) -> list[str]:
    return sorted(p.name for p in (site.research / "lake").iterdir() if p.is_dir())


def _rows(site: Site, table: str) -> pl.DataFrame:
    """A lake table's rows without the times they were written, in a stable order."""
    frame = pl.read_parquet(str(site.research / "lake" / table / "*" / "*.parquet"))
    frame = frame.select([c for c, t in frame.schema.items() if not isinstance(t, pl.Datetime)])
    return frame.sort(frame.columns, nulls_last=True)


_IN_PROCESS_RUN_WORKER = """
import multiprocessing, sys, time

def run_worker():
    import dagster as dg
    from resources.run_binding import bind_step
    with dg.instance_for_test() as instance:
        run = instance.add_run(dg.DagsterRun(job_name="screening_pipeline"))
        bind_step(instance, run.run_id)
    print("bound", flush=True)
    time.sleep(120)

worker = multiprocessing.get_context("fork").Process(target=run_worker)
worker.start()
print(worker.pid, flush=True)
worker.join()
"""


def test_a_run_worker_that_runs_its_steps_itself_outlives_its_launcher(
    leftovers: Leftovers,
) -> None:
    # The in-process executor: steps run in the run worker, a multiprocessing child of the code
    # server or daemon that launched it, which may restart while the run goes on.
    launcher = subprocess.Popen(
        [sys.executable, "-c", _IN_PROCESS_RUN_WORKER], cwd=REPO, stdout=subprocess.PIPE, text=True
    )
    leftovers.watch(launcher.pid)
    assert launcher.stdout is not None
    worker = int(launcher.stdout.readline())
    leftovers.watch(worker)
    assert launcher.stdout.readline().strip() == "bound"
    os.kill(launcher.pid, signal.SIGKILL)
    launcher.wait(timeout=30)
    assert _seconds_until_gone([worker], within_s=2.0) is None, "the run worker died"
