"""File-system helpers: files and folders replaced so that a crash cannot leave them half done,
checksums."""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from pathlib import Path


def write_atomic(path: Path, data: str | bytes) -> None:
    """Write `data` (text as UTF-8) to `path` through a temporary file beside it and a rename,
    so that readers see the old content or the new, never part of it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data.encode("utf-8") if isinstance(data, str) else data)
    os.replace(tmp, path)


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
