"""What the assets share: one batch's lake tables, UI previews, check results from rules."""

from __future__ import annotations

import dagster as dg
import polars as pl

from resources.lake import LakeDatabase
from resources.zones import ZoneStore
from screenlake import layout
from screenlake.quality import RuleOutcome
from screenlake.tables import TableSchema, read_parquet, write_parquet


def read_batch_table(
    research_zone: ZoneStore, table: TableSchema, batch: layout.Batch, key: bytes
) -> pl.DataFrame:
    """One batch's rows of a lake table."""
    return read_parquet(table, research_zone.path(layout.lake_table_path(table, batch, key)))


def write_batch_table(
    research_zone: ZoneStore,
    lake: LakeDatabase,
    frame: pl.DataFrame,
    table: TableSchema,
    batch: layout.Batch,
    key: bytes,
) -> int:
    """Replace one batch's rows of a lake table and refresh the lake's views; returns rows."""
    rows = write_parquet(
        frame, table, research_zone.path(layout.lake_table_path(table, batch, key))
    )
    lake.refresh_views()
    return rows


def markdown_preview(frame: pl.DataFrame, rows: int = 5) -> dg.MetadataValue:
    """The first rows of a research-zone frame as a Markdown table for the UI."""
    head = frame.head(rows)
    lines = [
        "| " + " | ".join(head.columns) + " |",
        "|" + "---|" * len(head.columns),
        *(
            "| " + " | ".join("" if v is None else str(v) for v in row) + " |"
            for row in head.iter_rows()
        ),
    ]
    return dg.MetadataValue.md("\n".join(lines))


def check_result(outcome: RuleOutcome) -> dg.AssetCheckResult:
    """A Dagster check result from a data-quality rule's outcome: summary, counts, examples."""
    return dg.AssetCheckResult(
        passed=outcome.passed,
        description=outcome.summary,
        metadata={**outcome.counts, "examples": dg.MetadataValue.json(outcome.examples)},
    )
