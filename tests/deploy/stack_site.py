"""A site on loopback for the deployment tests: the production-shaped stack (PostgreSQL, Redis,
code server, daemon, webserver, two Celery workers) with both zones in a real S3 server (moto)
and a synthetic export drop, plus what the tests read back: runs, step events, lake tables and
the objects in each zone."""

from __future__ import annotations

import os
import re
import time
from collections import defaultdict
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path
from typing import Any
from unittest import mock

import dagster as dg
import polars as pl
import yaml

from screenlake.devservers.s3 import S3Server
from screenlake.devservers.stack import Stack, Worker

REPO = Path(__file__).resolve().parents[2]
BUCKETS = {"phi": "hospital-phi", "research": "hospital-research"}
CPU, GPU = Worker("dagster", "cpu"), Worker("gpu", "gpu")


def quicker_monitoring(stack: Stack) -> None:
    """The stack's instance as deploy/dagster.yaml has it, but with run monitoring looking
    every 5 s and failing a run that has not started after 60 s (5 minutes in production, where
    a pod may wait for its image): an operator's edit, which the stack keeps."""
    config = yaml.safe_load((REPO / "deploy" / "dagster.yaml").read_text(encoding="utf-8"))
    config["run_monitoring"].update({"start_timeout_seconds": 60, "poll_interval_seconds": 5})
    home = Path(stack.state["DAGSTER_HOME"])
    home.mkdir(parents=True, exist_ok=True)
    (home / "dagster.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")


def site_settings(root: Path, s3: S3Server, keys: Mapping[str, str]) -> dict[str, str]:
    """A production site's settings: every location named, both zones in object storage with
    their own credentials, the reference models, the drop a folder."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SCREENLAKE_", "DAGSTER_"))}
    env.update(keys)
    env.update(
        {
            "SCREENLAKE_ENV": "production",
            "SCREENLAKE_DROP": str(root / "drop"),
            "SCREENLAKE_PHI_ZONE": f"s3://{BUCKETS['phi']}/zone",
            "SCREENLAKE_RESEARCH_ZONE": f"s3://{BUCKETS['research']}/zone",
            "SCREENLAKE_PHI_ZONE_WORKING_COPY": str(root / "work" / "phi"),
            "SCREENLAKE_RESEARCH_ZONE_WORKING_COPY": str(root / "work" / "research"),
            "SCREENLAKE_S3_ENDPOINT": s3.endpoint,
            "SCREENLAKE_PHI_ZONE_S3_ACCESS_KEY_ID": "PHIKEY",
            "SCREENLAKE_PHI_ZONE_S3_SECRET_ACCESS_KEY": "phi-secret",
            "SCREENLAKE_RESEARCH_ZONE_S3_ACCESS_KEY_ID": "RESEARCHKEY",
            "SCREENLAKE_RESEARCH_ZONE_S3_SECRET_ACCESS_KEY": "research-secret",
            "SCREENLAKE_MODELS": "bundled",
            # Steps start processes of their own inside the workers: de-identification on every
            # core, and a DataLoader process beside the model.
            "SCREENLAKE_INFER_WORKERS": "1",
            # Short, so that a step lost with its worker comes back within the test; every
            # step here takes a few seconds.
            "SCREENLAKE_CELERY_VISIBILITY_TIMEOUT": "30",
        }
    )
    return env


@dataclass
class Site:
    """The running stack, its S3 server and a boto3 client for reading the zones back."""

    stack: Stack
    s3: S3Server
    client: Any

    @contextmanager
    def instance(self) -> Iterator[dg.DagsterInstance]:
        """The stack's Dagster instance (PostgreSQL), opened as its processes open it."""
        with mock.patch.dict(os.environ, self.stack.env()), dg.DagsterInstance.get() as instance:
            yield instance

    def wait_for_step_start(self, run_id: str, step_key: str, timeout_s: float) -> None:
        """Until `step_key` has started in the run."""
        deadline = time.monotonic() + timeout_s
        with self.instance() as instance:
            while time.monotonic() < deadline:
                if step_key in step_starts(instance, run_id):
                    return
                time.sleep(0.3)
        raise AssertionError(f"{step_key} did not start in run {run_id}")

    def objects(self, zone: str) -> dict[str, int]:
        """Every object in a zone's bucket: key -> size."""
        pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=BUCKETS[zone])
        return {o["Key"]: o["Size"] for page in pages for o in page.get("Contents", [])}

    def parquet(self, zone: str, key: str) -> pl.DataFrame:
        """One Parquet object of a zone."""
        body = self.client.get_object(Bucket=BUCKETS[zone], Key=key)["Body"].read()
        return pl.read_parquet(BytesIO(body))


def step_starts(instance: dg.DagsterInstance, run_id: str) -> list[str]:
    """The step keys of a run's STEP_START events, one per start (a step run twice: twice)."""
    records = instance.get_records_for_run(
        run_id, of_type=dg.DagsterEventType.STEP_START, limit=1000
    ).records
    return [r.event_log_entry.step_key or "" for r in records]


def celery_workers_by_step(instance: dg.DagsterInstance, run_ids: list[str]) -> dict[str, set]:
    """Step key -> the Celery workers that executed it, from the workers' own engine events."""
    workers: dict[str, set] = defaultdict(set)
    for run_id in run_ids:
        records = instance.get_records_for_run(
            run_id, of_type=dg.DagsterEventType.ENGINE_EVENT, limit=5000
        ).records
        for record in records:
            event = record.event_log_entry.dagster_event
            data = event.engine_event_data if event else None
            if data and "Celery worker" in data.metadata:
                workers[record.event_log_entry.step_key or ""].add(
                    data.metadata["Celery worker"].value
                )
    return workers


def run_worker_pid(instance: dg.DagsterInstance, run_id: str) -> int:
    """The process id of the run's worker (the process the code server started for it)."""
    records = instance.get_records_for_run(
        run_id, of_type=dg.DagsterEventType.ENGINE_EVENT, limit=100
    ).records
    for record in records:
        found = re.search(r"Started process for run \(pid: (\d+)\)", record.event_log_entry.message)
        if found:
            return int(found.group(1))
    raise AssertionError(f"run {run_id} has not started its process")


def failures(instance: dg.DagsterInstance, run_ids: list[str]) -> list[str]:
    """What went wrong in each failed run: its step and run failure messages with errors."""
    found = []
    for run_id in run_ids:
        for record in instance.get_records_for_run(run_id, limit=5000).records:
            event = record.event_log_entry.dagster_event
            if event is None or event.event_type not in (
                dg.DagsterEventType.STEP_FAILURE,
                dg.DagsterEventType.RUN_FAILURE,
            ):
                continue
            error = getattr(event.event_specific_data, "error", None)
            detail = error.to_string()[:1500] if error else ""
            found.append(f"{run_id} {event.step_key}: {event.message}\n{detail}")
    return found
