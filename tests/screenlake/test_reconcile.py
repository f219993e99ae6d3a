"""The chain reconciled step by step, on clean and dirty tables."""

from __future__ import annotations

import polars as pl

from screenlake.reconcile import chain_steps, outcome_of, worklist_step

BATCH = "dicom/programme=cxr_tb/batch=B0123456789ABCDE"


def _audit(outcomes: list[str]) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "ordinal": list(range(1, len(outcomes) + 1)),
            "outcome": outcomes,
            "research_path": [
                f"{BATCH}/{i}.dcm" if o == "deidentified" else None
                for i, o in enumerate(outcomes, start=1)
            ],
        }
    )


def _catalog(paths: list[str]) -> pl.DataFrame:
    return pl.DataFrame(
        {"research_path": paths, "sop_instance_uid": [f"2.25.{p[-5]}" for p in paths]}
    )


def _predictions(uids: list[str], status: str = "ok") -> pl.DataFrame:
    return pl.DataFrame({"sop_instance_uid": uids, "status": [status] * len(uids)})


AUDIT = _audit(["deidentified", "deidentified", "quarantined"])
CATALOG = _catalog([f"{BATCH}/1.dcm", f"{BATCH}/2.dcm"])


def test_a_clean_chain_holds_at_every_step() -> None:
    outcome = outcome_of(chain_steps(3, AUDIT, CATALOG, _predictions(["2.25.1", "2.25.2"])))
    assert outcome.passed
    assert outcome.summary == (
        "landed = de-identified + quarantined: 3; de-identified = catalogued: 2; "
        "catalogued = predicted + failed: 2"
    )


def test_a_file_lost_between_deidentification_and_the_catalogue_is_named() -> None:
    catalog = _catalog([f"{BATCH}/1.dcm"])
    outcome = outcome_of(chain_steps(3, AUDIT, catalog, _predictions(["2.25.1"])))
    assert not outcome.passed
    # By file name only: the batch's token would sit beside the real date in the check's metadata.
    assert (
        outcome.summary == "de-identified = catalogued: expected 2, found 1; 1 missing (e.g. 2.dcm)"
    )
    assert outcome.examples == [
        {"step": "de-identified = catalogued", "missing": ["2.dcm"], "unexpected": []}
    ]


def test_a_landed_file_without_an_outcome_and_an_unknown_prediction_are_found() -> None:
    steps = chain_steps(4, AUDIT, CATALOG, _predictions(["2.25.1", "2.25.2", "2.25.9"]))
    failed = [s.name for s in steps if not s.holds]
    assert failed == ["landed = de-identified + quarantined", "catalogued = predicted + failed"]
    assert steps[2].extra == ["2.25.9"]


def test_a_prediction_with_an_unknown_status_does_not_count() -> None:
    predictions = pl.concat([_predictions(["2.25.1"]), _predictions(["2.25.2"], "skipped")])
    step = chain_steps(3, AUDIT, CATALOG, predictions)[2]
    assert not step.holds and step.missing == ["2.25.2"]


def test_the_worklist_must_list_exactly_the_flagged_findings() -> None:
    findings = pl.DataFrame({"flag": [True, False, None, True]})
    assert worklist_step(findings, 2, 2).holds
    assert not worklist_step(findings, 1, 1).holds
    assert not worklist_step(findings, 2, 1).holds
