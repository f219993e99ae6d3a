"""Deployment profiles for tests: the shipped profile's folder copied, its profile edited."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from screenlake.deid.profile import DEFAULT_PROFILE_PATH


def edited_profile(folder: Path, options: dict[str, bool] | None = None, **fields: object) -> Path:
    """A copy of the shipped profiles folder in `folder` (the allow-list comes along) whose
    profile has `fields` replaced and `options` switched as given; its path."""
    shutil.copytree(DEFAULT_PROFILE_PATH.parent, folder)
    path = folder / DEFAULT_PROFILE_PATH.name
    config = json.loads(path.read_text("utf-8"))
    config.update(fields)
    if options:
        config["options"] = {**config["options"], **options}
    path.write_text(json.dumps(config, indent=2), "utf-8")
    return path
