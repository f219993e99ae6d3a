"""Carrying out the erasures the register asks for: for each objection of scope `all` not yet
carried out, every batch that holds the patient is rewritten without them in both zones, and
the erasure is recorded twice:

- in the PHI zone, a request record encrypted under the vault key: whom it concerned (their
  objection token) and every value by which the zones held them, written before anything is
  removed, so that a run that dies half way is finished by the next with the same values, and
  so that `screenlake verify --erasures` knows what to look for once the vaults no longer do;
- in the research zone, the ledger (`erasure_ledger`, a view in the lake): per artefact, counts
  and digests before and after, and the run that did it; no value of the patient.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, fields, replace
from datetime import UTC, date, datetime
from pathlib import Path, PurePosixPath
from typing import Any

from cryptography.fernet import Fernet, InvalidToken

from screenlake import layout
from screenlake.erasure.artefacts import (
    ArtefactErasure,
    erase_from_phi_zone,
    erase_from_research_zone,
    shard_dirs,
)
from screenlake.erasure.exports import erase_from_exports, erase_labels, export_paths
from screenlake.erasure.traces import PatientTraces, batch_vaults, traces_of
from screenlake.errors import VaultError
from screenlake.fsutil import write_atomic
from screenlake.keybinding import Zone
from screenlake.lake import PARTITION_TABLES
from screenlake.objections import SCOPE_ALL, Objection
from screenlake.tables import (
    ERASURE_LEDGER,
    INSTANCE_CATALOG,
    frame_of,
    read_parquet,
    write_parquet,
)

# Builds a batch's data-quality evidence again in the research zone's local folder.
Evidence = Callable[[Path, layout.Batch], ArtefactErasure | None]


@dataclass(frozen=True)
class ErasureRequest:
    """One erasure as the PHI zone keeps it (encrypted): whom, when, and every value by which
    the zones held them."""

    erasure_id: str
    token: str
    asked_on: date
    started_at: datetime
    finished_at: datetime | None
    traces: PatientTraces

    def encrypted(self, cipher: Fernet) -> bytes:
        """The record as written to the PHI zone."""
        traces: dict[str, list[Any]] = {
            f.name: sorted(getattr(self.traces, f.name))
            for f in fields(PatientTraces)
            if f.name != "batches"
        }
        traces["batches"] = sorted([b.day.isoformat(), b.programme] for b in self.traces.batches)
        record = {
            "erasure_id": self.erasure_id,
            "token": self.token,
            "asked_on": self.asked_on.isoformat(),
            "started_at": self.started_at.isoformat(),
            "finished_at": self.finished_at.isoformat() if self.finished_at else None,
            "traces": traces,
        }
        return cipher.encrypt(json.dumps(record, sort_keys=True).encode())

    @classmethod
    def decrypted(cls, data: bytes, cipher: Fernet) -> ErasureRequest:
        """A record back from the PHI zone; VaultError when the key is not the one it was
        written under or the record was altered."""
        try:
            fields_ = json.loads(cipher.decrypt(data))
        except InvalidToken:
            raise VaultError(
                "an erasure record does not decrypt with SCREENLAKE_VAULT_KEY: another key, or "
                "an altered record"
            ) from None
        traces = dict(fields_["traces"])
        batches = traces.pop("batches")
        return cls(
            erasure_id=fields_["erasure_id"],
            token=fields_["token"],
            asked_on=date.fromisoformat(fields_["asked_on"]),
            started_at=datetime.fromisoformat(fields_["started_at"]),
            finished_at=(
                datetime.fromisoformat(fields_["finished_at"]) if fields_["finished_at"] else None
            ),
            traces=PatientTraces(
                batches=frozenset(layout.Batch(date.fromisoformat(d), p) for d, p in batches),
                **{name: frozenset(values) for name, values in traces.items()},
            ),
        )


def erasure_requests(phi_zone: Zone, cipher: Fernet) -> list[ErasureRequest]:
    """Every erasure recorded in the PHI zone, oldest first."""
    folder = phi_zone.pull(layout.ERASURE_REQUESTS)
    paths = sorted(folder.glob("*.json.enc")) if folder.exists() else []
    requests = [ErasureRequest.decrypted(p.read_bytes(), cipher) for p in paths]
    return sorted(requests, key=lambda r: (r.started_at, r.erasure_id))


def _write(phi_zone: Zone, request: ErasureRequest, cipher: Fernet) -> None:
    relative = layout.erasure_request_path(request.erasure_id)
    write_atomic(phi_zone.path(relative), request.encrypted(cipher))
    phi_zone.push(relative)


def _traces(
    phi_zone: Zone, research_zone: Zone, key: bytes, cipher: Fernet, token: str
) -> PatientTraces:
    """The patient's traces from every vault, with their series and instance UIDs from each
    batch's catalogue."""
    phi_zone.pull(layout.VAULT_DIR)
    traces = traces_of([token], batch_vaults(phi_zone.path(), cipher), key)
    for batch in sorted(traces.batches, key=lambda b: (b.day, b.programme)):
        catalogue = research_zone.pull(layout.lake_table_path(INSTANCE_CATALOG, batch, key))
        if catalogue.exists():
            traces = traces.with_catalogue(read_parquet(INSTANCE_CATALOG, catalogue))
    return traces


def _phi_paths(batch: layout.Batch) -> list[PurePosixPath]:
    return [
        layout.raw_dir(batch),
        layout.quarantine_dir(batch),
        layout.study_index_path(batch),
        layout.source_files_path(batch),
        layout.vault_path(batch),
        *export_paths(batch),
    ]


