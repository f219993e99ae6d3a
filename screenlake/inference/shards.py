"""Splitting a partition's inference into shards that are written as they finish, so that a run
that crashes resumes where it stopped and produces the same rows.

Shards are whole studies in study-UID order, so the plan is the same on every run of the same
catalogue. A shard's file name carries a fingerprint of its instances, the model's weights and
input, and the engine's version: a finished shard is re-used only when all of them are unchanged.
Files are written beside their final name and renamed into place, so a crash never leaves half a
shard that a later run would trust.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from screenlake.inference.loading import WorkUnit
from screenlake.inference.manifest import ModelManifest

# Bump when a change to the engine could change a prediction row: finished shards then expire.
ENGINE_VERSION = "3"
IMAGES_PER_SHARD = 1024
INSTANCES_PER_UNIT = 16


@dataclass(frozen=True)
class Shard:
    """Whole studies' rows of the instances table and the units that read them."""

    number: int
    rows: tuple[int, ...]
    units: tuple[WorkUnit, ...]
    studies: int
    fingerprint: str

    @property
    def file_name(self) -> str:
        """`shard-<number>-<fingerprint>.parquet`."""
        return f"shard-{self.number:05d}-{self.fingerprint[:16]}.parquet"


def _units(rows: Sequence[int], columns: dict[str, list[Any]], by_series: bool) -> list[WorkUnit]:
    paths, modalities = columns["research_path"], columns["modality"]
    if not by_series:
        chunks = [rows[i : i + INSTANCES_PER_UNIT] for i in range(0, len(rows), INSTANCES_PER_UNIT)]
    else:
        series: dict[str, list[int]] = {}
        for row in rows:
            series.setdefault(columns["series_instance_uid"][row], []).append(row)
        chunks = [series[uid] for uid in sorted(series)]
    return [
        WorkUnit(
            rows=tuple(chunk),
            paths=tuple(paths[r] for r in chunk),
            modalities=tuple(modalities[r] for r in chunk),
            series=by_series,
        )
        for chunk in chunks
    ]


def _fingerprint(
    columns: dict[str, list[Any]], rows: Sequence[int], manifest: ModelManifest
) -> str:
    digest = hashlib.sha256()
    header = [ENGINE_VERSION, manifest.weights_sha256, manifest.version, manifest.input.to_json()]
    digest.update(json.dumps(header, sort_keys=True).encode())
    for row in rows:
        digest.update(
            f"\n{columns['sop_instance_uid'][row]}|{columns['research_path'][row]}".encode()
        )
    return digest.hexdigest()


def plan_shards(
    instances: pl.DataFrame, manifest: ModelManifest, images_per_shard: int = IMAGES_PER_SHARD
) -> list[Shard]:
    """Whole studies, in study-UID order, grouped until a shard holds `images_per_shard` rows;
    units by series for a model that reads volumes, else by a few instances."""
    names = [
        "study_instance_uid",
        "series_instance_uid",
        "sop_instance_uid",
        "research_path",
        "modality",
    ]
    columns = {name: instances[name].to_list() for name in names}
    by_study: dict[str, list[int]] = {}
    for row, study in enumerate(columns["study_instance_uid"]):
        by_study.setdefault(study, []).append(row)
    shards: list[Shard] = []
    rows: list[int] = []
    studies = 0

    def close() -> None:
        nonlocal rows, studies
        units = _units(rows, columns, manifest.input.needs_series)
        fingerprint = _fingerprint(columns, rows, manifest)
        shards.append(Shard(len(shards) + 1, tuple(rows), tuple(units), studies, fingerprint))
        rows, studies = [], 0

    for study in sorted(by_study):
        rows.extend(by_study[study])
        studies += 1
        if len(rows) >= images_per_shard:
            close()
    if rows:
        close()
    return shards


class ShardStore:
    """A folder of finished shards for one partition and model."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def finished(self, shard: Shard) -> pl.DataFrame | None:
        """The shard's rows if a run finished it with the same fingerprint; else None."""
        path = self.folder / shard.file_name
        return pl.read_parquet(path) if path.is_file() else None

    def write(self, shard: Shard, rows: pl.DataFrame) -> None:
        """Keep a finished shard (atomically) and drop any older file of the same number."""
        self.folder.mkdir(parents=True, exist_ok=True)
        partial = self.folder / (shard.file_name + ".partial")
        rows.write_parquet(partial)
        os.replace(partial, self.folder / shard.file_name)
        for stale in self.folder.glob(f"shard-{shard.number:05d}-*.parquet"):
            if stale.name != shard.file_name:
                stale.unlink()

    def clear(self) -> None:
        """Forget every shard: the partition's table now holds them."""
        shutil.rmtree(self.folder, ignore_errors=True)
