"""Drift of a partition against a reference window: what went into the model (the scanners,
the acquisition, the intensities of its preprocessed images) and what came out (scores, the
positive rate), as `DRIFT_METRICS` rows.

Numeric features get a population stability index (PSI) and a two-sample Kolmogorov-Smirnov
test; categorical features a PSI over category shares; the positive rate is compared with the
model's monitoring band and with the reference window's rate. Every statistic is a warning for
a person to look at, never a reason to hold results back.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import numpy as np
import polars as pl

from screenlake.tables import (
    DRIFT_METRICS,
    INSTANCE_CATALOG,
    INSTANCE_PREDICTIONS,
    STUDY_FINDINGS,
    frame_of,
    polars_schema,
)

# PSI over deciles of the reference: ten bins are the usual choice, and enough to see a shift
# in the middle of a distribution as well as in its tails.
PSI_BINS = 10
# A share of 0 makes PSI's log infinite, so an empty bin counts as half an observation of its
# side (a continuity correction). A fixed tiny share such as 1e-4 would not do: a bin left empty
# by chance on a small day would then add about 0.7 to PSI on its own.
EMPTY_BIN_COUNT = 0.5
# The usual convention (credit scoring, model monitoring): < 0.1 stable, 0.1-0.2 a moderate
# shift, > 0.2 a shift worth a look. Small samples need more (`psi_limit`): above the PSI that
# two samples of one distribution reach once in a hundred.
PSI_WARNING = 0.2
PSI_P_VALUE = 0.01
# KS: p < 0.01, and a largest difference between the two distribution functions of at least
# 0.1. With thousands of CT slices a day, p alone falls below any limit for shifts no one
# would act on; the effect size keeps the warning for shifts that matter.
KS_P_VALUE = 0.01
KS_MIN_STATISTIC = 0.1
# The positive rate warns when a two-sided binomial test against the reference rate gives
# p < 0.01 (or when the rate leaves the manifest's monitoring band).
RATE_P_VALUE = 0.01
# Each side needs values from at least this many studies. A CT study's hundreds of slices are
# not independent: with a handful of studies a day, every statistic would compare patients,
# not scanners or the model. Below it the row has no value and no warning; its counts say why.
MIN_STUDIES = 30
# How many previous days of the same programme form the reference window by default.
DEFAULT_REFERENCE_DAYS = 14
# The category that a missing manufacturer or model name counts as: its share can drift too.
MISSING = "(missing)"

CATEGORICAL_INPUTS = ("manufacturer", "manufacturer_model_name")
ACQUISITION_INPUTS = ("pixel_spacing_row_mm", "slice_thickness_mm", "kvp")
INTENSITY_INPUTS = ("input_mean", "input_std")
SCORE_OUTPUTS = ("image_score", "study_score")
POSITIVE_RATE = "positive_rate"
_OK = "ok"


@dataclass(frozen=True)
class PartitionTables:
    """The tables drift is computed from: one partition's, or a reference window's together."""

    catalog: pl.DataFrame
    predictions: pl.DataFrame
    findings: pl.DataFrame

    @classmethod
    def empty(cls) -> PartitionTables:
        """No rows, with the tables' columns and types."""
        return cls(
            pl.DataFrame(schema=polars_schema(INSTANCE_CATALOG)),
            pl.DataFrame(schema=polars_schema(INSTANCE_PREDICTIONS)),
            pl.DataFrame(schema=polars_schema(STUDY_FINDINGS)),
        )

    @classmethod
    def combined(cls, parts: Sequence[PartitionTables]) -> PartitionTables:
        """The rows of several partitions as one window (empty for no partitions)."""
        if not parts:
            return cls.empty()
        return cls(
            pl.concat([p.catalog for p in parts], how="vertical_relaxed"),
            pl.concat([p.predictions for p in parts], how="vertical_relaxed"),
            pl.concat([p.findings for p in parts], how="vertical_relaxed"),
        )


