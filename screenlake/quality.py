"""Data-quality rules as pure functions over tables, so each is tested on clean and dirty frames.

Every rule returns a `RuleOutcome`: whether it held, a one-line summary with counts, and a few
failing rows (keys only, never identifying values) for a person to start from.
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


def values_unique(frame: pl.DataFrame, column: str) -> RuleOutcome:
    """No value of `column` occurs twice and none is missing."""
    duplicated = frame.group_by(column).len().filter(pl.col("len") > 1)
    missing = frame.filter(pl.col(column).is_null()).height
    passed = duplicated.height == 0 and missing == 0
    summary = (
        f"{frame.height} rows, every {column} unique"
        if passed
        else f"{duplicated.height} {column} values occur more than once, {missing} missing"
    )
    counts = {"rows": frame.height, "duplicated_values": duplicated.height, "missing": missing}
    return RuleOutcome(passed, summary, counts, _examples(duplicated))


def scores_in_unit_interval(frame: pl.DataFrame, key: str) -> RuleOutcome:
    """Every non-null score is a number in [0, 1] (NaN fails)."""
    scores = pl.col("score")
    bad = frame.filter(scores.is_not_null() & (scores.is_nan() | (scores < 0) | (scores > 1)))
    scored = frame.filter(scores.is_not_null()).height
    passed = bad.height == 0
    summary = (
        f"{scored} scores, all in [0, 1]"
        if passed
        else f"{bad.height} of {scored} scores outside [0, 1]"
    )
    return RuleOutcome(
        passed,
        summary,
        {"scored": scored, "outside": bad.height},
        _examples(bad.select(key, "score")),
    )


def every_instance_has_prediction(catalog: pl.DataFrame, predictions: pl.DataFrame) -> RuleOutcome:
    """Each catalogued instance has exactly one prediction row: a score or a recorded failure."""
    keys = "sop_instance_uid"
    missing = catalog.select(keys).join(predictions.select(keys), on=keys, how="anti")
    unknown = predictions.select(keys).join(catalog.select(keys), on=keys, how="anti")
    repeated = predictions.group_by(keys).len().filter(pl.col("len") > 1)
    scored_ok = predictions.filter(
        (pl.col("status") == "ok") & pl.col("score").is_not_null()
    ).height
    failed_with_reason = predictions.filter(
        (pl.col("status") == "failed") & pl.col("failure_reason").is_not_null()
    ).height
    unexplained = predictions.height - scored_ok - failed_with_reason
    passed = missing.height == repeated.height == unknown.height == unexplained == 0
    counts = {
        "catalogued": catalog.height,
        "scored": scored_ok,
        "failed": failed_with_reason,
        "missing": missing.height,
        "not_catalogued": unknown.height,
        "duplicated": repeated.height,
        "status_without_score_or_reason": unexplained,
    }
    summary = (
        f"{catalog.height} catalogued = {scored_ok} scored + {failed_with_reason} failed"
        if passed
        else f"{catalog.height} catalogued: {missing.height} without a prediction, "
        f"{repeated.height} predicted twice, {unknown.height} predictions for unknown instances, "
        f"{unexplained} with neither score nor failure reason"
    )
    return RuleOutcome(passed, summary, counts, _examples(pl.concat([missing, unknown])))
