"""The one place that builds screenlake's Definitions."""

from __future__ import annotations

import os

import dagster as dg

from assets import catalog, deidentify, infer, ingest, publish, validate
from orchestration.automation import new_studies_sensor, nightly_screening, screening_job
from orchestration.resources import resources_for

_modules = [ingest, deidentify, catalog, infer, validate, publish]

defs = dg.Definitions(
    assets=dg.load_assets_from_modules(_modules),
    asset_checks=dg.load_asset_checks_from_modules(_modules),
    jobs=[screening_job],
    schedules=[nightly_screening],
    sensors=[new_studies_sensor],
    # Folders only (no secrets): the key resources read their variables at run time.
    resources=resources_for(os.environ.get("SCREENLAKE_ENV", "local"), os.environ),
)
