from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml

from orchestration.ui import WORKSPACE, install_instance_config, keys_for_ui, main, serve
from screenlake.devservers.graphql import LOCATION, Webserver
from screenlake.devservers.process import free_port, is_running, wait_until
from screenlake.errors import ConfigurationError

REPO = Path(__file__).resolve().parents[2]
KEYS = ("SCREENLAKE_PSEUDONYM_KEY", "SCREENLAKE_VAULT_KEY")
_START_TIMEOUT_S = 240.0
# The launcher gives dagster dev 30 s, then ends its process group; a few seconds more to see it.
_STOP_BOUND_S = 45.0
_LOCATIONS = "{ workspaceOrError { ... on Workspace { locationEntries { name } } } }"
# What a non-interactive shell does to a background job: the program starts with SIGINT ignored.
_AS_A_SCRIPT_STARTS_IT = (
    "import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_IGN); "
    "os.execv(sys.executable, [sys.executable, *sys.argv[1:]])"
)


def _demo_keys(home: Path) -> Path:
    """The key files `make demo` leaves in the PHI zone under SCREENLAKE_HOME `home`."""
    folder = home / "phi" / "keys"
    folder.mkdir(parents=True)
    (folder / "pseudonym.key").write_text("p" * 64 + "\n", encoding="ascii")
    (folder / "vault.key").write_text("v" * 44 + "\n", encoding="ascii")
    return folder


# --- the instance's dagster.yaml -------------------------------------------------------------


def test_the_instance_config_is_made_once_and_an_edited_one_is_kept(tmp_path: Path) -> None:
    shipped = tmp_path / "dagster.yaml"
    shipped.write_text("telemetry:\n  enabled: false\n", encoding="utf-8")
    home = tmp_path / "var" / "dagster"
    assert install_instance_config(shipped, home) is None
    assert (home / "dagster.yaml").read_bytes() == shipped.read_bytes()
    assert install_instance_config(shipped, home) is None

    edited = "telemetry:\n  enabled: false\nrun_monitoring:\n  enabled: true\n"
    (home / "dagster.yaml").write_text(edited, encoding="utf-8")
    note = install_instance_config(shipped, home)
    assert note is not None and "differs from the shipped" in note and "kept" in note
    assert (home / "dagster.yaml").read_text(encoding="utf-8") == edited


def test_without_a_shipped_config_an_absent_instance_config_is_a_clear_error(
    tmp_path: Path,
) -> None:
    with pytest.raises(ConfigurationError, match="checkout's top folder"):
        install_instance_config(tmp_path / "dagster.yaml", tmp_path / "dagster")


# --- which keys the UI gets -------------------------------------------------------------------


def test_keys_set_in_the_environment_are_used_as_they_are(tmp_path: Path) -> None:
    settings = {"SCREENLAKE_ENV": "production", **{k: "set" for k in KEYS}}
    assert keys_for_ui(settings) == ({}, None)


def test_the_demos_own_instance_gets_the_demos_keys_and_says_so(tmp_path: Path) -> None:
    _demo_keys(tmp_path)
    keys, said = keys_for_ui({"SCREENLAKE_HOME": str(tmp_path), "SCREENLAKE_PACS": "drop"})
    assert keys == {"SCREENLAKE_PSEUDONYM_KEY": "p" * 64, "SCREENLAKE_VAULT_KEY": "v" * 44}
    assert said is not None
    assert f"using the demo's keys from {(tmp_path / 'phi' / 'keys').resolve()}" in said
    assert "synthetic data only" in said


def test_the_demos_instance_without_demo_keys_says_to_run_the_demo(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="run `make demo` first"):
        keys_for_ui({"SCREENLAKE_HOME": str(tmp_path)})


@pytest.mark.parametrize(
    ("setting", "value"),
    [
        ("SCREENLAKE_ENV", "production"),
        ("SCREENLAKE_PHI_ZONE", "/srv/phi"),
        ("SCREENLAKE_RESEARCH_ZONE", "s3://research/screenlake"),
        ("SCREENLAKE_DROP", "/mnt/pacs-export"),
        ("SCREENLAKE_PACS", "dicomweb"),
    ],
)
def test_anywhere_but_the_demos_instance_unset_keys_are_refused(
    tmp_path: Path, setting: str, value: str
) -> None:
    _demo_keys(tmp_path)  # present, and still not to be used
    settings = {"SCREENLAKE_HOME": str(tmp_path), setting: value}
    with pytest.raises(ConfigurationError) as refused:
        keys_for_ui(settings)
    message = str(refused.value)
    assert message.startswith("set SCREENLAKE_PSEUDONYM_KEY and SCREENLAKE_VAULT_KEY")
    assert setting in message and "synthetic data only" in message


def test_only_the_unset_key_is_named(tmp_path: Path) -> None:
    settings = {"SCREENLAKE_PHI_ZONE": "/srv/phi", "SCREENLAKE_PSEUDONYM_KEY": "set"}
    with pytest.raises(ConfigurationError, match=r"^set SCREENLAKE_VAULT_KEY before"):
        keys_for_ui(settings)


