"""Worker processes that cannot outlive the process that started them.

A process killed with SIGKILL has no chance to stop its children, and an orphaned worker keeps
its CPU, its memory and its files open, or goes on writing after its run ended. On Linux the
kernel stops them instead: each child asks, when it starts, for SIGKILL on its parent's death
(PR_SET_PDEATHSIG). The de-identification pool, the inference loader's workers and a step
process under its run worker ask for it; elsewhere it is a no-op.
"""

from __future__ import annotations

import ctypes
import multiprocessing
import multiprocessing.connection
import os
import signal
import sys
import threading
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from typing import Any

_PR_SET_PDEATHSIG = 1


def die_with_parent(parent_pid: int) -> None:
    """Have the kernel SIGKILL this process when its parent dies; if its parent is no longer
    `parent_pid` (it died before this call, and the process was handed to another), die now.

    The kernel watches the thread that started this process, not the whole parent: start
    workers from a thread that lives as long as the parent (its main thread).
    """
    if not sys.platform.startswith("linux"):
        return
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
        error = ctypes.get_errno()
        raise OSError(error, f"prctl(PR_SET_PDEATHSIG): {os.strerror(error)}")
    if os.getppid() != parent_pid:
        os.kill(os.getpid(), signal.SIGKILL)


def die_with_sentinel(sentinel: int) -> None:
    """Kill this process when `sentinel` (a multiprocessing parent's sentinel) says that its
    process has ended: for a process whose parent in the kernel's eyes is not the one it serves,
    as a child of a forkserver serves the process that asked the forkserver for it (the
    forkserver outlives that process while any of its children runs, so its death signal
    would never come)."""

    def watch() -> None:
        multiprocessing.connection.wait([sentinel])
        os.kill(os.getpid(), signal.SIGKILL)

    threading.Thread(target=watch, name="die-with-sentinel", daemon=True).start()


def loader_worker_init(parent_pid: int, worker_id: int) -> None:
    """A DataLoader's `worker_init_fn` (with `functools.partial(loader_worker_init, os.getpid())`):
    torch's own watchdog notices a dead parent only every few seconds, between work units."""
    die_with_parent(parent_pid)


def bound_pool(
    workers: int, initializer: Callable[..., None] = die_with_parent, initargs: tuple[Any, ...] = ()
) -> ProcessPoolExecutor:
    """A process pool whose workers die with this process: `initializer` (which must call
    `die_with_parent(initargs[0])`) runs first in each, given this process's ID first.

    Workers start as this process's default starts processes, except under a forkserver (a
    step of Dagster's multiprocess executor): there they are spawned, since the forkserver would
    otherwise start them, and they would be its children, not this process's.
    """
    method = multiprocessing.get_start_method()
    return ProcessPoolExecutor(
        max_workers=workers,
        mp_context=multiprocessing.get_context("spawn" if method == "forkserver" else method),
        initializer=initializer,
        initargs=(os.getpid(), *initargs),
    )
