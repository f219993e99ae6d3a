"""How well a screening model separates the studies clinicians labelled: AUC, sensitivity,
specificity and PPV at the operating threshold, with bootstrap 95% confidence intervals.

The metric functions are pure; `screenlake.labels` reads the labels on the PHI side.

Intervals are percentile intervals of a *stratified* bootstrap: each resample draws the positives
and the negatives separately, with replacement, so every resample keeps the observed class counts
(AUC, sensitivity and specificity are always defined; PPV is skipped in a resample that flags
nothing). A metric is null when it is undefined (no positives, no negatives, nothing flagged) and
its interval is null when fewer than `min_cases` cases make up its denominator.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import TYPE_CHECKING

import numpy as np
import polars as pl

from screenlake.errors import ConfigurationError
from screenlake.tables import PERFORMANCE_AUDIT, frame_of

if TYPE_CHECKING:
    # The manifest module imports torch (through the architectures); the audit needs neither.
    from screenlake.inference.manifest import MonitoringLimits

RESAMPLES = 1000
SEED = 20240501
MIN_CASES_FOR_INTERVAL = 5
ALL = "all"
UNKNOWN = "unknown"
ALL_TIME = "all_time"
METRICS = ("auc", "sensitivity", "specificity", "ppv")


def auc(scores: Sequence[float] | np.ndarray, labels: Sequence[bool] | np.ndarray) -> float:
    """Area under the ROC curve by ranks (Mann-Whitney U); tied scores share their mean rank.

    Equals the probability that a random positive scores above a random negative, counting
    ties as one half. Raises ValueError unless both classes are present.
    """
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(labels, dtype=bool)
    if s.shape != y.shape or s.ndim != 1:
        raise ValueError(f"scores and labels must be equal-length vectors ({s.shape}, {y.shape})")
    positives, negatives = int(y.sum()), int((~y).sum())
    if positives == 0 or negatives == 0:
        raise ValueError("AUC needs at least one positive and one negative")
    order = np.argsort(s, kind="mergesort")
    ranks = np.empty(len(s), dtype=np.float64)
    sorted_scores = s[order]
    start = 0
    while start < len(s):
        end = start
        while end + 1 < len(s) and sorted_scores[end + 1] == sorted_scores[start]:
            end += 1
        ranks[order[start : end + 1]] = (start + end) / 2.0 + 1.0
        start = end + 1
    u = ranks[y].sum() - positives * (positives + 1) / 2.0
    return float(u / (positives * negatives))


def sensitivity_specificity(
    scores: np.ndarray, labels: np.ndarray, threshold: float
) -> tuple[float, float]:
    """Fraction of positives flagged and fraction of negatives not flagged at `threshold`."""
    flagged = np.asarray(scores) >= threshold
    y = np.asarray(labels, dtype=bool)
    if y.all() or not y.any():
        raise ValueError("sensitivity and specificity need positive and negative cases")
    return float(flagged[y].mean()), float((~flagged[~y]).mean())


@dataclass(frozen=True)
class Estimate:
    """A metric and its bootstrap 95% interval; None where undefined or too few cases."""

    value: float | None
    low: float | None = None
    high: float | None = None


@dataclass(frozen=True)
class GroupPerformance:
    """One group's case counts and metrics at the operating threshold."""

    studies: int
    positives: int
    flagged: int
    auc: Estimate
    sensitivity: Estimate
    specificity: Estimate
    ppv: Estimate


