"""What the programme report shows, computed from the lake's tables by night: volumes, the
positive rate with p-chart limits, score windows, drift, performance, quarantine and checks.

Every function takes frames whose rows carry a `night` ordinal (see `report.lake`) and returns
a small frame or values; none of them knows a real date.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import polars as pl

from screenlake.report.lake import NIGHT, Nights

if TYPE_CHECKING:
    from screenlake.inference.manifest import MonitoringLimits

# The same window the drift metrics compare a night against by default (screenlake.drift).
REFERENCE_NIGHTS = 14
# How many of the latest nights the data-quality table shows, one column each.
CHECK_NIGHTS = 14
# Shewhart's limits: three standard errors of a binomial proportion either side of the mean.
CONTROL_SIGMAS = 3.0
NO_REASON = "(no reason recorded)"

CHECK_COLUMNS = {
    "asset": pl.String,
    "check": pl.String,
    NIGHT: pl.Int32,
    "passed": pl.Boolean,
    "severity": pl.String,
}


@dataclass(frozen=True)
class ReportInputs:
    """Everything one programme's report is made of, already keyed by night.

    `findings` are validated findings, `scored` the study findings before validation (a night
    scored but not published shows as held back), `audit` the de-identification audit, and
    `checks` plain dicts with asset, check, night, passed and severity ("ERROR" or "WARN").
    """

    programme: str
    nights: Nights
    findings: pl.DataFrame
    scored: pl.DataFrame
    audit: pl.DataFrame
    drift: pl.DataFrame
    performance: pl.DataFrame
    checks: Sequence[Mapping[str, object]] = field(default_factory=tuple)
    limits: MonitoringLimits | None = None


def _all_nights(nights: Nights) -> pl.DataFrame:
    return pl.DataFrame({NIGHT: list(range(1, nights.total + 1))}, schema={NIGHT: pl.Int32})


def _count_by_night(frame: pl.DataFrame, name: str) -> pl.DataFrame:
    return frame.group_by(NIGHT).agg(pl.len().cast(pl.Int64).alias(name))


def night_volumes(inputs: ReportInputs) -> pl.DataFrame:
    """Per night: studies published, studies with a score, flagged, files landed and
    quarantined, and studies scored but held back (not validated)."""
    findings = inputs.findings
    published = findings.group_by(NIGHT).agg(
        pl.len().cast(pl.Int64).alias("studies"),
        pl.col("flag").is_not_null().sum().cast(pl.Int64).alias("scored"),
        pl.col("flag").fill_null(False).sum().cast(pl.Int64).alias("flagged"),
    )
    volumes = _all_nights(inputs.nights)
    for part in (
        published,
        _count_by_night(inputs.scored, "scored_before_validation"),
        _count_by_night(inputs.audit, "files"),
        _count_by_night(inputs.audit.filter(pl.col("outcome") != "deidentified"), "quarantined"),
    ):
        volumes = volumes.join(part, on=NIGHT, how="left")
    volumes = volumes.fill_null(0)
    held_back = pl.when(pl.col("studies") == 0).then(pl.col("scored_before_validation"))
    return volumes.with_columns(held_back.otherwise(0).alias("held_back")).drop(
        "scored_before_validation"
    )


def positive_rate_chart(volumes: pl.DataFrame) -> pl.DataFrame:
    """A p-chart of the nightly positive rate: per night with scored studies, the rate, the
    pooled centre line and 3-sigma binomial limits for that night's n, and whether the rate
    falls outside them."""
    scored = volumes.filter(pl.col("scored") > 0).select(NIGHT, "scored", "flagged")
    if scored.is_empty():
        return scored.with_columns(
            pl.lit(None, pl.Float64).alias(c) for c in ("rate", "centre", "lower", "upper")
        ).with_columns(pl.lit(None, pl.Boolean).alias("outside"))
    centre = int(scored["flagged"].sum()) / int(scored["scored"].sum())
    spread = CONTROL_SIGMAS * (pl.lit(centre * (1 - centre)) / pl.col("scored")).sqrt()
    chart = scored.with_columns(
        (pl.col("flagged") / pl.col("scored")).alias("rate"),
        pl.lit(centre).alias("centre"),
        (pl.lit(centre) - spread).clip(0.0, 1.0).alias("lower"),
        (pl.lit(centre) + spread).clip(0.0, 1.0).alias("upper"),
    )
    return chart.with_columns(
        ((pl.col("rate") < pl.col("lower")) | (pl.col("rate") > pl.col("upper"))).alias("outside")
    )


def score_windows(findings: pl.DataFrame, latest: int | None) -> tuple[list[float], list[float]]:
    """Study scores of the latest night, and of the reference window: the up to
    REFERENCE_NIGHTS nights before it."""
    if latest is None:
        return [], []
    scores = findings.filter(pl.col("score").is_not_null())
    current = scores.filter(pl.col(NIGHT) == latest)["score"].to_list()
    window = pl.col(NIGHT).is_between(latest - REFERENCE_NIGHTS, latest - 1)
    return current, scores.filter(window)["score"].to_list()


def latest_rows(frame: pl.DataFrame) -> tuple[int | None, pl.DataFrame]:
    """The rows of the latest night that has any, and that night."""
    if frame.is_empty():
        return None, frame
    night = int(frame[NIGHT].max())  # type: ignore[arg-type]
    return night, frame.filter(pl.col(NIGHT) == night)


def drift_indicators(drift: pl.DataFrame) -> tuple[int | None, pl.DataFrame]:
    """The latest night's drift metrics, warnings first."""
    night, rows = latest_rows(drift)
    ordered = rows.sort(
        ["warning", "kind", "feature", "statistic"], descending=[True, False, False, False]
    )
    return night, ordered.select(
        "kind", "feature", "statistic", "value", "p_value", "threshold", "warning",
        "reference_batches", "reference_rows", "current_rows",
    )  # fmt: skip


