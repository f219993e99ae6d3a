"""An export drop on S3 or an S3-compatible store: `SCREENLAKE_DROP=s3://bucket/prefix`.

The layout is the folder drop's, `<prefix>/YYYYMMDD/<any sub-folders>/<files>`, and file
references are relative to the drop's root as there (`20260301/Pat/ACC/1/IM1.dcm`), so the same
files give the same routing, orphans and problems. Headers are read with ranged GETs of each
object's first bytes; boto3 is loaded only when a client is made (`S3Access.client`), so the
Dagster code location loads without it.
"""

from __future__ import annotations

import shutil
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from pydantic import PrivateAttr

from resources.sources import DAY_FOLDER_FORMAT, StudySource
from screenlake.errors import ConfigurationError, ObjectStoreError
from screenlake.ingest import DayListing, SourceFile, list_day, read_routing_header_from_bytes
from screenlake.objectstore.access import S3Access, require_bucket
from screenlake.objectstore.location import S3Location, parse_s3_uri
from screenlake.pacs.parallel import run_workers, split_evenly

if TYPE_CHECKING:
    from screenlake.ingest import _Header

DROP_SETTING = "SCREENLAKE_DROP"
DROP_ROLE = "the export drop (SCREENLAKE_DROP)"
# A routing header nearly always ends well inside this; longer ones are read again, larger.
HEADER_BYTES = 64 * 1024
# Each further read of a long header asks for this many times more, up to the whole object:
# an enhanced multi-frame object can hold megabytes of header before gigabytes of pixels.
_HEADER_GROWTH = 8
_PAGE_SIZE = 1000  # ListObjectsV2's own maximum
_COPY_CHUNK = 1024 * 1024


@dataclass(frozen=True)
class _Object:
    """One object of a day: its key, its size as listed, and its reference in the drop."""

    key: str
    size: int
    ref: str


class S3DropSource(StudySource):
    """A PACS export dropped into an S3 bucket under a prefix, one "folder" per day YYYYMMDD.

    `credentials_env` is the prefix of the variables that hold the drop's own key pair
    (`<prefix>_ACCESS_KEY_ID`, `<prefix>_SECRET_ACCESS_KEY`); without them boto3's default chain
    applies. `connections` GETs run at a time while listing a day and while landing.
    """

    uri: str
    endpoint_url: str | None = None
    region: str = "us-east-1"
    credentials_env: str = "SCREENLAKE_DROP_S3"
    connections: int = 8

    _client: Any = PrivateAttr(default=None)
    _lock: threading.Lock = PrivateAttr(default_factory=threading.Lock)

    # Connecting

    def _location(self) -> S3Location:
        return parse_s3_uri(self.uri, DROP_SETTING)

    def _store(self) -> tuple[Any, S3Location]:
        """The client and the drop's location, the bucket checked on first use."""
        location = self._location()
        if self.connections < 1:
            raise ConfigurationError(
                f"the export drop's connections is {self.connections}; set it to 1 or more"
            )
        with self._lock:
            if self._client is None:
                access = S3Access(self.endpoint_url, self.region, self.credentials_env)
                client = access.client()
                require_bucket(client, location, access, role=DROP_ROLE)
                self._client = client
            return self._client, location

    # Listing

    def available_days(self) -> list[date]:
        """Day "folders" under the prefix; other names are ignored."""
        client, location = self._store()
        base = _folder(location.key())
        days = []
        pages = client.get_paginator("list_objects_v2").paginate(
            Bucket=location.bucket,
            Prefix=base,
            Delimiter="/",
            PaginationConfig={"PageSize": _PAGE_SIZE},
        )
        for page in pages:
            for common in page.get("CommonPrefixes", []):
                day = _day_of(common["Prefix"][len(base) :].rstrip("/"))
                if day is not None:
                    days.append(day)
        return sorted(days)

    def list_day(self, day: date) -> DayListing:
        """Read the routing headers of the day's objects, `connections` at a time, and route
        their studies; a day without objects is a day without studies."""
        client, location = self._store()
        objects = _day_objects(client, location, day)
        with ThreadPoolExecutor(max_workers=self.connections, thread_name_prefix="s3drop") as pool:
            headers = list(pool.map(lambda o: _read_header(client, location.bucket, o), objects))
        return list_day(day, headers)

    def day_summaries(self) -> dict[date, str]:
        """Files per day, from one listing of the whole drop."""
        client, location = self._store()
        base = _folder(location.key())
        counts: dict[date, int] = {}
        for key, _ in _listed(client, location.bucket, base):
            name, slash, rest = key[len(base) :].partition("/")
            day = _day_of(name) if slash else None
            if day is None:
                continue
            counts[day] = counts.get(day, 0) + (0 if _is_folder_marker(rest) else 1)
        return {day: f"files={counts[day]}" for day in sorted(counts)}

    # Retrieving

    def fetch(self, file: SourceFile, destination: Path) -> None:
        """Download one object of the drop to `destination`."""
        client, location = self._store()
        _download(client, location, file, destination)

    def fetch_many(
        self,
        files: Sequence[tuple[SourceFile, Path]],
        on_file: Callable[[SourceFile, Path], None],
    ) -> None:
        """Download over `connections` threads; `on_file` runs in the calling thread as each
        file completes. The first failure stops the others and is raised once the files that
        did complete have been handed to `on_file`."""
        client, location = self._store()
        if not files:
            return
        chunks = split_evenly([[item] for item in files], self.connections)

        def work(
            chunk: list[tuple[SourceFile, Path]],
            report: Callable[[tuple[SourceFile, Path]], None],
            stop: threading.Event,
        ) -> None:
            for file, path in chunk:
                if stop.is_set():
                    return
                _download(client, location, file, path)
                report((file, path))

        run_workers(chunks, work, lambda done: on_file(*done))

    def source_checksum(self, file: SourceFile) -> str | None:
        """None: S3 holds no SHA-256 of an object unless its uploader asked for one (an ETag is
        an MD5 only for single-part uploads), and asking per file would cost a request each. A
        landed copy that is still intact is trusted, as for a PACS; an object re-exported under
        the same key and SOPInstanceUID with other bytes is therefore not landed again."""
        return None


