"""The audit trail: one append-only table of what happened to each partition, in terms a
governance committee asks about: which run, which de-identification profile, which model
version, how many rows in and out, which checks passed or failed, which exports were written and
how many rows were re-identified (never which patients).

The trail lies in the research zone, so a run is named by a keyed token of its run ID
(`layout.research_run_id`), never by the ID itself: the orchestrator shows the run ID beside
the partition's real study date.

Rows are built here from plain event descriptions; the Dagster asset feeds it the run's events.
Each run writes its own file, so nothing already recorded is ever rewritten.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import polars as pl

from screenlake.tables import AUDIT_TRAIL, frame_of

# Materialisations that are exports a person opens, and those that re-identify rows.
EXPORTS = {"coordinator_worklist", "pacs_findings_reports", "programme_report"}
REIDENTIFYING = {"coordinator_worklist": "studies_to_review", "pacs_findings_reports": "reports"}
# Metadata keys that hold an asset's output row count, in order of preference.
_ROWS_OUT = ("rows", "instances", "studies", "files_landed", "files_deidentified", "reports")
_ROWS_IN = ("files_in", "instances_in", "rows_in")


@dataclass(frozen=True)
class RunEvent:
    """One materialisation or check evaluation of a run, reduced to what the trail keeps."""

    at: datetime
    kind: str  # "materialisation" or "check"
    asset: str
    check: str | None
    passed: bool | None
    metadata: Mapping[str, Any]


def _count(metadata: Mapping[str, Any], keys: Iterable[str]) -> int | None:
    for key in keys:
        value = metadata.get(key)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    return None


def _model(metadata: Mapping[str, Any]) -> tuple[str | None, str | None]:
    model = metadata.get("model")
    if isinstance(model, str) and " " in model:
        name, version = model.rsplit(" ", 1)
        return name, version
    return None, None


def _event_id(run_token: str, batch_id: str, index: int, subject: str) -> str:
    return hashlib.sha256(f"{run_token}|{batch_id}|{index}|{subject}".encode()).hexdigest()[:24]


def trail_rows(
    events: Iterable[RunEvent], run_token: str, batch_id: str, programme: str, actor: str
) -> pl.DataFrame:
    """AUDIT_TRAIL rows for one partition's events of one run, in the order they happened.
    `run_token` names the run (a keyed token of its run ID), `actor` who asked for it."""
    ordered = sorted(events, key=lambda e: e.at)
    profile = next(
        (str(e.metadata["profile_version"]) for e in ordered if "profile_version" in e.metadata),
        None,
    )
    model_name, model_version = next(
        (m for m in (_model(e.metadata) for e in ordered) if m[0] is not None), (None, None)
    )
    rows: list[dict[str, Any]] = []

    def add(at: datetime, event: str, subject: str, **values: Any) -> None:
        rows.append(
            {
                "outcome": None,
                "rows_in": None,
                "rows_out": None,
                "detail": None,
                "event_id": _event_id(run_token, batch_id, len(rows), subject),
                "recorded_at": at,
                "run_token": run_token,
                "batch_id": batch_id,
                "programme": programme,
                "event": event,
                "subject": subject,
                "profile_version": profile,
                "model_name": model_name,
                "model_version": model_version,
                "actor": actor,
                **values,
            }
        )

    for e in ordered:
        if e.kind == "check":
            add(
                e.at,
                "check",
                f"{e.asset}:{e.check}",
                outcome="passed" if e.passed else "failed",
                detail=str(e.metadata.get("summary", "")) or None,
            )
            continue
        add(
            e.at,
            "export" if e.asset in EXPORTS else "materialisation",
            e.asset,
            rows_in=_count(e.metadata, _ROWS_IN),
            rows_out=_count(e.metadata, _ROWS_OUT),
        )
        if e.asset in REIDENTIFYING:
            reidentified = _count(e.metadata, [REIDENTIFYING[e.asset]])
            add(
                e.at,
                "reidentification",
                e.asset,
                rows_out=reidentified,
                detail="rows re-identified through the vault (counts only; the PHI zone's "
                "re-identification log holds who asked and why)",
            )
    return frame_of(rows, AUDIT_TRAIL)
