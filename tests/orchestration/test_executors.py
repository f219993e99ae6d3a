from __future__ import annotations

from pathlib import Path

import dagster as dg
import pytest

from orchestration.celery_settings import celery_executor_config, celery_worker_arguments
from orchestration.definitions import definitions_for
from orchestration.executors import executor_for
from screenlake.errors import ConfigurationError

BROKER = {"SCREENLAKE_CELERY_BROKER": "redis://:secret@127.0.0.1:6379/0"}


def test_the_default_is_dagsters_multiprocess_executor_on_a_forkserver() -> None:
    default = executor_for({})
    assert default.name == "multiprocess"
    assert executor_for({"SCREENLAKE_EXECUTOR": "multiprocess"}).name == "multiprocess"
    assert executor_for({"SCREENLAKE_EXECUTOR": "in_process"}) is dg.in_process_executor


def test_celery_reads_the_broker_by_name_at_run_time() -> None:
    config = celery_executor_config(BROKER)
    assert config["broker"] == {"env": "SCREENLAKE_CELERY_BROKER"}
    assert config["backend"] == {"env": "SCREENLAKE_CELERY_BROKER"}
    assert "secret" not in repr(config)
    # The worker gets the same Celery settings, resolved.
    worker = celery_worker_arguments(BROKER)
    assert worker["broker"] == BROKER["SCREENLAKE_CELERY_BROKER"]
    assert worker["config_source"] == config["config_source"]
    assert worker["config_source"]["task_acks_late"] is True


def test_celery_without_a_broker_is_refused_at_load() -> None:
    with pytest.raises(ConfigurationError, match="SCREENLAKE_CELERY_BROKER"):
        executor_for({"SCREENLAKE_EXECUTOR": "celery"})


def test_the_pipeline_job_runs_on_the_chosen_executor(tmp_path: Path) -> None:
    settings = {"SCREENLAKE_HOME": str(tmp_path), "SCREENLAKE_EXECUTOR": "celery", **BROKER}
    job = definitions_for("local", settings).resolve_job_def("screening_pipeline")
    assert job.executor_def.name == "celery"


def test_k8s_takes_its_config_from_the_file_named(tmp_path: Path) -> None:
    config = tmp_path / "executor.yaml"
    config.write_text("job_namespace: screenlake\nmax_concurrent: 4\n", encoding="utf-8")
    executor = executor_for(
        {"SCREENLAKE_EXECUTOR": "k8s", "SCREENLAKE_K8S_EXECUTOR_CONFIG": str(config)}
    )
    assert executor is not None and executor.name == "k8s"
    config.write_text("- not a mapping\n", encoding="utf-8")
    with pytest.raises(ConfigurationError, match="not a YAML mapping"):
        executor_for({"SCREENLAKE_EXECUTOR": "k8s", "SCREENLAKE_K8S_EXECUTOR_CONFIG": str(config)})


def test_an_unknown_executor_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="dask"):
        executor_for({"SCREENLAKE_EXECUTOR": "dask"})
