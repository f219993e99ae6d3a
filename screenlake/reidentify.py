"""Re-identification: mapping pseudonymous study UIDs back to patients, in the PHI zone only.

Each re-identification appends one row to an audit log in the PHI zone: when, who, why, how
many rows came in and how many were matched. The log never says which patients.
"""

from __future__ import annotations

import csv
import fcntl
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

import polars as pl
from cryptography.fernet import Fernet

from screenlake.errors import ConfigurationError, VaultError
from screenlake.vault import read_vault

AUDIT_COLUMNS = (
    "at",
    "requested_by",
    "purpose",
    "source",
    "rows_in",
    "rows_reidentified",
    "rows_unmatched",
)


@dataclass(frozen=True)
class ReidentificationRecord:
    """One audit row: counts and context, no patient."""

    at: str
    requested_by: str
    purpose: str
    source: str
    rows_in: int
    rows_reidentified: int
    rows_unmatched: int


def load_all_vaults(vault_root: Path, cipher: Fernet) -> pl.DataFrame:
    """Every batch's vault entries under `vault_root`, decrypted and stacked."""
    files = sorted(vault_root.rglob("*.parquet.enc")) if vault_root.is_dir() else []
    if not files:
        raise VaultError("the PHI zone holds no vault yet; materialise pseudonym_vault first")
    return pl.concat([read_vault(path, cipher) for path in files]).unique(
        subset="study_instance_uid", keep="first", maintain_order=True
    )


def read_findings(path: Path) -> pl.DataFrame:
    """A findings table (Parquet or CSV) that names studies by pseudonymous study UID."""
    if path.suffix == ".parquet":
        frame = pl.read_parquet(path)
    elif path.suffix == ".csv":
        frame = pl.read_csv(path, infer_schema_length=0)
    else:
        raise ConfigurationError("the findings file must be .parquet or .csv")
    if "study_instance_uid" not in frame.columns:
        raise ConfigurationError("the findings file has no study_instance_uid column")
    return frame


# What the vault gives back for a pseudonymous study.
_IDENTITIES = (
    "study_instance_uid",
    "patient_id",
    "accession_number",
    "original_study_instance_uid",
    "original_study_date",
)


def reidentify(findings: pl.DataFrame, vault: pl.DataFrame) -> tuple[pl.DataFrame, int]:
    """Findings with patient ID, accession number, original study UID and real study date
    added, and how many rows the vault did not know."""
    joined = findings.join(vault.select(_IDENTITIES), on="study_instance_uid", how="left")
    unmatched = joined.filter(pl.col("patient_id").is_null()).height
    return joined.filter(pl.col("patient_id").is_not_null()), unmatched


def reidentify_flagged(findings: pl.DataFrame, vault: pl.DataFrame) -> pl.DataFrame:
    """The flagged findings re-identified, by priority; raises VaultError when a flagged study
    has no vault entry, because a flag nobody can recall must not pass unnoticed."""
    rows, unknown = reidentify(findings.filter(pl.col("flag").fill_null(False)), vault)
    if unknown:
        raise VaultError(
            f"{unknown} flagged studies have no vault entry; re-materialise pseudonym_vault for "
            "this partition with the same pseudonym key"
        )
    return rows.sort("priority_rank")


def inside(path: Path, root: Path) -> bool:
    """True when `path` lies inside the folder `root`."""
    resolved, base = path.resolve(), root.resolve()
    return resolved == base or base in resolved.parents


def append_audit(log: Path, record: ReidentificationRecord) -> None:
    """Append one row to the re-identification log, under a lock so concurrent writers queue."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("a", newline="", encoding="utf-8") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        writer = csv.DictWriter(handle, fieldnames=AUDIT_COLUMNS)
        if handle.tell() == 0:
            writer.writeheader()
        writer.writerow(asdict(record))


def write_audit_record(path: Path, record: ReidentificationRecord) -> None:
    """Write one audit row as a file of its own (header and row), for stores without append."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("x", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=AUDIT_COLUMNS)
        writer.writeheader()
        writer.writerow(asdict(record))


def audit_record(
    requested_by: str, purpose: str, source: str, rows_in: int, rows_reidentified: int
) -> ReidentificationRecord:
    """An audit row stamped now (UTC)."""
    if not requested_by.strip() or not purpose.strip():
        raise ConfigurationError("a re-identification needs who asked for it and why")
    return ReidentificationRecord(
        at=datetime.now(UTC).isoformat(timespec="seconds"),
        requested_by=requested_by,
        purpose=purpose,
        source=source,
        rows_in=rows_in,
        rows_reidentified=rows_reidentified,
        rows_unmatched=rows_in - rows_reidentified,
    )