@dataclass(frozen=True)
class Sample:
    """One feature's values on one side, and how many studies they come from."""

    values: pl.Series
    studies: int

    @property
    def rows(self) -> int:
        """How many values the sample holds."""
        return self.values.len()


def _shares(counts: np.ndarray) -> np.ndarray:
    total = counts.sum()
    if total == 0:
        raise ValueError("PSI needs at least one value on each side")
    return np.where(counts == 0, EMPTY_BIN_COUNT, counts) / total


def psi_from_counts(
    current: Sequence[float] | np.ndarray, reference: Sequence[float] | np.ndarray
) -> float:
    """PSI = sum((c - r) * ln(c / r)) over bins, from the counts per bin on each side; an
    empty bin counts as EMPTY_BIN_COUNT observations (its share an epsilon of 0.5 / n)."""
    c = _shares(np.asarray(current, dtype=float))
    r = _shares(np.asarray(reference, dtype=float))
    if c.shape != r.shape:
        raise ValueError(f"PSI needs the same bins on both sides, not {c.shape} and {r.shape}")
    return float(np.sum((c - r) * np.log(c / r)))


def numeric_bin_counts(
    current: Sequence[float] | np.ndarray | pl.Series,
    reference: Sequence[float] | np.ndarray | pl.Series,
    bins: int = PSI_BINS,
) -> tuple[np.ndarray, np.ndarray]:
    """Counts per bin on each side, the bins cut at the reference's quantiles.

    Equal quantiles (a kVp that is 120 for most images) merge into one edge, so a discrete
    feature gets one bin per value it takes; a value on an edge falls in the bin above it.
    """
    if bins < 2:
        raise ValueError(f"PSI needs at least 2 bins, not {bins}")
    cur, ref = np.asarray(current, dtype=float), np.asarray(reference, dtype=float)
    edges = np.unique(np.quantile(ref, np.linspace(0.0, 1.0, bins + 1)[1:-1]))

    def counts(values: np.ndarray) -> np.ndarray:
        return np.bincount(np.searchsorted(edges, values, side="right"), minlength=edges.size + 1)

    return counts(cur), counts(ref)


def category_counts(
    current: Sequence[str | None] | pl.Series, reference: Sequence[str | None] | pl.Series
) -> tuple[np.ndarray, np.ndarray]:
    """Counts per category on each side, over every category either side holds; a missing
    value is a category of its own."""
    cur = pl.Series("value", list(current), dtype=pl.String).fill_null(MISSING)
    ref = pl.Series("value", list(reference), dtype=pl.String).fill_null(MISSING)
    categories = sorted(set(cur.to_list()) | set(ref.to_list()))

    def counts(values: pl.Series) -> np.ndarray:
        tally = values.value_counts()
        found = dict(zip(tally["value"].to_list(), tally["count"].to_list(), strict=True))
        return np.array([found.get(c, 0) for c in categories], dtype=float)

    return counts(cur), counts(ref)


def psi_numeric(
    current: Sequence[float] | np.ndarray | pl.Series,
    reference: Sequence[float] | np.ndarray | pl.Series,
    bins: int = PSI_BINS,
) -> float:
    """PSI of a numeric feature, binned at the reference's quantiles (`numeric_bin_counts`)."""
    return psi_from_counts(*numeric_bin_counts(current, reference, bins))


def psi_categorical(
    current: Sequence[str | None] | pl.Series,
    reference: Sequence[str | None] | pl.Series,
) -> float:
    """PSI of a categorical feature over the shares of every category either side holds; a
    missing value is a category of its own."""
    return psi_from_counts(*category_counts(current, reference))


