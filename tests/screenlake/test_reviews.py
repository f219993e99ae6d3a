from __future__ import annotations

import csv
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path

import polars as pl
import pytest
from openpyxl import load_workbook

from screenlake import layout
from screenlake.cli import main
from screenlake.errors import ReviewFileError
from screenlake.reviews import (
    carried_entries,
    carry_over,
    decisions_path,
    import_reviews,
    read_decisions,
    read_filled_worklist,
)
from screenlake.tables import COORDINATOR_WORKLIST, REVIEW_DECISIONS, frame_of, read_parquet
from screenlake.worklist import (
    EXPORT_COLUMNS,
    WorklistAbout,
    export_frame,
    write_csv,
    write_xlsx,
)

DAY, PROGRAMME = date(2024, 3, 12), "cxr_tb"
BATCH = layout.Batch(DAY, PROGRAMME)
STATUS, REVIEWER, REVIEWED_AT, NOTE = (
    EXPORT_COLUMNS.index(c) + 1 for c in ("review_status", "reviewer", "reviewed_at", "review_note")
)
NOW = datetime(2024, 3, 20, 12, 0, tzinfo=UTC)


@dataclass(frozen=True)
class Zone:
    root: Path
    xlsx: Path
    csv: Path

    @property
    def decisions(self) -> Path:
        return self.root / decisions_path(PROGRAMME, DAY)


def _worklist(accessions: tuple[str, ...] = ("A1", "A2", "A3", "A4")) -> pl.DataFrame:
    rows = [
        {
            "priority_rank": rank,
            "programme": PROGRAMME,
            "patient_id": f"P{accession}",
            "accession_number": accession,
            "study_date": DAY,
            "score": 0.9 - rank / 10,
            "flag": True,
            "model_name": "cxr_tb_reference",
            "model_version": "1.2.0",
        }
        for rank, accession in enumerate(accessions, start=1)
    ]
    return frame_of(rows, COORDINATOR_WORKLIST)


@pytest.fixture
def zone(tmp_path: Path) -> Zone:
    """A PHI zone holding one day's worklist, as the asset writes it."""
    root = tmp_path / "phi"
    xlsx = root / layout.worklist_path(BATCH, "xlsx")
    csv_path = root / layout.worklist_path(BATCH, "csv")
    export = export_frame(_worklist())
    write_xlsx(export, xlsx, WorklistAbout(PROGRAMME, DAY, ("m 1",), NOW))
    write_csv(export, csv_path)
    return Zone(root, xlsx, csv_path)


def _fill_xlsx(path: Path, rows: dict[int, tuple[object, ...]], target: Path | None = None) -> Path:
    """Fill review cells as a coordinator would: {sheet row: (status, reviewer, reviewed_at)}."""
    book = load_workbook(path)
    sheet = book["Worklist"]
    for row, values in rows.items():
        for column, value in zip((STATUS, REVIEWER, REVIEWED_AT, NOTE), values):
            sheet.cell(row=row, column=column).value = value  # None clears the cell
    book.save(target or path)
    return target or path


def _fill_csv(path: Path, statuses: dict[str, tuple[str, str, str]], delimiter: str = ",") -> None:
    """Fill the CSV as Excel in a Dutch locale saves it: a byte-order mark and semicolons."""
    with path.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    for row in rows:
        status, reviewer, at = statuses.get(row["accession_number"], ("", "", ""))
        row.update(review_status=status, reviewer=reviewer, reviewed_at=at)
    with path.open("w", newline="", encoding="utf-8-sig") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(EXPORT_COLUMNS), delimiter=delimiter)
        writer.writeheader()
        writer.writerows(rows)


def _decisions(zone: Zone) -> pl.DataFrame:
    return read_parquet(REVIEW_DECISIONS, zone.decisions).sort("accession_number")


def test_statuses_filled_in_the_xlsx_become_labels(zone: Zone) -> None:
    _fill_xlsx(
        zone.xlsx,
        {
            2: ("recalled", "dr. Visser", datetime(2024, 3, 13, 9, 30), "call on Monday"),
            3: ("Dismissed ", "dr. Visser", date(2024, 3, 13)),
            4: ("pending", "", None),
        },
    )
    done = import_reviews(zone.xlsx, zone.root, imported_at=NOW)
    assert (done.decisions, done.labels, done.positive, done.negative) == (3, 2, 1, 1)
    assert done.not_reviewed == 1 and done.kept == 0
    assert done.path == decisions_path(PROGRAMME, DAY)
    got = _decisions(zone)
    assert got["accession_number"].to_list() == ["A1", "A2", "A3"]  # A4 was left blank
    assert got["patient_id"].to_list() == ["PA1", "PA2", "PA3"]
    assert got["review_status"].to_list() == ["recalled", "dismissed", "pending"]
    assert got["label"].to_list() == [True, False, None]
    assert got["reviewer"].to_list() == ["dr. Visser", "dr. Visser", None]
    # A time without a zone is the importing machine's local time.
    assert got["reviewed_at"][0] == datetime(2024, 3, 13, 9, 30).astimezone(UTC)
    assert got["reviewed_at"][1] == datetime(2024, 3, 13).astimezone(UTC)
    assert set(got["source_file"]) == {"2024-03-12.xlsx"}
    assert set(got["imported_at"]) == {NOW}
    assert set(got["programme"]) == {PROGRAMME}


