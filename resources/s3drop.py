"""An export drop on S3 or an S3-compatible store: `SCREENLAKE_DROP=s3://bucket/prefix`.

The layout is the folder drop's, `<prefix>/YYYYMMDD/<any sub-folders>/<files>`, and file
references are relative to the drop's root as there (`20260301/Pat/ACC/1/IM1.dcm`), so the same
files give the same routing, orphans and problems. Headers are read with ranged GETs of each
object's first bytes; boto3 is loaded only when a client is made (`S3Access.client`), so the
Dagster code location loads without it.

Export drops name folders after patients and accessions, so no error or log names an object's
key: botocore's errors are turned into ObjectStoreError (the bucket, the endpoint, what was
being done) at this module's edge, without their chain. An object gone since listing is that
one file's problem (`on_problem`, or UnreadableInstanceError from `fetch`); a bucket, endpoint
or credentials failure is the partition's.
"""

from __future__ import annotations

import hashlib
import shutil
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from pydantic import PrivateAttr

from resources.sources import DAY_FOLDER_FORMAT, StudySource
from screenlake.errors import ConfigurationError, ObjectStoreError, UnreadableInstanceError
from screenlake.ingest import (
    DayListing,
    SourceFile,
    _Header,
    list_day,
    read_routing_header_from_bytes,
    unreadable_reason,
)
from screenlake.objectstore.access import S3Access, error_code, require_bucket, store_errors
from screenlake.objectstore.location import S3Location, parse_s3_uri
from screenlake.pacs.parallel import run_workers, split_evenly
from screenlake.pacs.redaction import redact_library_logs

if TYPE_CHECKING:
    from botocore.exceptions import ClientError

DROP_SETTING = "SCREENLAKE_DROP"
DROP_ROLE = "the export drop (SCREENLAKE_DROP)"
# A routing header nearly always ends well inside this; longer ones are read again, larger.
HEADER_BYTES = 64 * 1024
# Each further read of a long header asks for this many times more, up to the whole object:
# an enhanced multi-frame object can hold megabytes of header before gigabytes of pixels.
_HEADER_GROWTH = 8
_PAGE_SIZE = 1000  # ListObjectsV2's own maximum
_COPY_CHUNK = 1024 * 1024
# An object deleted since it was listed; an archived one (Glacier) cannot be read until restored.
_GONE_CODES = frozenset({"NoSuchKey", "404", "NotFound"})
_ARCHIVED_CODE = "InvalidObjectState"
_DIGEST_HEX = 16


@dataclass(frozen=True)
class _Listed:
    """One object as ListObjectsV2 gives it."""

    key: str
    size: int
    etag: str
    modified: str


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

    def _access(self) -> S3Access:
        return S3Access(self.endpoint_url, self.region, self.credentials_env)

    def _errors(self, location: S3Location, doing: str) -> AbstractContextManager[None]:
        """botocore's errors while `doing`, as ObjectStoreError without keys or chain."""
        return store_errors(DROP_ROLE, location.bucket, self._access().where(), doing)

    def _store(self) -> tuple[Any, S3Location]:
        """The client and the drop's location, the bucket checked on first use."""
        location = self._location()
        if self.connections < 1:
            raise ConfigurationError(
                f"the export drop's connections is {self.connections}; set it to 1 or more"
            )
        with self._lock:
            if self._client is None:
                access = self._access()
                client = access.client()
                # urllib3 logs a request URL (the object's key) when it cannot parse headers.
                redact_library_logs(("urllib3", "botocore"))
                require_bucket(client, location, access, role=DROP_ROLE)
                self._client = client
            return self._client, location

    # Listing

    def available_days(self) -> list[date]:
        """Day "folders" under the prefix; other names are ignored."""
        client, location = self._store()
        base = _folder(location.key())
        days = []
        with self._errors(location, "listing the days"):
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
        with self._errors(location, "listing a day"):
            objects = _day_objects(client, location, day)
            with ThreadPoolExecutor(
                max_workers=self.connections, thread_name_prefix="s3drop"
            ) as pool:
                headers = list(
                    pool.map(lambda o: _read_header(client, location.bucket, o), objects)
                )
        return list_day(day, headers)

    def day_summaries(self) -> dict[date, str]:
        """Per day, its file count and a digest of its objects' sizes, ETags and modification
        times, from one listing of the whole drop: an object added, removed, replaced or
        re-uploaded changes it. Keys stay out of it (they name patients)."""
        client, location = self._store()
        base = _folder(location.key())
        found: dict[date, list[_Listed]] = {}
        with self._errors(location, "summarising the days"):
            for item in _listed(client, location.bucket, base):
                name, slash, rest = item.key[len(base) :].partition("/")
                day = _day_of(name) if slash else None
                if day is None:
                    continue
                objects = found.setdefault(day, [])
                if not _is_folder_marker(rest):
                    objects.append(item)
        return {day: _summary(found[day]) for day in sorted(found)}

    def day_summary(self, day: date) -> str:
        """`day_summaries()[day]` from a listing of that day alone; "" for a day without
        objects."""
        client, location = self._store()
        day_folder = _folder(location.key(day.strftime(DAY_FOLDER_FORMAT)))
        with self._errors(location, "summarising a day"):
            listed = list(_listed(client, location.bucket, day_folder))
        if not listed:
            return ""
        return _summary([o for o in listed if not _is_folder_marker(o.key[len(day_folder) :])])

    # Retrieving

    def fetch(self, file: SourceFile, destination: Path) -> None:
        """Download one object of the drop to `destination`; UnreadableInstanceError when that
        object cannot be had (gone since listing, archived), ObjectStoreError when the store
        fails."""
        client, location = self._store()
        _download(client, location, file, destination, self._errors(location, "landing files"))

    def fetch_many(
        self,
        files: Sequence[tuple[SourceFile, Path]],
        on_file: Callable[[SourceFile, Path], None],
        on_problem: Callable[[SourceFile, str], None],
    ) -> None:
        """Download over `connections` threads; `on_file` and `on_problem` run in the calling
        thread as each file completes or turns out not to be had (gone since listing,
        archived). The first failure of the store stops the others and is raised once the
        files that did complete have been handed on."""
        client, location = self._store()
        if not files:
            return
        chunks = split_evenly([[item] for item in files], self.connections)

        def work(
            chunk: list[tuple[SourceFile, Path]],
            report: Callable[[tuple[SourceFile, Path, str | None]], None],
            stop: threading.Event,
        ) -> None:
            for file, path in chunk:
                if stop.is_set():
                    return
                try:
                    _download(client, location, file, path, self._errors(location, "landing files"))
                except UnreadableInstanceError as problem:
                    report((file, path, str(problem)))
                    continue
                report((file, path, None))

        def hand_on(done: tuple[SourceFile, Path, str | None]) -> None:
            file, path, problem = done
            if problem is None:
                on_file(file, path)
            else:
                on_problem(file, problem)

        run_workers(chunks, work, hand_on)

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


