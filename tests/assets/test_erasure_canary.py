"""A canary patient through the whole pipeline and out again: two nights published (worklists
reviewed, labels in, reports in the outbox), then an erasure asked for, carried out by the job
the register's sensor launches, followed by the runs the recompute sensor asks for. After it no
byte of the patient is left in either zone, every other patient's rows are as they were, the
counts still reconcile, the ledger says what went, publication still passes its guards, and
the patient's study sent again on a later night is not taken in."""

from __future__ import annotations

import csv
import json
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import dagster as dg
import duckdb
import polars as pl
import pydicom
import pytest
from openpyxl import load_workbook

from orchestration.automation import erasure_recompute_sensor, objection_register_sensor
from orchestration.definitions import definitions_for
from orchestration.partitions import partition_key
from screenlake import layout
from screenlake.cli import main
from screenlake.erasure.run import ErasureRequest, erasure_requests
from screenlake.lake import PARTITION_TABLES, query, refresh_views
from screenlake.objections import SCOPE_ALL
from screenlake.reviews import import_reviews
from screenlake.tables import (
    AUDIT_TRAIL,
    DEIDENTIFICATION_AUDIT,
    DRIFT_METRICS,
    INSTANCE_CATALOG,
    INSTANCE_PREDICTIONS,
    LANDED_INSTANCES,
    PERFORMANCE_AUDIT,
    VALIDATED_FINDINGS,
    TableSchema,
    read_parquet,
)
from screenlake.worklist import EXPORT_COLUMNS, WORKLIST_SHEET
from tests.assets.zones import local_resources
from tests.conftest import Export
from tests.objections import record_objection
from tests.orchestration.staleness import settings_for

pytestmark = pytest.mark.slow
PROGRAMME = "cxr_tb"
ASKED_ON = date(2024, 5, 2)
STATUS = EXPORT_COLUMNS.index("review_status") + 1
# Recomputed after the erasure, or a file per run: their rows are not compared as they were.
RECOMPUTED = {DRIFT_METRICS.name, PERFORMANCE_AUDIT.name, AUDIT_TRAIL.name}


@dataclass
class Site:
    """Two published nights of a drop copied into the test's folder, on one instance."""

    root: Path
    drop: Path
    resources: dict[str, Any]
    defs: dg.Definitions
    instance: dg.DagsterInstance
    days: tuple[date, date]

    @property
    def key(self) -> bytes:
        return bytes(self.resources["pseudonym_key"].key())

    def batch(self, day: date) -> layout.Batch:
        return layout.Batch(day, PROGRAMME)

    def run(self, day: date, assets: list[str] | None = None) -> dg.ExecuteInProcessResult:
        job = self.defs.resolve_job_def("screening_pipeline")
        return job.execute_in_process(
            instance=self.instance,
            partition_key=str(partition_key(day, PROGRAMME)),
            asset_selection=[dg.AssetKey(a) for a in assets] if assets else None,
        )

    def table(self, table: TableSchema, day: date) -> pl.DataFrame:
        path = self.root / "research" / layout.lake_table_path(table, self.batch(day), self.key)
        return read_parquet(table, path)


@pytest.fixture
def site(synthetic_export: Export, session_keys: dict[str, str], tmp_path: Path) -> Site:
    drop = tmp_path / "drop"
    shutil.copytree(synthetic_export.drop, drop)
    days = (synthetic_export.days[0], synthetic_export.days[1])
    built = Site(
        tmp_path,
        drop,
        local_resources(drop, tmp_path),
        definitions_for("local", settings_for(tmp_path, drop)),
        dg.DagsterInstance.ephemeral(),
        days,
    )
    labels = tmp_path / "phi" / layout.DEMO_LABELS
    labels.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(synthetic_export.labels, labels)
    for day in days:
        assert built.run(day).success
    return built


def _flagged_patient(site: Site) -> str:
    """A patient on the first night's worklist: re-identified, reviewed, reported."""
    with (site.root / "phi" / layout.worklist_path(site.batch(site.days[0]), "csv")).open() as f:
        rows = list(csv.DictReader(f))
    return rows[0]["patient_id"]


def _review_every_row(site: Site, day: date) -> None:
    """A coordinator marks every row of the night's worklist and it is imported."""
    xlsx = site.root / "phi" / layout.worklist_path(site.batch(day), "xlsx")
    book = load_workbook(xlsx)
    sheet = book[WORKLIST_SHEET]
    for row in range(2, sheet.max_row + 1):
        sheet.cell(row=row, column=STATUS).value = "recalled" if row % 2 else "dismissed"
    book.save(xlsx)
    import_reviews(xlsx, site.root / "phi")


def _tables(site: Site) -> dict[tuple[str, date], pl.DataFrame]:
    """Every lake table of both nights as it is now, but those recomputed after an erasure."""
    return {
        (table.name, day): site.table(table, day)
        for table in PARTITION_TABLES
        if table.name not in RECOMPUTED
        for day in site.days
    }