def test_an_unknown_status_names_its_row_and_writes_nothing(zone: Zone) -> None:
    _fill_xlsx(zone.xlsx, {2: ("recalled",), 4: ("positive",)})
    with pytest.raises(ReviewFileError, match=r"row 4 has review_status 'positive'; use one of"):
        import_reviews(zone.xlsx, zone.root)
    assert not zone.decisions.exists()


def test_a_failed_import_leaves_earlier_decisions_as_they_were(zone: Zone) -> None:
    _fill_xlsx(zone.xlsx, {2: ("recalled",)})
    import_reviews(zone.xlsx, zone.root, imported_at=NOW)
    before = zone.decisions.read_bytes()
    _fill_xlsx(zone.xlsx, {3: ("maybe",)})
    with pytest.raises(ReviewFileError, match="row 3"):
        import_reviews(zone.xlsx, zone.root)
    assert zone.decisions.read_bytes() == before


def test_a_row_not_on_the_worklist_is_refused(zone: Zone) -> None:
    _fill_xlsx(zone.xlsx, {2: ("recalled",)})
    book = load_workbook(zone.xlsx)
    book["Worklist"].append(
        ["9", PROGRAMME, "PX", "FOREIGN", DAY, 0.5, True, "m", "1", "dismissed", "", None, ""]
    )
    book.save(zone.xlsx)
    with pytest.raises(ReviewFileError, match=r"row 6 is not on the cxr_tb worklist of 2024-03-12"):
        import_reviews(zone.xlsx, zone.root)
    assert not zone.decisions.exists()


def test_a_row_whose_patient_moved_is_refused(zone: Zone) -> None:
    book = load_workbook(zone.xlsx)
    book["Worklist"]["C3"] = "PA3"  # as if one column had been sorted on its own
    book["Worklist"]["J3"] = "recalled"
    book.save(zone.xlsx)
    with pytest.raises(ReviewFileError, match="row 3 names another patient"):
        import_reviews(zone.xlsx, zone.root)
    assert not zone.decisions.exists()


def test_re_importing_the_same_file_replaces_its_decisions(zone: Zone) -> None:
    _fill_xlsx(zone.xlsx, {2: ("recalled",), 3: ("dismissed",)})
    import_reviews(zone.xlsx, zone.root, imported_at=NOW)
    first = _decisions(zone)
    import_reviews(zone.xlsx, zone.root, imported_at=NOW)
    assert _decisions(zone).equals(first)
    _fill_xlsx(zone.xlsx, {2: ("confirmed",), 3: (None,)})
    done = import_reviews(zone.xlsx, zone.root, imported_at=NOW)
    assert done.decisions == 1
    got = _decisions(zone)
    assert got.select("accession_number", "review_status", "label").rows() == [
        ("A1", "confirmed", True)
    ]


def test_decisions_for_studies_the_file_does_not_list_are_kept(zone: Zone) -> None:
    _fill_xlsx(zone.xlsx, {5: ("dismissed",)})
    import_reviews(zone.xlsx, zone.root, imported_at=NOW)
    # The day's worklist is rebuilt without A4 (a new model no longer flags it).
    export = export_frame(_worklist(("A1", "A2", "A3")))
    write_xlsx(export, zone.xlsx, WorklistAbout(PROGRAMME, DAY, ("m 2",), NOW))
    write_csv(export, zone.csv)
    _fill_xlsx(zone.xlsx, {2: ("recalled",)})
    done = import_reviews(zone.xlsx, zone.root, imported_at=NOW)
    assert done.kept == 1
    assert _decisions(zone)["accession_number"].to_list() == ["A1", "A4"]


def test_a_filled_csv_from_excel_imports_too(zone: Zone) -> None:
    _fill_csv(
        zone.csv,
        {"A2": ("recalled", "JV", "2024-03-13T10:00:00+01:00"), "A3": ("dismissed", "JV", "")},
        delimiter=";",
    )
    done = import_reviews(zone.csv, zone.root, imported_at=NOW)
    assert (done.decisions, done.positive, done.negative) == (2, 1, 1)
    got = _decisions(zone)
    assert got["label"].to_list() == [True, False]
    assert got["reviewed_at"][0] == datetime(2024, 3, 13, 9, 0, tzinfo=UTC)
    assert set(got["source_file"]) == {"2024-03-12.csv"}


@pytest.mark.parametrize(
    ("statuses", "message"),
    [
        ({"A1": ("recalled", "JV", "13/03/2024")}, "row 2 has reviewed_at '13/03/2024'"),
        ({"A2": ("", "JV", "")}, "row 3 has a reviewer or reviewed_at but no review_status"),
        ({}, "no row has a review_status"),
    ],
)
def test_csv_problems_are_refused_naming_the_row(
    zone: Zone, statuses: dict[str, tuple[str, str, str]], message: str
) -> None:
    _fill_csv(zone.csv, statuses)
    with pytest.raises(ReviewFileError, match=message):
        import_reviews(zone.csv, zone.root)
    assert not zone.decisions.exists()


