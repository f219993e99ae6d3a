"""The whole graph materialised on a synthetic export, with real local resources."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dagster as dg
import duckdb
import polars as pl
import pyarrow.parquet as pq
import pydicom
import pytest

from orchestration.definitions import defs
from orchestration.partitions import partition_key
from orchestration.resources import resources_for
from screenlake import layout
from screenlake.keys import PSEUDONYM_KEY_ENV
from screenlake.programmes import PROGRAMME_NAMES
from screenlake.verify import index_originals, scan_files
from tests.conftest import Export

pytestmark = pytest.mark.slow


def _graph() -> list[Any]:
    return [*defs.assets, *defs.asset_checks]  # type: ignore[list-item]


@dataclass(frozen=True)
class PipelineRun:
    """The zones after every partition of the export ran, and each run's result."""

    phi: Path
    research: Path
    results: dict[str, dg.ExecuteInProcessResult]
    resources: dict[str, Any]
    instance: dg.DagsterInstance


def _zones(root: Path, drop: Path, **extra: str) -> dict[str, Any]:
    return resources_for(
        "local",
        {
            "SCREENLAKE_DROP": str(drop),
            "SCREENLAKE_PHI_ZONE": str(root / "phi"),
            "SCREENLAKE_RESEARCH_ZONE": str(root / "research"),
            "SCREENLAKE_DEID_WORKERS": "2",
            **extra,
        },
    )


@pytest.fixture(scope="module")
def pipeline(
    synthetic_export: Export,
    session_keys: dict[str, str],
    tmp_path_factory: pytest.TempPathFactory,
) -> PipelineRun:
    root = tmp_path_factory.mktemp("zones")
    resources = _zones(root, synthetic_export.drop)
    instance = dg.DagsterInstance.ephemeral()
    results = {}
    for day in synthetic_export.days:
        for programme in PROGRAMME_NAMES:
            key = partition_key(day, programme)
            results[str(key)] = dg.materialize(
                _graph(), resources=resources, partition_key=key, instance=instance
            )
    return PipelineRun(root / "phi", root / "research", results, resources, instance)


def _lake(run: PipelineRun, table: str) -> pl.DataFrame:
    return pl.read_parquet(str(run.research / "lake" / table / "*" / "*.parquet"))


def test_every_partition_succeeds_and_every_check_passes(pipeline: PipelineRun) -> None:
    for result in pipeline.results.values():
        assert result.success
        evaluations = result.get_asset_check_evaluations()
        graph = defs.resolve_asset_graph()
        assert {(e.asset_key, e.check_name) for e in evaluations} == {
            (k.asset_key, k.name) for k in graph.asset_check_keys
        }
        assert all(e.passed for e in evaluations), [
            (e.check_name, e.description) for e in evaluations if not e.passed
        ]


def test_every_input_file_is_deidentified_or_quarantined(
    pipeline: PipelineRun, synthetic_export: Export
) -> None:
    audit = _lake(pipeline, "deidentification_audit")
    on_disk = sum(1 for p in synthetic_export.drop.rglob("*") if p.is_file())
    assert audit.height == on_disk == synthetic_export.instances + synthetic_export.bad_files
    deidentified = audit.filter(pl.col("outcome") == "deidentified")
    assert deidentified.height == synthetic_export.instances
    assert (
        sum(1 for _ in (pipeline.research / "dicom").rglob("*.dcm")) == synthetic_export.instances
    )


def test_quarantine_holds_the_bad_files_with_reasons(
    pipeline: PipelineRun, synthetic_export: Export
) -> None:
    originals = sorted((pipeline.phi / "quarantine").rglob("*.dcm"))
    reasons = sorted((pipeline.phi / "quarantine").rglob("*.reason.txt"))
    assert len(originals) == len(reasons) == synthetic_export.bad_files
    texts = {r.read_text().strip() for r in reasons}
    assert any(t.startswith("empty file") for t in texts)
    assert any(t.startswith("not a DICOM file") for t in texts)
    assert any("SOPInstanceUID" in t for t in texts)
    assert any("truncated" in t.lower() or "pixel data" in t.lower() for t in texts)


def test_no_identifier_reaches_the_research_zone(pipeline: PipelineRun) -> None:
    index = index_originals(sorted((pipeline.phi / "raw").rglob("*.dcm")))
    assert len(index.tokens) > 20  # the originals do carry PHI
    files = sorted(pipeline.research.rglob("*.dcm"))
    findings = scan_files(((f, f.relative_to(pipeline.research).as_posix()) for f in files), index)
    assert findings == []
    # The lake's tables hold no original identifier either.
    for table in ("instance_catalog", "study_findings", "deidentification_audit"):
        frame = _lake(pipeline, table)
        for column in frame.columns:
            values = frame[column].cast(pl.String).drop_nulls().to_list()
            assert not [v for v in values if index.match(v)], (table, column)


def test_research_files_are_pseudonymised_and_readable(pipeline: PipelineRun) -> None:
    for path in sorted((pipeline.research / "dicom").rglob("*.dcm"))[:20]:
        ds = pydicom.dcmread(path)
        assert ds.PatientIdentityRemoved == "YES"
        assert str(ds.PatientID).startswith("SL")
        assert str(ds.SOPInstanceUID).startswith("2.25.")
        assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
        assert path.stem == ds.SOPInstanceUID


