from __future__ import annotations

import re

import pytest

from screenlake import keys
from screenlake.errors import PseudonymKeyError


def test_missing_key_says_how_to_set_it() -> None:
    with pytest.raises(
        PseudonymKeyError, match="SCREENLAKE_PSEUDONYM_KEY is not set.*openssl rand"
    ):
        keys.validate_pseudonym_key(None)
    with pytest.raises(PseudonymKeyError, match="is not set"):
        keys.validate_pseudonym_key("   ")


def test_short_key_is_refused_with_its_length() -> None:
    with pytest.raises(PseudonymKeyError, match="has 31 characters; it needs at least 32"):
        keys.validate_pseudonym_key("x" * 31)
    assert keys.validate_pseudonym_key("x" * 32) == b"x" * 32


def test_pseudonyms_are_stable_under_a_key_and_change_with_it() -> None:
    a, b = b"a" * 32, b"b" * 32
    assert keys.patient_pseudonym(a, "1234567") == keys.patient_pseudonym(a, "1234567")
    assert keys.patient_pseudonym(a, "1234567") != keys.patient_pseudonym(b, "1234567")
    assert keys.patient_pseudonym(a, "1234567") != keys.patient_pseudonym(a, "1234568")
    # Namespaces keep equal texts of different kinds apart.
    assert keys.patient_pseudonym(a, "42")[2:] != keys.accession_pseudonym(a, "42")[1:]
    assert len(keys.accession_pseudonym(a, "0123456789")) == 16


def test_keyed_uids_are_valid_and_consistent() -> None:
    key = b"k" * 32
    uid = keys.keyed_uid(key, "1.2.826.0.1.3680043.8.498.1")
    assert uid == keys.keyed_uid(key, "1.2.826.0.1.3680043.8.498.1")
    assert uid != keys.keyed_uid(b"l" * 32, "1.2.826.0.1.3680043.8.498.1")
    assert re.fullmatch(r"2\.25\.(0|[1-9][0-9]*)", uid)
    assert len(uid) <= 64


def test_date_shift_is_per_patient_within_a_year() -> None:
    key = b"k" * 32
    shifts = {keys.date_shift_days(key, f"{i:07d}") for i in range(500)}
    assert min(shifts) >= 1 and max(shifts) <= keys.MAX_DATE_SHIFT_DAYS
    assert len(shifts) > 200
    assert keys.date_shift_days(key, "1") == keys.date_shift_days(key, "1")
