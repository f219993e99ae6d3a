from __future__ import annotations

from pathlib import Path

import polars as pl
import pydicom
import pytest

from screenlake.cli import main
from tests.conftest import TEST_PSEUDONYM_KEY
from tests.dicom_factory import ct_slice, write


@pytest.fixture
def export(tmp_path: Path) -> Path:
    folder = tmp_path / "in" / "JANSEN_PIETER_7654321"
    for i in range(3):
        write(ct_slice(patient_name="Jansen^Pieter", z=float(i)), folder / f"IM{i}.dcm")
    (folder / "IM9.dcm").write_bytes(b"")
    return tmp_path / "in"


def test_deidentify_without_a_key_says_how_to_set_it(
    export: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.delenv("SCREENLAKE_PSEUDONYM_KEY", raising=False)
    code = main(
        [
            "deidentify",
            str(export),
            "--output",
            str(tmp_path / "o"),
            "--quarantine",
            str(tmp_path / "q"),
        ]
    )
    assert code == 2
    assert "SCREENLAKE_PSEUDONYM_KEY is not set" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_deidentify_with_a_short_key_refuses(
    export: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("SCREENLAKE_PSEUDONYM_KEY", "too-short")
    code = main(
        [
            "deidentify",
            str(export),
            "--output",
            str(tmp_path / "o"),
            "--quarantine",
            str(tmp_path / "q"),
        ]
    )
    assert code == 2
    assert "needs at least 32" in capsys.readouterr().err


def test_deidentify_prints_counts_only_and_accounts_for_every_file(
    export: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("SCREENLAKE_PSEUDONYM_KEY", TEST_PSEUDONYM_KEY)
    out, quarantine = tmp_path / "o", tmp_path / "q"
    code = main(
        [
            "deidentify",
            str(export),
            "--output",
            str(out),
            "--quarantine",
            str(quarantine),
            "--workers",
            "1",
        ]
    )
    assert code == 0
    printed = capsys.readouterr().out
    assert "4 files in: 3 de-identified, 1 quarantined" in printed
    assert "Jansen" not in printed and "JANSEN" not in printed and "7654321" not in printed
    outputs = sorted(out.rglob("*.dcm"))
    assert len(outputs) == 3
    assert all(pydicom.dcmread(p).PatientIdentityRemoved == "YES" for p in outputs)
    assert [p.name for p in sorted(quarantine.iterdir())] == ["000004.dcm", "000004.reason.txt"]


def test_deidentify_refuses_a_non_empty_output(
    export: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("SCREENLAKE_PSEUDONYM_KEY", TEST_PSEUDONYM_KEY)
    (tmp_path / "o").mkdir()
    (tmp_path / "o" / "keep.txt").write_text("x")
    code = main(
        [
            "deidentify",
            str(export),
            "--output",
            str(tmp_path / "o"),
            "--quarantine",
            str(tmp_path / "q"),
        ]
    )
    assert code == 2
    assert (tmp_path / "o" / "keep.txt").exists()


def test_query_without_a_lake_is_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["query", "SELECT 1", "--research-zone", str(tmp_path)])
    assert code == 2
    assert "no lake yet" in capsys.readouterr().err


def test_synth_writes_an_export_and_refuses_to_mix_two(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["synth", "--out", str(tmp_path / "drop"), "--studies", "2", "--seed", "3"]
    assert main([*args, "--size", "demo"]) == 0
    assert "2 studies" in capsys.readouterr().out
    assert (tmp_path / "drop-labels.csv").exists()
    assert main([*args, "--size", "demo"]) == 2


@pytest.fixture
def research_zone(tmp_path: Path) -> Path:
    """A research zone whose lake holds one audit table, as the catalogue assets write it."""
    zone = tmp_path / "research"
    audit = zone / "lake" / "deidentification_audit" / "programme=cxr_tb"
    audit.mkdir(parents=True)
    pl.DataFrame(
        {
            "programme": ["cxr_tb"] * 3,
            "batch_id": ["B1"] * 3,
            "outcome": ["deidentified", "deidentified", "quarantined"],
            "reason": [None, None, "empty file (0 bytes)"],
        }
    ).write_parquet(audit / "B1.parquet")
    return zone


def test_query_prints_the_rows_of_a_real_lake(
    research_zone: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sql = "SELECT reason, files FROM quarantine_reasons WHERE programme = 'cxr_tb'"
    assert main(["query", sql, "--research-zone", str(research_zone)]) == 0
    assert "empty file (0 bytes)" in capsys.readouterr().out
    assert (research_zone / "lake.duckdb").is_file()


@pytest.mark.parametrize(
    ("sql", "problem"),
    [
        ("SELEC * FROM quarantine_reasons", 'Parser Error: syntax error at or near "SELEC"'),
        ("SELECT * FROM quarantine_reason", "Catalog Error: Table with name quarantine_reason"),
        ("SELECT nope FROM quarantine_reasons", 'Binder Error: Referenced column "nope"'),
    ],
)
def test_a_mistake_in_the_sql_is_one_line_naming_it(
    research_zone: Path, sql: str, problem: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["query", sql, "--research-zone", str(research_zone)])
    out, err = capsys.readouterr()
    assert code == 2
    assert out == ""
    assert err.startswith(f"screenlake query: the query failed: {problem}")
    assert err.count("\n") == 1
    assert "Traceback" not in err