def test_the_launcher_refuses_before_starting_anything(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in KEYS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("SCREENLAKE_HOME", str(tmp_path))
    monkeypatch.setenv("SCREENLAKE_PHI_ZONE", str(tmp_path / "phi"))
    monkeypatch.chdir(REPO)
    assert main(["--port", str(free_port())]) == 2
    assert (
        "make ui: set SCREENLAKE_PSEUDONYM_KEY and SCREENLAKE_VAULT_KEY" in capsys.readouterr().err
    )
    assert not (tmp_path / "dagster").exists()


def test_the_shipped_workspace_names_the_location_as_production_does() -> None:
    local = yaml.safe_load(WORKSPACE.read_text(encoding="utf-8"))["load_from"]
    deployed = yaml.safe_load((REPO / "deploy" / "workspace.yaml").read_text(encoding="utf-8"))
    assert [entry["python_module"]["location_name"] for entry in local] == [LOCATION]
    assert [e["grpc_server"]["location_name"] for e in deployed["load_from"]] == [LOCATION]


# --- serve: forwarding the signal and ending what is left ---------------------------------------

# A stand-in for dagster dev: starts a grandchild in its group (as dagster dev starts its code
# servers), records both process ids, and on SIGINT exits at once, leaving the grandchild behind.
_PARENT = """
import os, signal, subprocess, sys, time
from pathlib import Path
on_sigint = signal.SIG_IGN if sys.argv[2] == "ignore" else (lambda *_: os._exit(0))
signal.signal(signal.SIGINT, on_sigint)
grandchild = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"])
Path(sys.argv[1]).write_text(f"{grandchild.pid}\\n")
time.sleep(300)
"""


def _serve_and_signal(tmp_path: Path, on_sigint: str, grace_s: float) -> tuple[int, bool, float]:
    """serve() the stand-in, SIGTERM to this process once it runs: the exit status, whether
    the grandchild was left running, and the seconds it took."""
    pid_file = tmp_path / "grandchild.pid"

    def stop_when_started() -> None:
        deadline = time.monotonic() + 30
        while not pid_file.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=stop_when_started, daemon=True).start()
    started = time.monotonic()
    code = serve([sys.executable, "-c", _PARENT, str(pid_file), on_sigint], os.environ, grace_s)
    took = time.monotonic() - started
    grandchild = int(pid_file.read_text().strip())
    left_running = is_running(grandchild)
    if left_running:
        os.kill(grandchild, signal.SIGKILL)
    return code, left_running, took


def test_serve_ends_what_the_command_leaves_behind_when_it_stops(tmp_path: Path) -> None:
    before = signal.getsignal(signal.SIGTERM)
    code, left_running, _ = _serve_and_signal(tmp_path, "exit", grace_s=30)
    assert code == 0
    assert not left_running
    assert signal.getsignal(signal.SIGTERM) == before  # the caller's handler is back


def test_serve_kills_a_command_that_will_not_stop_after_the_grace(tmp_path: Path) -> None:
    code, left_running, took = _serve_and_signal(tmp_path, "ignore", grace_s=1)
    assert code == 0
    assert not left_running
    assert took < 20


def test_serve_passes_on_the_exit_status_of_a_command_that_fails() -> None:
    assert serve([sys.executable, "-c", "raise SystemExit(3)"], os.environ) == 3


# --- started by a script, stopped by its process id ------------------------------------------


def _descendants(pid: int) -> list[int]:
    """Every process below `pid`, read from /proc now."""
    found: list[int] = []
    todo = [pid]
    while todo:
        parent = todo.pop()
        for task in Path(f"/proc/{parent}/task").glob("*"):
            try:
                children = (task / "children").read_text(encoding="ascii").split()
            except (FileNotFoundError, ProcessLookupError):
                continue
            todo.extend(int(child) for child in children)
            found.extend(int(child) for child in children)
    return sorted(set(found))


def _command_line(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except FileNotFoundError:
        return "(gone)"


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_the_ui_started_by_a_script_stops_with_its_whole_tree(
    tmp_path: Path, stop: signal.Signals
) -> None:
    home = tmp_path / "home"
    _demo_keys(home)
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("SCREENLAKE_") and k != "DAGSTER_HOME"
    }
    env["SCREENLAKE_HOME"] = str(home)
    port, log = free_port(), tmp_path / "ui.log"
    with log.open("wb") as out:
        launcher = subprocess.Popen(
            [
                sys.executable,
                "-c",
                _AS_A_SCRIPT_STARTS_IT,
                "-m",
                "orchestration.ui",
                "--port",
                str(port),
            ],
            cwd=REPO,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    tree: list[int] = []
    try:
        webserver = Webserver(f"http://127.0.0.1:{port}")
        wait_until(webserver.answers, "the webserver", _START_TIMEOUT_S, launcher, log)
        wait_until(webserver.location_loaded, "the location", _START_TIMEOUT_S, launcher, log)
        entries = webserver.query(_LOCATIONS)["workspaceOrError"]["locationEntries"]
        assert [entry["name"] for entry in entries] == ["screenlake"]

        tree = _descendants(launcher.pid)
        commands = " | ".join(_command_line(pid) for pid in tree)
        for part in ("dagster dev", "dagster_webserver", "dagster._daemon", "code-server"):
            assert part in commands, commands
        launcher.send_signal(stop)
        assert launcher.wait(timeout=_STOP_BOUND_S) == 0
        deadline = time.monotonic() + _STOP_BOUND_S
        while any(is_running(pid) for pid in tree) and time.monotonic() < deadline:
            time.sleep(0.2)
        left = [_command_line(pid) for pid in tree if is_running(pid)]
        assert not left, f"still running {_STOP_BOUND_S:.0f} s after {stop.name}: {left}"
        said = log.read_text(encoding="utf-8", errors="replace")
        assert f"using the demo's keys from {(home / 'phi' / 'keys').resolve()}" in said
        assert (home / "dagster" / "dagster.yaml").is_file()
    finally:
        for pid in [launcher.pid, *tree]:
            if is_running(pid):
                os.kill(pid, signal.SIGKILL)
        launcher.wait(timeout=10)
