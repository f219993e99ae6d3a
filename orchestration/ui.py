"""`make ui`: the Dagster UI (`dagster dev`) on the local instance, as one process tree that
SIGINT and SIGTERM stop however it was started.

A script's background job starts with SIGINT ignored; Python then installs no KeyboardInterrupt
handler, and `dagster dev` points SIGTERM at whatever SIGINT does, so it ignores both. This
launcher handles both signals itself (a handled signal is reset to its default in a program it
starts), runs `dagster dev` in a process group of its own, asks it to stop on the first signal
and ends whatever is left of the group.

It also keeps the operator's edits to the instance's dagster.yaml, loads the code location
under the name production uses, and hands the demo's keys only to the demo's own instance.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import FrameType

from screenlake import layout
from screenlake.errors import ConfigurationError
from screenlake.keys import PSEUDONYM_KEY_ENV
from screenlake.settings import PHI_ZONE, local_home, location, text
from screenlake.vault import VAULT_KEY_ENV

# Shipped beside this module (package data): the location is named `screenlake`.
WORKSPACE = Path(__file__).resolve().with_name("workspace.yaml")
# The checkout's top-level instance configuration, as for `make demo`.
SHIPPED_INSTANCE_CONFIG = Path("dagster.yaml")
# Settings that point screenlake at data other than the demo's synthetic export and folders.
AWAY_FROM_THE_DEMO = ("SCREENLAKE_PHI_ZONE", "SCREENLAKE_RESEARCH_ZONE", "SCREENLAKE_DROP")
DEMO_KEY_FILES = {
    PSEUDONYM_KEY_ENV: layout.DEMO_PSEUDONYM_KEY,
    VAULT_KEY_ENV: layout.DEMO_VAULT_KEY,
}
# dagster dev gives its webserver and daemon up to 60 s each to stop; most stop in seconds.
STOP_GRACE_S = 30.0
_LEFTOVER_GRACE_S = 5.0
_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def instance_home(settings: Mapping[str, str]) -> Path:
    """The local Dagster instance's folder: `dagster/` under SCREENLAKE_HOME (else var), the
    one `make demo` records its runs in."""
    return local_home(settings) / "dagster"


def install_instance_config(shipped: Path, home: Path) -> str | None:
    """Make `home`/dagster.yaml from `shipped` when it is absent; an existing one is the
    operator's and stays as it is. Returns a note to print when it differs from `shipped`."""
    target = home / "dagster.yaml"
    if not target.exists():
        if not shipped.is_file():
            raise ConfigurationError(
                f"{target} does not exist and there is no {shipped} to make it from: start "
                "from the checkout's top folder"
            )
        home.mkdir(parents=True, exist_ok=True)
        staging = target.with_name(target.name + ".tmp")
        shutil.copyfile(shipped, staging)
        os.replace(staging, target)
        return None
    if shipped.is_file() and shipped.read_bytes() != target.read_bytes():
        return (
            f"note: {_shown(target)} differs from the shipped {_shown(shipped)}; kept as it is "
            "(remove it to take the shipped one)"
        )
    return None


def away_from_the_demo(settings: Mapping[str, str]) -> list[str]:
    """The settings that point screenlake away from the demo's own instance (its synthetic
    export and the folders under SCREENLAKE_HOME); empty for the demo's."""
    found = [name for name in AWAY_FROM_THE_DEMO if text(settings, name)]
    if text(settings, "SCREENLAKE_ENV").lower() == "production":
        found.insert(0, "SCREENLAKE_ENV=production")
    source = text(settings, "SCREENLAKE_PACS").lower()
    if source and source != "drop":
        found.append(f"SCREENLAKE_PACS={source}")
    return found


def keys_for_ui(settings: Mapping[str, str]) -> tuple[dict[str, str], str | None]:
    """The key variables to add to the UI's environment, and a line to print about them.

    Keys set in `settings` are used as they are. An unset key is taken from the demo's key files
    only for the demo's own instance; anywhere else this raises naming the variables to set,
    since a key made for synthetic data must never pseudonymise patients.
    """
    missing = [name for name in DEMO_KEY_FILES if not text(settings, name)]
    if not missing:
        return {}, None
    to_set = " and ".join(missing)
    away = away_from_the_demo(settings)
    if away:
        raise ConfigurationError(
            f"set {to_set} before starting the UI: with {', '.join(away)} set, this is not the "
            "demo's own instance, and the demo's keys are for its synthetic data only (README, "
            "Two commands: make ui)"
        )
    phi_zone = Path(location(settings, PHI_ZONE))
    keys: dict[str, str] = {}
    for name in missing:
        path = phi_zone / DEMO_KEY_FILES[name]
        value = path.read_text(encoding="ascii").strip() if path.is_file() else ""
        if not value:
            raise ConfigurationError(
                f"{name} is not set and the demo has made no key in {_shown(path.parent)}: run "
                f"`make demo` first, or set {to_set}"
            )
        keys[name] = value
    folder = _shown((phi_zone / DEMO_KEY_FILES[missing[0]]).parent)
    return keys, (
        f"using the demo's keys from {folder} for {to_set}: they are for synthetic data only"
    )


