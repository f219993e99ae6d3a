"""Monitor: the model's performance against clinicians' labels, per programme, site and device
model, over the last days and over all time; a check that says when it falls below the
programme's declared minimums and never holds results back."""

# No `from __future__ import annotations`: Dagster reads the context and resource annotations.

from datetime import UTC, date, datetime
from pathlib import Path

import dagster as dg
import polars as pl
from pydantic import Field

from assets._shared import (
    StepChecks,
    markdown_preview,
    read_batch_table,
    step_check,
    write_batch_table,
)
from assets.deidentify import pseudonym_vault
from assets.validate import validated_findings
from orchestration.partitions import batch_of, screening_partitions
from resources.lake import LakeDatabase
from resources.models import ModelRegistry
from resources.secrets import PseudonymKey, VaultKey
from resources.zones import ZoneStore
from screenlake import labels as phi_labels
from screenlake import layout, performance
from screenlake.errors import ConfigurationError
from screenlake.inference.manifest import ModelManifest
from screenlake.tables import (
    INSTANCE_CATALOG,
    LANDED_INSTANCES,
    PERFORMANCE_AUDIT,
    VALIDATED_FINDINGS,
    read_parquet,
)
from screenlake.vault import read_vault


class PerformanceWindows(dg.Config):
    """Which days the audit covers, how many bootstrap resamples its intervals take, and how
    many cases a metric needs before its check judges it against its minimum."""

    last_days: int = Field(default=30, ge=1, le=366, description="Days in the recent window.")
    horizon_days: int = Field(
        default=365, ge=1, le=3660, description="How far back 'all time' reaches, in days."
    )
    resamples: int = Field(
        default=performance.RESAMPLES, ge=100, le=100_000, description="Bootstrap resamples."
    )
    minimum_cases: int = Field(
        default=10,
        ge=1,
        description="Least positives (sensitivity), negatives (specificity) or both (AUC).",
    )


def _labels(phi_zone: ZoneStore, programme: str) -> tuple[pl.DataFrame, int, int]:
    truth = phi_zone.pull(layout.DEMO_LABELS)
    reviews = phi_zone.pull(layout.review_decisions_dir(programme))
    decisions = sorted(reviews.rglob("*.parquet")) if reviews.is_dir() else []
    return phi_labels.read_labels(truth if truth.is_file() else None, decisions, programme)


def _labelled_batch(
    phi_zone: ZoneStore,
    research_zone: ZoneStore,
    batch: layout.Batch,
    key: bytes,
    vault: pl.DataFrame,
    labels: pl.DataFrame,
) -> pl.DataFrame:
    """One batch's labelled studies, joined on the PHI side: only pseudonymous UIDs, site
    tokens, scores and labels come out."""
    wanted = vault.filter(pl.col("accession_number").is_in(labels["accession_number"].implode()))
    sites: dict[str, str] = {}
    manifest_file = phi_zone.pull(layout.raw_manifest_path(batch))
    # Landed originals may be gone (retention); their studies then count under site "unknown".
    if manifest_file.exists() and wanted.height:
        manifest = read_parquet(LANDED_INSTANCES, manifest_file).filter(
            pl.col("study_instance_uid").is_in(wanted["original_study_instance_uid"].implode())
        )
        raw = layout.raw_dir(batch)
        sites = phi_labels.site_tokens(manifest, lambda name: phi_zone.pull(raw / name), key)
    return phi_labels.labelled_studies(
        read_batch_table(research_zone, VALIDATED_FINDINGS, batch, key),
        wanted,
        labels,
        phi_labels.device_models(read_batch_table(research_zone, INSTANCE_CATALOG, batch, key)),
        sites,
    )


def _vault_of(phi_zone: ZoneStore, batch: layout.Batch) -> Path | None:
    path = phi_zone.pull(layout.vault_path(batch))
    return path if path.exists() else None


PERFORMANCE_CHECK = "performance_meets_declared_minimums"


