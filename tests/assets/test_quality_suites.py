"""The Great Expectations suites as blocking checks, run in the steps of their assets, on one\npartition of the graph."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import dagster as dg
import polars as pl
import pytest

from orchestration.definitions import defs
from orchestration.partitions import partition_key
from orchestration.resources import resources_for
from screenlake import layout
from screenlake.keys import PSEUDONYM_KEY_ENV
from screenlake.tables import INSTANCE_CATALOG, read_parquet, write_parquet
from tests.conftest import Export

pytestmark = pytest.mark.slow
PROGRAMME = "cxr_tb"
SUITE_CHECKS = {"catalogue_suite_passes", "predictions_suite_passes", "findings_suite_passes"}


def _graph() -> list[Any]:
    return [*(defs.assets or []), *(defs.asset_checks or [])]


def _resources(root: Path, export: Export) -> dict[str, Any]:
    return resources_for(
        "local",
        {
            "SCREENLAKE_DROP": str(export.drop),
            "SCREENLAKE_PHI_ZONE": str(root / "phi"),
            "SCREENLAKE_RESEARCH_ZONE": str(root / "research"),
            "SCREENLAKE_DEID_WORKERS": "1",
        },
    )


@dataclass(frozen=True)
class Partition:
    """One partition materialised whole: its zones, its batch and the run's result."""

    root: Path
    batch: layout.Batch
    key: dg.MultiPartitionKey
    result: dg.ExecuteInProcessResult


@pytest.fixture(scope="module")
def partition(
    synthetic_export: Export, session_keys: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Partition:
    root = tmp_path_factory.mktemp("suites")
    day = synthetic_export.days[0]
    key = partition_key(day, PROGRAMME)
    result = dg.materialize(
        _graph(),
        resources=_resources(root, synthetic_export),
        partition_key=key,
        instance=dg.DagsterInstance.ephemeral(),
    )
    return Partition(root, layout.Batch(day, PROGRAMME), key, result)


def _checks(result: dg.ExecuteInProcessResult) -> dict[str, dg.AssetCheckEvaluation]:
    return {
        e.check_name: e
        for e in result.get_asset_check_evaluations()
        if e.check_name in SUITE_CHECKS
    }


def _materialised(result: dg.ExecuteInProcessResult) -> set[str]:
    return {
        e.materialization.asset_key.to_user_string()
        for e in result.get_asset_materialization_events()
    }


def test_the_three_suites_pass_and_publish_their_data_docs(
    partition: Partition, session_keys: dict[str, str]
) -> None:
    assert partition.result.success
    checks = _checks(partition.result)
    assert set(checks) == SUITE_CHECKS
    for check in checks.values():
        assert check.passed, (check.check_name, check.description)
        assert cast(int, check.metadata["expectations"].value) > 10
        assert check.metadata["expectations_failed"].value == 0
    assert "validated_findings" in _materialised(partition.result)

    key = session_keys[PSEUDONYM_KEY_ENV].encode()
    evidence = layout.evidence_dir(partition.batch, key, "data_docs")
    # The metadata does not name the evidence folder: its batch token beside the real date.
    token = partition.batch.research_id(key)
    assert not [c for c in checks.values() if token in repr(c.metadata)]
    index = partition.root / "research" / evidence / "index.html"
    text = index.read_text()
    for suite in ("instance_catalog", "instance_predictions", "study_findings"):
        assert suite in text
    # The research zone names the batch by its keyed token, never by the real date.
    day = partition.batch.day
    for path in (partition.root / "research" / "evidence").rglob("*"):
        assert day.isoformat() not in str(path) and day.strftime("%Y%m%d") not in str(path)
        # Nor the Dagster run ID, which the UI shows beside the real date: a keyed token of it.
        assert partition.result.run_id not in str(path)
        if path.is_file() and path.suffix in (".html", ".json", ".yml"):
            assert partition.result.run_id not in path.read_text(errors="replace"), path


def test_a_bad_predictions_table_blocks_the_findings_and_their_publication(
    partition: Partition,
    synthetic_export: Export,
    session_keys: dict[str, str],
    tmp_path: Path,
) -> None:
    shutil.copytree(partition.root, tmp_path, dirs_exist_ok=True)
    key = session_keys[PSEUDONYM_KEY_ENV].encode()
    table = tmp_path / "research" / layout.lake_table_path(INSTANCE_CATALOG, partition.batch, key)
    catalog = read_parquet(INSTANCE_CATALOG, table)
    # One instance catalogued twice: inference scores it twice, and the suite, in the
    # inference step, finds the predictions' key repeated.
    write_parquet(pl.concat([catalog, catalog.head(1)]), INSTANCE_CATALOG, table)
    published = tmp_path / "research" / "lake" / "validated_findings"
    shutil.rmtree(published)

    result = dg.materialize(
        _graph(),
        resources=_resources(tmp_path, synthetic_export),
        partition_key=partition.key,
        selection=dg.AssetSelection.assets(
            "instance_predictions", "study_findings", "validated_findings"
        ),
        raise_on_error=False,
    )
    assert not result.success
    checks = _checks(result)
    assert set(checks) == {"predictions_suite_passes"}  # the only suite of the selection run
    check = checks["predictions_suite_passes"]
    assert not check.passed
    failures = cast(list[dict[str, Any]], check.metadata["failures"].value)
    assert {f["expectation"] for f in failures} == {
        "expect_column_values_to_be_unique(sop_instance_uid)"
    }
    assert check.metadata["failed_by_group"].value == {"uniqueness": 1}
    # Written, then held back: nothing downstream ran.
    assert _materialised(result) == {"instance_predictions"}
    assert not published.exists()
