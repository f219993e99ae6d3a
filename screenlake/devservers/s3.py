"""An S3-compatible server on loopback for the object-store tests: moto in server mode (a dev
dependency), started with Popen on a free port and stopped by its process id. A server that does
not start raises S3ServerUnavailable: a test that needs it fails, it does not skip."""

from __future__ import annotations

import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import requests

from screenlake.devservers.process import free_port, stop_process

_START_TIMEOUT_S = 30.0
_STOP_GRACE_S = 5.0


class S3ServerUnavailable(RuntimeError):
    """moto is not installed, exited at start, or did not answer in time."""


@dataclass
class S3Server:
    """One moto server process and its log."""

    root: Path
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        """The endpoint URL boto3 and DuckDB are pointed at."""
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> S3Server:
        """Start and wait until it answers."""
        self.root.mkdir(parents=True, exist_ok=True)
        log = (self.root / "moto.log").open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        deadline = time.monotonic() + _START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise S3ServerUnavailable(
                    f"moto's server exited at start (code {self.process.returncode}); see "
                    f"{self.root}/moto.log (is moto[server] installed?)"
                )
            try:
                requests.get(f"{self.endpoint}/moto-api/", timeout=1)
                return self
            except requests.ConnectionError:
                time.sleep(0.05)
        self.stop()
        raise S3ServerUnavailable(
            f"moto did not answer on port {self.port} in {_START_TIMEOUT_S} s"
        )

    def stop(self) -> None:
        """Stop by process id: terminate, then kill if it lingers."""
        stop_process(self.process, _STOP_GRACE_S)
        self.process = None

    def reset(self) -> None:
        """Forget every bucket and object (moto's reset API)."""
        requests.post(f"{self.endpoint}/moto-api/reset", timeout=10).raise_for_status()
