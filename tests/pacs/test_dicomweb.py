"""The DICOMweb source against a real Orthanc: QIDO-RS listing and routing, WADO-RS landing,
incremental re-landing, credentials."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import dagster as dg
import pytest

from orchestration.automation import new_studies_sensor
from orchestration.partitions import partition_key
from resources.dicomweb import DicomWebSource
from screenlake.devservers.orthanc import Orthanc, free_port
from screenlake.errors import PacsRefusedError, PacsUnavailableError
from screenlake.ingest import batch_files, land_files, source_files_of
from screenlake.layout import Batch
from screenlake.programmes import PROGRAMME_NAMES
from tests.pacs.checks import assert_landed_intact, assert_routed_like_the_drop, dicomweb
from tests.pacs.conftest import PacsExport

pytestmark = pytest.mark.pacs


def test_list_day_finds_and_routes_the_studies_like_the_drop(
    orthanc: Orthanc, pacs_export: PacsExport
) -> None:
    source = dicomweb(orthanc)
    programmes = set()
    for day in pacs_export.days:
        listing = assert_routed_like_the_drop(source, pacs_export.drop, day, orthanc.uploaded)
        programmes |= {s.programme for s in listing.studies}
    assert programmes == set(PROGRAMME_NAMES)


def test_days_and_their_summaries_come_from_one_search_per_modality(
    orthanc: Orthanc, pacs_export: PacsExport
) -> None:
    source = dicomweb(orthanc, lookback_days=3)
    summaries = source.day_summaries()
    assert sorted(summaries) == list(pacs_export.days)
    assert all(s.startswith("studies=2 instances=") for s in summaries.values())
    assert source.available_days() == list(pacs_export.days)
    assert dicomweb(orthanc, lookback_until="2024-03-10").available_days() == []


def test_the_sensor_launches_every_programme_for_each_day_the_pacs_holds(
    orthanc: Orthanc, pacs_export: PacsExport
) -> None:
    source = dicomweb(orthanc)
    with dg.build_sensor_context(
        resources={"source": source}, instance=dg.DagsterInstance.ephemeral()
    ) as context:
        result = new_studies_sensor(context)
    assert isinstance(result, dg.SensorResult) and result.run_requests is not None
    assert sorted(str(r.partition_key) for r in result.run_requests) == sorted(
        str(partition_key(day, p)) for day in pacs_export.days for p in PROGRAMME_NAMES
    )


def test_landing_is_intact_and_a_second_landing_fetches_nothing(
    orthanc: Orthanc, pacs_export: PacsExport, tmp_path: Path
) -> None:
    source = dicomweb(orthanc)
    day = pacs_export.days[0]
    listing = source.list_day(day)
    for programme in PROGRAMME_NAMES:
        batch = Batch(day, programme)
        files = source_files_of(batch_files(listing, batch))
        raw = tmp_path / programme
        series = {f.ref.rsplit("/", 1)[0] for f in files}  # one request per series
        before = source.request_counts().get("wado", 0)
        manifest = land_files(files, batch, source, raw)
        assert manifest.height == len(files)
        assert source.request_counts()["wado"] - before == len(series)
        assert_landed_intact(manifest, raw, orthanc.uploaded)
        manifest.write_parquet(raw / "manifest.parquet")

        again = land_files(files, batch, source, raw)
        assert source.request_counts()["wado"] - before == len(series)  # nothing fetched
        assert again.drop("landed_path").equals(manifest.drop("landed_path"))
        assert_landed_intact(again, raw, orthanc.uploaded)


def test_a_wrong_password_is_refused_at_once_naming_the_server(
    orthanc: Orthanc, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SCREENLAKE_TEST_WRONG_PASSWORD", "not-the-password")
    source = dicomweb(orthanc, password_env="SCREENLAKE_TEST_WRONG_PASSWORD")
    with pytest.raises(PacsRefusedError, match="401") as refused:
        source.available_days()
    assert orthanc.url in str(refused.value)
    assert source.request_counts() == {"qido": 1}  # a refusal is not retried


def test_a_server_that_is_down_fails_naming_it_after_the_retries() -> None:
    url = f"http://127.0.0.1:{free_port()}/dicom-web"
    source = DicomWebSource(url=url, retry_attempts=3, retry_delay_s=0.01)
    with pytest.raises(PacsUnavailableError, match="after 3 attempt") as down:
        source.available_days()
    assert url in str(down.value)
    assert source.request_counts() == {"qido": 3}


class _Recorder(BaseHTTPRequestHandler):
    seen: ClassVar[list[str | None]] = []

    def do_GET(self) -> None:
        type(self).seen.append(self.headers.get("Authorization"))
        body = b"[]"
        self.send_response(200)
        self.send_header("Content-Type", "application/dicom+json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        return


@pytest.fixture
def recorder() -> Iterator[str]:
    """A DICOMweb stand-in that answers every search with nothing and notes the credentials."""
    _Recorder.seen = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/dicom-web"
    server.shutdown()
    server.server_close()


def test_a_bearer_token_from_the_environment_goes_with_every_request(
    recorder: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SCREENLAKE_TEST_TOKEN", "opaque-token")
    source = DicomWebSource(url=recorder, token_env="SCREENLAKE_TEST_TOKEN", username="ignored")
    assert source.available_days() == []
    assert _Recorder.seen and set(_Recorder.seen) == {"Bearer opaque-token"}
