"""The programme report: one self-contained HTML page per screening programme, in the research
zone, from the lake's tables and the latest check results. Pure: no Dagster, no zones; the
`programme_report` asset hands it local files and plain values."""

from __future__ import annotations

from screenlake.errors import ReportPrivacyError
from screenlake.report.lake import Nights, read_nights
from screenlake.report.metrics import ReportInputs
from screenlake.report.page import (
    SECTIONS,
    RenderedReport,
    real_dates_in,
    render_report,
    write_page,
)

__all__ = [
    "SECTIONS",
    "Nights",
    "RenderedReport",
    "ReportInputs",
    "ReportPrivacyError",
    "read_nights",
    "real_dates_in",
    "render_report",
    "write_page",
]
