"""The one switch that picks the environment's resources. Asset code never branches on it."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from resources.deidentification import DeidentificationSettings
from resources.lake import LakeDatabase
from resources.models import ModelRegistry
from resources.secrets import PseudonymKey, VaultKey
from resources.sources import ExportDropSource, StudySource
from resources.zones import ZoneStore
from screenlake import layout
from screenlake.errors import ConfigurationError

PROJECT_ROOT = Path(__file__).resolve().parents[1]
ENVIRONMENTS = ("local",)
SOURCES = ("drop", "dicomweb", "dimse")


def _setting(settings: Mapping[str, str], name: str, default: Path) -> str:
    return settings.get(name) or str(default)


def _required(settings: Mapping[str, str], name: str, why: str) -> str:
    value = (settings.get(name) or "").strip()
    if not value:
        raise ConfigurationError(f"{name} is not set; {why}")
    return value


def _number(settings: Mapping[str, str], name: str, default: float, kind: type = int) -> Any:
    text = (settings.get(name) or "").strip()
    if not text:
        return kind(default)
    try:
        value = kind(text)
    except ValueError:
        raise ConfigurationError(f"{name} must be a number; got {text!r}") from None
    if value < 0:
        raise ConfigurationError(f"{name} must not be negative; got {text!r}")
    return value


def _pacs_common(settings: Mapping[str, str], connections: int) -> dict[str, Any]:
    return {
        "lookback_days": _number(settings, "SCREENLAKE_PACS_LOOKBACK_DAYS", 7),
        "retry_attempts": _number(settings, "SCREENLAKE_PACS_RETRIES", 5),
        "retry_delay_s": _number(settings, "SCREENLAKE_PACS_RETRY_DELAY", 1.0, float),
        "timeout_s": _number(settings, "SCREENLAKE_PACS_TIMEOUT", 60.0, float),
        "lookback_until": settings.get("SCREENLAKE_PACS_LOOKBACK_UNTIL") or None,
        "connections": _number(settings, "SCREENLAKE_PACS_CONNECTIONS", connections),
    }


def source_for(settings: Mapping[str, str]) -> StudySource:
    """The study source SCREENLAKE_PACS names: `drop` (default), `dicomweb` or `dimse`.

    Passwords and tokens are not read here: the DICOMweb source reads
    SCREENLAKE_DICOMWEB_PASSWORD or SCREENLAKE_DICOMWEB_TOKEN at run time.
    """
    kind = (settings.get("SCREENLAKE_PACS") or "drop").strip().lower()
    if kind == "drop":
        return ExportDropSource(
            root=_setting(settings, "SCREENLAKE_DROP", PROJECT_ROOT / "var" / "drop")
        )
    # The PACS clients load only where a PACS is configured: the code location stays fast.
    if kind == "dicomweb":
        from resources.dicomweb import DicomWebSource

        common = _pacs_common(settings, connections=4)
        return DicomWebSource(
            url=_required(
                settings,
                "SCREENLAKE_DICOMWEB_URL",
                "set it to the PACS's DICOMweb root, e.g. https://pacs.example.org/dicom-web",
            ),
            username=settings.get("SCREENLAKE_DICOMWEB_USER") or None,
            **common,
        )
    if kind == "dimse":
        from resources.dimse import DimseSource

        common = _pacs_common(settings, connections=2)
        return DimseSource(
            host=_required(settings, "SCREENLAKE_DIMSE_HOST", "set it to the PACS's host name"),
            port=_number(settings, "SCREENLAKE_DIMSE_PORT", 104),
            called_aet=_required(settings, "SCREENLAKE_DIMSE_AET", "set it to the PACS's AE title"),
            calling_aet=(settings.get("SCREENLAKE_AET") or "SCREENLAKE").strip(),
            retrieve=(settings.get("SCREENLAKE_DIMSE_RETRIEVE") or "get").strip().lower(),
            scp_host=settings.get("SCREENLAKE_DIMSE_SCP_HOST") or "0.0.0.0",
            scp_port=_number(settings, "SCREENLAKE_DIMSE_SCP_PORT", 11113),
            associations=common.pop("connections"),
            **common,
        )
    raise ConfigurationError(
        f"SCREENLAKE_PACS={kind!r} is not a known source; use one of {', '.join(SOURCES)}"
    )


def resources_for(env: str, settings: Mapping[str, str]) -> dict[str, Any]:
    """Resources for environment `env`, with non-secret settings (folders) from `settings`.

    `local` runs embedded: the drop in var/drop, the zones in var/phi and var/research, unless
    SCREENLAKE_DROP, SCREENLAKE_PHI_ZONE or SCREENLAKE_RESEARCH_ZONE say otherwise; the study
    source is the drop unless SCREENLAKE_PACS names a PACS (see `source_for`). Secrets are never
    read here: the key resources and the DICOMweb source read their variables at run time.
    """
    if env not in ENVIRONMENTS:
        raise ConfigurationError(
            f"SCREENLAKE_ENV={env!r} is not a known environment; use one of {', '.join(ENVIRONMENTS)}"
        )
    var = PROJECT_ROOT / "var"
    research_root = Path(_setting(settings, "SCREENLAKE_RESEARCH_ZONE", var / "research"))
    return {
        "source": source_for(settings),
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
