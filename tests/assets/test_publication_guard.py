"""What stops publication: a failing blocking check, and a missing key."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import dagster as dg
import pytest
import torch

from orchestration.definitions import defs
from orchestration.partitions import partition_key
from orchestration.resources import resources_for
from resources.models import DEFAULT_MODELS_ROOT, ModelRegistry
from resources.secrets import PseudonymKey
from screenlake.errors import PseudonymKeyError
from screenlake.inference.registry import sha256_file
from tests.conftest import Export

pytestmark = pytest.mark.slow
PROGRAMME = "cxr_tb"


class _Diverged(torch.nn.Module):
    """A model whose arithmetic blew up: every output is NaN."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1).mean(dim=1, keepdim=True) * float("nan")


def _diverged_registry(root: Path) -> ModelRegistry:
    for name in ("cxr_tb_reference", "lung_ldct_reference"):
        shutil.copytree(DEFAULT_MODELS_ROOT / name, root / name)
    folder = root / "cxr_tb_reference"
    torch.jit.save(torch.jit.script(_Diverged()), folder / "weights.pt")
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest.update(
        format="torchscript",
        version="1.0.1-diverged",
        weights_sha256=sha256_file(folder / "weights.pt"),
    )
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return ModelRegistry(models_root=str(root))


def _resources(root: Path, export: Export) -> dict[str, object]:
    return resources_for(
        "local",
        {
            "SCREENLAKE_DROP": str(export.drop),
            "SCREENLAKE_PHI_ZONE": str(root / "phi"),
            "SCREENLAKE_RESEARCH_ZONE": str(root / "research"),
            "SCREENLAKE_DEID_WORKERS": "1",
        },
    )


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_a_failing_blocking_check_stops_validation_and_the_worklist(
    synthetic_export: Export, session_keys: dict[str, str], tmp_path: Path
) -> None:
    resources = {
        **_resources(tmp_path, synthetic_export),
        "models": _diverged_registry(tmp_path / "models"),
    }
    key = partition_key(synthetic_export.days[0], PROGRAMME)
    result = dg.materialize(
        [*defs.assets, *defs.asset_checks],  # type: ignore[list-item]
        resources=resources,
        partition_key=key,
        raise_on_error=False,
    )
    assert not result.success
    checks = {e.check_name: e for e in result.get_asset_check_evaluations()}
    assert not checks["scores_in_unit_interval"].passed
    assert checks["scores_in_unit_interval"].metadata["outside"].value > 0
    assert checks["no_identifiers_in_research_zone"].passed
    materialised = {
        m.asset_key.to_user_string()
        for m in result.get_asset_materialization_events()
        and [e.materialization for e in result.get_asset_materialization_events()]
    }
    assert "instance_predictions" in materialised
    assert not materialised & {"study_findings", "validated_findings", "coordinator_worklist"}
    assert not (tmp_path / "phi" / "worklists").exists()
    assert not (tmp_path / "research" / "lake" / "validated_findings").exists()


def test_a_missing_pseudonym_key_stops_the_run_with_instructions(
    synthetic_export: Export, session_keys: dict[str, str], tmp_path: Path
) -> None:
    resources = {
        **_resources(tmp_path, synthetic_export),
        "pseudonym_key": PseudonymKey(env_var="SCREENLAKE_TEST_KEY_THAT_IS_NOT_SET"),
    }
    key = partition_key(synthetic_export.days[0], PROGRAMME)
    with pytest.raises(PseudonymKeyError, match="SCREENLAKE_TEST_KEY_THAT_IS_NOT_SET is not set"):
        dg.materialize(
            [*defs.assets, *defs.asset_checks],
            resources=resources,  # type: ignore[list-item]
            partition_key=key,
        )
    assert not (tmp_path / "research" / "dicom").exists()
