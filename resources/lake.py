"""The lake's DuckDB database, beside the Parquet tables it gives views over."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import duckdb
from dagster_duckdb import DuckDBResource

from resources.zones import ZoneStore
from screenlake import layout
from screenlake.lake import refresh_views, use_lake

_SECRET = "screenlake_research_zone"


class LakeDatabase(DuckDBResource):
    """DuckDB over the research zone's Parquet; connections retry while another run holds it.

    On a research zone in object storage, every connection loads httpfs and gets a temporary
    secret from the zone's own credentials, so the views read the Parquet where it lies.
    """

    research_zone: ZoneStore

    def lake_root(self) -> str:
        """Where the lake's tables lie: `s3://bucket/prefix/lake` or a local folder."""
        return self.research_zone.uri(layout.LAKE_DIR)

    @contextmanager
    def lake_connection(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """A connection that can read the lake's tables, wherever the zone is."""
        with self.get_connection() as con:
            if self.research_zone.is_remote:
                from screenlake.objectstore.duckdb_s3 import create_s3_secret, load_httpfs

                zone = self.research_zone
                load_httpfs(con)
                create_s3_secret(con, zone.access(), zone.location(), _SECRET)
            else:
                use_lake(con, self.lake_root())
            yield con

    def refresh_views(self) -> list[str]:
        """Recreate the lake's views so that new tables and batches show; returns their names."""
        with self.lake_connection() as con:
            return refresh_views(con, self.lake_root())
