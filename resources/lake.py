"""The lake's DuckDB database, beside the Parquet tables it gives views over."""

from __future__ import annotations

from pathlib import Path

from dagster_duckdb import DuckDBResource

from screenlake.lake import refresh_views


class LakeDatabase(DuckDBResource):
    """DuckDB over the research zone's Parquet; connections retry while another run holds it."""

    lake_root: str

    def refresh_views(self) -> list[str]:
        """Recreate the lake's views so that new tables and batches show; returns their names."""
        with self.get_connection() as con:
            return refresh_views(con, Path(self.lake_root).resolve())
