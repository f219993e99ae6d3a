"""What follows an erasure: which rewrites of a judged lake file were erasures alone (so that
publication's guards still hold), and which partitions' aggregates are computed again."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import polars as pl

from screenlake import layout
from screenlake.erasure.ledger import erased_only, table_rewrites
from screenlake.erasure.recompute import (
    DRIFT,
    PERFORMANCE,
    REPORT,
    Recomputation,
    erased_batches,
    recomputations,
)
from screenlake.tables import ERASURE_LEDGER, frame_of

KEY = b"k" * 32
NIGHT = layout.Batch(date(2024, 3, 11), "cxr_tb")


def _ledger(
    *rows: tuple[str, str, str, str | None], run: str = "Rrun", batch: str = ""
) -> pl.DataFrame:
    return frame_of(
        [
            {
                "erasure_id": "E1",
                "scope": "all",
                "asked_on": date(2024, 5, 2),
                "erased_at": datetime(2024, 5, 3, tzinfo=UTC),
                "run_token": run,
                "zone": zone,
                "batch_id": batch or NIGHT.research_id(KEY),
                "artefact": artefact,
                "rows_before": 3,
                "rows_after": 2,
                "sha256_before": before,
                "sha256_after": after,
            }
            for zone, artefact, before, after in rows
        ],
        ERASURE_LEDGER,
    )


def test_a_file_rewritten_by_erasures_alone_is_still_the_file_judged() -> None:
    ledger = _ledger(
        ("research", "table study_findings", "a", "b"),
        ("research", "table study_findings", "b", "c"),
        ("research", "table instance_catalog", "x", "y"),
        ("phi", "table study_findings", "c", "d"),  # another zone's file of that name
    )
    rewrites = table_rewrites(ledger, NIGHT.research_id(KEY), "study_findings")

    assert erased_only("a", "a", rewrites)
    assert erased_only("a", "c", rewrites)  # two erasures, one after the other
    assert erased_only("b", "c", rewrites)
    assert not erased_only("a", "d", rewrites)  # changed otherwise after the erasures
    assert not erased_only("c", "a", rewrites)  # erasure does not run backwards
    assert not erased_only("x", "y", rewrites)  # another table's rewrite
    assert table_rewrites(ledger, "Bother", "study_findings") == {}


def test_a_cycle_in_the_ledger_proves_nothing() -> None:
    assert not erased_only("a", "z", {"a": "b", "b": "a"})


def test_the_erased_batch_is_recomputed_and_later_nights_within_their_windows() -> None:
    later = [layout.Batch(NIGHT.day + timedelta(days=n), "cxr_tb") for n in (1, 5, 30)]
    other_programme = layout.Batch(date(2024, 3, 12), "lung_ct")
    known = [NIGHT, *later, other_programme]
    erased = erased_batches(_ledger(("research", "vault", "a", "b")), "Rrun", known, KEY)
    assert erased == {NIGHT: frozenset({"vault"})}
    assert erased_batches(_ledger(("research", "vault", "a", "b")), "Rother", known, KEY) == {}

    plan = recomputations(erased, known, reference_days=7, horizon_days=365)

    assert plan == [
        Recomputation(NIGHT, (DRIFT, PERFORMANCE, REPORT)),
        Recomputation(later[0], (DRIFT, REPORT)),
        Recomputation(later[1], (DRIFT, REPORT)),
    ]


def test_erased_labels_reach_every_later_audit_within_its_horizon() -> None:
    later = [layout.Batch(NIGHT.day + timedelta(days=n), "cxr_tb") for n in (1, 30, 400)]
    erased = {NIGHT: frozenset({"vault", "review decisions"})}

    plan = recomputations(erased, [NIGHT, *later], reference_days=7, horizon_days=365)

    assert plan == [
        Recomputation(NIGHT, (DRIFT, PERFORMANCE, REPORT)),
        Recomputation(later[0], (DRIFT, PERFORMANCE, REPORT)),
        Recomputation(later[1], (PERFORMANCE, REPORT)),  # past the drift window
    ]  # and not a night past the horizon
