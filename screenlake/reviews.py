"""The clinicians' decisions, read back from a filled-in coordinator worklist (PHI zone).

A coordinator fills in review_status (and reviewer, reviewed_at) in the worklist's XLSX or CSV;
importing the file records one REVIEW_DECISIONS row per reviewed study, with the label the
status carries (see `screenlake.worklist.REVIEW_STATUSES`), for the performance audit. The file
is checked whole before anything is written: an unknown status, a row that is not on the
worklist the file came from, or a row whose patient no longer matches its accession stops the
import with the spreadsheet's row number (never the identifier itself).

Decisions are kept per worklist (programme and day). The imported file is the authority for the
studies it lists: importing it again replaces their decisions, so re-importing is idempotent;
decisions for studies it does not list (from an earlier version of that day's worklist) stay.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from pathlib import Path, PurePosixPath
from typing import Any

import polars as pl

from screenlake import layout
from screenlake.errors import ReviewFileError
from screenlake.programmes import PROGRAMMES
from screenlake.tables import REVIEW_DECISIONS, polars_schema, read_parquet, write_parquet
from screenlake.worklist import LABEL_OF, REVIEW_STATUSES, WORKLIST_SHEET

REQUIRED_COLUMNS = (
    "programme",
    "patient_id",
    "accession_number",
    "review_status",
    "reviewer",
    "reviewed_at",
)
_ENTRY_SCHEMA: pl.Schema = pl.Schema(
    {  # type: ignore[arg-type]
        "row": pl.Int32,
        "programme": pl.String,
        "patient_id": pl.String,
        "accession_number": pl.String,
        "review_status": pl.String,
        "reviewer": pl.String,
        "reviewed_at": pl.Datetime("us", "UTC"),
        "review_note": pl.String,
    }
)
_REVIEW_VALUES = ("review_status", "reviewer", "reviewed_at", "review_note")
_DAY_IN_NAME = re.compile(r"^(\d{4}-\d{2}-\d{2})")
_ALLOWED = ", ".join(s.name for s in REVIEW_STATUSES)


@dataclass(frozen=True)
class FilledWorklist:
    """A worklist file's rows as the coordinator left them: `entries` has _ENTRY_SCHEMA, with
    `row` the spreadsheet's row number (the header is row 1)."""

    source_file: str
    day: date
    programme: str | None  # None when the file has no rows
    entries: pl.DataFrame


@dataclass(frozen=True)
class ReviewImport:
    """What one import recorded."""

    decisions: int
    labels: int
    positive: int
    negative: int
    not_reviewed: int
    kept: int  # earlier decisions for studies this file does not list
    path: PurePosixPath  # the decisions' file, relative to the PHI zone


def read_filled_worklist(path: Path) -> FilledWorklist:
    """Read and check a filled-in worklist (.xlsx or .csv); raises ReviewFileError naming the
    row for an unknown status, an unreadable date, a missing or repeated accession number."""
    match = _DAY_IN_NAME.match(path.name)
    day = _iso_day(match.group(1)) if match else None
    if day is None:
        raise ReviewFileError(
            f"{path.name}: the file name must start with its worklist's date, as screenlake "
            "wrote it (YYYY-MM-DD.xlsx or .csv); rename it back"
        )
    if path.suffix.lower() == ".xlsx":
        header, rows = _xlsx_rows(path)
    elif path.suffix.lower() == ".csv":
        header, rows = _csv_rows(path)
    else:
        raise ReviewFileError(f"{path.name}: give the worklist's .xlsx or .csv file")
    missing = [c for c in REQUIRED_COLUMNS if c not in header]
    if missing:
        raise ReviewFileError(
            f"{path.name}: the columns {missing} are missing; import the worklist as screenlake "
            "wrote it, with its review columns filled in"
        )
    entries = [_entry(path.name, number, dict(zip(header, values))) for number, values in rows]
    frame = pl.DataFrame([e for e in entries if e], schema=_ENTRY_SCHEMA, orient="row")
    programme = _one_programme(path.name, frame)
    repeated = frame.filter(pl.col("accession_number").is_duplicated())
    if repeated.height:
        raise ReviewFileError(
            f"{path.name}: rows {', '.join(map(str, repeated['row']))} repeat an accession "
            "number; keep one row per study"
        )
    return FilledWorklist(path.name, day, programme, frame)


