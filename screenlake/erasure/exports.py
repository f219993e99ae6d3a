"""Erasure from what the PHI zone exports and takes back: the coordinators' worklists (CSV and
XLSX, which coordinators fill in), the review decisions imported from them, the ground-truth
labels, the record of findings reports sent to the PACS and the reports left in its outbox.

Rows go by the identifiers each file keys them by (accession number, patient ID, original
study UID); every other row is written back as it was. A report already accepted by the PACS
is outside screenlake's reach: the sent record goes, the copy in the PACS stays (README).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Collection, Mapping
from pathlib import Path, PurePosixPath

import pydicom
from pydicom.errors import InvalidDicomError

from screenlake import layout
from screenlake.erasure.artefacts import ArtefactErasure, listing_digest
from screenlake.erasure.traces import PatientTraces
from screenlake.fsutil import sha256_of, write_atomic
from screenlake.tables import REVIEW_DECISIONS, read_parquet, write_parquet
from screenlake.worklist import WORKLIST_SHEET


def _columns_of(traces: PatientTraces) -> dict[str, Collection[str]]:
    """The PHI-zone columns that name a patient, with the patients' values in each."""
    return {
        "patient_id": traces.patient_ids,
        "accession_number": traces.accession_numbers,
        "original_study_instance_uid": traces.original_study_uids,
    }


def _theirs(header: list[str], row: list[str], wanted: Mapping[str, Collection[str]]) -> bool:
    """Whether a row names one of the patients in a column that names patients."""
    cells = dict(zip(header, row, strict=False))  # a short row has fewer cells
    return any(cells.get(column, "").strip() in values for column, values in wanted.items())


def erase_csv_rows(path: Path, traces: PatientTraces, kind: str) -> ArtefactErasure | None:
    """Rewrite the CSV at `path` without the patients' rows (by patient ID, accession number or
    original study UID, whichever columns it has), atomically; every other line is written
    back as the csv module read it. None, and the file untouched, when it holds none."""
    if not path.is_file():
        return None
    with path.open(encoding="utf-8", newline="") as handle:
        rows = list(csv.reader(handle))
    if not rows:
        return None
    header, body = rows[0], rows[1:]
    wanted = _columns_of(traces)
    kept = [row for row in body if not (row and _theirs(header, row, wanted))]
    if len(kept) == len(body):
        return None
    before = sha256_of(path)
    out = io.StringIO(newline="")
    writer = csv.writer(out)
    writer.writerow(header)
    writer.writerows(kept)
    write_atomic(path, out.getvalue())
    return ArtefactErasure(kind, len(body), len(kept), before, sha256_of(path))


def erase_xlsx_rows(path: Path, traces: PatientTraces, kind: str) -> ArtefactErasure | None:
    """Remove the patients' rows from a worklist workbook's Worklist sheet (by patient ID or
    accession number), keeping every other row with its fills and the coordinator's entries,
    and the other sheets; atomically. None, and the file untouched, when it holds none."""
    if not path.is_file():
        return None
    # openpyxl is imported here so that the code location loads without it.
    from openpyxl import load_workbook

    book = load_workbook(path)
    if WORKLIST_SHEET not in book.sheetnames:
        return None
    sheet = book[WORKLIST_SHEET]
    header = [str(c.value) if c.value is not None else "" for c in sheet[1]]
    wanted = _columns_of(traces)
    rows_before = sheet.max_row - 1
    theirs = [
        number
        for number, row in enumerate(sheet.iter_rows(min_row=2, values_only=True), start=2)
        if _theirs(header, ["" if v is None else str(v) for v in row], wanted)
    ]
    if not theirs:
        return None
    before = sha256_of(path)
    for number in reversed(theirs):
        sheet.delete_rows(number)
    if sheet.auto_filter.ref:
        last_column = sheet.auto_filter.ref.split(":")[-1].rstrip("0123456789")
        sheet.auto_filter.ref = f"A1:{last_column}{max(sheet.max_row, 1)}"
    buffer = io.BytesIO()
    book.save(buffer)
    write_atomic(path, buffer.getvalue())
    return ArtefactErasure(kind, rows_before, rows_before - len(theirs), before, sha256_of(path))


def erase_review_decisions(path: Path, traces: PatientTraces) -> ArtefactErasure | None:
    """The clinicians' decisions recorded for a worklist, without the patients' rows."""
    if not path.is_file():
        return None
    frame = read_parquet(REVIEW_DECISIONS, path)
    mask = frame["accession_number"].is_in(list(traces.accession_numbers)) | frame[
        "patient_id"
    ].is_in(list(traces.patient_ids)).fill_null(False)
    if not mask.any():
        return None
    before = sha256_of(path)
    kept = write_parquet(frame.filter(~mask), REVIEW_DECISIONS, path)
    return ArtefactErasure("review decisions", frame.height, kept, before, sha256_of(path))


def erase_outbox_reports(folder: Path, traces: PatientTraces) -> ArtefactErasure | None:
    """Remove the findings reports filed into the patients' original studies from an outbox
    folder (each report names its study in StudyInstanceUID)."""
    if not folder.is_dir():
        return None
    files = sorted(p for p in folder.glob("*.dcm") if p.is_file())
    theirs = []
    for path in files:
        try:
            study = pydicom.dcmread(
                path, stop_before_pixels=True, specific_tags=["StudyInstanceUID"]
            )
        except InvalidDicomError:
            continue  # not a report screenlake wrote: left for the person who put it there
        if str(study.get("StudyInstanceUID", "")) in traces.original_study_uids:
            theirs.append(path)
    if not theirs:
        return None
    before = listing_digest(folder)
    for path in theirs:
        path.unlink()
    return ArtefactErasure(
        "outbox reports", len(files), len(files) - len(theirs), before, listing_digest(folder)
    )


def erase_from_exports(
    phi_root: Path, batch: layout.Batch, traces: PatientTraces
) -> list[ArtefactErasure]:
    """Remove the patients from one batch's exports in the PHI zone's local folder: both
    worklist files, the decisions imported from them, the sent-reports record and the outbox."""
    changes = [
        erase_csv_rows(phi_root / layout.worklist_path(batch, "csv"), traces, "worklist csv"),
        erase_xlsx_rows(phi_root / layout.worklist_path(batch, "xlsx"), traces, "worklist xlsx"),
        erase_review_decisions(
            phi_root / layout.review_decisions_path(batch.programme, batch.day), traces
        ),
        erase_csv_rows(phi_root / layout.reports_sent_path(batch), traces, "reports sent"),
        erase_outbox_reports(phi_root / layout.outbox_dir(batch), traces),
    ]
    return [c for c in changes if c is not None]


def export_paths(batch: layout.Batch) -> list[PurePosixPath]:
    """The PHI-zone paths `erase_from_exports` reads and rewrites for a batch."""
    return [
        layout.worklist_path(batch, "csv"),
        layout.worklist_path(batch, "xlsx"),
        layout.review_decisions_path(batch.programme, batch.day),
        layout.reports_sent_path(batch),
        layout.outbox_dir(batch),
    ]


def erase_labels(phi_root: Path, traces: PatientTraces) -> ArtefactErasure | None:
    """The ground-truth labels file without the patients' accession numbers."""
    return erase_csv_rows(phi_root / layout.DEMO_LABELS, traces, "labels")
