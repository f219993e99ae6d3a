"""The coordinators' worklist: flagged studies re-identified through the vault, by priority.

It names real patients so that they can be recalled, so it is written to the PHI zone only, as
CSV (for systems) and XLSX (for people). Both exports end in review columns that the coordinator
fills in; `screenlake.reviews` reads them back as the clinicians' decisions.
"""

from __future__ import annotations

import csv
import os
import tempfile
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path

import polars as pl

from screenlake.reidentify import reidentify_flagged
from screenlake.tables import COORDINATOR_WORKLIST, conform


@dataclass(frozen=True)
class ReviewStatus:
    """One value a coordinator may put in review_status, and the label it records."""

    name: str
    label: bool | None
    meaning: str


# The vocabulary is small on purpose: each status says what happened to the patient, and the
# label is what the performance audit counts (None: recorded, but not a label).
REVIEW_STATUSES: tuple[ReviewStatus, ...] = (
    ReviewStatus("pending", None, "reviewed, decision not made yet (second reading, priors)"),
    ReviewStatus("recalled", True, "the clinician judged the finding real; patient recalled"),
    ReviewStatus("confirmed", True, "the finding was confirmed (e.g. after work-up)"),
    ReviewStatus("dismissed", False, "the clinician found no abnormality; no recall"),
)
LABEL_OF: dict[str, bool | None] = {s.name: s.label for s in REVIEW_STATUSES}

# Export-only columns after COORDINATOR_WORKLIST's: the coordinator fills them in.
REVIEW_COLUMNS = ("review_status", "reviewer", "reviewed_at", "review_note")
EXPORT_COLUMNS = (*COORDINATOR_WORKLIST.columns, *REVIEW_COLUMNS)
WORKLIST_SHEET, ABOUT_SHEET = "Worklist", "About"

# Fill (ARGB) of a flagged row by priority rank: the first ranks are read first.
PRIORITY_BANDS: tuple[tuple[int, str, str], ...] = (
    (5, "FFFFC7CE", "red: priority ranks 1-5, review first"),
    (20, "FFFFEB9C", "amber: priority ranks 6-20"),
)
OTHER_FLAGGED_FILL = ("FFFFF9DB", "pale yellow: other flagged studies")

_COLUMN_NOTES = {
    "priority_rank": "1 = review first (highest score).",
    "patient_id": "The hospital's patient ID, for the recall.",
    "accession_number": "Do not edit: the import matches rows by accession number.",
    "study_date": "The real study date.",
    "score": "The model's score (0-1); a flag, not a diagnosis.",
    "flag": "TRUE when the score reached the model's threshold.",
    "review_status": "Pick one: " + ", ".join(s.name for s in REVIEW_STATUSES) + ". "
    "Blank = not reviewed yet.",
    "reviewer": "Who decided (name or initials).",
    "reviewed_at": "Date of the decision (time optional), local time.",
    "review_note": "Free text; stays in this file, it is not imported.",
}
_NUMBER_FORMATS = {
    "score": "0.0000",
    "study_date": "yyyy-mm-dd",
    "reviewed_at": "yyyy-mm-dd hh:mm",
}
_WIDE = {"review_note": 40, "model_name": 22}


def coordinator_worklist(findings: pl.DataFrame, vault: pl.DataFrame) -> pl.DataFrame:
    """Flagged findings joined to the vault, ordered by priority; raises if a study is unknown."""
    frame = reidentify_flagged(findings, vault).select(
        "priority_rank",
        "programme",
        "patient_id",
        "accession_number",
        pl.col("original_study_date").alias("study_date"),
        "score",
        "flag",
        "model_name",
        "model_version",
    )
    return pl.from_arrow(conform(frame, COORDINATOR_WORKLIST))  # type: ignore[return-value]


def export_frame(worklist: pl.DataFrame) -> pl.DataFrame:
    """The worklist with its review columns added, empty: what both exports hold."""
    conform(worklist, COORDINATOR_WORKLIST)
    return worklist.with_columns(
        pl.lit(None, dtype=pl.String).alias("review_status"),
        pl.lit(None, dtype=pl.String).alias("reviewer"),
        pl.lit(None, dtype=pl.Datetime("us", "UTC")).alias("reviewed_at"),
        pl.lit(None, dtype=pl.String).alias("review_note"),
    ).select(EXPORT_COLUMNS)


def write_csv(frame: pl.DataFrame, path: Path) -> None:
    """Write a PHI-zone table as CSV atomically, scores rounded for reading."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    with os.fdopen(fd, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(frame.columns)
        for row in frame.iter_rows():
            writer.writerow(
                [f"{v:.4f}" if isinstance(v, float) else ("" if v is None else v) for v in row]
            )
    os.replace(tmp, path)


@dataclass(frozen=True)
class WorklistAbout:
    """What the XLSX's About sheet says about the worklist it comes with."""

    programme: str
    day: date
    models: tuple[str, ...]  # "name version (weights ...)" of the models that scored the day
    generated_at: datetime


def priority_fill(rank: int | None, flag: bool | None) -> str | None:
    """The ARGB fill of a row by its priority band; None (no fill) when it is not flagged."""
    if not flag:
        return None
    for last_rank, colour, _ in PRIORITY_BANDS:
        if rank is not None and rank <= last_rank:
            return colour
    return OTHER_FLAGGED_FILL[0]