class _Cases:
    """Positives' and negatives' scores and flags, prepared so that the metrics of any
    reweighting (a bootstrap resample is a vector of draw counts per case) cost O(n)."""

    def __init__(self, scores: np.ndarray, flags: np.ndarray, labels: np.ndarray) -> None:
        self.pos_flag = flags[labels].astype(np.float64)
        self.neg_flag = flags[~labels].astype(np.float64)
        neg_scores = scores[~labels]
        self.neg_order = np.argsort(neg_scores, kind="mergesort")
        ordered = neg_scores[self.neg_order]
        pos_scores = scores[labels]
        # Per positive: negatives strictly below it, and those up to and including ties.
        self.below = np.searchsorted(ordered, pos_scores, side="left")
        self.up_to = np.searchsorted(ordered, pos_scores, side="right")
        self.m, self.n = len(pos_scores), len(neg_scores)

    def metrics(self, wp: np.ndarray, wn: np.ndarray) -> tuple[float, float, float, float]:
        """(AUC, sensitivity, specificity, PPV) with case weights `wp`, `wn`; NaN if undefined."""
        nan = float("nan")
        m, n = float(wp.sum()), float(wn.sum())
        true_pos, false_pos = float(wp @ self.pos_flag), float(wn @ self.neg_flag)
        sensitivity = true_pos / m if m else nan
        specificity = (n - false_pos) / n if n else nan
        flagged = true_pos + false_pos
        ppv = true_pos / flagged if flagged else nan
        if m and n:
            cumulative = np.concatenate([[0.0], np.cumsum(wn[self.neg_order])])
            lower, tied = cumulative[self.below], cumulative[self.up_to] - cumulative[self.below]
            area = float(wp @ (lower + 0.5 * tied)) / (m * n)
        else:
            area = nan
        return area, sensitivity, specificity, ppv


def _draw(rng: np.random.Generator, count: int) -> np.ndarray:
    """How often each of `count` cases is drawn when `count` are drawn with replacement."""
    if count == 0:
        return np.zeros(0)
    return np.bincount(rng.integers(0, count, count), minlength=count).astype(np.float64)


def _interval(values: np.ndarray) -> tuple[float | None, float | None]:
    defined = values[~np.isnan(values)]
    if defined.size == 0:
        return None, None
    low, high = np.percentile(defined, [2.5, 97.5])
    return float(low), float(high)


def evaluate(
    scores: Sequence[float] | np.ndarray,
    flags: Sequence[bool] | np.ndarray,
    labels: Sequence[bool] | np.ndarray,
    resamples: int = RESAMPLES,
    seed: int = SEED,
    min_cases: int = MIN_CASES_FOR_INTERVAL,
) -> GroupPerformance:
    """AUC of `scores`, and sensitivity, specificity and PPV of `flags` (the operating
    threshold's decisions), against `labels`, each with a stratified percentile bootstrap 95%
    interval over `resamples` resamples drawn from `numpy.random.default_rng(seed)`."""
    s = np.asarray(scores, dtype=np.float64)
    f = np.asarray(flags, dtype=bool)
    y = np.asarray(labels, dtype=bool)
    if not s.shape == f.shape == y.shape or s.ndim != 1:
        raise ValueError(f"scores, flags and labels must be equal-length vectors ({s.shape})")
    if np.isnan(s).any():
        raise ValueError("scores hold NaN: leave unscored studies out of the audit")
    cases = _Cases(s, f, y)
    points = cases.metrics(np.ones(cases.m), np.ones(cases.n))
    draws = np.full((resamples, 4), np.nan)
    rng = np.random.default_rng(seed)
    for r in range(resamples):
        draws[r] = cases.metrics(_draw(rng, cases.m), _draw(rng, cases.n))
    flagged = int(f.sum())
    denominators = (min(cases.m, cases.n), cases.m, cases.n, flagged)
    estimates = []
    for k, point in enumerate(points):
        if np.isnan(point):
            estimates.append(Estimate(None))
        elif denominators[k] < min_cases:
            estimates.append(Estimate(point))
        else:
            estimates.append(Estimate(point, *_interval(draws[:, k])))
    return GroupPerformance(len(y), cases.m, flagged, *estimates)


def window_days(day: date, days: int) -> list[date]:
    """The `days` days that end with `day`, oldest first."""
    if days < 1:
        raise ConfigurationError(f"a window needs at least one day, not {days}")
    return [day - timedelta(days=offset) for offset in range(days - 1, -1, -1)]


def last_days_window(days: int) -> str:
    """The audit's name for the window of the last `days` days."""
    return f"last_{days}_days"


# A labelled study as the audit reads it: no accession number, no original UID, no date.
LABELLED_SCHEMA = pl.Schema(
    {
        "programme": pl.String,
        "model_name": pl.String,
        "model_version": pl.String,
        "threshold": pl.Float64,
        "site": pl.String,
        "device_model": pl.String,
        "score": pl.Float64,
        "flag": pl.Boolean,
        "label": pl.Boolean,
    }
)