def performance_rows(performance: pl.DataFrame) -> tuple[int | None, pl.DataFrame]:
    """The latest night's performance audit by window: overall first, then by site and by
    device model."""
    night, rows = latest_rows(performance)
    breakdown = (pl.col("site") != "all") | (pl.col("device_model") != "all")
    return night, rows.sort(
        [pl.col("window"), breakdown, pl.col("site"), pl.col("device_model"), "model_version"]
    )


def quarantine_reasons(audit: pl.DataFrame) -> pl.DataFrame:
    """Quarantined files by kind of reason (the text before its first colon, which is where the
    detail starts), with how many nights had any and the latest night that did."""
    quarantined = audit.filter(pl.col("outcome") != "deidentified")
    reason = pl.col("reason").str.split(":").list.first().str.strip_chars()
    return (
        quarantined.with_columns(reason.fill_null(NO_REASON).alias("reason"))
        .group_by("reason")
        .agg(
            pl.len().cast(pl.Int64).alias("files"),
            pl.col(NIGHT).n_unique().cast(pl.Int64).alias("nights"),
            pl.col(NIGHT).max().alias("latest_night"),
        )
        .sort(["files", "reason"], descending=[True, False])
    )


def check_status(checks: Sequence[Mapping[str, object]], nights: Nights) -> pl.DataFrame:
    """One row per check (asset, check) and a column per latest night ("night N"): "passed",
    "failed", "warning" (failed with severity WARN) or null where it was not evaluated."""
    frame = pl.DataFrame(list(checks), schema=CHECK_COLUMNS, orient="row")
    shown = list(range(max(1, nights.total - CHECK_NIGHTS + 1), nights.total + 1))
    frame = frame.filter(pl.col(NIGHT).is_in(shown))
    outcome = (
        pl.when(pl.col("passed"))
        .then(pl.lit("passed"))
        .when(pl.col("severity") == "WARN")
        .then(pl.lit("warning"))
        .otherwise(pl.lit("failed"))
    )
    rows = frame.select("asset", "check", NIGHT, outcome.alias("outcome"))
    table = rows.select("asset", "check").unique().sort("asset", "check")
    for night in shown:
        column = rows.filter(pl.col(NIGHT) == night).select(
            "asset", "check", pl.col("outcome").alias(f"night {night}")
        )
        table = table.join(column, on=["asset", "check"], how="left")
    return table


def summary(inputs: ReportInputs, volumes: pl.DataFrame) -> dict[str, str]:
    """The figures at the top of the report: label -> text."""
    latest = inputs.nights.latest
    last = volumes.filter(pl.col(NIGHT) == latest) if latest else volumes.clear()
    figures = {
        "nights": str(inputs.nights.total),
        "studies published": _count(volumes, "studies"),
        "flagged for review": _count(volumes, "flagged"),
        "positive rate": _rate(volumes),
        "latest night: studies": _count(last, "studies"),
        "latest night: flagged": _count(last, "flagged"),
        "latest night: positive rate": _rate(last),
        "files quarantined": _count(volumes, "quarantined"),
        "studies held back (not validated)": _count(volumes, "held_back"),
    }
    models = inputs.findings.select("model_name", "model_version", "threshold", NIGHT)
    if not models.is_empty():
        newest = models.sort(NIGHT).tail(1).row(0, named=True)
        figures["model"] = f"{newest['model_name']} {newest['model_version']}"
        figures["threshold"] = f"{newest['threshold']:.3f}"
        versions = models.select("model_name", "model_version").unique().height
        if versions > 1:
            figures["model versions over the nights"] = str(versions)
    return figures


def _count(frame: pl.DataFrame, column: str) -> str:
    return str(int(frame[column].sum())) if not frame.is_empty() else "0"


def _rate(frame: pl.DataFrame) -> str:
    scored = int(frame["scored"].sum()) if not frame.is_empty() else 0
    if not scored:
        return "no scored studies"
    flagged = int(frame["flagged"].sum())
    return f"{flagged / scored:.1%} ({flagged} of {scored})"
