"""Redis from Debian on loopback: the Celery broker of `make stack` and the tests, with a
password, no persistence, started and stopped by process id."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from screenlake.devservers.process import recorded_pid, start_detached, stop_pid_file, wait_until

_START_TIMEOUT_S = 20.0
_STOP_GRACE_S = 5.0


class RedisUnavailable(RuntimeError):
    """redis-server is not installed."""


@dataclass
class RedisServer:
    """One redis-server in `root` (redis.conf, redis.log, redis.pid) on `port`."""

    root: Path
    port: int
    password: str

    @property
    def pid_file(self) -> Path:
        """Where the server's process id is kept while it runs."""
        return self.root / "redis.pid"

    @property
    def url(self) -> str:
        """The broker URL Celery uses (it holds the password: pass it as a secret)."""
        return f"redis://:{self.password}@127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        """Start and wait until it answers PING."""
        binary = shutil.which("redis-server") or "/usr/bin/redis-server"
        if not Path(binary).is_file():
            raise RedisUnavailable(
                "redis-server is missing: install Debian's redis-server (`make servers` does, "
                "as root)"
            )
        self.root.mkdir(parents=True, exist_ok=True)
        config = self.root / "redis.conf"
        # In a file, not on the command line, so that the password does not show in `ps`.
        config.write_text(
            f"bind 127.0.0.1\nport {self.port}\nrequirepass {self.password}\n"
            f'dir {self.root}\nsave ""\nappendonly no\ndaemonize no\n',
            encoding="utf-8",
        )
        config.chmod(0o600)
        log = self.root / "redis.log"
        process = start_detached([binary, str(config)], log=log, pid_file=self.pid_file)
        wait_until(self._answers, "Redis", _START_TIMEOUT_S, process, log)
        return self

    def stop(self) -> None:
        """Stop by process id."""
        stop_pid_file(self.pid_file, _STOP_GRACE_S)

    def running(self) -> bool:
        """Whether the recorded server process is alive."""
        return recorded_pid(self.pid_file) is not None

    def _answers(self) -> bool:
        import redis

        try:
            return bool(redis.Redis.from_url(self.url, socket_timeout=1).ping())
        except redis.exceptions.ConnectionError:
            return False
