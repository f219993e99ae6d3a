"""An objection recorded before the night: the patient's studies are listed, left out, counted,
and never landed."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pydicom
import pydicom.errors
import pytest

from orchestration.definitions import defs
from orchestration.partitions import partition_key
from screenlake import layout
from screenlake.objections import SCOPE_RESEARCH
from screenlake.tables import LANDED_INSTANCES, read_parquet
from tests.assets.zones import local_resources
from tests.conftest import Export
from tests.objections import record_objection

pytestmark = pytest.mark.slow
PROGRAMME = "cxr_tb"
INGEST = dg.AssetSelection.assets("pacs_studies", "raw_instances")


def _radiographs_of_the_day(export: Export) -> list[tuple[Path, pydicom.Dataset]]:
    """The first day's readable radiographs and their headers."""
    day = export.drop / export.days[0].strftime("%Y%m%d")
    found = []
    for path in sorted(day.rglob("*.dcm")):
        if not path.parent.name.endswith(("_CR", "_DX")):
            continue
        try:
            found.append((path, pydicom.dcmread(path, stop_before_pixels=True)))
        except pydicom.errors.InvalidDicomError:
            continue  # a damaged file of the export: it follows its study's folder
    return found


def test_an_objecting_patients_studies_are_never_landed(
    synthetic_export: Export, session_keys: dict[str, str], tmp_path: Path
) -> None:
    radiographs = _radiographs_of_the_day(synthetic_export)
    patient = str(radiographs[0][1].PatientID)
    theirs = [(p, ds) for p, ds in radiographs if str(ds.PatientID) == patient]
    studies = {str(ds.StudyInstanceUID) for _, ds in theirs}
    # A study is a folder of the drop; every file in it, damaged or not, is the patient's.
    study_folders = {p.parent.parent for p, _ in theirs}
    files = [f for folder in study_folders for f in folder.rglob("*") if f.is_file()]
    resources = local_resources(synthetic_export.drop, tmp_path)
    record_objection(resources, patient, SCOPE_RESEARCH, synthetic_export.days[0])
    batch = layout.Batch(synthetic_export.days[0], PROGRAMME)

    result = dg.materialize(
        defs.assets,  # type: ignore[arg-type]
        selection=INGEST,
        resources=resources,
        partition_key=partition_key(batch.day, PROGRAMME),
    )

    [listed] = [
        e.materialization
        for e in result.get_asset_materialization_events()
        if e.materialization.asset_key == dg.AssetKey("pacs_studies")
    ]
    assert listed.metadata["studies_excluded_by_objection"].value == len(studies)
    assert listed.metadata["files_excluded_by_objection"].value == len(files)
    manifest = read_parquet(LANDED_INSTANCES, tmp_path / "phi" / layout.raw_manifest_path(batch))
    assert manifest.height > 0
    # Nothing from the patient's study folders was copied in: not their images, nor a damaged
    # file beside them.
    folders = {d.relative_to(synthetic_export.drop).as_posix() for d in study_folders}
    landed_from = list(manifest["source_path"])
    assert not [p for p in landed_from if any(p.startswith(f"{d}/") for d in folders)]
    assert len(landed_from) == listed.metadata["files"].value
    # The reconciliation: listed = landed + excluded by objection.
    [landed] = result.asset_materializations_for_node("raw_instances")
    assert landed.metadata["files_excluded_by_objection"].value == len(files)
    [check] = result.get_asset_check_evaluations()
    assert check.passed
    listed_files = listed.metadata["files"].value + len(files)
    assert check.description == (
        f"listed = landed + excluded by objection: {manifest.height + len(files)}"
    )
    assert listed_files == manifest.height + len(files)
    logged = "".join(str(e) for e in result.all_events)
    assert patient not in logged


def test_the_nights_listing_waits_for_an_erasure_that_started_first(
    synthetic_export: Export, session_keys: dict[str, str], tmp_path: Path
) -> None:
    from dagster._core.utils import make_new_run_id

    resources = local_resources(synthetic_export.drop, tmp_path)
    instance = dg.DagsterInstance.ephemeral()
    erasure = make_new_run_id()
    instance.add_run(
        dg.DagsterRun(
            job_name="patient_erasure", run_id=erasure, status=dg.DagsterRunStatus.STARTED
        )
    )
    night = {
        "resources": resources,
        "instance": instance,
        "partition_key": partition_key(synthetic_export.days[0], PROGRAMME),
        "run_config": {"ops": {"pacs_studies": {"config": {"wait_seconds": 0, "waits": 2}}}},
    }

    waited = dg.materialize(defs.assets, selection=INGEST, raise_on_error=False, **night)  # type: ignore[arg-type]

    assert not waited.success
    retries = [
        e for e in waited.all_events if e.event_type == dg.DagsterEventType.STEP_UP_FOR_RETRY
    ]
    assert len(retries) == 2
    assert not (tmp_path / "phi" / "ingest").exists()  # nothing listed while it erased
    instance.delete_run(erasure)
    assert dg.materialize(defs.assets, selection=INGEST, **night).success  # type: ignore[arg-type]
