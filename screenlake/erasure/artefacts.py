"""Erasure, zone by zone: one batch's artefacts rewritten without the patients being erased,
each removal reported (counts and digests, no values) for the ledger."""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Callable, Collection
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import polars as pl
from cryptography.fernet import Fernet

from screenlake import layout
from screenlake.erasure.traces import PatientTraces
from screenlake.fsutil import sha256_of
from screenlake.lake import PARTITION_TABLES
from screenlake.tables import (
    DEIDENTIFICATION_AUDIT,
    INSTANCE_CATALOG,
    LANDED_INSTANCES,
    SOURCE_FILES,
    STUDY_INDEX,
    TableSchema,
    read_parquet,
    write_parquet,
)
from screenlake.vault import read_vault, write_vault


@dataclass(frozen=True)
class ArtefactErasure:
    """What erasing from one artefact did, for the ledger: counts and digests, no values."""

    kind: str
    rows_before: int
    rows_after: int
    sha256_before: str
    # None when the artefact went whole.
    sha256_after: str | None


def erase_rows(path: Path, table: TableSchema, traces: PatientTraces) -> ArtefactErasure | None:
    """Rewrite the table file at `path` without the patients' rows, atomically, every other row
    as it was and in its order; None (and the file untouched) when it holds none of them."""
    return _rewrite_without(path, table, traces.rows_of)


def _rewrite_without(
    path: Path, table: TableSchema, theirs: Callable[[pl.DataFrame], pl.Series]
) -> ArtefactErasure | None:
    frame = read_parquet(table, path)
    mask = theirs(frame)
    if not mask.any():
        return None
    before = sha256_of(path)
    kept = write_parquet(frame.filter(~mask), table, path)
    return ArtefactErasure(f"table {table.name}", frame.height, kept, before, sha256_of(path))


def listing_digest(folder: Path) -> str:
    """SHA-256 over a folder's files by relative path and size: what the ledger keeps of a
    folder of DICOM files before and after, without reading gigabytes again."""
    digest = hashlib.sha256()
    if folder.exists():
        for path in sorted(p for p in folder.rglob("*") if p.is_file()):
            digest.update(
                f"{path.relative_to(folder).as_posix()}\x1f{path.stat().st_size}\n".encode()
            )
    return digest.hexdigest()


def erase_from_research_zone(
    research_root: Path,
    batch: layout.Batch,
    key: bytes,
    traces: PatientTraces,
    ordinals: Collection[int] = (),
) -> list[ArtefactErasure]:
    """Remove the patients from one batch of the research zone's local folder: their studies'
    de-identified files, and their rows of every lake table (the de-identification audit's
    rows of their quarantined files by their landed `ordinals`, from `erase_from_phi_zone`).
    What each removal did, for the ledger; other patients' files and rows stay as they were."""
    catalogue = research_root / layout.lake_table_path(INSTANCE_CATALOG, batch, key)
    if catalogue.exists():
        traces = traces.with_catalogue(read_parquet(INSTANCE_CATALOG, catalogue))
    changes = []
    for table in PARTITION_TABLES:
        path = research_root / layout.lake_table_path(table, batch, key)
        if not path.exists():
            continue
        if table is DEIDENTIFICATION_AUDIT:
            change = _rewrite_without(
                path, table, lambda f: traces.rows_of(f) | f["ordinal"].is_in(list(ordinals))
            )
        else:
            change = erase_rows(path, table, traces)
        if change is not None:
            changes.append(change)
    shards = erase_inference_shards(research_root, batch, key)
    if shards is not None:
        changes.append(shards)
    dicom = research_root / layout.research_dicom_dir(batch, key)
    studies = [dicom / uid for uid in sorted(traces.study_uids) if (dicom / uid).is_dir()]
    if studies:
        before = (sum(1 for p in dicom.rglob("*.dcm")), listing_digest(dicom))
        for study in studies:
            shutil.rmtree(study)
        after = sum(1 for p in dicom.rglob("*.dcm"))
        changes.append(
            ArtefactErasure("research dicom", before[0], after, before[1], listing_digest(dicom))
        )
    return changes


