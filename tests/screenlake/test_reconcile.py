"""The chain reconciled step by step, on clean and dirty tables."""

from __future__ import annotations

import polars as pl

from screenlake.reconcile import (
    deidentified_catalogued,
    listed_landed,
    outcome_of,
    worklist_step,
)

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
    # By landed ordinal: the path holds the batch's token, which would sit beside the real date
    # in the check's metadata, and the name a pseudonymous UID, which no erasure reaches there.
    assert outcome.summary == (
        "de-identified = catalogued: expected 2, found 1; 1 missing (e.g. landed file #2)"
    )
    assert outcome.examples == [
        {"step": "de-identified = catalogued", "missing": ["landed file #2"], "unexpected": []}
    ]


def test_a_catalogue_row_for_a_file_not_written_is_found() -> None:
    catalog = _catalog([f"{BATCH}/1.dcm", f"{BATCH}/2.dcm", f"{BATCH}/7.dcm"])
    step = deidentified_catalogued(AUDIT, catalog)
    assert not step.holds
    assert step.extra == ["catalogue row #3"]


def test_the_worklist_must_list_exactly_the_flagged_findings() -> None:
    findings = pl.DataFrame({"flag": [True, False, None, True]})
    assert worklist_step(findings, 2, 2).holds
    assert not worklist_step(findings, 1, 1).holds
    assert not worklist_step(findings, 2, 1).holds


def _listed(refs: list[str]) -> pl.DataFrame:
    return pl.DataFrame({"ref": refs})


def _landed(refs: list[str]) -> pl.DataFrame:
    return pl.DataFrame({"source_path": refs, "ordinal": list(range(1, len(refs) + 1))})


# Drop paths name folders after patients: a check may only count and number them.
REFS = ["20240311/DOE_JOHN_123/1/1_CR/IM1.dcm", "20240311/ROE_JANE_456/2/1_DX/IM1.dcm"]


def test_listed_equals_landed_plus_excluded_by_objection() -> None:
    outcome = outcome_of([listed_landed(_listed(REFS), _landed(REFS), excluded=3)])
    assert outcome.passed
    assert outcome.summary == "listed = landed + excluded by objection: 5"


def test_a_listed_file_that_did_not_land_is_numbered_never_named() -> None:
    outcome = outcome_of([listed_landed(_listed(REFS), _landed(REFS[:1]), excluded=3)])
    assert not outcome.passed
    assert outcome.summary == (
        "listed = landed + excluded by objection: expected 5, found 4; "
        "1 missing (e.g. listed file #2)"
    )
    assert "ROE" not in str(outcome.examples) and "ROE" not in outcome.summary


def test_a_landed_file_nobody_listed_is_counted_not_named() -> None:
    step = listed_landed(_listed(REFS[:1]), _landed(REFS), excluded=0)
    assert not step.holds
    assert step.extra == ["1 landed files not listed"]
