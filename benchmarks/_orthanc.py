"""A throwaway Orthanc on loopback for `pacs_pull.py`: free ports, temporary storage, the
DICOMweb plugin, basic auth, and screenlake's AE title registered (C-GET by getscu and
screenlake, C-MOVE to screenlake's storage SCP). Configured as `tests/pacs/orthanc.py` does,
without pytest: started with Popen, stopped by its process id.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import requests

ORTHANC_AET = "ORTHANC"
SCREENLAKE_AET = "SCREENLAKE"
USER, PASSWORD = "screenlake", "orthanc-benchmark-password"
_BINARY = "/usr/sbin/Orthanc"
_PLUGIN = "/usr/share/orthanc/plugins/libOrthancDicomWeb.so"
_START_TIMEOUT_S = 30.0


def free_port() -> int:
    """A TCP port free on loopback right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Orthanc:
    """One Orthanc process and the folder that holds its configuration, storage and log."""

    root: Path
    http_port: int = field(default_factory=free_port)
    dicom_port: int = field(default_factory=free_port)
    scp_port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """The DICOMweb root."""
        return f"http://127.0.0.1:{self.http_port}/dicom-web"

    @property
    def rest(self) -> str:
        """Orthanc's own REST API."""
        return f"http://127.0.0.1:{self.http_port}"

    def _config(self, plugin: str) -> dict[str, object]:
        return {
            "Name": "screenlake-benchmark",
            "StorageDirectory": str(self.root / "storage"),
            "IndexDirectory": str(self.root / "index"),
            "HttpPort": self.http_port,
            "DicomPort": self.dicom_port,
            "DicomAet": ORTHANC_AET,
            "DicomCheckCalledAet": True,
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": True,
            "RegisteredUsers": {USER: PASSWORD},
            "DicomModalities": {"screenlake": [SCREENLAKE_AET, "127.0.0.1", self.scp_port]},
            "Plugins": [plugin],
            "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
            # Every run reads from disk, so the order of the runs does not favour a later one.
            "MaximumStorageCacheSize": 0,
            "StorageCompression": False,
            "SaveJobs": False,
        }

    def start(self) -> Orthanc:
        """Start and wait until it answers; raises RuntimeError naming the log otherwise."""
        binary = os.environ.get("SCREENLAKE_TEST_ORTHANC") or shutil.which("Orthanc") or _BINARY
        plugin = os.environ.get("SCREENLAKE_TEST_ORTHANC_DICOMWEB") or _PLUGIN
        if not Path(binary).is_file() or not Path(plugin).exists():
            raise RuntimeError(
                f"Orthanc ({binary}) or its DICOMweb plugin ({plugin}) is missing: install them "
                "(apt-get install orthanc orthanc-dicomweb) or point SCREENLAKE_TEST_ORTHANC "
                "and SCREENLAKE_TEST_ORTHANC_DICOMWEB at them"
            )
        self.root.mkdir(parents=True, exist_ok=True)
        config = self.root / "orthanc.json"
        config.write_text(json.dumps(self._config(plugin), indent=2), encoding="utf-8")
        with (self.root / "orthanc.log").open("ab") as log:
            self.process = subprocess.Popen(
                [binary, str(config)], stdout=log, stderr=subprocess.STDOUT, cwd=self.root
            )
        deadline = time.monotonic() + _START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"Orthanc exited at start (code {self.process.returncode}); see "
                    f"{self.root}/orthanc.log"
                )
            try:
                if requests.get(f"{self.rest}/system", auth=(USER, PASSWORD), timeout=1).ok:
                    return self
            except requests.ConnectionError:
                pass
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"Orthanc did not answer on port {self.http_port} in time")

    def stop(self) -> None:
        """Stop by process id: terminate, then kill if it lingers."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        self.process = None

    def upload(self, paths: list[Path], workers: int) -> int:
        """POST each file to /instances over `workers` connections; returns how many Orthanc
        took (it refuses the export's non-DICOM and truncated files, as a PACS would)."""
        local = threading.local()
        sessions: list[requests.Session] = []

        def post(path: Path) -> bool:
            session = getattr(local, "session", None)
            if session is None:
                session = local.session = requests.Session()
                session.auth = (USER, PASSWORD)
                sessions.append(session)
            response = session.post(f"{self.rest}/instances", data=path.read_bytes(), timeout=60)
            return response.ok

        try:
            with ThreadPoolExecutor(workers) as pool:
                return sum(pool.map(post, paths))
        finally:
            for session in sessions:
                session.close()

    def instance_count(self) -> int:
        """Instances Orthanc holds."""
        response = requests.get(f"{self.rest}/statistics", auth=(USER, PASSWORD), timeout=10)
        response.raise_for_status()
        return int(response.json()["CountInstances"])
