"""Worker processes that cannot outlive the process that started them.

A process killed with SIGKILL has no chance to stop its children, and an orphaned worker keeps
its CPU, its memory and its files open, or goes on writing after its run ended. On Linux the
kernel stops them instead: each child asks, when it starts, for SIGKILL on its parent's death
(PR_SET_PDEATHSIG). The de-identification pool, the inference loader's workers and a step
process under its run worker ask for it; elsewhere it is a no-op.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys

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


def loader_worker_init(parent_pid: int, worker_id: int) -> None:
    """A DataLoader's `worker_init_fn` (with `functools.partial(loader_worker_init, os.getpid())`):
    torch's own watchdog notices a dead parent only every few seconds, between work units."""
    die_with_parent(parent_pid)
