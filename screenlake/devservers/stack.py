"""screenlake as a service on one host: PostgreSQL (the Dagster instance's storage), Redis (the
Celery broker), the gRPC code server, exactly one daemon, the webserver and Celery workers, each
a process of its own, recorded by process id in the stack's folder and stopped by it.

The processes read the site's settings from the environment they are started from (zones, keys,
PACS) and the stack's own from `stack.env` in the stack's folder (ports, PostgreSQL and Redis
credentials, made once and kept with mode 0600). `make stack`, `make stack-stop` and
`make worker QUEUE=...` run the command line at the bottom; the deployment tests and the backfill
benchmark drive the same class.
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from screenlake.devservers.graphql import LOCATION, Webserver
from screenlake.devservers.postgres import PostgresServer
from screenlake.devservers.process import (
    is_running,
    recorded_pid,
    start_detached,
    stop_pid_file,
    wait_until,
)
from screenlake.devservers.redis import RedisServer

CODE_LOCATION_MODULE = "orchestration.definitions"
CELERY_APP = "orchestration.celery_worker"
_STATE = "stack.env"
_START_TIMEOUT_S = 180.0
_STOP_GRACE_S = 20.0
# Ports `make stack` takes unless stack.env says otherwise; the tests take free ones.
DEFAULT_PORTS = {"postgres": 15432, "redis": 16379, "code_server": 4266, "webserver": 3000}
_DAGSTER_SERVICES = ("code_server", "webserver", "daemon")
POOLS = ("pacs", "gpu")
# One slot for each pool an operator has not set (`dagster instance concurrency set` keeps
# theirs); dagster's CLI cannot tell a pool set by hand from one left to the default.
_SET_UNSET_POOLS = """
import sys
import dagster as dg
with dg.DagsterInstance.get() as instance:
    storage = instance.event_log_storage
    chosen = {pool.name for pool in storage.get_pool_limits() if not pool.from_default}
    for name in sys.argv[1:]:
        if name not in chosen:
            storage.set_concurrency_slots(name, 1)
"""


@dataclass(frozen=True)
class Worker:
    """A Celery worker: the queue it takes steps from and its name (`<name>@<host>`)."""

    queue: str
    name: str

    @property
    def node(self) -> str:
        """The worker's node name as Celery reports it in step events."""
        return f"{self.name}@{socket.gethostname()}"


