"""Steps as Celery tasks on Redis: the executor's settings, shared by the run worker that
sends steps and the Celery workers that run them (`orchestration.celery_worker`), so the two
cannot disagree.

Each step goes to the queue its `dagster-celery/queue` tag names (`orchestration.routing`):
`gpu` for inference, dagster-celery's default `dagster` for the rest. The broker URL, which may
hold a password, is read from SCREENLAKE_CELERY_BROKER at run time and never written down.

Workers run one step at a time in their own process (`--pool solo`): steps start processes
of their own (de-identification, the inference loader), which a prefork pool's daemonic
processes may not. A step is acknowledged only when it has finished (`task_acks_late`): if its
worker dies (killed, out of memory, the machine gone), the broker hands the step to another
worker of the queue, or to the same one restarted, once SCREENLAKE_CELERY_VISIBILITY_TIMEOUT
seconds have passed, which must therefore be longer than the longest step. Where a prefork pool
is used anyway, a pool process that dies puts its step straight back on the queue
(`task_reject_on_worker_lost`): dagster-celery 0.29 would otherwise wait forever for a task
that failed outside its step, leaving the run "started". Every step replaces what it writes,
so a step run twice leaves what one run leaves.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from screenlake.settings import number, required, text

BROKER_SETTING = "SCREENLAKE_CELERY_BROKER"
BACKEND_SETTING = "SCREENLAKE_CELERY_BACKEND"
VISIBILITY_TIMEOUT_SETTING = "SCREENLAKE_CELERY_VISIBILITY_TIMEOUT"
DEFAULT_VISIBILITY_TIMEOUT_S = 6 * 3600
_WHY_BROKER = "set it to the Redis broker's URL, e.g. redis://:password@redis.example.org:6379/0"


def celery_app_settings(settings: Mapping[str, str]) -> dict[str, Any]:
    """The Celery settings both sides use, on top of dagster-celery's defaults."""
    return {
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        "task_track_started": True,
        "broker_connection_retry_on_startup": True,
        # dagster-celery's own retry options, plus how long an unacknowledged step waits
        # before the broker gives it to another worker.
        "broker_transport_options": {
            "max_retries": 3,
            "interval_start": 0,
            "interval_step": 0.2,
            "interval_max": 0.5,
            "visibility_timeout": number(
                settings, VISIBILITY_TIMEOUT_SETTING, DEFAULT_VISIBILITY_TIMEOUT_S
            ),
        },
        "result_expires": 7 * 24 * 3600,
    }


def celery_executor_config(settings: Mapping[str, str]) -> dict[str, Any]:
    """The `celery_executor`'s config: broker and backend read from the environment by name
    when a run starts (so they never show in the UI), and the shared Celery settings."""
    required(settings, BROKER_SETTING, _WHY_BROKER)
    backend = BACKEND_SETTING if text(settings, BACKEND_SETTING) else BROKER_SETTING
    return {
        "broker": {"env": BROKER_SETTING},
        "backend": {"env": backend},
        "config_source": celery_app_settings(settings),
    }


def celery_worker_arguments(settings: Mapping[str, str]) -> dict[str, Any]:
    """The same settings resolved for a Celery worker's app: broker, backend, config."""
    broker = required(settings, BROKER_SETTING, _WHY_BROKER)
    return {
        "broker": broker,
        "backend": text(settings, BACKEND_SETTING) or broker,
        "config_source": celery_app_settings(settings),
    }
