"""`screenlake keys status` and `screenlake keys rotate`."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from screenlake import layout
from screenlake.cli import main

KEY_A = "cli-pseudonym-key-A-0123456789abcdef0123456789"
KEY_B = "cli-pseudonym-key-B-0123456789abcdef0123456789"
VAULT = Fernet.generate_key().decode()


@pytest.fixture
def zone_args(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Both keys in the environment, and the zones' folders as command-line arguments."""
    monkeypatch.setenv("SCREENLAKE_PSEUDONYM_KEY", KEY_A)
    monkeypatch.setenv("SCREENLAKE_VAULT_KEY", VAULT)
    return ["--phi-zone", str(tmp_path / "phi"), "--research-zone", str(tmp_path / "research")]


def _printed(capsys: pytest.CaptureFixture[str]) -> str:
    out, err = capsys.readouterr()
    return out + err


def test_status_prints_fingerprints_and_never_a_key(
    zone_args: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from screenlake.keybinding import PSEUDONYM_KEY, fingerprint

    assert main(["keys", "status", *zone_args]) == 0
    printed = _printed(capsys)
    assert "pseudonym key (SCREENLAKE_PSEUDONYM_KEY): not bound yet" in printed
    assert "vault key (SCREENLAKE_VAULT_KEY): not bound yet" in printed
    assert fingerprint(KEY_A.encode(), PSEUDONYM_KEY)[:16] in printed
    assert KEY_A not in printed and VAULT not in printed

    assert main(["keys", "rotate", "--reason", "first binding", *zone_args]) == 0
    capsys.readouterr()
    monkeypatch.setenv("SCREENLAKE_PSEUDONYM_KEY", KEY_B)
    assert main(["keys", "status", *zone_args]) == 1
    printed = _printed(capsys)
    assert "pseudonym key (SCREENLAKE_PSEUDONYM_KEY): DIFFERS" in printed
    assert "vault key (SCREENLAKE_VAULT_KEY): matches" in printed
    assert "keys rotate" in printed
    assert KEY_A not in printed and KEY_B not in printed and VAULT not in printed


def test_status_names_an_unusable_key_without_showing_it(
    zone_args: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    corrupt = "not-a-fernet-key-" * 3
    monkeypatch.setenv("SCREENLAKE_VAULT_KEY", corrupt)
    assert main(["keys", "status", *zone_args]) == 1
    printed = _printed(capsys)
    assert "vault key (SCREENLAKE_VAULT_KEY): unusable" in printed
    assert "not a valid Fernet key" in printed
    assert corrupt not in printed


def test_rotate_rebinds_and_audits_in_the_phi_zone(
    zone_args: list[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["keys", "rotate", "--reason", "first binding", *zone_args]) == 0
    monkeypatch.setenv("SCREENLAKE_PSEUDONYM_KEY", KEY_B)
    assert main(["keys", "rotate", "--reason", "annual rotation", *zone_args]) == 0
    printed = _printed(capsys)
    assert "vault key (PHI zone): unchanged" in printed
    assert "Rotating keys" in printed and KEY_B not in printed
    with (tmp_path / "phi" / layout.KEY_ROTATION_LOG).open() as handle:
        rows = list(csv.DictReader(handle))
    assert [r["reason"] for r in rows] == ["first binding", "annual rotation"]
    assert rows[1]["old_pseudonym_key"] == rows[0]["new_pseudonym_key"]
    assert rows[1]["new_pseudonym_key"] != rows[1]["old_pseudonym_key"]
    assert all(r["rotated_by"] for r in rows)
    assert main(["keys", "status", *zone_args]) == 0


def test_rotate_refuses_a_bad_key_and_writes_nothing(
    zone_args: list[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("SCREENLAKE_PSEUDONYM_KEY", "too-short")
    assert main(["keys", "rotate", "--reason", "x", *zone_args]) == 2
    assert "it needs at least 32" in _printed(capsys)
    assert not (tmp_path / "phi").exists() and not (tmp_path / "research").exists()


def test_rotate_without_a_reason_is_a_usage_error(zone_args: list[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["keys", "rotate", *zone_args])
    assert exited.value.code == 2
