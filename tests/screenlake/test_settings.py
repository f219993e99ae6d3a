from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest

from screenlake.errors import ConfigurationError
from screenlake.settings import (
    first_study_date,
    local_home,
    location,
    require_locations,
    required_locations,
)


def test_local_locations_lie_under_the_home_folder(tmp_path: Path) -> None:
    settings = {"SCREENLAKE_HOME": str(tmp_path)}
    assert local_home(settings) == tmp_path
    assert location(settings, "SCREENLAKE_PHI_ZONE") == str(tmp_path / "phi")
    assert location(settings, "SCREENLAKE_RESEARCH_ZONE_WORKING_COPY") == str(
        tmp_path / "work" / "research"
    )
    assert location({**settings, "SCREENLAKE_PHI_ZONE": "s3://b/p"}, "SCREENLAKE_PHI_ZONE") == (
        "s3://b/p"
    )


def test_without_a_home_the_local_folder_is_var_in_the_current_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert location({}, "SCREENLAKE_DROP") == str(tmp_path / "var" / "drop")


def test_production_names_every_missing_location() -> None:
    with pytest.raises(ConfigurationError) as raised:
        require_locations("production", {"SCREENLAKE_PHI_ZONE": "s3://phi/zone"})
    message = str(raised.value)
    for name in (
        "SCREENLAKE_RESEARCH_ZONE",
        "SCREENLAKE_MODELS",
        "SCREENLAKE_DROP",
        "SCREENLAKE_PHI_ZONE_WORKING_COPY",
    ):
        assert name in message
    assert "SCREENLAKE_RESEARCH_ZONE_WORKING_COPY" not in message  # not on object storage


def test_production_with_a_pacs_needs_no_drop() -> None:
    assert "SCREENLAKE_DROP" not in required_locations({"SCREENLAKE_PACS": "dicomweb"})
    require_locations(
        "production",
        {
            "SCREENLAKE_PACS": "dicomweb",
            "SCREENLAKE_PHI_ZONE": "/srv/phi",
            "SCREENLAKE_RESEARCH_ZONE": "/srv/research",
            "SCREENLAKE_MODELS": "/srv/models",
        },
    )


def test_local_needs_nothing_and_an_unknown_environment_is_refused() -> None:
    require_locations("local", {})
    with pytest.raises(ConfigurationError, match="staging"):
        require_locations("staging", {})


def test_first_study_date_is_the_go_live_date_set() -> None:
    assert first_study_date({"SCREENLAKE_FIRST_STUDY_DATE": " 2025-06-01 "}) == date(2025, 6, 1)


@pytest.mark.parametrize("value", ["", "   "])
def test_first_study_date_unset_is_the_first_of_2024(value: str) -> None:
    assert first_study_date({}) == date(2024, 1, 1)
    assert first_study_date({"SCREENLAKE_FIRST_STUDY_DATE": value}) == date(2024, 1, 1)


@pytest.mark.parametrize("value", ["2025-02-30", "01-06-2025", "20250601", "2025-W22-1", "June"])
def test_first_study_date_not_a_yyyy_mm_dd_day_is_refused_naming_the_setting(value: str) -> None:
    with pytest.raises(ConfigurationError, match=r"SCREENLAKE_FIRST_STUDY_DATE must be a date"):
        first_study_date({"SCREENLAKE_FIRST_STUDY_DATE": value})
