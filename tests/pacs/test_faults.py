"""Faults a hospital's PACS has, on a real Orthanc each test may break: stopped in the middle of
a retrieval (then the partition re-run), an instance gone after listing, an instance stored
without its SOPInstanceUID, and one listed without it (a proxy hides it from QIDO)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pydicom
import pytest
import requests

import resources.dicomweb as dicomweb_module
from resources.sources import StudySource
from screenlake.devservers.orthanc import Orthanc
from screenlake.errors import IncompleteRetrievalError, PacsUnavailableError
from screenlake.ingest import SourceFile, batch_files, land_files, source_files_of
from screenlake.layout import Batch
from screenlake.pacs.landing import JOURNAL_NAME
from tests.pacs.checks import StopAfter, assert_landed_intact, dicomweb, dimse
from tests.pacs.conftest import PacsExport

pytestmark = pytest.mark.pacs


def _source(kind: str, server: Orthanc) -> StudySource:
    if kind == "dicomweb":
        return dicomweb(server, connections=1, retry_attempts=2, retry_delay_s=0.05)
    return dimse(
        server, retrieve=kind.split("-")[1], associations=1, retry_attempts=2, retry_delay_s=0.05
    )


def _endpoint(kind: str, server: Orthanc) -> str:
    return server.url if kind == "dicomweb" else f"127.0.0.1:{server.dicom_port}"


def _lung_batch(source: StudySource, export: PacsExport) -> tuple[Batch, list[SourceFile]]:
    batch = Batch(export.days[0], "lung_ldct")
    files = source_files_of(batch_files(source.list_day(batch.day), batch))
    assert len(files) > 10
    return batch, files


@pytest.mark.parametrize("kind", ["dicomweb", "dimse-get"])
def test_a_pacs_stopped_mid_retrieval_fails_the_landing_and_a_rerun_completes_it(
    own_orthanc: Callable[[], Orthanc],
    pacs_export: PacsExport,
    tmp_path: Path,
    kind: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    server = own_orthanc()
    source = _source(kind, server)
    batch, files = _lung_batch(source, pacs_export)
    raw = tmp_path / "raw"
    if kind == "dicomweb":
        # A series comes in one answer, which on loopback is all sent before the PACS can be
        # stopped; read it slowly, and cut it short once the PACS is down, as a PACS that dies
        # in the middle of a large series does.
        written_parts = dicomweb_module._written_parts

        def cut_when_down(events: Any, temporary: Path) -> Any:
            for written in written_parts(events, temporary):
                time.sleep(0.05)
                if server.process is None:
                    raise requests.ConnectionError("the answer was cut short")
                yield written

        monkeypatch.setattr(dicomweb_module, "_written_parts", cut_when_down)

    with pytest.raises(PacsUnavailableError) as down:
        land_files(files, batch, StopAfter(source, server, count=5), raw)
    monkeypatch.undo()
    assert _endpoint(kind, server) in str(down.value)
    assert "re-run the partition" in str(down.value)
    assert not raw.exists()  # nothing half-landed is published
    journal = (raw.with_name("raw.staging") / JOURNAL_NAME).read_text().splitlines()
    kept = len(journal)
    assert 5 <= kept < len(files)
    landed = {json.loads(line)["ref"] for line in journal}
    # Over DICOMweb a series comes in one request: the re-run asks for each series with
    # instances still missing, once.
    unfinished = {f.ref.rsplit("/", 1)[0] for f in files if f.ref not in landed}

    server.start()  # the PACS is back, on the same ports and storage
    counts = dict(source.request_counts())  # type: ignore[attr-defined]
    manifest = land_files(files, batch, source, raw)
    after = source.request_counts()  # type: ignore[attr-defined]
    assert manifest.height == len(files)
    assert_landed_intact(manifest, raw, server.uploaded)
    assert not raw.with_name("raw.staging").exists()
    if kind == "dicomweb":
        assert after["wado"] - counts["wado"] == len(unfinished)
    else:
        assert after["c-get"] - counts["c-get"] == 1  # the rest of the series, in one request


@pytest.mark.parametrize("kind", ["dicomweb", "dimse-move"])
def test_an_instance_gone_after_listing_leaves_the_partition_incomplete(
    own_orthanc: Callable[[], Orthanc], pacs_export: PacsExport, tmp_path: Path, kind: str
) -> None:
    server = own_orthanc()
    source = _source(kind, server)
    batch, files = _lung_batch(source, pacs_export)
    gone = files[3].sop_instance_uid
    assert gone is not None
    server.delete(gone)

    with pytest.raises(IncompleteRetrievalError, match=f"1 of {len(files)} instances") as missing:
        land_files(files, batch, source, tmp_path / "raw")
    assert _endpoint(kind, server) in str(missing.value)
    assert gone not in str(missing.value)  # UIDs stay out of messages

    server.upload([server.uploaded[gone]])
    manifest = land_files(files, batch, source, tmp_path / "raw")
    assert manifest.height == len(files)
    assert_landed_intact(manifest, tmp_path / "raw", server.uploaded)


def test_an_instance_without_sop_instance_uid_is_landed_over_dicomweb(
    own_orthanc: Callable[[], Orthanc], pacs_export: PacsExport, tmp_path: Path
) -> None:
    server = own_orthanc()
    source = _source("dicomweb", server)
    batch, files = _lung_batch(source, pacs_export)
    damaged = files[2].sop_instance_uid
    assert damaged is not None
    server.strip_sop_instance_uid(damaged)

    manifest = land_files(files, batch, source, tmp_path / "raw")
    assert manifest.height == len(files)
    row = manifest.filter(manifest["sop_instance_uid"] == damaged).row(0, named=True)
    landed = pydicom.dcmread(tmp_path / "raw" / row["landed_path"])
    assert "SOPInstanceUID" not in landed  # landed as the PACS sent it; de-identification
    assert landed.StudyInstanceUID == files[2].study_instance_uid  # quarantines it (pipeline test)


def test_an_instance_the_pacs_cannot_send_over_dimse_is_reported_not_dropped(
    own_orthanc: Callable[[], Orthanc], pacs_export: PacsExport, tmp_path: Path
) -> None:
    server = own_orthanc()
    source = _source("dimse-get", server)
    batch, files = _lung_batch(source, pacs_export)
    damaged = files[2].sop_instance_uid
    assert damaged is not None
    server.strip_sop_instance_uid(damaged)

    with pytest.raises(IncompleteRetrievalError, match=f"1 of {len(files)} instances"):
        land_files(files, batch, source, tmp_path / "raw")
    journal = (tmp_path / "raw.staging" / JOURNAL_NAME).read_text()
    assert journal.count("\n") == len(files) - 1  # the rest landed, in halves after the batch
    assert source.request_counts()["c-get"] < 12  # type: ignore[attr-defined]
    assert damaged not in journal


class _HidingProxy(BaseHTTPRequestHandler):
    """Forwards GETs to Orthanc, leaving one SOPInstanceUID out of instance searches: a PACS
    that lists an instance without its UID."""

    upstream: ClassVar[str] = ""
    hidden: ClassVar[str] = ""

    def do_GET(self) -> None:
        headers = {
            k: v for k, v in self.headers.items() if k.lower() in ("accept", "authorization")
        }
        response = requests.get(self.upstream + self.path, headers=headers, timeout=30)
        body = response.content
        if response.headers.get("Content-Type", "").startswith("application/dicom+json"):
            results = json.loads(body)
            for result in results:
                if result.get("00080018", {}).get("Value") == [self.hidden]:
                    del result["00080018"]
            body = json.dumps(results).encode()
        self.send_response(response.status_code)
        self.send_header("Content-Type", response.headers.get("Content-Type", ""))
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        return


def test_an_instance_listed_without_sop_instance_uid_is_retrieved_with_its_series(
    own_orthanc: Callable[[], Orthanc], pacs_export: PacsExport, tmp_path: Path
) -> None:
    server = own_orthanc()
    damaged = sorted(u for u, p in server.uploaded.items() if "_CT" in p.parent.name)[5]
    server.strip_sop_instance_uid(damaged)
    _HidingProxy.upstream, _HidingProxy.hidden = server.rest, damaged
    proxy = ThreadingHTTPServer(("127.0.0.1", 0), _HidingProxy)
    threading.Thread(target=proxy.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{proxy.server_address[1]}/dicom-web"
        source = dicomweb(server, url=url, connections=1)
        batch, files = _lung_batch(source, pacs_export)
        unnamed = [f for f in files if f.sop_instance_uid is None]
        assert len(unnamed) == 1 and unnamed[0].ref.endswith("/?1")
        manifest = land_files(files, batch, source, tmp_path / "raw")
    finally:
        proxy.shutdown()
        proxy.server_close()
    row = manifest.filter(manifest["sop_instance_uid"].is_null()).row(0, named=True)
    landed = pydicom.dcmread(tmp_path / "raw" / row["landed_path"])
    assert "SOPInstanceUID" not in landed
    assert landed.PixelData == pydicom.dcmread(server.uploaded[damaged]).PixelData
    assert manifest.height == len(files)
