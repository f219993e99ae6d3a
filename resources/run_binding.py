"""A step bound to its run: its process dies with the run worker that started it, and it
publishes nothing once its run has ended.

The zones bind each step when it sets them up (every step uses a zone), and check the run
before a table's rows are published (`assets._shared.write_batch_table`).
"""

from __future__ import annotations

import multiprocessing
import os
import signal

import dagster as dg

from screenlake.errors import RunEndedError
from screenlake.lifeline import die_with_parent, die_with_sentinel

_ENDED = (
    dg.DagsterRunStatus.SUCCESS,
    dg.DagsterRunStatus.FAILURE,
    dg.DagsterRunStatus.CANCELING,
    dg.DagsterRunStatus.CANCELED,
)
# Runs this process has bound itself to: each zone of a step sets up, one look is enough.
_bound: set[str] = set()


def bind_step(instance: dg.DagsterInstance, run_id: str) -> None:
    """Have this process killed with its run worker when it is a step process that the run
    worker started (Dagster's multiprocess executor): a step without its run worker would go on
    writing, and record materialisations, for a run that nobody runs any more.

    Dagster records STEP_WORKER_STARTED from each step that runs in a process of its own; one
    that is also a multiprocessing child was started by the run worker (or its forkserver). A
    step that runs inside the run worker (the in-process executor) is left alone: that
    process's parent is the code server or daemon that launched it, which may restart while
    the run goes on. Celery and Kubernetes steps have no such parent: the end of their run
    reaches them through `require_run_in_progress`.
    """
    parent = multiprocessing.parent_process()
    if parent is None or run_id in _bound:
        return
    _bound.add(run_id)
    started = instance.get_records_for_run(
        run_id, of_type=dg.DagsterEventType.STEP_WORKER_STARTED
    ).records
    pids = {r.event_log_entry.dagster_event.pid for r in started if r.event_log_entry.dagster_event}
    if os.getpid() not in pids:
        return
    if parent.pid == os.getppid():
        die_with_parent(parent.pid)
    else:  # forked by the run worker's forkserver: its parent is that server
        die_with_sentinel(parent.sentinel)
    if not parent.is_alive():  # the run worker died before the signal was asked for
        os.kill(os.getpid(), signal.SIGKILL)


def require_run_in_progress(instance: dg.DagsterInstance, run_id: str) -> None:
    """Raise RunEndedError when the run has ended or is being canceled (run monitoring fails a
    run whose worker died): what a step still working for it would publish, nobody asked for."""
    run = instance.get_run_by_id(run_id)
    if run is not None and run.status in _ENDED:
        raise RunEndedError(
            f"run {run_id} is {run.status.value}: this step stops before publishing; "
            "re-execute the partition"
        )
