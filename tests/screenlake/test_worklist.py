from __future__ import annotations

import csv
from datetime import date
from pathlib import Path

import polars as pl
import pytest

from screenlake.errors import VaultError
from screenlake.worklist import coordinator_worklist, write_csv


def _findings() -> pl.DataFrame:
    return pl.DataFrame(
        {
            "study_instance_uid": ["2.25.1", "2.25.2", "2.25.3", "2.25.4"],
            "programme": ["cxr_tb"] * 4,
            "score": [0.95, 0.10, 0.71, None],
            "flag": [True, False, True, None],
            "priority_rank": [1, 3, 2, 4],
            "model_name": ["m"] * 4,
            "model_version": ["1.0.0"] * 4,
        }
    )


def _vault() -> pl.DataFrame:
    return pl.DataFrame(
        {
            "study_instance_uid": ["2.25.1", "2.25.2", "2.25.3", "2.25.4"],
            "patient_id": ["111", "222", "333", "444"],
            "accession_number": ["A1", "A2", "A3", "A4"],
            "original_study_instance_uid": ["1.2.1", "1.2.2", "1.2.3", "1.2.4"],
            "original_study_date": [date(2024, 3, 12)] * 4,
        }
    )


def test_flagged_studies_re_identified_in_priority_order(tmp_path: Path) -> None:
    worklist = coordinator_worklist(_findings(), _vault())
    assert worklist["patient_id"].to_list() == ["111", "333"]
    assert worklist["priority_rank"].to_list() == [1, 2]
    path = tmp_path / "w" / "2024-03-12.csv"
    write_csv(worklist, path)
    rows = list(csv.DictReader(path.open()))
    assert [r["accession_number"] for r in rows] == ["A1", "A3"]
    assert rows[0]["score"] == "0.9500" and rows[0]["study_date"] == "2024-03-12"


def test_a_flagged_study_missing_from_the_vault_is_an_error() -> None:
    with pytest.raises(VaultError, match="1 flagged studies have no vault entry"):
        coordinator_worklist(_findings(), _vault().filter(pl.col("patient_id") != "333"))
