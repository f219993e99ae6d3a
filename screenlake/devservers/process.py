"""Starting throwaway servers and services, and stopping them by their process id."""

from __future__ import annotations

import os
import pwd
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

_KILL_TIMEOUT_S = 10.0


def free_port() -> int:
    """A TCP port free on loopback right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


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


def start_detached(
    args: Sequence[str],
    log: Path,
    pid_file: Path,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    user: str | None = None,
) -> subprocess.Popen[bytes]:
    """Start `args` in a session of its own (so that it and its children outlive the caller and
    can be stopped together), output to `log`, its process id in `pid_file`; as `user` when
    given (the caller being root)."""
    account = pwd.getpwnam(user) if user else None
    with log.open("ab") as out:
        process = subprocess.Popen(
            list(args),
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=dict(env) if env is not None else None,
            cwd=cwd,
            start_new_session=True,
            user=account.pw_uid if account else None,
            group=account.pw_gid if account else None,
        )
    pid_file.parent.mkdir(parents=True, exist_ok=True)
    pid_file.write_text(f"{process.pid}\n", encoding="ascii")
    return process


def is_running(pid: int) -> bool:
    """Whether `pid` is alive (a zombie is not): reaps it if it is our own child."""
    try:
        if os.waitpid(pid, os.WNOHANG)[0] == pid:
            return False
    except ChildProcessError:
        pass
    try:
        state = Path(f"/proc/{pid}/stat").read_text(encoding="ascii").rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state not in ("Z", "X")


def recorded_pid(pid_file: Path) -> int | None:
    """The process id `pid_file` records, if that process is alive."""
    try:
        pid = int(pid_file.read_text(encoding="ascii").strip())
    except FileNotFoundError:
        return None
    return pid if is_running(pid) else None


def stop_pid_file(pid_file: Path, grace_s: float, first: int = signal.SIGTERM) -> bool:
    """Stop the process group whose leader's id `pid_file` holds: `first` signal, then SIGKILL
    after `grace_s` seconds. Returns whether a process was running; removes the file."""
    try:
        pid = int(pid_file.read_text(encoding="ascii").strip())
    except FileNotFoundError:
        return False
    was_running = is_running(pid)
    if was_running:
        _signal_group(pid, first)
        deadline = time.monotonic() + grace_s
        while is_running(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        if is_running(pid):
            _signal_group(pid, signal.SIGKILL)
            deadline = time.monotonic() + _KILL_TIMEOUT_S
            while is_running(pid) and time.monotonic() < deadline:
                time.sleep(0.1)
    # Children left in the group (a leader killed before them) go too.
    _signal_group(pid, signal.SIGKILL)
    pid_file.unlink(missing_ok=True)
    return was_running


def _signal_group(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def wait_until(
    ready: Callable[[], bool],
    what: str,
    timeout_s: float,
    process: subprocess.Popen[bytes],
    log: Path,
) -> None:
    """Poll `ready()` until it is true; raise naming `what` and its log if the process exits or
    the time runs out."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited at start (code {process.returncode}); see {log}")
        if ready():
            return
        time.sleep(0.2)
    raise RuntimeError(f"{what} was not ready after {timeout_s:.0f} s; see {log}")