def decisions_path(programme: str, day: date) -> PurePosixPath:
    """One worklist's decisions in the PHI zone."""
    return layout.review_decisions_path(programme, day)


def review_decisions(
    filled: FilledWorklist, worklist: pl.DataFrame, imported_at: datetime
) -> pl.DataFrame:
    """REVIEW_DECISIONS rows for the reviewed rows of `filled`, checked against the `worklist`
    it came from (accession_number, patient_id); raises ReviewFileError naming the row."""
    where = f"the {filled.programme} worklist of {filled.day.isoformat()}"
    entries = _matched(filled.entries, worklist, filled.source_file, refuse_others_from=where)
    reviewed = entries.filter(pl.col("review_status").is_not_null())
    return reviewed.select(
        "programme",
        "accession_number",
        "patient_id",
        "review_status",
        pl.col("review_status").replace_strict(LABEL_OF, return_dtype=pl.Boolean).alias("label"),
        "reviewer",
        "reviewed_at",
        pl.lit(filled.source_file).alias("source_file"),
        pl.lit(imported_at, dtype=pl.Datetime("us", "UTC")).alias("imported_at"),
    )


def read_decisions(path: Path) -> pl.DataFrame:
    """The decisions recorded in `path`, or none when nothing was imported yet."""
    if not path.exists():
        return pl.DataFrame(schema=polars_schema(REVIEW_DECISIONS))
    return read_parquet(REVIEW_DECISIONS, path)


def import_reviews(path: Path, phi_root: Path, imported_at: datetime | None = None) -> ReviewImport:
    """Record the decisions of a filled-in worklist in the PHI zone at `phi_root`, replacing
    those of the studies it lists; nothing is written when the file has a problem."""
    filled = read_filled_worklist(path)
    if filled.programme is None or filled.entries["review_status"].is_null().all():
        raise ReviewFileError(
            f"{filled.source_file}: no row has a review_status; fill in the decisions first"
        )
    batch = layout.Batch(filled.day, filled.programme)
    written = [phi_root / layout.worklist_path(batch, s) for s in ("csv", "xlsx")]
    written = [p for p in written if p.exists()]
    if not written:
        raise ReviewFileError(
            f"{filled.source_file}: the PHI zone has no {filled.programme} worklist of "
            f"{filled.day.isoformat()}; check --phi-zone and the file name"
        )
    # Check against a copy the coordinator did not fill in, when the zone still has one.
    untouched = [p for p in written if p.resolve() != path.resolve()]
    worklist = _listed((untouched or written)[0])
    decisions = review_decisions(filled, worklist, imported_at or datetime.now(UTC))
    target = decisions_path(filled.programme, filled.day)
    earlier = read_decisions(phi_root / target)
    listed = filled.entries["accession_number"].to_list()
    kept = earlier.filter(~pl.col("accession_number").is_in(listed))
    write_parquet(pl.concat([kept, decisions]), REVIEW_DECISIONS, phi_root / target)
    labels = decisions["label"]
    return ReviewImport(
        decisions=decisions.height,
        labels=labels.drop_nulls().len(),
        positive=int(labels.sum()),
        negative=int((~labels).sum()),
        not_reviewed=filled.entries.height - decisions.height,
        kept=kept.height,
        path=target,
    )


def _listed(path: Path) -> pl.DataFrame:
    """The accession numbers and patients a worklist file lists, whatever its review cells say."""
    header, rows = _xlsx_rows(path) if path.suffix == ".xlsx" else _csv_rows(path)
    if "accession_number" not in header or "patient_id" not in header:
        raise ReviewFileError(f"the PHI zone's worklist {path.name} lacks its ID columns")
    at, patient = header.index("accession_number"), header.index("patient_id")
    listed = [(_text(r[at]), _text(r[patient])) for _, r in rows if len(r) > max(at, patient)]
    return pl.DataFrame(
        listed, schema={"accession_number": pl.String, "patient_id": pl.String}, orient="row"
    )


