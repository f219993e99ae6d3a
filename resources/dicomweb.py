"""A PACS over DICOMweb: QIDO-RS finds a day's studies, WADO-RS retrieves their instances,
STOW-RS sends our findings reports back.

Credentials come from the environment at run time (basic auth with SCREENLAKE_DICOMWEB_USER and
SCREENLAKE_DICOMWEB_PASSWORD, or a bearer token in SCREENLAKE_DICOMWEB_TOKEN). Errors and logs
name the server's URL and counts; request URLs, which hold UIDs, are never repeated.
"""

from __future__ import annotations

import functools
import logging
import os
import threading
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import date
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import dagster as dg
import pydicom
import requests
from dicomweb_client.api import DICOMwebClient
from pydicom.dataset import Dataset

from resources.pacs import PacsSource
from screenlake.errors import ConfigurationError, IncompleteRetrievalError, PacsRefusedError
from screenlake.ingest import DayListing, SourceFile
from screenlake.pacs.listing import InstanceRef, build_listing, day_summaries
from screenlake.pacs.multipart import (
    Event,
    MultipartError,
    PartData,
    PartStart,
    boundary_of,
    split_parts,
)
from screenlake.pacs.parallel import run_workers
from screenlake.pacs.query import (
    INSTANCE_KEYS,
    SERIES_KEYS,
    STUDY_KEYS,
    InstanceHit,
    SeriesHit,
    StudyHit,
    dicom_date,
    from_qido,
    instance_hit,
    qido_study_filters,
    routed_modalities,
    series_hit,
    study_hit,
)
from screenlake.pacs.redaction import redact_library_logs
from screenlake.pacs.retry import TransientError, with_retry
from screenlake.pacs.store import StoreOutcome, stow_outcomes

# dicomweb-client logs request URLs, which hold study and instance UIDs, at DEBUG; urllib3 logs
# one when it cannot parse an answer's headers.
logging.getLogger("dicomweb_client").setLevel(logging.INFO)
redact_library_logs()

USER_ENV = "SCREENLAKE_DICOMWEB_USER"
PASSWORD_ENV = "SCREENLAKE_DICOMWEB_PASSWORD"
TOKEN_ENV = "SCREENLAKE_DICOMWEB_TOKEN"
# As stored: the PACS sends each instance in its own transfer syntax, compressed or not.
_AS_STORED = (("application/dicom", "*"),)
_ACCEPT_AS_STORED = 'multipart/related; type="application/dicom"; transfer-syntax=*'
_CHUNK = 1 << 20
_TRANSIENT_STATUS = frozenset({408, 429, 500, 502, 503, 504})
# A series the batch asks this many instances of or more comes in one request.
_SERIES_AT_LEAST = 2


class _Missing(Exception):
    """The server no longer holds an instance it listed (HTTP 404 or 410)."""


