from __future__ import annotations

import csv
from datetime import date
from pathlib import Path

import polars as pl
import pytest
from cryptography.fernet import Fernet

from screenlake.cli import main
from screenlake.errors import VaultError
from screenlake.reidentify import load_all_vaults, reidentify
from screenlake.tables import VAULT_ENTRIES, frame_of
from screenlake.vault import vault_cipher, write_vault


def _entries(n: int, start: int = 0) -> pl.DataFrame:
    rows = [
        {
            "patient_pseudonym": f"SL{i:016d}",
            "study_instance_uid": f"2.25.{i}",
            "accession_pseudonym": f"A{i:015d}",
            "patient_id": f"{7000000 + i}",
            "accession_number": f"{1000000000 + i}",
            "original_study_instance_uid": f"1.2.3.{i}",
            "original_study_date": date(2024, 3, 12),
            "date_shift_days": 10,
        }
        for i in range(start, start + n)
    ]
    return frame_of(rows, VAULT_ENTRIES)


@pytest.fixture
def phi(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    key = Fernet.generate_key().decode()
    monkeypatch.setenv("SCREENLAKE_VAULT_KEY", key)
    root = tmp_path / "phi"
    cipher = vault_cipher(key)
    write_vault(
        _entries(3),
        root / "vault" / "date=2024-03-11" / "programme=a" / "vault.parquet.enc",
        cipher,
    )
    write_vault(
        _entries(2, 3),
        root / "vault" / "date=2024-03-12" / "programme=a" / "vault.parquet.enc",
        cipher,
    )
    return root


def test_reidentify_joins_across_batches_and_counts_unknown_rows(phi: Path) -> None:
    import os

    vault = load_all_vaults(phi / "vault", vault_cipher(os.environ["SCREENLAKE_VAULT_KEY"]))
    assert vault.height == 5
    findings = pl.DataFrame(
        {"study_instance_uid": ["2.25.1", "2.25.4", "2.25.99"], "score": [0.9, 0.8, 0.7]}
    )
    rows, unmatched = reidentify(findings, vault)
    assert rows["patient_id"].to_list() == ["7000001", "7000004"]
    assert unmatched == 1


def test_cli_writes_inside_the_phi_zone_and_audits_counts_only(
    phi: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    findings = tmp_path / "flagged.csv"
    findings.write_text("study_instance_uid,score\n2.25.0,0.91\n2.25.2,0.75\n")
    out = phi / "exports" / "recall.csv"
    args = [
        "reidentify",
        str(findings),
        "--output",
        str(out),
        "--phi-zone",
        str(phi),
        "--purpose",
        "recall of flagged studies",
        "--requested-by",
        "coordinator",
    ]
    assert main(args) == 0
    assert "2 rows in: 2 re-identified, 0 unknown" in capsys.readouterr().out
    assert [r["patient_id"] for r in csv.DictReader(out.open())] == ["7000000", "7000002"]
    assert main(args) == 0
    log = list(csv.DictReader((phi / "audit" / "reidentifications.csv").open()))
    assert len(log) == 2
    assert log[0]["requested_by"] == "coordinator" and log[0]["rows_reidentified"] == "2"
    assert "7000000" not in (phi / "audit" / "reidentifications.csv").read_text()


def test_cli_refuses_an_output_outside_the_phi_zone(phi: Path, tmp_path: Path) -> None:
    findings = tmp_path / "flagged.csv"
    findings.write_text("study_instance_uid\n2.25.0\n")
    code = main(
        [
            "reidentify",
            str(findings),
            "--output",
            str(tmp_path / "leak.csv"),
            "--phi-zone",
            str(phi),
            "--purpose",
            "x",
            "--requested-by",
            "y",
        ]
    )
    assert code == 2
    assert not (tmp_path / "leak.csv").exists()
    assert not (phi / "audit").exists()


def test_cli_exits_non_zero_when_a_study_is_unknown(phi: Path, tmp_path: Path) -> None:
    findings = tmp_path / "flagged.csv"
    findings.write_text("study_instance_uid\n2.25.0\n2.25.77\n")
    code = main(
        [
            "reidentify",
            str(findings),
            "--output",
            str(phi / "x.csv"),
            "--phi-zone",
            str(phi),
            "--purpose",
            "recall",
            "--requested-by",
            "coordinator",
        ]
    )
    assert code == 1


def test_no_vault_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(VaultError, match="no vault yet"):
        load_all_vaults(tmp_path / "vault", vault_cipher(Fernet.generate_key().decode()))
