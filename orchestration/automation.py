"""The job, the nightly schedule and the export-drop sensor."""

# No `from __future__ import annotations`: Dagster reads the context and resource annotations.

from datetime import timedelta

import dagster as dg

from orchestration.partitions import partition_key, study_dates
from resources.sources import StudySource
from screenlake.pacs.cursor import due_days
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
def new_studies_sensor(context: dg.SensorEvaluationContext, source: StudySource) -> dg.SensorResult:
    """Launch every programme's run for each day that is new in the source or gained studies
    or files since the last look (the cursor holds a count summary per day, no identifiers)."""
    summaries = source.day_summaries()
    due, cursor = due_days(summaries, context.cursor, first=study_dates.start.date())
    requests = [
        dg.RunRequest(
            run_key=f"{day.isoformat()}|{programme}|{summaries[day]}",
            partition_key=partition_key(day, programme),
        )
        for day in due
        for programme in PROGRAMME_NAMES
    ]
    return dg.SensorResult(run_requests=requests, cursor=cursor)