class DicomWebSource(PacsSource):
    """A DICOMweb server (QIDO-RS and WADO-RS), e.g. `https://pacs.example.org/dicom-web`."""

    url: str
    username: str | None = None
    password_env: str = PASSWORD_ENV
    token_env: str = TOKEN_ENV
    connections: int = 4
    page_size: int = 1000

    # Configuration, connections, retries

    @property
    def endpoint(self) -> str:
        """The server's URL without any credentials: what errors and logs name."""
        parts = urlsplit(self.url)
        host = parts.hostname or ""
        netloc = f"{host}:{parts.port}" if parts.port else host
        return urlunsplit((parts.scheme, netloc, parts.path.rstrip("/"), "", ""))

    @contextmanager
    def _clients(self, count: int = 1) -> Iterator[list[DICOMwebClient]]:
        """`count` clients, each with its own HTTP session (connection pool), closed after."""
        sessions = [requests.Session() for _ in range(count)]
        try:
            yield [self._client(session) for session in sessions]
        finally:
            for session in sessions:
                session.close()

    def _client(self, session: requests.Session) -> DICOMwebClient:
        if not self.url.startswith(("http://", "https://")):
            raise ConfigurationError(
                "SCREENLAKE_DICOMWEB_URL must be an http:// or https:// URL of the DICOMweb "
                "root, e.g. https://pacs.example.org/dicom-web"
            )
        if self.connections < 1:
            raise ConfigurationError(
                f"SCREENLAKE_PACS_CONNECTIONS must be at least 1; got {self.connections}"
            )
        token = dg.EnvVar(self.token_env).get_value()
        if token:
            session.headers["Authorization"] = f"Bearer {token}"
        elif self.username:
            session.auth = (self.username, dg.EnvVar(self.password_env).get_value() or "")
        client = DICOMwebClient(url=self.url.rstrip("/"), session=session, timeout=self.timeout_s)
        client.set_http_retry_params(retry=False)  # ours retries, with the policy configured
        return client

    def _call(self, kind: str, what: str, operation: Callable[[], Any]) -> Any:
        """One request with retries; HTTP errors sorted into retry, refusal and missing."""

        def attempt() -> Any:
            self._count(kind)
            try:
                return operation()
            except requests.HTTPError as error:
                raise self._http_error(error) from None
            except requests.RequestException as error:
                # Connection refused or reset, timeouts, a body cut short: the server may return.
                raise TransientError(type(error).__name__) from None

        return with_retry(attempt, policy=self._policy(), endpoint=self.endpoint, what=what)

    def _http_error(self, error: requests.HTTPError) -> Exception:
        status = error.response.status_code if error.response is not None else 0
        if status in _TRANSIENT_STATUS:
            return TransientError(f"HTTP {status}")
        if status in (404, 410):
            return _Missing(f"HTTP {status}")
        if status in (401, 403):
            return PacsRefusedError(
                f"the DICOMweb server at {self.endpoint} refused our credentials (HTTP {status}); "
                f"set {USER_ENV} and {PASSWORD_ENV}, or {TOKEN_ENV}, to an account allowed to "
                "search and retrieve"
            )
        return PacsRefusedError(
            f"the DICOMweb server at {self.endpoint} refused a request (HTTP {status}); check "
            "SCREENLAKE_DICOMWEB_URL points at the DICOMweb root"
        )

    # Searching

    def _search(
        self, what: str, search: Callable[[int, int], list[dict[str, Any]]]
    ) -> Iterator[Dataset]:
        """Every result of a QIDO search, page by page."""
        offset = 0
        while True:
            try:
                page = self._call("qido", what, functools.partial(search, offset, self.page_size))
            except _Missing:
                return
            yield from (from_qido(r) for r in page)
            if len(page) < self.page_size:
                return
            offset += len(page)

    def _studies(self, client: DICOMwebClient, study_date: str) -> list[StudyHit]:
        hits: list[StudyHit] = []
        for modality in routed_modalities():

            def search(offset: int, limit: int, m: str = modality) -> list[dict[str, Any]]:
                return client.search_for_studies(
                    search_filters=qido_study_filters(study_date, m),
                    fields=list(STUDY_KEYS),
                    offset=offset,
                    limit=limit,
                )

            hits.extend(
                h for ds in self._search("searching studies", search) if (h := study_hit(ds))
            )
        return hits

    def _series(self, client: DICOMwebClient, study_uid: str) -> list[SeriesHit]:
        def search(offset: int, limit: int) -> list[dict[str, Any]]:
            return client.search_for_series(
                study_uid, fields=list(SERIES_KEYS), offset=offset, limit=limit
            )

        found = self._search("searching series", search)
        return [h for ds in found if (h := series_hit(ds, study_uid))]

    def _instances(self, client: DICOMwebClient, study_uid: str) -> list[InstanceHit]:
        def search(offset: int, limit: int) -> list[dict[str, Any]]:
            return client.search_for_instances(
                study_uid, fields=list(INSTANCE_KEYS), offset=offset, limit=limit
            )

        found = self._search("searching instances", search)
        return [h for ds in found if (h := instance_hit(ds, study_uid))]

    def day_summaries(self) -> dict[date, str]:
        """Studies and instances per day of the look-back window."""
        with self._clients() as (client,):
            return day_summaries(self._studies(client, self._lookback()))

    def list_day(self, day: date) -> DayListing:
        """QIDO-RS: the day's studies per routed modality, their series (routing) and instances."""
        with self._clients() as (client,):
            studies = self._studies(client, dicom_date(day))
            uids = sorted({s.study_uid for s in studies})
            series = {uid: self._series(client, uid) for uid in uids}
            instances = {uid: self._instances(client, uid) for uid in uids}
        result = build_listing(day, studies, series, instances)
        dg.get_dagster_logger().info(
            f"DICOMweb {self.endpoint}: {len(result.listing.studies)} routed studies on "
            f"{day.isoformat()} with {result.listing.file_count} instances; left out "
            f"{result.unrouted_studies} unrouted, {result.empty_studies} empty and "
            f"{result.other_day_studies} of another date"
        )
        return result.listing

    # Retrieving

    @contextmanager
    def _sessions(self, count: int = 1) -> Iterator[list[requests.Session]]:
        """`count` HTTP sessions set up as the clients' are (auth, checks), closed after."""
        sessions = [requests.Session() for _ in range(count)]
        try:
            for session in sessions:
                self._client(session)
            yield sessions
        finally:
            for session in sessions:
                session.close()

    def _stream(
        self,
        session: requests.Session,
        path: str,
        what: str,
        take: Callable[[Iterator[Path]], bool],
        temporary: Path,
    ) -> None:
        """One WADO-RS request (with retries) for `path` under the server's root, its parts
        written as they arrive, each to `temporary`; `take` gets an iterator of the temporary file
        as each part is written whole, and returns True once it has what it wanted."""
        url = f"{self.url.rstrip('/')}/{path}"

        def attempt() -> None:
            self._count("wado")
            try:
                with session.get(
                    url,
                    headers={"Accept": _ACCEPT_AS_STORED},
                    timeout=self.timeout_s,
                    stream=True,
                ) as response:
                    response.raise_for_status()
                    boundary = boundary_of(response.headers.get("Content-Type", ""))
                    chunks = response.iter_content(chunk_size=_CHUNK)
                    if not take(_written_parts(split_parts(chunks, boundary), temporary)):
                        raise _Missing(
                            "an instance listed without SOPInstanceUID is not in its series"
                        )
            except requests.HTTPError as error:
                temporary.unlink(missing_ok=True)
                raise self._http_error(error) from None
            except requests.RequestException as error:
                temporary.unlink(missing_ok=True)
                raise TransientError(type(error).__name__) from None
            except MultipartError as error:
                temporary.unlink(missing_ok=True)
                raise TransientError(f"a malformed answer ({error})") from None

        with_retry(attempt, policy=self._policy(), endpoint=self.endpoint, what=what)

    def _retrieve(self, session: requests.Session, ref: InstanceRef, destination: Path) -> None:
        """WADO-RS: write the instance `ref` names to `destination` as the server stores it,
        atomically (whole or absent), without parsing it."""
        temporary = destination.with_name(destination.name + ".part")
        series = f"studies/{ref.study_uid}/series/{ref.series_uid}"
        if ref.sop_uid is not None:

            def first(parts: Iterator[Path]) -> bool:
                for written in parts:
                    os.replace(written, destination)
                    return True
                raise _Missing("the server answered without the instance")

            self._stream(
                session,
                f"{series}/instances/{ref.sop_uid}",
                "retrieving an instance",
                first,
                temporary,
            )
            return

        # Listed without a SOPInstanceUID: only its series can be asked for, streamed until the
        # instance's position among the series' unnamed instances is reached.
        def unnamed(parts: Iterator[Path]) -> bool:
            position = 0
            for written in parts:
                if _sop_uid(written) is None:
                    position += 1
                    if position == ref.unnamed:
                        os.replace(written, destination)
                        return True
                written.unlink(missing_ok=True)
            return False

        self._stream(session, series, "retrieving a series", unnamed, temporary)

    def fetch(self, file: SourceFile, destination: Path) -> None:
        """WADO-RS: one instance, as stored."""
        try:
            with self._sessions() as (session,):
                self._retrieve(session, InstanceRef.parse(file.ref), destination)
        except _Missing as missing:
            raise IncompleteRetrievalError(
                f"the DICOMweb server at {self.endpoint} no longer holds an instance it listed "
                f"({missing}); re-run the partition to list it afresh"
            ) from None

    def _retrieve_series(
        self,
        session: requests.Session,
        items: list[tuple[SourceFile, Path]],
        report: Callable[[tuple[SourceFile, Path]], None],
        stop: threading.Event,
    ) -> list[str]:
        """WADO-RS: the instances `items` name, all of one series, with one request for the
        series; each part is written to a temporary file, kept (and reported) when the batch
        asked for it and removed otherwise. What the answer lacked is asked for instance by
        instance. Returns why each instance that could not be retrieved is missing."""
        named: dict[str, tuple[SourceFile, Path]] = {}
        unnamed: dict[int, tuple[SourceFile, Path]] = {}
        for file, path in items:
            ref = InstanceRef.parse(file.ref)
            if ref.sop_uid is None:
                unnamed[ref.unnamed] = (file, path)
            else:
                named[ref.sop_uid] = (file, path)
        first = InstanceRef.parse(items[0][0].ref)
        series = f"studies/{first.study_uid}/series/{first.series_uid}"
        temporary = items[0][1].with_name(items[0][1].name + ".part")
        taken: set[str | int] = set()  # kept across attempts: a retry takes only the rest

        def keep(key: str | int, item: tuple[SourceFile, Path], written: Path) -> None:
            os.replace(written, item[1])
            taken.add(key)
            report(item)

        def take(parts: Iterator[Path]) -> bool:
            position = 0
            for written in parts:
                sop = _sop_uid(written)
                if sop is None:
                    position += 1
                key: str | int = sop if sop is not None else position
                item = named.get(sop) if sop is not None else unnamed.get(position)
                if item is not None and key not in taken:
                    keep(key, item, written)
                else:
                    written.unlink(missing_ok=True)
                if stop.is_set() or len(taken) == len(named) + len(unnamed):
                    return True
            return True

        try:
            self._stream(session, series, "retrieving a series", take, temporary)
        except _Missing:
            pass  # the series is gone as a whole: each instance is asked for on its own
        finally:
            temporary.unlink(missing_ok=True)
        missing = []
        for sop, item in named.items():
            if sop in taken:
                continue
            if stop.is_set():
                break
            try:
                self._retrieve(session, InstanceRef.parse(item[0].ref), item[1])
            except _Missing as reason:
                missing.append(str(reason))
                continue
            report(item)
        if not stop.is_set():
            missing.extend(
                "an instance listed without SOPInstanceUID is not in its series"
                for position in unnamed
                if position not in taken
            )
        return missing

    def fetch_many(
        self,
        files: Sequence[tuple[SourceFile, Path]],
        on_file: Callable[[SourceFile, Path], None],
        on_problem: Callable[[SourceFile, str], None],
    ) -> None:
        """WADO-RS over `connections` sessions, each taking whole series: a series the batch
        asks two or more instances of comes in one request, a lone instance in its own; raises
        IncompleteRetrievalError when the server no longer holds some listed instances. No
        instance goes to `on_problem`: one the PACS cannot send now leaves the partition
        incomplete, so that the next run asks for it again instead of quarantining it."""
        by_series: dict[str, list[tuple[SourceFile, Path]]] = {}
        for file, path in files:
            ref = InstanceRef.parse(file.ref)
            by_series.setdefault(f"{ref.study_uid}/{ref.series_uid}", []).append((file, path))
        # Whole series onto the connection with the fewest instances so far, largest first.
        buckets: list[list[list[tuple[SourceFile, Path]]]] = [
            [] for _ in range(max(self.connections, 1))
        ]
        for group in sorted(by_series.values(), key=len, reverse=True):
            min(buckets, key=lambda b: sum(len(g) for g in b)).append(group)
        chunks = [b for b in buckets if b]

        def work(
            chunk: tuple[requests.Session, list[list[tuple[SourceFile, Path]]]],
            report: Callable[[tuple[SourceFile, Path]], None],
            stop: threading.Event,
        ) -> list[str]:
            session, groups = chunk
            missing = []
            for group in groups:
                if stop.is_set():
                    break
                if len(group) >= _SERIES_AT_LEAST:
                    missing.extend(self._retrieve_series(session, group, report, stop))
                    continue
                for file, path in group:
                    if stop.is_set():
                        break
                    try:
                        self._retrieve(session, InstanceRef.parse(file.ref), path)
                    except _Missing as reason:
                        missing.append(str(reason))
                        continue
                    report((file, path))
            return missing

        with self._sessions(len(chunks)) as sessions:
            results = run_workers(
                list(zip(sessions, chunks, strict=True)), work, lambda done: on_file(*done)
            )
        missing = Counter(reason for reasons in results for reason in reasons)
        if missing:
            raise IncompleteRetrievalError(
                f"{sum(missing.values())} of {len(files)} instances to retrieve from the "
                f"DICOMweb server at {self.endpoint} could not be retrieved "
                f"({', '.join(f'{n} x {r}' for r, n in sorted(missing.items()))}); the partition "
                "is incomplete. The instances that did land are kept; re-run the partition "
                "when the PACS holds the rest."
            )

    # Storing

    def store(self, datasets: Sequence[Dataset]) -> list[StoreOutcome]:
        """STOW-RS: every dataset in one request, retried while the server is unreachable or
        busy. A partial refusal (HTTP 409) still gives an outcome per instance."""
        if not datasets:
            return []
        sent = [str(ds.SOPInstanceUID) for ds in datasets]
        with self._clients() as (client,):

            def post() -> Dataset:
                try:
                    response: Dataset = client.store_instances(list(datasets))
                except requests.HTTPError as error:
                    if error.response is None or error.response.status_code != 409:
                        raise
                    return _stow_failure_body(error.response)
                return response

            answer: Dataset = self._call("stow", "storing instances", post)
        outcomes = stow_outcomes(answer, sent)
        dg.get_dagster_logger().info(
            f"DICOMweb {self.endpoint}: STOW-RS of {len(sent)} instances, "
            f"{sum(o.accepted for o in outcomes)} accepted"
        )
        return outcomes


def _stow_failure_body(response: requests.Response) -> Dataset:
    """The Store Instances Response a server sends with HTTP 409, or an empty one."""
    if "json" not in response.headers.get("Content-Type", ""):
        return Dataset()
    try:
        return Dataset.from_json(response.json())
    except ValueError:
        return Dataset()


def _written_parts(events: Iterator[Event], temporary: Path) -> Iterator[Path]:
    """Write each part of a multipart answer to `temporary` as it streams in, yielding the file
    once the part is whole; a part cut short is left behind for the caller to remove."""
    out = None
    try:
        for event in events:
            if isinstance(event, PartStart):
                out = open(temporary, "wb")  # noqa: SIM115 - closed at the part's end
            elif isinstance(event, PartData):
                assert out is not None
                out.write(event.data)
            else:
                assert out is not None
                out.close()
                out = None
                yield temporary
    finally:
        if out is not None:
            out.close()


def _sop_uid(path: Path) -> str | None:
    """The SOPInstanceUID of a written instance, read without its pixels."""
    dataset = pydicom.dcmread(
        path, stop_before_pixels=True, specific_tags=["SOPInstanceUID"], force=True
    )
    value = dataset.get("SOPInstanceUID")
    return str(value) if value else None
