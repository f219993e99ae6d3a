"""An objection recorded after a night's studies were taken in, before its findings are
published: the patient's findings are withheld and counted, the worklist never names them, and
the blocking check that judges the published file against the register fails on a file that
holds one."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import dagster as dg
import polars as pl
import pytest

from assets.validate import NO_OBJECTING_PATIENT, objecting_studies, objection_check
from orchestration.definitions import defs
from orchestration.partitions import partition_key
from screenlake import layout
from screenlake.objections import SCOPE_RESEARCH
from screenlake.tables import STUDY_FINDINGS, VALIDATED_FINDINGS, read_parquet
from screenlake.vault import read_vault
from tests.assets.zones import local_resources
from tests.conftest import Export
from tests.objections import record_objection

pytestmark = pytest.mark.slow
PROGRAMME = "cxr_tb"
UP_TO_FINDINGS = dg.AssetSelection.assets("study_findings", "pseudonym_vault").upstream()
PUBLISH = dg.AssetSelection.assets("validated_findings", "coordinator_worklist")


def test_findings_of_a_patient_who_objects_after_ingest_are_withheld(
    synthetic_export: Export, session_keys: dict[str, str], tmp_path: Path
) -> None:
    resources = local_resources(synthetic_export.drop, tmp_path)
    instance = dg.DagsterInstance.ephemeral()
    batch = layout.Batch(synthetic_export.days[0], PROGRAMME)
    key = resources["pseudonym_key"].key()
    everything = [*defs.assets, *defs.asset_checks]
    run = {
        "resources": resources,
        "instance": instance,
        "partition_key": str(partition_key(batch.day, PROGRAMME)),
    }
    assert dg.materialize(everything, selection=UP_TO_FINDINGS, **run).success  # type: ignore[arg-type]
    research = tmp_path / "research"
    findings = read_parquet(
        STUDY_FINDINGS, research / layout.lake_table_path(STUDY_FINDINGS, batch, key)
    )
    vault = read_vault(tmp_path / "phi" / layout.vault_path(batch), resources["vault_key"].cipher())
    flagged = findings.filter(pl.col("flag")).join(vault, on="study_instance_uid")
    patient = str(flagged["patient_id"][0])
    theirs = set(vault.filter(pl.col("patient_id") == patient)["study_instance_uid"])
    record_objection(resources, patient, SCOPE_RESEARCH, date(2024, 3, 12))

    published = dg.materialize(everything, selection=PUBLISH, **run)  # type: ignore[arg-type]

    assert published.success
    [validated] = published.asset_materializations_for_node("validated_findings")
    assert validated.metadata["studies_withheld_by_objection"].value == len(theirs)
    [check] = [
        e for e in published.get_asset_check_evaluations() if e.check_name == NO_OBJECTING_PATIENT
    ]
    assert check.passed
    written = read_parquet(
        VALIDATED_FINDINGS, research / layout.lake_table_path(VALIDATED_FINDINGS, batch, key)
    )
    assert written.height == findings.height - len(theirs)
    assert not set(written["study_instance_uid"]) & theirs
    worklist = (tmp_path / "phi" / layout.worklist_path(batch, "csv")).read_text()
    assert patient not in worklist
    logged = "".join(str(e) for e in published.all_events)
    assert patient not in logged and not [uid for uid in theirs if uid in logged]

    # The check judges what it is given: the night's findings unfiltered hold the patient's.
    objecting = objecting_studies(resources["phi_zone"], vault, batch, key)
    assert objecting == theirs
    failed = objection_check(findings, objecting)
    assert not failed.passed
    assert failed.metadata["findings_of_objecting_patients"].value == len(theirs)
    assert not [uid for uid in theirs if uid in str(failed.description)]
