"""Erasure from the PHI zone's exports: the patient's rows leave the worklist files a
coordinator may already have filled in, and every other row stays as it was, entries and
colours included."""

from __future__ import annotations

import csv
from datetime import UTC, date, datetime
from pathlib import Path

import polars as pl
import pytest
from openpyxl import load_workbook

from screenlake.erasure.exports import erase_csv_rows, erase_xlsx_rows
from screenlake.erasure.traces import PatientTraces
from screenlake.tables import COORDINATOR_WORKLIST, frame_of
from screenlake.worklist import (
    EXPORT_COLUMNS,
    WORKLIST_SHEET,
    WorklistAbout,
    export_frame,
    write_csv,
    write_xlsx,
)

ERASED = PatientTraces(patient_ids=frozenset({"P002"}), accession_numbers=frozenset({"A002"}))


def _export() -> pl.DataFrame:
    rows = [
        {
            "priority_rank": rank,
            "programme": "cxr_tb",
            "patient_id": f"P00{rank}",
            "accession_number": f"A00{rank}",
            "study_date": date(2024, 3, 11),
            "score": 0.9 - rank / 10,
            "flag": True,
            "model_name": "cxr_tb_reference",
            "model_version": "2.0.0",
        }
        for rank in (1, 2, 3)
    ]
    return export_frame(frame_of(rows, COORDINATOR_WORKLIST))


def test_a_csv_loses_the_patients_row_and_keeps_every_other_line(tmp_path: Path) -> None:
    path = tmp_path / "worklist.csv"
    write_csv(_export(), path)
    before = path.read_bytes().split(b"\r\n")

    change = erase_csv_rows(path, ERASED, "worklist csv")

    assert change is not None and (change.rows_before, change.rows_after) == (3, 2)
    assert path.read_bytes().split(b"\r\n") == [line for line in before if b"P002" not in line]
    assert change.sha256_before != change.sha256_after
    assert erase_csv_rows(path, ERASED, "worklist csv") is None  # nothing left to remove


def test_a_filled_in_workbook_keeps_the_other_rows_entries_and_colours(tmp_path: Path) -> None:
    path = tmp_path / "worklist.xlsx"
    write_xlsx(_export(), path, WorklistAbout("cxr_tb", date(2024, 3, 11), (), datetime.now(UTC)))
    book = load_workbook(path)
    status = EXPORT_COLUMNS.index("review_status") + 1
    for row in (2, 3, 4):
        book[WORKLIST_SHEET].cell(row=row, column=status).value = f"entry {row}"
    book.save(path)
    fills = [c.fill.start_color.rgb for c in book[WORKLIST_SHEET]["A"][1:]]

    change = erase_xlsx_rows(path, ERASED, "worklist xlsx")

    assert change is not None and (change.rows_before, change.rows_after) == (3, 2)
    sheet = load_workbook(path)[WORKLIST_SHEET]
    rows = list(sheet.iter_rows(min_row=2, values_only=True))
    patient = EXPORT_COLUMNS.index("patient_id")
    assert [(r[patient], r[status - 1]) for r in rows] == [("P001", "entry 2"), ("P003", "entry 4")]
    assert [c.fill.start_color.rgb for c in sheet["A"][1:]] == [fills[0], fills[2]]
    assert "About" in load_workbook(path).sheetnames
    assert erase_xlsx_rows(path, ERASED, "worklist xlsx") is None


@pytest.mark.parametrize("column", ["patient_id", "accession_number"])
def test_a_row_goes_by_either_identifier(tmp_path: Path, column: str) -> None:
    path = tmp_path / "sheet.csv"
    with path.open("w", newline="") as handle:
        csv.writer(handle).writerows(
            [[column, "label"], ["P002" if column == "patient_id" else "A002", "1"], ["X", "0"]]
        )

    change = erase_csv_rows(path, ERASED, "labels")

    assert change is not None and change.rows_after == 1
    assert path.read_text().splitlines() == [f"{column},label", "X,0"]
