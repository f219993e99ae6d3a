"""The deployment's pseudonym key and every keyed value derived from it.

Everything that replaces an identifier (patient pseudonym, UIDs, accession pseudonym, date
offset) is an HMAC-SHA256 under the key, so that the same key gives the same values across
files, batches and runs, and nobody without the key can reverse or recompute them.
"""

from __future__ import annotations

import hashlib
import hmac

from screenlake.errors import PseudonymKeyError

PSEUDONYM_KEY_ENV = "SCREENLAKE_PSEUDONYM_KEY"
MIN_KEY_LENGTH = 32
MAX_DATE_SHIFT_DAYS = 365
_UID_ROOT = "2.25."
_UID_MAX_LENGTH = 64


def validate_pseudonym_key(value: str | None, env_var: str = PSEUDONYM_KEY_ENV) -> bytes:
    """The key as bytes; raises PseudonymKeyError saying how to set `env_var` when the key is
    missing or short."""
    if value is None or value.strip() == "":
        raise PseudonymKeyError(
            f"{env_var} is not set. Set it to a random secret of at least "
            f"{MIN_KEY_LENGTH} characters, e.g. `export {env_var}=$(openssl rand -hex 32)`, "
            "and keep it in the PHI zone's secret store: losing it breaks longitudinal linkage."
        )
    if len(value) < MIN_KEY_LENGTH:
        raise PseudonymKeyError(
            f"{env_var} has {len(value)} characters; it needs at least {MIN_KEY_LENGTH}. "
            f"Generate one with `openssl rand -hex 32`."
        )
    return value.encode("utf-8")


def _digest(key: bytes, namespace: str, value: str) -> bytes:
    # The namespace keeps a patient ID and an accession number with equal text apart.
    return hmac.new(key, f"{namespace}\x1f{value}".encode(), hashlib.sha256).digest()


def keyed_token(key: bytes, namespace: str, value: str, length: int = 16) -> str:
    """A keyed, upper-case hexadecimal token of `length` characters for `value`."""
    if not 8 <= length <= 64:
        raise ValueError(f"token length must be between 8 and 64, got {length}")
    return _digest(key, namespace, value).hex()[:length].upper()


def patient_pseudonym(key: bytes, patient_id: str) -> str:
    """The research-zone patient identifier for a hospital patient ID."""
    return "SL" + keyed_token(key, "patient", patient_id, 16)


def accession_pseudonym(key: bytes, accession_number: str) -> str:
    """A pseudonymous accession number (16 characters, within the SH value length)."""
    return "A" + keyed_token(key, "accession", accession_number, 15)


def keyed_uid(key: bytes, uid: str) -> str:
    """A `2.25.` UID derived from `uid` under the key: same input and key, same UID."""
    number = int.from_bytes(_digest(key, "uid", uid)[:16], "big")
    result = f"{_UID_ROOT}{number}"
    if len(result) > _UID_MAX_LENGTH:  # pragma: no cover - 128 bits give at most 44 characters
        raise AssertionError("keyed UID longer than 64 characters")
    return result


def date_shift_days(key: bytes, patient_id: str) -> int:
    """Days to subtract from every date of one patient: 1 to 365, fixed per patient and key."""
    number = int.from_bytes(_digest(key, "date-shift", patient_id)[:4], "big")
    return 1 + number % MAX_DATE_SHIFT_DAYS
