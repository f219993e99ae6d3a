"""The outcome of a data-quality rule, and the rule that every landed file has one outcome.

The other rules live in one place each: the tables' rules in the Great Expectations suites
(`screenlake.quality_suites`), the chain's counts between tables in `screenlake.reconcile`, and
the residual-PHI scan in `screenlake.verify`. Every rule returns a `RuleOutcome`: whether it
held, a one-line summary with counts, and a few failing rows (keys only, never identifying
values) for a person to start from.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import polars as pl

MAX_EXAMPLES = 5


@dataclass(frozen=True)
class RuleOutcome:
    """The result of one data-quality rule on one partition."""

    passed: bool
    summary: str
    counts: dict[str, int] = field(default_factory=dict)
    examples: list[dict[str, object]] = field(default_factory=list)


def _examples(frame: pl.DataFrame) -> list[dict[str, object]]:
    return [{k: str(v) for k, v in row.items()} for row in frame.head(MAX_EXAMPLES).to_dicts()]


def every_landed_file_accounted_for(landed: int, audit: pl.DataFrame) -> RuleOutcome:
    """Landed = de-identified + quarantined, and each landed ordinal has exactly one outcome."""
    deidentified = audit.filter(pl.col("outcome") == "deidentified").height
    quarantined = audit.filter(pl.col("outcome") == "quarantined").height
    repeated = audit.group_by("ordinal").len().filter(pl.col("len") > 1)
    counts = {
        "landed": landed,
        "deidentified": deidentified,
        "quarantined": quarantined,
        "ordinals_with_two_outcomes": repeated.height,
    }
    passed = landed == deidentified + quarantined and repeated.height == 0
    summary = (
        f"{landed} landed = {deidentified} de-identified + {quarantined} quarantined"
        if passed
        else f"{landed} landed but {deidentified} de-identified + {quarantined} quarantined "
        f"({landed - deidentified - quarantined} unaccounted, {repeated.height} counted twice)"
    )
    return RuleOutcome(passed, summary, counts, _examples(repeated.select("ordinal")))