def _folder(key: str) -> str:
    """`key` as a folder prefix: with a trailing slash, or empty for the bucket's root."""
    return f"{key}/" if key else ""


def _day_of(name: str) -> date | None:
    """The day a day folder's name stands for; None unless it is exactly YYYYMMDD."""
    try:
        day = datetime.strptime(name, DAY_FOLDER_FORMAT).date()
    except ValueError:
        return None
    # strptime also takes "2024311"; such a folder is not the one list_day would read.
    return day if day.strftime(DAY_FOLDER_FORMAT) == name else None


def _is_folder_marker(rest: str) -> bool:
    """Whether a key (past its day folder) is an empty "folder" some consoles create."""
    return rest == "" or rest.endswith("/")


def _listed(client: Any, bucket: str, prefix: str) -> Iterator[tuple[str, int]]:
    """Key and size of every object under `prefix`, page by page."""
    pages = client.get_paginator("list_objects_v2").paginate(
        Bucket=bucket, Prefix=prefix, PaginationConfig={"PageSize": _PAGE_SIZE}
    )
    for page in pages:
        for item in page.get("Contents", []):
            yield item["Key"], int(item["Size"])


def _day_objects(client: Any, location: S3Location, day: date) -> list[_Object]:
    """The day's objects (folder markers left out), in the order the folder drop reads files."""
    day_folder = _folder(location.key(day.strftime(DAY_FOLDER_FORMAT)))
    objects, unmapped = [], 0
    for key, size in _listed(client, location.bucket, day_folder):
        if _is_folder_marker(key[len(day_folder) :]):
            continue
        ref = location.relative(key).as_posix()
        if not _maps_back(location, ref, key):
            unmapped += 1
            continue
        objects.append(_Object(key, size, ref))
    if unmapped:
        raise ObjectStoreError(
            f"{unmapped} objects of the export drop's day {day.isoformat()} in bucket "
            f"{location.bucket!r} have keys with empty, '.' or '..' segments, which no drop "
            "reference can name: rename them in the bucket, then run again"
        )
    # Sorted as paths, not as text, so that a study's first file is the folder drop's.
    return sorted(objects, key=lambda o: PurePosixPath(o.ref))


def _maps_back(location: S3Location, ref: str, key: str) -> bool:
    try:
        return location.key(ref) == key
    except ValueError:
        return False


def _read_header(client: Any, bucket: str, obj: _Object) -> _Header:
    """The routing header of one object, from its first bytes when the header ends there."""
    if obj.size == 0:
        return read_routing_header_from_bytes(b"", obj.ref, whole=True)
    length = HEADER_BYTES
    while True:
        data, total = _first_bytes(client, bucket, obj.key, length)
        header = read_routing_header_from_bytes(data, obj.ref, whole=len(data) >= total)
        if header is not None:
            return header
        length *= _HEADER_GROWTH


def _first_bytes(client: Any, bucket: str, key: str, length: int) -> tuple[bytes, int]:
    """Up to `length` bytes from the start of an object, and the object's whole size."""
    answer = client.get_object(Bucket=bucket, Key=key, Range=f"bytes=0-{length - 1}")
    data: bytes = answer["Body"].read()
    content_range = str(answer.get("ContentRange") or "")
    _, slash, total = content_range.rpartition("/")
    # Without a Content-Range the store ignored the range and sent the whole object.
    return data, int(total) if slash and total.isdigit() else len(data)


def _download(client: Any, location: S3Location, file: SourceFile, destination: Path) -> None:
    """Stream one object to `destination`, raising ObjectStoreError when it is gone."""
    from botocore.exceptions import ClientError

    try:
        answer = client.get_object(Bucket=location.bucket, Key=location.key(file.ref))
    except ClientError as error:
        if str(error.response.get("Error", {}).get("Code", "")) in ("NoSuchKey", "404"):
            raise ObjectStoreError(
                f"an object listed in the export drop in bucket {location.bucket!r} disappeared "
                "before landing; re-run the partition to list the day again"
            ) from None
        raise
    with destination.open("wb") as out:
        shutil.copyfileobj(answer["Body"], out, _COPY_CHUNK)
