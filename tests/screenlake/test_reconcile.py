"""The chain reconciled step by step, on clean and dirty tables."""

from __future__ import annotations

import polars as pl

from screenlake.reconcile import deidentified_catalogued, outcome_of, worklist_step

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


AUDIT = _audit(["deidentified", "deidentified", "quarantined"])
CATALOG = _catalog([f"{BATCH}/1.dcm", f"{BATCH}/2.dcm"])


def test_every_deidentified_file_catalogued_holds() -> None:
    outcome = outcome_of([deidentified_catalogued(AUDIT, CATALOG)])
    assert outcome.passed
    assert outcome.summary == "de-identified = catalogued: 2"


def test_a_file_lost_between_deidentification_and_the_catalogue_is_named() -> None:
    catalog = _catalog([f"{BATCH}/1.dcm"])
    outcome = outcome_of([deidentified_catalogued(AUDIT, catalog)])
    assert not outcome.passed
    # By file name only: the batch's token would sit beside the real date in the check's metadata.
    assert (
        outcome.summary == "de-identified = catalogued: expected 2, found 1; 1 missing (e.g. 2.dcm)"
    )
    assert outcome.examples == [
        {"step": "de-identified = catalogued", "missing": ["2.dcm"], "unexpected": []}
    ]


def test_a_catalogue_row_for_a_file_not_written_is_found() -> None:
    catalog = _catalog([f"{BATCH}/1.dcm", f"{BATCH}/2.dcm", f"{BATCH}/7.dcm"])
    step = deidentified_catalogued(AUDIT, catalog)
    assert not step.holds
    assert step.extra == ["7.dcm"]


def test_the_worklist_must_list_exactly_the_flagged_findings() -> None:
    findings = pl.DataFrame({"flag": [True, False, None, True]})
    assert worklist_step(findings, 2, 2).holds
    assert not worklist_step(findings, 1, 1).holds
    assert not worklist_step(findings, 2, 1).holds
