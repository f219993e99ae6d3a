"""`screenlake verify` is the blocking residual-PHI check run from a terminal: the same zones,
pseudonym key, profile options and scan, so the two cannot disagree."""

from __future__ import annotations

import re
from pathlib import Path

import dagster as dg
import pytest

from orchestration.definitions import defs
from orchestration.partitions import partition_key
from tests.assets.zones import leaky_drop, local_resources, run_verify
from tests.conftest import Export
from tests.profiles import edited_profile

pytestmark = pytest.mark.slow
PROGRAMME = "cxr_tb"
DEIDENTIFICATION = dg.AssetSelection.assets(
    "pacs_studies", "raw_instances", "deidentified_instances"
)
NO_IDENTIFIERS = "no_identifiers_in_research_zone"
FINDING_LINE = re.compile(r"^  (?P<kind>[^:]+): (?P<file>.+?) \[(?P<element>.+)\]$", re.MULTILINE)


def _deidentify(export: Export, drop: Path, root: Path, **settings: str) -> dg.AssetCheckEvaluation:
    """Land and de-identify the export's first day of radiographs from `drop`; the gate's
    evaluation."""
    result = dg.materialize(
        defs.assets,  # type: ignore[arg-type]
        selection=DEIDENTIFICATION,
        resources=local_resources(drop, root, **settings),
        partition_key=partition_key(export.days[0], PROGRAMME),
        raise_on_error=False,
    )
    [gate] = [e for e in result.get_asset_check_evaluations() if e.check_name == NO_IDENTIFIERS]
    return gate


def _findings(printed: str) -> list[dict[str, str]]:
    return sorted(
        (m.groupdict() for m in FINDING_LINE.finditer(printed)), key=lambda f: sorted(f.items())
    )


def test_verify_reports_what_the_blocking_check_found(
    synthetic_export: Export,
    session_keys: dict[str, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    gate = _deidentify(synthetic_export, leaky_drop(synthetic_export, tmp_path), tmp_path)
    assert not gate.passed

    code, printed = run_verify(tmp_path, monkeypatch, capsys)

    assert code == 1, printed
    found = gate.metadata["first_findings"].value
    assert _findings(printed) == sorted(
        ({k: f[k] for k in ("kind", "file", "element")} for f in found),  # type: ignore[union-attr]
        key=lambda f: sorted(f.items()),
    )
    assert f"{len(found)} identifiers found" in printed  # type: ignore[arg-type]
    assert "1 of 1 batches hold identifiers" in printed


def test_verify_honours_what_the_configured_profile_keeps(
    synthetic_export: Export,
    session_keys: dict[str, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    profile = edited_profile(
        tmp_path / "profiles", options={"rtnInstIdOpt": True}, version="2024b-3-institutions"
    )
    gate = _deidentify(
        synthetic_export, synthetic_export.drop, tmp_path, SCREENLAKE_DEID_PROFILE=str(profile)
    )
    assert gate.passed  # the institution is kept on purpose, and not searched for

    code, printed = run_verify(tmp_path, monkeypatch, capsys, SCREENLAKE_DEID_PROFILE=str(profile))
    assert code == 0, printed
    assert "1 batches verified, none with identifiers" in printed

    # The shipped profile removes institutions: held to it, the same files fail, as the check
    # would under that profile.
    code, printed = run_verify(tmp_path, monkeypatch, capsys)
    assert code == 1
    assert {f["kind"] for f in _findings(printed)} == {"institution"}


def test_verify_fails_when_there_is_nothing_to_verify(
    session_keys: dict[str, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, printed = run_verify(tmp_path, monkeypatch, capsys)
    assert code == 1
    assert "nothing to verify" in printed