def stack_labelled(frames: Sequence[pl.DataFrame]) -> pl.DataFrame:
    """Labelled studies of several batches as one frame (an empty one for none)."""
    return pl.concat(frames) if frames else pl.DataFrame(schema=LABELLED_SCHEMA)


def audit_rows(
    studies: pl.DataFrame,
    window: str,
    batch_id: str,
    computed_at: datetime,
    resamples: int = RESAMPLES,
    seed: int = SEED,
    min_cases: int = MIN_CASES_FOR_INTERVAL,
) -> pl.DataFrame:
    """PERFORMANCE_AUDIT rows for one window of labelled studies (`LABELLED_SCHEMA`): per
    programme and model version, overall (site and device "all"), per device model, per site."""
    rows: list[dict[str, object]] = []
    model_keys = ["programme", "model_name", "model_version", "threshold"]
    for keys, model in studies.group_by(model_keys, maintain_order=True):
        head = dict(zip(model_keys, keys, strict=True))
        groups = [(ALL, ALL, model)]
        for (device,), part in model.sort("device_model").group_by(
            "device_model", maintain_order=True
        ):
            groups.append((ALL, str(device), part))
        for (site,), part in model.sort("site").group_by("site", maintain_order=True):
            groups.append((str(site), ALL, part))
        for site, device, part in groups:
            result = evaluate(
                part["score"].to_numpy(),
                part["flag"].to_numpy(),
                part["label"].to_numpy(),
                resamples,
                seed,
                min_cases,
            )
            row: dict[str, object] = {
                **head,
                "batch_id": batch_id,
                "window": window,
                "site": site,
                "device_model": device,
                "studies": result.studies,
                "positives": result.positives,
                "computed_at": computed_at,
            }
            for name in METRICS:
                estimate: Estimate = getattr(result, name)
                row[name] = estimate.value
                row[f"{name}_low"], row[f"{name}_high"] = estimate.low, estimate.high
            rows.append(row)
    return frame_of(rows, PERFORMANCE_AUDIT)


# PHI side: labels and sites, joined to pseudonymous studies.
@dataclass(frozen=True)
class Shortfall:
    """A metric the audit found below its declared minimum, over enough cases."""

    window: str
    metric: str
    value: float
    low: float | None
    high: float | None
    minimum: float
    cases: int


@dataclass(frozen=True)
class Judgement:
    """What the audit's overall rows say against the minimums."""

    shortfalls: list[Shortfall]
    judged: list[str]
    not_judged: list[str]

    @property
    def passed(self) -> bool:
        """True when no judged metric fell below its minimum."""
        return not self.shortfalls


def judge(
    audit: pl.DataFrame,
    limits: MonitoringLimits,
    model_name: str,
    model_version: str,
    minimum_cases: int,
) -> Judgement:
    """Compare the overall rows (site and device "all") of `model_name` `model_version` with the
    declared minimum AUC, sensitivity and specificity. A metric is judged only when at least
    `minimum_cases` cases make up its denominator (both classes for AUC)."""
    minimums = {
        "auc": limits.minimum_auc,
        "sensitivity": limits.minimum_sensitivity,
        "specificity": limits.minimum_specificity,
    }
    overall = audit.filter(
        (pl.col("site") == ALL)
        & (pl.col("device_model") == ALL)
        & (pl.col("model_name") == model_name)
        & (pl.col("model_version") == model_version)
    ).sort("window")
    shortfalls, judged, not_judged = [], [], []
    for row in overall.iter_rows(named=True):
        negatives = row["studies"] - row["positives"]
        cases = {"auc": min(row["positives"], negatives), "sensitivity": row["positives"]}
        cases["specificity"] = negatives
        for metric, minimum in minimums.items():
            name, value = f"{row['window']} {metric}", row[metric]
            if value is None or cases[metric] < minimum_cases:
                not_judged.append(f"{name} ({cases[metric]} cases)")
                continue
            judged.append(name)
            if value < minimum:
                shortfalls.append(
                    Shortfall(
                        row["window"],
                        metric,
                        value,
                        row[f"{metric}_low"],
                        row[f"{metric}_high"],
                        minimum,
                        cases[metric],
                    )
                )
    return Judgement(shortfalls, judged, not_judged)