def _research_paths(research_zone: Zone, batch: layout.Batch, key: bytes) -> list[PurePosixPath]:
    tables = [layout.lake_table_path(t, batch, key) for t in PARTITION_TABLES]
    research_zone.pull(layout.INFERENCE_DIR)
    shards = shard_dirs(research_zone.path(), batch, key)
    evidence = layout.evidence_dir(batch, key, layout.DATA_DOCS)
    return [*tables, layout.research_dicom_dir(batch, key), *shards, evidence]


def erase_patients(
    phi_zone: Zone,
    research_zone: Zone,
    key: bytes,
    cipher: Fernet,
    objections: Iterable[Objection],
    run_token: str,
    evidence: Evidence | None = None,
) -> list[ErasureRequest]:
    """Carry out every erasure `objections` ask for (scope `all`) and no erasure has finished
    yet; the requests carried out now. Each is recorded before anything is removed, and its
    ledger rows written once both zones are rewritten. `evidence`, given the research zone's
    local folder and a batch, builds the batch's data-quality evidence again once its tables
    are rewritten (`screenlake.erasure.evidence`)."""
    recorded = {r.token: r for r in erasure_requests(phi_zone, cipher)}
    carried_out = []
    for objection in objections:
        if objection.scope != SCOPE_ALL:
            continue
        request = recorded.get(objection.token)
        if request is not None and request.finished_at is not None:
            continue
        if request is None:
            request = ErasureRequest(
                erasure_id="E" + secrets.token_hex(8).upper(),
                token=objection.token,
                asked_on=objection.asked_on,
                started_at=datetime.now(UTC),
                finished_at=None,
                traces=_traces(phi_zone, research_zone, key, cipher, objection.token),
            )
            _write(phi_zone, request, cipher)
        rows = _erase_every_batch(
            phi_zone, research_zone, key, cipher, request, run_token, evidence
        )
        ledger = layout.erasure_ledger_path(request.erasure_id)
        write_parquet(frame_of(rows, ERASURE_LEDGER), ERASURE_LEDGER, research_zone.path(ledger))
        research_zone.push(ledger)
        done = replace(request, finished_at=datetime.now(UTC))
        _write(phi_zone, done, cipher)
        carried_out.append(done)
    return carried_out


def _erase_every_batch(
    phi_zone: Zone,
    research_zone: Zone,
    key: bytes,
    cipher: Fernet,
    request: ErasureRequest,
    run_token: str,
    evidence: Evidence | None,
) -> list[dict[str, object]]:
    rows: list[dict[str, object]] = []
    now = datetime.now(UTC)
    for batch in sorted(request.traces.batches, key=lambda b: (b.day, b.programme)):
        for path in _phi_paths(batch):
            phi_zone.pull(path)
        research_paths = _research_paths(research_zone, batch, key)
        for path in research_paths:
            research_zone.pull(path)
        phi = erase_from_phi_zone(phi_zone.path(), batch, request.traces, cipher)
        exports = erase_from_exports(phi_zone.path(), batch, request.traces)
        research = erase_from_research_zone(
            research_zone.path(), batch, key, request.traces, phi.ordinals
        )
        rebuilt = evidence(research_zone.path(), batch) if evidence and research else None
        if rebuilt is not None:
            research.append(rebuilt)
        # Inference shards are a cache that a finished run deletes: their earlier versions
        # (every batch's) go too, as the batch's own folder may have no current object left.
        for label, zone, paths, forgotten, changes in (
            ("phi", phi_zone, _phi_paths(batch), [], [*phi.changes, *exports]),
            ("research", research_zone, research_paths, [layout.INFERENCE_DIR], research),
        ):
            for path in paths:
                zone.push(path)
            history = _forget_history(zone, [*paths, *forgotten])
            rows.extend(
                _ledger_row(request, now, run_token, label, batch, key, c)
                for c in [*changes, *history]
            )
    phi_zone.pull(layout.DEMO_LABELS)
    labels = erase_labels(phi_zone.path(), request.traces)
    if labels is not None:
        phi_zone.push(layout.DEMO_LABELS)
        # The labels file spans every batch: its rows go under the first batch erased from.
        first = min(request.traces.batches, key=lambda b: (b.day, b.programme))
        for change in [labels, *_forget_history(phi_zone, [layout.DEMO_LABELS])]:
            rows.append(_ledger_row(request, now, run_token, "phi", first, key, change))
    return rows


def _forget_history(zone: Zone, paths: Sequence[PurePosixPath]) -> list[ArtefactErasure]:
    """The earlier versions of `paths` deleted from a zone in a versioned bucket, as one
    ledger change (none when there were none)."""
    gone = sorted(v for path in paths for v in zone.forget_history(path))
    if not gone:
        return []
    digest = hashlib.sha256("\n".join(f"{k}\x1f{v}" for k, v in gone).encode()).hexdigest()
    return [ArtefactErasure("bucket versions", len(gone), 0, digest, None)]


def _ledger_row(
    request: ErasureRequest,
    now: datetime,
    run_token: str,
    zone: str,
    batch: layout.Batch,
    key: bytes,
    change: ArtefactErasure,
) -> dict[str, object]:
    return {
        "erasure_id": request.erasure_id,
        "scope": SCOPE_ALL,
        "asked_on": request.asked_on,
        "erased_at": now,
        "run_token": run_token,
        "zone": zone,
        # The batch by its research-zone name: the real study date stays in the PHI zone.
        "batch_id": batch.research_id(key),
        "artefact": change.kind,
        "rows_before": change.rows_before,
        "rows_after": change.rows_after,
        "sha256_before": change.sha256_before,
        "sha256_after": change.sha256_after,
    }
