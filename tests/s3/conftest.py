"""Object-store fixtures: a real S3-compatible server (moto) on loopback, and credentials for
each location in the environment, where screenlake reads them at run time."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from screenlake.devservers.s3 import S3Server
from screenlake.objectstore.access import S3Access

# One prefix per location, each with its own (fake) key pair: moto accepts any.
LOCATION_ENVS = ("SCREENLAKE_DROP_S3", "SCREENLAKE_PHI_ZONE_S3", "SCREENLAKE_RESEARCH_ZONE_S3")


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """One moto server for the session."""
    server = S3Server(tmp_path_factory.mktemp("moto")).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def s3_env(s3_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> S3Server:
    """The endpoint and a distinct key pair per location in the environment."""
    monkeypatch.setenv("SCREENLAKE_S3_ENDPOINT", s3_server.endpoint)
    for index, prefix in enumerate(LOCATION_ENVS):
        monkeypatch.setenv(f"{prefix}_ACCESS_KEY_ID", f"TESTKEY{index}")
        monkeypatch.setenv(f"{prefix}_SECRET_ACCESS_KEY", f"test-secret-{index}")
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    return s3_server


@pytest.fixture
def s3_access(s3_env: S3Server) -> Callable[[str], S3Access]:
    """An `S3Access` for one location's variable prefix, against the loopback server."""

    def access(credentials_env: str = "SCREENLAKE_RESEARCH_ZONE_S3") -> S3Access:
        return S3Access(s3_env.endpoint, "us-east-1", credentials_env)

    return access


@pytest.fixture
def new_bucket(s3_access: Callable[[str], S3Access]) -> Callable[[], str]:
    """Creates an empty bucket with a unique name and returns the name."""

    def create() -> str:
        name = f"test-{uuid.uuid4().hex[:12]}"
        client: Any = s3_access("SCREENLAKE_RESEARCH_ZONE_S3").client()
        client.create_bucket(Bucket=name)
        return name

    return create
