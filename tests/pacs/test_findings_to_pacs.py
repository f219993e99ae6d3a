"""Findings back to the PACS: a partition materialised with SCREENLAKE_PACS=dicomweb files one SR
per flagged study into its original study in Orthanc, once however often it runs; and DIMSE
C-STORE sends a built report."""

from __future__ import annotations

import csv
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import dagster as dg
import polars as pl
import pydicom
import pytest
import requests

from orchestration.definitions import defs
from orchestration.partitions import partition_key
from screenlake.devservers.orthanc import PASSWORD, USER, Orthanc
from screenlake.findings_report import SR_SOP_CLASS_UID, StudyFinding, findings_report
from screenlake.layout import Batch, reports_sent_path
from screenlake.pacs.store import ACCEPTED
from tests.pacs.checks import dicomweb_resources, dimse, first_day_orthanc
from tests.pacs.conftest import PacsExport

pytestmark = [pytest.mark.pacs, pytest.mark.slow]

PROGRAMME = "lung_ldct"
REPORTS = dg.AssetSelection.assets("pacs_findings_reports")


@pytest.fixture(scope="module")
def pacs(
    pacs_export: PacsExport, tmp_path_factory: pytest.TempPathFactory, dicomweb_password: str
) -> Iterator[Orthanc]:
    """An Orthanc of this module's own, holding the export's first day."""
    server = first_day_orthanc(tmp_path_factory.mktemp("orthanc-reports"), pacs_export)
    try:
        yield server
    finally:
        server.stop()


def _sr_instances(server: Orthanc, study_uid: str) -> list[str]:
    """SOPInstanceUIDs of the SR instances Orthanc holds in a study (QIDO-RS)."""
    response = requests.get(
        f"{server.url}/studies/{study_uid}/instances",
        params={"Modality": "SR"},
        auth=(USER, PASSWORD),
        timeout=10,
    )
    response.raise_for_status()
    found = response.json() if response.content else []
    return sorted(pydicom.Dataset.from_json(item).SOPInstanceUID for item in found)


def _study_images(server: Orthanc, study_uid: str) -> set[str]:
    """SOPInstanceUIDs of the study's instances that are not SRs (QIDO-RS)."""
    response = requests.get(
        f"{server.url}/studies/{study_uid}/instances",
        params={"includefield": "00080060"},
        auth=(USER, PASSWORD),
        timeout=10,
    )
    response.raise_for_status()
    found = [pydicom.Dataset.from_json(item) for item in response.json()]
    return {ds.SOPInstanceUID for ds in found if ds.get("Modality") != "SR"}


def _stored(server: Orthanc, sop_uid: str) -> pydicom.Dataset:
    """One instance as Orthanc stores it."""
    found = requests.post(
        f"{server.rest}/tools/lookup", data=sop_uid, auth=(USER, PASSWORD), timeout=10
    ).json()
    instance = next(r["ID"] for r in found if r["Type"] == "Instance")
    response = requests.get(
        f"{server.rest}/instances/{instance}/file", auth=(USER, PASSWORD), timeout=10
    )
    response.raise_for_status()
    from io import BytesIO

    return pydicom.dcmread(BytesIO(response.content))


def _cited(report: pydicom.Dataset) -> set[str]:
    """SOPInstanceUIDs a report lists as its evidence in the same study."""
    return {
        item.ReferencedSOPInstanceUID
        for study in report.get("CurrentRequestedProcedureEvidenceSequence", [])
        for series in study.ReferencedSeriesSequence
        for item in series.ReferencedSOPSequence
    }


def _sent(path: Path) -> list[dict[str, str]]:
    with path.open() as handle:
        return list(csv.DictReader(handle))


def test_every_flagged_study_gets_one_sr_in_its_original_study(
    pacs: Orthanc, pacs_export: PacsExport, session_keys: dict[str, str], tmp_path: Path
) -> None:
    resources = dicomweb_resources(pacs, tmp_path)
    day = pacs_export.days[0]
    instance = dg.DagsterInstance.ephemeral()
    graph: list[Any] = [*(defs.assets or []), *(defs.asset_checks or [])]

    def run(selection: dg.AssetSelection) -> dg.ExecuteInProcessResult:
        return dg.materialize(
            graph,
            resources=resources,
            partition_key=partition_key(day, PROGRAMME),
            instance=instance,
            selection=selection,
        )

    first = run(dg.AssetSelection.all())
    findings = pl.read_parquet(
        str(tmp_path / "research" / "lake" / "validated_findings" / "*" / "*.parquet")
    )
    flagged = findings.filter(pl.col("flag").fill_null(False)).height
    assert flagged > 0, "the fixture export should flag at least one study of the day"
    metadata = first.asset_materializations_for_node("pacs_findings_reports")[0].metadata
    assert metadata["reports"].value == metadata["reports_accepted"].value == flagged
    assert metadata["reports_written_to_outbox"].value == 0

    sent_path = tmp_path / "phi" / reports_sent_path(Batch(day, PROGRAMME))
    sent = _sent(sent_path)
    assert len(sent) == flagged
    assert all(row["accepted"] == "True" and row["reason"] == ACCEPTED for row in sent)
    originals = set(pacs.uploaded)  # every SR names an original study Orthanc already held
    for row in sent:
        assert _sr_instances(pacs, row["original_study_instance_uid"]) == [row["sop_instance_uid"]]
        assert row["sop_instance_uid"] not in originals
        # The report cites every image of the study it screened, and nothing else.
        report = _stored(pacs, row["sop_instance_uid"])
        assert _cited(report) == _study_images(pacs, row["original_study_instance_uid"])

    run(REPORTS)
    again = _sent(sent_path)
    assert [r["sop_instance_uid"] for r in again] == [r["sop_instance_uid"] for r in sent]
    for row in again:
        assert _sr_instances(pacs, row["original_study_instance_uid"]) == [row["sop_instance_uid"]]
    log = (tmp_path / "phi" / "audit" / "reidentifications.csv").read_text()
    assert log.count("findings reports to the PACS") == 2


def test_dimse_c_store_files_a_built_report_into_the_original_study(
    own_orthanc: Callable[[], Orthanc],
) -> None:
    server = own_orthanc()
    original = pydicom.dcmread(next(iter(server.uploaded.values())), stop_before_pixels=True)
    finding = StudyFinding(
        original_study_instance_uid=str(original.StudyInstanceUID),
        patient_id=str(original.PatientID),
        patient_name=None,
        patient_birth_date=None,
        patient_sex=None,
        accession_number=str(original.get("AccessionNumber") or "") or None,
        study_date=None,
        programme=PROGRAMME,
        score=0.9,
        flag=True,
        threshold=0.5,
        priority_rank=1,
        model_name="test-model",
        model_version="1.0.0",
        weights_sha256="ab" * 32,
    )
    report = findings_report(
        finding,
        series_instance_uid="2.25.1001",
        sop_instance_uid="2.25.1002",
        content_datetime=datetime(2024, 3, 12, 9, 30, tzinfo=UTC),
    )
    assert report.SOPClassUID == SR_SOP_CLASS_UID
    source = dimse(server)

    outcomes = source.store([report])
    assert [(o.sop_instance_uid, o.accepted) for o in outcomes] == [("2.25.1002", True)]
    assert source.request_counts()["c-store"] == 1
    assert _sr_instances(server, finding.original_study_instance_uid) == ["2.25.1002"]

    assert [o.accepted for o in source.store([report])] == [True]  # again: still one
    assert _sr_instances(server, finding.original_study_instance_uid) == ["2.25.1002"]
