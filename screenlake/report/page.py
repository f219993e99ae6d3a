"""The programme report as one self-contained HTML page: inline CSS, inline SVG charts, no
script and no external resource, so it opens anywhere without screenlake installed.

The page lies in the research zone, beside shifted study dates: it names nights by ordinal
and never prints a real study day. `render_report` refuses to produce a page whose content
holds one of the days it is given.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from html import escape
from pathlib import Path

import polars as pl

from screenlake.errors import ReportPrivacyError
from screenlake.report import metrics, plots
from screenlake.report.lake import NIGHT

SUMMARY = "Summary"
VOLUMES = "Volumes per night"
POSITIVE_RATE = "Positive rate with control limits"
SCORES = "Score distribution against the reference window"
DRIFT = "Drift indicators"
CHECKS = "Data-quality checks"
PERFORMANCE = "Performance audit against labelled cases"
QUARANTINE = "Quarantine reasons"
SECTIONS = (SUMMARY, VOLUMES, POSITIVE_RATE, SCORES, DRIFT, CHECKS, PERFORMANCE, QUARANTINE)

DISCLAIMER = "Flags for clinician review, never diagnoses."

_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:2rem auto;
max-width:1100px;padding:0 1rem;color:#1a202c;background:#fff}
h1{font-size:1.6rem;margin-bottom:.2rem}h2{font-size:1.2rem;margin-top:2rem;
border-bottom:2px solid #e2e8f0;padding-bottom:.2rem}
p.note{color:#4a5568;font-size:.9rem}p.empty{color:#718096;font-style:italic}
table{border-collapse:collapse;font-size:.85rem;margin:.5rem 0}
th,td{border:1px solid #e2e8f0;padding:.25rem .5rem;text-align:left}th{background:#f7fafc}
td.num{text-align:right;font-variant-numeric:tabular-nums}
.passed{background:#c6f6d5}.failed{background:#fed7d7;font-weight:bold}
.warning{background:#feebc8}.missing{color:#a0aec0}
dl.summary{display:grid;grid-template-columns:max-content auto;gap:.2rem 1.5rem}
dl.summary dt{color:#4a5568}dl.summary dd{margin:0;font-weight:600}
svg{max-width:100%;height:auto}
footer{margin-top:3rem;border-top:1px solid #e2e8f0;padding-top:.5rem;color:#4a5568}
footer strong{color:#c53030}
"""


@dataclass(frozen=True)
class RenderedReport:
    """The page, and which of its sections had data to show."""

    html: str
    sections_with_data: tuple[str, ...]


@dataclass(frozen=True)
class _Section:
    heading: str
    body: str
    has_data: bool


def render_report(
    inputs: metrics.ReportInputs,
    generated_at: datetime,
    forbidden_days: Iterable[date],
) -> RenderedReport:
    """The programme's report page. `forbidden_days` are the real days of its nights: if the
    page's content would show one, ReportPrivacyError is raised and no page is returned."""
    volumes = metrics.night_volumes(inputs)
    sections = [
        _summary(inputs, volumes),
        _volumes(volumes),
        _positive_rate(inputs, volumes),
        _scores(inputs),
        _drift(inputs.drift),
        _checks(inputs),
        _performance(inputs),
        _quarantine(inputs.audit),
    ]
    title = f"{inputs.programme} screening programme report"
    content = "\n".join(
        [
            f"<h1>{escape(title)}</h1>",
            (
                f'<p class="note">{inputs.nights.total} nights, numbered in day order. This '
                "page shows no calendar dates: the research zone holds shifted study dates, and "
                "a real date beside them would reveal the shift.</p>"
            ),
            *(f"<section><h2>{escape(s.heading)}</h2>\n{s.body}</section>" for s in sections),
        ]
    )
    leaked = real_dates_in(content, forbidden_days)
    if leaked:
        raise ReportPrivacyError(
            f"the {inputs.programme} report would show {len(leaked)} real study date(s); it was "
            "not written. Find which lake value carries a date and remove it upstream."
        )
    stamp = generated_at.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")
    page = (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f'<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{escape(title)}</title><style>{_CSS}</style></head><body>\n{content}\n"
        f"<footer><p><strong>{escape(DISCLAIMER)}</strong></p>"
        f"<p>Generated at {escape(stamp)} by screenlake.</p></footer></body></html>\n"
    )
    return RenderedReport(page, tuple(s.heading for s in sections if s.has_data))


def real_dates_in(text: str, days: Iterable[date]) -> list[str]:
    """The spellings of `days` that occur in `text` (ISO, compact, day-first and slashed)."""
    found = []
    for day in days:
        for spelling in (
            day.isoformat(),
            day.strftime("%Y%m%d"),
            day.strftime("%Y/%m/%d"),
            day.strftime("%d-%m-%Y"),
            day.strftime("%d/%m/%Y"),
            day.strftime("%d.%m.%Y"),
        ):
            if re.search(rf"(?<!\d){re.escape(spelling)}(?!\d)", text):
                found.append(spelling)
    return found


def _summary(inputs: metrics.ReportInputs, volumes: pl.DataFrame) -> _Section:
    figures = metrics.summary(inputs, volumes)
    items = "".join(f"<dt>{escape(k)}</dt><dd>{escape(v)}</dd>" for k, v in figures.items())
    return _Section(SUMMARY, f'<dl class="summary">{items}</dl>', inputs.nights.total > 0)


