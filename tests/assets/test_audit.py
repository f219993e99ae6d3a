"""Reconciliation that blocks publication, and the audit trail of real runs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import dagster as dg
import polars as pl
import pytest

from orchestration.definitions import defs
from orchestration.partitions import partition_key
from orchestration.resources import resources_for
from screenlake import layout
from screenlake.keys import PSEUDONYM_KEY_ENV
from screenlake.tables import INSTANCE_CATALOG
from tests.conftest import Export

pytestmark = pytest.mark.slow
PUBLISH = dg.AssetSelection.assets("audit_trail").upstream()


def _graph() -> list[Any]:
    return [*defs.assets, *defs.asset_checks]  # type: ignore[list-item]


def _trail(research: Path) -> pl.DataFrame:
    return pl.read_parquet(str(research / "lake" / "audit_trail" / "*" / "*.parquet"))


@pytest.fixture
def zones(synthetic_export: Export, session_keys: dict[str, str], tmp_path: Path) -> dict[str, Any]:
    return resources_for(
        "local",
        {
            "SCREENLAKE_DROP": str(synthetic_export.drop),
            "SCREENLAKE_PHI_ZONE": str(tmp_path / "phi"),
            "SCREENLAKE_RESEARCH_ZONE": str(tmp_path / "research"),
            "SCREENLAKE_DEID_WORKERS": "1",
        },
    )


def _run(
    zones: dict[str, Any], key: dg.MultiPartitionKey, instance: dg.DagsterInstance, **kw: Any
) -> dg.ExecuteInProcessResult:
    return dg.materialize(
        _graph(), resources=zones, partition_key=key, instance=instance, selection=PUBLISH, **kw
    )


def test_each_run_adds_its_own_trail_and_rewrites_none(
    zones: dict[str, Any],
    synthetic_export: Export,
    session_keys: dict[str, str],
    tmp_path: Path,
) -> None:
    instance = dg.DagsterInstance.ephemeral()
    key = partition_key(synthetic_export.days[0], "cxr_tb")
    first = _run(zones, key, instance)
    assert first.success
    checks = {e.check_name: e.passed for e in first.get_asset_check_evaluations()}
    assert checks["every_deidentified_file_catalogued"] and checks["worklist_matches_findings"]

    trail = _trail(tmp_path / "research")
    secret = session_keys[PSEUDONYM_KEY_ENV].encode()
    assert set(trail["run_token"]) == {layout.research_run_id(secret, first.run_id)}
    materialised = set(trail.filter(pl.col("event") == "materialisation")["subject"])
    assert {"raw_instances", "deidentified_instances", "instance_predictions"} <= materialised
    assert set(trail.filter(pl.col("event") == "export")["subject"]) == {
        "coordinator_worklist",
        "pacs_findings_reports",
    }
    assert trail.filter(pl.col("event") == "check")["outcome"].to_list().count("failed") == 0
    assert trail["profile_version"].drop_nulls().n_unique() == 1
    assert set(trail["model_name"].drop_nulls()) == {"cxr_tb_reference"}
    # Only counts and pseudonymous tokens: no real date, no accession, no patient ID.
    assert (
        not trail.select(pl.all().cast(pl.String).str.contains(str(synthetic_export.days[0])))
        .to_series()
        .any()
    )

    before = {
        p: p.read_bytes()
        for p in (tmp_path / "research" / "lake" / "audit_trail").rglob("*.parquet")
    }
    second = _run(zones, key, instance)
    after = list((tmp_path / "research" / "lake" / "audit_trail").rglob("*.parquet"))
    assert len(after) == len(before) + 1
    assert all(p.read_bytes() == data for p, data in before.items())
    assert set(_trail(tmp_path / "research")["run_token"]) == {
        layout.research_run_id(secret, first.run_id),
        layout.research_run_id(secret, second.run_id),
    }


def test_a_file_lost_after_deidentification_blocks_publication(
    zones: dict[str, Any], synthetic_export: Export, tmp_path: Path
) -> None:
    import os

    instance = dg.DagsterInstance.ephemeral()
    day = synthetic_export.days[0]
    key = partition_key(day, "lung_ldct")
    assert _run(zones, key, instance).success
    batch = layout.Batch(day, "lung_ldct")
    catalog = (
        tmp_path
        / "research"
        / layout.lake_table_path(INSTANCE_CATALOG, batch, os.environ[PSEUDONYM_KEY_ENV].encode())
    )
    pl.read_parquet(catalog).slice(1).write_parquet(catalog)  # one instance goes missing
    worklist = tmp_path / "phi" / layout.worklist_path(batch, "csv")
    worklist.unlink()

    later = dg.AssetSelection.assets(
        "instance_predictions", "study_findings", "validated_findings", "coordinator_worklist"
    )
    result = dg.materialize(
        _graph(), resources=zones, partition_key=key, instance=instance,
        selection=later, raise_on_error=False,
    )  # fmt: skip

    # The predictions agree with the shortened catalogue, but the catalogue is no longer the
    # file that its checks judged: publication is refused, naming it.
    assert not result.success
    [failure] = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    assert failure.step_key == "validated_findings"
    message = failure.step_failure_data.error.cause.message  # type: ignore[union-attr]
    assert "instance_catalog:instance_catalog: the lake file its checks judged has changed" in (
        message
    )
    assert not worklist.exists()  # publication was blocked
