"""A PACS over DIMSE: C-FIND at study, series and image level finds a day's instances; C-GET on
our own associations, or C-MOVE to screenlake's storage SCP, retrieves them; C-STORE sends our
findings reports back.

AE titles, host and ports come from configuration. Errors and logs name the endpoint (host:port
and both AE titles) and counts, never a UID.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import date
from pathlib import Path
from typing import Any, TypeVar

import dagster as dg
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE, StoragePresentationContexts, build_role, evt
from pynetdicom.association import Association
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
)
from pynetdicom.transport import ThreadedAssociationServer

from resources.pacs import PacsSource
from screenlake.errors import ConfigurationError, IncompleteRetrievalError, PacsRefusedError
from screenlake.ingest import DayListing, SourceFile
from screenlake.pacs.dimse import (
    STORE_TRANSFER_SYNTAXES,
    Received,
    Retrieval,
    check_ae_title,
    find_outcome,
    rejection_text,
    retrieve_identifier,
    store_event,
)
from screenlake.pacs.listing import InstanceRef, PacsListing, build_listing, day_summaries
from screenlake.pacs.parallel import run_workers, split_evenly
from screenlake.pacs.query import (
    InstanceHit,
    SeriesHit,
    StudyHit,
    dicom_date,
    instance_hit,
    instance_identifier,
    routed_modalities,
    series_hit,
    series_identifier,
    study_hit,
    study_identifier,
)
from screenlake.pacs.redaction import redact_library_logs
from screenlake.pacs.retry import TransientError, with_retry
from screenlake.pacs.store import StoreOutcome, c_store_outcome

T = TypeVar("T")
FIND = StudyRootQueryRetrieveInformationModelFind
GET = StudyRootQueryRetrieveInformationModelGet
MOVE = StudyRootQueryRetrieveInformationModelMove
_STORE_REFUSED = 0xC000  # an instance no retrieval waits for
# pynetdicom's 120 common storage SOP classes: with the query/retrieve contexts they fit the
# 128 presentation contexts an association may propose.
_STORAGE_CLASSES = [
    str(c.abstract_syntax) for c in StoragePresentationContexts if c.abstract_syntax
]
# pynetdicom logs a non-conformant UID it is sent, with the UID, at WARNING.
redact_library_logs()


class DimseSource(PacsSource):
    """A DICOM node answering C-FIND and C-GET or C-MOVE (Study Root)."""

    host: str
    port: int = 104
    called_aet: str
    calling_aet: str = "SCREENLAKE"
    retrieve: str = "get"
    scp_host: str = "0.0.0.0"
    scp_port: int = 11113
    associations: int = 2

    # Configuration, associations, retries

    @property
    def endpoint(self) -> str:
        """host:port and AE titles: what errors and logs name."""
        return (
            f"{self.host}:{self.port} (called AE {self.called_aet!r}, "
            f"calling AE {self.calling_aet!r})"
        )

    def _check(self) -> None:
        check_ae_title(self.called_aet, "SCREENLAKE_DIMSE_AET")
        check_ae_title(self.calling_aet, "SCREENLAKE_AET")
        if self.retrieve not in ("get", "move"):
            raise ConfigurationError(
                f"SCREENLAKE_DIMSE_RETRIEVE must be get or move; got {self.retrieve!r}"
            )
        if self.associations < 1:
            raise ConfigurationError(
                f"SCREENLAKE_PACS_CONNECTIONS must be at least 1; got {self.associations}"
            )

    def _ae(self, *, retrieving: bool, storing: Sequence[str] = ()) -> AE:
        ae = AE(ae_title=self.calling_aet)
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = self.timeout_s
        ae.connection_timeout = min(self.timeout_s, 10.0)
        for sop_class in storing:
            ae.add_requested_context(sop_class, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
        if storing:
            return ae
        ae.add_requested_context(FIND)
        if retrieving and self.retrieve == "move":
            ae.add_requested_context(MOVE)
        elif retrieving:
            # C-GET sends instances back on our association: we take the storage SCP role.
            ae.add_requested_context(GET)
            for sop_class in _STORAGE_CLASSES:
                ae.add_requested_context(sop_class, STORE_TRANSFER_SYNTAXES)
        return ae

    @contextmanager
    def _association(
        self,
        *,
        retrieving: bool,
        on_store: Callable[[evt.Event], int] | None = None,
        storing: Sequence[str] = (),
    ) -> Iterator[Association]:
        """An association with the PACS, retried while it is unreachable; with `storing`, one
        that proposes only those storage SOP classes, for C-STORE."""
        self._check()
        ae = self._ae(retrieving=retrieving, storing=storing)
        roles: list[Any] = (
            [build_role(sop_class, scp_role=True) for sop_class in _STORAGE_CLASSES]
            if retrieving and self.retrieve == "get"
            else []
        )
        handlers: list[Any] = [(evt.EVT_C_STORE, on_store)] if on_store is not None else []

        def attempt() -> Association:
            self._count("association")
            assoc = ae.associate(
                self.host, self.port, ae_title=self.called_aet, ext_neg=roles, evt_handlers=handlers
            )
            if assoc.is_established:
                return assoc
            primitive = assoc.acceptor.primitive if assoc.is_rejected else None
            if primitive is not None and primitive.result == 0x01:
                raise PacsRefusedError(
                    f"the PACS at {self.endpoint} rejected our association for good "
                    f"({rejection_text(primitive.result_source, primitive.diagnostic)}); check "
                    "SCREENLAKE_DIMSE_AET is the PACS's AE title and that the PACS knows "
                    "SCREENLAKE_AET with this machine's address"
                )
            if primitive is not None:
                raise TransientError("association rejected for now (the PACS is busy)")
            raise TransientError("no association (connection refused, reset or timed out)")

        assoc = with_retry(
            attempt, policy=self._policy(), endpoint=self.endpoint, what="associating"
        )
        try:
            yield assoc
        finally:
            if assoc.is_established:
                assoc.release()

    def _find(self, assoc: Association, identifier: Dataset) -> list[Dataset]:
        self._count("c-find")
        found: list[Dataset] = []
        for status, answer in assoc.send_c_find(identifier, FIND):
            outcome = find_outcome(status, self.endpoint)
            if outcome == "pending" and answer is not None:
                found.append(answer)
            elif outcome == "done":
                return found
            elif outcome == "ended":
                break
        raise TransientError(
            "the association ended during C-FIND (aborted or timed out; a PACS that does not "
            "know our AE title aborts)"
        )

    # Searching

    def _studies(self, assoc: Association, study_date: str) -> list[StudyHit]:
        hits: list[StudyHit] = []
        for modality in routed_modalities():
            found = self._find(assoc, study_identifier(study_date, modality))
            hits.extend(h for ds in found if (h := study_hit(ds)))
        return hits

    def _query(self, what: str, run: Callable[[Association], T]) -> T:
        """Run a whole query on one association, again from the start if the PACS drops it."""

        def attempt() -> T:
            with self._association(retrieving=False) as assoc:
                return run(assoc)

        return with_retry(attempt, policy=self._policy(), endpoint=self.endpoint, what=what)

    def day_summaries(self) -> dict[date, str]:
        """Studies and instances per day of the look-back window."""
        studies = self._query("searching studies", lambda a: self._studies(a, self._lookback()))
        return day_summaries(studies)

    def list_day(self, day: date) -> DayListing:
        """C-FIND the day's studies per routed modality, then their series and instances."""

        def run(assoc: Association) -> PacsListing:
            studies = self._studies(assoc, dicom_date(day))
            series: dict[str, list[SeriesHit]] = {}
            instances: dict[str, list[InstanceHit]] = {}
            for uid in sorted({s.study_uid for s in studies}):
                series[uid] = [
                    h
                    for ds in self._find(assoc, series_identifier(uid))
                    if (h := series_hit(ds, uid))
                ]
                instances[uid] = [
                    i
                    for s in series[uid]
                    for ds in self._find(assoc, instance_identifier(uid, s.series_uid))
                    if (i := instance_hit(ds, uid, s.series_uid))
                ]
            return build_listing(day, studies, series, instances)

        result = self._query("listing the day", run)
        listing = result.listing
        dg.get_dagster_logger().info(
            f"DIMSE {self.endpoint}: {len(listing.studies)} routed studies on {day.isoformat()} "
            f"with {listing.file_count} instances; left out {result.unrouted_studies} unrouted, "
            f"{result.empty_studies} empty and {result.other_day_studies} of another date"
        )
        return listing

    # Retrieving

    def fetch(self, file: SourceFile, destination: Path) -> None:
        """One instance (C-GET or C-MOVE at image level)."""
        self.fetch_many([(file, destination)], lambda f, p: None, lambda f, reason: None)

    def fetch_many(
        self,
        files: Sequence[tuple[SourceFile, Path]],
        on_file: Callable[[SourceFile, Path], None],
        on_problem: Callable[[SourceFile, str], None],
    ) -> None:
        """Retrieve over `associations` associations, each taking whole series, a series' UIDs
        in one request; raises IncompleteRetrievalError when some listed instances could not be
        retrieved, PacsUnavailableError when the PACS stays down. No instance goes to
        `on_problem`: one the PACS cannot send now leaves the partition incomplete, so that the
        next run asks for it again instead of quarantining it."""
        self._check()
        if not files:
            return
        by_series: dict[tuple[str, str], list[tuple[SourceFile, Path]]] = {}
        for file, path in files:
            ref = InstanceRef.parse(file.ref)
            by_series.setdefault((ref.study_uid, ref.series_uid), []).append((file, path))
        chunks = split_evenly(list(by_series.values()), self.associations)
        retrievals = [Retrieval(chunk) for chunk in chunks]
        server = self._start_scp(retrievals) if self.retrieve == "move" else None
        try:
            results = run_workers(
                retrievals, self._retrieve_chunk, lambda done: on_file(done.file, done.path)
            )
        finally:
            if server is not None:
                server.shutdown()
        missing = Counter(reason for reasons in results for reason in reasons)
        if missing:
            raise IncompleteRetrievalError(
                f"{sum(missing.values())} of {len(files)} instances to retrieve from the PACS "
                f"at {self.endpoint} could not be retrieved "
                f"({', '.join(f'{n} x {r}' for r, n in sorted(missing.items()))}); the partition "
                "is incomplete. The instances that did land are kept; re-run the partition when "
                "the PACS can send the rest."
            )

    def _start_scp(self, retrievals: list[Retrieval]) -> ThreadedAssociationServer:
        """Our storage SCP for C-MOVE: it takes only the instances a retrieval is waiting for."""
        ae = AE(ae_title=self.calling_aet)
        ae.require_called_aet = True
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = self.timeout_s
        for sop_class in _STORAGE_CLASSES:
            ae.add_supported_context(sop_class, STORE_TRANSFER_SYNTAXES)

        def on_store(event: evt.Event) -> int:
            for retrieval in retrievals:
                status = store_event(retrieval, event)
                if status is not None:
                    return status
            return _STORE_REFUSED

        try:
            server = ae.start_server(
                (self.scp_host, self.scp_port),
                block=False,
                evt_handlers=[(evt.EVT_C_STORE, on_store)],
            )
        except OSError as error:
            raise ConfigurationError(
                f"cannot listen for C-MOVE on {self.scp_host}:{self.scp_port} "
                f"({type(error).__name__}); set SCREENLAKE_DIMSE_SCP_PORT to a free port that "
                "the PACS knows for SCREENLAKE_AET, or use SCREENLAKE_DIMSE_RETRIEVE=get"
            ) from None
        assert server is not None  # non-blocking start returns the server
        return server

    def _retrieve_chunk(
        self, retrieval: Retrieval, report: Callable[[Received], None], stop: threading.Event
    ) -> list[str]:
        """One worker: its series over one association at a time, reconnecting while the
        association keeps making progress, retrying with backoff while it does not."""
        retrieval.report = report
        while retrieval.pending() and not stop.is_set():
            before = retrieval.done_count()

            def attempt(before: int = before) -> None:
                try:
                    self._retrieve_on_one_association(retrieval, stop)
                except TransientError:
                    if retrieval.done_count() == before:
                        raise
                    # Progress was made: reconnect at once, with a fresh retry budget.

            with_retry(attempt, policy=self._policy(), endpoint=self.endpoint, what="retrieving")
        return retrieval.missing

    def _retrieve_on_one_association(self, retrieval: Retrieval, stop: threading.Event) -> None:
        on_store = retrieval.store_or_fail if self.retrieve == "get" else None
        with self._association(retrieving=True, on_store=on_store) as assoc:
            for request in retrieval.requests():
                if stop.is_set():
                    return
                self._count(f"c-{self.retrieve}")
                identifier = retrieve_identifier(request)
                retrieval.expect(request)
                if self.retrieve == "get":
                    responses = assoc.send_c_get(identifier, GET)
                else:
                    responses = assoc.send_c_move(identifier, self.calling_aet, MOVE)
                final = None
                for status, _ in responses:
                    if not status:
                        raise TransientError(
                            f"the association ended during C-{self.retrieve.upper()}"
                        )
                    final = int(status.Status)
                retrieval.settle(request, final)

    # Storing

    def store(self, datasets: Sequence[Dataset]) -> list[StoreOutcome]:
        """C-STORE each dataset over one association proposing their SOP classes; the whole
        batch is sent again if the association drops (a PACS keeps one instance per UID)."""
        if not datasets:
            return []
        sop_classes = sorted({str(ds.SOPClassUID) for ds in datasets})

        def attempt() -> list[StoreOutcome]:
            outcomes = []
            with self._association(retrieving=False, storing=sop_classes) as assoc:
                accepted = {str(c.abstract_syntax) for c in assoc.accepted_contexts}
                for ds in datasets:
                    if str(ds.SOPClassUID) not in accepted:
                        outcomes.append(
                            StoreOutcome(str(ds.SOPInstanceUID), False, "SOP class refused")
                        )
                        continue
                    self._count("c-store")
                    status = assoc.send_c_store(ds)
                    if not status or "Status" not in status:
                        raise TransientError("the association ended during C-STORE")
                    outcomes.append(c_store_outcome(str(ds.SOPInstanceUID), int(status.Status)))
            return outcomes

        outcomes = with_retry(
            attempt, policy=self._policy(), endpoint=self.endpoint, what="storing instances"
        )
        dg.get_dagster_logger().info(
            f"DIMSE {self.endpoint}: C-STORE of {len(outcomes)} instances, "
            f"{sum(o.accepted for o in outcomes)} accepted"
        )
        return outcomes
