from __future__ import annotations

import subprocess
import sys
import textwrap

import dagster as dg

from orchestration.definitions import defs

ASSETS = {
    "pacs_studies",
    "raw_instances",
    "deidentified_instances",
    "pseudonym_vault",
    "instance_catalog",
    "series_catalog",
    "study_catalog",
    "instance_predictions",
    "study_findings",
    "validated_findings",
    "coordinator_worklist",
    "pacs_findings_reports",
    "drift_metrics",
    "performance_audit",
    "programme_report",
    "audit_trail",
}
CHECKS = {
    ("raw_instances", "every_listed_file_landed_or_excluded"),
    ("deidentified_instances", "every_landed_file_accounted_for"),
    ("deidentified_instances", "no_identifiers_in_research_zone"),
    ("instance_catalog", "every_deidentified_file_catalogued"),
    ("instance_catalog", "catalogue_suite_passes"),
    ("instance_predictions", "predictions_suite_passes"),
    ("study_findings", "findings_suite_passes"),
    ("validated_findings", "no_finding_of_an_objecting_patient"),
    ("coordinator_worklist", "worklist_matches_findings"),
    ("drift_metrics", "input_drift"),
    ("drift_metrics", "output_drift"),
    ("performance_audit", "performance_meets_declared_minimums"),
}
# Monitoring asks a person to look; it never holds back findings.
NOT_BLOCKING = {"input_drift", "output_drift", "performance_meets_declared_minimums"}
GROUPS = {
    "pacs_studies": "ingest",
    "raw_instances": "ingest",
    "deidentified_instances": "deidentify",
    "pseudonym_vault": "deidentify",
    "instance_catalog": "catalog",
    "instance_predictions": "infer",
    "validated_findings": "validate",
    "coordinator_worklist": "publish",
    "pacs_findings_reports": "publish",
    "programme_report": "publish",
    "drift_metrics": "monitor",
    "performance_audit": "monitor",
    "audit_trail": "audit",
}


def test_definitions_list_every_asset_check_job_schedule_and_sensor() -> None:
    graph = defs.resolve_asset_graph()
    assert {k.to_user_string() for k in graph.get_all_asset_keys()} == ASSETS
    checks = {(k.asset_key.to_user_string(), k.name) for k in graph.asset_check_keys}
    assert checks == CHECKS
    for check in graph.asset_check_keys:
        assert graph.get_check_spec(check).blocking == (check.name not in NOT_BLOCKING), check
    assert defs.resolve_job_def("screening_pipeline") is not None
    assert defs.resolve_schedule_def("nightly_screening").cron_schedule == "0 2 * * *"
    assert defs.resolve_sensor_def("new_studies_sensor") is not None
    erasure = defs.resolve_job_def("patient_erasure")
    assert {node.name for node in erasure.graph.node_defs} == {"patient_erasures"}
    assert defs.resolve_sensor_def("objection_register_sensor").job_name == "patient_erasure"
    recompute = defs.resolve_sensor_def("erasure_recompute_sensor")
    assert isinstance(recompute, dg.RunStatusSensorDefinition)
    assert recompute.job_name == "screening_pipeline"


def test_every_check_runs_in_the_step_of_its_asset() -> None:
    """A check reads what its asset has just written: as a step of its own it would start a
    process and read the data again under the multiprocess executor."""
    job = defs.resolve_job_def("screening_pipeline")
    assert {node.name for node in job.graph.node_defs} == ASSETS
    assert not defs.asset_checks


def test_assets_sit_in_their_pipeline_groups_with_kinds_and_descriptions() -> None:
    graph = defs.resolve_asset_graph()
    for key in graph.get_all_asset_keys():
        node = graph.get(key)
        name = key.to_user_string()
        if name in GROUPS:
            assert node.group_name == GROUPS[name]
        assert node.kinds, name
        assert node.description, name
        assert node.partitions_def is not None, name
    for published in ("coordinator_worklist", "pacs_findings_reports"):
        lineage = graph.get(dg.AssetKey(published))
        assert {p.to_user_string() for p in lineage.parent_keys} == {
            "validated_findings",
            "pseudonym_vault",
        }
    assert graph.get(dg.AssetKey("pacs_findings_reports")).pools == {"pacs"}


def test_the_code_location_loads_without_torch_or_great_expectations() -> None:
    probe = textwrap.dedent(
        """
        import sys
        import orchestration.definitions
        heavy = sorted(m for m in ("torch", "great_expectations", "highdicom", "pynetdicom", "dicomweb_client", "matplotlib") if m in sys.modules)
        print(",".join(heavy))
        """
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
