"""Findings back to the PACS: one Structured Report per flagged study, filed into the original.

Everything here runs in the PHI zone: flagged validated findings are re-identified through the
vault, completed with the patient's name, birth date and sex from a landed original's header
and with the study's screened images as evidence (`evidence_by_study`), built into SRs (`findings_report`) and sent through the study source. A source that cannot
store (an export drop) leaves them in the PHI zone's outbox instead. Report UIDs are keyed on
the original study and the model version, so a re-run replaces a report rather than adding one.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path

import polars as pl
import pydicom
from pydicom.errors import InvalidDicomError

from screenlake.findings_report import FindingsReportBuilder, StudyFinding
from screenlake.keys import keyed_uid
from screenlake.pacs.store import WRITTEN_TO_OUTBOX, StoreOutcome
from screenlake.reidentify import reidentify_flagged

SENT_SCHEMA = {
    "sop_instance_uid": pl.String,
    "original_study_instance_uid": pl.String,
    "accepted": pl.Boolean,
    "reason": pl.String,
    "sent_at": pl.String,
}
_PATIENT_TAGS = ["PatientName", "PatientBirthDate", "PatientSex", "StudyInstanceUID"]
_SEXES = frozenset({"M", "F", "O"})


@dataclass(frozen=True)
class Patient:
    """What the vault does not hold about a patient, from a landed original's header."""

    name: str | None
    birth_date: str | None
    sex: str | None


@dataclass(frozen=True)
class PendingReport:
    """A re-identified flagged study and when its finding was validated (the report's time)."""

    finding: StudyFinding
    validated_at: datetime


def report_uids(key: bytes, original_study_uid: str, model_version: str) -> tuple[str, str]:
    """Series and SOP instance UIDs of a study's report: the same for every run of one model
    version, so that the PACS keeps one report per study and version."""
    return (
        keyed_uid(key, f"{original_study_uid}|sr-series|{model_version}"),
        keyed_uid(key, f"{original_study_uid}|sr|{model_version}"),
    )


def patients_by_study(manifest: pl.DataFrame, raw_dir: Path) -> dict[str, Patient]:
    """Name, birth date and sex per original study UID, from the first readable landed file of
    each study in the raw manifest; values a report cannot carry are left out (None)."""
    patients: dict[str, Patient] = {}
    rows = manifest.filter(pl.col("problem").is_null() & pl.col("study_instance_uid").is_not_null())
    for study_uid, landed in rows.select("study_instance_uid", "landed_path").iter_rows():
        if study_uid in patients:
            continue
        try:
            ds = pydicom.dcmread(
                raw_dir / landed, stop_before_pixels=True, specific_tags=_PATIENT_TAGS
            )
        except (InvalidDicomError, OSError):
            continue
        patients[study_uid] = _patient(ds)
    return patients


def evidence_by_study(
    manifest: pl.DataFrame, raw_dir: Path, studies: Collection[str]
) -> dict[str, list[pydicom.Dataset]]:
    """Headers of the landed original images of each of `studies` (original UIDs), in manifest
    order: what a report cites as the images its finding rests on. Files that are not
    readable images (quarantined at ingest, no pixels) are not cited."""
    wanted = set(studies)
    evidence: dict[str, list[pydicom.Dataset]] = {uid: [] for uid in wanted}
    rows = manifest.filter(
        pl.col("problem").is_null() & pl.col("study_instance_uid").is_in(list(wanted))
    )
    for study_uid, landed in rows.select("study_instance_uid", "landed_path").iter_rows():
        try:
            # The whole header: highdicom reads the image's own modules to cite it.
            ds = pydicom.dcmread(raw_dir / landed, stop_before_pixels=True)
        except (InvalidDicomError, OSError):
            continue
        if "Rows" in ds and "SOPInstanceUID" in ds and "SOPClassUID" in ds:
            evidence[study_uid].append(ds)
    return evidence


def with_evidence(
    pending: Sequence[PendingReport], evidence: Mapping[str, Sequence[pydicom.Dataset]]
) -> list[PendingReport]:
    """`pending` with each finding's evidence set from `evidence` (by original study UID)."""
    return [
        replace(
            item,
            finding=replace(
                item.finding,
                evidence=tuple(evidence.get(item.finding.original_study_instance_uid, ())),
            ),
        )
        for item in pending
    ]


