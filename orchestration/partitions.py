"""Partitions: study date (daily) x screening programme (static)."""

from __future__ import annotations

import os
import warnings
from datetime import date

import dagster as dg

from screenlake.layout import Batch
from screenlake.programmes import PROGRAMME_NAMES
from screenlake.settings import first_study_date

# Checks are evaluated per partition, which Dagster 1.13 still calls a preview; we rely on it
# knowingly (pinned release), so its warning would only hide the warnings that matter.
warnings.filterwarnings(
    "ignore", message="Specifying a partitions_def on an AssetCheckSpec", category=dg.PreviewWarning
)

# Read when the code location loads: partitions are part of the definitions, not of a run. Every
# day from here on is a partition the UI counts (and offers to backfill), so a deployment sets
# its go-live date (SCREENLAKE_FIRST_STUDY_DATE).
FIRST_STUDY_DATE = first_study_date(os.environ).isoformat()

study_dates = dg.DailyPartitionsDefinition(start_date=FIRST_STUDY_DATE)
programmes = dg.StaticPartitionsDefinition(list(PROGRAMME_NAMES))
screening_partitions = dg.MultiPartitionsDefinition({"date": study_dates, "programme": programmes})


def batch_of(context: dg.AssetExecutionContext | dg.AssetCheckExecutionContext) -> Batch:
    """The batch (day and programme) of the partition a run is materialising."""
    key = context.partition_key
    if isinstance(key, dg.MultiPartitionKey):
        keys = key.keys_by_dimension
    else:
        # The string form orders dimensions by name: "date|programme".
        keys = dict(zip(("date", "programme"), key.split("|"), strict=True))
    return Batch(day=date.fromisoformat(keys["date"]), programme=keys["programme"])


def partition_key(day: date, programme: str) -> dg.MultiPartitionKey:
    """The partition key of one day's studies of one programme."""
    return dg.MultiPartitionKey({"date": day.isoformat(), "programme": programme})
