"""The report's charts, each drawn with matplotlib into an inline SVG string.

Figures are built with matplotlib's object API (no pyplot, no global backend), and saved
without the creation date that matplotlib writes into SVG metadata by default: a generation
date beside a night could help date that night. Each figure salts its element ids, so several
SVGs can share one HTML page.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import polars as pl

from screenlake.report.lake import NIGHT

if TYPE_CHECKING:
    from screenlake.inference.manifest import MonitoringLimits

_BLUE, _ORANGE, _GREY, _RED = "#2b6cb0", "#dd6b20", "#a0aec0", "#c53030"
PERFORMANCE_METRICS = ("auc", "sensitivity", "specificity", "ppv")


def _figure(width: float = 8.0, height: float = 3.2) -> Any:
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), layout="constrained")
    return figure


def _svg(figure: Any, name: str) -> str:
    """The figure as an `<svg>` element: no XML prolog, no DOCTYPE, no metadata block."""
    import matplotlib

    buffer = io.StringIO()
    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": f"screenlake-{name}"}):
        figure.savefig(
            buffer,
            format="svg",
            metadata={"Date": None, "Creator": None, "Format": None, "Type": None},
        )
    text = buffer.getvalue()
    return text[text.index("<svg") :].strip()


def _night_axis(axes: Any) -> None:
    from matplotlib.ticker import MaxNLocator

    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes.set_xlabel("night (in day order)")
    axes.grid(axis="y", color="#e2e8f0")
    axes.set_axisbelow(True)


def _legend(figure: Any) -> None:
    """One legend above the axes, where it covers no data."""
    figure.legend(loc="outside upper center", frameon=False, ncols=4, fontsize="small")


def volumes_svg(volumes: pl.DataFrame) -> str | None:
    """Bars per night: studies published, of which flagged, and files quarantined."""
    if volumes.is_empty():
        return None
    figure = _figure()
    axes = figure.add_subplot()
    nights = volumes[NIGHT].to_list()
    width = 0.28
    axes.bar([n - width for n in nights], volumes["studies"].to_list(), width, color=_BLUE,
             label="studies published")  # fmt: skip
    axes.bar(nights, volumes["flagged"].to_list(), width, color=_ORANGE, label="flagged")
    axes.bar([n + width for n in nights], volumes["quarantined"].to_list(), width, color=_GREY,
             label="files quarantined")  # fmt: skip
    axes.set_ylabel("count")
    _night_axis(axes)
    _legend(figure)
    return _svg(figure, "volumes")


def positive_rate_svg(chart: pl.DataFrame, limits: MonitoringLimits | None) -> str | None:
    """The p-chart: nightly positive rate, pooled centre line, 3-sigma limits for each night's
    n, nights outside them in red, and the manifest's accepted band when there is one."""
    if chart.is_empty():
        return None
    figure = _figure()
    axes = figure.add_subplot()
    nights = chart[NIGHT].to_list()
    axes.fill_between(nights, chart["lower"].to_list(), chart["upper"].to_list(), step="mid",
                      color=_BLUE, alpha=0.12, label="3-sigma control limits")  # fmt: skip
    axes.plot(nights, chart["centre"].to_list(), color=_BLUE, linestyle="--", linewidth=1,
              label="mean rate")  # fmt: skip
    axes.plot(nights, chart["rate"].to_list(), color=_BLUE, marker="o", markersize=4,
              linewidth=1.2, label="positive rate")  # fmt: skip
    outside = chart.filter(pl.col("outside"))
    if not outside.is_empty():
        axes.plot(outside[NIGHT].to_list(), outside["rate"].to_list(), linestyle="none",
                  marker="o", markersize=7, color=_RED, label="outside the limits")  # fmt: skip
    if limits is not None:
        for level in (limits.positive_rate_low, limits.positive_rate_high):
            axes.axhline(level, color=_ORANGE, linestyle=":", linewidth=1.2)
        axes.plot([], [], color=_ORANGE, linestyle=":", label="model's accepted band")
    axes.set_ylim(0, 1)
    axes.set_ylabel("flagged / scored studies")
    _night_axis(axes)
    _legend(figure)
    return _svg(figure, "positive-rate")


def score_histogram_svg(
    current: Sequence[float], reference: Sequence[float], threshold: float | None
) -> str | None:
    """Study scores of the latest night against the reference window, as densities on
    [0, 1], with the flagging threshold."""
    if not current and not reference:
        return None
    figure = _figure(8.0, 3.0)
    axes = figure.add_subplot()
    bins = [i / 20 for i in range(21)]
    if reference:
        axes.hist(reference, bins=bins, density=True, color=_GREY, alpha=0.7,
                  label=f"reference window ({len(reference)} studies)")  # fmt: skip
    if current:
        axes.hist(current, bins=bins, density=True, histtype="step", linewidth=2, color=_BLUE,
                  label=f"latest night ({len(current)} studies)")  # fmt: skip
    if threshold is not None:
        axes.axvline(threshold, color=_RED, linestyle="--", linewidth=1, label="threshold")
    axes.set_xlim(0, 1)
    axes.set_xlabel("study score")
    axes.set_ylabel("density")
    _legend(figure)
    return _svg(figure, "scores")


def performance_svg(rows: pl.DataFrame, limits: MonitoringLimits | None) -> str | None:
    """AUC, sensitivity, specificity and PPV with their confidence intervals, one marker per
    window (all sites, all devices), and the model's minimums where the manifest sets them."""
    overall = rows.filter((pl.col("site") == "all") & (pl.col("device_model") == "all"))
    if overall.is_empty():
        return None
    figure = _figure(8.0, 3.2)
    axes = figure.add_subplot()
    windows = overall["window"].unique(maintain_order=True).to_list()
    step = 0.6 / max(len(windows), 1)
    for w, window in enumerate(windows):
        row = overall.filter(pl.col("window") == window).row(0, named=True)
        shown = [
            (m, metric) for m, metric in enumerate(PERFORMANCE_METRICS) if row[metric] is not None
        ]
        xs = [m - 0.3 + step * (w + 0.5) for m, _ in shown]
        ys = [row[metric] for _, metric in shown]
        below = [row[metric] - _or(row[f"{metric}_low"], row[metric]) for _, metric in shown]
        above = [_or(row[f"{metric}_high"], row[metric]) - row[metric] for _, metric in shown]
        axes.errorbar(xs, ys, yerr=[below, above], fmt="o", capsize=4,
                      label=f"{window} ({row['studies']} studies)")  # fmt: skip
    if limits is not None:
        minimums = (limits.minimum_auc, limits.minimum_sensitivity, limits.minimum_specificity)
        for m, minimum in enumerate(minimums):
            axes.hlines(minimum, m - 0.4, m + 0.4, color=_RED, linestyle=":", linewidth=1.5)
        axes.plot([], [], color=_RED, linestyle=":", label="model's minimum")
    axes.set_xticks(range(len(PERFORMANCE_METRICS)), [m.upper() if m in ("auc", "ppv") else m
                                                      for m in PERFORMANCE_METRICS])  # fmt: skip
    axes.set_ylim(0, 1.05)
    axes.set_ylabel("estimate and confidence interval")
    axes.grid(axis="y", color="#e2e8f0")
    _legend(figure)
    return _svg(figure, "performance")


def _or(value: float | None, default: float) -> float:
    return default if value is None else value
