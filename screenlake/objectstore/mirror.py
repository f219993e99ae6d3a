"""Keeping a local working copy of an object-store prefix in step with the store.

A zone on object storage is worked on through a local working copy: an asset pulls what it
reads and pushes what it wrote. Both directions mirror one path (a file or a folder): after a
pull the local path holds exactly the store's objects under it, after a push the store holds
exactly the local files. An object is transferred only when its content differs, judged by
MD5 (the ETag of a single-part upload, which every push makes) or, where the store's ETag is
not an MD5 (multipart uploads, SSE-KMS), by the SHA-256 a push records in the object's
metadata. Uploads carry Content-MD5, so the store refuses a body damaged in transit; downloads
are written beside the target and renamed into place, so a reader never sees half a file.

botocore's errors (whose messages hold object keys and request URLs) become ObjectStoreError
naming the zone, the bucket and the endpoint, without their chain.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from screenlake.objectstore.access import store_errors
from screenlake.objectstore.location import S3Location

TRANSFER_THREADS = 8
_PLAIN_MD5 = re.compile(r"^[0-9a-f]{32}$")
_SHA256_METADATA = "sha256"
_PARTIAL_SUFFIX = ".part"


@dataclass(frozen=True)
class RemoteObject:
    """One object under a mirrored path: its key, size and ETag (quotes removed)."""

    key: str
    size: int
    etag: str


@dataclass(frozen=True)
class MirrorResult:
    """What one pull or push moved."""

    transferred: int
    unchanged: int
    deleted: int
    bytes_transferred: int


def _digests(path: Path) -> tuple[str, str]:
    md5, sha256 = hashlib.md5(usedforsecurity=False), hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            md5.update(block)
            sha256.update(block)
    return md5.hexdigest(), sha256.hexdigest()


def remote_objects(
    client: Any, location: S3Location, relative: PurePosixPath
) -> list[RemoteObject]:
    """The object at `relative` (a file) or every object below it (a folder)."""
    key = location.key(relative)
    found: list[RemoteObject] = []
    paginator = client.get_paginator("list_objects_v2")
    for page in paginator.paginate(Bucket=location.bucket, Prefix=key):
        for item in page.get("Contents", []):
            name = str(item["Key"])
            if name == key or name.startswith(key + "/") or not key:
                found.append(RemoteObject(name, int(item["Size"]), str(item["ETag"]).strip('"')))
    return found


def _same_content(client: Any, bucket: str, remote: RemoteObject, local: Path) -> bool:
    if not local.is_file() or local.stat().st_size != remote.size:
        return False
    md5, sha256 = _digests(local)
    if _PLAIN_MD5.match(remote.etag) and md5 == remote.etag:
        return True
    head = client.head_object(Bucket=bucket, Key=remote.key)
    return bool(head.get("Metadata", {}).get(_SHA256_METADATA) == sha256)


def _local_files(local: Path) -> list[Path]:
    if local.is_file():
        return [local]
    if not local.is_dir():
        return []
    return sorted(
        p for p in local.rglob("*") if p.is_file() and not p.name.endswith(_PARTIAL_SUFFIX)
    )


def _in_parallel(work: Callable[[Any], int], items: Iterable[Any]) -> list[int]:
    with ThreadPoolExecutor(TRANSFER_THREADS) as pool:
        return list(pool.map(work, items))


def _where(client: Any) -> str:
    return str(getattr(getattr(client, "meta", None), "endpoint_url", "") or "AWS S3")


def pull(
    client: Any,
    location: S3Location,
    relative: PurePosixPath,
    local_root: Path,
    role: str = "a zone",
) -> MirrorResult:
    """Make `local_root/relative` hold exactly the store's objects at `relative`.

    Local files the store does not hold are removed: the store is the zone, the working copy
    only mirrors it. Nothing under `relative` in the store leaves the local path empty. The
    store's failures raise ObjectStoreError naming `role` (e.g. "the PHI zone").
    """
    with store_errors(role, location.bucket, _where(client), "pulling into the working copy"):
        return _pull(client, location, relative, local_root)


def _pull(
    client: Any, location: S3Location, relative: PurePosixPath, local_root: Path
) -> MirrorResult:
    objects = remote_objects(client, location, relative)
    wanted = {local_root / location.relative(o.key): o for o in objects}

    def fetch(item: tuple[Path, RemoteObject]) -> int:
        path, remote = item
        if _same_content(client, location.bucket, remote, path):
            return -1
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(path.name + _PARTIAL_SUFFIX)
        client.download_file(location.bucket, remote.key, str(partial))
        os.replace(partial, path)
        return remote.size

    moved = _in_parallel(fetch, wanted.items())
    stale = [p for p in _local_files(local_root / str(relative)) if p not in wanted]
    for path in stale:
        path.unlink()
    return MirrorResult(
        transferred=sum(1 for m in moved if m >= 0),
        unchanged=sum(1 for m in moved if m < 0),
        deleted=len(stale),
        bytes_transferred=sum(m for m in moved if m > 0),
    )


def push(
    client: Any,
    location: S3Location,
    relative: PurePosixPath,
    local_root: Path,
    role: str = "a zone",
) -> MirrorResult:
    """Make the store hold exactly the local files at `local_root/relative`.

    Objects under `relative` that the working copy no longer holds are deleted, so a folder
    replaced whole locally (a re-landed partition) is replaced whole in the store. The store's
    failures raise ObjectStoreError naming `role`.
    """
    with store_errors(role, location.bucket, _where(client), "pushing from the working copy"):
        return _push(client, location, relative, local_root)


def _push(
    client: Any, location: S3Location, relative: PurePosixPath, local_root: Path
) -> MirrorResult:
    local = local_root / str(relative)
    objects = {o.key: o for o in remote_objects(client, location, relative)}
    files = {
        location.key(PurePosixPath(p.relative_to(local_root).as_posix())): p
        for p in _local_files(local)
    }

    def send(item: tuple[str, Path]) -> int:
        key, path = item
        remote = objects.get(key)
        if remote is not None and _same_content(client, location.bucket, remote, path):
            return -1
        md5, sha256 = _digests(path)
        with path.open("rb") as body:
            # One PUT (objects up to 5 GB), so the ETag is the MD5 a later comparison uses.
            client.put_object(
                Bucket=location.bucket,
                Key=key,
                Body=body,
                ContentMD5=base64.b64encode(bytes.fromhex(md5)).decode("ascii"),
                Metadata={_SHA256_METADATA: sha256},
            )
        return path.stat().st_size

    moved = _in_parallel(send, files.items())
    stale = sorted(set(objects) - set(files))
    for start in range(0, len(stale), 1000):  # DeleteObjects takes at most 1,000 keys
        client.delete_objects(
            Bucket=location.bucket,
            Delete={"Objects": [{"Key": k} for k in stale[start : start + 1000]], "Quiet": True},
        )
    return MirrorResult(
        transferred=sum(1 for m in moved if m >= 0),
        unchanged=sum(1 for m in moved if m < 0),
        deleted=len(stale),
        bytes_transferred=sum(m for m in moved if m > 0),
    )


def forget_history(
    client: Any, location: S3Location, relative: PurePosixPath, role: str = "a zone"
) -> list[tuple[str, str]]:
    """Delete every noncurrent version and delete marker at `relative` (a file, or every
    object below a folder), so that a versioned bucket keeps only what a push left current:
    what an erasure removed cannot be restored from the bucket's history. Returns the key and
    version ID of each that went; none on a bucket that never had versioning."""
    with store_errors(role, location.bucket, _where(client), "deleting earlier versions"):
        key = location.key(relative)
        versions: list[dict[str, str]] = []
        markers: list[dict[str, str]] = []
        paginator = client.get_paginator("list_object_versions")
        for page in paginator.paginate(Bucket=location.bucket, Prefix=key):
            for found, items in (
                (versions, page.get("Versions", [])),
                (markers, page.get("DeleteMarkers", [])),
            ):
                for item in items:
                    name = str(item["Key"])
                    if not (name == key or name.startswith(key + "/") or not key):
                        continue
                    if found is markers or not item["IsLatest"]:
                        found.append({"Key": name, "VersionId": str(item["VersionId"])})
        # Versions before markers: a marker removed first would make its version current.
        for batch in (versions, markers):
            for start in range(0, len(batch), 1000):  # DeleteObjects takes at most 1,000
                client.delete_objects(
                    Bucket=location.bucket,
                    Delete={"Objects": batch[start : start + 1000], "Quiet": True},
                )
        return [(o["Key"], o["VersionId"]) for o in (*versions, *markers)]