def _theirs(frame: pl.DataFrame, request: ErasureRequest, ordinals: set[int]) -> pl.Series:
    """The erased patient's rows of a lake table: by UID or pseudonym, and in the
    de-identification audit their quarantined files by ordinal."""
    mask = request.traces.rows_of(frame)
    if "ordinal" in frame.columns:
        mask = mask | frame["ordinal"].is_in(list(ordinals)).fill_null(False)
    return mask


def _sensor_tick(sensor: Any, site: Site, cursor: str | None) -> dg.SensorResult:
    context = dg.build_sensor_context(
        instance=site.instance, cursor=cursor, resources={"phi_zone": site.resources["phi_zone"]}
    )
    result = sensor(context)
    assert isinstance(result, dg.SensorResult)
    return result


def _recompute_requests(site: Site, run: dg.ExecuteInProcessResult) -> list[dg.RunRequest]:
    [success] = [e for e in run.all_events if e.event_type == dg.DagsterEventType.RUN_SUCCESS]
    with dg.build_run_status_sensor_context(
        sensor_name=erasure_recompute_sensor.name,
        dagster_instance=site.instance,
        dagster_run=run.dagster_run,
        dagster_event=success,
        resources={
            "research_zone": site.resources["research_zone"],
            "pseudonym_key": site.resources["pseudonym_key"],
        },
    ) as context:
        requests = erasure_recompute_sensor(context)
    assert isinstance(requests, list)
    return requests


def _first_readable(study: Path) -> pydicom.Dataset:
    """The header of a study folder's first file that is not one of the export's damaged ones."""
    for path in sorted(study.rglob("*.dcm")):
        try:
            return pydicom.dcmread(path, stop_before_pixels=True)
        except pydicom.errors.InvalidDicomError:
            continue
    raise AssertionError("a study folder of the export with no readable file")


def _counted_by_data_docs(site: Site, day: date) -> int:
    """The rows the batch's Data Docs say the catalogue suite validated."""
    evidence = (
        site.root / "research" / layout.evidence_dir(site.batch(day), site.key, layout.DATA_DOCS)
    )
    counts = {
        result["result"]["element_count"]
        for path in evidence.rglob("screenlake-instance_catalog*.json")
        for result in json.loads(path.read_text())["results"]
        if "element_count" in (result.get("result") or {})
    }
    [count] = counts
    return int(count)


def _files(root: Path) -> Iterator[Path]:
    return (p for p in sorted(root.rglob("*")) if p.is_file() and "drop" not in p.parts)