def dagster_dev_command(host: str, port: int) -> list[str]:
    """`dagster dev` on the shipped workspace (the code location is named `screenlake`)."""
    return [
        *(sys.executable, "-m", "dagster", "dev", "-w", str(WORKSPACE)),
        *("-h", host, "-p", str(port)),
    ]


def serve(command: Sequence[str], env: Mapping[str, str], grace_s: float = STOP_GRACE_S) -> int:
    """Run `command` in a process group of its own until it exits, or until this process gets
    SIGINT or SIGTERM: then `command` gets SIGINT (its own orderly stop), a second signal sends
    SIGTERM to its whole group, and whatever of the group is left after `grace_s` seconds is
    killed. Returns 0 when stopped on request, else the command's exit status."""
    requested: list[int] = []

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        requested.append(signum)

    previous = {sig: signal.signal(sig, on_signal) for sig in _STOP_SIGNALS}
    child: subprocess.Popen[bytes] | None = None
    try:
        # The child's own group: a terminal's Ctrl-C reaches this process only, so `dagster dev`
        # gets one SIGINT (a second one would cut its orderly stop short).
        child = subprocess.Popen(
            list(command), env=dict(env), stdin=subprocess.DEVNULL, process_group=0
        )
        asked, deadline = 0, float("inf")
        while child.poll() is None:
            if len(requested) > asked:
                asked = len(requested)
                if asked == 1:
                    child.send_signal(signal.SIGINT)
                    deadline = time.monotonic() + grace_s
                else:
                    _signal_group(child.pid, signal.SIGTERM)
            elif time.monotonic() > deadline:
                _signal_group(child.pid, signal.SIGKILL)
            try:
                child.wait(timeout=0.2)
            except subprocess.TimeoutExpired:
                pass
    finally:
        if child is not None:
            _end_leftovers(child)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0 if requested else _exit_status(child.returncode)


def _end_leftovers(child: subprocess.Popen[bytes]) -> None:
    """Processes of the child's group that outlived it (a code server whose parent was killed)
    get SIGTERM, then SIGKILL."""
    if child.poll() is None:
        _signal_group(child.pid, signal.SIGKILL)
        child.wait()
    if not _signal_group(child.pid, signal.SIGTERM):
        return
    deadline = time.monotonic() + _LEFTOVER_GRACE_S
    while time.monotonic() < deadline and _group_alive(child.pid):
        time.sleep(0.1)
    _signal_group(child.pid, signal.SIGKILL)


def _group_alive(pgid: int) -> bool:
    """Whether a live (not zombie) process is in group `pgid`; an orphan's zombie waits for an
    init that may be slow to reap it and must not hold us up."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text(encoding="ascii").rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError, UnicodeDecodeError):
            continue
        if int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
            return True
    return False


def _signal_group(pgid: int, sig: int) -> bool:
    """Send `sig` to group `pgid`; whether the group still had a process."""
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        return False
    return True


def _exit_status(returncode: int) -> int:
    return 128 - returncode if returncode < 0 else returncode


def _shown(path: Path) -> str:
    """`path` relative to the current folder when it lies under it, else absolute."""
    absolute = path.resolve()
    try:
        return str(absolute.relative_to(Path.cwd()))
    except ValueError:
        return str(absolute)


def main(argv: Sequence[str] | None = None) -> int:
    """Check the keys, prepare the instance, run the UI until it exits or is told to stop."""
    parser = argparse.ArgumentParser(prog="python -m orchestration.ui", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=3000)
    args = parser.parse_args(argv)
    settings = dict(os.environ)
    home = instance_home(settings)
    try:
        keys, said = keys_for_ui(settings)
        note = install_instance_config(SHIPPED_INSTANCE_CONFIG, home)
    except ConfigurationError as error:
        print(f"make ui: {error}", file=sys.stderr)
        return 2
    for line in (said, note):
        if line:
            print(line, flush=True)
    print(
        f"the Dagster instance: {_shown(home)}; the UI: http://{args.host}:{args.port}", flush=True
    )
    return serve(
        dagster_dev_command(args.host, args.port), {**settings, **keys, "DAGSTER_HOME": str(home)}
    )


if __name__ == "__main__":
    sys.exit(main())
