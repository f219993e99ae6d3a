"""Shared fixtures: keys, a synthetic export, and one full materialisation of the graph."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from screenlake.keys import PSEUDONYM_KEY_ENV
from screenlake.vault import VAULT_KEY_ENV

TEST_PSEUDONYM_KEY = "test-pseudonym-key-for-screenlake-0123456789"
EXPORT_STUDIES, EXPORT_SEED = 8, 11


@pytest.fixture
def pseudonym_key() -> bytes:
    """The key the tests pseudonymise under."""
    return TEST_PSEUDONYM_KEY.encode()


@pytest.fixture(scope="session")
def session_keys() -> Iterator[dict[str, str]]:
    """Both secrets in the environment for the whole session, as a deployment would set them."""
    values = {PSEUDONYM_KEY_ENV: TEST_PSEUDONYM_KEY, VAULT_KEY_ENV: Fernet.generate_key().decode()}
    previous = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    yield values
    for k, v in previous.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@dataclass(frozen=True)
class Export:
    """A synthetic PACS export on disk and its ground truth."""

    drop: Path
    labels: Path
    days: tuple[date, ...]
    studies: int
    instances: int
    bad_files: int


@pytest.fixture(scope="session")
def synthetic_export(tmp_path_factory: pytest.TempPathFactory) -> Export:
    """A small synthetic export with fake PHI and bad files, made once per session."""
    from screenlake.synth.export import generate_export

    root = tmp_path_factory.mktemp("export")
    summary = generate_export(
        root / "drop", studies=EXPORT_STUDIES, seed=EXPORT_SEED, labels_path=root / "labels.csv"
    )
    return Export(
        drop=root / "drop",
        labels=summary.labels_path,
        days=summary.days,
        studies=summary.studies,
        instances=summary.instances,
        bad_files=summary.bad_files,
    )