def test_catalogue_predictions_and_findings_line_up(pipeline: PipelineRun) -> None:
    catalog = _lake(pipeline, "instance_catalog")
    predictions = _lake(pipeline, "instance_predictions")
    studies = _lake(pipeline, "study_catalog")
    findings = _lake(pipeline, "validated_findings")
    assert catalog["sop_instance_uid"].n_unique() == catalog.height
    assert set(predictions["sop_instance_uid"]) == set(catalog["sop_instance_uid"])
    assert set(findings["study_instance_uid"]) == set(studies["study_instance_uid"])
    scored = predictions.filter(pl.col("status") == "ok")["score"]
    assert scored.len() > 0 and scored.min() >= 0 and scored.max() <= 1
    assert findings["model_version"].null_count() == 0
    assert findings["weights_sha256"].str.len_chars().min() == 64


def test_worklist_rows_match_flagged_studies(
    pipeline: PipelineRun, synthetic_export: Export
) -> None:
    findings = _lake(pipeline, "validated_findings")
    flagged = findings.filter(pl.col("flag").fill_null(False))
    rows = []
    for path in sorted((pipeline.phi / "worklists").rglob("*.csv")):
        with path.open() as handle:
            rows.extend(csv.DictReader(handle))
    assert len(rows) == flagged.height
    with synthetic_export.labels.open() as handle:
        accessions = {r["accession_number"] for r in csv.DictReader(handle)}
    assert {r["accession_number"] for r in rows} <= accessions  # re-identified
    with (pipeline.phi / "audit" / "reidentifications.csv").open() as handle:
        audit = list(csv.DictReader(handle))
    assert sum(int(r["rows_reidentified"]) for r in audit) >= len(rows)
    assert all(r["requested_by"].startswith("dagster run ") for r in audit)
    for day_rows in _by_file(pipeline):
        ranks = [int(r["priority_rank"]) for r in day_rows]
        assert ranks == sorted(ranks)


def test_findings_reports_go_to_the_phi_outbox_from_a_drop(pipeline: PipelineRun) -> None:
    flagged = _lake(pipeline, "validated_findings").filter(pl.col("flag").fill_null(False))
    rows = []
    for path in sorted((pipeline.phi / "reports").rglob("sent.csv")):
        with path.open() as handle:
            rows.extend(csv.DictReader(handle))
    assert len(rows) == flagged.height
    assert all(r["accepted"] == "False" and r["reason"] == "written to outbox" for r in rows)
    outbox = {p.stem: p for p in (pipeline.phi / "outbox").rglob("*.dcm")}
    assert set(outbox) == {r["sop_instance_uid"] for r in rows}
    for row in rows:
        report = pydicom.dcmread(outbox[row["sop_instance_uid"]])
        assert report.StudyInstanceUID == row["original_study_instance_uid"]
        assert report.Modality == "SR"


def _by_file(run: PipelineRun) -> list[list[dict[str, str]]]:
    out = []
    for path in sorted((run.phi / "worklists").rglob("*.csv")):
        with path.open() as handle:
            out.append(list(csv.DictReader(handle)))
    return out


def test_lake_views_answer_sql(pipeline: PipelineRun) -> None:
    with duckdb.connect(str(pipeline.research / "lake.duckdb")) as con:
        con.execute("SET file_search_path = ?", [str(pipeline.research / "lake")])
        rows = con.execute(
            "SELECT sum(instances_deidentified), sum(instances_quarantined) FROM programme_batch_summary"
        ).fetchone()
    audit = _lake(pipeline, "deidentification_audit")
    assert rows == (
        audit.filter(pl.col("outcome") == "deidentified").height,
        audit.filter(pl.col("outcome") == "quarantined").height,
    )


def test_no_research_batch_token_in_the_event_log(
    pipeline: PipelineRun, synthetic_export: Export, session_keys: dict[str, str]
) -> None:
    # Every event of a run, its metadata and messages (context.log too), sits beside the
    # partition's real date in the UI: a batch token there would undo the date shift.
    key = session_keys[PSEUDONYM_KEY_ENV].encode()
    tokens = {
        layout.Batch(day, programme).research_id(key)
        for day in synthetic_export.days
        for programme in PROGRAMME_NAMES
    }
    entries = 0
    for partition, result in pipeline.results.items():
        for entry in pipeline.instance.all_logs(result.run_id):
            entries += 1
            text = dg.serialize_value(entry)
            named = [t for t in tokens if t in text]
            assert not named, (partition, entry.dagster_event_type, entry.user_message)
    assert entries > 10 * len(pipeline.results)


def test_the_research_zone_never_names_a_dagster_run(pipeline: PipelineRun) -> None:
    # The UI shows each run ID beside its partition's real date; the research zone holds keyed
    # tokens of run IDs instead, in file names and contents alike.
    run_ids = {result.run_id for result in pipeline.results.values()}
    files = [p for p in pipeline.research.rglob("*") if p.is_file()]
    assert any(p.suffix == ".parquet" for p in files) and any(p.suffix == ".json" for p in files)
    for path in files:
        texts = [
            path.relative_to(pipeline.research).as_posix(),
            path.read_bytes().decode("latin-1"),
        ]
        if path.suffix == ".parquet":  # compressed: read the values themselves
            table = pq.read_table(path)
            texts += [repr(table.to_pylist()), repr(table.schema.metadata)]
        assert not [r for r in run_ids for t in texts if r in t], path


def test_rerunning_a_partition_replaces_it(pipeline: PipelineRun, synthetic_export: Export) -> None:
    before = _lake(pipeline, "instance_catalog").height
    key = partition_key(synthetic_export.days[0], PROGRAMME_NAMES[0])
    result = dg.materialize(_graph(), resources=pipeline.resources, partition_key=key)
    assert result.success
    assert _lake(pipeline, "instance_catalog").height == before
