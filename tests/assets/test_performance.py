"""The performance audit on the synthetic export: labels joined through the vault on the PHI
side, metrics per window, site and device in the research zone, judged against the manifest."""

from __future__ import annotations

import csv
import shutil
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import dagster as dg
import duckdb
import polars as pl
import pytest

from assets.performance import performance_audit
from orchestration.definitions import defs
from orchestration.partitions import partition_key
from screenlake import layout
from screenlake.keys import validate_pseudonym_key
from screenlake.performance import ALL, ALL_TIME, UNKNOWN
from screenlake.tables import VALIDATED_FINDINGS, read_parquet
from screenlake.vault import read_vault, vault_cipher
from tests.assets.zones import local_resources
from tests.conftest import TEST_PSEUDONYM_KEY, Export

pytestmark = pytest.mark.slow

PROGRAMME = "cxr_tb"
CHECK = "performance_meets_declared_minimums"
# Judge every metric however few the cases: the export holds a handful of studies a day.
RUN_CONFIG = {
    "ops": {
        "performance_audit": {"config": {"last_days": 1, "resamples": 200, "minimum_cases": 1}},
    }
}


@dataclass(frozen=True)
class Audited:
    """Zones after the programme's two days ran, and the results of each run."""

    phi: Path
    research: Path
    resources: dict[str, Any]
    instance: dg.DagsterInstance
    first: dg.ExecuteInProcessResult
    second: dg.ExecuteInProcessResult
    days: tuple[date, date]


def _graph() -> list[Any]:
    return [*(defs.assets or []), *(defs.asset_checks or [])]


# Only what the audit needs: the chain up to validated findings and the vault, then the audit.
SELECTION = dg.AssetSelection.assets(performance_audit).upstream()


def _run(
    resources: dict[str, Any],
    instance: dg.DagsterInstance,
    day: date,
    selection: dg.AssetSelection = SELECTION,
) -> dg.ExecuteInProcessResult:
    return dg.materialize(
        _graph(),
        resources=resources,
        partition_key=partition_key(day, PROGRAMME),
        instance=instance,
        selection=selection,
        run_config=RUN_CONFIG,
    )


@pytest.fixture(scope="module")
def audited(
    synthetic_export: Export,
    session_keys: dict[str, str],
    tmp_path_factory: pytest.TempPathFactory,
) -> Audited:
    root = tmp_path_factory.mktemp("zones")
    resources = local_resources(synthetic_export.drop, root)
    instance = dg.DagsterInstance.ephemeral()
    first_day, second_day = synthetic_export.days[:2]
    # The first day runs before any label exists; the labels arrive before the second.
    first = _run(resources, instance, first_day)
    labels = root / "phi" / layout.DEMO_LABELS
    labels.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(synthetic_export.labels, labels)
    second = _run(resources, instance, second_day)
    return Audited(
        root / "phi", root / "research", resources, instance, first, second, (first_day, second_day)
    )


def _audit(run: Audited) -> pl.DataFrame:
    files = sorted((run.research / "lake" / "performance_audit").rglob("*.parquet"))
    return pl.concat([pl.read_parquet(f) for f in files])


def _check(result: dg.ExecuteInProcessResult) -> dg.AssetCheckEvaluation:
    (evaluation,) = [e for e in result.get_asset_check_evaluations() if e.check_name == CHECK]
    return evaluation


def _truth(labels_csv: Path) -> dict[str, bool]:
    with labels_csv.open(newline="") as handle:
        return {
            r["accession_number"]: r["label"] == "1"
            for r in csv.DictReader(handle)
            if r["programme"] == PROGRAMME
        }


def _scored_labels(run: Audited, days: tuple[date, ...], truth: dict[str, bool]) -> pl.DataFrame:
    """Each scored study's score and label, joined here by hand through the vaults."""
    key = validate_pseudonym_key(TEST_PSEUDONYM_KEY)
    cipher = vault_cipher(dg.EnvVar("SCREENLAKE_VAULT_KEY").get_value())
    frames = []
    for day in days:
        batch = layout.Batch(day, PROGRAMME)
        findings = read_parquet(
            VALIDATED_FINDINGS,
            run.research / layout.lake_table_path(VALIDATED_FINDINGS, batch, key),
        )
        vault = read_vault(run.phi / layout.vault_path(batch), cipher)
        frames.append(findings.join(vault, on="study_instance_uid"))
    joined = pl.concat(frames).filter(pl.col("score").is_not_null())
    accessions = joined["accession_number"].to_list()
    return pl.DataFrame({"score": joined["score"], "label": [truth[a] for a in accessions]})


def _pairwise_auc(scores: list[float], labels: list[bool]) -> float:
    positives = [s for s, y in zip(scores, labels, strict=True) if y]
    negatives = [s for s, y in zip(scores, labels, strict=True) if not y]
    wins = sum((p > n) + 0.5 * (p == n) for p in positives for n in negatives)
    return wins / (len(positives) * len(negatives))


