"""Reading settings (environment variables, passed in as a mapping): typed values, and where
each location lies when a setting leaves it out.

No secret is read here: secrets are read at run time by the resources that use them.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import date
from pathlib import Path
from typing import Any

from screenlake.errors import ConfigurationError
from screenlake.objectstore.location import is_s3_uri

ENVIRONMENTS = ("local", "production")
HOME_SETTING = "SCREENLAKE_HOME"
PHI_ZONE, RESEARCH_ZONE = "SCREENLAKE_PHI_ZONE", "SCREENLAKE_RESEARCH_ZONE"
FIRST_STUDY_DATE_SETTING = "SCREENLAKE_FIRST_STUDY_DATE"
# The demo's synthetic exports start in March 2024; a deployment sets its go-live date.
DEFAULT_FIRST_STUDY_DATE = date(2024, 1, 1)
_ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
# Setting -> where the local environment keeps it under its home folder.
_LOCAL_DEFAULTS = {
    "SCREENLAKE_DROP": "drop",
    "SCREENLAKE_PHI_ZONE": "phi",
    "SCREENLAKE_RESEARCH_ZONE": "research",
    "SCREENLAKE_PHI_ZONE_WORKING_COPY": "work/phi",
    "SCREENLAKE_RESEARCH_ZONE_WORKING_COPY": "work/research",
    "SCREENLAKE_MODEL_CACHE": "models-cache",
}


def text(settings: Mapping[str, str], name: str) -> str:
    """The setting `name` without surrounding blanks; empty when unset."""
    return (settings.get(name) or "").strip()


def local_home(settings: Mapping[str, str]) -> Path:
    """The folder under which the local environment keeps the drop, both zones and caches:
    SCREENLAKE_HOME, else `var` in the current directory (never the code's own folder, which
    for an installed copy is inside site-packages)."""
    return Path(text(settings, HOME_SETTING) or "var").resolve()


def location(settings: Mapping[str, str], name: str) -> str:
    """A location setting, else its local default under the home folder (in production
    `require_locations` has checked by now that every location in use is set)."""
    return text(settings, name) or str(local_home(settings) / _LOCAL_DEFAULTS[name])


def required_locations(settings: Mapping[str, str]) -> list[str]:
    """The location settings this configuration uses: the zones, their working copies when
    they are in object storage, the drop when it is the source, and the models folder."""
    names = ["SCREENLAKE_PHI_ZONE", "SCREENLAKE_RESEARCH_ZONE", "SCREENLAKE_MODELS"]
    for zone in ("SCREENLAKE_PHI_ZONE", "SCREENLAKE_RESEARCH_ZONE"):
        if is_s3_uri(text(settings, zone)):
            names.append(f"{zone}_WORKING_COPY")
    if (text(settings, "SCREENLAKE_PACS") or "drop").lower() == "drop":
        names.append("SCREENLAKE_DROP")
    return names


def require_locations(env: str, settings: Mapping[str, str]) -> None:
    """In `production` nothing falls back to a default folder: a missing location would put
    PHI wherever the process happened to start. Raises naming every missing setting."""
    if env not in ENVIRONMENTS:
        raise ConfigurationError(
            f"SCREENLAKE_ENV={env!r} is not a known environment; use one of {', '.join(ENVIRONMENTS)}"
        )
    if env != "production":
        return
    missing = [name for name in required_locations(settings) if not text(settings, name)]
    if missing:
        raise ConfigurationError(
            f"SCREENLAKE_ENV=production needs {', '.join(missing)}: a production deployment "
            "names every zone, working copy, drop and models folder (see README, Deploying); "
            "SCREENLAKE_ENV=local uses folders under SCREENLAKE_HOME instead"
        )


def required(settings: Mapping[str, str], name: str, why: str) -> str:
    """A setting that must be set; raises saying `why` when it is not."""
    value = text(settings, name)
    if not value:
        raise ConfigurationError(f"{name} is not set; {why}")
    return value


def number(settings: Mapping[str, str], name: str, default: float, kind: type = int) -> Any:
    """A non-negative number of type `kind`, or `default` when unset."""
    value_text = text(settings, name)
    if not value_text:
        return kind(default)
    try:
        value = kind(value_text)
    except ValueError:
        raise ConfigurationError(f"{name} must be a number; got {value_text!r}") from None
    if value < 0:
        raise ConfigurationError(f"{name} must not be negative; got {value_text!r}")
    return value


def optional_count(settings: Mapping[str, str], name: str) -> int | None:
    """A non-negative whole number, or None when unset (the component then picks)."""
    if not text(settings, name):
        return None
    return int(number(settings, name, 0))


def first_study_date(settings: Mapping[str, str]) -> date:
    """The first day the study-date partitions offer (SCREENLAKE_FIRST_STUDY_DATE, YYYY-MM-DD),
    else 2024-01-01. Every day from it to today is a partition the UI counts as missing until
    it runs, so a deployment sets its go-live date."""
    value = text(settings, FIRST_STUDY_DATE_SETTING)
    if not value:
        return DEFAULT_FIRST_STUDY_DATE
    try:
        # fromisoformat alone would also take 20250601 and 2025-W22-1.
        if not _ISO_DATE.fullmatch(value):
            raise ValueError(value)
        return date.fromisoformat(value)
    except ValueError:
        raise ConfigurationError(
            f"{FIRST_STUDY_DATE_SETTING} must be a date written YYYY-MM-DD, e.g. the go-live "
            f"date 2025-06-01; got {value!r}"
        ) from None
