from __future__ import annotations

import polars as pl

from screenlake import quality


def _audit(outcomes: list[tuple[int, str]]) -> pl.DataFrame:
    return pl.DataFrame({"ordinal": [o for o, _ in outcomes], "outcome": [x for _, x in outcomes]})


def test_accounted_for_holds_when_every_landed_file_has_one_outcome() -> None:
    outcome = quality.every_landed_file_accounted_for(
        3, _audit([(1, "deidentified"), (2, "quarantined"), (3, "deidentified")])
    )
    assert outcome.passed
    assert outcome.counts == {
        "landed": 3,
        "deidentified": 2,
        "quarantined": 1,
        "ordinals_with_two_outcomes": 0,
    }


def test_accounted_for_fails_on_a_lost_file_and_on_a_file_counted_twice() -> None:
    lost = quality.every_landed_file_accounted_for(
        3, _audit([(1, "deidentified"), (2, "quarantined")])
    )
    assert not lost.passed and "1 unaccounted" in lost.summary
    twice = quality.every_landed_file_accounted_for(
        2, _audit([(1, "deidentified"), (1, "quarantined")])
    )
    assert not twice.passed
    assert twice.counts["ordinals_with_two_outcomes"] == 1
    assert twice.examples == [{"ordinal": "1"}]


def test_values_unique_reports_duplicates_and_missing() -> None:
    assert quality.values_unique(pl.DataFrame({"uid": ["a", "b"]}), "uid").passed
    dirty = quality.values_unique(pl.DataFrame({"uid": ["a", "a", None]}), "uid")
    assert not dirty.passed
    assert dirty.counts == {"rows": 3, "duplicated_values": 1, "missing": 1}
    assert dirty.examples[0]["uid"] == "a"


def test_scores_in_unit_interval_accepts_bounds_and_nulls_and_refuses_nan_and_outliers() -> None:
    clean = pl.DataFrame({"k": ["a", "b", "c"], "score": [0.0, 1.0, None]})
    assert quality.scores_in_unit_interval(clean, "k").passed
    dirty = pl.DataFrame({"k": ["a", "b", "c", "d"], "score": [1.5, -0.1, float("nan"), 0.5]})
    outcome = quality.scores_in_unit_interval(dirty, "k")
    assert not outcome.passed
    assert outcome.counts == {"scored": 4, "outside": 3}
    assert {e["k"] for e in outcome.examples} == {"a", "b", "c"}


def _predictions(rows: list[tuple[str, str, float | None, str | None]]) -> pl.DataFrame:
    return pl.DataFrame(
        rows,
        schema={
            "sop_instance_uid": pl.String,
            "status": pl.String,
            "score": pl.Float64,
            "failure_reason": pl.String,
        },
        orient="row",
    )


def test_every_instance_has_prediction_counts_scores_and_failures() -> None:
    catalog = pl.DataFrame({"sop_instance_uid": ["1", "2", "3"]})
    predictions = _predictions(
        [
            ("1", "ok", 0.2, None),
            ("2", "ok", 0.9, None),
            ("3", "failed", None, "pixels do not decode"),
        ]
    )
    outcome = quality.every_instance_has_prediction(catalog, predictions)
    assert outcome.passed
    assert outcome.counts["scored"] == 2 and outcome.counts["failed"] == 1


def test_every_instance_has_prediction_fails_on_missing_duplicate_unknown_or_unexplained() -> None:
    catalog = pl.DataFrame({"sop_instance_uid": ["1", "2", "3"]})
    predictions = _predictions(
        [
            ("1", "ok", 0.2, None),
            ("1", "ok", 0.2, None),
            ("9", "ok", 0.1, None),
            ("3", "failed", None, None),
        ]
    )
    outcome = quality.every_instance_has_prediction(catalog, predictions)
    assert not outcome.passed
    assert outcome.counts["missing"] == 1
    assert outcome.counts["duplicated"] == 1
    assert outcome.counts["not_catalogued"] == 1
    assert outcome.counts["status_without_score_or_reason"] == 1