def carried_entries(files: Sequence[Path], recorded: pl.DataFrame) -> pl.DataFrame:
    """Review entries already made for a worklist: from its files in the order given (the
    first file that has an entry for a study wins), then from the decisions `recorded`."""
    sources = [read_filled_worklist(p).entries for p in files if p.exists()]
    sources.append(
        recorded.select(
            pl.lit(0, dtype=pl.Int32).alias("row"),
            "programme",
            "patient_id",
            "accession_number",
            "review_status",
            "reviewer",
            "reviewed_at",
            pl.lit(None, dtype=pl.String).alias("review_note"),
        )
    )
    filled = [
        s.filter(pl.any_horizontal(pl.col(c).is_not_null() for c in _REVIEW_VALUES))
        for s in sources
    ]
    return pl.concat(filled).unique("accession_number", keep="first", maintain_order=True)


def carry_over(
    export: pl.DataFrame, entries: pl.DataFrame, recorded: pl.DataFrame, worklist_name: str
) -> tuple[pl.DataFrame, int]:
    """`export` with the review entries made so far filled in, and how many rows got one.

    A re-run must not lose a clinician's decision: an entry with a status for a study the new
    worklist no longer lists, that was never imported, raises ReviewFileError."""
    listed = export["accession_number"].drop_nulls().to_list()
    gone = entries.filter(
        ~pl.col("accession_number").is_in(listed) & pl.col("review_status").is_not_null()
    ).join(recorded, on=["accession_number", "review_status"], how="anti")
    if gone.height:
        raise ReviewFileError(
            f"{worklist_name} holds {gone.height} review decisions for studies this run no "
            "longer flags, not imported yet: import it first (screenlake import-reviews), then "
            "re-run"
        )
    kept = _matched(entries, export, worklist_name, refuse_others_from=None).select(
        "accession_number", *_REVIEW_VALUES
    )
    merged = export.drop(_REVIEW_VALUES).join(kept, on="accession_number", how="left")
    return merged.select(export.columns), kept.height


def _matched(
    entries: pl.DataFrame, worklist: pl.DataFrame, source: str, refuse_others_from: str | None
) -> pl.DataFrame:
    """The entries whose accession is on `worklist`, with its patient_id. An entry for another
    study is refused (naming the worklist `refuse_others_from`) or, when that is None, dropped;
    an entry whose patient differs from the worklist's is always refused."""
    known = worklist.select("accession_number", pl.col("patient_id").alias("listed_patient"))
    joined = entries.join(known, on="accession_number", how="left", maintain_order="left")
    strangers = joined.filter(pl.col("listed_patient").is_null())
    if strangers.height and refuse_others_from is not None:
        raise ReviewFileError(
            f"{source}: row {strangers['row'][0]} is not on {refuse_others_from} (its accession "
            "number is not listed); import only the worklist's own rows"
        )
    joined = joined.filter(pl.col("listed_patient").is_not_null())
    moved = joined.filter(
        pl.col("patient_id").is_not_null() & (pl.col("patient_id") != pl.col("listed_patient"))
    )
    if moved.height:
        raise ReviewFileError(
            f"{source}: row {moved['row'][0]} names another patient than the "
            "worklist does for its accession number; was one column sorted on its own? Restore "
            "the rows and import again"
        )
    return joined.with_columns(pl.col("listed_patient").alias("patient_id")).drop("listed_patient")


