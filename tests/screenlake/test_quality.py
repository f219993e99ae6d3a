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
