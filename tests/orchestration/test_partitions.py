from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from datetime import date, timedelta

from orchestration.partitions import study_dates

# What a code location loaded with the environment's settings offers: its first study date and
# the first key of the screening job's partitions.
_PROBE = textwrap.dedent(
    """
    from orchestration.definitions import defs

    partitions = defs.resolve_job_def("screening_pipeline").partitions_def
    keys = partitions.get_partition_keys()
    print(min(key.split("|")[0] for key in keys))
    """
)


def _load_code_location(first_study_date: str | None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "SCREENLAKE_FIRST_STUDY_DATE"}
    if first_study_date is not None:
        env["SCREENLAKE_FIRST_STUDY_DATE"] = first_study_date
    return subprocess.run(
        [sys.executable, "-c", _PROBE],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )


def test_unset_the_partitions_start_on_the_first_of_2024() -> None:
    if "SCREENLAKE_FIRST_STUDY_DATE" not in os.environ:
        assert study_dates.start.date() == date(2024, 1, 1)
    loaded = _load_code_location(None)
    assert loaded.returncode == 0, loaded.stderr
    assert loaded.stdout.strip() == "2024-01-01"


def test_the_code_location_starts_its_partitions_on_the_go_live_date() -> None:
    # Days before today: the partitions end with yesterday.
    go_live = (date.today() - timedelta(days=10)).isoformat()
    loaded = _load_code_location(go_live)
    assert loaded.returncode == 0, loaded.stderr
    assert loaded.stdout.strip() == go_live


def test_a_first_study_date_that_is_no_date_stops_the_code_location_loading() -> None:
    loaded = _load_code_location("2025-13-01")
    assert loaded.returncode != 0
    assert "ConfigurationError: SCREENLAKE_FIRST_STUDY_DATE must be a date" in loaded.stderr
    assert "'2025-13-01'" in loaded.stderr
