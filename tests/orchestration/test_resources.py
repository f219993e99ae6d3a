from __future__ import annotations

from pathlib import Path

import pytest

from models import bundled_models_root
from orchestration.resources import resources_for
from screenlake.errors import ConfigurationError


def _production(tmp_path: Path, **extra: str) -> dict[str, str]:
    return {
        "SCREENLAKE_DROP": str(tmp_path / "drop"),
        "SCREENLAKE_PHI_ZONE": str(tmp_path / "phi"),
        "SCREENLAKE_RESEARCH_ZONE": str(tmp_path / "research"),
        "SCREENLAKE_MODELS": "bundled",
        **extra,
    }


def test_production_takes_every_location_from_its_settings(tmp_path: Path) -> None:
    resources = resources_for("production", _production(tmp_path))
    assert resources["phi_zone"].path() == tmp_path / "phi"
    assert resources["research_zone"].path() == tmp_path / "research"
    assert Path(resources["models"].models_root) == bundled_models_root()
    assert resources["models"].cache_dir is None  # nothing under the current directory


def test_a_site_models_folder_is_used_as_it_is(tmp_path: Path) -> None:
    settings = _production(tmp_path, SCREENLAKE_MODELS=str(tmp_path / "models"))
    assert resources_for("production", settings)["models"].models_root == str(tmp_path / "models")


@pytest.mark.parametrize(
    "phi, research",
    [("zones", "zones"), ("zones", "zones/research"), ("zones/phi/research", "zones/phi/..")],
)
def test_overlapping_zone_folders_are_refused(tmp_path: Path, phi: str, research: str) -> None:
    settings = _production(
        tmp_path,
        SCREENLAKE_PHI_ZONE=str(tmp_path / phi),
        SCREENLAKE_RESEARCH_ZONE=str(tmp_path / research),
    )
    with pytest.raises(ConfigurationError, match="overlap"):
        resources_for("production", settings)


def test_working_copies_of_zones_in_object_storage_must_not_overlap(tmp_path: Path) -> None:
    settings = _production(
        tmp_path,
        SCREENLAKE_PHI_ZONE="s3://hospital-phi/zone",
        SCREENLAKE_RESEARCH_ZONE="s3://hospital-research/zone",
        SCREENLAKE_PHI_ZONE_WORKING_COPY=str(tmp_path / "work"),
        SCREENLAKE_RESEARCH_ZONE_WORKING_COPY=str(tmp_path / "work"),
    )
    with pytest.raises(ConfigurationError, match="overlap"):
        resources_for("production", settings)