def test_an_erased_canary_leaves_no_byte_and_every_other_row_as_it_was(
    site: Site, capsys: pytest.CaptureFixture[str]
) -> None:
    first, second = site.days
    phi, research = site.root / "phi", site.root / "research"
    _review_every_row(site, first)
    # The second night's audit again, now with the first night's decisions as labels.
    assert site.run(second, ["performance_audit", "programme_report"]).success
    patient = _flagged_patient(site)
    before = _tables(site)
    manifests = {
        day: read_parquet(LANDED_INSTANCES, phi / layout.raw_manifest_path(site.batch(day)))
        for day in site.days
    }
    audited_before = site.table(PERFORMANCE_AUDIT, second)
    documented_before = _counted_by_data_docs(site, first)
    worklist_csv = phi / layout.worklist_path(site.batch(first), "csv")
    worklist_before = worklist_csv.read_text().splitlines()

    # As a crashed inference run leaves them: shards of the night's predictions, to take over.
    shards = research / layout.inference_shards_dir(site.batch(first), site.key, "cxr_tb_reference")
    shards.mkdir(parents=True)
    predictions = research / layout.lake_table_path(
        INSTANCE_PREDICTIONS, site.batch(first), site.key
    )
    shutil.copy(predictions, shards / "000001.parquet")

    record_objection(site.resources, patient, SCOPE_ALL, ASKED_ON)
    assert len(_sensor_tick(objection_register_sensor, site, None).run_requests or []) == 1
    erasure = site.defs.resolve_job_def("patient_erasure").execute_in_process(
        instance=site.instance
    )
    assert erasure.success
    requests = _recompute_requests(site, erasure)
    assert requests, "the recompute sensor asked for nothing"
    for run_request in requests:
        assert run_request.partition_key is not None and run_request.asset_selection
        day = date.fromisoformat(str(run_request.partition_key).split("|")[0])
        assert site.run(day, [k.to_user_string() for k in run_request.asset_selection]).success

    [request] = erasure_requests(site.resources["phi_zone"], site.resources["vault_key"].cipher())
    assert patient in request.traces.patient_ids and request.finished_at is not None
    # 1. Not a byte of the patient in either zone: the proof scan, and a plain one here.
    assert (
        main(["verify", "--erasures", "--phi-zone", str(phi), "--research-zone", str(research)])
        == 0
    )
    assert "no trace" in capsys.readouterr().out
    values = sorted(request.traces.phi_values() | request.traces.research_values())
    assert not shards.exists()
    # No file is named after them either, and the lake's DuckDB file (views only) holds none.
    names = [p.relative_to(site.root).as_posix() for p in _files(site.root) if p.is_file()]
    assert not [v for v in values for n in names if v in n]
    [database] = list(research.glob("*.duckdb"))
    assert not [v for v in values if v.encode() in database.read_bytes()]

    # 2. Every other patient's rows as they were, in their order.
    ordinals = {
        day: set(
            manifests[day].filter(
                pl.col("study_instance_uid").is_in(list(request.traces.original_study_uids))
            )["ordinal"]
        )
        for day in site.days
    }
    for (name, day), frame in before.items():
        table = next(t for t in PARTITION_TABLES if t.name == name)
        kept = frame.filter(~_theirs(frame, request, ordinals[day]))
        after = site.table(table, day)
        assert after.equals(kept), f"{name} of night {site.days.index(day) + 1}"
    erased_lines = [line for line in worklist_before if patient in line]
    assert erased_lines and worklist_csv.read_text().splitlines() == [
        line for line in worklist_before if patient not in line
    ]

    # 3. The counts reconcile: landed = de-identified + quarantined, catalogued = de-identified.
    for day in site.days:
        batch = site.batch(day)
        manifest = read_parquet(LANDED_INSTANCES, phi / layout.raw_manifest_path(batch))
        audit = site.table(DEIDENTIFICATION_AUDIT, day)
        assert manifest.height == audit.height == manifests[day].height - len(ordinals[day])
        written = audit.filter(pl.col("outcome") == "deidentified").height
        assert site.table(INSTANCE_CATALOG, day).height == written
        on_disk = research / layout.research_dicom_dir(batch, site.key)
        assert sum(1 for _ in on_disk.rglob("*.dcm")) == written

    # 4. The ledger says what went, without the patient.
    with duckdb.connect(str(site.root / "ledger.duckdb")) as con:
        refresh_views(con, research / "lake")
        ledger = query(con, "SELECT * FROM erasure_ledger")
    assert set(ledger["erasure_id"]) == {request.erasure_id}
    assert {
        "worklist csv",
        "worklist xlsx",
        "review decisions",
        "labels",
        "outbox reports",
        "research dicom",
        "inference shards",
        "data docs",
        "raw files",
        "vault",
        f"table {VALIDATED_FINDINGS.name}",
    } <= set(ledger["artefact"])
    cells = {str(v) for column in ledger.iter_columns() for v in column}
    assert not cells & set(values)

    # 5. The aggregates counted without them: the second night's audit lost their labels.
    audited_after = site.table(PERFORMANCE_AUDIT, second)
    studies = {
        w: dict(zip(f["window"], f["studies"], strict=False))
        for w, f in (("before", audited_before), ("after", audited_after))
    }
    assert studies["after"]["all_time"] < studies["before"]["all_time"]

    # The Data Docs count what is left.
    assert _counted_by_data_docs(site, first) == site.table(INSTANCE_CATALOG, first).height
    assert _counted_by_data_docs(site, first) < documented_before

    # 6. Publication still passes its guards on the erased night: the erasure is the only
    # change to the files its checks judged.
    assert site.run(first, ["validated_findings"]).success

    # 7. Dagster holds none of it: every event of every run on the instance.
    logged = "".join(
        str(record.event_log_entry)
        for run in site.instance.get_runs()
        for record in site.instance.get_records_for_run(run.run_id, limit=100_000).records
    )
    assert not [v for v in values if v in logged]


def test_the_erased_patients_study_sent_again_is_not_taken_in(site: Site) -> None:
    first, _ = site.days
    patient = _flagged_patient(site)
    record_objection(site.resources, patient, SCOPE_ALL, ASKED_ON)
    assert (
        site.defs.resolve_job_def("patient_erasure")
        .execute_in_process(instance=site.instance)
        .success
    )
    # The PACS sends the patient's study again, with another patient's, two nights later.
    later = first + timedelta(days=7)
    source_day = site.drop / first.strftime("%Y%m%d")
    target_day = site.drop / later.strftime("%Y%m%d")
    resent, others = [], []
    for study in sorted({p.parent.parent for p in source_day.rglob("*.dcm")}):
        header = _first_readable(study)
        if header.get("Modality") in ("CR", "DX"):
            (resent if str(header.PatientID) == patient else others).append(study)
    assert resent and others
    for study in [*resent, others[0]]:
        shutil.copytree(study, target_day / study.relative_to(source_day))

    result = site.run(later, ["pacs_studies", "raw_instances"])

    assert result.success
    [listed] = [m for m in result.asset_materializations_for_node("pacs_studies")]
    assert listed.metadata["studies_excluded_by_objection"].value == len(resent)
    manifest = read_parquet(
        LANDED_INSTANCES, site.root / "phi" / layout.raw_manifest_path(site.batch(later))
    )
    assert manifest.height > 0
    # Every landed file is the other patient's: none is of a study of the erased patient.
    theirs = {str(_first_readable(study).StudyInstanceUID) for study in resent}
    assert not set(manifest["study_instance_uid"].drop_nulls()) & theirs
    assert set(manifest["study_instance_uid"]) == {str(_first_readable(others[0]).StudyInstanceUID)}
