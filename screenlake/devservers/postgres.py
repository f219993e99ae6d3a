"""PostgreSQL from Debian on loopback, for the Dagster instance of `make stack` and the tests:
its own data folder, password authentication over TCP, started and stopped by process id.

PostgreSQL refuses to run as root: started by root, it runs as the unprivileged `postgres`
account that Debian's package creates, and the data folder is handed to that account.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path

from screenlake.devservers.process import recorded_pid, start_detached, stop_pid_file, wait_until

SUPERUSER, DATABASE = "dagster", "dagster"
_ACCOUNT = "postgres"
_START_TIMEOUT_S = 60.0
_STOP_GRACE_S = 20.0


class PostgresUnavailable(RuntimeError):
    """PostgreSQL is not installed, or its account is missing."""


def _binary(name: str) -> str:
    found = shutil.which(name) or next(
        (str(p) for p in sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"), reverse=True)),
        None,
    )
    if not found:
        raise PostgresUnavailable(
            f"PostgreSQL's {name} is missing: install Debian's postgresql (`make servers` does, "
            "as root)"
        )
    return found


def _account() -> str | None:
    """The account PostgreSQL runs as: `postgres` when we are root, else ourselves."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam(_ACCOUNT)
    except KeyError:
        raise PostgresUnavailable(
            "running as root, PostgreSQL needs the unprivileged account `postgres` that "
            "Debian's postgresql package creates"
        ) from None
    return _ACCOUNT


@dataclass
class PostgresServer:
    """One PostgreSQL cluster in `root` (data/, postgres.log, postgres.pid) on `port`."""

    root: Path
    port: int
    password: str

    @property
    def data(self) -> Path:
        """The cluster's data folder."""
        return self.root / "data"

    @property
    def pid_file(self) -> Path:
        """Where the server's process id is kept while it runs."""
        return self.root / "postgres.pid"

    def settings(self) -> dict[str, str]:
        """The variables deploy/dagster.yaml reads to reach this server."""
        return {
            "DAGSTER_PG_HOST": "127.0.0.1",
            "DAGSTER_PG_PORT": str(self.port),
            "DAGSTER_PG_USERNAME": SUPERUSER,
            "DAGSTER_PG_PASSWORD": self.password,
            "DAGSTER_PG_DB": DATABASE,
        }

    def start(self) -> PostgresServer:
        """Initialise the cluster on first use, start it and wait until it takes connections."""
        account = _account()
        self.root.mkdir(parents=True, exist_ok=True)
        if account:
            entry = pwd.getpwnam(account)
            os.chown(self.root, entry.pw_uid, entry.pw_gid)
            _require_reachable(self.root, account)
        if not (self.data / "PG_VERSION").exists():
            self._initdb(account)
        log = self.root / "postgres.log"
        process = start_detached(
            [_binary("postgres"), "-D", str(self.data), "-h", "127.0.0.1", "-p", str(self.port)]
            + ["-k", str(self.root), "-c", "max_connections=200"],
            log=log,
            pid_file=self.pid_file,
            user=account,
        )
        wait_until(self._accepts, "PostgreSQL", _START_TIMEOUT_S, process, log)
        self._create_database()
        return self

    def stop(self) -> None:
        """Fast shutdown (SIGINT: open sessions are ended, not waited for), by process id."""
        stop_pid_file(self.pid_file, _STOP_GRACE_S, first=signal.SIGINT)

    def running(self) -> bool:
        """Whether the recorded server process is alive."""
        return recorded_pid(self.pid_file) is not None

    def _initdb(self, account: str | None) -> None:
        password_file = self.root / "initdb.password"
        password_file.write_text(self.password + "\n", encoding="utf-8")
        password_file.chmod(0o600)
        if account:
            entry = pwd.getpwnam(account)
            os.chown(password_file, entry.pw_uid, entry.pw_gid)
        try:
            subprocess.run(
                [_binary("initdb"), "-D", str(self.data), "-U", SUPERUSER, "-E", "UTF8"]
                + ["--locale=C", "--auth=scram-sha-256", f"--pwfile={password_file}"],
                check=True,
                capture_output=True,
                user=account,
            )
        finally:
            password_file.unlink(missing_ok=True)

    def _connect(self, database: str):  # type: ignore[no-untyped-def]
        import psycopg2

        return psycopg2.connect(
            host="127.0.0.1",
            port=self.port,
            user=SUPERUSER,
            password=self.password,
            dbname=database,
            connect_timeout=2,
        )

    def _accepts(self) -> bool:
        import psycopg2

        try:
            self._connect("postgres").close()
        except psycopg2.OperationalError:
            return False
        return True

    def _create_database(self) -> None:
        connection = self._connect("postgres")
        connection.autocommit = True
        try:
            with connection.cursor() as cursor:
                cursor.execute("SELECT 1 FROM pg_database WHERE datname = %s", [DATABASE])
                if cursor.fetchone() is None:
                    cursor.execute(f"CREATE DATABASE {DATABASE}")
        finally:
            connection.close()


def _require_reachable(folder: Path, account: str) -> None:
    """PostgreSQL's account must be able to walk down to its folder."""
    done = subprocess.run(["test", "-x", str(folder)], user=account, check=False)
    if done.returncode != 0:
        raise PostgresUnavailable(
            f"the account {account} cannot reach {folder}: a folder above it is closed to "
            "other users; put the stack's folder (SCREENLAKE_STACK_HOME) somewhere it can reach"
        )
