"""Folder replacement that a crash cannot leave half done."""

from __future__ import annotations

import os
import shutil
from pathlib import Path


def fresh_staging_folder(target: Path) -> Path:
    """An empty folder beside `target` to build its replacement in."""
    staging = target.with_name(target.name + ".staging")
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    return staging


def swap_in_folder(staging: Path, target: Path) -> None:
    """Replace `target` with `staging` by renames, so readers see the old or the new folder whole."""
    target.parent.mkdir(parents=True, exist_ok=True)
    if not target.exists():
        os.replace(staging, target)
        return
    retired = target.with_name(target.name + ".retired")
    if retired.exists():
        shutil.rmtree(retired)
    os.replace(target, retired)
    os.replace(staging, target)
    shutil.rmtree(retired)
