"""The de-identification profile a deployment configures versions the de-identification assets:
an edited profile makes them and everything downstream stale, and nothing upstream."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import polars as pl
import pytest
from dagster._core.definitions.data_version import StaleCauseCategory, StaleStatus

from orchestration.definitions import definitions_for
from orchestration.partitions import partition_key
from screenlake.deid.profile import load_default_profile, load_profile
from tests.conftest import Export
from tests.orchestration.staleness import (
    Wave,
    rematerialise_stale,
    run_partition,
    settings_for,
    statuses,
)
from tests.profiles import edited_profile

pytestmark = pytest.mark.slow

PROGRAMME = "cxr_tb"
NEW_VERSION = "2024b-3-hospital"
DEIDENTIFICATION = {"deidentified_instances", "pseudonym_vault"}
INGEST = {"pacs_studies", "raw_instances"}


@dataclass(frozen=True)
class ProfileChange:
    """One partition run under the shipped profile, then re-materialised, wave after wave, from
    what Dagster finds stale once the deployment points at an edited copy of it."""

    shipped_defs: dg.Definitions
    edited_defs: dg.Definitions
    edited_profile: Path
    after_change: dict[str, StaleStatus]
    waves: list[Wave]
    after_waves: dict[str, StaleStatus]
    research: Path


def _code_versions(defs: dg.Definitions) -> set[str | None]:
    graph = defs.resolve_asset_graph()
    return {graph.get(dg.AssetKey(name)).code_version for name in DEIDENTIFICATION}


@pytest.fixture(scope="module")
def change(
    synthetic_export: Export,
    session_keys: dict[str, str],
    tmp_path_factory: pytest.TempPathFactory,
) -> ProfileChange:
    root = tmp_path_factory.mktemp("profile-change")
    partition = partition_key(synthetic_export.days[0], PROGRAMME)
    instance = dg.DagsterInstance.ephemeral()
    shipped_defs = definitions_for("local", settings_for(root, synthetic_export.drop))
    assert run_partition(shipped_defs, instance, partition).success
    assert set(statuses(shipped_defs, instance, partition).values()) == {StaleStatus.FRESH}

    edited = edited_profile(root / "profiles", version=NEW_VERSION)
    edited_defs = definitions_for(
        "local", settings_for(root, synthetic_export.drop, SCREENLAKE_DEID_PROFILE=str(edited))
    )
    after_change = statuses(edited_defs, instance, partition)
    waves = rematerialise_stale(edited_defs, instance, partition, downstream=True)
    return ProfileChange(
        shipped_defs=shipped_defs,
        edited_defs=edited_defs,
        edited_profile=edited,
        after_change=after_change,
        waves=waves,
        after_waves=statuses(edited_defs, instance, partition),
        research=root / "research",
    )


def test_the_configured_profile_versions_the_deidentification_assets(
    change: ProfileChange,
) -> None:
    shipped, edited = load_default_profile(), load_profile(change.edited_profile)
    assert _code_versions(change.shipped_defs) == {shipped.code_version}
    assert _code_versions(change.edited_defs) == {edited.code_version}
    assert edited.code_version.startswith(f"screenlake-research {NEW_VERSION}#")


def test_an_edit_without_a_new_version_is_a_new_code_version(tmp_path: Path) -> None:
    edited = load_profile(edited_profile(tmp_path / "profiles", kept_text_sweep=False))
    shipped = load_default_profile()
    assert edited.version == shipped.version
    assert edited.code_version != shipped.code_version
    # Layout alone is not an edit.
    same = edited_profile(tmp_path / "reformatted")
    same.write_text(json.dumps(json.loads(same.read_text("utf-8"))), "utf-8")  # one line
    assert load_profile(same).code_version == shipped.code_version


def test_a_broken_profile_stops_the_code_location_loading(tmp_path: Path) -> None:
    from screenlake.errors import ConfigurationError

    broken = edited_profile(tmp_path / "profiles", options={"noSuchOption": True})
    with pytest.raises(ConfigurationError, match="noSuchOption"):
        definitions_for("local", {"SCREENLAKE_DEID_PROFILE": str(broken)})


def test_a_new_profile_makes_only_deidentification_stale(change: ProfileChange) -> None:
    assert {n for n, s in change.after_change.items() if s is StaleStatus.STALE} == (
        DEIDENTIFICATION
    )
    first = change.waves[0]
    assert first.stale == DEIDENTIFICATION
    for name in DEIDENTIFICATION:
        assert first.root_causes[name] == {(name, StaleCauseCategory.CODE)}, name


def test_everything_downstream_rematerialises_once_and_ingest_never(
    change: ProfileChange,
) -> None:
    every = set(change.after_change)
    [wave] = change.waves  # one "materialise stale and downstream" leaves nothing stale
    assert wave.run.success
    made = [
        e.materialization.asset_key.to_user_string()
        for e in wave.run.get_asset_materialization_events()
    ]
    assert sorted(made) == sorted(every - INGEST)
    assert all(e.passed for e in wave.run.get_asset_check_evaluations())
    assert change.after_waves == dict.fromkeys(every, StaleStatus.FRESH)


def test_new_audit_rows_carry_the_new_profile_version(change: ProfileChange) -> None:
    audit = pl.read_parquet(
        str(change.research / "lake" / "deidentification_audit" / "*" / "*.parquet")
    )
    assert audit.height > 0
    assert set(audit["profile_version"]) == {NEW_VERSION}