@dg.asset(
    deps=[validated_findings, pseudonym_vault],
    group_name="monitor",
    partitions_def=screening_partitions,
    kinds={"numpy", "parquet"},
    code_version="1",
    check_specs=[
        step_check(
            "performance_audit",
            PERFORMANCE_CHECK,
            "The model in service keeps the AUC, sensitivity and specificity its manifest's"
            " `monitoring` declares, wherever enough labelled cases allow a judgement; a failure"
            " asks clinical governance to look and does not hold results back.",
            blocking=False,
        )
    ],
)
def performance_audit(
    context: dg.AssetExecutionContext,
    config: PerformanceWindows,
    phi_zone: ZoneStore,
    research_zone: ZoneStore,
    pseudonym_key: PseudonymKey,
    vault_key: VaultKey,
    lake: LakeDatabase,
    models: ModelRegistry,
) -> dg.MaterializeResult:
    """AUC, and sensitivity, specificity and PPV at the operating threshold, with bootstrap 95%
    intervals, against the labels in the PHI zone (ground truth, overridden by clinicians'
    review decisions), per model version: overall, per device model and per site, over the last
    days and over all time up to this partition's day. Labels join findings through the vault
    on the PHI side; only counts and metrics reach the research zone. Its check runs in its
    step, on the audit read back from the lake."""
    if config.horizon_days < config.last_days:
        raise ConfigurationError(
            f"horizon_days ({config.horizon_days}) must be at least last_days "
            f"({config.last_days}): 'all time' must hold the recent window"
        )
    batch, key = batch_of(context), pseudonym_key.key()
    labels, from_truth, from_review = _labels(phi_zone, batch.programme)
    cipher = vault_key.cipher()
    by_day: dict[date, pl.DataFrame] = {}
    missing_vaults = 0
    days = performance.window_days(batch.day, config.horizon_days) if labels.height else []
    for day in days:
        earlier = layout.Batch(day, batch.programme)
        findings = layout.lake_table_path(VALIDATED_FINDINGS, earlier, key)
        if not research_zone.pull(findings).exists():
            continue  # no studies that day, or not validated yet
        vault = _vault_of(phi_zone, earlier)
        if vault is None:
            missing_vaults += 1
            continue
        by_day[day] = _labelled_batch(
            phi_zone, research_zone, earlier, key, read_vault(vault, cipher), labels
        )
    recent = set(performance.window_days(batch.day, config.last_days))
    windows = {
        performance.ALL_TIME: performance.stack_labelled(list(by_day.values())),
        performance.last_days_window(config.last_days): performance.stack_labelled(
            [f for d, f in by_day.items() if d in recent]
        ),
    }
    computed_at, batch_id = datetime.now(UTC), batch.research_id(key)
    frame = pl.concat(
        [
            performance.audit_rows(studies, window, batch_id, computed_at, config.resamples)
            for window, studies in windows.items()
        ]
    )
    rows = write_batch_table(research_zone, lake, frame, PERFORMANCE_AUDIT, batch, key)
    if missing_vaults:
        context.log.warning(
            f"{missing_vaults} earlier batches have findings but no vault: their studies are "
            "left out; re-materialise pseudonym_vault for them to audit them"
        )
    overall = frame.filter(
        (pl.col("site") == performance.ALL) & (pl.col("device_model") == performance.ALL)
    )
    checks = StepChecks()
    written = checks.judge(research_zone, PERFORMANCE_AUDIT, batch, key)
    checks.run(
        lambda: _performance_check(
            written, models.manifest_for(batch.programme), config.minimum_cases
        )
    )
    return checks.materialize_result(
        {
            "rows": rows,
            "labels_from_ground_truth": from_truth,
            "labels_from_review_decisions": from_review,
            "batches_audited": len(by_day),
            "batches_without_vault": missing_vaults,
            **{f"labelled_studies_{w}": s.height for w, s in windows.items()},
            "preview": markdown_preview(
                overall.select(
                    "window", "model_version", "studies", "positives", *performance.METRICS
                ),
                rows=6,
            ),
        }
    )


def _describe(shortfall: performance.Shortfall) -> str:
    interval = (
        f" (95% CI {shortfall.low:.3f}-{shortfall.high:.3f})"
        if shortfall.low is not None and shortfall.high is not None
        else ""
    )
    return (
        f"{shortfall.window} {shortfall.metric} {shortfall.value:.3f}{interval} below the "
        f"declared minimum {shortfall.minimum:.3f} over {shortfall.cases} cases"
    )


def _performance_check(
    audit: pl.DataFrame, manifest: ModelManifest, minimum_cases: int
) -> dg.AssetCheckResult:
    """The model in service keeps the AUC, sensitivity and specificity its manifest's
    `monitoring` declares, overall, over the last days and over all time, wherever at least
    `minimum_cases` labelled cases allow a judgement."""
    model = f"{manifest.name} {manifest.version}"
    if manifest.monitoring is None:
        return dg.AssetCheckResult(
            check_name=PERFORMANCE_CHECK,
            passed=True,
            description=f"{model}'s manifest declares no performance minimums",
        )
    limits = manifest.monitoring
    verdict = performance.judge(audit, limits, manifest.name, manifest.version, minimum_cases)
    if verdict.shortfalls:
        description = "; ".join(_describe(s) for s in verdict.shortfalls)
    elif verdict.judged:
        description = f"{len(verdict.judged)} metrics of {model} meet the declared minimums"
    elif verdict.not_judged:
        description = f"too few labelled cases to judge {model} (at least {minimum_cases} needed)"
    else:
        description = f"no labelled studies of {model} yet: nothing to judge"
    return dg.AssetCheckResult(
        check_name=PERFORMANCE_CHECK,
        passed=verdict.passed,
        severity=dg.AssetCheckSeverity.ERROR,
        description=description,
        metadata={
            "shortfalls": dg.MetadataValue.json(
                [
                    {
                        "window": s.window,
                        "metric": s.metric,
                        "value": round(s.value, 4),
                        "ci_low": None if s.low is None else round(s.low, 4),
                        "ci_high": None if s.high is None else round(s.high, 4),
                        "minimum": s.minimum,
                        "cases": s.cases,
                    }
                    for s in verdict.shortfalls
                ]
            ),
            "judged": dg.MetadataValue.json(verdict.judged),
            "not_judged": dg.MetadataValue.json(verdict.not_judged),
            "minimums": dg.MetadataValue.json(
                {
                    "auc": limits.minimum_auc,
                    "sensitivity": limits.minimum_sensitivity,
                    "specificity": limits.minimum_specificity,
                }
            ),
            "minimum_cases": minimum_cases,
            "model": model,
        },
    )
