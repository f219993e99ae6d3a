"""The one place that builds screenlake's Definitions."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import dagster as dg

from assets import (
    audit,
    catalog,
    deidentify,
    infer,
    ingest,
    monitoring,
    performance,
    publish,
    quality_suites,
    reports,
    validate,
)
from assets.privacy import erasure_job
from orchestration.automation import (
    erasure_recompute_sensor,
    new_studies_sensor,
    nightly_screening,
    objection_register_sensor,
    screening_job,
)
from orchestration.executors import executor_for
from orchestration.resources import resources_for
from resources.deidentification import DeidentificationSettings
from resources.models import ModelRegistry

_modules = [
    ingest,
    deidentify,
    catalog,
    infer,
    validate,
    quality_suites,
    monitoring,
    performance,
    publish,
    reports,
    audit,
]


def _assets(models: ModelRegistry, deidentification: DeidentificationSettings) -> list[Any]:
    """Every asset; the inference ones versioned by the models the registry `models` uses, the
    de-identification ones by the profile `deidentification` configures."""
    versioned = [
        *infer.inference_assets(models),
        *deidentify.deidentification_assets(deidentification),
    ]
    replaced = {key for asset in versioned for key in asset.keys}
    others = [
        asset
        for asset in dg.load_assets_from_modules(_modules)
        if not (isinstance(asset, dg.AssetsDefinition) and asset.keys & replaced)
    ]
    return [*others, *versioned]


def definitions_for(env: str, settings: Mapping[str, str]) -> dg.Definitions:
    """screenlake's Definitions for environment `env` with the settings in `settings`; the
    inference assets' code version comes from the models folder the `models` resource uses, the
    de-identification assets' from the profile the `deidentification` resource uses."""
    # Folders only (no secrets): the key resources read their variables at run time.
    resources = resources_for(env, settings)
    return dg.Definitions(
        assets=_assets(resources["models"], resources["deidentification"]),
        asset_checks=dg.load_asset_checks_from_modules(_modules),
        jobs=[screening_job, erasure_job],
        schedules=[nightly_screening],
        sensors=[new_studies_sensor, objection_register_sensor, erasure_recompute_sensor],
        resources=resources,
        executor=executor_for(settings),
    )


defs = definitions_for(os.environ.get("SCREENLAKE_ENV", "local"), os.environ)
