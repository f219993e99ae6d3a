"""SCREENLAKE_PACS picks the study source in `orchestration.resources`; bad settings are named."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest

from orchestration.resources import resources_for, source_for
from resources.dicomweb import DicomWebSource
from resources.dimse import DimseSource
from resources.sources import ExportDropSource
from screenlake.errors import ConfigurationError


def test_the_drop_stays_the_default() -> None:
    assert isinstance(source_for({}), ExportDropSource)
    assert isinstance(resources_for("local", {"SCREENLAKE_DROP": "/x"})["source"], ExportDropSource)


def test_dicomweb_settings() -> None:
    source = source_for(
        {
            "SCREENLAKE_PACS": "dicomweb",
            "SCREENLAKE_DICOMWEB_URL": "https://user:secret@pacs.example.org/dicom-web/",
            "SCREENLAKE_DICOMWEB_USER": "screenlake",
            "SCREENLAKE_PACS_CONNECTIONS": "8",
            "SCREENLAKE_PACS_RETRIES": "3",
            "SCREENLAKE_PACS_RETRY_DELAY": "0.5",
        }
    )
    assert isinstance(source, DicomWebSource)
    assert (source.username, source.connections, source.retry_attempts, source.retry_delay_s) == (
        "screenlake",
        8,
        3,
        0.5,
    )
    assert source.endpoint == "https://pacs.example.org/dicom-web"  # no credentials in messages


def test_dimse_settings() -> None:
    source = source_for(
        {
            "SCREENLAKE_PACS": "DIMSE",
            "SCREENLAKE_DIMSE_HOST": "pacs.example.org",
            "SCREENLAKE_DIMSE_PORT": "11112",
            "SCREENLAKE_DIMSE_AET": "HOSPITALPACS",
            "SCREENLAKE_AET": "SCREENLAKE01",
            "SCREENLAKE_DIMSE_RETRIEVE": "move",
            "SCREENLAKE_DIMSE_SCP_PORT": "4006",
        }
    )
    assert isinstance(source, DimseSource)
    assert (source.host, source.port, source.called_aet, source.calling_aet) == (
        "pacs.example.org",
        11112,
        "HOSPITALPACS",
        "SCREENLAKE01",
    )
    assert (source.retrieve, source.scp_port, source.associations) == ("move", 4006, 2)
    assert "pacs.example.org:11112" in source.endpoint and "HOSPITALPACS" in source.endpoint


@pytest.mark.parametrize(
    ("settings", "named"),
    [
        ({"SCREENLAKE_PACS": "ftp"}, "SCREENLAKE_PACS"),
        ({"SCREENLAKE_PACS": "dicomweb"}, "SCREENLAKE_DICOMWEB_URL"),
        ({"SCREENLAKE_PACS": "dimse", "SCREENLAKE_DIMSE_AET": "PACS"}, "SCREENLAKE_DIMSE_HOST"),
        ({"SCREENLAKE_PACS": "dimse", "SCREENLAKE_DIMSE_HOST": "pacs"}, "SCREENLAKE_DIMSE_AET"),
        (
            {
                "SCREENLAKE_PACS": "dicomweb",
                "SCREENLAKE_DICOMWEB_URL": "x",
                "SCREENLAKE_PACS_RETRIES": "many",
            },
            "SCREENLAKE_PACS_RETRIES",
        ),
    ],
)
def test_missing_or_bad_settings_are_named(settings: dict[str, str], named: str) -> None:
    with pytest.raises(ConfigurationError, match=named):
        source_for(settings)


def test_the_drop_summarises_its_days_by_file_count(tmp_path: Path) -> None:
    (tmp_path / "20240311" / "a").mkdir(parents=True)
    (tmp_path / "20240311" / "a" / "IM1.dcm").write_bytes(b"x")
    (tmp_path / "20240312").mkdir()
    source = ExportDropSource(root=str(tmp_path), settle_seconds=0)
    summaries = source.day_summaries()
    assert sorted(summaries) == [date(2024, 3, 11), date(2024, 3, 12)]
    assert summaries[date(2024, 3, 11)].startswith("files=1;state=")
    assert summaries[date(2024, 3, 12)].startswith("files=0;state=")
