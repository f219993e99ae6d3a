"""Processes that die with their parent: real processes, killed by process id."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="prctl is Linux's")

REPO = Path(__file__).resolve().parents[2]
# A parent that starts a child; the child asks to die with it (or not) and waits.
_PARENT = """
import os, subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c", sys.argv[1], str(os.getpid())])
print(child.pid, flush=True)
time.sleep(120)
"""
_CHILD = """
import sys, time
from screenlake.lifeline import die_with_parent
{call}
print("ready", flush=True)
time.sleep(120)
"""


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def _child_after_parent_killed(call: str) -> bool:
    """Whether the child is still running a second after its parent was killed."""
    child_code = _CHILD.format(call=call)
    parent = subprocess.Popen(
        [sys.executable, "-c", _PARENT, child_code], cwd=REPO, stdout=subprocess.PIPE, text=True
    )
    assert parent.stdout is not None
    child = int(parent.stdout.readline())
    try:
        assert parent.stdout.readline().strip() == "ready"
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait(timeout=10)
        deadline = time.monotonic() + 1.0
        while _alive(child) and time.monotonic() < deadline:
            time.sleep(0.01)
        return _alive(child)
    finally:
        if _alive(child):
            os.kill(child, signal.SIGKILL)


def test_a_child_that_asked_dies_with_its_parent() -> None:
    assert not _child_after_parent_killed("die_with_parent(int(sys.argv[1]))")


def test_a_child_that_did_not_ask_outlives_its_parent() -> None:
    # The counter-test: what the pools and steps did before they asked.
    assert _child_after_parent_killed("pass")


def test_a_child_whose_parent_is_already_gone_dies_at_once() -> None:
    # The parent died before the child asked: the kernel has nothing left to watch.
    code = "from screenlake.lifeline import die_with_parent; die_with_parent(os.getppid() + 1)"
    done = subprocess.run(
        [sys.executable, "-c", f"import os; {code}"], check=False, cwd=REPO, timeout=30
    )
    assert done.returncode == -signal.SIGKILL
