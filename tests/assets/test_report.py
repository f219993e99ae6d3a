"""The programme report asset on a materialised synthetic export, rendered in Chromium."""

from __future__ import annotations

import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from orchestration.definitions import defs
from orchestration.partitions import partition_key
from screenlake import layout
from screenlake.report import SECTIONS
from screenlake.verify import index_originals
from tests.assets.zones import local_resources
from tests.conftest import TEST_PSEUDONYM_KEY, Export
from tests.screenlake.test_report import distinct_colours, render_in_chromium

pytestmark = pytest.mark.slow

PROGRAMME = "cxr_tb"
# The report and everything it reads, with their checks; not the PHI-side publications.
UPSTREAM = dg.AssetSelection.assets("programme_report").upstream()


@dataclass(frozen=True)
class ReportRun:
    """The zones after both days of one programme ran, and the last run's result."""

    phi: Path
    research: Path
    last: dg.ExecuteInProcessResult


@pytest.fixture(scope="module")
def report_run(
    synthetic_export: Export,
    session_keys: dict[str, str],
    tmp_path_factory: pytest.TempPathFactory,
) -> ReportRun:
    root = tmp_path_factory.mktemp("report-zones")
    resources = local_resources(synthetic_export.drop, root)
    # The demo's ground truth, where the performance audit looks for labels.
    labels = root / "phi" / layout.DEMO_LABELS
    labels.parent.mkdir(parents=True)
    shutil.copyfile(synthetic_export.labels, labels)
    graph: list[Any] = [*defs.assets, *defs.asset_checks]  # type: ignore[list-item, misc]
    instance = dg.DagsterInstance.ephemeral()
    result = None
    for day in synthetic_export.days:
        key = partition_key(day, PROGRAMME)
        result = dg.materialize(
            graph, selection=UPSTREAM, resources=resources, partition_key=key, instance=instance
        )
        assert result.success
    assert result is not None
    return ReportRun(root / "phi", root / "research", result)


def _page(run: ReportRun) -> str:
    return (run.research / layout.programme_report_path(PROGRAMME)).read_text(encoding="utf-8")


def _metadata(run: ReportRun) -> dict[str, Any]:
    [event] = [
        e
        for e in run.last.get_asset_materialization_events()
        if e.asset_key == dg.AssetKey("programme_report")
    ]
    return {k: v.value for k, v in event.materialization.metadata.items()}


def test_the_report_lands_in_the_research_zone_with_every_section(
    report_run: ReportRun, synthetic_export: Export
) -> None:
    page = _page(report_run)
    for heading in SECTIONS:
        assert f"<h2>{heading}</h2>" in page
    nights = len(synthetic_export.days)
    assert f"<dt>nights</dt><dd>{nights}</dd>" in page
    metadata = _metadata(report_run)
    assert metadata["nights"] == nights
    assert metadata["this_partition_is_night"] == nights
    assert metadata["path"] == f"research zone: {layout.programme_report_path(PROGRAMME)}"
    assert set(metadata["sections_with_data"]) == set(SECTIONS)
    # Only the programme that ran has a report.
    assert not (report_run.research / "reports" / "programme=lung_ldct").exists()
    assert not (report_run.phi / "reports" / f"programme={PROGRAMME}").exists()


def test_the_report_shows_each_nights_check_results(report_run: ReportRun) -> None:
    page = _page(report_run)
    row = re.search(r"<tr><td>instance_catalog</td><td>catalogue_suite_passes</td>(.*?)</tr>", page)
    assert row is not None
    assert row.group(1).count(">passed<") == 2  # one per night


def test_the_report_holds_no_real_date_no_batch_token_and_no_identifier(
    report_run: ReportRun, synthetic_export: Export
) -> None:
    page = _page(report_run)
    key = TEST_PSEUDONYM_KEY.encode()
    for day in synthetic_export.days:
        assert day.isoformat() not in page and day.strftime("%Y%m%d") not in page
        assert layout.Batch(day, PROGRAMME).research_id(key) not in page
    index = index_originals(sorted((report_run.phi / "raw").rglob("*.dcm")))
    assert len(index.tokens) > 20
    text = re.sub(r"<svg.*?</svg>", " ", page, flags=re.DOTALL)  # drawing commands, not values
    assert index.match(re.sub(r"<[^>]+>", " ", text)) is None


def test_the_report_renders_in_headless_chromium(report_run: ReportRun, tmp_path: Path) -> None:
    html = report_run.research / layout.programme_report_path(PROGRAMME)
    png = tmp_path / "report.png"
    render_in_chromium(html, png, tmp_path / "chromium-profile")
    assert distinct_colours(png) > 1000
