"""An objection before the night, with SCREENLAKE_PACS=dicomweb against a real Orthanc: the
patient's studies are listed (QIDO-RS), left out, counted, and none of their instances is
asked for (WADO-RS) or landed."""

from __future__ import annotations

import csv
from pathlib import Path

import dagster as dg
import pydicom
import pytest

from orchestration.definitions import defs
from orchestration.partitions import partition_key
from screenlake.cli import main
from screenlake.devservers.orthanc import Orthanc
from screenlake.layout import (
    Batch,
    raw_manifest_path,
    reports_sent_path,
    source_files_path,
    worklist_path,
)
from screenlake.objections import SCOPE_ALL
from screenlake.programmes import route_study
from screenlake.tables import LANDED_INSTANCES, SOURCE_FILES, read_parquet
from tests.objections import carry_out_erasures, record_objection
from tests.pacs.checks import dicomweb_resources, first_day_orthanc
from tests.pacs.conftest import PacsExport

pytestmark = [pytest.mark.pacs, pytest.mark.slow]
INGEST = dg.AssetSelection.assets("pacs_studies", "raw_instances")


def _first_days_studies(export: PacsExport) -> dict[str, tuple[str, str]]:
    """The first day's studies in the PACS: StudyInstanceUID -> (PatientID, programme)."""
    day = export.days[0].strftime("%Y%m%d")
    studies = {}
    for path in export.files:
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True)
        except pydicom.errors.InvalidDicomError:
            continue
        programme = route_study(str(ds.get("Modality", "")), str(ds.get("BodyPartExamined", "")))
        if ds.get("StudyDate") == day and programme:
            studies[str(ds.StudyInstanceUID)] = (str(ds.PatientID), programme)
    return studies


def test_an_objecting_patient_is_never_retrieved_from_the_pacs(
    orthanc: Orthanc, pacs_export: PacsExport, session_keys: dict[str, str], tmp_path: Path
) -> None:
    studies = _first_days_studies(pacs_export)
    patient, programme = next(iter(studies.values()))
    theirs = {uid for uid, (p, g) in studies.items() if p == patient and g == programme}
    resources = dicomweb_resources(orthanc, tmp_path)
    record_objection(resources, patient, SCOPE_ALL, pacs_export.days[0])
    batch = Batch(pacs_export.days[0], programme)

    result = dg.materialize(
        defs.assets,  # type: ignore[arg-type]
        selection=INGEST,
        resources=resources,
        partition_key=partition_key(batch.day, programme),
    )

    [listed] = [
        e.materialization
        for e in result.get_asset_materialization_events()
        if e.materialization.asset_key == dg.AssetKey("pacs_studies")
    ]
    assert listed.metadata["studies_excluded_by_objection"].value == len(theirs) >= 1
    assert listed.metadata["files_excluded_by_objection"].value >= len(theirs)
    # What raw_instances retrieves is exactly this list: the patient is not on it.
    to_fetch = read_parquet(SOURCE_FILES, tmp_path / "phi" / source_files_path(batch))
    assert not set(to_fetch["study_instance_uid"]) & theirs
    landed = read_parquet(LANDED_INSTANCES, tmp_path / "phi" / raw_manifest_path(batch))
    assert landed.height == to_fetch.height
    assert not {p.split("/")[0] for p in landed["source_path"]} & theirs
    assert patient not in "".join(str(e) for e in result.all_events)


def test_an_erased_patient_leaves_no_trace_and_their_study_in_the_pacs_is_not_taken_again(
    pacs_export: PacsExport,
    session_keys: dict[str, str],
    tmp_path: Path,
    dicomweb_password: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """From Orthanc over DICOMweb: a night published (findings reports filed into the PACS),
    then one flagged patient erased; the proof scan finds nothing of them in either zone, the
    record of what was sent loses only their row, and the partition run again, with their study
    still in the PACS, leaves it out."""
    server = first_day_orthanc(tmp_path / "orthanc", pacs_export)
    try:
        resources = dicomweb_resources(server, tmp_path)
        batch = Batch(pacs_export.days[0], "lung_ldct")
        key = str(partition_key(batch.day, batch.programme))
        graph = [*defs.assets, *defs.asset_checks]
        assert dg.materialize(graph, resources=resources, partition_key=key).success  # type: ignore[arg-type]
        with (tmp_path / "phi" / worklist_path(batch, "csv")).open() as handle:
            patient = next(csv.DictReader(handle))["patient_id"]
        sent_path = tmp_path / "phi" / reports_sent_path(batch)
        sent_before = sent_path.read_text().splitlines()
        record_objection(resources, patient, SCOPE_ALL, pacs_export.days[0])

        [request] = carry_out_erasures(resources)

        theirs = request.traces.original_study_uids
        assert theirs and request.traces.patient_ids == {patient}
        assert (
            sent_path.read_text().splitlines()
            == [line for line in sent_before if not any(uid in line for uid in theirs)]
            != sent_before
        )
        code = main(
            [
                "verify",
                "--erasures",
                "--phi-zone",
                str(tmp_path / "phi"),
                "--research-zone",
                str(tmp_path / "research"),
            ]
        )
        printed = capsys.readouterr().out
        assert code == 0, printed
        assert patient not in printed

        again = dg.materialize(
            defs.assets, selection=INGEST, resources=resources, partition_key=key
        )  # type: ignore[arg-type]

        [listed] = again.asset_materializations_for_node("pacs_studies")
        assert listed.metadata["studies_excluded_by_objection"].value == len(theirs)
        to_fetch = read_parquet(SOURCE_FILES, tmp_path / "phi" / source_files_path(batch))
        landed = read_parquet(LANDED_INSTANCES, tmp_path / "phi" / raw_manifest_path(batch))
        assert not set(to_fetch["study_instance_uid"]) & theirs
        assert not set(landed["study_instance_uid"]) & theirs
    finally:
        server.stop()
