"""Reading the lake's tables: a missing batch file is reported without its name."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest

from screenlake import layout
from screenlake.tables import INSTANCE_CATALOG, read_parquet


def test_a_missing_batch_file_is_reported_without_its_batch_token(tmp_path: Path) -> None:
    key = b"test-key-for-the-lake-tables-0123456789"
    batch = layout.Batch(date(2024, 3, 11), "cxr_tb")
    path = tmp_path / layout.lake_table_path(INSTANCE_CATALOG, batch, key)
    with pytest.raises(FileNotFoundError, match="instance_catalog has not been written") as error:
        read_parquet(INSTANCE_CATALOG, path)
    # Dagster shows a step's error beside the partition's real date.
    assert batch.research_id(key) not in str(error.value)
