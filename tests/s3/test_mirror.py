"""A zone's working copy kept in step with a real S3-compatible server (moto on loopback)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
from boto3.s3.transfer import TransferConfig

from screenlake.objectstore.access import S3Access
from screenlake.objectstore.location import S3Location
from screenlake.objectstore.mirror import forget_history, pull, push

pytestmark = pytest.mark.s3
FOLDER = PurePosixPath("raw/date=2026-03-01")


def _write(root: Path, files: dict[str, bytes]) -> None:
    for name, data in files.items():
        path = root / FOLDER / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)


def _keys(client: Any, bucket: str) -> dict[str, bytes]:
    listed = client.list_objects_v2(Bucket=bucket).get("Contents", [])
    return {o["Key"]: client.get_object(Bucket=bucket, Key=o["Key"])["Body"].read() for o in listed}


@pytest.fixture
def store(
    s3_access: Callable[[str], S3Access], new_bucket: Callable[[], str]
) -> tuple[Any, S3Location]:
    return s3_access("SCREENLAKE_PHI_ZONE_S3").client(), S3Location(new_bucket(), "zone/phi")


def test_push_then_pull_gives_an_identical_copy(
    store: tuple[Any, S3Location], tmp_path: Path
) -> None:
    client, location = store
    files = {"000001.dcm": b"a" * 1000, "sub/000002.dcm": b"b" * 10, "manifest.parquet": b"m"}
    _write(tmp_path / "one", files)
    first = push(client, location, FOLDER, tmp_path / "one")
    assert first.transferred == 3 and first.unchanged == 0
    assert set(_keys(client, location.bucket)) == {f"zone/phi/{FOLDER}/{n}" for n in files}

    pulled = pull(client, location, FOLDER, tmp_path / "two")
    assert pulled.transferred == 3
    for name, data in files.items():
        assert (tmp_path / "two" / FOLDER / name).read_bytes() == data


def test_only_changed_files_move_and_removed_files_are_deleted(
    store: tuple[Any, S3Location], tmp_path: Path
) -> None:
    client, location = store
    _write(tmp_path, {"a.dcm": b"same", "b.dcm": b"old!", "c.dcm": b"gone"})
    push(client, location, FOLDER, tmp_path)
    (tmp_path / FOLDER / "b.dcm").write_bytes(b"new!")  # same size, other bytes
    (tmp_path / FOLDER / "c.dcm").unlink()

    second = push(client, location, FOLDER, tmp_path)

    assert (second.transferred, second.unchanged, second.deleted) == (1, 1, 1)
    stored = _keys(client, location.bucket)
    assert stored == {f"zone/phi/{FOLDER}/a.dcm": b"same", f"zone/phi/{FOLDER}/b.dcm": b"new!"}


def test_pull_replaces_changed_and_removes_stale_local_files(
    store: tuple[Any, S3Location], tmp_path: Path
) -> None:
    client, location = store
    _write(tmp_path / "store", {"a.dcm": b"1111", "b.dcm": b"2222"})
    push(client, location, FOLDER, tmp_path / "store")
    _write(tmp_path / "copy", {"a.dcm": b"1111", "b.dcm": b"xxxx", "stale.dcm": b"s"})

    result = pull(client, location, FOLDER, tmp_path / "copy")

    assert (result.transferred, result.unchanged, result.deleted) == (1, 1, 1)
    assert sorted(p.name for p in (tmp_path / "copy" / FOLDER).iterdir()) == ["a.dcm", "b.dcm"]
    assert (tmp_path / "copy" / FOLDER / "b.dcm").read_bytes() == b"2222"


def test_a_single_file_is_mirrored_without_touching_its_neighbours(
    store: tuple[Any, S3Location], tmp_path: Path
) -> None:
    client, location = store
    _write(tmp_path, {"a.dcm": b"a", "b.dcm": b"b"})
    push(client, location, FOLDER, tmp_path)
    (tmp_path / FOLDER / "a.dcm").write_bytes(b"A")

    push(client, location, FOLDER / "a.dcm", tmp_path)

    stored = _keys(client, location.bucket)
    assert stored[f"zone/phi/{FOLDER}/a.dcm"] == b"A"
    assert stored[f"zone/phi/{FOLDER}/b.dcm"] == b"b"


def test_a_folder_prefix_does_not_capture_its_siblings(
    store: tuple[Any, S3Location], tmp_path: Path
) -> None:
    client, location = store
    client.put_object(Bucket=location.bucket, Key=f"zone/phi/{FOLDER}.staging/x", Body=b"x")
    _write(tmp_path, {"a.dcm": b"a"})

    push(client, location, FOLDER, tmp_path)
    pull(client, location, FOLDER, tmp_path / "copy")

    assert f"zone/phi/{FOLDER}.staging/x" in _keys(client, location.bucket)
    assert not (tmp_path / "copy" / f"{FOLDER}.staging").exists()


def test_multipart_objects_compare_by_the_recorded_sha256(
    store: tuple[Any, S3Location], tmp_path: Path
) -> None:
    """A multipart ETag is not an MD5: the SHA-256 in the metadata decides, else the bytes move."""
    import hashlib

    client, location = store
    data = b"z" * (6 * 1024 * 1024)
    small_parts = TransferConfig(
        multipart_threshold=5 * 1024 * 1024, multipart_chunksize=5 * 1024 * 1024
    )
    source = tmp_path / "big.bin"
    source.write_bytes(data)
    with_digest = f"zone/phi/{FOLDER}/with.dcm"
    without = f"zone/phi/{FOLDER}/without.dcm"
    extra = {"Metadata": {"sha256": hashlib.sha256(data).hexdigest()}}
    client.upload_file(
        str(source), location.bucket, with_digest, ExtraArgs=extra, Config=small_parts
    )
    client.upload_file(str(source), location.bucket, without, Config=small_parts)
    assert "-" in client.head_object(Bucket=location.bucket, Key=without)["ETag"]
    _write(tmp_path / "copy", {"with.dcm": data, "without.dcm": data})

    result = pull(client, location, FOLDER, tmp_path / "copy")

    assert (result.transferred, result.unchanged) == (1, 1)


def test_forgetting_history_leaves_only_what_a_push_made_current(
    store: tuple[Any, S3Location], tmp_path: Path
) -> None:
    client, location = store
    client.put_bucket_versioning(
        Bucket=location.bucket, VersioningConfiguration={"Status": "Enabled"}
    )
    _write(tmp_path, {"kept.dcm": b"first", "erased.dcm": b"patient"})
    push(client, location, FOLDER, tmp_path)
    _write(tmp_path, {"kept.dcm": b"second"})
    (tmp_path / FOLDER / "erased.dcm").unlink()
    push(client, location, FOLDER, tmp_path)
    # Beside the folder, an object whose key begins the same: not under it, so left alone.
    sibling = f"zone/phi/{FOLDER}x/other.dcm"
    client.put_object(Bucket=location.bucket, Key=sibling, Body=b"v1")
    client.put_object(Bucket=location.bucket, Key=sibling, Body=b"v2")

    gone = forget_history(client, location, FOLDER)

    # The first kept.dcm, the erased file and its delete marker.
    assert len(gone) == 3
    versions = client.list_object_versions(Bucket=location.bucket)
    left = [(v["Key"], v["IsLatest"]) for v in versions.get("Versions", [])]
    assert sorted(left) == [
        (f"zone/phi/{FOLDER}/kept.dcm", True),
        (sibling, False),
        (sibling, True),
    ]
    assert not versions.get("DeleteMarkers")
    assert _keys(client, location.bucket)[f"zone/phi/{FOLDER}/kept.dcm"] == b"second"
    assert forget_history(client, location, FOLDER) == []
