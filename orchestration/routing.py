"""Where steps run: the step tags that send the inference step to GPU workers.

Routing is configuration that the executors read, never a code path of ours: dagster-celery
sends a step to the queue its `dagster-celery/queue` tag names (the CPU steps go to
dagster-celery's default queue, `dagster`), and dagster-k8s's `k8s_job_executor` builds a
step's pod from its `dagster-k8s/config` tag, merged with the executor's `step_k8s_config`
and then its `per_step_k8s_config`, so a site changes the node selector or tolerations in its
Helm values without touching code. Tags on a job do not reach per-step pods; these are on the
step (the asset's op).
"""

from __future__ import annotations

from typing import Any

CELERY_QUEUE_TAG = "dagster-celery/queue"
K8S_CONFIG_TAG = "dagster-k8s/config"
CPU_QUEUE = "dagster"
GPU_QUEUE = "gpu"
GPU_RESOURCE = "nvidia.com/gpu"
# The label NVIDIA's GPU operator (and its feature discovery) puts on nodes with a GPU, and the
# taint clusters commonly put on GPU nodes so that only pods that ask for a GPU land there.
GPU_NODE_SELECTOR = {"nvidia.com/gpu.present": "true"}
GPU_TOLERATIONS = [{"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"}]


def gpu_step_tags() -> dict[str, Any]:
    """Op tags of a step that needs a GPU: the Celery `gpu` queue, and on Kubernetes one GPU
    with the GPU nodes' selector and toleration."""
    return {
        CELERY_QUEUE_TAG: GPU_QUEUE,
        K8S_CONFIG_TAG: {
            "container_config": {
                "resources": {"limits": {GPU_RESOURCE: "1"}, "requests": {GPU_RESOURCE: "1"}}
            },
            "pod_spec_config": {
                "node_selector": dict(GPU_NODE_SELECTOR),
                "tolerations": [dict(t) for t in GPU_TOLERATIONS],
            },
        },
    }
