"""Model weights named by `weights_uri`, fetched from a real S3-compatible server (moto on
loopback) into the local model cache, hash-checked on download and on every load."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch

from models import bundled_models_root
from resources.models import ModelRegistry
from screenlake.errors import ModelIntegrityError, ObjectStoreError
from screenlake.inference.manifest import sha256_bytes
from screenlake.inference.registry import load_model
from screenlake.objectstore.access import S3Access

pytestmark = pytest.mark.s3

MODELS = bundled_models_root()
MODEL = "cxr_tb_reference"
KEY = f"models/{MODEL}/1.0.0/weights.pt"
CREDENTIALS_ENV = "SCREENLAKE_MODELS_S3"


@dataclass(frozen=True)
class RemoteModel:
    """A model folder holding only a manifest, whose weights are in a bucket."""

    directory: Path
    bucket: str
    uri: str
    weights: bytes
    client: Any
    access: S3Access


@pytest.fixture
def remote(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    s3_access: Callable[[str], S3Access],
    new_bucket: Callable[[], str],
) -> RemoteModel:
    monkeypatch.setenv(f"{CREDENTIALS_ENV}_ACCESS_KEY_ID", "TESTKEYMODELS")
    monkeypatch.setenv(f"{CREDENTIALS_ENV}_SECRET_ACCESS_KEY", "test-secret-models")
    access = s3_access(CREDENTIALS_ENV)
    client = access.client()
    bucket = new_bucket()
    weights = (MODELS / MODEL / "weights.pt").read_bytes()
    client.put_object(Bucket=bucket, Key=KEY, Body=weights)
    uri = f"s3://{bucket}/{KEY}"
    manifest = json.loads((MODELS / MODEL / "manifest.json").read_text())
    del manifest["weights_file"]
    manifest["weights_uri"] = uri
    directory = tmp_path / "models" / MODEL
    directory.mkdir(parents=True)
    (directory / "manifest.json").write_text(json.dumps(manifest))
    return RemoteModel(directory, bucket, uri, weights, client, access)


def _cache_files(cache: Path) -> list[str]:
    return sorted(p.name for p in cache.iterdir()) if cache.exists() else []


def test_first_load_downloads_and_later_loads_use_the_cache(
    remote: RemoteModel, tmp_path: Path
) -> None:
    cache = tmp_path / "cache"
    first = load_model(remote.directory, device="cpu", cache_dir=cache, s3=remote.access)
    sha = first.manifest.weights_sha256
    assert sha == sha256_bytes(remote.weights)
    assert _cache_files(cache) == [f"{sha}.weights"]  # no partial download left behind
    assert (cache / f"{sha}.weights").read_bytes() == remote.weights

    # Gone from the bucket: a second load that still works made no request for it.
    remote.client.delete_object(Bucket=remote.bucket, Key=KEY)
    second = load_model(remote.directory, device="cpu", cache_dir=cache, s3=remote.access)
    bundled = load_model(MODELS / MODEL, device="cpu")
    x = torch.rand(4, 1, 64, 64)
    with torch.inference_mode():
        torch.testing.assert_close(second.module(x), bundled.module(x))
        torch.testing.assert_close(first.module(x), bundled.module(x))


def test_model_registry_resource_fetches_through_its_settings(
    remote: RemoteModel, tmp_path: Path
) -> None:
    registry = ModelRegistry(
        models_root=str(remote.directory.parent),
        device="cpu",
        cache_dir=str(tmp_path / "cache"),
        s3_endpoint_url=remote.access.endpoint_url,
        s3_region="us-east-1",
    )
    model = registry.load(MODEL)
    assert model.manifest.weights_uri == remote.uri
    assert _cache_files(tmp_path / "cache") == [f"{model.manifest.weights_sha256}.weights"]


def test_tampered_cached_weights_are_refused(remote: RemoteModel, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    model = load_model(remote.directory, device="cpu", cache_dir=cache, s3=remote.access)
    cached = cache / f"{model.manifest.weights_sha256}.weights"
    data = bytearray(cached.read_bytes())
    data[-100] ^= 0xFF
    cached.write_bytes(bytes(data))
    with pytest.raises(ModelIntegrityError, match="cached copy was changed after download"):
        load_model(remote.directory, device="cpu", cache_dir=cache, s3=remote.access)


def test_object_with_other_bytes_is_refused_and_deleted(
    remote: RemoteModel, tmp_path: Path
) -> None:
    other = (MODELS / "lung_ldct_reference" / "weights.pt").read_bytes()
    remote.client.put_object(Bucket=remote.bucket, Key=KEY, Body=other)
    cache = tmp_path / "cache"
    with pytest.raises(ModelIntegrityError) as caught:
        load_model(remote.directory, device="cpu", cache_dir=cache, s3=remote.access)
    message = str(caught.value)
    assert f"model '{MODEL}'" in message and remote.uri in message
    assert sha256_bytes(other) in message and sha256_bytes(remote.weights) in message
    assert _cache_files(cache) == []


def test_missing_object_names_the_uri(remote: RemoteModel, tmp_path: Path) -> None:
    remote.client.delete_object(Bucket=remote.bucket, Key=KEY)
    cache = tmp_path / "cache"
    with pytest.raises(ObjectStoreError, match=f"{remote.uri} do not exist at"):
        load_model(remote.directory, device="cpu", cache_dir=cache, s3=remote.access)
    assert _cache_files(cache) == []
