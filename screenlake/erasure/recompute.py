"""Which aggregates to compute again after an erasure, and in which partitions.

Erasure removes a patient's rows and leaves every other row as it was. What was computed over
several patients' rows counted the patient, and is computed again without them:

- in each batch erased from: its drift metrics and its performance audit;
- in the later nights of the same programme whose drift reference window reached back to that
  batch: their drift metrics;
- where the erasure removed labels (the ground truth or a clinician's review decision): the
  performance audit of every later night whose horizon reaches back to that batch;
- in every run: the programme report, which shows every night.

Priority ranks are not recomputed: a rank is a value of another patient's row, which erasure
leaves as it was; the ranks left keep their order, with a gap.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from datetime import timedelta

import polars as pl

from screenlake import layout

DRIFT = "drift_metrics"
PERFORMANCE = "performance_audit"
REPORT = "programme_report"
# Ledger artefacts whose removal changes what the performance audit counted.
LABEL_ARTEFACTS = frozenset({"labels", "review decisions"})


@dataclass(frozen=True)
class Recomputation:
    """One partition's assets to materialise again."""

    batch: layout.Batch
    assets: tuple[str, ...]


def erased_batches(
    ledger: pl.DataFrame, run_token: str, known: Iterable[layout.Batch], key: bytes
) -> dict[layout.Batch, frozenset[str]]:
    """The batches (among `known`) an erasure run erased from, by its ledger rows (`run_token`,
    the run's research-zone name), each with the artefacts it rewrote there."""
    by_id = {b.research_id(key): b for b in known}
    rows = ledger.filter(pl.col("run_token") == run_token)
    erased: dict[layout.Batch, set[str]] = {}
    for batch_id, artefact in zip(rows["batch_id"], rows["artefact"], strict=True):
        if batch_id in by_id:
            erased.setdefault(by_id[batch_id], set()).add(artefact)
    return {batch: frozenset(artefacts) for batch, artefacts in erased.items()}


def recomputations(
    erased: Mapping[layout.Batch, Collection[str]],
    known: Iterable[layout.Batch],
    reference_days: int,
    horizon_days: int,
) -> list[Recomputation]:
    """The runs to launch after an erasure, in day order, so that a queue that runs them one
    after the other writes the programme report last from every recomputed night."""
    labels_erased = any(LABEL_ARTEFACTS & set(a) for a in erased.values())
    wanted: dict[layout.Batch, set[str]] = {}
    for batch in erased:
        wanted.setdefault(batch, set()).update({DRIFT, PERFORMANCE, REPORT})
    for later in known:
        for batch in erased:
            if later.programme != batch.programme or later.day <= batch.day:
                continue
            gap = later.day - batch.day
            if gap <= timedelta(days=reference_days):
                wanted.setdefault(later, set()).update({DRIFT, REPORT})
            if labels_erased and gap <= timedelta(days=horizon_days):
                wanted.setdefault(later, set()).update({PERFORMANCE, REPORT})
    return [
        Recomputation(batch, tuple(sorted(assets)))
        for batch, assets in sorted(
            wanted.items(), key=lambda item: (item[0].day, item[0].programme)
        )
    ]
