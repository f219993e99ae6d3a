"""Erasure (GDPR Art. 17), first part: what screenlake holds about the patients whose objection
has scope `all`, found through the re-identification vaults, so that every copy can be removed
and a scan can prove none is left.

A vault row is one study: the patient's ID (and its issuer), accession number and original
study UID on the PHI side, and the patient pseudonym, pseudonymous study UID and accession
pseudonym the research zone knows them by. The series and instance UIDs of the research zone
are keyed remaps of originals no vault keeps; they are read from the instance catalogue rows of
the studies found here (`with_catalogue`).
"""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Callable, Collection, Iterable, Iterator
from dataclasses import dataclass, fields, replace
from pathlib import Path

import polars as pl
from cryptography.fernet import Fernet

from screenlake import layout
from screenlake.fsutil import sha256_of
from screenlake.lake import LAKE_TABLES
from screenlake.objections import patient_tokens
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

# Columns by which a table's row belongs to a patient, in order of preference.
PATIENT_COLUMNS = ("study_instance_uid", "patient_pseudonym", "sop_instance_uid")


@dataclass(frozen=True)
class PatientTraces:
    """Everything by which the zones may hold the patients being erased: in which batches, and
    under which values, PHI and pseudonymous."""

    batches: frozenset[layout.Batch] = frozenset()
    # PHI zone
    patient_ids: frozenset[str] = frozenset()
    accession_numbers: frozenset[str] = frozenset()
    original_study_uids: frozenset[str] = frozenset()
    # Research zone
    patient_pseudonyms: frozenset[str] = frozenset()
    study_uids: frozenset[str] = frozenset()
    accession_pseudonyms: frozenset[str] = frozenset()
    series_uids: frozenset[str] = frozenset()
    sop_uids: frozenset[str] = frozenset()

    def __bool__(self) -> bool:
        return bool(self.study_uids)

    def research_values(self) -> frozenset[str]:
        """Every pseudonymous value by which the research zone may name them."""
        return (
            self.patient_pseudonyms
            | self.study_uids
            | self.accession_pseudonyms
            | self.series_uids
            | self.sop_uids
        )

    def phi_values(self) -> frozenset[str]:
        """Every identifying value by which the PHI zone may name them."""
        return self.patient_ids | self.accession_numbers | self.original_study_uids

    def rows_of(self, frame: pl.DataFrame) -> pl.Series:
        """A mask of `frame`'s rows that belong to the patients: by study, patient pseudonym
        or instance, whichever of those columns the frame has."""
        values = {
            "study_instance_uid": self.study_uids,
            "patient_pseudonym": self.patient_pseudonyms,
            "sop_instance_uid": self.sop_uids,
        }
        mask = pl.repeat(False, frame.height, eager=True)
        for column in PATIENT_COLUMNS:
            if column in frame.columns:
                mask = mask | frame[column].is_in(list(values[column])).fill_null(False)
        return mask

    def with_catalogue(self, catalogue: pl.DataFrame) -> PatientTraces:
        """These traces with the series and instance UIDs of the patients' studies in an
        instance catalogue."""
        theirs = catalogue.filter(pl.col("study_instance_uid").is_in(list(self.study_uids)))
        return replace(
            self,
            series_uids=self.series_uids | frozenset(theirs["series_instance_uid"].drop_nulls()),
            sop_uids=self.sop_uids | frozenset(theirs["sop_instance_uid"].drop_nulls()),
        )


def batch_vaults(phi_root: Path, cipher: Fernet) -> Iterator[tuple[layout.Batch, pl.DataFrame]]:
    """Every batch's vault under the PHI zone's local folder `phi_root`, decrypted."""
    for batch in layout.batches_in(phi_root / layout.VAULT_DIR, layout.VAULT_FILE):
        yield batch, read_vault(phi_root / layout.vault_path(batch), cipher)


def traces_of(
    tokens: Collection[str],
    vaults: Iterable[tuple[layout.Batch, pl.DataFrame]],
    key: bytes,
) -> PatientTraces:
    """The traces of the patients held under `tokens` (objection tokens under the pseudonym
    `key`), from every batch's vault rows."""
    wanted = set(tokens)
    found: dict[str, set[object]] = {f.name: set() for f in fields(PatientTraces)}
    for batch, vault in vaults:
        issuers = (
            vault["issuer_of_patient_id"]
            if "issuer_of_patient_id" in vault.columns
            else pl.repeat(None, vault.height, dtype=pl.String, eager=True)
        )
        for row, issuer in zip(vault.iter_rows(named=True), issuers, strict=True):
            if not patient_tokens(key, issuer, row["patient_id"]) & wanted:
                continue
            found["batches"].add(batch)
            found["patient_ids"].add(row["patient_id"])
            found["original_study_uids"].add(row["original_study_instance_uid"])
            found["patient_pseudonyms"].add(row["patient_pseudonym"])
            found["study_uids"].add(row["study_instance_uid"])
            for column, name in (
                ("accession_number", "accession_numbers"),
                ("accession_pseudonym", "accession_pseudonyms"),
            ):
                if row[column]:
                    found[name].add(row[column])
    return PatientTraces(**{name: frozenset(values) for name, values in found.items()})  # type: ignore[arg-type]


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
    for table in LAKE_TABLES:
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
