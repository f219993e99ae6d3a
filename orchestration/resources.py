"""The one switch that picks the environment's resources. Asset code never branches on it."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from models import bundled_models_root
from resources.deidentification import DeidentificationSettings
from resources.lake import LakeDatabase
from resources.models import ModelRegistry
from resources.secrets import PseudonymKey, VaultKey
from resources.sources import DEFAULT_SETTLE_SECONDS, ExportDropSource, StudySource
from resources.zones import ZoneStore
from screenlake import layout
from screenlake.errors import ConfigurationError
from screenlake.objectstore.access import DEFAULT_REGION
from screenlake.objectstore.location import is_s3_uri, parse_s3_uri
from screenlake.settings import (
    location,
    number,
    optional_count,
    require_locations,
    required,
    text,
)

SOURCES = ("drop", "dicomweb", "dimse")
LOCAL_SETTLE_SECONDS = 1.0
BUNDLED_MODELS = "bundled"


def _pacs_common(settings: Mapping[str, str], connections: int) -> dict[str, Any]:
    return {
        "lookback_days": number(settings, "SCREENLAKE_PACS_LOOKBACK_DAYS", 7),
        "retry_attempts": number(settings, "SCREENLAKE_PACS_RETRIES", 5),
        "retry_delay_s": number(settings, "SCREENLAKE_PACS_RETRY_DELAY", 1.0, float),
        "timeout_s": number(settings, "SCREENLAKE_PACS_TIMEOUT", 60.0, float),
        "lookback_until": settings.get("SCREENLAKE_PACS_LOOKBACK_UNTIL") or None,
        "connections": number(settings, "SCREENLAKE_PACS_CONNECTIONS", connections),
    }


def source_for(settings: Mapping[str, str], env: str = "local") -> StudySource:
    """The study source SCREENLAKE_PACS names: `drop` (default), `dicomweb` or `dimse`.

    A folder drop waits SCREENLAKE_DROP_SETTLE_SECONDS for files still being copied in: 30 s in
    production; 1 s locally, where the demo writes its drop whole before the run.

    Passwords and tokens are not read here: the DICOMweb source reads
    SCREENLAKE_DICOMWEB_PASSWORD or SCREENLAKE_DICOMWEB_TOKEN at run time.
    """
    kind = (settings.get("SCREENLAKE_PACS") or "drop").strip().lower()
    if kind == "drop":
        drop = location(settings, "SCREENLAKE_DROP")
        if not is_s3_uri(drop):
            return ExportDropSource(
                root=drop,
                settle_seconds=number(
                    settings,
                    "SCREENLAKE_DROP_SETTLE_SECONDS",
                    DEFAULT_SETTLE_SECONDS if env == "production" else LOCAL_SETTLE_SECONDS,
                    float,
                ),
            )
        from resources.s3drop import S3DropSource

        parse_s3_uri(drop, "SCREENLAKE_DROP")
        return S3DropSource(
            uri=drop,
            connections=number(settings, "SCREENLAKE_DROP_CONNECTIONS", 8),
            **_s3_access_settings(settings, "SCREENLAKE_DROP_S3"),
        )
    # The PACS clients load only where a PACS is configured: the code location stays fast.
    if kind == "dicomweb":
        from resources.dicomweb import DicomWebSource

        common = _pacs_common(settings, connections=4)
        return DicomWebSource(
            url=required(
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
            host=required(settings, "SCREENLAKE_DIMSE_HOST", "set it to the PACS's host name"),
            port=number(settings, "SCREENLAKE_DIMSE_PORT", 104),
            called_aet=required(settings, "SCREENLAKE_DIMSE_AET", "set it to the PACS's AE title"),
            calling_aet=(settings.get("SCREENLAKE_AET") or "SCREENLAKE").strip(),
            retrieve=(settings.get("SCREENLAKE_DIMSE_RETRIEVE") or "get").strip().lower(),
            scp_host=settings.get("SCREENLAKE_DIMSE_SCP_HOST") or "0.0.0.0",
            scp_port=number(settings, "SCREENLAKE_DIMSE_SCP_PORT", 11113),
            associations=common.pop("connections"),
            **common,
        )
    raise ConfigurationError(
        f"SCREENLAKE_PACS={kind!r} is not a known source; use one of {', '.join(SOURCES)}"
    )


def _s3_access_settings(settings: Mapping[str, str], credentials_env: str) -> dict[str, Any]:
    return {
        "endpoint_url": (settings.get("SCREENLAKE_S3_ENDPOINT") or "").strip() or None,
        "region": (settings.get("SCREENLAKE_S3_REGION") or "").strip() or DEFAULT_REGION,
        "credentials_env": credentials_env,
    }


def zone_for(settings: Mapping[str, str], name: str, setting: str) -> ZoneStore:
    """The zone `setting` names: a folder, or `s3://bucket/prefix` worked on through a local
    copy (`<setting>_WORKING_COPY`, by default under the home folder's work/), with the
    credentials in `<setting>_S3_ACCESS_KEY_ID` and `<setting>_S3_SECRET_ACCESS_KEY`."""
    root = location(settings, setting)
    if not is_s3_uri(root):
        return ZoneStore(name=name, root=root)
    parse_s3_uri(root, setting)  # a bad location fails at load, not in the middle of a run
    return ZoneStore(
        name=name,
        root=root,
        working_copy=location(settings, f"{setting}_WORKING_COPY"),
        **_s3_access_settings(settings, f"{setting}_S3"),
    )


def _programme_models(settings: Mapping[str, str]) -> dict[str, str]:
    """SCREENLAKE_MODEL_<PROGRAMME> (e.g. SCREENLAKE_MODEL_LUNG_LDCT): the registered model a
    programme uses instead of its reference model."""
    from screenlake.programmes import PROGRAMME_NAMES

    chosen = {}
    for programme in PROGRAMME_NAMES:
        name = (settings.get(f"SCREENLAKE_MODEL_{programme.upper()}") or "").strip()
        if name:
            chosen[programme] = name
    return chosen


def _require_apart(phi_zone: ZoneStore, research_zone: ZoneStore) -> None:
    """The two zones' local folders (roots or working copies) never hold one another: PHI
    would otherwise sit in the research zone's copy, or be replaced along with it."""
    phi, research = phi_zone.path(), research_zone.path()
    if phi == research or phi in research.parents or research in phi.parents:
        raise ConfigurationError(
            f"the PHI zone's and the research zone's local folders overlap ({phi} and "
            f"{research}): give each zone, and each working copy, a folder of its own"
        )


def _models_root(settings: Mapping[str, str]) -> str:
    """SCREENLAKE_MODELS: a folder of model folders; `bundled` (or unset, locally) for the
    reference models that ship with the code, found through their package wherever it lies."""
    chosen = text(settings, "SCREENLAKE_MODELS")
    return str(bundled_models_root()) if chosen in ("", BUNDLED_MODELS) else chosen


def resources_for(env: str, settings: Mapping[str, str]) -> dict[str, Any]:
    """Resources for environment `env`, with non-secret settings (folders) from `settings`.

    `local` runs embedded: the drop, the zones and caches in folders under SCREENLAKE_HOME
    (default `./var`) unless SCREENLAKE_DROP, SCREENLAKE_PHI_ZONE, SCREENLAKE_RESEARCH_ZONE...
    say otherwise, and the reference models that ship with the code. `production` takes every
    location from its setting and refuses to load without one (`require_locations`). The study
    source is the drop unless SCREENLAKE_PACS names a PACS (see `source_for`). Secrets are never
    read here: the key resources and the DICOMweb source read their variables at run time.
    """
    require_locations(env, settings)
    phi_zone = zone_for(settings, "PHI", "SCREENLAKE_PHI_ZONE")
    research_zone = zone_for(settings, "research", "SCREENLAKE_RESEARCH_ZONE")
    _require_apart(phi_zone, research_zone)
    return {
        "source": source_for(settings, env),
        "phi_zone": phi_zone,
        "research_zone": research_zone,
        # Each key is checked against the zone that depends on it (see screenlake.keybinding).
        "pseudonym_key": PseudonymKey(zone=research_zone),
        "vault_key": VaultKey(zone=phi_zone),
        "deidentification": DeidentificationSettings(
            profile_path=settings.get("SCREENLAKE_DEID_PROFILE") or None,
            workers=int(settings.get("SCREENLAKE_DEID_WORKERS", "0")),
        ),
        "lake": LakeDatabase(
            database=str(research_zone.path(layout.LAKE_DATABASE)), research_zone=research_zone
        ),
        "models": ModelRegistry(
            models_root=_models_root(settings),
            device=settings.get("SCREENLAKE_DEVICE") or None,
            batch_size=optional_count(settings, "SCREENLAKE_INFER_BATCH_SIZE") or None,
            loader_workers=optional_count(settings, "SCREENLAKE_INFER_WORKERS"),
            # Production keeps no cache unless one is set: only weights kept in object storage need it.
            cache_dir=(
                location(settings, "SCREENLAKE_MODEL_CACHE")
                if env == "local"
                else text(settings, "SCREENLAKE_MODEL_CACHE") or None
            ),
            s3_endpoint_url=(settings.get("SCREENLAKE_S3_ENDPOINT") or "").strip() or None,
            s3_region=(settings.get("SCREENLAKE_S3_REGION") or "").strip() or DEFAULT_REGION,
            programme_models=_programme_models(settings),
        ),
    }
