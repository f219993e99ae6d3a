"""The jobs, the nightly schedule, the export-drop sensor, the objection-register sensor and the
sensor that computes aggregates again after an erasure."""

# No `from __future__ import annotations`: Dagster reads the context and resource annotations.

from datetime import timedelta

import dagster as dg

from assets.ingest import SOURCE_SUMMARY, pacs_studies
from assets.monitoring import DriftWindow
from assets.performance import PerformanceWindows
from assets.privacy import SCREENING_JOB, erasure_job
from assets.reports import nights
from orchestration.partitions import partition_key, study_dates
from resources.secrets import PseudonymKey
from resources.sources import StudySource
from resources.zones import ZoneStore
from screenlake import layout
from screenlake.keys import keyed_token
from screenlake.objections import register_state
from screenlake.pacs.cursor import due_days
from screenlake.programmes import PROGRAMME_NAMES

screening_job = dg.define_asset_job(
    name=SCREENING_JOB,
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


def _listed_summary(instance: dg.DagsterInstance, key: dg.MultiPartitionKey) -> str | None:
    """The source summary the partition's latest `pacs_studies` materialisation listed against;
    None where it has none (never run, failed, or run before summaries were recorded)."""
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=pacs_studies.key, asset_partitions=[str(key)]), limit=1
    ).records
    materialization = records[0].asset_materialization if records else None
    value = materialization.metadata.get(SOURCE_SUMMARY) if materialization else None
    return None if value is None else str(value.value)


@dg.sensor(
    job=screening_job,
    minimum_interval_seconds=300,
    default_status=dg.DefaultSensorStatus.STOPPED,
)
def new_studies_sensor(context: dg.SensorEvaluationContext, source: StudySource) -> dg.SensorResult:
    """Launch each programme's run of a day whose studies that partition has not yet listed:
    its latest `pacs_studies` materialisation did not record the day's current source summary
    (counts and digests, no identifiers). The instance decides, so the first tick launches only
    what is new or changed; the cursor (each day's summary at the last look) only spares the
    look-up for days unchanged since then."""
    summaries = source.day_summaries()
    changed, cursor = due_days(summaries, context.cursor, first=study_dates.start.date())
    requests = []
    for day in changed:
        for programme in PROGRAMME_NAMES:
            key = partition_key(day, programme)
            listed = _listed_summary(context.instance, key)
            if listed == summaries[day]:
                continue
            # The key names the state the partition moves from as well as the one it moves to,
            # so a day that returns to an earlier state (a misplaced file removed) runs again,
            # while the same change seen on a later tick is deduplicated.
            requests.append(
                dg.RunRequest(
                    run_key=f"{day.isoformat()}|{programme}|{listed or ''}>{summaries[day]}",
                    partition_key=key,
                )
            )
    return dg.SensorResult(run_requests=requests, cursor=cursor)


@dg.sensor(
    job=erasure_job,
    minimum_interval_seconds=60,
    default_status=dg.DefaultSensorStatus.STOPPED,
)
def objection_register_sensor(
    context: dg.SensorEvaluationContext, phi_zone: ZoneStore
) -> dg.SensorResult:
    """Launch `patient_erasure` when the objection register has changed since the last look:
    which records it holds, by name only (nothing is decrypted or read here). The run carries
    out whatever erasure is not finished, and does nothing when a change asks for none."""
    state = register_state(phi_zone)
    if state == context.cursor:
        return dg.SensorResult(skip_reason="the objection register has not changed")
    if state.startswith("0:"):
        return dg.SensorResult(skip_reason="the objection register is empty", cursor=state)
    return dg.SensorResult(run_requests=[dg.RunRequest(run_key=state)], cursor=state)


@dg.run_status_sensor(
    run_status=dg.DagsterRunStatus.SUCCESS,
    monitored_jobs=[erasure_job],
    request_job=screening_job,
    default_status=dg.DefaultSensorStatus.STOPPED,
)
def erasure_recompute_sensor(
    context: dg.RunStatusSensorContext, research_zone: ZoneStore, pseudonym_key: PseudonymKey
) -> list[dg.RunRequest]:
    """After a `patient_erasure` run that erased, materialise again what counted the erased
    patients (`screenlake.erasure.recompute`): drift metrics, performance audits and the
    programme report of the partitions concerned, with their default windows. Found through
    the ledger rows of that run; the requests name no erasure and no run, only partitions."""
    from screenlake.erasure.ledger import read_ledger
    from screenlake.erasure.recompute import erased_batches, recomputations

    key = pseudonym_key.key()
    run_token = layout.research_run_id(key, context.dagster_run.run_id)
    ledger = read_ledger(research_zone.pull(layout.ERASURE_LEDGER_DIR))
    known = nights(context.instance)
    erased = erased_batches(ledger, run_token, known, key)
    plan = recomputations(
        erased, known, DriftWindow().reference_days, PerformanceWindows().horizon_days
    )
    return [
        dg.RunRequest(
            # Keyed, so that the key does not pair the erasure's run with the partition.
            run_key="R" + keyed_token(key, "recompute", f"{run_token}|{step.batch}", 15),
            partition_key=partition_key(step.batch.day, step.batch.programme),
            asset_selection=[dg.AssetKey(name) for name in step.assets],
        )
        for step in plan
    ]
