from __future__ import annotations

import json
import os
import time
from datetime import date, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import dagster as dg

from assets.ingest import SOURCE_SUMMARY, pacs_studies
from orchestration.automation import new_studies_sensor, nightly_screening
from orchestration.partitions import partition_key
from orchestration.resources import resources_for
from resources.sources import ExportDropSource, StudySource
from screenlake.programmes import PROGRAMME_NAMES

D1, D2, D3 = date(2024, 3, 11), date(2024, 3, 12), date(2024, 3, 13)
HOUR_NS = 3600 * 10**9


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
    source = ExportDropSource(root=str(tmp_path), settle_seconds=0)
    instance = dg.DagsterInstance.ephemeral()
    first = _tick(source, instance)
    assert len(first.run_requests or []) == 2 * len(PROGRAMME_NAMES)
    assert json.loads(first.cursor or "") == {
        d.isoformat(): s for d, s in source.day_summaries().items()
    }

    assert _tick(source, instance, first.cursor).run_requests == []

    (tmp_path / "20240313").mkdir()
    (tmp_path / "20240312" / "IM2.dcm").write_bytes(b"x")
    second = _tick(source, instance, first.cursor)
    assert _requested(second) == _partitions(D2, D3)
    requests = [*(first.run_requests or []), *(second.run_requests or [])]
    assert len({r.run_key for r in requests}) == 4 * len(PROGRAMME_NAMES)
    assert source.available_days()[-1] == date(2024, 3, 13)


def test_a_cursor_of_the_first_sensor_launches_nothing_twice(tmp_path: Path) -> None:
    (tmp_path / "20240311").mkdir()
    source = ExportDropSource(root=str(tmp_path), settle_seconds=0)
    old_cursor = json.dumps(["2024-03-11"])
    with dg.build_sensor_context(
        resources={"source": source}, cursor=old_cursor, instance=dg.DagsterInstance.ephemeral()
    ) as context:
        assert new_studies_sensor(context).run_requests == []


def _put(path: Path, content: bytes, mtime_ns: int) -> None:
    """A drop file as a finished export leaves it: written and left alone since `mtime_ns`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    os.utime(path, ns=(mtime_ns, mtime_ns))


def _tick(
    source: StudySource, instance: dg.DagsterInstance, cursor: str | None = None
) -> dg.SensorResult:
    with dg.build_sensor_context(
        resources={"source": source}, instance=instance, cursor=cursor
    ) as context:
        return new_studies_sensor(context)


def _requested(result: dg.SensorResult) -> set[str]:
    return {str(r.partition_key) for r in result.run_requests or []}


def _partitions(*days: date, programmes: tuple[str, ...] = PROGRAMME_NAMES) -> set[str]:
    return {str(partition_key(d, p)) for d in days for p in programmes}


def _list(
    resources: dict[str, Any], instance: dg.DagsterInstance, day: date, programme: str
) -> None:
    result = dg.materialize(
        [pacs_studies],
        resources=resources,
        partition_key=partition_key(day, programme),
        instance=instance,
    )
    assert result.success


def test_the_first_tick_launches_only_what_no_run_has_listed_then_a_changed_day(
    tmp_path: Path, session_keys: dict[str, str]
) -> None:
    settled = time.time_ns() - 2 * HOUR_NS  # older than the drop's settle interval
    for day in ("20240311", "20240312", "20240313"):
        _put(tmp_path / "drop" / day / "IM1.dcm", b"not dicom", settled)
    resources = resources_for(
        "local",
        {
            "SCREENLAKE_DROP": str(tmp_path / "drop"),
            "SCREENLAKE_PHI_ZONE": str(tmp_path / "phi"),
            "SCREENLAKE_RESEARCH_ZONE": str(tmp_path / "research"),
        },
    )
    source, instance = resources["source"], dg.DagsterInstance.ephemeral()
    for day in (D1, D2):
        for programme in PROGRAMME_NAMES:
            _list(resources, instance, day, programme)
    listed = instance.fetch_materializations(pacs_studies.key, limit=1).records[0]
    assert listed.asset_materialization is not None
    assert listed.asset_materialization.metadata[SOURCE_SUMMARY].value == source.day_summary(D2)

    first = _tick(source, instance)  # a sensor just turned on: no cursor
    assert _requested(first) == _partitions(D3)

    # A file of an old day re-exported with other bytes: the count stays, the day is due again.
    _put(tmp_path / "drop" / "20240311" / "IM1.dcm", b"other bytes", settled + 1)
    assert _requested(_tick(source, instance, first.cursor)) == _partitions(D1)
    assert _requested(_tick(source, instance)) == _partitions(D1, D3)

    # Only the partitions that have not listed the new state are launched.
    _list(resources, instance, D1, PROGRAMME_NAMES[0])
    again = _tick(source, instance)
    assert _requested(again) == _partitions(D3) | _partitions(D1, programmes=PROGRAMME_NAMES[1:])
    assert _requested(_tick(source, instance, again.cursor)) == set()


def test_a_day_back_in_an_earlier_state_is_launched_under_a_new_run_key(
    tmp_path: Path, session_keys: dict[str, str]
) -> None:
    settled = time.time_ns() - 2 * HOUR_NS
    drop = tmp_path / "drop"
    _put(drop / "20240311" / "IM1.dcm", b"not dicom", settled)
    resources = resources_for(
        "local",
        {
            "SCREENLAKE_DROP": str(drop),
            "SCREENLAKE_PHI_ZONE": str(tmp_path / "phi"),
            "SCREENLAKE_RESEARCH_ZONE": str(tmp_path / "research"),
        },
    )
    source, instance = resources["source"], dg.DagsterInstance.ephemeral()
    programme = PROGRAMME_NAMES[0]
    keys: set[str] = set()
    for state in ("first", "misplaced file added", "misplaced file removed"):
        if state == "misplaced file added":
            _put(drop / "20240311" / "IM2.dcm", b"another day's file", settled)
        if state == "misplaced file removed":
            (drop / "20240311" / "IM2.dcm").unlink()
        requests = [
            r
            for r in _tick(source, instance).run_requests or []
            if programme in str(r.partition_key)
        ]
        assert len(requests) == 1, state
        assert requests[0].run_key not in keys, state
        keys.add(str(requests[0].run_key))
        _list(resources, instance, D1, programme)