def _patient(ds: pydicom.Dataset) -> Patient:
    name = str(ds.get("PatientName") or "").strip() or None
    if name is not None and any(len(group) > 64 for group in name.split("=")):
        name = None
    birth = str(ds.get("PatientBirthDate") or "").strip()
    sex = str(ds.get("PatientSex") or "").strip().upper()
    valid_birth = len(birth) == 8 and birth.isdigit() and _is_date(birth)
    return Patient(name, birth if valid_birth else None, sex if sex in _SEXES else None)


def _is_date(value: str) -> bool:
    try:
        datetime.strptime(value, "%Y%m%d")
    except ValueError:
        return False
    return True


def pending_reports(
    findings: pl.DataFrame, vault: pl.DataFrame, patients: Mapping[str, Patient]
) -> list[PendingReport]:
    """Flagged validated findings re-identified through the vault; raises VaultError when a
    flagged study has no vault entry."""
    pending = []
    for row in reidentify_flagged(findings, vault).iter_rows(named=True):
        patient = patients.get(row["original_study_instance_uid"], Patient(None, None, None))
        finding = StudyFinding(
            original_study_instance_uid=row["original_study_instance_uid"],
            patient_id=row["patient_id"],
            patient_name=patient.name,
            patient_birth_date=patient.birth_date,
            patient_sex=patient.sex,
            accession_number=row["accession_number"],
            study_date=row["original_study_date"],
            programme=row["programme"],
            score=row["score"],
            flag=bool(row["flag"]),
            threshold=row["threshold"],
            priority_rank=row["priority_rank"],
            model_name=row["model_name"],
            model_version=row["model_version"],
            weights_sha256=row["weights_sha256"],
        )
        pending.append(PendingReport(finding, row["validated_at"]))
    return pending


def build_reports(pending: Sequence[PendingReport], key: bytes) -> list[pydicom.Dataset]:
    """One SR per pending report, UIDs from `report_uids`, timed at validation: a re-run on
    the same validated findings builds the same reports. One builder serves the whole run, so
    highdicom's document constructor runs once, not once per report."""
    builder = FindingsReportBuilder()
    reports = []
    for item in pending:
        finding = item.finding
        series_uid, sop_uid = report_uids(
            key, finding.original_study_instance_uid, finding.model_version
        )
        reports.append(
            builder.build(
                finding,
                series_instance_uid=series_uid,
                sop_instance_uid=sop_uid,
                content_datetime=item.validated_at,
            )
        )
    return reports


def write_outbox(reports: Sequence[pydicom.Dataset], folder: Path) -> list[StoreOutcome]:
    """Write each report as `<SOPInstanceUID>.dcm` into `folder` (atomically, replacing one of
    an earlier run) for a person to import; the outcome says so and is not an acceptance."""
    folder.mkdir(parents=True, exist_ok=True)
    outcomes = []
    for report in reports:
        uid = str(report.SOPInstanceUID)
        path = folder / f"{uid}.dcm"
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=folder)
        with os.fdopen(fd, "wb") as handle:
            report.save_as(handle, enforce_file_format=True)
        os.replace(tmp, path)
        outcomes.append(StoreOutcome(uid, False, WRITTEN_TO_OUTBOX))
    return outcomes


def send_reports(
    store: Callable[[Sequence[pydicom.Dataset]], list[StoreOutcome]],
    reports: Sequence[pydicom.Dataset],
    outbox: Path,
) -> list[StoreOutcome]:
    """Send `reports` with the source's `store`; when the source cannot store, write them to
    `outbox` instead. Outcomes come back in the order of `reports`."""
    try:
        return store(reports)
    except NotImplementedError:
        return write_outbox(reports, outbox)


def sent_table(
    reports: Sequence[pydicom.Dataset], outcomes: Sequence[StoreOutcome], sent_at: datetime
) -> pl.DataFrame:
    """One row per report: its UID, the original study's UID, whether the PACS accepted it,
    why, and when it was sent. Raises ValueError if outcomes and reports do not pair up."""
    by_uid = {o.sop_instance_uid: o for o in outcomes}
    if len(by_uid) != len(outcomes) or set(by_uid) != {str(r.SOPInstanceUID) for r in reports}:
        raise ValueError("store outcomes must name each sent report exactly once")
    rows = [
        {
            "sop_instance_uid": str(r.SOPInstanceUID),
            "original_study_instance_uid": str(r.StudyInstanceUID),
            "accepted": by_uid[str(r.SOPInstanceUID)].accepted,
            "reason": by_uid[str(r.SOPInstanceUID)].reason,
            "sent_at": sent_at.isoformat(timespec="seconds"),
        }
        for r in reports
    ]
    return pl.DataFrame(rows, schema=SENT_SCHEMA, orient="row")
