"""Carrying out an erasure the register asks for: recorded (encrypted) in the PHI zone before
anything goes, every batch of the patient rewritten, the ledger written without PHI and
queryable as a view, and a second look finding nothing left to do."""

from __future__ import annotations

from dataclasses import replace
from datetime import date
from pathlib import Path
from typing import Any

import dagster as dg
import duckdb
import pytest

from orchestration.definitions import defs
from orchestration.partitions import partition_key
from screenlake import layout
from screenlake.erasure.run import erasure_requests
from screenlake.erasure.traces import batch_vaults
from screenlake.lake import query, refresh_views
from screenlake.objections import SCOPE_ALL
from tests.assets.zones import local_resources
from tests.conftest import Export
from tests.objections import carry_out_erasures, record_objection

pytestmark = pytest.mark.slow
PROGRAMME = "cxr_tb"
# Weeks after the study: the ledger shows when an erasure was asked for, never a study date.
ASKED_ON = date(2024, 5, 2)


def _published(export: Export, root: Path) -> tuple[dict[str, Any], str]:
    """The first day's radiographs through the whole graph; the resources and a patient ID."""
    resources = local_resources(export.drop, root)
    assert dg.materialize(
        [*defs.assets, *defs.asset_checks],  # type: ignore[list-item]
        resources=resources,
        partition_key=partition_key(export.days[0], PROGRAMME),
    ).success
    vaults = list(batch_vaults(root / "phi", resources["vault_key"].cipher()))
    return resources, min(p for _, v in vaults for p in v["patient_id"])


def test_an_erasure_is_recorded_carried_out_and_ledgered_once(
    synthetic_export: Export, session_keys: dict[str, str], tmp_path: Path
) -> None:
    resources, patient = _published(synthetic_export, tmp_path)
    record_objection(resources, patient, SCOPE_ALL, ASKED_ON)

    [request] = carry_out_erasures(resources)

    assert request.finished_at is not None
    assert patient in request.traces.phi_values() and request.traces.research_values()
    record = tmp_path / "phi" / layout.erasure_request_path(request.erasure_id)
    assert patient.encode() not in record.read_bytes()  # encrypted under the vault key
    [kept] = erasure_requests(resources["phi_zone"], resources["vault_key"].cipher())
    assert kept == request
    with duckdb.connect(str(tmp_path / "lake.duckdb")) as con:
        refresh_views(con, tmp_path / "research" / "lake")
        ledger = query(con, "SELECT * FROM erasure_ledger ORDER BY zone, artefact")
    assert set(ledger["erasure_id"]) == {request.erasure_id}
    assert {"phi", "research"} == set(ledger["zone"])
    assert {"vault", "table instance_catalog", "research dicom"} <= set(ledger["artefact"])
    assert (ledger["rows_after"] < ledger["rows_before"]).all()
    cells = {str(v) for column in ledger.iter_columns() for v in column}
    assert not cells & (request.traces.phi_values() | request.traces.research_values())
    assert str(synthetic_export.days[0]) not in cells  # batches by research name only

    assert carry_out_erasures(resources) == []  # nothing left to do


def test_an_erasure_that_died_half_way_is_finished_with_the_values_it_recorded(
    synthetic_export: Export, session_keys: dict[str, str], tmp_path: Path
) -> None:
    resources, patient = _published(synthetic_export, tmp_path)
    record_objection(resources, patient, SCOPE_ALL, ASKED_ON)
    [done] = carry_out_erasures(resources)
    # As if the run had died after recording the request: the vault no longer knows the
    # patient, so only the record can say what to remove.
    started = replace(done, finished_at=None)
    path = tmp_path / "phi" / layout.erasure_request_path(done.erasure_id)
    path.write_bytes(started.encrypted(resources["vault_key"].cipher()))

    [finished] = carry_out_erasures(resources)

    assert finished.erasure_id == done.erasure_id
    assert finished.traces == done.traces
    assert finished.finished_at is not None


def test_the_register_sensor_launches_the_erasure_and_dagster_keeps_no_trace(
    synthetic_export: Export, session_keys: dict[str, str], tmp_path: Path
) -> None:
    from orchestration.automation import objection_register_sensor
    from orchestration.definitions import definitions_for
    from tests.orchestration.staleness import settings_for

    resources, patient = _published(synthetic_export, tmp_path)
    site = definitions_for("local", settings_for(tmp_path, synthetic_export.drop))
    instance = dg.DagsterInstance.ephemeral()
    quiet = objection_register_sensor(
        dg.build_sensor_context(instance=instance, resources={"phi_zone": resources["phi_zone"]})
    )
    assert isinstance(quiet, dg.SensorResult) and not quiet.run_requests  # nothing to do
    record_objection(resources, patient, SCOPE_ALL, ASKED_ON)

    tick = objection_register_sensor(
        dg.build_sensor_context(
            instance=instance, cursor=quiet.cursor, resources={"phi_zone": resources["phi_zone"]}
        )
    )
    assert isinstance(tick, dg.SensorResult) and len(tick.run_requests or []) == 1
    run = site.resolve_job_def("patient_erasure").execute_in_process(instance=instance)

    assert run.success
    assert run.output_for_node("patient_erasures") == 1
    [request] = erasure_requests(resources["phi_zone"], resources["vault_key"].cipher())
    traces = request.traces.phi_values() | request.traces.research_values()
    logged = "".join(
        str(record.event_log_entry)
        for record in instance.get_records_for_run(run.run_id, limit=10_000).records
    )
    assert request.erasure_id in logged
    assert not [value for value in traces if value in logged]
    unchanged = objection_register_sensor(
        dg.build_sensor_context(
            instance=instance, cursor=tick.cursor, resources={"phi_zone": resources["phi_zone"]}
        )
    )
    assert isinstance(unchanged, dg.SensorResult) and not unchanged.run_requests


def test_an_erasure_waits_while_a_screening_run_is_in_progress(
    synthetic_export: Export, session_keys: dict[str, str], tmp_path: Path
) -> None:
    from dagster._core.utils import make_new_run_id

    from orchestration.definitions import definitions_for
    from tests.orchestration.staleness import settings_for

    resources, patient = _published(synthetic_export, tmp_path)
    record_objection(resources, patient, SCOPE_ALL, ASKED_ON)
    erasure = definitions_for(
        "local", settings_for(tmp_path, synthetic_export.drop)
    ).resolve_job_def("patient_erasure")
    instance = dg.DagsterInstance.ephemeral()
    night = make_new_run_id()
    instance.add_run(
        dg.DagsterRun(
            job_name="screening_pipeline", run_id=night, status=dg.DagsterRunStatus.STARTED
        )
    )
    waits = {"ops": {"patient_erasures": {"config": {"wait_seconds": 0, "waits": 2}}}}

    waited = erasure.execute_in_process(instance=instance, run_config=waits, raise_on_error=False)

    assert not waited.success
    retries = [
        e for e in waited.all_events if e.event_type == dg.DagsterEventType.STEP_UP_FOR_RETRY
    ]
    assert len(retries) == 2
    assert erasure_requests(resources["phi_zone"], resources["vault_key"].cipher()) == []
    # The night ends: the erasure goes ahead.
    instance.delete_run(night)
    done = erasure.execute_in_process(instance=instance, run_config=waits)
    assert done.success and done.output_for_node("patient_erasures") == 1
