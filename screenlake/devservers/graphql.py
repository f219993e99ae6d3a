"""The webserver's GraphQL API, as the Dagster UI uses it: launching backfills and following
runs, for `make stack`, the deployment tests and the backfill benchmark."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import requests

LOCATION, REPOSITORY = "screenlake", "__repository__"

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

    def backfill(self, backfill_id: str) -> dict[str, Any]:
        """The backfill's status and its runs (run id, status, tags)."""
        result = self.query(_BACKFILL, {"id": backfill_id})["partitionBackfillOrError"]
        if result["__typename"] != "PartitionBackfill":
            raise GraphQLError(f"no backfill {backfill_id}: {result}")
        return dict(result)