def shard_dirs(research_root: Path, batch: layout.Batch, key: bytes) -> list[PurePosixPath]:
    """The batch's inference shard folders, of every model, under the research zone's local
    folder (a crashed inference run leaves them behind; a finished one empties them)."""
    models = research_root / layout.INFERENCE_DIR
    names = sorted(d.name for d in models.iterdir() if d.is_dir()) if models.is_dir() else []
    return [layout.inference_shards_dir(batch, key, name) for name in names]


def erase_inference_shards(
    research_root: Path, batch: layout.Batch, key: bytes
) -> ArtefactErasure | None:
    """Remove the batch's inference shards whole: they cache predictions of every patient of
    the batch, the erased included, for a run to take over; the next run computes them again."""
    folders = [research_root / f for f in shard_dirs(research_root, batch, key)]
    files = [p for f in folders if f.is_dir() for p in f.rglob("*") if p.is_file()]
    if not files:
        return None
    digest = hashlib.sha256("".join(listing_digest(f) for f in folders).encode()).hexdigest()
    for folder in folders:
        if folder.is_dir():
            shutil.rmtree(folder)
    return ArtefactErasure("inference shards", len(files), 0, digest, None)


@dataclass(frozen=True)
class PhiErasure:
    """What erasing a batch's PHI zone did, and the landed ordinals of the patients' files
    (the research zone's audit names quarantined files by ordinal only)."""

    changes: list[ArtefactErasure]
    ordinals: frozenset[int]


def erase_from_phi_zone(
    phi_root: Path, batch: layout.Batch, traces: PatientTraces, cipher: Fernet
) -> PhiErasure:
    """Remove the patients from one batch of the PHI zone's local folder, for an erasure of
    scope `all`: their landed originals and quarantined files with the manifest's rows, their
    rows of the study index and of the list of files to retrieve, and their vault entries."""
    changes: list[ArtefactErasure] = []
    manifest_path = phi_root / layout.raw_manifest_path(batch)
    ordinals: frozenset[int] = frozenset()
    if manifest_path.exists():
        manifest = read_parquet(LANDED_INSTANCES, manifest_path)
        theirs = manifest.filter(
            pl.col("study_instance_uid").is_in(list(traces.original_study_uids)).fill_null(False)
        )
        ordinals = frozenset(theirs["ordinal"])
        raw = phi_root / layout.raw_dir(batch)
        quarantine = phi_root / layout.quarantine_dir(batch)
        for folder, names in (
            (raw, list(theirs["landed_path"])),
            (quarantine, [n for o in ordinals for n in (f"{o:06d}.dcm", f"{o:06d}.reason.txt")]),
        ):
            present = [folder / n for n in names if (folder / n).exists()]
            if present:
                before = (sum(1 for p in folder.iterdir() if p.is_file()), listing_digest(folder))
                for path in present:
                    path.unlink()
                after = sum(1 for p in folder.iterdir() if p.is_file())
                kind = f"{folder.relative_to(phi_root).parts[0]} files"
                changes.append(
                    ArtefactErasure(kind, before[0], after, before[1], listing_digest(folder))
                )
        if (
            change := _erase_where(manifest_path, LANDED_INSTANCES, "ordinal", ordinals)
        ) is not None:
            changes.append(change)
    for path, table in (
        (phi_root / layout.study_index_path(batch), STUDY_INDEX),
        (phi_root / layout.source_files_path(batch), SOURCE_FILES),
    ):
        change = _erase_where(path, table, "study_instance_uid", traces.original_study_uids)
        if change is not None:
            changes.append(change)
    vault_path = phi_root / layout.vault_path(batch)
    if vault_path.exists():
        vault = read_vault(vault_path, cipher)
        theirs_mask = traces.rows_of(vault)
        if theirs_mask.any():
            digest = sha256_of(vault_path)
            write_vault(vault.filter(~theirs_mask), vault_path, cipher)
            kept = vault.height - int(theirs_mask.sum())
            changes.append(
                ArtefactErasure("vault", vault.height, kept, digest, sha256_of(vault_path))
            )
    return PhiErasure(changes, ordinals)


def _erase_where(
    path: Path, table: TableSchema, column: str, values: Collection[object]
) -> ArtefactErasure | None:
    """`erase_rows` by one column's values, for tables that name a patient's rows otherwise
    than by pseudonym (the PHI zone's, by original UID or ordinal)."""
    if not path.exists():
        return None
    return _rewrite_without(path, table, lambda f: f[column].is_in(list(values)).fill_null(False))
