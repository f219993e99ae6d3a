"""Reading the erasure ledger back: which rewrites of a lake file were erasures.

An erasure removes a patient's rows from a batch's table files and leaves every other row as it
was, so whatever a check found true of every row of the file it judged stays true of the file
after. Publication compares the digests its checks judged with the files there now
(`assets.validate`); the ledger tells it which differences are erasures and nothing else.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

from screenlake.tables import ERASURE_LEDGER, polars_schema, read_parquet


def read_ledger(folder: Path) -> pl.DataFrame:
    """Every erasure's ledger rows in a local copy of the ledger's folder (none when absent)."""
    files = sorted(folder.glob("*.parquet")) if folder.is_dir() else []
    frames = [read_parquet(ERASURE_LEDGER, path) for path in files]
    if not frames:
        return pl.DataFrame(schema=polars_schema(ERASURE_LEDGER))
    return pl.concat(frames)


def table_rewrites(ledger: pl.DataFrame, batch_id: str, table: str) -> dict[str, str]:
    """For one batch's file of `table`, each digest an erasure rewrote it from, to the digest
    it left."""
    rows = ledger.filter(
        (pl.col("batch_id") == batch_id)
        & (pl.col("zone") == "research")
        & (pl.col("artefact") == f"table {table}")
        & pl.col("sha256_after").is_not_null()
    )
    return dict(zip(rows["sha256_before"], rows["sha256_after"], strict=True))


def erased_only(judged: str, now: str, rewrites: dict[str, str]) -> bool:
    """Whether the file whose digest was `judged` became the file whose digest is `now` by
    erasures alone (or did not change)."""
    seen = {judged}
    digest = judged
    while digest != now and digest in rewrites:
        digest = rewrites[digest]
        if digest in seen:
            return False
        seen.add(digest)
    return digest == now
