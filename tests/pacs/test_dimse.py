"""The DIMSE source against a real Orthanc: C-FIND listing and routing, landing by C-GET and by
C-MOVE to screenlake's storage SCP, incremental re-landing, AE titles."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from screenlake.devservers.orthanc import ORTHANC_AET, Orthanc
from screenlake.errors import ConfigurationError, PacsRefusedError, PacsUnavailableError
from screenlake.ingest import batch_files, land_files, source_files_of
from screenlake.layout import Batch
from screenlake.programmes import PROGRAMME_NAMES
from tests.pacs.checks import assert_landed_intact, assert_routed_like_the_drop, dimse
from tests.pacs.conftest import PacsExport

pytestmark = pytest.mark.pacs


def test_list_day_finds_and_routes_the_studies_like_the_drop(
    orthanc: Orthanc, pacs_export: PacsExport
) -> None:
    source = dimse(orthanc)
    for day in pacs_export.days:
        assert_routed_like_the_drop(source, pacs_export.drop, day, orthanc.uploaded)
    assert source.available_days() == list(pacs_export.days)
    assert source.request_counts()["association"] == len(pacs_export.days) + 1


@pytest.mark.parametrize("retrieve", ["get", "move"])
def test_landing_is_intact_and_a_second_landing_fetches_nothing(
    orthanc: Orthanc, pacs_export: PacsExport, tmp_path: Path, retrieve: str
) -> None:
    source = dimse(orthanc, retrieve=retrieve, associations=2)
    day = pacs_export.days[1]
    listing = source.list_day(day)
    kind = f"c-{retrieve}"
    for programme in PROGRAMME_NAMES:
        batch = Batch(day, programme)
        files = source_files_of(batch_files(listing, batch))
        raw = tmp_path / programme
        before = source.request_counts().get(kind, 0)
        manifest = land_files(files, batch, source, raw)
        assert manifest.height == len(files)
        # One request per series: every series of these studies has a single request.
        series = {f.ref.rsplit("/", 1)[0] for f in files}
        assert source.request_counts()[kind] - before == len(series)
        assert_landed_intact(manifest, raw, orthanc.uploaded)
        manifest.write_parquet(raw / "manifest.parquet")

        associations = source.request_counts()["association"]
        again = land_files(files, batch, source, raw)
        assert source.request_counts()[kind] - before == len(series)  # nothing fetched
        assert source.request_counts()["association"] == associations  # not even connected
        assert again.drop("landed_path").equals(manifest.drop("landed_path"))


def test_a_wrong_called_ae_title_is_refused_at_once(orthanc: Orthanc) -> None:
    source = dimse(orthanc, called_aet="NOT_ORTHANC")
    with pytest.raises(PacsRefusedError, match="called AE title not recognised") as refused:
        source.available_days()
    assert f"127.0.0.1:{orthanc.dicom_port}" in str(refused.value)
    assert "NOT_ORTHANC" in str(refused.value)
    assert source.request_counts() == {"association": 1}  # a permanent rejection: no retry


def test_a_calling_ae_title_the_pacs_does_not_know_fails_naming_both_titles(
    orthanc: Orthanc,
) -> None:
    source = dimse(orthanc, calling_aet="STRANGER")
    with pytest.raises(PacsUnavailableError, match="AE title") as failed:
        source.available_days()
    assert "STRANGER" in str(failed.value) and ORTHANC_AET in str(failed.value)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"called_aet": ""}, "SCREENLAKE_DIMSE_AET"),
        ({"calling_aet": "A" * 17}, "SCREENLAKE_AET"),
        ({"retrieve": "fetch"}, "SCREENLAKE_DIMSE_RETRIEVE"),
    ],
)
def test_bad_settings_are_named(orthanc: Orthanc, settings: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        dimse(orthanc, **settings).available_days()
