"""Dagster's stale status, read as the UI and sensors read it, and an operator's "materialise
stale" repeated until nothing is: shared by the tests of what a new model or a new
de-identification profile makes stale.

Staleness is read with the resolver Dagster's UI and sensors use (`CachingStaleStatusResolver`);
Dagster 1.13 has no public API for it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import dagster as dg
from dagster._core.asset_graph_view.asset_graph_view import AssetGraphView
from dagster._core.definitions.data_version import (
    CachingStaleStatusResolver,
    StaleCauseCategory,
    StaleStatus,
)


@dataclass(frozen=True)
class Wave:
    """The assets Dagster found stale, why, and the run that re-materialised them."""

    stale: set[str]
    root_causes: dict[str, set[tuple[str, StaleCauseCategory]]]
    run: dg.ExecuteInProcessResult


def settings_for(root: Path, drop: Path, **extra: str) -> dict[str, str]:
    """Local settings with the drop at `drop` and both zones under `root`."""
    return {
        "SCREENLAKE_DROP": str(drop),
        "SCREENLAKE_PHI_ZONE": str(root / "phi"),
        "SCREENLAKE_RESEARCH_ZONE": str(root / "research"),
        "SCREENLAKE_DEID_WORKERS": "2",
        **extra,
    }


def resolver(defs: dg.Definitions, instance: dg.DagsterInstance) -> CachingStaleStatusResolver:
    """A fresh resolver: it caches, so each look at the instance needs its own."""
    view = AssetGraphView.for_test(defs, instance)
    return CachingStaleStatusResolver(instance, defs.resolve_asset_graph(), view)


def statuses(
    defs: dg.Definitions, instance: dg.DagsterInstance, partition: str
) -> dict[str, StaleStatus]:
    """Every asset's stale status for `partition`, by asset name."""
    found = resolver(defs, instance)
    return {
        key.to_user_string(): found.get_status(key, partition)
        for key in defs.resolve_asset_graph().get_all_asset_keys()
    }


def run_partition(
    defs: dg.Definitions,
    instance: dg.DagsterInstance,
    partition: str,
    selection: list[dg.AssetKey] | None = None,
) -> dg.ExecuteInProcessResult:
    """One in-process run of the screening job for `partition` (all of it, or `selection`)."""
    job = defs.resolve_job_def("screening_pipeline")
    return job.execute_in_process(
        partition_key=partition, instance=instance, asset_selection=selection
    )


def rematerialise_stale(
    defs: dg.Definitions,
    instance: dg.DagsterInstance,
    partition: str,
    most: int = 6,
    downstream: bool = False,
) -> list[Wave]:
    """Materialise what is stale until nothing is, as an operator clicking "materialise stale"
    would: Dagster marks an asset stale for its own new code version or for a parent's new
    data version, so what follows a re-run asset turns stale once that asset has re-run. With
    `downstream`, each wave's run takes what is stale and everything downstream of it, in
    dependency order, as "materialise stale and downstream" does."""
    waves: list[Wave] = []
    for _ in range(most):
        found = resolver(defs, instance)
        stale = {
            name
            for name, status in statuses(defs, instance, partition).items()
            if status is StaleStatus.STALE
        }
        if not stale:
            return waves
        causes = {
            name: {
                (cause.asset_key.to_user_string(), cause.category)
                for cause in found.get_stale_root_causes(dg.AssetKey(name), partition)
            }
            for name in stale
        }
        keys = [dg.AssetKey(n) for n in sorted(stale)]
        if downstream:
            keys = sorted(
                dg.AssetSelection.assets(*keys).downstream().resolve(defs.resolve_asset_graph())
            )
        run = run_partition(defs, instance, partition, keys)
        waves.append(Wave(stale, causes, run))
    raise AssertionError(f"still stale after {most} waves: {[w.stale for w in waves]}")