def about_lines(about: WorklistAbout) -> list[str]:
    """The About sheet's text, one paragraph a line."""
    statuses = [f"  {s.name}: {s.meaning}" for s in REVIEW_STATUSES]
    return [
        f"Coordinator worklist: programme {about.programme}, studies of {about.day.isoformat()}",
        "These are flags for clinician review, never diagnoses. A clinician decides.",
        "Model: " + ("; ".join(about.models) or "none (no study was scored)"),
        f"Generated: {about.generated_at.isoformat(timespec='seconds')}",
        "This file names patients: keep it in the PHI zone.",
        "",
        "Colours (flagged studies by priority): "
        + "; ".join([*(b[2] for b in PRIORITY_BANDS), OTHER_FLAGGED_FILL[1]]),
        "",
        "How to fill in, on the Worklist sheet, one row per study:",
        "  review_status: pick from the drop-down; leave blank while not reviewed:",
        *statuses,
        "  reviewer: who decided. reviewed_at: the date (time optional), local time.",
        "  review_note: free text for the team; it stays in this file and is not imported.",
        (
            "Sort and filter freely. Do not edit patient_id, accession_number or programme, and "
            "keep the file name: it starts with the worklist's date."
        ),
        "",
        "Re-import (records the decisions as labels for the performance audit):",
        "  screenlake import-reviews <this file> --phi-zone <PHI zone folder>",
        (
            "Importing again replaces this worklist's decisions with the file's; blank rows "
            "record nothing. A wrong status or a row that is not on this worklist stops the "
            "import, naming the row, and nothing is recorded."
        ),
    ]


def write_xlsx(frame: pl.DataFrame, path: Path, about: WorklistAbout) -> None:
    """Write the export as an XLSX workbook atomically: a Worklist sheet (frozen header,
    filters, priority colours, a status drop-down, notes on the headers) and an About sheet."""
    # openpyxl is imported here so that the code location loads without it.
    from openpyxl import Workbook
    from openpyxl.comments import Comment
    from openpyxl.styles import Font, PatternFill
    from openpyxl.utils import get_column_letter
    from openpyxl.worksheet.datavalidation import DataValidation

    if tuple(frame.columns) != EXPORT_COLUMNS:
        raise ValueError(f"the worklist export must have the columns {list(EXPORT_COLUMNS)}")
    book = Workbook()
    sheet = book.active
    assert sheet is not None
    sheet.title = WORKLIST_SHEET
    sheet.append(list(EXPORT_COLUMNS))
    for cell in sheet[1]:
        cell.font = Font(bold=True)
        note = _COLUMN_NOTES.get(str(cell.value))
        if note:
            cell.comment = Comment(note, "screenlake", width=260, height=90)
    data_columns = len(COORDINATOR_WORKLIST.columns)
    for row in frame.iter_rows(named=True):
        sheet.append([_cell_value(name, row[name]) for name in EXPORT_COLUMNS])
        fill = priority_fill(row["priority_rank"], row["flag"])
        if fill:
            pattern = PatternFill("solid", start_color=fill, end_color=fill)
            for cell in sheet[sheet.max_row][:data_columns]:
                cell.fill = pattern
    last_row = max(frame.height + 1, 2)
    for index, name in enumerate(EXPORT_COLUMNS, start=1):
        letter = get_column_letter(index)
        sheet.column_dimensions[letter].width = _width(name, frame)
        if name in _NUMBER_FORMATS:
            for (cell,) in sheet.iter_rows(min_row=2, min_col=index, max_col=index):
                cell.number_format = _NUMBER_FORMATS[name]
    last_column = get_column_letter(len(EXPORT_COLUMNS))
    sheet.freeze_panes = "A2"
    sheet.auto_filter.ref = f"A1:{last_column}{frame.height + 1}"
    status_column = get_column_letter(EXPORT_COLUMNS.index("review_status") + 1)
    allowed = ",".join(s.name for s in REVIEW_STATUSES)
    choice = DataValidation(
        type="list",
        formula1=f'"{allowed}"',
        allow_blank=True,
        showErrorMessage=True,
        errorTitle="Unknown review status",
        error=f"Choose one of: {allowed}, or leave blank.",
        promptTitle="Review status",
        prompt=f"{allowed}; blank = not reviewed",
        showInputMessage=True,
    )
    choice.add(f"{status_column}2:{status_column}{last_row}")
    sheet.add_data_validation(choice)

    info = book.create_sheet(ABOUT_SHEET)
    info.column_dimensions["A"].width = 110
    for line in about_lines(about):
        info.append([line])
    info["A1"].font = Font(bold=True)
    book.properties.title = f"Worklist {about.programme} {about.day.isoformat()}"
    book.properties.subject = "Flags for clinician review, never diagnoses"

    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        book.save(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _cell_value(name: str, value: object) -> object:
    if isinstance(value, float) and name == "score":
        return round(value, 4)  # as the CSV has it
    if isinstance(value, datetime):
        # Excel keeps no time zone: show the coordinator's local time, as they type it.
        return value.astimezone().replace(tzinfo=None)
    return value


def _width(name: str, frame: pl.DataFrame) -> float:
    if name in _WIDE:
        return _WIDE[name]
    longest = max([len(name), *(len(str(v)) for v in frame[name].drop_nulls().to_list()[:500])])
    return min(longest + 3, 40)


def models_of(findings: pl.DataFrame) -> tuple[str, ...]:
    """The models that scored a batch, as the About sheet names them."""
    rows = findings.select("model_name", "model_version", "weights_sha256").unique().sort("*")
    return tuple(f"{n} {v} (weights sha256 {w[:12]})" for n, v, w in rows.iter_rows())
