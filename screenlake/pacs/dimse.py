"""DIMSE bookkeeping without the network: AE titles, C-FIND and association outcomes, and what
one worker's retrieval still waits for.

A `Retrieval` asks for a series' instances in one C-GET or C-MOVE (a list of SOPInstanceUIDs);
when some of a batch do not arrive it asks for them again in halves, down to one instance at a
time, so one bad instance does not take its series down with it (Orthanc stops a C-GET at its
first failed sub-operation) and costs a few requests, not one per instance. An instance that
fails on its own is given up with the PACS's status. Instances
listed without a SOPInstanceUID are asked for with their series. The network code in
`resources/dimse.py` feeds it received instances and final statuses.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any, Protocol

from pydicom.dataset import Dataset
from pydicom.uid import (
    JPEG2000,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGLosslessSV1,
    JPEGLSLossless,
    RLELossless,
)

from screenlake.errors import ConfigurationError, PacsRefusedError
from screenlake.ingest import SourceFile
from screenlake.pacs.listing import InstanceRef
from screenlake.pacs.retry import TransientError

# Accepted as the PACS stores them: compressed pixel data lands untouched.
STORE_TRANSFER_SYNTAXES = [
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    DeflatedExplicitVRLittleEndian,
    JPEGBaseline8Bit,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEG2000Lossless,
    JPEG2000,
    RLELossless,
]
UIDS_PER_REQUEST = 500
SUCCESS = 0x0000
_PENDING = frozenset({0xFF00, 0xFF01})
_REFUSED = frozenset({0x0122, 0x0124, 0xA900})  # SOP class unsupported, not authorised, bad key

_REJECTIONS = {
    (1, 1): "no reason given",
    (1, 2): "application context not supported",
    (1, 3): "calling AE title not recognised",
    (1, 7): "called AE title not recognised",
    (2, 1): "no reason given by the ACSE provider",
    (2, 2): "protocol version not supported",
    (3, 1): "temporary congestion",
    (3, 2): "local limit exceeded",
}


def check_ae_title(value: str, setting: str) -> str:
    """`value` when it is a valid AE title (1 to 16 printable ASCII characters, no backslash);
    ConfigurationError naming `setting` otherwise."""
    stripped = value.strip()
    if not stripped or len(value) > 16 or "\\" in value or not value.isascii():
        raise ConfigurationError(
            f"{setting} must be an AE title of 1 to 16 ASCII characters without a backslash; "
            f"got {value!r}"
        )
    if not value.isprintable():
        raise ConfigurationError(f"{setting} holds a control character; got {value!r}")
    return value


def rejection_text(source: int | None, diagnostic: int | None) -> str:
    """A rejected association's source and reason, in words (PS3.8 9.3.4)."""
    return _REJECTIONS.get((source or 0, diagnostic or 0), f"source {source}, reason {diagnostic}")


def find_outcome(status: Dataset, endpoint: str) -> str:
    """'pending', 'done' or 'ended' (no status: association aborted or timed out) for one C-FIND
    response; raises for a failure, PacsRefusedError when retrying cannot help."""
    if not status or "Status" not in status:
        return "ended"
    code = int(status.Status)
    if code in _PENDING:
        return "pending"
    if code == SUCCESS:
        return "done"
    if code in _REFUSED:
        raise PacsRefusedError(
            f"the PACS at {endpoint} refused a C-FIND (status 0x{code:04X}); check that it "
            "allows our AE title to query (Study Root)"
        )
    raise TransientError(f"C-FIND failed with status 0x{code:04X}")


class _State(Enum):
    WANTED = "wanted"  # to be asked for, in batches of at most the item's `batch` instances
    DONE = "done"
    GIVEN_UP = "given up"


@dataclass(frozen=True)
class Request:
    """One C-GET or C-MOVE: instances of one series by UID, or the whole series."""

    study_uid: str
    series_uid: str
    sop_uids: tuple[str, ...]

    @property
    def whole_series(self) -> bool:
        """True for a series-level request (for instances listed without a UID)."""
        return not self.sop_uids


def retrieve_identifier(request: Request) -> Dataset:
    """The C-GET / C-MOVE identifier of `request`."""
    ds = Dataset()
    ds.QueryRetrieveLevel = "SERIES" if request.whole_series else "IMAGE"
    ds.StudyInstanceUID = request.study_uid
    ds.SeriesInstanceUID = request.series_uid
    if not request.whole_series:
        ds.SOPInstanceUID = list(request.sop_uids)
    return ds


@dataclass(frozen=True)
class Received:
    """An instance written to its landing path."""

    file: SourceFile
    path: Path


@dataclass
class _Item:
    file: SourceFile
    path: Path
    ref: InstanceRef
    state: _State = _State.WANTED
    batch: int = UIDS_PER_REQUEST