def psi_limit(current_rows: int, reference_rows: int, bins: int) -> float:
    """The PSI above which a partition warns: PSI_WARNING, or more for small samples.

    Two samples of one distribution give PSI about (1/n + 1/m) * chi-squared(bins - 1)
    (Yurdakul, "Statistical properties of population stability index", 2018): with 30 studies
    against 400 and ten bins that is 0.3 at its mean, so a fixed 0.2 would warn on most small
    days. The limit is the larger of 0.2 and that distribution's 99th percentile.
    """
    if current_rows < 1 or reference_rows < 1:
        raise ValueError("a PSI limit needs at least one value on each side")
    if bins < 2:
        return PSI_WARNING
    from scipy.stats import chi2

    noise = (1 / current_rows + 1 / reference_rows) * float(chi2.ppf(1 - PSI_P_VALUE, bins - 1))
    return max(PSI_WARNING, noise)


def ks_test(
    current: Sequence[float] | np.ndarray | pl.Series,
    reference: Sequence[float] | np.ndarray | pl.Series,
) -> tuple[float, float]:
    """The two-sample Kolmogorov-Smirnov statistic (largest gap between the two empirical
    distribution functions) and its two-sided p-value."""
    from scipy.stats import ks_2samp

    result = ks_2samp(np.asarray(current, dtype=float), np.asarray(reference, dtype=float))
    return float(result.statistic), float(result.pvalue)


def rate_test(flagged: int, scored: int, reference_rate: float) -> float:
    """Two-sided binomial p-value of `flagged` out of `scored` at the reference rate."""
    from scipy.stats import binomtest

    return float(binomtest(flagged, scored, reference_rate).pvalue)


def _sample(frame: pl.DataFrame, column: str) -> Sample:
    return Sample(frame[column], frame["study_instance_uid"].n_unique())


def feature_samples(tables: PartitionTables) -> dict[str, Sample]:
    """Each input and score feature's values, by feature name.

    Acquisition attributes count once per series and value (a CT series' slices share them:
    counting slices would weigh one 300-slice series as 300 scanners); intensities and image
    scores count per image, study scores per study. Only predictions with status ok count.
    """
    samples: dict[str, Sample] = {}
    catalog = tables.catalog
    for column in CATEGORICAL_INPUTS:
        per_series = catalog.unique(["series_instance_uid", column]).with_columns(
            pl.col(column).fill_null(MISSING)
        )
        samples[column] = _sample(per_series, column)
    for column in ACQUISITION_INPUTS:
        per_series = catalog.drop_nulls(column).unique(["series_instance_uid", column])
        samples[column] = _sample(per_series, column)
    ok = tables.predictions.filter(pl.col("status") == _OK)
    for column in INTENSITY_INPUTS:
        samples[column] = _sample(ok.drop_nulls(column), column)
    samples["image_score"] = _sample(ok.drop_nulls("score"), "score")
    samples["study_score"] = _sample(tables.findings.drop_nulls("score"), "score")
    return samples


def _enough(current: Sample, reference: Sample) -> bool:
    return current.studies >= MIN_STUDIES and reference.studies >= MIN_STUDIES


def _row(
    kind: str,
    feature: str,
    statistic: str,
    current: Sample | int,
    reference: Sample | int,
    value: float | None = None,
    p_value: float | None = None,
    threshold: float | None = None,
    warning: bool = False,
) -> dict[str, object]:
    return {
        "kind": kind,
        "feature": feature,
        "statistic": statistic,
        "value": value,
        "p_value": p_value,
        "threshold": threshold,
        "warning": warning,
        "current_rows": current.rows if isinstance(current, Sample) else current,
        "reference_rows": reference.rows if isinstance(reference, Sample) else reference,
    }


def _psi_row(
    kind: str, feature: str, current: Sample, reference: Sample, counts: tuple[np.ndarray, ...]
) -> dict[str, object]:
    now, before = counts
    psi = psi_from_counts(now, before)
    limit = psi_limit(current.rows, reference.rows, now.size)
    return _row(kind, feature, "psi", current, reference, psi, None, limit, psi > limit)


def _categorical_rows(feature: str, current: Sample, reference: Sample) -> list[dict[str, object]]:
    if not _enough(current, reference):
        return [_row("input", feature, "psi", current, reference)]
    counts = category_counts(current.values, reference.values)
    return [_psi_row("input", feature, current, reference, counts)]