def test_without_labels_the_audit_is_empty_and_the_check_passes(audited: Audited) -> None:
    assert audited.first.success
    materialised = audited.first.asset_materializations_for_node("performance_audit")
    assert materialised[0].metadata["rows"].value == 0
    evaluation = _check(audited.first)
    assert evaluation.passed
    assert "nothing to judge" in (evaluation.description or "")


def test_the_overall_auc_equals_the_one_computed_from_findings_and_labels(
    audited: Audited, synthetic_export: Export
) -> None:
    assert audited.second.success
    audit = _audit(audited)
    overall = audit.filter(
        (pl.col("window") == ALL_TIME) & (pl.col("site") == ALL) & (pl.col("device_model") == ALL)
    ).row(0, named=True)
    direct = _scored_labels(audited, audited.days, _truth(synthetic_export.labels))
    assert overall["studies"] == direct.height
    assert overall["positives"] == direct["label"].sum()
    assert 0 < overall["positives"] < overall["studies"]  # both classes: the AUC is defined
    assert overall["auc"] == pytest.approx(
        _pairwise_auc(direct["score"].to_list(), direct["label"].to_list())
    )
    # The last day's window holds the second day's studies only.
    recent = audit.filter(
        (pl.col("window") == "last_1_days")
        & (pl.col("site") == ALL)
        & (pl.col("device_model") == ALL)
    )
    second_only = _scored_labels(audited, audited.days[1:], _truth(synthetic_export.labels))
    assert recent["studies"].to_list() == [second_only.height]


def test_sites_are_tokens_and_devices_come_from_the_catalogue(audited: Audited) -> None:
    audit = _audit(audited)
    sites = set(audit["site"]) - {ALL}
    assert sites and UNKNOWN not in sites
    assert all(s.startswith("S") and len(s) == 13 for s in sites)
    devices = set(audit["device_model"]) - {ALL}
    assert devices and UNKNOWN not in devices
    # No institution name, and no original identifier, reaches the research zone.
    institution = _institution(audited)
    for column in audit.columns:
        values = audit[column].cast(pl.String).drop_nulls().to_list()
        assert not [v for v in values if institution.upper() in v.upper()], column


def _institution(run: Audited) -> str:
    import pydicom

    for path in sorted((run.phi / "raw").rglob("*.dcm")):
        ds = pydicom.dcmread(path, stop_before_pixels=True, force=True)
        if ds.get("InstitutionName"):
            return str(ds.InstitutionName)
    raise AssertionError("the synthetic export names no institution")


def test_analysts_read_the_latest_audit_in_model_performance(audited: Audited) -> None:
    with duckdb.connect(str(audited.research / "lake.duckdb")) as con:
        con.execute("SET file_search_path = ?", [str(audited.research / "lake")])
        view = con.sql(
            'SELECT "window", site, device_model, studies, negatives, auc FROM model_performance'
        ).pl()
    audit = _audit(audited)
    assert view.height == audit.height
    assert view.row(0, named=True)["site"] == ALL and view.row(0, named=True)["device_model"] == ALL
    assert view["negatives"].sum() == (audit["studies"] - audit["positives"]).sum()
    overall = view.filter(
        (pl.col("window") == ALL_TIME) & (pl.col("site") == ALL) & (pl.col("device_model") == ALL)
    )
    assert (
        overall["auc"].to_list()
        == audit.filter(
            (pl.col("window") == ALL_TIME)
            & (pl.col("site") == ALL)
            & (pl.col("device_model") == ALL)
        )["auc"].to_list()
    )


def test_the_check_passes_with_the_reference_model(audited: Audited) -> None:
    evaluation = _check(audited.second)
    assert evaluation.passed, evaluation.description
    assert evaluation.metadata["judged"].value  # judged, not merely skipped


def test_the_check_fails_when_labels_say_the_model_misses(
    audited: Audited, synthetic_export: Export
) -> None:
    # Clinicians' labels contradicting every flag: the model now misses every positive.
    labels = audited.phi / layout.DEMO_LABELS
    original = labels.read_text()
    truth = _truth(synthetic_export.labels)
    flipped = ["accession_number,programme,label"] + [
        f"{a},{PROGRAMME},{0 if y else 1}" for a, y in truth.items()
    ]
    labels.write_text("\n".join(flipped) + "\n")
    try:
        result = _run(
            audited.resources,
            audited.instance,
            audited.days[1],
            selection=dg.AssetSelection.assets(performance_audit),
        )
    finally:
        labels.write_text(original)
    assert result.success  # the check warns; it does not fail the run
    evaluation = _check(result)
    assert not evaluation.passed
    shortfalls: list[dict[str, Any]] = evaluation.metadata["shortfalls"].value  # type: ignore
    assert {"auc", "sensitivity"} <= {s["metric"] for s in shortfalls}
    auc_row = next(s for s in shortfalls if s["metric"] == "auc" and s["window"] == ALL_TIME)
    assert auc_row["minimum"] == 0.85 and auc_row["value"] < 0.85
    assert "below the declared minimum" in (evaluation.description or "")