class Retrieval:
    """The instances one worker retrieves, and how far it got; safe to feed from the thread
    that receives C-STOREs while the worker's thread sends requests."""

    def __init__(self, items: list[tuple[SourceFile, Path]]) -> None:
        self._items = [_Item(f, p, InstanceRef.parse(f.ref)) for f, p in items]
        self._by_uid = {i.ref.sop_uid: i for i in self._items if i.ref.sop_uid is not None}
        self._lock = threading.Lock()
        self._in_flight: Request | None = None
        self.missing: list[str] = []
        self.report: Callable[[Received], None] = lambda received: None

    def pending(self) -> bool:
        """True while some instance is neither retrieved nor given up."""
        with self._lock:
            return any(i.state is _State.WANTED for i in self._items)

    def done_count(self) -> int:
        """Instances retrieved so far."""
        with self._lock:
            return sum(i.state is _State.DONE for i in self._items)

    def requests(self) -> Iterator[Request]:
        """The next request, until nothing is left to ask for; call `settle` after each."""
        while (request := self._next()) is not None:
            yield request

    def _next(self) -> Request | None:
        with self._lock:
            first = next((i for i in self._items if i.state is _State.WANTED), None)
            if first is None:
                return None
            if first.ref.sop_uid is None:
                return Request(first.ref.study_uid, first.ref.series_uid, ())
            uids = [
                i.ref.sop_uid
                for i in self._items
                if i.state is _State.WANTED
                and i.ref.sop_uid is not None
                and i.batch == first.batch
                and (i.ref.study_uid, i.ref.series_uid)
                == (first.ref.study_uid, first.ref.series_uid)
            ][: first.batch]
            return Request(first.ref.study_uid, first.ref.series_uid, tuple(uids))

    def expect(self, request: Request) -> None:
        """`request` is about to be sent: instances without a UID of its series may arrive."""
        with self._lock:
            self._in_flight = request

    def settle(self, request: Request, final_status: int | None) -> None:
        """The request's last response came with `final_status`: what did not arrive is asked
        for again in batches half the size, or given up when it was asked for alone (or with
        its whole series, having no UID)."""
        with self._lock:
            self._in_flight = None
            smaller = len(request.sop_uids) // 2
            for item in self._members(request):
                if item.state is not _State.WANTED:
                    continue
                if smaller >= 1:
                    item.batch = smaller
                else:
                    item.state = _State.GIVEN_UP
                    self.missing.append(_status_reason(final_status))

    def _members(self, request: Request) -> list[_Item]:
        if request.whole_series:
            return [
                i
                for i in self._items
                if i.ref.sop_uid is None
                and (i.ref.study_uid, i.ref.series_uid) == (request.study_uid, request.series_uid)
            ]
        return [self._by_uid[uid] for uid in request.sop_uids if uid in self._by_uid]

    def store(
        self,
        sop_uid: str | None,
        has_sop_uid: Callable[[], bool],
        encoded: Callable[[], bytes],
    ) -> int | None:
        """Take one C-STORE: write it when this retrieval waits for it and return the status to
        answer; None when it is not this retrieval's instance."""
        with self._lock:
            item = self._by_uid.get(sop_uid) if sop_uid else None
            if item is None or item.state is not _State.WANTED:
                in_flight = self._in_flight
                if in_flight is None or not in_flight.whole_series:
                    return None
                # A series asked for whole, for its instances without a UID: the named ones
                # come too, and are answered but not kept.
                if has_sop_uid():
                    return SUCCESS
                item = next((i for i in self._members(in_flight) if i.state is _State.WANTED), None)
                if item is None:
                    return SUCCESS
            _write_atomically(item.path, encoded())
            item.state = _State.DONE
            received = Received(item.file, item.path)
        self.report(received)
        return SUCCESS

    def store_or_fail(self, event: StoreEvent) -> int:
        """C-STORE handler of a C-GET association (a pynetdicom event)."""
        status = store_event(self, event)
        return status if status is not None else _STORE_REFUSED


_STORE_REFUSED = 0xC000


class StoreEvent(Protocol):
    """What a C-STORE handler is given (pynetdicom's `Event`), as far as a retrieval reads it."""

    @property
    def request(self) -> Any:
        """The C-STORE request: its AffectedSOPInstanceUID names the instance."""

    @property
    def dataset(self) -> Dataset:
        """The instance, decoded."""

    def encoded_dataset(self, include_meta: bool = True) -> bytes:
        """The instance as received, as a DICOM file."""


def store_event(retrieval: Retrieval, event: StoreEvent) -> int | None:
    """Feed a pynetdicom C-STORE event to `retrieval`."""
    sop_uid = str(getattr(event.request, "AffectedSOPInstanceUID", "") or "") or None

    def has_sop_uid() -> bool:
        return "SOPInstanceUID" in event.dataset

    def encoded() -> bytes:
        return event.encoded_dataset(include_meta=True)

    return retrieval.store(sop_uid, has_sop_uid, encoded)


def _status_reason(status: int | None) -> str:
    if status is None:
        return "not sent by the PACS (no final status)"
    return f"not sent by the PACS (final status 0x{status:04X})"


def _write_atomically(path: Path, data: bytes) -> None:
    temporary = path.with_name(path.name + ".part")
    temporary.write_bytes(data)
    os.replace(temporary, path)