def _entry(name: str, number: int, record: dict[str, Any]) -> dict[str, Any] | None:
    if all(_text(v) == "" for v in record.values()):
        return None  # spreadsheets leave empty rows behind
    accession = _text(record.get("accession_number"))
    if not accession:
        raise ReviewFileError(f"{name}: row {number} has no accession_number; restore it")
    status = _text(record.get("review_status")).lower() or None
    if status is not None and status not in LABEL_OF:
        raise ReviewFileError(
            f"{name}: row {number} has review_status {status[:30]!r}; use one of {_ALLOWED}, "
            "or leave it blank while not reviewed"
        )
    reviewer = _text(record.get("reviewer")) or None
    reviewed_at = _instant(name, number, record.get("reviewed_at"))
    if status is None and (reviewer or reviewed_at):
        raise ReviewFileError(
            f"{name}: row {number} has a reviewer or reviewed_at but no review_status; choose "
            "a status or clear them"
        )
    return {
        "row": number,
        "programme": _text(record.get("programme")) or None,
        "patient_id": _text(record.get("patient_id")) or None,
        "accession_number": accession,
        "review_status": status,
        "reviewer": reviewer,
        "reviewed_at": reviewed_at,
        "review_note": _text(record.get("review_note")) or None,
    }


def _one_programme(name: str, frame: pl.DataFrame) -> str | None:
    if frame.is_empty():
        return None
    first = frame["programme"][0]
    other = frame.filter(pl.col("programme").ne_missing(first))
    if other.height:
        raise ReviewFileError(
            f"{name}: row {other['row'][0]} belongs to another programme than row "
            f"{frame['row'][0]}; a worklist holds one programme"
        )
    if first not in PROGRAMMES:
        raise ReviewFileError(
            f"{name}: programme {str(first)[:30]!r} is not one of {', '.join(PROGRAMMES)}"
        )
    return str(first)


def _text(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))  # a spreadsheet may turn a numeric ID into a float
    return str(value).strip()


def _instant(name: str, number: int, value: object) -> datetime | None:
    """reviewed_at as UTC; a time without a zone is the local time of the importing machine."""
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, date):
        moment = datetime.combine(value, time())
    elif _text(value) == "":
        return None
    else:
        try:
            moment = datetime.fromisoformat(_text(value))
        except ValueError:
            raise ReviewFileError(
                f"{name}: row {number} has reviewed_at {_text(value)[:30]!r}; write a date as "
                "YYYY-MM-DD, with a time if you like (YYYY-MM-DD HH:MM)"
            ) from None
    return moment.astimezone(UTC)


def _iso_day(text: str) -> date | None:
    try:
        return date.fromisoformat(text)
    except ValueError:
        return None


def _xlsx_rows(path: Path) -> tuple[list[str], Iterator[tuple[int, tuple[Any, ...]]]]:
    # openpyxl is imported here so that the code location loads without it.
    from openpyxl import load_workbook
    from openpyxl.utils.exceptions import InvalidFileException

    try:
        book = load_workbook(path, read_only=True, data_only=True)
    except (InvalidFileException, OSError, KeyError, ValueError) as error:
        raise ReviewFileError(f"{path.name}: not a readable XLSX workbook ({error})") from None
    if WORKLIST_SHEET not in book.sheetnames:
        raise ReviewFileError(f"{path.name}: the workbook has no sheet {WORKLIST_SHEET!r}")
    rows = list(book[WORKLIST_SHEET].iter_rows(values_only=True))
    book.close()
    header = _header(path.name, rows[0] if rows else ())
    width = len(header)
    return header, ((n, tuple(r[:width])) for n, r in enumerate(rows[1:], start=2))


def _csv_rows(path: Path) -> tuple[list[str], Iterator[tuple[int, tuple[Any, ...]]]]:
    # Excel saves "CSV UTF-8" with a byte-order mark, and with ";" where "," is the decimal mark.
    text = path.read_text(encoding="utf-8-sig")
    first = text.split("\n", 1)[0]
    delimiter = ";" if first.count(";") > first.count(",") else ","
    rows = list(csv.reader(text.splitlines(), delimiter=delimiter))
    header = _header(path.name, rows[0] if rows else [])
    return header, ((n, tuple(r)) for n, r in enumerate(rows[1:], start=2))


def _header(name: str, cells: Sequence[Any]) -> list[str]:
    header = [_text(c) for c in cells]
    while header and not header[-1]:
        header.pop()
    repeated = {c for c in header if c and header.count(c) > 1}
    if repeated:
        raise ReviewFileError(f"{name}: the columns {sorted(repeated)} appear more than once")
    return header
