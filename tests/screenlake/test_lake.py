from __future__ import annotations

from pathlib import Path

import duckdb
import polars as pl

from screenlake.lake import LAKE_TABLES, SQL_DIR, load_sql, query, refresh_views, use_lake


def test_views_bind_on_an_empty_lake_and_see_new_parquet(tmp_path: Path) -> None:
    lake = tmp_path / "lake"
    lake.mkdir()
    database = tmp_path / "lake.duckdb"
    with duckdb.connect(str(database)) as con:
        created = refresh_views(con, lake)
        assert {t.name for t in LAKE_TABLES} <= set(created)
        analyst_views = {p.stem for p in (SQL_DIR / "views").glob("*.sql")}
        assert analyst_views <= set(created)
        assert query(con, "SELECT count(*) AS n FROM flagged_studies")["n"][0] == 0

    audit = tmp_path / "lake" / "deidentification_audit" / "programme=cxr_tb"
    audit.mkdir(parents=True)
    pl.DataFrame(
        {
            "programme": ["cxr_tb"] * 3,
            "batch_id": ["B1"] * 3,
            "outcome": ["deidentified", "deidentified", "quarantined"],
            "reason": [None, None, "empty file (0 bytes)"],
        }
    ).write_parquet(audit / "B1.parquet")
    with duckdb.connect(str(database)) as con:
        refresh_views(con, lake)
    # A fresh connection only needs the lake's root to read the stored views.
    with duckdb.connect(str(database)) as con:
        use_lake(con, lake)
        reasons = query(
            con, "SELECT reason, files FROM quarantine_reasons WHERE programme = ?", ["cxr_tb"]
        )
    assert reasons.rows() == [("empty file (0 bytes)", 1)]


def test_missing_sql_file_is_named(tmp_path: Path) -> None:
    try:
        load_sql("no_such_query", tmp_path)
    except FileNotFoundError as error:
        assert "no_such_query.sql" in str(error)
    else:
        raise AssertionError("expected FileNotFoundError")
