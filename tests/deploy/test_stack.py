"""The production shape, run as a hospital runs it and tested with real servers on loopback:
PostgreSQL holding the instance, a gRPC code server, one daemon, the webserver, Redis as the
Celery broker and two workers (one per queue, each with its own working copies), both zones in
an S3 server. Runs are launched as the UI launches them (the webserver's GraphQL API); faults
are provoked for real, by process id."""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import boto3
import dagster as dg
import polars as pl
import pytest

from screenlake.devservers.process import free_port
from screenlake.devservers.s3 import S3Server
from screenlake.devservers.stack import Stack
from screenlake.lake import PARTITION_TABLES
from screenlake.programmes import PROGRAMME_NAMES
from screenlake.synth.export import generate_export
from tests.deploy.stack_site import (
    BUCKETS,
    CPU,
    GPU,
    REPO,
    Site,
    celery_workers_by_step,
    failures,
    quicker_monitoring,
    run_worker_pid,
    site_settings,
    step_starts,
)

pytestmark = [pytest.mark.stack, pytest.mark.s3]

DAYS = ("2024-03-11", "2024-03-12", "2024-03-13")
PARTITIONS = [f"{day}|{programme}" for day in DAYS for programme in PROGRAMME_NAMES]
JOB = "screening_pipeline"
RUN_TIMEOUT_S = 420


@pytest.fixture(scope="module")
def site(session_keys: dict[str, str]) -> Iterator[Site]:
    """The stack, started once for the module and stopped by process id afterwards."""
    # Not under pytest's 0700 temporary folder: PostgreSQL runs as its own account.
    root = Path(tempfile.mkdtemp(prefix="screenlake-stack-"))
    root.chmod(0o711)
    s3 = S3Server(root / "moto").start()
    stack = None
    try:
        client = boto3.client(
            "s3",
            endpoint_url=s3.endpoint,
            aws_access_key_id="admin",
            aws_secret_access_key="admin",
            region_name="us-east-1",
        )
        for bucket in BUCKETS.values():
            client.create_bucket(Bucket=bucket)
        generate_export(
            root / "drop", studies=12, seed=23, labels_path=root / "labels.csv", days=len(DAYS)
        )
        ports = {name: free_port() for name in ("postgres", "redis", "code_server", "webserver")}
        stack = Stack(root / "stack", REPO / "deploy", site_settings(root, s3, session_keys), ports)
        quicker_monitoring(stack)
        stack.start([CPU, GPU])
        yield Site(stack=stack, s3=s3, client=client)
    finally:
        if stack is not None:
            stack.stop()
        s3.stop()
        shutil.rmtree(root, ignore_errors=True)


def test_a_backfill_from_the_webserver_runs_every_partition_over_both_workers(site: Site) -> None:
    backfill = site.stack.webserver.launch_backfill(JOB, PARTITIONS)
    runs = site.stack.webserver.wait_for_backfill(backfill, len(PARTITIONS), timeout_s=900)

    _assert_all_succeeded(site, runs)
    partitions = {t["value"] for r in runs for t in r["tags"] if t["key"] == "dagster/partition"}
    assert partitions == set(PARTITIONS)
    with site.instance() as instance:
        workers = celery_workers_by_step(instance, [r["runId"] for r in runs])
    assert set().union(*workers.values()) == {CPU.node, GPU.node}
    assert workers.pop("instance_predictions") == {GPU.node}
    assert all(nodes == {CPU.node} for nodes in workers.values()), workers
    # Every step ran on Celery: the steps named by the workers are the job's whole plan.
    assert {"raw_instances", "deidentified_instances", "validated_findings"} <= set(workers)


def test_workers_killed_in_the_middle_of_steps_lose_nothing(site: Site) -> None:
    run_id = site.stack.webserver.launch_partition_run(JOB, PARTITIONS[1])

    # Each worker dies in the middle of a step (its own processes with it) and is started
    # again, as its service manager would: the broker hands the unacknowledged step back once
    # the visibility timeout has passed.
    for step, worker in (("deidentified_instances", CPU), ("instance_predictions", GPU)):
        site.wait_for_step_start(run_id, step, timeout_s=RUN_TIMEOUT_S)
        site.stack.kill(f"worker-{worker.name}")
        site.stack.start_worker(worker)

    assert site.stack.webserver.wait_for_run(run_id, RUN_TIMEOUT_S) == "SUCCESS"
    with site.instance() as instance:
        starts = step_starts(instance, run_id)
    assert starts.count("deidentified_instances") == 2
    assert starts.count("instance_predictions") == 2

    # Re-executed whole, as from the UI: the partition is rewritten, never duplicated.
    again = site.stack.webserver.reexecute(run_id)
    assert site.stack.webserver.wait_for_run(again, RUN_TIMEOUT_S) == "SUCCESS"
    _assert_no_duplicate_rows(site)
    _assert_no_orphans(site)


def test_a_killed_run_worker_is_detected_and_the_run_retried(site: Site) -> None:
    run_id = site.stack.webserver.launch_partition_run(JOB, PARTITIONS[2])
    site.wait_for_step_start(run_id, "deidentified_instances", timeout_s=RUN_TIMEOUT_S)
    with site.instance() as instance:
        os.kill(run_worker_pid(instance, run_id), signal.SIGKILL)

    assert site.stack.webserver.wait_for_run(run_id, RUN_TIMEOUT_S) == "FAILURE"
    with site.instance() as instance:
        retry = _retry_of(instance, run_id)
    assert site.stack.webserver.wait_for_run(retry, RUN_TIMEOUT_S) == "SUCCESS"
    _assert_no_duplicate_rows(site)
    _assert_no_orphans(site)


