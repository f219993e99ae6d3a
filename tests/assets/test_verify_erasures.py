"""`screenlake verify --erasures`: after a real erasure, every file of both zones holds none of
the erased patient's values; a value planted back anywhere fails the proof, which names the
file and the kind of value, never the value."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import polars as pl
import pytest

from screenlake import layout
from screenlake.erasure.run import ErasureRequest
from screenlake.objections import SCOPE_ALL
from tests.assets.test_erasure_run import _published
from tests.assets.zones import run_verify
from tests.conftest import Export
from tests.objections import carry_out_erasures, record_objection

pytestmark = pytest.mark.slow
ASKED_ON = date(2024, 5, 2)


def _values(request: ErasureRequest) -> frozenset[str]:
    return request.traces.phi_values() | request.traces.research_values()


def test_an_erasure_leaves_no_trace_and_a_planted_one_is_found(
    synthetic_export: Export,
    session_keys: dict[str, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    resources, patient = _published(synthetic_export, tmp_path)
    record_objection(resources, patient, SCOPE_ALL, ASKED_ON)
    [request] = carry_out_erasures(resources)

    code, printed = run_verify(tmp_path, monkeypatch, capsys, "--erasures")

    assert code == 0, printed
    assert "1 erasures verified: no trace in either zone" in printed

    sop_uid = min(request.traces.sop_uids)
    planted = tmp_path / "research" / "exports" / "shared.csv"
    planted.parent.mkdir(parents=True)
    planted.write_text(f"sop_instance_uid,score\n{sop_uid},0.9\n", encoding="utf-8")

    code, printed = run_verify(tmp_path, monkeypatch, capsys, "--erasures")

    assert code == 1
    assert (
        f"  research: exports/shared.csv [erasure {request.erasure_id}] sop_uid x1 (in bytes)"
        in printed
    )
    assert "1 traces of erased patients found" in printed
    assert not [value for value in _values(request) if value in printed]

    planted.unlink()
    kept = tmp_path / "phi" / "ingest" / "kept.parquet"
    others = [f"P{n:07d}" for n in range(500)]
    pl.DataFrame({"patient_id": [*others, patient, *others]}).write_parquet(
        kept, compression="zstd"
    )

    code, printed = run_verify(tmp_path, monkeypatch, capsys, "--erasures")

    assert code == 1
    assert f"  phi: ingest/kept.parquet [erasure {request.erasure_id}] patient_id" in printed
    assert not [value for value in _values(request) if value in printed]

    # A file its kind cannot decode might hide a value from the raw search: not proven.
    kept.write_bytes(b"PAR1" + b"\x00" * 64)

    code, printed = run_verify(tmp_path, monkeypatch, capsys, "--erasures")

    assert code == 1
    assert "  phi: ingest/kept.parquet could not be decoded; searched as raw bytes only" in printed
    assert "no trace found, but 1 files could not be decoded: not proven" in printed


def test_verify_erasures_fails_when_no_erasure_is_recorded(
    session_keys: dict[str, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    (tmp_path / "phi" / layout.ERASURE_REQUESTS).mkdir(parents=True)

    code, printed = run_verify(tmp_path, monkeypatch, capsys, "--erasures")

    assert code == 1
    assert "nothing to verify: the PHI zone records no erasure carried out" in printed
