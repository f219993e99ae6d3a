"""Key bindings: fingerprints, the first-run binding, the mismatch refusal and audited rotation."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from resources.zones import ZoneStore
from screenlake import layout
from screenlake.errors import KeyBindingError, KeyMismatchError, PseudonymKeyError, VaultError
from screenlake.keybinding import (
    PSEUDONYM_KEY,
    VAULT_KEY,
    KeyInUse,
    bound_fingerprint,
    fingerprint,
    key_status,
    pseudonym_key_in_use,
    require_bound,
    rotate_keys,
    vault_key_in_use,
)

KEY_A = "pseudonym-key-A-0123456789abcdef0123456789"
KEY_B = "pseudonym-key-B-0123456789abcdef0123456789"
VAULT_A = Fernet.generate_key().decode()
VAULT_B = Fernet.generate_key().decode()


@pytest.fixture
def zones(tmp_path: Path) -> tuple[ZoneStore, ZoneStore]:
    """A PHI zone and a research zone in folders of their own."""
    return (
        ZoneStore(name="PHI", root=str(tmp_path / "phi")),
        ZoneStore(name="research", root=str(tmp_path / "research")),
    )


def _keys(
    zones: tuple[ZoneStore, ZoneStore], pseudonym: str = KEY_A, vault: str = VAULT_A
) -> tuple[KeyInUse, KeyInUse]:
    phi, research = zones
    return (
        pseudonym_key_in_use(pseudonym, "SCREENLAKE_PSEUDONYM_KEY", research),
        vault_key_in_use(vault, "SCREENLAKE_VAULT_KEY", phi),
    )


def test_a_fingerprint_is_stable_per_key_and_kind_and_shows_nothing_of_the_key() -> None:
    first = fingerprint(KEY_A.encode(), PSEUDONYM_KEY)
    assert first == fingerprint(KEY_A.encode(), PSEUDONYM_KEY)
    assert len(first) == 64 and int(first, 16) >= 0
    assert first != fingerprint(KEY_B.encode(), PSEUDONYM_KEY)
    assert first != fingerprint(KEY_A.encode(), VAULT_KEY)
    assert KEY_A not in first and KEY_A.encode().hex() not in first


def test_two_spellings_of_one_vault_key_have_one_fingerprint(
    zones: tuple[ZoneStore, ZoneStore],
) -> None:
    phi, _ = zones
    # base64 decoding ignores characters outside its alphabet, and so does Fernet.
    plain = vault_key_in_use(VAULT_A, "V", phi)
    spelled = vault_key_in_use(VAULT_A[:10] + "\n" + VAULT_A[10:], "V", phi)
    assert plain.fingerprint == spelled.fingerprint


def test_a_key_in_use_never_shows_its_secret(zones: tuple[ZoneStore, ZoneStore]) -> None:
    pseudonym, _ = _keys(zones)
    assert KEY_A not in repr(pseudonym)


def test_the_first_use_binds_each_zone_to_its_key(zones: tuple[ZoneStore, ZoneStore]) -> None:
    phi, research = zones
    pseudonym, vault = _keys(zones)
    assert bound_fingerprint(research, PSEUDONYM_KEY) is None
    assert require_bound([pseudonym, vault]) == [PSEUDONYM_KEY, VAULT_KEY]
    assert bound_fingerprint(research, PSEUDONYM_KEY) == pseudonym.fingerprint
    assert bound_fingerprint(phi, VAULT_KEY) == vault.fingerprint
    # Each fingerprint lives with the zone whose data depends on its key, and nowhere else.
    assert (research.path(layout.PSEUDONYM_KEY_BINDING)).is_file()
    assert not (phi.path(layout.PSEUDONYM_KEY_BINDING)).exists()
    assert (phi.path(layout.VAULT_KEY_BINDING)).is_file()
    assert require_bound([pseudonym, vault]) == []  # bound: nothing more is written
    for path in (research.path(), phi.path()):
        for file in path.rglob("*"):
            if file.is_file():
                text = file.read_text()
                assert KEY_A not in text and VAULT_A not in text


def test_another_valid_key_is_refused_and_nothing_is_bound(
    zones: tuple[ZoneStore, ZoneStore],
) -> None:
    phi, research = zones
    require_bound([_keys(zones)[0]])  # the research zone bound to key A, the PHI zone not yet
    pseudonym_b, vault = _keys(zones, pseudonym=KEY_B)
    with pytest.raises(KeyMismatchError) as refused:
        require_bound([pseudonym_b, vault])
    message = str(refused.value)
    assert "SCREENLAKE_PSEUDONYM_KEY holds a valid pseudonym key" in message
    assert "research zone is bound to" in message
    assert "new pseudonyms" in message
    assert "screenlake keys rotate --reason" in message and "Rotating keys" in message
    assert pseudonym_b.fingerprint[:16] in message
    assert KEY_A not in message and KEY_B not in message
    assert bound_fingerprint(research, PSEUDONYM_KEY) == fingerprint(KEY_A.encode(), PSEUDONYM_KEY)
    assert bound_fingerprint(phi, VAULT_KEY) is None  # the check wrote nothing


def test_another_vault_key_is_refused(zones: tuple[ZoneStore, ZoneStore]) -> None:
    require_bound(list(_keys(zones)))
    with pytest.raises(KeyMismatchError, match="SCREENLAKE_VAULT_KEY holds a valid vault key"):
        require_bound(list(_keys(zones, vault=VAULT_B)))


def test_malformed_keys_are_refused_before_any_zone_is_touched(
    zones: tuple[ZoneStore, ZoneStore],
) -> None:
    phi, research = zones
    with pytest.raises(PseudonymKeyError):
        pseudonym_key_in_use("short", "SCREENLAKE_PSEUDONYM_KEY", research)
    corrupt = "not-a-fernet-key-" * 3
    with pytest.raises(VaultError, match="not a valid Fernet key") as refused:
        vault_key_in_use(corrupt, "SCREENLAKE_VAULT_KEY", phi)
    assert corrupt not in str(refused.value)
    assert not research.path().exists() and not phi.path().exists()


def test_a_damaged_binding_is_refused_with_what_to_do(zones: tuple[ZoneStore, ZoneStore]) -> None:
    _, research = zones
    path = research.path(layout.PSEUDONYM_KEY_BINDING)
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"fingerprint": "not hex"}))
    with pytest.raises(KeyBindingError, match="not one screenlake wrote.*keys rotate"):
        require_bound([_keys(zones)[0]])


def test_a_rotation_is_audited_then_rebinds(zones: tuple[ZoneStore, ZoneStore]) -> None:
    phi, research = zones
    old_pseudonym, vault = _keys(zones)
    require_bound([old_pseudonym, vault])
    new_pseudonym, _ = _keys(zones, pseudonym=KEY_B)
    record, where = rotate_keys(new_pseudonym, vault, phi, "key exposed in a ticket", "alice")
    assert where == layout.KEY_ROTATION_LOG
    with phi.path(where).open() as handle:
        [row] = list(csv.DictReader(handle))
    assert row["rotated_by"] == "alice" and row["reason"] == "key exposed in a ticket"
    assert row["at"].endswith("+00:00")
    assert row["old_pseudonym_key"] == old_pseudonym.fingerprint
    assert row["new_pseudonym_key"] == new_pseudonym.fingerprint
    assert row["old_vault_key"] == row["new_vault_key"] == vault.fingerprint
    assert record.new_pseudonym_key == new_pseudonym.fingerprint
    assert bound_fingerprint(research, PSEUDONYM_KEY) == new_pseudonym.fingerprint
    assert require_bound([new_pseudonym, vault]) == []
    with pytest.raises(KeyMismatchError):
        require_bound([old_pseudonym])
    # A second rotation appends; the first row stays.
    rotate_keys(old_pseudonym, vault, phi, "rolled back", "bob")
    with phi.path(where).open() as handle:
        assert [r["rotated_by"] for r in csv.DictReader(handle)] == ["alice", "bob"]


def test_a_rotation_needs_a_reason_and_a_change(zones: tuple[ZoneStore, ZoneStore]) -> None:
    phi, _ = zones
    pseudonym, vault = _keys(zones)
    with pytest.raises(KeyBindingError, match="needs a reason"):
        rotate_keys(pseudonym, vault, phi, "  ", "alice")
    require_bound([pseudonym, vault])
    with pytest.raises(KeyBindingError, match="nothing to rotate"):
        rotate_keys(pseudonym, vault, phi, "why not", "alice")
    assert not phi.path(layout.KEY_ROTATION_LOG).exists()


def test_a_rotation_replaces_a_damaged_binding(zones: tuple[ZoneStore, ZoneStore]) -> None:
    phi, research = zones
    path = research.path(layout.PSEUDONYM_KEY_BINDING)
    path.parent.mkdir(parents=True)
    path.write_text("garbage")
    pseudonym, vault = _keys(zones)
    record, _ = rotate_keys(pseudonym, vault, phi, "binding damaged", "alice")
    assert record.old_pseudonym_key == "unreadable"
    assert require_bound([pseudonym, vault]) == []


def test_status_says_where_each_key_stands(zones: tuple[ZoneStore, ZoneStore]) -> None:
    _, research = zones

    def read_a() -> KeyInUse:
        return _keys(zones)[0]

    def read_b() -> KeyInUse:
        return _keys(zones, pseudonym=KEY_B)[0]

    def read_short() -> KeyInUse:
        return pseudonym_key_in_use("short", "SCREENLAKE_PSEUDONYM_KEY", research)

    env = "SCREENLAKE_PSEUDONYM_KEY"
    unbound = key_status(PSEUDONYM_KEY, env, research, read_a)
    assert unbound.ok and unbound.bound is None and unbound.state.startswith("not bound")
    require_bound([read_a()])
    assert key_status(PSEUDONYM_KEY, env, research, read_a).state == "matches"
    differs = key_status(PSEUDONYM_KEY, env, research, read_b)
    assert differs.state == "DIFFERS" and not differs.ok
    short = key_status(PSEUDONYM_KEY, env, research, read_short)
    assert short.state == "unusable" and not short.ok and "32" in (short.problem or "")
