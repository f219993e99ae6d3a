"""Local resources for a graph materialised in a test: the export drop and both zones in `root`;
and a drop with a leak for the residual-PHI gate to catch."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pydicom
import pytest

from orchestration.resources import resources_for
from screenlake.cli import main
from tests.conftest import Export


def local_resources(drop: Path, root: Path, **extra: str) -> dict[str, Any]:
    """The `local` environment's resources with the drop at `drop` and the zones under `root`."""
    return resources_for(
        "local",
        {
            "SCREENLAKE_DROP": str(drop),
            "SCREENLAKE_PHI_ZONE": str(root / "phi"),
            "SCREENLAKE_RESEARCH_ZONE": str(root / "research"),
            "SCREENLAKE_DEID_WORKERS": "2",
            **extra,
        },
    )


def leaky_drop(export: Export, root: Path) -> Path:
    """The export, with one chest X-ray whose device wrote the previous patient's family name
    into an attribute the profile keeps. The sweep of kept text knows only the instance's own
    identifiers, so it leaves it: the leak the residual-PHI scan, which knows the whole batch's
    originals, exists to catch."""
    drop = root / "drop"
    shutil.copytree(export.drop, drop)
    day = export.days[0].strftime("%Y%m%d")
    radiographs = [
        p
        for p in sorted((drop / day).rglob("IM00001.dcm"))
        if "_CR" in p.parent.name or "_DX" in p.parent.name
    ]
    target = pydicom.dcmread(radiographs[0])
    previous = next(
        ds
        for ds in (pydicom.dcmread(p, stop_before_pixels=True) for p in radiographs[1:])
        if ds.PatientID != target.PatientID
    )
    target.ManufacturerModelName = str(previous.PatientName).split("^")[0]
    target.save_as(radiographs[0], enforce_file_format=True)
    return drop


def run_verify(
    root: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    *flags: str,
    **settings: str,
) -> tuple[int, str]:
    """`screenlake verify [flags]` on the zones under `root`, with the deployment's settings
    in the environment; its exit code and what it printed."""
    monkeypatch.setenv("SCREENLAKE_HOME", str(root / "home"))
    monkeypatch.delenv("SCREENLAKE_DEID_PROFILE", raising=False)
    for name, value in settings.items():
        monkeypatch.setenv(name, value)
    capsys.readouterr()
    zones = ["--phi-zone", str(root / "phi"), "--research-zone", str(root / "research")]
    code = main(["verify", *flags, *zones])
    return code, capsys.readouterr().out