def test_a_daemon_killed_in_the_middle_of_a_backfill_finishes_it_after_a_restart(
    site: Site,
) -> None:
    partitions = PARTITIONS[:2]
    backfill = site.stack.webserver.launch_backfill(JOB, partitions)
    submitted = _submitted_runs(site, backfill)
    site.stack.kill("daemon")
    assert site.stack.webserver.backfill(backfill)["status"] == "REQUESTED"
    assert not [r for r in submitted if r["status"] in ("SUCCESS", "FAILURE")]
    site.stack.start_service("daemon")

    runs = site.stack.webserver.wait_for_backfill(backfill, len(partitions), timeout_s=900)
    # One run per partition (retries, which carry the backfill's tag too, aside): the restarted
    # daemon did not submit any twice.
    runs = [r for r in runs if "dagster/parent_run_id" not in {t["key"] for t in r["tags"]}]
    tags = [t["value"] for r in runs for t in r["tags"] if t["key"] == "dagster/partition"]
    assert sorted(tags) == sorted(partitions)
    # A run the daemon was launching when it died never starts: run monitoring fails it after
    # the start timeout and the run retries launch it again. Every partition ends materialised.
    with site.instance() as instance:
        outcomes = [_final_run(site, instance, r["runId"]) for r in runs]
    _assert_all_succeeded(site, [{"runId": run_id, "status": s} for run_id, s in outcomes])


def test_there_is_exactly_one_daemon(site: Site) -> None:
    running = site.stack.pid("daemon")
    site.stack.start_service("daemon")
    assert site.stack.pid("daemon") == running
    daemons = [p for p in Path("/proc").iterdir() if p.name.isdigit() and _is_daemon(p)]
    assert len(daemons) == 1, daemons


def _assert_all_succeeded(site: Site, runs: list[dict]) -> None:
    failed = [r["runId"] for r in runs if r["status"] != "SUCCESS"]
    if failed:
        with site.instance() as instance:
            raise AssertionError("\n".join(failures(instance, failed)))


def _submitted_runs(site: Site, backfill_id: str) -> list[dict]:
    """The backfill's runs as soon as the daemon has submitted some."""
    deadline = time.monotonic() + RUN_TIMEOUT_S
    while time.monotonic() < deadline:
        runs = site.stack.webserver.backfill(backfill_id)["runs"]
        if runs:
            return list(runs)
        time.sleep(0.5)
    raise AssertionError(f"backfill {backfill_id} submitted no run")


def _final_run(site: Site, instance: dg.DagsterInstance, run_id: str) -> tuple[str, str]:
    """The last run of `run_id`'s retry chain, and its status once it has ended."""
    while (status := site.stack.webserver.wait_for_run(run_id, RUN_TIMEOUT_S)) != "SUCCESS":
        run = instance.get_run_by_id(run_id)
        assert run is not None
        if run.tags.get("dagster/will_retry") != "true":
            return run_id, status
        run_id = _retry_of(instance, run_id)
    return run_id, status


def _retry_of(instance: dg.DagsterInstance, run_id: str) -> str:
    """The run the daemon started to retry `run_id`."""
    deadline = time.monotonic() + RUN_TIMEOUT_S
    while time.monotonic() < deadline:
        retries = instance.get_runs(filters=dg.RunsFilter(tags={"dagster/parent_run_id": run_id}))
        if retries:
            return str(retries[0].run_id)
        time.sleep(2)
    raise AssertionError(f"run {run_id} was not retried")


def _is_daemon(proc: Path) -> bool:
    try:
        command = (proc / "cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return any(part.endswith(b"dagster-daemon") for part in command[:2]) and b"run" in command


def _assert_no_duplicate_rows(site: Site) -> None:
    """Every lake table's key is unique across its files (the performance audit, recomputed
    per batch, within each file), and each table holds one file per batch it has rows for."""
    objects = site.objects("research")
    for table in PARTITION_TABLES:
        keys = sorted(k for k in objects if f"/lake/{table.name}/" in k)
        assert keys, f"no {table.name} in the lake"
        frames = [
            site.parquet("research", key).select(table.key).with_columns(pl.lit(key).alias("file"))
            for key in keys
        ]
        rows = pl.concat(frames, how="vertical_relaxed")
        per_file = table.name in ("performance_audit",)
        key = [*table.key, "file"] if per_file else list(table.key)
        duplicated = rows.filter(rows.select(key).is_duplicated())
        assert duplicated.is_empty(), f"{table.name}: {duplicated.head(3)}"


def _assert_no_orphans(site: Site) -> None:
    """Every de-identified file is one the catalogue lists, every landed file one a manifest
    lists, and no staging or temporary object is left in either zone."""
    research = site.objects("research")
    catalogued = set()
    for key in (k for k in research if "/lake/instance_catalog/" in k):
        catalogued |= set(site.parquet("research", key)["research_path"].to_list())
    dicom = {k.split("/", 1)[1] for k in research if k.split("/", 2)[1] == "dicom"}
    assert dicom == catalogued
    phi = site.objects("phi")
    landed = {k for k in phi if "/raw/" in k and not k.endswith("manifest.parquet")}
    listed = set()
    for key in (k for k in phi if k.endswith("/manifest.parquet")):
        prefix = key.rsplit("/", 1)[0]
        names = site.parquet("phi", key)["landed_path"].drop_nulls().to_list()
        listed |= {f"{prefix}/{Path(name).name}" for name in names}
    assert landed == listed
    leftovers = [k for k in {**research, **phi} if k.endswith((".tmp", ".part")) or ".staging" in k]
    assert not leftovers, leftovers
    assert not any("/inference/" in k for k in research), "inference shards left behind"
