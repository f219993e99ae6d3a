"""One partition materialised for real: the worklist's XLSX and CSV in the PHI zone, filled in,
imported back with the command, and kept across a re-run of the worklist."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dagster as dg
import polars as pl
import pytest
from openpyxl import load_workbook

from orchestration.definitions import defs
from orchestration.partitions import partition_key
from screenlake import layout
from screenlake.cli import main
from screenlake.reviews import decisions_path
from screenlake.tables import REVIEW_DECISIONS, read_parquet
from screenlake.worklist import EXPORT_COLUMNS
from tests.assets.zones import local_resources
from tests.conftest import Export

pytestmark = pytest.mark.slow

# The synthetic export's first day flags chest radiographs for TB: a worklist with rows.
PROGRAMME = "cxr_tb"
STATUS = EXPORT_COLUMNS.index("review_status") + 1


@dataclass(frozen=True)
class Partition:
    phi: Path
    batch: layout.Batch
    key: dg.MultiPartitionKey
    resources: dict[str, Any]
    result: dg.ExecuteInProcessResult

    def worklist(self, suffix: str) -> Path:
        return self.phi / layout.worklist_path(self.batch, suffix)


@pytest.fixture(scope="module")
def partition(
    synthetic_export: Export,
    session_keys: dict[str, str],
    tmp_path_factory: pytest.TempPathFactory,
) -> Partition:
    root = tmp_path_factory.mktemp("worklist_zones")
    resources = local_resources(synthetic_export.drop, root)
    day = synthetic_export.days[0]
    key = partition_key(day, PROGRAMME)
    result = dg.materialize(
        [*defs.assets, *defs.asset_checks],  # type: ignore[list-item]
        resources=resources,
        partition_key=key,
        instance=dg.DagsterInstance.ephemeral(),
        selection=dg.AssetSelection.assets("coordinator_worklist").upstream(),
    )
    return Partition(root / "phi", layout.Batch(day, PROGRAMME), key, resources, result)


def _csv_rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def test_both_exports_are_in_the_phi_zone_with_the_same_rows(partition: Partition) -> None:
    assert partition.result.success
    checks = partition.result.get_asset_check_evaluations()
    assert checks and all(c.passed for c in checks)  # the blocking checks ran before publishing
    rows = _csv_rows(partition.worklist("csv"))
    assert rows, "the partition flags no study: pick one that does"
    assert list(rows[0]) == list(EXPORT_COLUMNS)
    sheet = load_workbook(partition.worklist("xlsx"))["Worklist"]
    accessions = [r[3] for r in sheet.iter_rows(min_row=2, values_only=True)]
    assert accessions == [r["accession_number"] for r in rows]
    metadata = partition.result.asset_materializations_for_node("coordinator_worklist")[0].metadata
    assert (
        metadata["worklist_xlsx"].value
        == f"PHI zone: {layout.worklist_path(partition.batch, 'xlsx')}"
    )
    assert (
        metadata["worklist_csv"].value
        == f"PHI zone: {layout.worklist_path(partition.batch, 'csv')}"
    )
    assert metadata["studies_to_review"].value == len(rows)
    assert "cxr_tb_reference" in str(metadata["models"].value)


def test_a_filled_worklist_imports_and_survives_a_re_run(
    partition: Partition, capsys: pytest.CaptureFixture[str]
) -> None:
    xlsx = partition.worklist("xlsx")
    book = load_workbook(xlsx)
    book["Worklist"].cell(row=2, column=STATUS).value = "recalled"
    book.save(xlsx)

    assert main(["import-reviews", str(xlsx), "--phi-zone", str(partition.phi)]) == 0
    assert "1 review decisions recorded, 1 of them labels (1 positive" in capsys.readouterr().out
    decisions = read_parquet(
        REVIEW_DECISIONS, partition.phi / decisions_path(PROGRAMME, partition.batch.day)
    )
    first = _csv_rows(partition.worklist("csv"))[0]
    assert decisions.select("accession_number", "patient_id", "label").rows() == [
        (first["accession_number"], first["patient_id"], True)
    ]

    rerun = dg.materialize(
        [*defs.assets, *defs.asset_checks],  # type: ignore[list-item]
        resources=partition.resources,
        partition_key=partition.key,
        selection=[dg.AssetKey("coordinator_worklist")],
    )
    assert rerun.success
    carried = rerun.asset_materializations_for_node("coordinator_worklist")[0].metadata
    assert carried["review_entries_carried_over"].value == 1
    assert load_workbook(xlsx)["Worklist"].cell(row=2, column=STATUS).value == "recalled"
    assert _csv_rows(partition.worklist("csv"))[0]["review_status"] == "recalled"
    assert (
        pl.read_parquet(partition.phi / decisions_path(PROGRAMME, partition.batch.day)).height == 1
    )
