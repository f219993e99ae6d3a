"""What the assets' checks found, read back from the Dagster instance: the programme report
lists them, and `validated_findings` publishes only what they passed."""

from __future__ import annotations

import dagster as dg

_COMPLETED = frozenset({"SUCCEEDED", "FAILED"})
_HISTORY_PAGE = 200


def check_keys() -> list[dg.AssetCheckKey]:
    """Every check the `assets` package defines: those an asset runs in its own step (its
    check specs) and those that are steps of their own."""
    # A run has a repository only when launched from a code location, not under
    # `materialize`; the package is the same source either way.
    import assets

    keys = {key for c in dg.load_asset_checks_from_package_module(assets) for key in c.check_keys}
    for definition in dg.load_assets_from_package_module(assets):
        if isinstance(definition, dg.AssetsDefinition):
            keys |= set(definition.check_keys)
    return sorted(keys, key=str)


def latest_evaluations(
    instance: dg.DagsterInstance, check_key: dg.AssetCheckKey, partitions: set[str]
) -> dict[str, dg.AssetCheckEvaluation]:
    """The newest completed evaluation of `check_key` in each of `partitions` that has one,
    reading the check's history newest first, a page at a time, until each is found."""
    latest: dict[str, dg.AssetCheckEvaluation] = {}
    cursor = None
    while len(latest) < len(partitions):
        records = instance.event_log_storage.get_asset_check_execution_history(
            check_key, limit=_HISTORY_PAGE, cursor=cursor
        )
        for record in records:
            evaluation = record.event.asset_check_evaluation if record.event else None
            if (
                record.partition in partitions
                and record.partition not in latest
                and record.status.value in _COMPLETED
                and evaluation is not None
            ):
                latest[record.partition] = evaluation
        if len(records) < _HISTORY_PAGE:
            break
        cursor = records[-1].id
    return latest