def _numeric_rows(
    kind: str, feature: str, current: Sample, reference: Sample
) -> list[dict[str, object]]:
    if not _enough(current, reference):
        return [
            _row(kind, feature, "psi", current, reference),
            _row(kind, feature, "ks", current, reference),
        ]
    counts = numeric_bin_counts(current.values, reference.values)
    statistic, p_value = ks_test(current.values, reference.values)
    shifted = p_value < KS_P_VALUE and statistic >= KS_MIN_STATISTIC
    return [
        _psi_row(kind, feature, current, reference, counts),
        _row(kind, feature, "ks", current, reference, statistic, p_value, KS_P_VALUE, shifted),
    ]


def positive_rate_row(
    current: pl.DataFrame, reference: pl.DataFrame, band: tuple[float, float] | None
) -> dict[str, object]:
    """The flagged share of scored studies in `current` (study findings): a warning when it
    leaves the monitoring `band` (low, high), or when a binomial test against the reference
    window's rate gives p < RATE_P_VALUE.

    `threshold` holds the band limit nearest to the rate (null without a band); `p_value` the
    test against the reference (null without enough reference studies). The band holds
    whatever the reference, so it can warn on a programme's first day.
    """
    scored, ref_scored = current.drop_nulls("score"), reference.drop_nulls("score")
    n, ref_n = scored.height, ref_scored.height
    if n < MIN_STUDIES:
        return _row("output", POSITIVE_RATE, POSITIVE_RATE, n, ref_n)
    flagged = int(scored["flag"].fill_null(False).sum())
    rate = flagged / n
    threshold, outside = None, False
    if band is not None:
        low, high = band
        threshold = low if rate < (low + high) / 2 else high
        outside = not low <= rate <= high
    p_value = None
    if ref_n >= MIN_STUDIES:
        reference_rate = int(ref_scored["flag"].fill_null(False).sum()) / ref_n
        p_value = rate_test(flagged, n, reference_rate)
    far = p_value is not None and p_value < RATE_P_VALUE
    return _row(
        "output", POSITIVE_RATE, POSITIVE_RATE, n, ref_n, rate, p_value, threshold, outside or far
    )


def drift_rows(
    current: PartitionTables,
    reference: PartitionTables,
    *,
    batch_id: str,
    programme: str,
    reference_batches: int,
    positive_rate_band: tuple[float, float] | None,
    computed_at: datetime,
) -> pl.DataFrame:
    """The `DRIFT_METRICS` rows of one partition against its reference window: PSI for every
    input and score feature, KS for the numeric ones, and the positive rate.

    `threshold` is the limit each row was held to: the PSI limit for its sample sizes
    (`psi_limit`), KS_P_VALUE for KS, the nearest band limit for the positive rate. A feature
    with fewer than MIN_STUDIES studies on either side (always so without a reference) gets
    rows with null value and threshold and no warning; its row counts say how many.
    """
    now, before = feature_samples(current), feature_samples(reference)
    rows = [_categorical_rows(f, now[f], before[f]) for f in CATEGORICAL_INPUTS]
    rows += [
        _numeric_rows("input", f, now[f], before[f])
        for f in (*ACQUISITION_INPUTS, *INTENSITY_INPUTS)
    ]
    rows += [_numeric_rows("output", f, now[f], before[f]) for f in SCORE_OUTPUTS]
    rows.append([positive_rate_row(current.findings, reference.findings, positive_rate_band)])
    stamp = {
        "batch_id": batch_id,
        "programme": programme,
        "reference_batches": reference_batches,
        "computed_at": computed_at,
    }
    return frame_of([{**row, **stamp} for group in rows for row in group], DRIFT_METRICS)


def warnings_of(metrics: pl.DataFrame, kind: str) -> pl.DataFrame:
    """The rows of `kind` ("input" or "output") that warn: feature, statistic and values."""
    return metrics.filter((pl.col("kind") == kind) & pl.col("warning")).select(
        "feature", "statistic", "value", "p_value", "threshold"
    )