def _listed(client: Any, bucket: str, prefix: str) -> Iterator[_Listed]:
    """Every object under `prefix`, page by page."""
    pages = client.get_paginator("list_objects_v2").paginate(
        Bucket=bucket, Prefix=prefix, PaginationConfig={"PageSize": _PAGE_SIZE}
    )
    for page in pages:
        for item in page.get("Contents", []):
            modified = item.get("LastModified")
            yield _Listed(
                str(item["Key"]),
                int(item["Size"]),
                str(item.get("ETag", "")).strip('"'),
                modified.isoformat() if isinstance(modified, datetime) else str(modified or ""),
            )


def _summary(objects: Sequence[_Listed]) -> str:
    """A day's file count and a digest of its objects' (size, ETag, LastModified), sorted so
    that the listing's order does not matter."""
    lines = sorted(f"{o.size}\t{o.etag}\t{o.modified}" for o in objects)
    digest = hashlib.sha256("\n".join(lines).encode()).hexdigest()[:_DIGEST_HEX]
    return f"files={len(objects)};state={digest}"


def _day_objects(client: Any, location: S3Location, day: date) -> list[_Object]:
    """The day's objects (folder markers left out), in the order the folder drop reads files."""
    day_folder = _folder(location.key(day.strftime(DAY_FOLDER_FORMAT)))
    objects, unmapped = [], 0
    for item in _listed(client, location.bucket, day_folder):
        if _is_folder_marker(item.key[len(day_folder) :]):
            continue
        ref = location.relative(item.key).as_posix()
        if not _maps_back(location, ref, item.key):
            unmapped += 1
            continue
        objects.append(_Object(item.key, item.size, ref))
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
    """The routing header of one object, from its first bytes when the header ends there; an
    object deleted since the listing carries that as its problem, as a vanished file of a
    folder drop does."""
    from botocore.exceptions import ClientError

    if obj.size == 0:
        return read_routing_header_from_bytes(b"", obj.ref, whole=True)
    length = HEADER_BYTES
    while True:
        try:
            data, total = _first_bytes(client, bucket, obj.key, length)
        except ClientError as error:
            if error_code(error) not in _GONE_CODES:
                raise
            gone = unreadable_reason(FileNotFoundError())
            return _Header(SourceFile(obj.ref, problem=gone))
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


def _download(
    client: Any,
    location: S3Location,
    file: SourceFile,
    destination: Path,
    errors: AbstractContextManager[None],
) -> None:
    """Stream one object to `destination`: UnreadableInstanceError when that object cannot be
    had, the store's other failures through `errors`; nothing is left at `destination` then."""
    from botocore.exceptions import ClientError

    try:
        key = location.key(file.ref)
    except ValueError:
        raise UnreadableInstanceError("its reference leaves the export drop") from None
    problem: UnreadableInstanceError | None = None
    complete = False
    try:
        with errors:
            try:
                answer = client.get_object(Bucket=location.bucket, Key=key)
                with destination.open("wb") as out:
                    shutil.copyfileobj(answer["Body"], out, _COPY_CHUNK)
                complete = True
            except ClientError as error:
                problem = _unobtainable(error)
                if problem is None:
                    raise
    finally:
        if not complete:
            destination.unlink(missing_ok=True)
    if problem is not None:
        # Raised outside the handler, so that botocore's error is not even its context.
        raise problem


def _unobtainable(error: ClientError) -> UnreadableInstanceError | None:
    """The one file's problem a GetObject error stands for; None when it is the store's."""
    code = error_code(error)
    if code in _GONE_CODES:
        return UnreadableInstanceError(
            "gone from the export drop between listing and landing (NoSuchKey); re-running "
            "the partition asks for it again"
        )
    if code == _ARCHIVED_CODE:
        return UnreadableInstanceError(
            "archived in the export drop's bucket (InvalidObjectState): restore it, then "
            "re-run the partition"
        )
    return None
