"""The coordinators' worklist: flagged studies re-identified through the vault, by priority.

It names real patients so that they can be recalled, so it is written to the PHI zone only.
"""

from __future__ import annotations

import csv
import os
import tempfile
from pathlib import Path

import polars as pl

from screenlake.reidentify import reidentify_flagged
from screenlake.tables import COORDINATOR_WORKLIST, conform


def coordinator_worklist(findings: pl.DataFrame, vault: pl.DataFrame) -> pl.DataFrame:
    """Flagged findings joined to the vault, ordered by priority; raises if a study is unknown."""
    frame = reidentify_flagged(findings, vault).select(
        "priority_rank",
        "programme",
        "patient_id",
        "accession_number",
        pl.col("original_study_date").alias("study_date"),
        "score",
        "flag",
        "model_name",
        "model_version",
    )
    return pl.from_arrow(conform(frame, COORDINATOR_WORKLIST))  # type: ignore[return-value]


def write_csv(frame: pl.DataFrame, path: Path) -> None:
    """Write a PHI-zone table as CSV atomically, scores rounded for reading."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    with os.fdopen(fd, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(frame.columns)
        for row in frame.iter_rows():
            writer.writerow(
                [f"{v:.4f}" if isinstance(v, float) else ("" if v is None else v) for v in row]
            )
    os.replace(tmp, path)
