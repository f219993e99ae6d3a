"""deploy/k8s checked by dagster-k8s itself: the Helm values render a valid K8sRunLauncher and run
queue, executor.yaml is valid k8s_job_executor config, and the step pods dagster-k8s builds from
them put the inference step, and only it, on a GPU node, with the Secrets the values name.

No cluster and no Helm: the helpers below do what the chart's templates do with the keys our
values use (helm/dagster/templates/helpers/instance/_run-launcher.tpl and _run-coordinator.tpl,
and the user-deployments subchart's "k8sContainerContext" helper), and refuse a key they do not
map, so that a new key in the values cannot go untested.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from pathlib import Path, PurePosixPath
from typing import Any

import dagster as dg
import pytest
import yaml

# The function dagster runs on instance and executor config (ConfigurableClassData.rehydrate,
# executor init); dagster has no public way to check config against a ConfigurableClass.
from dagster._config import process_config
from dagster_k8s import K8sRunLauncher, k8s_job_executor
from dagster_k8s.container_context import K8sContainerContext
from dagster_k8s.job import (
    UserDefinedDagsterK8sConfig,
    construct_dagster_k8s_job,
    get_user_defined_k8s_config,
)
from kubernetes.client import Configuration, V1Container, V1Job

from orchestration.definitions import definitions_for
from orchestration.routing import GPU_NODE_SELECTOR, GPU_RESOURCE, GPU_TOLERATIONS

K8S_DIR = Path(__file__).resolve().parents[2] / "deploy" / "k8s"
GPU_STEP, CPU_STEP = "instance_predictions", "deidentified_instances"
# What the chart derives for release "screenlake" in namespace "screenlake" (dagster.fullname),
# and its default DAGSTER_HOME.
NAMESPACE, FULLNAME, DAGSTER_HOME = "screenlake", "screenlake-dagster", "/opt/dagster/dagster_home"
# The executor's config keys that it hands to K8sContainerContext under the same name.
EXECUTOR_CONTEXT_FIELDS = (
    "image_pull_policy",
    "image_pull_secrets",
    "service_account_name",
    "env_config_maps",
    "env_secrets",
    "env_vars",
    "volume_mounts",
    "volumes",
    "labels",
    "resources",
    "scheduler_name",
    "security_context",
)
SECRET_WORDS = re.compile(r"KEY|SECRET|PASSWORD|TOKEN", re.IGNORECASE)
# A kubeconfig that K8sRunLauncher loads instead of the in-cluster account; nothing calls it.
KUBECONFIG = {
    "apiVersion": "v1",
    "kind": "Config",
    "clusters": [{"name": "none", "cluster": {"server": "https://127.0.0.1:1"}}],
    "users": [{"name": "none", "user": {}}],
    "contexts": [{"name": "none", "context": {"cluster": "none", "user": "none"}}],
    "current-context": "none",
}


def _names(refs: list[Mapping[str, str]] | None) -> list[str]:
    return [ref["name"] for ref in refs or [] if "name" in ref]


def _processed(config_type: Any, value: Mapping[str, Any]) -> dict[str, Any]:
    result = process_config(config_type, value)
    assert result.success, [error.message for error in result.errors or []]
    return dict(result.value or {})


def _code_location(values: Mapping[str, Any]) -> dict[str, Any]:
    (deployment,) = values["dagster-user-deployments"]["deployments"]
    return deployment


def run_launcher_config(values: Mapping[str, Any]) -> dict[str, Any]:
    """The instance's run_launcher config as _run-launcher.tpl renders it from `values`."""
    assert values["runLauncher"]["type"] == "K8sRunLauncher"
    launcher = values["runLauncher"]["config"]["k8sRunLauncher"]
    mapped = {"jobNamespace", "loadInclusterConfig", "imagePullPolicy", "envSecrets"}
    assert set(launcher) <= mapped | {"failPodOnRunFailure"}, "map the new keys here first"
    config = {
        "load_incluster_config": launcher["loadInclusterConfig"],
        "job_namespace": launcher.get("jobNamespace") or NAMESPACE,
        "image_pull_policy": launcher["imagePullPolicy"],
        "service_account_name": FULLNAME,
        "dagster_home": DAGSTER_HOME,
        "instance_config_map": f"{FULLNAME}-instance",
        "postgres_password_secret": values["global"]["postgresqlSecretName"],
    }
    if launcher.get("envSecrets"):
        config["env_secrets"] = _names(launcher["envSecrets"])
    if launcher.get("failPodOnRunFailure"):
        config["fail_pod_on_run_failure"] = True
    return config


