"""The report's view of the lake: a programme's nights by ordinal, and its tables by night.

The research zone names batches by keyed tokens and must never learn their real days. Whoever
holds the days (the asset, on the PHI side) orders the batch tokens by day and hands over only
that order: the report then says "night 3 of 12", never a date.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from screenlake.tables import TableSchema, polars_schema, read_parquet

NIGHT = "night"


@dataclass(frozen=True)
class Nights:
    """A programme's batches in day order: night n is the n-th batch (1-based)."""

    batch_ids: tuple[str, ...]

    def __post_init__(self) -> None:
        if len(set(self.batch_ids)) != len(self.batch_ids):
            raise ValueError("a batch can be only one night: the batch ids repeat")

    @classmethod
    def in_day_order(cls, batch_ids: Sequence[str]) -> Nights:
        """Nights from batch ids already sorted by their (unwritten) days."""
        return cls(tuple(batch_ids))

    @property
    def total(self) -> int:
        """How many nights the programme has."""
        return len(self.batch_ids)

    @property
    def latest(self) -> int | None:
        """The ordinal of the latest night; None before the first."""
        return self.total or None

    def ordinals(self) -> pl.DataFrame:
        """batch_id -> night, for joining a lake table's rows onto their night."""
        return pl.DataFrame(
            {"batch_id": list(self.batch_ids), NIGHT: list(range(1, self.total + 1))},
            schema={"batch_id": pl.String, NIGHT: pl.Int32},
        )


def empty_by_night(table: TableSchema) -> pl.DataFrame:
    """No rows of `table`, in the shape `read_nights` returns."""
    schema = polars_schema(table)
    return pl.DataFrame(
        schema={NIGHT: pl.Int32, **{c: t for c, t in schema.items() if c != "batch_id"}}
    )


def read_nights(folder: Path, table: TableSchema, nights: Nights) -> pl.DataFrame:
    """Every row of `table` in `folder` (one programme's Parquet files) that belongs to one of
    `nights`, with its night ordinal in place of its batch id. A missing folder is no rows yet;
    rows of batches that are not among `nights` are left out."""
    files = sorted(folder.glob("*.parquet")) if folder.is_dir() else []
    frames = [read_parquet(table, f) for f in files]
    if not frames or not nights.total:
        return empty_by_night(table)
    rows = pl.concat(frames, how="vertical_relaxed")
    joined = rows.join(nights.ordinals(), on="batch_id", how="inner")
    return joined.select(empty_by_night(table).columns).sort(NIGHT, maintain_order=True)
