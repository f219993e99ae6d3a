"""The webserver's GraphQL API, as the Dagster UI uses it: launching backfills and following
runs, for `make stack`, the deployment tests and the backfill benchmark."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import requests

LOCATION, REPOSITORY = "screenlake", "__repository__"
TERMINAL = frozenset({"SUCCESS", "FAILURE", "CANCELED"})

_LAUNCH_BACKFILL = """
mutation($params: LaunchBackfillParams!) {
  launchPartitionBackfill(backfillParams: $params) {
    __typename
    ... on LaunchBackfillSuccess { backfillId }
    ... on PythonError { message }
    ... on InvalidStepError { invalidStepKey }
    ... on InvalidOutputError { invalidOutputName }
    ... on PartitionSetNotFoundError { message }
    ... on UnauthorizedError { message }
  }
}"""
_BACKFILL = """
query($id: String!) {
  partitionBackfillOrError(backfillId: $id) {
    __typename
    ... on PartitionBackfill { id status runs(limit: 1000) { runId status tags { key value } } }
    ... on PythonError { message }
  }
}"""
_LAUNCH_RUN = """
mutation($params: ExecutionParams!) {
  launchRun(executionParams: $params) {
    __typename
    ... on LaunchRunSuccess { run { runId } }
    ... on PythonError { message }
    ... on RunConfigValidationInvalid { errors { message } }
    ... on PipelineNotFoundError { message }
  }
}"""
_REEXECUTE = """
mutation($params: ReexecutionParams!) {
  launchRunReexecution(reexecutionParams: $params) {
    __typename
    ... on LaunchRunSuccess { run { runId } }
    ... on PythonError { message }
  }
}"""
_RUN = """
query($id: ID!) { runOrError(runId: $id) { __typename ... on Run { runId status } } }"""
_WORKSPACE = """
{ workspaceOrError { __typename ... on Workspace { locationEntries {
    name loadStatus locationOrLoadError { __typename ... on PythonError { message } } } } } }"""
_DAEMONS = """
{ instance { daemonHealth { allDaemonStatuses { daemonType required healthy } } } }"""


class GraphQLError(RuntimeError):
    """The webserver answered with an error."""


@dataclass(frozen=True)
class Webserver:
    """A Dagster webserver at `url` (e.g. http://127.0.0.1:3000)."""

    url: str

    def query(self, document: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
        """Run one GraphQL document; its `data`, or raise with the errors."""
        answer = requests.post(
            f"{self.url}/graphql",
            json={"query": document, "variables": variables or {}},
            timeout=60,
        )
        answer.raise_for_status()
        body = answer.json()
        if body.get("errors"):
            raise GraphQLError(str(body["errors"]))
        return dict(body["data"])

    def answers(self) -> bool:
        """Whether the webserver serves requests."""
        try:
            return requests.get(f"{self.url}/server_info", timeout=2).status_code == 200
        except requests.ConnectionError:
            return False

    def location_loaded(self) -> bool:
        """Whether the screenlake code location is loaded; raises if it failed to load."""
        data = self.query(_WORKSPACE)["workspaceOrError"]
        for entry in data.get("locationEntries", []):
            if entry["name"] != LOCATION:
                continue
            loaded = entry["locationOrLoadError"] or {}
            if loaded.get("__typename") == "PythonError":
                if "DagsterUserCodeUnreachableError" in loaded["message"]:
                    return False  # the code server is still starting
                raise GraphQLError(f"the code location failed to load: {loaded['message']}")
            return bool(entry["loadStatus"] == "LOADED" and loaded)
        return False

    def daemons_healthy(self) -> bool:
        """Whether every daemon the instance requires sends heartbeats."""
        statuses = self.query(_DAEMONS)["instance"]["daemonHealth"]["allDaemonStatuses"]
        return all(status["healthy"] for status in statuses if status["required"])

    def launch_backfill(self, job: str, partitions: Sequence[str]) -> str:
        """Launch a backfill of `job` over `partitions` as the UI's launch dialog does; its id."""
        params = {
            "selector": {
                "partitionSetName": f"{job}_partition_set",
                "repositorySelector": {
                    "repositoryName": REPOSITORY,
                    "repositoryLocationName": LOCATION,
                },
            },
            "partitionNames": list(partitions),
            "fromFailure": False,
        }
        result = self.query(_LAUNCH_BACKFILL, {"params": params})["launchPartitionBackfill"]
        if result["__typename"] != "LaunchBackfillSuccess":
            raise GraphQLError(f"backfill not launched: {result}")
        return str(result["backfillId"])

    def launch_partition_run(self, job: str, partition: str) -> str:
        """Launch one partition's run as the UI's launchpad does (no backfill daemon tick); its
        id. `partition` is a `date|programme` key."""
        day, programme = partition.split("|")
        tags = {
            "dagster/partition": partition,
            "dagster/partition/date": day,
            "dagster/partition/programme": programme,
        }
        params = {
            "selector": {
                "jobName": job,
                "repositoryName": REPOSITORY,
                "repositoryLocationName": LOCATION,
            },
            "executionMetadata": {"tags": [{"key": k, "value": v} for k, v in tags.items()]},
        }
        result = self.query(_LAUNCH_RUN, {"params": params})["launchRun"]
        if result["__typename"] != "LaunchRunSuccess":
            raise GraphQLError(f"run not launched: {result}")
        return str(result["run"]["runId"])

    def backfill(self, backfill_id: str) -> dict[str, Any]:
        """The backfill's status and its runs (run id, status, tags)."""
        result = self.query(_BACKFILL, {"id": backfill_id})["partitionBackfillOrError"]
        if result["__typename"] != "PartitionBackfill":
            raise GraphQLError(f"no backfill {backfill_id}: {result}")
        return dict(result)

    def reexecute(self, run_id: str, strategy: str = "ALL_STEPS") -> str:
        """Re-execute a run as the UI's "Re-execute" button does; the new run's id."""
        params = {"parentRunId": run_id, "strategy": strategy}
        result = self.query(_REEXECUTE, {"params": params})["launchRunReexecution"]
        if result["__typename"] != "LaunchRunSuccess":
            raise GraphQLError(f"run {run_id} not re-executed: {result}")
        return str(result["run"]["runId"])

    def run_status(self, run_id: str) -> str:
        """A run's status: QUEUED, STARTED, SUCCESS, FAILURE..."""
        result = self.query(_RUN, {"id": run_id})["runOrError"]
        if result["__typename"] != "Run":
            raise GraphQLError(f"no run {run_id}: {result}")
        return str(result["status"])

    def wait_for_backfill(self, backfill_id: str, runs: int, timeout_s: float) -> list[dict]:
        """The backfill's runs once it has finished and at least `runs` of them have ended."""
        deadline = time.monotonic() + timeout_s
        while True:
            backfill = self.backfill(backfill_id)
            ended = [r for r in backfill["runs"] if r["status"] in TERMINAL]
            if backfill["status"] != "REQUESTED" and len(ended) >= runs:
                return list(backfill["runs"])
            if time.monotonic() > deadline:
                raise TimeoutError(f"backfill {backfill_id} not done in {timeout_s:.0f} s")
            time.sleep(2)

    def wait_for_run(self, run_id: str, timeout_s: float) -> str:
        """A run's final status, once it has one."""
        deadline = time.monotonic() + timeout_s
        while True:
            status = self.run_status(run_id)
            if status in TERMINAL:
                return status
            if time.monotonic() > deadline:
                raise TimeoutError(f"run {run_id} still {status} after {timeout_s:.0f} s")
            time.sleep(2)