def _volumes(volumes: pl.DataFrame) -> _Section:
    chart = plots.volumes_svg(volumes)
    if chart is None:
        return _Section(VOLUMES, _empty("No nights yet."), False)
    latest = volumes.sort(NIGHT).tail(14)
    note = _note("Studies published, flagged for review and files quarantined, per night.")
    return _Section(VOLUMES, note + chart + _table(latest), True)


def _positive_rate(inputs: metrics.ReportInputs, volumes: pl.DataFrame) -> _Section:
    chart_rows = metrics.positive_rate_chart(volumes)
    chart = plots.positive_rate_svg(chart_rows, inputs.limits)
    if chart is None:
        return _Section(POSITIVE_RATE, _empty("No scored studies yet."), False)
    outside = chart_rows.filter(pl.col("outside"))["night"].to_list()
    note = _note(
        "A p-chart: the mean rate over all nights, and limits three binomial standard errors "
        "either side of it for each night's number of scored studies. "
        + (
            "Nights outside the limits: " + ", ".join(str(n) for n in outside) + "."
            if outside
            else "No night falls outside the limits."
        )
    )
    return _Section(POSITIVE_RATE, note + chart, True)


def _scores(inputs: metrics.ReportInputs) -> _Section:
    current, reference = metrics.score_windows(inputs.findings, inputs.nights.latest)
    thresholds = inputs.findings.sort(NIGHT)["threshold"].drop_nulls()
    threshold = float(thresholds[-1]) if len(thresholds) else None
    chart = plots.score_histogram_svg(current, reference, threshold)
    if chart is None:
        return _Section(SCORES, _empty("No study scores yet."), False)
    note = _note(
        f"Study scores of the latest night against the up to {metrics.REFERENCE_NIGHTS} "
        "nights before it."
    )
    return _Section(SCORES, note + chart, True)


def _drift(drift: pl.DataFrame) -> _Section:
    night, rows = metrics.drift_indicators(drift)
    if night is None:
        return _Section(DRIFT, _empty("No drift metrics yet."), False)
    warnings = int(rows["warning"].sum())
    note = _note(f"Night {night}: {warnings} warning(s) among {rows.height} indicators.")
    return _Section(DRIFT, note + _table(rows, flag_column="warning"), True)


def _checks(inputs: metrics.ReportInputs) -> _Section:
    status = metrics.check_status(inputs.checks, inputs.nights)
    if status.is_empty():
        return _Section(CHECKS, _empty("No check results yet."), False)
    note = _note("The latest evaluation of each check, for the latest nights.")
    return _Section(CHECKS, note + _table(status, outcome_cells=True), True)


def _performance(inputs: metrics.ReportInputs) -> _Section:
    night, rows = metrics.performance_rows(inputs.performance)
    if night is None:
        return _Section(PERFORMANCE, _empty("No performance audit yet (no labelled cases)."), False)
    chart = plots.performance_svg(rows, inputs.limits) or ""
    shown = pl.DataFrame([_performance_row(row) for row in rows.iter_rows(named=True)])
    note = _note(f"As of night {night}, with confidence intervals.")
    return _Section(PERFORMANCE, note + chart + _table(shown), True)


def _performance_row(row: dict[str, object]) -> dict[str, object]:
    """One audit row for reading: each estimate with its interval in one cell."""
    shown = {k: row[k] for k in ("window", "site", "device_model", "model_version")}
    shown |= {"studies": row["studies"], "positives": row["positives"]}
    for metric in plots.PERFORMANCE_METRICS:
        value, low, high = row[metric], row[f"{metric}_low"], row[f"{metric}_high"]
        interval = f" ({low:.3f}\u2013{high:.3f})" if low is not None and high is not None else ""
        shown[metric] = None if value is None else f"{value:.3f}{interval}"
    return shown


def _quarantine(audit: pl.DataFrame) -> _Section:
    reasons = metrics.quarantine_reasons(audit)
    if reasons.is_empty():
        files = audit.height
        text = f"No file quarantined among {files}." if files else "No files processed yet."
        return _Section(QUARANTINE, _empty(text), False)
    note = _note("Quarantined files by kind of reason over all nights.")
    return _Section(QUARANTINE, note + _table(reasons), True)


def _empty(text: str) -> str:
    return f'<p class="empty">{escape(text)}</p>'


def _note(text: str) -> str:
    return f'<p class="note">{escape(text)}</p>'


def _cell(value: object) -> tuple[str, str]:
    """A value's text and CSS class."""
    if value is None:
        return "\u2014", "missing"
    if isinstance(value, bool):
        return ("yes" if value else "no"), ""
    if isinstance(value, float):
        return f"{value:.3f}", "num"
    if isinstance(value, int):
        return str(value), "num"
    return str(value), ""


def _table(
    frame: pl.DataFrame, *, flag_column: str | None = None, outcome_cells: bool = False
) -> str:
    head = "".join(f"<th>{escape(str(c))}</th>" for c in frame.columns)
    rows = []
    for row in frame.iter_rows(named=True):
        cells = []
        for column, value in row.items():
            text, css = _cell(value)
            if outcome_cells and value in ("passed", "failed", "warning"):
                css = str(value)
            if column == flag_column and value:
                text, css = "warning", "warning"
            attribute = f' class="{css}"' if css else ""
            cells.append(f"<td{attribute}>{escape(text)}</td>")
        rows.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def write_page(html: str, path: Path) -> None:
    """Write the page atomically (temp file, then rename): a reader never sees half a report."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(html)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
