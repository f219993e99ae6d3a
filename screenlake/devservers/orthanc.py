"""A real Orthanc on loopback for the PACS tests, `make demo-pacs` and `benchmarks/pacs_pull.py`: its own
temporary storage, free ports, the DICOMweb plugin, basic auth, and screenlake's AE title
registered so that C-MOVE can reach screenlake's storage SCP. Started with Popen, stopped by its
process id.

A missing or silent Orthanc raises OrthancUnavailable: a test that needs it fails, it does not
skip. SCREENLAKE_TEST_ORTHANC and SCREENLAKE_TEST_ORTHANC_DICOMWEB point at other builds than
Debian's.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pydicom
import requests

from screenlake.devservers.process import free_port, stop_process

ORTHANC_AET = "ORTHANC"
SCREENLAKE_AET = "SCREENLAKE"
USER, PASSWORD = "screenlake", "orthanc-test-password"
_BINARY = "/usr/sbin/Orthanc"
_PLUGIN = "/usr/share/orthanc/plugins/libOrthancDicomWeb.so"
_START_TIMEOUT_S = 20.0
_STOP_GRACE_S = 1.0  # then killed: a throwaway server need not shut down cleanly
_STOP_TIMEOUT_S = 10.0


class OrthancUnavailable(RuntimeError):
    """Orthanc is not installed, exited at start, or did not answer in time."""


def _plugin() -> str:
    return os.environ.get("SCREENLAKE_TEST_ORTHANC_DICOMWEB") or _PLUGIN


def _binary() -> str:
    candidate = os.environ.get("SCREENLAKE_TEST_ORTHANC") or shutil.which("Orthanc") or _BINARY
    plugin = _plugin()
    if not Path(candidate).is_file() or not Path(plugin).exists():
        raise OrthancUnavailable(
            f"Orthanc ({candidate}) or its DICOMweb plugin ({plugin}) is missing: install "
            "them (apt-get install orthanc orthanc-dicomweb, as `make test` does when root) or "
            "point SCREENLAKE_TEST_ORTHANC and SCREENLAKE_TEST_ORTHANC_DICOMWEB at them"
        )
    return candidate


@dataclass
class Orthanc:
    """One Orthanc process and the folder that holds its configuration, storage and log."""

    root: Path
    http_port: int = field(default_factory=free_port)
    dicom_port: int = field(default_factory=free_port)
    scp_port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None
    uploaded: dict[str, Path] = field(default_factory=dict)  # SOPInstanceUID -> original

    @property
    def url(self) -> str:
        """The DICOMweb root."""
        return f"http://127.0.0.1:{self.http_port}/dicom-web"

    @property
    def rest(self) -> str:
        """Orthanc's own REST API."""
        return f"http://127.0.0.1:{self.http_port}"

    def _config(self) -> dict[str, object]:
        return {
            "Name": "screenlake-test",
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
            "Plugins": [_plugin()],
            "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
            # Files are read from disk every time, so a test can damage one on disk.
            "MaximumStorageCacheSize": 0,
            "StorageCompression": False,
            "SaveJobs": False,
        }

    def start(self) -> Orthanc:
        """Start (or restart, on the same ports and storage) and wait until it answers."""
        binary = _binary()
        self.root.mkdir(parents=True, exist_ok=True)
        config = self.root / "orthanc.json"
        config.write_text(json.dumps(self._config(), indent=2), encoding="utf-8")
        log = (self.root / "orthanc.log").open("ab")
        self.process = subprocess.Popen(
            [binary, str(config)], stdout=log, stderr=subprocess.STDOUT, cwd=self.root
        )
        log.close()
        deadline = time.monotonic() + _START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise OrthancUnavailable(
                    f"Orthanc exited at start (code {self.process.returncode}); see {self.root}/orthanc.log"
                )
            try:
                if requests.get(f"{self.rest}/system", auth=(USER, PASSWORD), timeout=1).ok:
                    return self
            except requests.ConnectionError:
                pass
            time.sleep(0.05)
        self.stop()
        raise OrthancUnavailable(
            f"Orthanc did not answer on port {self.http_port} within {_START_TIMEOUT_S} s"
        )

    def stop(self) -> None:
        """Stop by process id: terminate, then kill if it lingers."""
        stop_process(self.process, _STOP_GRACE_S)
        self.process = None

    def crash(self) -> None:
        """Kill by process id at once, as a PACS that goes down mid-transfer."""
        if self.process is not None:
            self.process.kill()
            self.process.wait(timeout=_STOP_TIMEOUT_S)
            self.process = None

    def upload(self, paths: list[Path], workers: int = 1, remember: bool = True) -> int:
        """POST files to /instances over `workers` connections; returns how many Orthanc took
        (it refuses non-DICOM, empty, truncated and UID-less files, as a PACS would). With
        `remember`, `uploaded` maps each taken file's SOPInstanceUID to it."""
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
            with ThreadPoolExecutor(max(1, workers)) as pool:
                taken = [path for path, ok in zip(paths, pool.map(post, paths)) if ok]
        finally:
            for session in sessions:
                session.close()
        if remember:
            for path in taken:
                sop = str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID)
                self.uploaded[sop] = path
        return len(taken)

    def instance_count(self) -> int:
        """Instances Orthanc holds."""
        response = requests.get(f"{self.rest}/statistics", auth=(USER, PASSWORD), timeout=10)
        response.raise_for_status()
        return int(response.json()["CountInstances"])

    def _instance_id(self, sop_uid: str) -> str:
        response = requests.post(
            f"{self.rest}/tools/lookup", data=sop_uid, auth=(USER, PASSWORD), timeout=10
        )
        response.raise_for_status()
        return str(next(r["ID"] for r in response.json() if r["Type"] == "Instance"))

    def delete(self, sop_uid: str) -> None:
        """Remove one instance, as a PACS whose instance disappears after it was listed."""
        response = requests.delete(
            f"{self.rest}/instances/{self._instance_id(sop_uid)}", auth=(USER, PASSWORD), timeout=10
        )
        response.raise_for_status()

    def strip_sop_instance_uid(self, sop_uid: str) -> None:
        """Damage the stored file so that its data set has no SOPInstanceUID, keeping its size
        and header length (Orthanc reads headers up to a recorded offset): the element's tag
        (0008,0018) becomes (0008,0019), which sorts in the same place."""
        info = requests.get(
            f"{self.rest}/instances/{self._instance_id(sop_uid)}/attachments/dicom/info",
            auth=(USER, PASSWORD),
            timeout=10,
        ).json()
        uuid = str(info["Uuid"])
        stored = self.root / "storage" / uuid[:2] / uuid[2:4] / uuid
        data = stored.read_bytes()
        marker = b"\x08\x00\x18\x00UI"
        assert data.count(marker) == 1, "expected one explicit-VR SOPInstanceUID element"
        stored.write_bytes(data.replace(marker, b"\x08\x00\x19\x00UI"))
