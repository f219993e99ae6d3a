"""PACS fixtures: a small synthetic export, loaded into a real Orthanc on loopback."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import pytest

from screenlake.devservers.orthanc import PASSWORD, Orthanc

PACS_STUDIES, PACS_SEED = 4, 11
PASSWORD_ENV = "SCREENLAKE_DICOMWEB_PASSWORD"


@dataclass(frozen=True)
class PacsExport:
    """The synthetic export the PACS tests load into Orthanc."""

    drop: Path
    days: tuple[date, ...]
    files: tuple[Path, ...]


@pytest.fixture(scope="session")
def pacs_export(tmp_path_factory: pytest.TempPathFactory) -> PacsExport:
    """Four studies over two days, both programmes, with the export's bad files."""
    from screenlake.synth.export import generate_export

    root = tmp_path_factory.mktemp("pacs-export")
    summary = generate_export(
        root / "drop", studies=PACS_STUDIES, seed=PACS_SEED, labels_path=root / "labels.csv"
    )
    files = tuple(sorted(p for p in (root / "drop").rglob("*") if p.is_file()))
    return PacsExport(root / "drop", summary.days, files)


@pytest.fixture(scope="session")
def dicomweb_password() -> Iterator[str]:
    """The DICOMweb password in the environment, where the source reads it at run time."""
    previous = os.environ.get(PASSWORD_ENV)
    os.environ[PASSWORD_ENV] = PASSWORD
    yield PASSWORD
    if previous is None:
        os.environ.pop(PASSWORD_ENV, None)
    else:
        os.environ[PASSWORD_ENV] = previous


@pytest.fixture(scope="session")
def orthanc(
    pacs_export: PacsExport, tmp_path_factory: pytest.TempPathFactory, dicomweb_password: str
) -> Iterator[Orthanc]:
    """One Orthanc for the session, holding the whole export (the bad files it refuses)."""
    server = Orthanc(tmp_path_factory.mktemp("orthanc")).start()
    try:
        server.upload(list(pacs_export.files))
        yield server
    finally:
        server.stop()


@pytest.fixture
def own_orthanc(
    pacs_export: PacsExport, tmp_path: Path, dicomweb_password: str
) -> Iterator[Callable[[], Orthanc]]:
    """A factory of Orthancs a test may stop, damage or empty: each holds the export's first
    day and is stopped when the test ends."""
    servers: list[Orthanc] = []

    def start() -> Orthanc:
        server = Orthanc(tmp_path / f"orthanc-{len(servers)}").start()
        servers.append(server)
        day = pacs_export.days[0].strftime("%Y%m%d")
        server.upload(
            [p for p in pacs_export.files if day in p.relative_to(pacs_export.drop).parts[0]]
        )
        return server

    try:
        yield start
    finally:
        for server in servers:
            server.stop()
