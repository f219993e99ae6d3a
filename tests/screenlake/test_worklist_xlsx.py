from __future__ import annotations

import csv
from datetime import UTC, date, datetime
from pathlib import Path

import polars as pl
import pytest
from openpyxl import load_workbook
from openpyxl.worksheet.worksheet import Worksheet

from screenlake.tables import COORDINATOR_WORKLIST, frame_of
from screenlake.worklist import (
    ABOUT_SHEET,
    EXPORT_COLUMNS,
    PRIORITY_BANDS,
    REVIEW_COLUMNS,
    WORKLIST_SHEET,
    WorklistAbout,
    export_frame,
    priority_fill,
    write_csv,
    write_xlsx,
)

DAY = date(2024, 3, 12)
ABOUT = WorklistAbout(
    "cxr_tb",
    DAY,
    ("cxr_tb_reference 1.2.0 (weights sha256 0123456789ab)",),
    datetime(2024, 3, 13, 6, 0, tzinfo=UTC),
)


def _worklist(flagged: int, unflagged: int = 0) -> pl.DataFrame:
    rows = [
        {
            "priority_rank": rank,
            "programme": "cxr_tb",
            "patient_id": f"0{1000 + rank}",  # a leading zero must survive as text
            "accession_number": f"ACC{rank:03d}",
            "study_date": DAY,
            "score": 0.99 - rank / 100 + 0.000049,
            "flag": rank <= flagged,
            "model_name": "cxr_tb_reference",
            "model_version": "1.2.0",
        }
        for rank in range(1, flagged + unflagged + 1)
    ]
    return frame_of(rows, COORDINATOR_WORKLIST)


@pytest.fixture
def exported(tmp_path: Path) -> tuple[Path, Path, int]:
    export = export_frame(_worklist(flagged=22, unflagged=1))
    xlsx, csv_path = tmp_path / "w" / "2024-03-12.xlsx", tmp_path / "w" / "2024-03-12.csv"
    write_xlsx(export, xlsx, ABOUT)
    write_csv(export, csv_path)
    return xlsx, csv_path, export.height


def _sheet(path: Path, name: str = WORKLIST_SHEET) -> Worksheet:
    sheet = load_workbook(path)[name]
    assert isinstance(sheet, Worksheet)
    return sheet


def test_the_export_adds_empty_review_columns_after_the_worklist_columns() -> None:
    export = export_frame(_worklist(flagged=2))
    assert tuple(export.columns) == (*COORDINATOR_WORKLIST.columns, *REVIEW_COLUMNS)
    assert all(export[c].null_count() == export.height for c in REVIEW_COLUMNS)


def test_header_is_frozen_and_filters_cover_the_table(exported: tuple[Path, Path, int]) -> None:
    xlsx, _, rows = exported
    sheet = _sheet(xlsx)
    assert sheet.freeze_panes == "A2"
    assert sheet.auto_filter.ref == f"A1:M{rows + 1}"
    assert [c.value for c in sheet[1]] == list(EXPORT_COLUMNS)
    assert all(c.font.bold for c in sheet[1])
    assert sheet.column_dimensions["M"].width == 40


def test_flagged_rows_are_coloured_by_priority_band(exported: tuple[Path, Path, int]) -> None:
    sheet = _sheet(exported[0])

    def fill(row: int) -> str | None:
        cell = sheet.cell(row=row, column=1)
        return cell.fill.start_color.rgb if cell.fill.fill_type == "solid" else None

    red, amber = (band[1] for band in PRIORITY_BANDS)
    assert [fill(r) for r in (2, 6)] == [red, red]  # ranks 1 and 5
    assert [fill(r) for r in (7, 21)] == [amber, amber]  # ranks 6 and 20
    assert fill(22) == fill(23) == priority_fill(21, True)  # ranks 21 and 22, still flagged
    assert fill(24) is None  # not flagged
    review_status = sheet.cell(row=2, column=EXPORT_COLUMNS.index("review_status") + 1)
    assert review_status.fill.fill_type is None  # the cells to fill in stay plain
    assert priority_fill(1, False) is None and priority_fill(None, None) is None


def test_review_status_has_a_drop_down_of_the_allowed_statuses(
    exported: tuple[Path, Path, int],
) -> None:
    xlsx, _, rows = exported
    validations = _sheet(xlsx).data_validations.dataValidation
    assert len(validations) == 1
    (choice,) = validations
    assert choice.type == "list"
    assert choice.formula1 == '"pending,recalled,confirmed,dismissed"'
    assert str(choice.sqref) == f"J2:J{rows + 1}"
    assert choice.showErrorMessage and choice.allow_blank


def test_values_equal_the_csv(exported: tuple[Path, Path, int]) -> None:
    xlsx, csv_path, rows = exported
    with csv_path.open(newline="", encoding="utf-8") as handle:
        expected = list(csv.reader(handle))
    sheet = _sheet(xlsx)
    got = [[_as_csv(v) for v in row] for row in sheet.iter_rows(values_only=True)]
    assert len(got) == rows + 1
    assert got == expected
    assert sheet["C2"].data_type == "s" and sheet["C2"].value == "01001"
    assert sheet["F2"].number_format == "0.0000" and sheet["E2"].number_format == "yyyy-mm-dd"


def test_about_sheet_says_flags_not_diagnoses_and_how_to_re_import(
    exported: tuple[Path, Path, int],
) -> None:
    text = "\n".join(str(c.value or "") for (c,) in _sheet(exported[0], ABOUT_SHEET).iter_rows())
    assert "flags for clinician review, never diagnoses" in text
    assert "cxr_tb_reference 1.2.0" in text and "2024-03-12" in text
    assert "screenlake import-reviews" in text
    for status in ("pending", "recalled", "confirmed", "dismissed"):
        assert f"  {status}: " in text
    comment = _sheet(exported[0])["J1"].comment
    assert comment is not None and "dismissed" in comment.text


def test_an_empty_worklist_still_has_its_header_filters_and_about(tmp_path: Path) -> None:
    path = tmp_path / "2024-03-12.xlsx"
    write_xlsx(export_frame(_worklist(flagged=0)), path, ABOUT)
    sheet = _sheet(path)
    assert sheet.max_row == 1 and sheet.auto_filter.ref == "A1:M1"
    assert [p.name for p in tmp_path.iterdir()] == ["2024-03-12.xlsx"]  # no temp file left


def test_a_frame_without_the_review_columns_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="columns"):
        write_xlsx(_worklist(flagged=1), tmp_path / "x.xlsx", ABOUT)


def _as_csv(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4f}"
    if isinstance(value, datetime):
        return value.date().isoformat()  # study_date: openpyxl reads dates back as datetimes
    return str(value)