def run_coordinator_config(values: Mapping[str, Any]) -> dict[str, Any]:
    """The instance's run_coordinator config as _run-coordinator.tpl renders it from `values`."""
    coordinator = values["dagsterDaemon"]["runCoordinator"]
    assert coordinator["enabled"] and coordinator["type"] == "QueuedRunCoordinator"
    queued = coordinator["config"]["queuedRunCoordinator"]
    assert set(queued) <= {"maxConcurrentRuns", "tagConcurrencyLimits"}, "map the new keys first"
    return {
        "max_concurrent_runs": queued["maxConcurrentRuns"],
        "tag_concurrency_limits": queued["tagConcurrencyLimits"],
    }


def code_location_context(deployment: Mapping[str, Any]) -> K8sContainerContext:
    """What the chart passes from the code location to its runs (includeConfigInLaunchedRuns),
    less the ConfigMap it makes of `env`, whose name these tests do not rely on."""
    assert deployment["includeConfigInLaunchedRuns"]["enabled"]
    outside = {"name", "image", "codeServerArgs", "port", "includeConfigInLaunchedRuns", "env"}
    mapped = {"envSecrets", "volumes", "volumeMounts"}
    assert set(deployment) <= outside | mapped, "map the new keys here first"
    assert isinstance(deployment["env"], dict)  # a list would go into the context as it stands
    k8s = {
        "image_pull_policy": deployment["image"]["pullPolicy"],
        "env_secrets": _names(deployment.get("envSecrets")),
        "volumes": deployment.get("volumes", []),
        "volume_mounts": deployment.get("volumeMounts", []),
        "namespace": NAMESPACE,
    }
    return K8sContainerContext.create_from_config({"k8s": k8s})


def executor_context(config: Mapping[str, Any]) -> K8sContainerContext:
    """The container context k8s_job_executor builds from its config (dagster_k8s/executor.py)."""
    return K8sContainerContext(
        **{name: config.get(name) for name in EXECUTOR_CONTEXT_FIELDS},
        namespace=config.get("job_namespace"),
        run_k8s_config=UserDefinedDagsterK8sConfig.from_dict(config.get("step_k8s_config", {})),
    )


@pytest.fixture(scope="module")
def values() -> dict[str, Any]:
    return yaml.safe_load((K8S_DIR / "values.yaml").read_text())


@pytest.fixture(scope="module")
def executor_config() -> dict[str, Any]:
    return _processed(
        k8s_job_executor.config_schema.config_type,
        yaml.safe_load((K8S_DIR / "executor.yaml").read_text()),
    )