def test_the_file_name_must_keep_the_worklist_date(zone: Zone, tmp_path: Path) -> None:
    renamed = _fill_xlsx(zone.xlsx, {2: ("recalled",)}, target=tmp_path / "filled in.xlsx")
    with pytest.raises(ReviewFileError, match="must start with its worklist's date"):
        read_filled_worklist(renamed)
    kept_name = _fill_xlsx(zone.xlsx, {2: ("recalled",)}, target=tmp_path / "2024-03-12 JV.xlsx")
    assert import_reviews(kept_name, zone.root).decisions == 1


def test_a_worklist_the_zone_does_not_hold_is_refused(zone: Zone, tmp_path: Path) -> None:
    other_day = _fill_xlsx(zone.xlsx, {2: ("recalled",)}, target=tmp_path / "2024-03-19.xlsx")
    with pytest.raises(ReviewFileError, match="no cxr_tb worklist of 2024-03-19"):
        import_reviews(other_day, zone.root)


def test_the_command_reports_counts_and_fails_on_bad_input(
    zone: Zone, capsys: pytest.CaptureFixture[str]
) -> None:
    _fill_xlsx(zone.xlsx, {2: ("recalled",), 3: ("pending",)})
    assert main(["import-reviews", str(zone.xlsx), "--phi-zone", str(zone.root)]) == 0
    out = capsys.readouterr().out
    assert "2 review decisions recorded, 1 of them labels (1 positive, 0 negative)" in out
    assert "2 rows not reviewed yet" in out
    _fill_xlsx(zone.xlsx, {3: ("unsure",)})
    assert main(["import-reviews", str(zone.xlsx), "--phi-zone", str(zone.root)]) == 2
    err = capsys.readouterr().err
    assert "row 3 has review_status 'unsure'" in err
    assert "PA" not in err  # no patient identifier in the message
    assert _decisions(zone)["review_status"].to_list() == ["recalled", "pending"]


def test_a_rebuilt_worklist_keeps_the_entries_already_made(zone: Zone) -> None:
    _fill_xlsx(zone.xlsx, {2: ("recalled", "JV", datetime(2024, 3, 13, 9, 0), "called")})
    _fill_csv(zone.csv, {"A2": ("dismissed", "AB", "2024-03-14")})
    entries = carried_entries([zone.xlsx, zone.csv], read_decisions(zone.decisions))
    export, carried = carry_over(
        export_frame(_worklist()), entries, read_decisions(zone.decisions), "w"
    )
    assert carried == 2
    assert export["review_status"].to_list() == ["recalled", "dismissed", None, None]
    assert export["review_note"].to_list() == ["called", None, None, None]
    assert export.columns == list(EXPORT_COLUMNS)


def test_a_rebuilt_worklist_refuses_to_drop_a_decision_never_imported(zone: Zone) -> None:
    _fill_xlsx(zone.xlsx, {5: ("recalled",)})
    smaller = export_frame(_worklist(("A1", "A2", "A3")))
    entries = carried_entries([zone.xlsx], read_decisions(zone.decisions))
    with pytest.raises(ReviewFileError, match="1 review decisions for studies this run no longer"):
        carry_over(smaller, entries, read_decisions(zone.decisions), "2024-03-12.xlsx")
    import_reviews(zone.xlsx, zone.root)
    recorded = read_decisions(zone.decisions)
    export, carried = carry_over(smaller, carried_entries([zone.xlsx], recorded), recorded, "w")
    assert carried == 0 and export.height == 3


def test_recorded_decisions_fill_a_worklist_whose_files_were_replaced(zone: Zone) -> None:
    _fill_xlsx(zone.xlsx, {3: ("dismissed", "JV")})
    import_reviews(zone.xlsx, zone.root)
    recorded = read_decisions(zone.decisions)
    export, carried = carry_over(
        export_frame(_worklist()), carried_entries([], recorded), recorded, "w"
    )
    assert carried == 1
    assert export["review_status"].to_list() == [None, "dismissed", None, None]
    assert export["reviewer"].to_list() == [None, "JV", None, None]


def test_an_empty_worklist_has_nothing_to_import_or_carry(tmp_path: Path) -> None:
    empty = export_frame(_worklist(()))
    path = tmp_path / "phi" / layout.worklist_path(BATCH, "xlsx")
    write_xlsx(empty, path, WorklistAbout(PROGRAMME, DAY, (), NOW))
    assert read_filled_worklist(path).programme is None
    with pytest.raises(ReviewFileError, match="no row has a review_status"):
        import_reviews(path, tmp_path / "phi")
    recorded = read_decisions(tmp_path / "none.parquet")
    export, carried = carry_over(empty, carried_entries([path], recorded), recorded, path.name)
    assert carried == 0 and export.is_empty()