class Stack:
    """The stack kept in `home`, configured by `deploy` (dagster.yaml and workspace.yaml), its
    processes given the site's settings `site` (usually the caller's environment)."""

    def __init__(
        self,
        home: Path,
        deploy: Path,
        site: Mapping[str, str],
        ports: Mapping[str, int] | None = None,
    ) -> None:
        self.home = home.resolve()
        self.deploy = deploy.resolve()
        self.site = dict(site)
        self.state = self._load_or_create_state(ports or DEFAULT_PORTS)
        self.postgres = PostgresServer(
            self.home / "postgres",
            int(self.state["DAGSTER_PG_PORT"]),
            self.state["DAGSTER_PG_PASSWORD"],
        )
        self.redis = RedisServer(
            self.home / "redis",
            int(self.state["SCREENLAKE_REDIS_PORT"]),
            self.state["SCREENLAKE_REDIS_PASSWORD"],
        )
        self.webserver = Webserver(f"http://127.0.0.1:{self.state['SCREENLAKE_WEBSERVER_PORT']}")

    # -- settings ---------------------------------------------------------------------------

    def _load_or_create_state(self, ports: Mapping[str, int]) -> dict[str, str]:
        path = self.home / _STATE
        if path.exists():
            lines = path.read_text(encoding="utf-8").splitlines()
            return dict(line.split("=", 1) for line in lines if "=" in line)
        self.home.mkdir(parents=True, exist_ok=True)
        # PostgreSQL runs as its own account when we are root: it must be able to walk here.
        self.home.chmod(0o711)
        state = {
            "DAGSTER_HOME": str(self.home / "dagster"),
            "DAGSTER_PG_PORT": str(ports["postgres"]),
            "DAGSTER_PG_PASSWORD": self.site.get("DAGSTER_PG_PASSWORD") or secrets.token_hex(16),
            "SCREENLAKE_REDIS_PORT": str(ports["redis"]),
            "SCREENLAKE_REDIS_PASSWORD": secrets.token_hex(16),
            "SCREENLAKE_CODE_SERVER_HOST": "127.0.0.1",
            "SCREENLAKE_CODE_SERVER_PORT": str(ports["code_server"]),
            "SCREENLAKE_WEBSERVER_PORT": str(ports["webserver"]),
        }
        path.touch(mode=0o600)
        path.write_text("".join(f"{k}={v}\n" for k, v in state.items()), encoding="utf-8")
        return state

    def env(self) -> dict[str, str]:
        """What every process of the stack is started with: the site's settings, then the
        stack's instance, database, broker and code server, and the Celery executor."""
        env = {**self.site, **self.state}
        env.update(self.postgres.settings())
        env["SCREENLAKE_CELERY_BROKER"] = self.redis.url
        env.setdefault("SCREENLAKE_EXECUTOR", "celery")
        env["PYTHONUNBUFFERED"] = "1"
        return env

    def worker_env(self, worker: Worker) -> dict[str, str]:
        """A worker's environment: its own working copies of the zones, so that no step can
        lean on what another worker left on its disk."""
        env = self.env()
        for zone, name in (
            ("SCREENLAKE_PHI_ZONE", "phi"),
            ("SCREENLAKE_RESEARCH_ZONE", "research"),
        ):
            base = self.site.get(f"{zone}_WORKING_COPY")
            folder = Path(base) / worker.name if base else self.home / "workers" / worker.name
            env[f"{zone}_WORKING_COPY"] = str(folder / name)
        return env

    # -- processes --------------------------------------------------------------------------

    def _pid_file(self, service: str) -> Path:
        return self.home / "pids" / f"{service}.pid"

    def _log(self, service: str) -> Path:
        (self.home / "logs").mkdir(parents=True, exist_ok=True)
        return self.home / "logs" / f"{service}.log"

    def pid(self, service: str) -> int | None:
        """The process id of a running service (`daemon`, `worker-<name>`...), else None."""
        return recorded_pid(self._pid_file(service))

    def _command(self, service: str) -> list[str]:
        bin_dir = Path(sys.executable).parent
        workspace = str(self.deploy / "workspace.yaml")
        if service == "code_server":
            return [
                *(str(bin_dir / "dagster"), "code-server", "start", "-m", CODE_LOCATION_MODULE),
                *("-h", "127.0.0.1", "-p", self.state["SCREENLAKE_CODE_SERVER_PORT"]),
                *("--location-name", LOCATION),
            ]
        if service == "webserver":
            return [
                *(str(bin_dir / "dagster-webserver"), "-w", workspace, "-h", "127.0.0.1"),
                *("-p", self.state["SCREENLAKE_WEBSERVER_PORT"]),
            ]
        if service == "daemon":
            return [str(bin_dir / "dagster-daemon"), "run", "-w", workspace]
        raise ValueError(f"no service {service!r}")

    def _instance(self) -> None:
        """$DAGSTER_HOME/dagster.yaml from deploy/ (made once: an operator's edits are kept),
        and the database schema created or migrated before any service opens it: services
        starting at once on an empty database would race to create the same tables."""
        home = Path(self.state["DAGSTER_HOME"])
        home.mkdir(parents=True, exist_ok=True)
        target, source = home / "dagster.yaml", self.deploy / "dagster.yaml"
        if not target.exists():
            shutil.copyfile(source, target)
        elif target.read_bytes() != source.read_bytes():
            print(f"note: {target} differs from {source}; kept (remove it to take the new one)")
        self._python("-m", "dagster", "instance", "migrate")
        # Pools set explicitly: left to their default, the first runs to claim a slot at once
        # race to create the pool's row, which fails a run on PostgreSQL (dagster 1.13).
        self._python("-c", _SET_UNSET_POOLS, *POOLS)

    def _python(self, *args: str) -> None:
        subprocess.run([sys.executable, *args], env=self.env(), check=True, capture_output=True)

    def start_service(self, service: str) -> None:
        """Start one Dagster service (`code_server`, `webserver`, `daemon`) and wait for it."""
        if self.pid(service):
            return
        log = self._log(service)
        process = start_detached(
            self._command(service), log, self._pid_file(service), self.env(), cwd=Path.cwd()
        )
        if service == "code_server":
            wait_until(self._code_server_serves, "the code server", _START_TIMEOUT_S, process, log)
        elif service == "webserver":
            wait_until(self.webserver.answers, "the webserver", _START_TIMEOUT_S, process, log)
            wait_until(
                self.webserver.location_loaded,
                "the code location",
                _START_TIMEOUT_S,
                process,
                log,
            )
        elif service == "daemon":
            wait_until(self.webserver.daemons_healthy, "the daemon", _START_TIMEOUT_S, process, log)

    def _code_server_serves(self) -> bool:
        done = subprocess.run(
            [str(Path(sys.executable).parent / "dagster"), "api", "grpc-health-check"]
            + ["-h", "127.0.0.1", "-p", self.state["SCREENLAKE_CODE_SERVER_PORT"]],
            capture_output=True,
            check=False,
        )
        return done.returncode == 0

    def start_worker(self, worker: Worker) -> None:
        """Start one Celery worker in the background and wait until it answers a ping."""
        service = f"worker-{worker.name}"
        if self.pid(service):
            return
        log = self._log(service)
        process = start_detached(
            self.worker_command(worker), log, self._pid_file(service), self.worker_env(worker)
        )
        wait_until(lambda: self._worker_answers(worker), service, _START_TIMEOUT_S, process, log)

    def worker_command(self, worker: Worker) -> list[str]:
        """The Celery worker's command line: one step at a time, from its queues, in the
        worker's own process (`solo`): a step may start processes of its own (de-identification
        and the inference loader do), which a prefork pool's daemonic processes may not."""
        return [
            *(sys.executable, "-m", "celery", "-A", CELERY_APP, "worker", "-Q", worker.queue),
            *("-n", f"{worker.name}@%h", "--pool", "solo"),
            *("--prefetch-multiplier", "1", "--without-gossip", "--without-mingle", "-l", "INFO"),
        ]

    def _worker_answers(self, worker: Worker) -> bool:
        from celery import Celery

        app = Celery(broker=self.redis.url)
        try:
            return bool(app.control.ping(destination=[worker.node], timeout=1.0))
        finally:
            app.close()

    def start(self, workers: Sequence[Worker] = ()) -> None:
        """Start everything not yet running, in dependency order, and wait until it serves."""
        if not self.postgres.running():
            self.postgres.start()
        if not self.redis.running():
            self.redis.start()
        self._instance()
        for service in _DAGSTER_SERVICES:
            self.start_service(service)
        for worker in workers:
            self.start_worker(worker)

    def kill(self, service: str, sig: int = signal.SIGKILL) -> int:
        """Send `sig` to a service's main process (not its children), as an operator's
        `kill -9 PID` would; returns the process id."""
        pid = self.pid(service)
        if pid is None:
            raise RuntimeError(f"{service} is not running")
        os.kill(pid, sig)
        deadline = time.monotonic() + _STOP_GRACE_S
        while is_running(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        return pid

    def stop_service(self, service: str) -> None:
        """Stop a service and its children by process id."""
        stop_pid_file(self._pid_file(service), _STOP_GRACE_S)

    def stop(self) -> None:
        """Stop every process of the stack, by process id, the last started first."""
        pids = self.home / "pids"
        workers = sorted(p.stem for p in pids.glob("worker-*.pid")) if pids.exists() else []
        for service in ["webserver", "daemon", *workers, "code_server"]:
            self.stop_service(service)
        self.redis.stop()
        self.postgres.stop()


def _workers(spec: str) -> list[Worker]:
    """`dagster gpu` -> a worker per queue, named after it."""
    return [Worker(queue=q, name=f"{q}-1") for q in spec.split()]


def main(argv: Sequence[str] | None = None) -> int:
    """`start` / `stop` the stack, or run one `worker` in the foreground."""
    parser = argparse.ArgumentParser(prog="python -m screenlake.devservers.stack")
    parser.add_argument("action", choices=["start", "stop", "worker"])
    parser.add_argument("--home", type=Path, default=Path("var/stack"))
    parser.add_argument("--deploy", type=Path, default=Path("deploy"))
    parser.add_argument("--workers", default="dagster gpu", help="queues to start a worker for")
    parser.add_argument("--queue", default="dagster", help="the queue of `worker`")
    parser.add_argument("--name", help="the name of `worker` (default: <queue>-<pid>)")
    args = parser.parse_args(argv)
    stack = Stack(args.home, args.deploy, os.environ)
    if args.action == "stop":
        stack.stop()
        print(f"stack in {args.home} stopped")
        return 0
    if args.action == "worker":
        worker = Worker(args.queue, args.name or f"{args.queue.replace(',', '+')}-{os.getpid()}")
        os.execve(sys.executable, stack.worker_command(worker), stack.worker_env(worker))
    missing = [
        k for k in ("SCREENLAKE_PSEUDONYM_KEY", "SCREENLAKE_VAULT_KEY") if not os.environ.get(k)
    ]
    if missing:
        print(f"set {' and '.join(missing)} first: runs de-identify under them", file=sys.stderr)
        return 2
    stack.start(_workers(args.workers))
    print(
        f"stack running: UI {stack.webserver.url}, logs in {args.home}/logs, stop: make stack-stop"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
