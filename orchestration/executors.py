"""The one switch that picks how a run's steps execute: SCREENLAKE_EXECUTOR.

- `multiprocess` (default): Dagster's own executor, each step in a process beside the run,
  forked from a server that has imported Dagster and the code location once per run.
- `in_process`: every step in the run's process (a small site, a test, a debugger).
- `celery`: steps as Celery tasks on the queues their tags name (`orchestration.celery_settings`).
- `k8s`: each step in its own Kubernetes pod (`k8s_job_executor`), configured by the YAML
  file SCREENLAKE_K8S_EXECUTOR_CONFIG names (see deploy/k8s/executor.yaml).

dagster-celery and dagster-k8s are imported only when chosen: the code location stays fast.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import dagster as dg

from screenlake.errors import ConfigurationError
from screenlake.settings import text

EXECUTOR_SETTING = "SCREENLAKE_EXECUTOR"
K8S_EXECUTOR_CONFIG_SETTING = "SCREENLAKE_K8S_EXECUTOR_CONFIG"
EXECUTORS = ("multiprocess", "in_process", "celery", "k8s")
# What each step process would otherwise import again (1 to 3 s a step): imported once per run
# by the forkserver its step processes fork from. Torch and Great Expectations stay out: only
# the steps that need them import them.
FORKSERVER_PRELOAD = ("dagster", "orchestration.definitions")


def executor_for(settings: Mapping[str, str]) -> dg.ExecutorDefinition:
    """The executor SCREENLAKE_EXECUTOR names (multiprocess when none is named)."""
    kind = (text(settings, EXECUTOR_SETTING) or "multiprocess").lower()
    if kind == "multiprocess":
        return dg.multiprocess_executor.configured(
            {"start_method": {"forkserver": {"preload_modules": list(FORKSERVER_PRELOAD)}}},
            name="multiprocess",
        )
    if kind == "in_process":
        return dg.in_process_executor
    if kind == "celery":
        from dagster_celery import celery_executor

        from orchestration.celery_settings import celery_executor_config

        return celery_executor.configured(celery_executor_config(settings), name="celery")
    if kind == "k8s":
        from dagster_k8s import k8s_job_executor

        config_file = text(settings, K8S_EXECUTOR_CONFIG_SETTING)
        if not config_file:
            return k8s_job_executor
        return k8s_job_executor.configured(_yaml_mapping(Path(config_file)), name="k8s")
    raise ConfigurationError(
        f"{EXECUTOR_SETTING}={kind!r} is not a known executor; use one of {', '.join(EXECUTORS)}"
    )


def _yaml_mapping(path: Path) -> dict:
    import yaml

    try:
        loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise ConfigurationError(
            f"{K8S_EXECUTOR_CONFIG_SETTING}: cannot read {path} ({error.strerror})"
        ) from None
    if not isinstance(loaded, dict):
        raise ConfigurationError(f"{K8S_EXECUTOR_CONFIG_SETTING}: {path} is not a YAML mapping")
    return loaded
