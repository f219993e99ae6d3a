"""Stopping a throwaway server by its process id."""

from __future__ import annotations

import subprocess

_KILL_TIMEOUT_S = 10.0


def stop_process(process: subprocess.Popen[bytes] | None, grace_s: float) -> None:
    """Terminate `process`, then kill it if it lingers past `grace_s` seconds."""
    if process is None or process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=_KILL_TIMEOUT_S)
