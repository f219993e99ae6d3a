"""The lake's DuckDB views: one base view per research table over its Parquet files, and the
analysts' views defined in `sql/views/*.sql`.

Base views over a local lake glob the table's folder relative to DuckDB's `file_search_path`,
set to the lake's root on every connection, so the database file stays valid wherever the lake
is mounted. Over a lake in object storage they name `s3://` paths: the connection needs httpfs
and a secret for the location (`screenlake.objectstore.duckdb_s3`).
"""

from __future__ import annotations

from pathlib import Path

import duckdb
import polars as pl

from screenlake.objectstore.location import is_s3_uri
from screenlake.tables import (
    AUDIT_TRAIL,
    DEIDENTIFICATION_AUDIT,
    DRIFT_METRICS,
    ERASURE_LEDGER,
    INSTANCE_CATALOG,
    INSTANCE_PREDICTIONS,
    PERFORMANCE_AUDIT,
    SERIES_CATALOG,
    STUDY_CATALOG,
    STUDY_FINDINGS,
    VALIDATED_FINDINGS,
    TableSchema,
)
from sql import sql_root

# The tables each partition's run writes, a file per batch.
PARTITION_TABLES: tuple[TableSchema, ...] = (
    DEIDENTIFICATION_AUDIT,
    INSTANCE_CATALOG,
    SERIES_CATALOG,
    STUDY_CATALOG,
    INSTANCE_PREDICTIONS,
    STUDY_FINDINGS,
    VALIDATED_FINDINGS,
    DRIFT_METRICS,
    PERFORMANCE_AUDIT,
    AUDIT_TRAIL,
)
# Every table of the lake, a view each: the partitions' and the erasure ledger (a file per
# erasure).
LAKE_TABLES: tuple[TableSchema, ...] = (*PARTITION_TABLES, ERASURE_LEDGER)
SQL_DIR = sql_root()


def use_lake(con: duckdb.DuckDBPyConnection, lake_root: Path | str) -> None:
    """Point a connection's relative Parquet paths at a local `lake_root`."""
    con.execute("SET file_search_path = ?", [str(lake_root)])


def _table_glob(lake_root: Path | str, table: TableSchema) -> tuple[str, str]:
    """The pattern a view reads and the absolute pattern that finds whether files exist."""
    if is_s3_uri(str(lake_root)):
        absolute = f"{str(lake_root).rstrip('/')}/{table.name}/*/*.parquet"
        return absolute, absolute
    return f"{table.name}/*/*.parquet", str(Path(lake_root) / table.name / "*" / "*.parquet")


def _drop_relation(con: duckdb.DuckDBPyConnection, name: str) -> None:
    kinds = con.execute(
        "SELECT table_type FROM information_schema.tables WHERE table_name = ?", [name]
    ).fetchall()
    for (kind,) in kinds:
        # Identifiers cannot be bound as parameters; `name` comes from the schemas in code.
        con.execute(f'DROP {"VIEW" if kind == "VIEW" else "TABLE"} "{name}"')


def refresh_views(
    con: duckdb.DuckDBPyConnection, lake_root: Path | str, sql_dir: Path = SQL_DIR
) -> list[str]:
    """(Re)create every base view and analyst view; returns the names created.

    A table with no Parquet file yet becomes an empty table of the right types, so that the
    analyst views over it still bind.
    """
    if not is_s3_uri(str(lake_root)):
        use_lake(con, lake_root)
    created = []
    for table in LAKE_TABLES:
        _drop_relation(con, table.name)
        pattern, probe = _table_glob(lake_root, table)
        if con.execute("SELECT count(*) FROM glob(?)", [probe]).fetchone() != (0,):
            con.execute(
                f'CREATE VIEW "{table.name}" AS SELECT * FROM read_parquet('
                f"'{pattern}', hive_partitioning = false, union_by_name = true)"
            )
        else:
            empty = table.schema.empty_table()
            con.register("_screenlake_empty", empty)
            con.execute(f'CREATE TABLE "{table.name}" AS SELECT * FROM _screenlake_empty')
            con.unregister("_screenlake_empty")
        created.append(table.name)
    for path in sorted((sql_dir / "views").glob("*.sql")):
        con.execute(path.read_text(encoding="utf-8"))
        created.append(path.stem)
    return created


def query(
    con: duckdb.DuckDBPyConnection, sql: str, parameters: list[object] | None = None
) -> pl.DataFrame:
    """Run one SQL statement with bound parameters and return its rows."""
    frame = pl.from_arrow(con.sql(sql, params=parameters or None).to_arrow_table())
    assert isinstance(frame, pl.DataFrame)
    return frame


def load_sql(name: str, sql_dir: Path = SQL_DIR) -> str:
    """The text of `sql/<name>.sql`, for queries run with bound parameters."""
    path = sql_dir / f"{name}.sql"
    if not path.exists():
        raise FileNotFoundError(f"no SQL file {name}.sql in {sql_dir.name}/")
    return path.read_text(encoding="utf-8")
