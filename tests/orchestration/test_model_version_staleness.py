"""A second registered model version makes inference and what follows it stale, nothing else."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import polars as pl
import pytest
from dagster._core.definitions.data_version import StaleCauseCategory, StaleStatus

from assets.infer import models_version
from models import bundled_models_root
from orchestration.definitions import definitions_for
from orchestration.partitions import partition_key
from resources.models import ModelRegistry
from screenlake.programmes import get_programme
from tests.conftest import Export
from tests.orchestration.staleness import (
    Wave,
    rematerialise_stale,
    run_partition,
    settings_for,
    statuses,
)

pytestmark = pytest.mark.slow

# The first day of the synthetic export holds chest radiographs, so this partition has
# predictions to re-make. The code version covers every programme's model (Dagster keeps one
# code version per asset, not per partition), so a new cxr_tb model makes lung_ldct partitions
# stale too: per-programme granularity is not available through code_version.
PROGRAMME = "cxr_tb"
NEW_VERSION = "1.0.1"
INFERENCE_AND_AFTER = {
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
UPSTREAM = {
    "pacs_studies",
    "raw_instances",
    "deidentified_instances",
    "pseudonym_vault",
    "instance_catalog",
    "series_catalog",
    "study_catalog",
}
INFERENCE_NAMES = {"instance_predictions", "study_findings"}
INFERENCE_CHECKS = {"predictions_suite_passes", "findings_suite_passes"}


@dataclass(frozen=True)
class Upgrade:
    """One partition run with the bundled models, then re-materialised, wave after wave, from
    what Dagster finds stale after a new model version is registered."""

    models: Path
    research: Path
    bundled_defs: dg.Definitions
    upgraded_defs: dg.Definitions
    after_first_run: dict[str, StaleStatus]
    after_upgrade: dict[str, StaleStatus]
    waves: list[Wave]
    after_waves: dict[str, StaleStatus]


def _register_new_version(models: Path, model_name: str, version: str) -> None:
    """Copy the bundled models to `models` and give `model_name` a new version, same weights."""
    shutil.copytree(bundled_models_root(), models, ignore=shutil.ignore_patterns("*.py"))
    path = models / model_name / "manifest.json"
    manifest = json.loads(path.read_text("utf-8"))
    manifest["version"] = version
    path.write_text(json.dumps(manifest, indent=2), "utf-8")


@pytest.fixture(scope="module")
def upgrade(
    synthetic_export: Export,
    session_keys: dict[str, str],
    tmp_path_factory: pytest.TempPathFactory,
) -> Upgrade:
    root = tmp_path_factory.mktemp("upgrade")
    partition = partition_key(synthetic_export.days[0], PROGRAMME)
    instance = dg.DagsterInstance.ephemeral()

    bundled_defs = definitions_for("local", settings_for(root, synthetic_export.drop))
    assert run_partition(bundled_defs, instance, partition).success
    after_first_run = statuses(bundled_defs, instance, partition)

    models = root / "models"
    _register_new_version(models, get_programme(PROGRAMME).model_name, NEW_VERSION)
    upgraded_defs = definitions_for(
        "local", settings_for(root, synthetic_export.drop, SCREENLAKE_MODELS=str(models))
    )
    after_upgrade = statuses(upgraded_defs, instance, partition)
    waves = rematerialise_stale(upgraded_defs, instance, partition)
    return Upgrade(
        models=models,
        research=root / "research",
        bundled_defs=bundled_defs,
        upgraded_defs=upgraded_defs,
        after_first_run=after_first_run,
        after_upgrade=after_upgrade,
        waves=waves,
        after_waves=statuses(upgraded_defs, instance, partition),
    )


def _code_versions(defs: dg.Definitions) -> dict[str, str | None]:
    graph = defs.resolve_asset_graph()
    return {
        key.to_user_string(): graph.get(key).code_version
        for key in map(dg.AssetKey, INFERENCE_NAMES)
    }


def test_inference_code_version_follows_the_configured_models_folder(upgrade: Upgrade) -> None:
    bundled = models_version(ModelRegistry(models_root=str(bundled_models_root())))
    upgraded = models_version(ModelRegistry(models_root=str(upgrade.models)))
    assert f"cxr_tb_reference@{NEW_VERSION}#" in upgraded
    assert bundled != upgraded
    assert set(_code_versions(upgrade.bundled_defs).values()) == {bundled}
    assert set(_code_versions(upgrade.upgraded_defs).values()) == {upgraded}


def test_a_programme_can_use_another_registered_model_without_code_changes(
    upgrade: Upgrade, tmp_path: Path
) -> None:
    models = tmp_path / "models"
    shutil.copytree(upgrade.models, models)
    hospital = models / "hospital_cxr_v3"
    shutil.copytree(models / "cxr_tb_reference", hospital)
    manifest = json.loads((hospital / "manifest.json").read_text())
    manifest.update(name="hospital_cxr_v3", version="3.0.0")
    (hospital / "manifest.json").write_text(json.dumps(manifest))
    settings = {"SCREENLAKE_MODELS": str(models), "SCREENLAKE_MODEL_CXR_TB": "hospital_cxr_v3"}

    defs = definitions_for("local", settings)

    assert defs.resources["models"].model_name_for("cxr_tb") == "hospital_cxr_v3"
    assert defs.resources["models"].model_name_for("lung_ldct") == "lung_ldct_reference"
    assert set(_code_versions(defs).values()) == {models_version(defs.resources["models"])}
    assert "hospital_cxr_v3@3.0.0#" in models_version(defs.resources["models"])


def test_a_run_leaves_every_asset_of_its_partition_fresh(upgrade: Upgrade) -> None:
    assert upgrade.after_first_run == dict.fromkeys(
        INFERENCE_AND_AFTER | UPSTREAM, StaleStatus.FRESH
    )


def test_a_new_model_version_makes_only_the_inference_assets_stale(upgrade: Upgrade) -> None:
    assert upgrade.after_upgrade == {
        **dict.fromkeys(INFERENCE_AND_AFTER | UPSTREAM, StaleStatus.FRESH),
        **dict.fromkeys(INFERENCE_NAMES, StaleStatus.STALE),
    }
    first = upgrade.waves[0]
    for name in INFERENCE_NAMES:
        assert first.root_causes[name] == {(name, StaleCauseCategory.CODE)}, name


def test_inference_and_what_follows_it_rematerialise_and_nothing_else(upgrade: Upgrade) -> None:
    stale = [wave.stale for wave in upgrade.waves]
    assert stale[0] == INFERENCE_NAMES
    checks = {e.check_name for e in upgrade.waves[0].run.get_asset_check_evaluations()}
    assert checks == INFERENCE_CHECKS
    # Each asset below inference turns stale once its parent has new data, and re-runs once.
    assert set().union(*stale) == INFERENCE_AND_AFTER
    assert sum(len(s) for s in stale) == len(INFERENCE_AND_AFTER)
    for wave in upgrade.waves:
        assert wave.run.success
        made = {
            e.materialization.asset_key.to_user_string()
            for e in wave.run.get_asset_materialization_events()
        }
        assert made == wave.stale
        assert all(e.passed for e in wave.run.get_asset_check_evaluations())
        for name, causes in wave.root_causes.items():
            assert causes and {asset for asset, _ in causes} <= INFERENCE_AND_AFTER, (name, causes)
    assert upgrade.after_waves == dict.fromkeys(INFERENCE_AND_AFTER | UPSTREAM, StaleStatus.FRESH)


def test_new_rows_carry_the_new_model_version(upgrade: Upgrade) -> None:
    bundled = json.loads(
        (bundled_models_root() / "cxr_tb_reference" / "manifest.json").read_text("utf-8")
    )
    for table in ("instance_predictions", "study_findings", "validated_findings"):
        frame = pl.read_parquet(str(upgrade.research / "lake" / table / "*" / "*.parquet"))
        assert frame.height > 0, table
        assert set(frame["model_version"]) == {NEW_VERSION}, table
        assert set(frame["model_name"]) == {"cxr_tb_reference"}, table
        assert set(frame["weights_sha256"]) == {bundled["weights_sha256"]}, table
