"""The Celery app a screenlake worker runs:
`celery -A orchestration.celery_worker worker --pool solo -Q gpu` (or `make worker QUEUE=gpu`).
Built from the same settings as the run's executor
(`orchestration.celery_settings`); the worker needs the code, the settings, the broker, PostgreSQL
(through the Dagster instance the run hands over) and the zones, never another worker's disk."""

from __future__ import annotations

import logging
import os

from celery.signals import after_setup_logger
from dagster_celery.executor import CeleryExecutor
from dagster_celery.make_app import make_app
from dagster_celery.tasks import create_task

from orchestration.celery_settings import celery_worker_arguments

app = make_app(CeleryExecutor.for_cli(**celery_worker_arguments(os.environ)).app_args())
execute_plan = create_task(app)


@after_setup_logger.connect
def _no_step_events_in_the_log(**_: object) -> None:
    """Celery logs a task's return value on success: for a step, every event it emitted. The
    events are in the Dagster instance already; the worker's log keeps task names, ids and
    failures."""
    logging.getLogger("celery.app.trace").setLevel(logging.WARNING)
