"""One partition through the whole graph with SCREENLAKE_PACS=dicomweb, against a real Orthanc
that lost an instance after listing and holds one without its SOPInstanceUID."""

from __future__ import annotations

import csv
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import polars as pl
import pytest

from orchestration.definitions import defs
from orchestration.partitions import partition_key
from screenlake.devservers.orthanc import Orthanc
from screenlake.errors import IncompleteRetrievalError
from screenlake.layout import Batch, raw_dir, source_files_path
from screenlake.tables import SOURCE_FILES, read_parquet
from tests.pacs.checks import dicomweb_resources, first_day_orthanc
from tests.pacs.conftest import PacsExport

pytestmark = [pytest.mark.pacs, pytest.mark.slow]

PROGRAMME = "lung_ldct"


@pytest.fixture(scope="module")
def pacs(
    pacs_export: PacsExport, tmp_path_factory: pytest.TempPathFactory, dicomweb_password: str
) -> Iterator[Orthanc]:
    """An Orthanc of this module's own, holding the export's first day."""
    server = first_day_orthanc(tmp_path_factory.mktemp("orthanc-pipeline"), pacs_export)
    try:
        yield server
    finally:
        server.stop()


def _messages(error: Any) -> str:
    """A step failure's error message with those of its causes."""
    parts = []
    while error is not None:
        parts.append(error.message)
        error = error.cause
    return "\n".join(parts)


def _graph() -> list[Any]:
    return [*(defs.assets or []), *(defs.asset_checks or [])]


def test_a_partition_from_dicomweb_is_published_only_once_complete(
    pacs: Orthanc,
    pacs_export: PacsExport,
    session_keys: dict[str, str],
    tmp_path: Path,
) -> None:
    resources = dicomweb_resources(pacs, tmp_path)
    day = pacs_export.days[0]
    key = partition_key(day, PROGRAMME)
    instance = dg.DagsterInstance.ephemeral()
    phi = tmp_path / "phi"

    def run(selection: dg.AssetSelection) -> dg.ExecuteInProcessResult:
        return dg.materialize(
            _graph(),
            resources=resources,
            partition_key=key,
            instance=instance,
            selection=selection,
            raise_on_error=False,
        )

    listed = run(dg.AssetSelection.assets("pacs_studies"))
    assert listed.success
    files = read_parquet(SOURCE_FILES, phi / source_files_path(Batch(day, PROGRAMME)))
    sop_uids = [u for u in files["sop_instance_uid"] if u is not None]
    assert len(sop_uids) == files.height > 10
    gone, damaged = sop_uids[4], sop_uids[7]
    pacs.strip_sop_instance_uid(damaged)
    pacs.delete(gone)

    rest = dg.AssetSelection.all() - dg.AssetSelection.assets("pacs_studies")
    incomplete = run(rest)
    assert not incomplete.success
    failure = next(e for e in incomplete.all_events if e.is_step_failure)
    assert failure.step_key == "raw_instances"
    message = _messages(failure.step_failure_data.error)
    assert IncompleteRetrievalError.__name__ in message and pacs.url in message
    assert f"1 of {files.height} instances" in message
    assert gone not in message
    published = instance.get_latest_materialization_event(dg.AssetKey("validated_findings"))
    assert published is None  # nothing published from an incomplete partition

    pacs.upload([pacs.uploaded[gone]])
    complete = run(rest)
    assert complete.success
    evaluations = complete.get_asset_check_evaluations()
    assert evaluations and all(e.passed for e in evaluations)
    landed = complete.asset_materializations_for_node("raw_instances")[0].metadata
    assert landed["files_landed"].value == files.height
    assert (
        not (phi / raw_dir(Batch(day, PROGRAMME)))
        .with_name(f"programme={PROGRAMME}.staging")
        .exists()
    )

    reasons = [p.read_text() for p in (phi / "quarantine").rglob("*.reason.txt")]
    assert len(reasons) == 1 and "SOPInstanceUID" in reasons[0]
    findings = pl.read_parquet(
        str(tmp_path / "research" / "lake" / "validated_findings" / "*" / "*.parquet")
    )
    assert findings.height == files["study_instance_uid"].n_unique()
    worklist = phi / "worklists" / PROGRAMME / f"{day.isoformat()}.csv"
    with worklist.open() as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == findings.filter(pl.col("flag").fill_null(False)).height
