"""Step processes of the default executor fork from a server that imported the code location
once, instead of each starting Python and importing it again.

This module imports nothing of the code location itself, so that a step finds
`orchestration.definitions` loaded only if the forkserver preloaded it.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import dagster as dg

from orchestration.executors import executor_for


@dg.op
def where_the_step_runs() -> dict[str, object]:
    return {
        "pid": os.getpid(),
        "parent": os.getppid(),
        "code_location_loaded": "orchestration.definitions" in sys.modules,
    }


@dg.job(executor_def=executor_for({}))
def probe() -> None:
    where_the_step_runs()


def _probe() -> dg.JobDefinition:
    return probe


def test_steps_fork_from_a_server_that_preloaded_the_code_location(tmp_path: Path) -> None:
    with (
        dg.instance_for_test(temp_dir=str(tmp_path)) as instance,
        dg.execute_job(dg.reconstructable(_probe), instance=instance) as result,
    ):
        assert result.success
        step = result.output_for_node("where_the_step_runs")
    assert step["pid"] != os.getpid()
    # Not a child of the run's process: a child of the forkserver it started.
    assert step["parent"] != os.getpid()
    assert step["code_location_loaded"] is True
