"""What stops publication: a failing blocking check, and a missing key."""

from __future__ import annotations

import re
from pathlib import Path

import dagster as dg
import pytest

from orchestration.definitions import defs
from orchestration.partitions import partition_key
from orchestration.resources import resources_for
from resources.secrets import PseudonymKey
from screenlake.errors import PseudonymKeyError
from tests.assets.zones import leaky_drop
from tests.conftest import Export

pytestmark = pytest.mark.slow
PROGRAMME = "cxr_tb"


def _resources(root: Path, export: Export, drop: Path | None = None) -> dict[str, object]:
    return resources_for(
        "local",
        {
            "SCREENLAKE_DROP": str(drop or export.drop),
            "SCREENLAKE_PHI_ZONE": str(root / "phi"),
            "SCREENLAKE_RESEARCH_ZONE": str(root / "research"),
            "SCREENLAKE_DEID_WORKERS": "1",
        },
    )


def test_a_failing_blocking_check_stops_validation_and_the_worklist(
    synthetic_export: Export, session_keys: dict[str, str], tmp_path: Path
) -> None:
    resources = _resources(tmp_path, synthetic_export, leaky_drop(synthetic_export, tmp_path))
    key = partition_key(synthetic_export.days[0], PROGRAMME)
    result = dg.materialize(
        [*defs.assets, *defs.asset_checks],  # type: ignore[list-item]
        resources=resources,
        partition_key=key,
        raise_on_error=False,
    )
    assert not result.success
    checks = {e.check_name: e for e in result.get_asset_check_evaluations()}
    leak = checks["no_identifiers_in_research_zone"]
    assert not leak.passed
    assert leak.metadata["findings"].value == 1
    [finding] = leak.metadata["first_findings"].value
    assert finding["element"].startswith("ManufacturerModelName")
    assert finding["kind"] == "patient name"
    # Named by the ordinal its original landed under: neither the batch's token beside the
    # date, nor pseudonymous UIDs that would stay in the event log after an erasure.
    assert re.fullmatch(r"landed file #\d+", finding["file"])
    assert set(checks) == {
        "every_listed_file_landed_or_excluded",
        "every_landed_file_accounted_for",
        "no_identifiers_in_research_zone",
    }
    materialised = {
        e.materialization.asset_key.to_user_string()
        for e in result.get_asset_materialization_events()
    }
    assert "deidentified_instances" in materialised
    assert not materialised & {"instance_catalog", "validated_findings", "coordinator_worklist"}
    assert not (tmp_path / "phi" / "worklists").exists()
    assert not (tmp_path / "research" / "lake" / "validated_findings").exists()


def test_a_missing_pseudonym_key_stops_the_run_with_instructions(
    synthetic_export: Export, session_keys: dict[str, str], tmp_path: Path
) -> None:
    resources = _resources(tmp_path, synthetic_export)
    resources["pseudonym_key"] = PseudonymKey(
        env_var="SCREENLAKE_TEST_KEY_THAT_IS_NOT_SET", zone=resources["research_zone"]
    )
    key = partition_key(synthetic_export.days[0], PROGRAMME)
    with pytest.raises(PseudonymKeyError, match="SCREENLAKE_TEST_KEY_THAT_IS_NOT_SET is not set"):
        dg.materialize(
            [*defs.assets, *defs.asset_checks],
            resources=resources,  # type: ignore[list-item]
            partition_key=key,
        )
    assert not (tmp_path / "research" / "dicom").exists()


def test_validated_findings_alone_publishes_only_what_its_guards_passed(
    synthetic_export: Export, session_keys: dict[str, str], tmp_path: Path
) -> None:
    """A run that selects only `validated_findings` runs no check: it reads the guards'
    outcomes back from the instance, so findings whose suite failed, or that were rewritten
    after their checks ran, stay unpublished."""
    import os

    import polars as pl

    from assets.validate import PublicationBlocked
    from screenlake import layout
    from screenlake.keys import PSEUDONYM_KEY_ENV
    from screenlake.tables import STUDY_CATALOG, STUDY_FINDINGS, VALIDATED_FINDINGS

    resources = _resources(tmp_path, synthetic_export)
    instance = dg.DagsterInstance.ephemeral()
    day = synthetic_export.days[0]
    key = partition_key(day, PROGRAMME)
    graph = [*defs.assets, *defs.asset_checks]
    assert dg.materialize(graph, resources=resources, partition_key=key, instance=instance).success  # type: ignore[arg-type]
    batch, secret = layout.Batch(day, PROGRAMME), os.environ[PSEUDONYM_KEY_ENV].encode()
    published = tmp_path / "research" / layout.lake_table_path(VALIDATED_FINDINGS, batch, secret)
    published.unlink()

    def validate_alone() -> None:
        dg.materialize(
            graph,  # type: ignore[arg-type]
            resources=resources,
            partition_key=key,
            instance=instance,
            selection=dg.AssetSelection.assets("validated_findings"),
        )

    # Findings changed outside any run after their suite passed: not the file it judged.
    findings = tmp_path / "research" / layout.lake_table_path(STUDY_FINDINGS, batch, secret)
    pl.read_parquet(findings).with_columns(
        pl.lit("123456782").alias("patient_pseudonym")
    ).write_parquet(findings)
    with pytest.raises(
        PublicationBlocked,
        match="study_findings:study_findings: the lake file its checks judged has changed since",
    ):
        validate_alone()
    assert not published.exists()

    # Predictions rewritten after their checks ran: no guard vouches for what is there now.
    instance.report_runless_asset_event(
        dg.AssetMaterialization("instance_predictions", partition=key)
    )
    with pytest.raises(PublicationBlocked, match="not evaluated on the latest materialisation"):
        validate_alone()
    assert not published.exists()

    # A BSN where a pseudonym belongs reaches the findings: their suite fails in their step.
    studies = tmp_path / "research" / layout.lake_table_path(STUDY_CATALOG, batch, secret)
    pl.read_parquet(studies).with_columns(
        pl.lit("123456782").alias("patient_pseudonym")
    ).write_parquet(studies)
    refused = dg.materialize(
        graph,  # type: ignore[arg-type]
        resources=resources,
        partition_key=key,
        instance=instance,
        selection=dg.AssetSelection.assets("study_findings"),
        raise_on_error=False,
    )
    [suite] = refused.get_asset_check_evaluations()
    assert suite.check_name == "findings_suite_passes" and not suite.passed
    with pytest.raises(
        PublicationBlocked, match=r"study_findings:findings_suite_passes: failed: findings suite"
    ):
        validate_alone()
    assert not published.exists()
