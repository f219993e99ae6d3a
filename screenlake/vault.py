"""The re-identification vault: pseudonym -> patient ID, accession number and original study UID.

It lives in the PHI zone, encrypted at rest with a key of its own (Fernet: AES-128-CBC with an
HMAC-SHA256 tag), so that a copy of the PHI zone's files without the vault key reveals nothing.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Iterable
from datetime import date
from pathlib import Path

import polars as pl
import pyarrow.parquet as pq
import pydicom
from cryptography.fernet import Fernet, InvalidToken

from screenlake.errors import VaultError
from screenlake.fsutil import write_atomic
from screenlake.keys import (
    accession_pseudonym,
    date_shift_days,
    keyed_uid,
    patient_pseudonym,
)
from screenlake.tables import VAULT_ENTRIES, conform, frame_of

VAULT_KEY_ENV = "SCREENLAKE_VAULT_KEY"
_HEADER_TAGS = [
    "PatientID",
    "IssuerOfPatientID",
    "AccessionNumber",
    "StudyInstanceUID",
    "StudyDate",
]


def vault_cipher(value: str | None, env_var: str = VAULT_KEY_ENV) -> Fernet:
    """The vault's cipher from its key; raises VaultError saying how to set `env_var`."""
    how = (
        f"Set {env_var} to a Fernet key (32 random bytes, url-safe base64), e.g. "
        "`python -c 'from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())'`,"
        " and keep it apart from the pseudonym key."
    )
    if not value:
        raise VaultError(f"{env_var} is not set. {how}")
    try:
        return Fernet(value.encode("ascii"))
    except (ValueError, UnicodeEncodeError):
        raise VaultError(f"{env_var} is not a valid Fernet key. {how}") from None


def vault_key_material(value: str | None, env_var: str = VAULT_KEY_ENV) -> bytes:
    """The vault key's 32 bytes once `vault_cipher` accepts the key (else its VaultError): what
    the key's fingerprint is made of, so that two spellings of one key count as one key."""
    vault_cipher(value, env_var)
    assert value is not None  # vault_cipher refuses a missing key
    return base64.urlsafe_b64decode(value.encode("ascii"))


def _study_date(value: str) -> date | None:
    if len(value) >= 8 and value[:8].isdigit():
        try:
            return date(int(value[:4]), int(value[4:6]), int(value[6:8]))
        except ValueError:
            return None
    return None


def vault_entries(landed_files: Iterable[Path], key: bytes) -> pl.DataFrame:
    """One vault row per study among `landed_files`, pseudonyms computed under `key`.

    Files without a PatientID or StudyInstanceUID are skipped here: de-identification
    quarantines them, so no research-zone row can point at them.
    """
    rows: dict[str, dict[str, object]] = {}
    for path in landed_files:
        ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=_HEADER_TAGS)
        patient_id = str(ds.get("PatientID") or "").strip()
        study_uid = str(ds.get("StudyInstanceUID") or "").strip()
        if not patient_id or not study_uid or study_uid in rows:
            continue
        accession = str(ds.get("AccessionNumber") or "").strip() or None
        rows[study_uid] = {
            "patient_pseudonym": patient_pseudonym(key, patient_id),
            "study_instance_uid": keyed_uid(key, study_uid),
            "accession_pseudonym": accession_pseudonym(key, accession) if accession else None,
            "patient_id": patient_id,
            "issuer_of_patient_id": str(ds.get("IssuerOfPatientID") or "").strip() or None,
            "accession_number": accession,
            "original_study_instance_uid": study_uid,
            "original_study_date": _study_date(str(ds.get("StudyDate") or "")),
            "date_shift_days": date_shift_days(key, patient_id),
        }
    return frame_of(list(rows.values()), VAULT_ENTRIES)


def write_vault(entries: pl.DataFrame, path: Path, cipher: Fernet) -> None:
    """Encrypt `entries` and write them to `path` atomically."""
    buffer = io.BytesIO()
    pq.write_table(conform(entries, VAULT_ENTRIES), buffer, compression="zstd")
    write_atomic(path, cipher.encrypt(buffer.getvalue()))


def read_vault(path: Path, cipher: Fernet) -> pl.DataFrame:
    """Decrypt a vault file; raises VaultError when the key is wrong or the file was altered."""
    if not path.exists():
        raise VaultError(
            "the pseudonym vault for this partition is missing; materialise pseudonym_vault first"
        )
    try:
        plain = cipher.decrypt(path.read_bytes())
    except InvalidToken:
        raise VaultError(
            f"the vault cannot be decrypted: {VAULT_KEY_ENV} is not the key it was written with, "
            "or the file was altered"
        ) from None
    frame = pl.from_arrow(pq.read_table(io.BytesIO(plain)))
    assert isinstance(frame, pl.DataFrame)
    return frame
