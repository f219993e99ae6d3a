"""The job, the nightly schedule and the export-drop sensor."""

# No `from __future__ import annotations`: Dagster reads the context and resource annotations.

import json
from datetime import timedelta

import dagster as dg

from orchestration.partitions import partition_key, study_dates
from resources.sources import StudySource
from screenlake.programmes import PROGRAMME_NAMES

screening_job = dg.define_asset_job(
    name="screening_pipeline",
    selection=dg.AssetSelection.all(),
    description="Ingest, de-identify, catalogue, infer, validate and publish one day of one programme.",
)


@dg.schedule(
    job=screening_job,
    cron_schedule="0 2 * * *",
    execution_timezone="Europe/Amsterdam",
    default_status=dg.DefaultScheduleStatus.STOPPED,
)
def nightly_screening(context: dg.ScheduleEvaluationContext) -> list[dg.RunRequest]:
    """At 02:00, every programme's partition for yesterday's studies."""
    yesterday = (context.scheduled_execution_time - timedelta(days=1)).date()
    return [
        dg.RunRequest(
            run_key=f"{yesterday.isoformat()}|{p}", partition_key=partition_key(yesterday, p)
        )
        for p in PROGRAMME_NAMES
    ]


@dg.sensor(
    job=screening_job,
    minimum_interval_seconds=300,
    default_status=dg.DefaultSensorStatus.STOPPED,
)
def export_drop_sensor(context: dg.SensorEvaluationContext, source: StudySource) -> dg.SensorResult:
    """Launch every programme's run for each day that newly appears in the source."""
    seen = set(json.loads(context.cursor)) if context.cursor else set()
    first = study_dates.start.date()
    new_days = [d for d in source.available_days() if d.isoformat() not in seen and d >= first]
    requests = [
        dg.RunRequest(run_key=f"{day.isoformat()}|{p}", partition_key=partition_key(day, p))
        for day in new_days
        for p in PROGRAMME_NAMES
    ]
    cursor = json.dumps(sorted(seen | {d.isoformat() for d in new_days}))
    return dg.SensorResult(run_requests=requests, cursor=cursor)
