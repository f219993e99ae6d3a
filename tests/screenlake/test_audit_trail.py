"""Audit-trail rows from a run's events: versions, counts, checks, exports, re-identifications."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from screenlake.audit_trail import RunEvent, trail_rows

T0 = datetime(2026, 11, 29, 2, 0, tzinfo=UTC)


def _events() -> list[RunEvent]:
    def at(minutes: int) -> datetime:
        return T0 + timedelta(minutes=minutes)

    return [
        RunEvent(at(2), "materialisation", "deidentified_instances", None, None,
                 {"files_in": 12, "files_deidentified": 11, "profile_version": "2024b-2"}),
        RunEvent(at(1), "materialisation", "raw_instances", None, None, {"files_landed": 12}),
        RunEvent(at(3), "check", "deidentified_instances", "no_identifiers_in_research_zone",
                 True, {"summary": "11 files scanned, 0 identifiers found"}),
        RunEvent(at(4), "materialisation", "instance_predictions", None, None,
                 {"instances": 11, "model": "lung_ldct_reference 2.0.0"}),
        RunEvent(at(5), "check", "validated_findings", "chain_reconciled", False, {}),
        RunEvent(at(6), "materialisation", "coordinator_worklist", None, None,
                 {"studies_to_review": 2}),
    ]  # fmt: skip


def test_rows_follow_the_run_in_time_with_versions_and_counts() -> None:
    rows = trail_rows(_events(), "R1", "B123", "lung_ldct", "dagster run R1")
    assert set(rows["run_token"]) == {"R1"} and "run_id" not in rows.columns
    assert rows["subject"].to_list() == [
        "raw_instances",
        "deidentified_instances",
        "deidentified_instances:no_identifiers_in_research_zone",
        "instance_predictions",
        "validated_findings:chain_reconciled",
        "coordinator_worklist",
        "coordinator_worklist",
    ]
    assert rows["event"].to_list() == [
        "materialisation",
        "materialisation",
        "check",
        "materialisation",
        "check",
        "export",
        "reidentification",
    ]
    assert set(rows["profile_version"]) == {"2024b-2"}
    assert set(rows["model_name"]) == {"lung_ldct_reference"}
    assert set(rows["model_version"]) == {"2.0.0"}
    deid = rows.row(1, named=True)
    assert (deid["rows_in"], deid["rows_out"]) == (12, 11)
    assert rows["outcome"].to_list()[2:5] == ["passed", None, "failed"]
    assert rows.row(6, named=True)["rows_out"] == 2


def test_event_ids_are_unique_and_stable() -> None:
    first = trail_rows(_events(), "run-1", "B123", "lung_ldct", "x")
    again = trail_rows(_events(), "run-1", "B123", "lung_ldct", "x")
    assert first["event_id"].n_unique() == first.height
    assert first["event_id"].to_list() == again["event_id"].to_list()
    other_run = trail_rows(_events(), "run-2", "B123", "lung_ldct", "x")
    assert not set(first["event_id"]) & set(other_run["event_id"])
