"""The one switch that picks the environment's resources. Asset code never branches on it."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from resources.deidentification import DeidentificationSettings
from resources.lake import LakeDatabase
from resources.models import ModelRegistry
from resources.secrets import PseudonymKey, VaultKey
from resources.sources import ExportDropSource
from resources.zones import ZoneStore
from screenlake import layout
from screenlake.errors import ConfigurationError

PROJECT_ROOT = Path(__file__).resolve().parents[1]
ENVIRONMENTS = ("local",)


def _setting(settings: Mapping[str, str], name: str, default: Path) -> str:
    return settings.get(name) or str(default)


def resources_for(env: str, settings: Mapping[str, str]) -> dict[str, Any]:
    """Resources for environment `env`, with non-secret settings (folders) from `settings`.

    `local` runs embedded: the drop in var/drop, the zones in var/phi and var/research, unless
    SCREENLAKE_DROP, SCREENLAKE_PHI_ZONE or SCREENLAKE_RESEARCH_ZONE say otherwise. Secrets are
    never read here: the key resources read their environment variables at run time.
    """
    if env not in ENVIRONMENTS:
        raise ConfigurationError(
            f"SCREENLAKE_ENV={env!r} is not a known environment; use one of {', '.join(ENVIRONMENTS)}"
        )
    var = PROJECT_ROOT / "var"
    research_root = Path(_setting(settings, "SCREENLAKE_RESEARCH_ZONE", var / "research"))
    return {
        "source": ExportDropSource(root=_setting(settings, "SCREENLAKE_DROP", var / "drop")),
        "phi_zone": ZoneStore(
            name="PHI", root=_setting(settings, "SCREENLAKE_PHI_ZONE", var / "phi")
        ),
        "research_zone": ZoneStore(name="research", root=str(research_root)),
        "pseudonym_key": PseudonymKey(),
        "vault_key": VaultKey(),
        "deidentification": DeidentificationSettings(
            profile_path=settings.get("SCREENLAKE_DEID_PROFILE") or None,
            workers=int(settings.get("SCREENLAKE_DEID_WORKERS", "0")),
        ),
        "lake": LakeDatabase(
            database=str(research_root / layout.LAKE_DATABASE),
            lake_root=str(research_root / layout.LAKE_DIR),
        ),
        "models": ModelRegistry(
            models_root=_setting(settings, "SCREENLAKE_MODELS", PROJECT_ROOT / "models"),
            device=settings.get("SCREENLAKE_DEVICE") or None,
        ),
    }
