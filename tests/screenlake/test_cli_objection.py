"""`screenlake objection add|withdraw|list|import`: the register through the deployment's
settings, printing tokens and counts, never a patient ID."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from screenlake import layout
from screenlake.cli import main

KEY = "cli-objection-key-0123456789abcdef0123456789"
PATIENT = "7654321"


@pytest.fixture
def zone_args(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    monkeypatch.setenv("SCREENLAKE_PSEUDONYM_KEY", KEY)
    monkeypatch.setenv("SCREENLAKE_VAULT_KEY", Fernet.generate_key().decode())
    monkeypatch.setenv("SCREENLAKE_HOME", str(tmp_path / "home"))
    return ["--phi-zone", str(tmp_path / "phi"), "--research-zone", str(tmp_path / "research")]


def _run(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = main(args)
    out, err = capsys.readouterr()
    return code, out + err


def test_add_from_standard_input_then_list_and_withdraw(
    zone_args: list[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO(f"{PATIENT}\n"))
    code, printed = _run(
        [
            "objection", "add", "--patient-id", "-", "--scope", "all",
            "--requested-by", "participant", "--reason", "ART17", *zone_args,
        ],
        capsys,
    )  # fmt: skip
    assert code == 0
    assert "1 requests: 1 recorded" in printed
    code, printed = _run(["objection", "list", "--changes", *zone_args], capsys)
    assert code == 0
    assert "1 objections in force, from 1 recorded changes" in printed
    assert "scope all" in printed and "ART17" in printed
    code, printed = _run(
        [
            "objection", "withdraw", "--patient-id", PATIENT,
            "--requested-by", "participant", "--reason", "WITHDRAWN", *zone_args,
        ],
        capsys,
    )  # fmt: skip
    assert code == 0
    code, printed = _run(["objection", "list", *zone_args], capsys)
    assert "0 objections in force, from 2 recorded changes" in printed
    records = list((tmp_path / "phi" / layout.OBJECTION_RECORDS).glob("*.json"))
    assert len(records) == 2
    everything = printed + "".join(r.read_text() for r in records)
    assert PATIENT not in everything


def test_importing_a_register_twice_records_it_once(
    zone_args: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    csv = tmp_path / "register.csv"
    csv.write_text(
        "patient_id,scope,requested_by,reason\n"
        f"{PATIENT},research,programme register,BVO-OPTOUT\n"
        "1234567,all,programme register,ART17\n"
    )
    code, printed = _run(["objection", "import", str(csv), *zone_args], capsys)
    assert code == 0 and "2 requests: 2 recorded" in printed
    code, printed = _run(["objection", "import", str(csv), *zone_args], capsys)
    assert code == 0 and "2 requests: 0 recorded, 2 already in force" in printed
    assert PATIENT not in printed and "1234567" not in printed


def test_a_bad_reason_is_refused_and_nothing_recorded(
    zone_args: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, printed = _run(
        [
            "objection", "add", "--patient-id", PATIENT, "--scope", "research",
            "--requested-by", "participant", "--reason", "called us, Jansen", *zone_args,
        ],
        capsys,
    )  # fmt: skip
    assert code == 2
    assert "reason is a code" in printed
    assert not (tmp_path / "phi" / layout.OBJECTION_RECORDS).exists()
