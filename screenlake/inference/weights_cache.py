"""Model weights kept in object storage: downloaded once into a local cache, named by their
SHA-256, and refused when the bytes differ from the manifest's hash."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

from screenlake.errors import ConfigurationError, ModelIntegrityError, ObjectStoreError
from screenlake.fsutil import sha256_of
from screenlake.inference.manifest import ModelManifest
from screenlake.objectstore.access import DEFAULT_REGION, S3Access
from screenlake.objectstore.location import parse_s3_uri

CACHE_SETTING = "SCREENLAKE_MODEL_CACHE"
MODELS_S3_CREDENTIALS_ENV = "SCREENLAKE_MODELS_S3"


def cached_weights(
    manifest: ModelManifest, cache_dir: Path | None, s3: S3Access | None = None
) -> Path:
    """The local copy of the weights at the manifest's `weights_uri`, downloaded on first use.

    The copy is `<cache_dir>/<weights_sha256>.weights`; a download whose hash differs from the
    manifest is deleted and refused. The caller re-verifies the hash when it reads the copy.
    """
    if manifest.weights_uri is None:
        raise ValueError(f"model {manifest.name!r} has a weights_file, not a weights_uri")
    if cache_dir is None:
        raise ConfigurationError(
            f"model {manifest.name!r} keeps its weights at {manifest.weights_uri}, which are "
            f"downloaded once into a local cache: set {CACHE_SETTING} to a folder for them"
        )
    target = cache_dir / f"{manifest.weights_sha256}.weights"
    if not target.is_file():
        _download_weights(manifest, manifest.weights_uri, target, s3)
    return target


def _download_weights(manifest: ModelManifest, uri: str, target: Path, s3: S3Access | None) -> None:
    access = s3 or S3Access(None, DEFAULT_REGION, MODELS_S3_CREDENTIALS_ENV)
    location = parse_s3_uri(uri, "weights_uri")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        handle, name = tempfile.mkstemp(
            dir=target.parent, prefix=f".{target.name}.", suffix=".part"
        )
    except OSError as error:
        raise ConfigurationError(
            f"the model cache {target.parent} cannot be written ({error.strerror}): set "
            f"{CACHE_SETTING} to a folder this process can write"
        ) from error
    os.close(handle)
    partial = Path(name)
    try:
        _fetch_object(access.client(), access, location.bucket, location.key(), partial, uri)
        digest = sha256_of(partial)
        if digest != manifest.weights_sha256:
            raise ModelIntegrityError(
                f"model {manifest.name!r}: the weights downloaded from {uri} have hash {digest}, "
                f"but the manifest's weights_sha256 is {manifest.weights_sha256}; the download "
                "was deleted. Upload the exported weights again, or correct the manifest"
            )
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)


def _fetch_object(
    client: Any, access: S3Access, bucket: str, key: str, path: Path, uri: str
) -> None:
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        client.download_file(bucket, key, str(path))
    except ClientError as error:
        code = str(error.response.get("Error", {}).get("Code", ""))
        if code in ("404", "NoSuchKey", "NotFound", "NoSuchBucket"):
            raise ObjectStoreError(
                f"the model weights {uri} do not exist at {access.where()}: upload them there, "
                "or correct weights_uri in the manifest"
            ) from None
        if code in ("403", "AccessDenied", "Forbidden"):
            raise ObjectStoreError(
                f"the object store at {access.where()} refuses to read {uri} with the "
                f"credentials from {access.credentials_env}_*: check their rights"
            ) from None
        raise ObjectStoreError(
            f"the object store at {access.where()} answered {code or 'an error'} for {uri}"
        ) from None
    except BotoCoreError as error:
        raise ObjectStoreError(
            f"the object store at {access.where()} cannot be reached to read {uri} "
            f"({type(error).__name__}): check the models' S3 endpoint and the network"
        ) from None
