"""The keys are checked first: a wrong or malformed key stops a run before anything lands, and
only an audited rotation lets another key in."""

from __future__ import annotations

import csv
import hashlib
import shutil
from pathlib import Path
from typing import Any

import dagster as dg
import polars as pl
import pytest

from assets.ingest import raw_instances
from orchestration.definitions import defs
from orchestration.partitions import partition_key
from screenlake import layout
from screenlake.cli import main
from screenlake.keybinding import PSEUDONYM_KEY, bound_fingerprint, fingerprint
from screenlake.keys import PSEUDONYM_KEY_ENV
from screenlake.vault import VAULT_KEY_ENV
from tests.assets.zones import local_resources
from tests.conftest import TEST_PSEUDONYM_KEY, Export

pytestmark = pytest.mark.slow
PROGRAMME = "cxr_tb"
KEY_B = "another-valid-pseudonym-key-0123456789abcdef"
CORRUPT_VAULT_KEY = "not-a-fernet-key-" * 3


def _graph() -> list[Any]:
    return [*defs.assets, *defs.asset_checks]  # type: ignore[list-item]


def _run(export: Export, root: Path, **kwargs: Any) -> dg.ExecuteInProcessResult:
    return dg.materialize(
        kwargs.pop("assets", _graph()),
        resources=local_resources(export.drop, root),
        partition_key=partition_key(export.days[0], PROGRAMME),
        **kwargs,
    )


@pytest.fixture(scope="module")
def bound_zones(
    synthetic_export: Export, session_keys: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """Both zones after one partition ran under the session's keys, which bound them."""
    root = tmp_path_factory.mktemp("bound")
    assert _run(synthetic_export, root).success
    return root


@pytest.fixture
def zones(bound_zones: Path, tmp_path: Path) -> Path:
    """A copy of the bound zones of this test's own."""
    root = tmp_path / "zones"
    shutil.copytree(bound_zones, root)
    return root


def _files(folder: Path) -> dict[str, tuple[int, str]]:
    return {
        p.relative_to(folder).as_posix(): (
            p.stat().st_mtime_ns,
            hashlib.sha256(p.read_bytes()).hexdigest(),
        )
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def _lake_studies(root: Path) -> int:
    return pl.read_parquet(
        str(root / "research" / "lake" / "study_catalog" / "*" / "*.parquet")
    ).height


def _failure(result: dg.ExecuteInProcessResult) -> tuple[str, str]:
    """The one failed step and its error, cause included."""
    [failure] = result.get_step_failure_events()
    error = failure.step_failure_data.error
    assert error is not None
    return str(failure.step_key), error.to_string()


def _events_text(result: dg.ExecuteInProcessResult) -> str:
    return "\n".join(str(event) for event in result.all_events)


def test_another_valid_pseudonym_key_stops_the_run_at_the_first_ingest_asset(
    synthetic_export: Export, zones: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    phi, research = _files(zones / "phi"), _files(zones / "research")
    studies = _lake_studies(zones)
    assert studies > 0 and any(name.startswith("raw/") for name in phi)
    monkeypatch.setenv(PSEUDONYM_KEY_ENV, KEY_B)
    result = _run(synthetic_export, zones, raise_on_error=False)
    assert not result.success
    step, error = _failure(result)
    assert step == "pacs_studies"
    assert "KeyMismatchError" in error
    assert "SCREENLAKE_PSEUDONYM_KEY holds a valid pseudonym key" in error
    assert "screenlake keys rotate --reason" in error
    assert not result.get_asset_materialization_events()
    # Nothing landed, nothing was de-identified again, nothing was rebound.
    assert _files(zones / "phi") == phi
    assert _files(zones / "research") == research
    assert _lake_studies(zones) == studies
    text = _events_text(result)
    assert KEY_B not in text and TEST_PSEUDONYM_KEY not in text
    assert str(synthetic_export.drop) not in error


def test_a_corrupt_vault_key_stops_the_run_before_anything_lands(
    synthetic_export: Export,
    session_keys: dict[str, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(VAULT_KEY_ENV, CORRUPT_VAULT_KEY)
    result = _run(synthetic_export, tmp_path, raise_on_error=False)
    assert not result.success
    step, error = _failure(result)
    assert step == "pacs_studies"
    assert "VaultError" in error and "SCREENLAKE_VAULT_KEY is not a valid Fernet key" in error
    assert not result.get_asset_materialization_events()
    assert not (tmp_path / "phi" / "raw").exists()
    assert _files(tmp_path / "phi") == {}  # not even a binding of the good pseudonym key
    assert _files(tmp_path / "research") == {}
    assert not (tmp_path / "research" / "lake").exists()
    assert not (tmp_path / "research" / "lake" / "validated_findings").exists()
    assert CORRUPT_VAULT_KEY not in _events_text(result)


def test_landing_alone_refuses_a_missing_key(
    synthetic_export: Export, zones: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    phi = _files(zones / "phi")
    monkeypatch.delenv(PSEUDONYM_KEY_ENV)
    result = _run(synthetic_export, zones, assets=[raw_instances], raise_on_error=False)
    step, error = _failure(result)
    assert step == "raw_instances"
    assert "SCREENLAKE_PSEUDONYM_KEY is not set" in error
    assert _files(zones / "phi") == phi


def test_after_an_audited_rotation_the_new_key_runs(
    synthetic_export: Export, zones: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    studies = _lake_studies(zones)
    monkeypatch.setenv(PSEUDONYM_KEY_ENV, KEY_B)
    zone_args = ["--phi-zone", str(zones / "phi"), "--research-zone", str(zones / "research")]
    assert main(["keys", "rotate", "--reason", "test rotation", *zone_args]) == 0
    with (zones / "phi" / layout.KEY_ROTATION_LOG).open() as handle:
        [record] = list(csv.DictReader(handle))
    new = fingerprint(KEY_B.encode(), PSEUDONYM_KEY)
    assert record["reason"] == "test rotation" and record["new_pseudonym_key"] == new
    assert record["old_pseudonym_key"] == fingerprint(TEST_PSEUDONYM_KEY.encode(), PSEUDONYM_KEY)
    assert record["old_vault_key"] == record["new_vault_key"] != ""

    result = _run(synthetic_export, zones)
    assert result.success
    from resources.zones import ZoneStore

    research = ZoneStore(name="research", root=str(zones / "research"))
    assert bound_fingerprint(research, PSEUDONYM_KEY) == new
    # What rotation means: the batch written under the old key stays, under its old
    # pseudonyms, beside the new one (README: Rotating keys).
    assert _lake_studies(zones) == 2 * studies