@pytest.fixture(scope="module")
def launcher(
    values: dict[str, Any], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[K8sRunLauncher]:
    """The run launcher the chart configures, reaching the API through KUBECONFIG."""
    kubeconfig = tmp_path_factory.mktemp("kube") / "config"
    kubeconfig.write_text(yaml.safe_dump(KUBECONFIG))
    config = _processed(K8sRunLauncher.config_type(), run_launcher_config(values))
    # Loading a kubeconfig sets the kubernetes client's process-wide default: put it back after.
    previous = Configuration.get_default_copy()
    yield K8sRunLauncher(
        **{**config, "load_incluster_config": False, "kubeconfig_file": str(kubeconfig)}
    )
    Configuration.set_default(previous)


@pytest.fixture(scope="module")
def screening_job() -> dg.JobDefinition:
    return definitions_for("local", {}).resolve_job_def("screening_pipeline")


def step_pod(
    op_name: str,
    job: dg.JobDefinition,
    values: Mapping[str, Any],
    executor_config: Mapping[str, Any],
    launcher: K8sRunLauncher,
) -> tuple[V1Job, K8sContainerContext]:
    """The Job dagster-k8s launches for step `op_name`, with its context merged in the order of
    K8sStepHandler._get_container_context: the run's (launcher, then code location), the
    executor's, the step's tags, then the executor's per_step_k8s_config."""
    per_step = executor_config["per_step_k8s_config"].get(op_name, {})
    context = (
        K8sContainerContext.create_for_run(
            dg.DagsterRun(job_name=job.name), launcher, include_run_tags=False
        )
        .merge(code_location_context(_code_location(values)))
        .merge(executor_context(executor_config))
        .merge(
            K8sContainerContext(
                run_k8s_config=get_user_defined_k8s_config(job.graph.node_named(op_name).tags)
            )
        )
        .merge(K8sContainerContext(run_k8s_config=UserDefinedDagsterK8sConfig.from_dict(per_step)))
    )
    image = _code_location(values)["image"]
    job_config = context.get_k8s_job_config(None, launcher).with_image(
        f"{image['repository']}:{image['tag']}"
    )
    pod_job = construct_dagster_k8s_job(
        job_config,
        args=["dagster", "api", "execute_step"],
        job_name="dagster-step-test",
        component="step_worker",
        user_defined_k8s_config=context.run_k8s_config,
    )
    return pod_job, context


def _container(job: V1Job) -> V1Container:
    (container,) = job.spec.template.spec.containers
    return container


def _secret_refs(container: V1Container) -> set[str]:
    return {source.secret_ref.name for source in container.env_from or [] if source.secret_ref}


def test_run_launcher_values_are_valid_k8s_run_launcher_config(values: dict[str, Any]) -> None:
    config = _processed(K8sRunLauncher.config_type(), run_launcher_config(values))
    assert config["env_secrets"] == _names(_code_location(values)["envSecrets"])
    assert config["postgres_password_secret"] == "screenlake-postgresql"


def test_run_queue_values_are_valid_queued_run_coordinator_config(values: dict[str, Any]) -> None:
    config = _processed(dg.QueuedRunCoordinator.config_type(), run_coordinator_config(values))
    (limit,) = config["tag_concurrency_limits"]
    # The tag Dagster puts on runs of a multi-partition, one per dimension.
    assert limit["key"] == "dagster/partition/programme"
    assert limit["value"] == {"applyLimitPerUniqueValue": True}
    assert 0 < limit["limit"] < config["max_concurrent_runs"]
    daemon = values["dagsterDaemon"]
    assert daemon["runMonitoring"]["enabled"] and daemon["runRetries"]["enabled"]


def test_executor_file_agrees_with_the_values_and_the_job(
    values: dict[str, Any], executor_config: dict[str, Any], screening_job: dg.JobDefinition
) -> None:
    launcher = values["runLauncher"]["config"]["k8sRunLauncher"]
    deployment = _code_location(values)
    assert executor_config["job_namespace"] == launcher["jobNamespace"]
    assert executor_config["env_secrets"] == _names(launcher["envSecrets"])
    assert set(executor_config["per_step_k8s_config"]) <= {
        n.name for n in screening_job.graph.nodes
    }
    # The code location finds the file where the values mount its ConfigMap.
    path = PurePosixPath(deployment["env"]["SCREENLAKE_K8S_EXECUTOR_CONFIG"])
    (mount,) = deployment["volumeMounts"]
    (volume,) = deployment["volumes"]
    assert path.name == "executor.yaml" and path.parent == PurePosixPath(mount["mountPath"])
    assert mount["name"] == volume["name"] and volume["configMap"]["name"]


def test_inference_step_pod_gets_a_gpu_on_a_gpu_node_with_the_secrets(
    values: dict[str, Any],
    executor_config: dict[str, Any],
    launcher: K8sRunLauncher,
    screening_job: dg.JobDefinition,
) -> None:
    job, context = step_pod(GPU_STEP, screening_job, values, executor_config, launcher)
    container, pod = _container(job), job.spec.template.spec

    assert container.resources.limits[GPU_RESOURCE] == "1"
    assert container.resources.requests[GPU_RESOURCE] == "1"
    assert container.resources.limits["memory"] == "32Gi"  # per_step_k8s_config, merged on
    assert pod.node_selector == GPU_NODE_SELECTOR
    tolerations = [(t.key, t.operator, t.effect) for t in pod.tolerations]
    assert [(t["key"], t["operator"], t["effect"]) for t in GPU_TOLERATIONS] == tolerations
    assert {m.mount_path for m in container.volume_mounts} >= {"/dev/shm", "/etc/screenlake/k8s"}

    assert _secret_refs(container) == set(_names(_code_location(values)["envSecrets"]))
    (pg_password,) = [e for e in container.env if e.name == "DAGSTER_PG_PASSWORD"]
    assert pg_password.value is None
    assert pg_password.value_from.secret_key_ref.name == values["global"]["postgresqlSecretName"]
    assert context.namespace == NAMESPACE


def test_cpu_step_pod_gets_no_gpu_and_no_gpu_node(
    values: dict[str, Any],
    executor_config: dict[str, Any],
    launcher: K8sRunLauncher,
    screening_job: dg.JobDefinition,
) -> None:
    job, _ = step_pod(CPU_STEP, screening_job, values, executor_config, launcher)
    container, pod = _container(job), job.spec.template.spec

    assert GPU_RESOURCE not in container.resources.limits
    assert GPU_RESOURCE not in container.resources.requests
    assert container.resources.requests["cpu"] == "4"
    assert not set(pod.node_selector or {}) & set(GPU_NODE_SELECTOR)
    assert not [t for t in pod.tolerations or [] if t.key == GPU_RESOURCE]
    assert _secret_refs(container) == set(_names(_code_location(values)["envSecrets"]))


def _env(tree: Any) -> Iterator[tuple[str, Any]]:
    """Every environment variable set anywhere in `tree`, with what sets it."""
    if isinstance(tree, Mapping):
        for key, value in tree.items():
            if key == "env" and isinstance(value, Mapping):
                yield from value.items()
            elif key == "env" and isinstance(value, list):
                yield from ((entry["name"], entry) for entry in value)
            else:
                yield from _env(value)
    elif isinstance(tree, list):
        for item in tree:
            yield from _env(item)


def _keys(tree: Any) -> Iterator[tuple[str, Any]]:
    """Every key anywhere in `tree`, with its value."""
    if isinstance(tree, Mapping):
        for key, value in tree.items():
            yield key, value
            yield from _keys(value)
    elif isinstance(tree, list):
        for item in tree:
            yield from _keys(item)


def test_values_name_secrets_and_never_hold_one(values: dict[str, Any]) -> None:
    env = list(_env(values))
    assert ("SCREENLAKE_ENV", "production") in env
    # A mapping sets a literal; only a list entry with valueFrom.secretKeyRef reads a Secret.
    literal = [
        name
        for name, source in env
        if SECRET_WORDS.search(name)
        and not (isinstance(source, Mapping) and "secretKeyRef" in source.get("valueFrom", {}))
    ]
    assert literal == []
    # Nor the instance's Postgres password: the chart reads it from the Secret the values name
    # (generatePostgresqlPasswordSecret true would have it write one from these values).
    assert [
        k for k, v in _keys(values) if re.search("password|token", k, re.IGNORECASE) and v
    ] == []
    assert values["global"]["postgresqlSecretName"]
    secrets = [ref for key, refs in _keys(values) if key == "envSecrets" for ref in refs]
    assert secrets and all(set(ref) == {"name"} for ref in secrets)
