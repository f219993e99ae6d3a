from __future__ import annotations

import json
from datetime import date, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import dagster as dg

from orchestration.automation import new_studies_sensor, nightly_screening
from resources.sources import ExportDropSource
from screenlake.programmes import PROGRAMME_NAMES


def test_nightly_schedule_requests_yesterday_for_every_programme() -> None:
    when = datetime(2024, 3, 13, 2, 0, tzinfo=ZoneInfo("Europe/Amsterdam"))
    context = dg.build_schedule_context(scheduled_execution_time=when)
    requests = nightly_screening(context)
    assert sorted(r.partition_key for r in requests) == sorted(
        f"2024-03-12|{p}" for p in PROGRAMME_NAMES
    )


def test_sensor_launches_new_days_once_and_days_that_gained_files(tmp_path: Path) -> None:
    (tmp_path / "20240311").mkdir()
    (tmp_path / "20240312").mkdir()
    (tmp_path / "20240312" / "IM1.dcm").write_bytes(b"x")
    (tmp_path / "not-a-day").mkdir()
    source = ExportDropSource(root=str(tmp_path))
    with dg.build_sensor_context(resources={"source": source}) as context:
        first = new_studies_sensor(context)
    assert len(first.run_requests) == 2 * len(PROGRAMME_NAMES)
    assert json.loads(first.cursor) == {"2024-03-11": "files=0", "2024-03-12": "files=1"}

    with dg.build_sensor_context(resources={"source": source}, cursor=first.cursor) as context:
        assert new_studies_sensor(context).run_requests == []

    (tmp_path / "20240313").mkdir()
    (tmp_path / "20240312" / "IM2.dcm").write_bytes(b"x")
    with dg.build_sensor_context(resources={"source": source}, cursor=first.cursor) as context:
        second = new_studies_sensor(context)
    assert {r.partition_key for r in second.run_requests} == {
        f"{day}|{p}" for day in ("2024-03-12", "2024-03-13") for p in PROGRAMME_NAMES
    }
    assert len({r.run_key for r in first.run_requests + second.run_requests}) == 4 * len(
        PROGRAMME_NAMES
    )
    assert source.available_days()[-1] == date(2024, 3, 13)


def test_a_cursor_of_the_first_sensor_launches_nothing_twice(tmp_path: Path) -> None:
    (tmp_path / "20240311").mkdir()
    source = ExportDropSource(root=str(tmp_path))
    old_cursor = json.dumps(["2024-03-11"])
    with dg.build_sensor_context(resources={"source": source}, cursor=old_cursor) as context:
        assert new_studies_sensor(context).run_requests == []
