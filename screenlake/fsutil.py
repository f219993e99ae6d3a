"""File-system helpers: folder replacement that a crash cannot leave half done, checksums."""

from __future__ import annotations

import hashlib
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


def sha256_of(path: Path) -> str:
    """Lower-case hexadecimal SHA-256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
