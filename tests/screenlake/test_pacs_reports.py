"""Findings reports for the PACS, built from synthetic findings and a vault, without a server."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, date, datetime
from pathlib import Path

import polars as pl
import pydicom
import pytest

from screenlake.errors import VaultError
from screenlake.findings_report import findings_report
from screenlake.pacs.store import WRITTEN_TO_OUTBOX, StoreOutcome
from screenlake.pacs_reports import (
    Patient,
    build_reports,
    evidence_by_study,
    patients_by_study,
    pending_reports,
    report_uids,
    send_reports,
    sent_table,
    with_evidence,
)
from tests.dicom_factory import ct_slice, write

KEY = b"k" * 32
ORIGINAL = "1.2.826.0.1.3680043.8.498.2001"
WHEN = datetime(2024, 3, 13, 8, 30, tzinfo=UTC)


def _findings(flags: Sequence[bool] = (True, False)) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "study_instance_uid": [f"2.25.{i + 1}" for i in range(len(flags))],
            "programme": ["lung_ldct"] * len(flags),
            "score": [0.9 if f else 0.1 for f in flags],
            "flag": list(flags),
            "threshold": [0.5] * len(flags),
            "priority_rank": [i + 1 for i in range(len(flags))],
            "model_name": ["lung_ldct_reference"] * len(flags),
            "model_version": ["1.2.0"] * len(flags),
            "weights_sha256": ["ab" * 32] * len(flags),
            "validated_at": [WHEN] * len(flags),
        }
    )


def _vault(count: int = 2) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "study_instance_uid": [f"2.25.{i + 1}" for i in range(count)],
            "patient_id": [f"P{i}" for i in range(count)],
            "accession_number": [f"A{i}" for i in range(count)],
            "original_study_instance_uid": [f"{ORIGINAL}{i}" for i in range(count)],
            "original_study_date": [date(2024, 3, 12)] * count,
        }
    )


def test_only_flagged_studies_are_reported_into_their_original_study() -> None:
    patients = {f"{ORIGINAL}0": Patient("Jansen^Pieter", "19580312", "F")}
    pending = pending_reports(_findings(), _vault(), patients)
    assert [p.finding.original_study_instance_uid for p in pending] == [f"{ORIGINAL}0"]
    (report,) = build_reports(pending, KEY)
    assert report.StudyInstanceUID == f"{ORIGINAL}0"
    assert (report.PatientID, str(report.PatientName), report.PatientSex) == (
        "P0",
        "Jansen^Pieter",
        "F",
    )
    series, sop = report_uids(KEY, f"{ORIGINAL}0", "1.2.0")
    assert (report.SeriesInstanceUID, report.SOPInstanceUID) == (series, sop)
    assert build_reports(pending, KEY)[0] == report  # a re-run builds the same report


def test_report_uids_change_with_the_model_version_and_the_key() -> None:
    assert report_uids(KEY, ORIGINAL, "1.2.0") != report_uids(KEY, ORIGINAL, "1.3.0")
    assert report_uids(KEY, ORIGINAL, "1.2.0") != report_uids(b"x" * 32, ORIGINAL, "1.2.0")
    series, sop = report_uids(KEY, ORIGINAL, "1.2.0")
    assert series != sop


def test_a_flagged_study_missing_from_the_vault_stops_the_reports() -> None:
    with pytest.raises(VaultError, match="no vault entry"):
        pending_reports(_findings((True, True)), _vault(1), {})


def test_patients_come_from_the_landed_headers_and_bad_values_are_dropped(tmp_path: Path) -> None:
    good = ct_slice(study_uid=f"{ORIGINAL}0")
    good.PatientBirthDate, good.PatientSex = "19580312", "F"
    bad = ct_slice(study_uid=f"{ORIGINAL}1")
    bad.PatientBirthDate, bad.PatientSex = "1958", "X"
    write(good, tmp_path / "0.dcm")
    write(bad, tmp_path / "1.dcm")
    manifest = pl.DataFrame(
        {
            "study_instance_uid": [f"{ORIGINAL}0", f"{ORIGINAL}1", None],
            "landed_path": ["0.dcm", "1.dcm", "2.dcm"],
            "problem": [None, None, "unreadable"],
        }
    )
    patients = patients_by_study(manifest, tmp_path)
    assert patients == {
        f"{ORIGINAL}0": Patient("Jansen^Pieter", "19580312", "F"),
        f"{ORIGINAL}1": Patient("Jansen^Pieter", None, None),
    }


def test_reports_cite_the_landed_images_of_their_own_study_only(tmp_path: Path) -> None:
    series = pydicom.uid.generate_uid()
    ours = [
        ct_slice(study_uid=f"{ORIGINAL}0", series_uid=series, patient_id="P0", z=z) for z in (0, 1)
    ]
    other = ct_slice(study_uid=f"{ORIGINAL}1", patient_id="P1")
    for index, ds in enumerate([*ours, other]):
        write(ds, tmp_path / f"{index}.dcm")
    (tmp_path / "3.dcm").write_bytes(b"not dicom")
    manifest = pl.DataFrame(
        {
            "study_instance_uid": [f"{ORIGINAL}0", f"{ORIGINAL}0", f"{ORIGINAL}1", f"{ORIGINAL}0"],
            "landed_path": ["0.dcm", "1.dcm", "2.dcm", "3.dcm"],
            "problem": [None, None, None, "not a DICOM file"],
        }
    )

    evidence = evidence_by_study(manifest, tmp_path, [f"{ORIGINAL}0"])
    pending = with_evidence(pending_reports(_findings(), _vault(), {}), evidence)
    report = build_reports(pending, KEY)[0]

    assert list(evidence) == [f"{ORIGINAL}0"]
    cited = {
        item.ReferencedSOPInstanceUID
        for study in report.CurrentRequestedProcedureEvidenceSequence
        for series in study.ReferencedSeriesSequence
        for item in series.ReferencedSOPSequence
    }
    assert cited == {ds.SOPInstanceUID for ds in ours}


def test_a_runs_reports_are_what_findings_report_builds_for_each(tmp_path: Path) -> None:
    flags = (True, False, True, True)
    uids = [f"{ORIGINAL}{i}" for i in range(len(flags))]
    for index, study in enumerate(uids):
        write(ct_slice(study_uid=study, patient_id=f"P{index}"), tmp_path / f"{index}.dcm")
    manifest = pl.DataFrame(
        {"study_instance_uid": uids, "landed_path": [f"{i}.dcm" for i in range(len(uids))]}
    ).with_columns(problem=pl.lit(None, pl.String))
    patients = {uids[3]: Patient("Müller^Jörg", None, "M")}
    pending = pending_reports(_findings(flags), _vault(len(flags)), patients)
    pending = with_evidence(pending, evidence_by_study(manifest, tmp_path, uids[:3]))

    reports = build_reports(pending, KEY)

    assert len(reports) == 3 and "CurrentRequestedProcedureEvidenceSequence" not in reports[2]
    for item, report in zip(pending, reports, strict=True):
        series, sop = report_uids(KEY, item.finding.original_study_instance_uid, "1.2.0")
        expected = findings_report(
            item.finding,
            series_instance_uid=series,
            sop_instance_uid=sop,
            content_datetime=item.validated_at,
        )
        assert report == expected and report.file_meta == expected.file_meta


def test_a_source_that_cannot_store_leaves_the_reports_in_the_outbox(tmp_path: Path) -> None:
    reports = build_reports(pending_reports(_findings(), _vault(), {}), KEY)

    def cannot(datasets: Sequence[pydicom.Dataset]) -> list[StoreOutcome]:
        raise NotImplementedError

    outcomes = send_reports(cannot, reports, tmp_path / "outbox")
    assert [(o.accepted, o.reason) for o in outcomes] == [(False, WRITTEN_TO_OUTBOX)]
    stored = pydicom.dcmread(tmp_path / "outbox" / f"{reports[0].SOPInstanceUID}.dcm")
    assert stored.SOPInstanceUID == reports[0].SOPInstanceUID

    table = sent_table(reports, outcomes, WHEN)
    assert table.columns == [
        "sop_instance_uid",
        "original_study_instance_uid",
        "accepted",
        "reason",
        "sent_at",
    ]
    assert table.row(0) == (
        reports[0].SOPInstanceUID,
        f"{ORIGINAL}0",
        False,
        WRITTEN_TO_OUTBOX,
        "2024-03-13T08:30:00+00:00",
    )
    with pytest.raises(ValueError, match="exactly once"):
        sent_table(reports, [], WHEN)
