from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import polars as pl
import pytest

from screenlake.report import (
    SECTIONS,
    Nights,
    ReportInputs,
    ReportPrivacyError,
    read_nights,
    real_dates_in,
    render_report,
    write_page,
)
from screenlake.report.lake import empty_by_night
from screenlake.report.metrics import (
    check_status,
    drift_indicators,
    night_volumes,
    positive_rate_chart,
    quarantine_reasons,
    score_windows,
)
from screenlake.tables import (
    DEIDENTIFICATION_AUDIT,
    DRIFT_METRICS,
    PERFORMANCE_AUDIT,
    STUDY_FINDINGS,
    VALIDATED_FINDINGS,
    TableSchema,
    frame_of,
    write_parquet,
)

# The real days of the fixture's three nights: they must never reach the page.
DAYS = (date(2024, 3, 11), date(2024, 3, 12), date(2024, 3, 13))
BATCHES = ("Bkq3xv", "Bz81aa", "Bm0c4d")
GENERATED = datetime(2030, 1, 2, 3, 4, tzinfo=UTC)
NOW = datetime(2030, 1, 2, tzinfo=UTC)
CHROMIUM = "chromium"
CHROMIUM_TIMEOUT_S = 60


def _finding(batch: str, n: int, score: float | None, model: str = "cxr_ref") -> dict[str, object]:
    return {
        "batch_id": batch,
        "programme": "cxr_tb",
        "study_instance_uid": f"2.25.{batch}{n}",
        "patient_pseudonym": f"SL{n:06d}",
        "study_date": date(2023, 7, 1) + timedelta(days=n),  # shifted dates, as in the lake
        "score": score,
        "flag": None if score is None else score >= 0.5,
        "priority_rank": n,
        "instances_scored": 1,
        "instances_failed": 0 if score is not None else 1,
        "threshold": 0.5,
        "model_name": model,
        "model_version": "2.0.0",
        "weights_sha256": "a" * 64,
        "validated_at": NOW,
    }


def _findings() -> list[dict[str, object]]:
    scores: dict[str, list[float | None]] = {
        BATCHES[0]: [0.1, 0.2, 0.7, 0.3, None],
        BATCHES[1]: [0.05, 0.9, 0.4, 0.6],
        BATCHES[2]: [0.8, 0.95, 0.85, 0.2, 0.75, 0.1],
    }
    return [_finding(b, n, s) for b, values in scores.items() for n, s in enumerate(values)]


def _audit() -> list[dict[str, object]]:
    rows = []
    for b, batch in enumerate(BATCHES):
        for ordinal in range(6):
            reason = None
            if ordinal == 5:
                reason = "not a DICOM file: no DICM preamble" if b != 1 else "empty file"
            rows.append(
                {
                    "batch_id": batch,
                    "programme": "cxr_tb",
                    "ordinal": ordinal,
                    "outcome": "quarantined" if reason else "deidentified",
                    "reason": reason,
                    "profile_version": "1",
                    "actions_applied": 3,
                    "kept_text_cleaned": 0,
                    "sop_instance_uid": None,
                    "research_path": None,
                    "processed_at": NOW,
                }
            )
    return rows


def _drift() -> list[dict[str, object]]:
    base = {
        "batch_id": BATCHES[2], "programme": "cxr_tb", "p_value": None, "threshold": 0.2,
        "reference_batches": 2, "reference_rows": 9, "current_rows": 6, "computed_at": NOW,
    }  # fmt: skip
    return [
        {**base, "kind": "input", "feature": "input_mean", "statistic": "psi", "value": 0.05,
         "warning": False},
        # A value that HTML must escape, as any text from the lake might hold.
        {**base, "kind": "input", "feature": "manufacturer <ACME & Co>", "statistic": "psi",
         "value": 0.41, "warning": True},
        {**base, "batch_id": BATCHES[1], "kind": "output", "feature": "study_score",
         "statistic": "ks", "value": 0.3, "warning": True},
    ]  # fmt: skip


def _performance() -> list[dict[str, object]]:
    row = {
        "batch_id": BATCHES[2], "programme": "cxr_tb", "site": "all", "device_model": "all",
        "model_name": "cxr_ref", "model_version": "2.0.0", "threshold": 0.5, "studies": 15,
        "positives": 6, "auc": 0.91, "auc_low": 0.8, "auc_high": 0.97, "sensitivity": 0.83,
        "sensitivity_low": 0.44, "sensitivity_high": 0.97, "specificity": 0.78,
        "specificity_low": 0.45, "specificity_high": 0.94, "ppv": 0.71, "ppv_low": 0.36,
        "ppv_high": 0.92, "computed_at": NOW,
    }  # fmt: skip
    return [{**row, "window": "all_time"}, {**row, "window": "last_30_days", "studies": 9}]


def _checks() -> list[dict[str, object]]:
    every_night: list[dict[str, object]] = [
        {"asset": "instance_catalog", "check": "sop_instance_uid_unique", "night": n,
         "passed": True, "severity": "ERROR"} for n in (1, 2, 3)
    ]  # fmt: skip
    return every_night + [
        {"asset": "deidentified_instances", "check": "no_identifiers_in_research_zone",
         "night": 3, "passed": False, "severity": "ERROR"},
        {"asset": "validated_findings", "check": "gx_suite", "night": 2, "passed": False,
         "severity": "WARN"},
    ]  # fmt: skip


def _write_lake(root: Path, table: TableSchema, rows: list[dict[str, object]]) -> Path:
    folder = root / table.name / "programme=cxr_tb"
    frame = frame_of(rows, table)
    for (batch,), part in frame.group_by("batch_id"):
        write_parquet(part, table, folder / f"{batch}.parquet")
    return folder


@pytest.fixture
def inputs(tmp_path: Path) -> ReportInputs:
    nights = Nights.in_day_order(BATCHES)
    read = {
        table.name: read_nights(_write_lake(tmp_path, table, rows), table, nights)
        for table, rows in (
            (VALIDATED_FINDINGS, _findings()),
            (STUDY_FINDINGS, [{k: v for k, v in r.items() if k != "validated_at"}
                              for r in _findings()]),
            (DEIDENTIFICATION_AUDIT, _audit()),
            (DRIFT_METRICS, _drift()),
            (PERFORMANCE_AUDIT, _performance()),
        )
    }  # fmt: skip
    return ReportInputs(
        programme="cxr_tb",
        nights=nights,
        findings=read["validated_findings"],
        scored=read["study_findings"],
        audit=read["deidentification_audit"],
        drift=read["drift_metrics"],
        performance=read["performance_audit"],
        checks=_checks(),
    )


def _empty(nights: Nights) -> ReportInputs:
    return ReportInputs(
        programme="lung_ldct",
        nights=nights,
        findings=empty_by_night(VALIDATED_FINDINGS),
        scored=empty_by_night(STUDY_FINDINGS),
        audit=empty_by_night(DEIDENTIFICATION_AUDIT),
        drift=empty_by_night(DRIFT_METRICS),
        performance=empty_by_night(PERFORMANCE_AUDIT),
    )


def test_rows_take_their_night_in_day_order_and_batches_leave(inputs: ReportInputs) -> None:
    assert sorted(inputs.findings["night"].unique().to_list()) == [1, 2, 3]
    assert "batch_id" not in inputs.findings.columns
    assert inputs.findings.filter(pl.col("night") == 2).height == 4


def test_rows_of_unknown_batches_are_left_out_and_a_missing_folder_is_no_rows(
    tmp_path: Path,
) -> None:
    folder = _write_lake(tmp_path, VALIDATED_FINDINGS, _findings())
    only_two = read_nights(folder, VALIDATED_FINDINGS, Nights.in_day_order(BATCHES[:2]))
    assert only_two["night"].unique().sort().to_list() == [1, 2]
    missing = read_nights(tmp_path / "nothing", VALIDATED_FINDINGS, Nights.in_day_order(BATCHES))
    assert missing.is_empty() and "night" in missing.columns
    with pytest.raises(ValueError, match="repeat"):
        Nights.in_day_order([BATCHES[0], BATCHES[0]])


def test_volumes_count_studies_flags_and_quarantine_per_night(inputs: ReportInputs) -> None:
    volumes = night_volumes(inputs).sort("night")
    assert volumes["studies"].to_list() == [5, 4, 6]
    assert volumes["scored"].to_list() == [4, 4, 6]
    assert volumes["flagged"].to_list() == [1, 2, 4]
    assert volumes["quarantined"].to_list() == [1, 1, 1]
    assert volumes["held_back"].to_list() == [0, 0, 0]


def test_a_night_scored_but_not_validated_is_held_back(inputs: ReportInputs) -> None:
    unpublished = ReportInputs(
        **{**inputs.__dict__, "findings": inputs.findings.filter(pl.col("night") != 3)}
    )
    volumes = night_volumes(unpublished).sort("night")
    assert volumes["studies"].to_list() == [5, 4, 0]
    assert volumes["held_back"].to_list() == [0, 0, 6]


def test_p_chart_limits_are_three_binomial_sigmas_around_the_pooled_rate() -> None:
    volumes = pl.DataFrame(
        {"night": [1, 2, 3, 4], "scored": [100, 100, 25, 0], "flagged": [5, 35, 5, 0]},
        schema={"night": pl.Int32, "scored": pl.Int64, "flagged": pl.Int64},
    )
    chart = positive_rate_chart(volumes).sort("night")
    assert chart["night"].to_list() == [1, 2, 3]  # a night without scores has no rate
    centre = 45 / 225
    assert chart["centre"].to_list() == pytest.approx([centre] * 3)
    width_100 = 3 * (centre * (1 - centre) / 100) ** 0.5
    assert chart["upper"][0] == pytest.approx(centre + width_100)
    assert chart["lower"][0] == pytest.approx(centre - width_100)
    assert chart["lower"][2] == 0.0  # clipped: a rate is never below 0
    assert chart["outside"].to_list() == [True, True, False]


def test_score_windows_split_the_latest_night_from_the_nights_before(
    inputs: ReportInputs,
) -> None:
    current, reference = score_windows(inputs.findings, 3)
    assert sorted(current) == [0.1, 0.2, 0.75, 0.8, 0.85, 0.95]
    assert len(reference) == 8  # nights 1 and 2, without the unscored study
    assert score_windows(inputs.findings, None) == ([], [])


def test_drift_shows_the_latest_night_with_warnings_first(inputs: ReportInputs) -> None:
    night, rows = drift_indicators(inputs.drift)
    assert night == 3
    assert rows["warning"].to_list() == [True, False]
    assert rows["feature"][0] == "manufacturer <ACME & Co>"


def test_quarantine_reasons_group_by_the_kind_of_reason(inputs: ReportInputs) -> None:
    reasons = quarantine_reasons(inputs.audit)
    assert reasons.rows() == [("not a DICOM file", 2, 2, 3), ("empty file", 1, 1, 2)]


def test_check_status_shows_each_checks_latest_nights() -> None:
    status = check_status(_checks(), Nights.in_day_order(BATCHES))
    by_check = {r["check"]: r for r in status.iter_rows(named=True)}
    assert by_check["no_identifiers_in_research_zone"]["night 3"] == "failed"
    assert by_check["no_identifiers_in_research_zone"]["night 1"] is None
    assert by_check["gx_suite"]["night 2"] == "warning"
    assert by_check["sop_instance_uid_unique"]["night 1"] == "passed"


def test_the_page_has_every_section_with_charts_and_no_external_resource(
    inputs: ReportInputs,
) -> None:
    report = render_report(inputs, GENERATED, DAYS)
    page = report.html
    for heading in SECTIONS:
        assert f"<h2>{heading}</h2>" in page
    assert report.sections_with_data == SECTIONS
    assert page.count("<svg") == 4  # volumes, positive rate, scores, performance
    assert "<script" not in page and "<link" not in page and "<img" not in page
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page)
    assert "<!DOCTYPE svg" not in page and "<?xml" not in page
    assert "Flags for clinician review, never diagnoses" in page
    assert "2030-01-02 03:04 UTC" in page


def test_the_page_shows_no_real_day_no_batch_token_and_no_identifier(
    inputs: ReportInputs,
) -> None:
    page = render_report(inputs, GENERATED, DAYS).html
    for day in DAYS:
        assert day.isoformat() not in page and day.strftime("%Y%m%d") not in page
    # Nor any date at all but the generation stamp: SVG metadata would carry one otherwise.
    assert re.findall(r"\d{4}-\d{2}-\d{2}", page) == ["2030-01-02"]
    for token in BATCHES:
        assert token not in page
    assert "SL000001" not in page and "2.25." not in page


def test_values_are_escaped(inputs: ReportInputs) -> None:
    page = render_report(inputs, GENERATED, DAYS).html
    assert "manufacturer &lt;ACME &amp; Co&gt;" in page
    assert "<ACME" not in page


def test_a_real_day_in_the_content_stops_the_page(inputs: ReportInputs) -> None:
    leaky = ReportInputs(**{**inputs.__dict__, "programme": f"cxr_tb {DAYS[1].isoformat()}"})
    with pytest.raises(ReportPrivacyError, match="real study date"):
        render_report(leaky, GENERATED, DAYS)
    assert real_dates_in("scanned 12/03/2024 at", DAYS) == ["12/03/2024"]
    assert real_dates_in("uid 1.2.20240312999", DAYS) == []  # inside a longer number


def test_empty_tables_render_as_no_data_yet_sections() -> None:
    for nights in (Nights.in_day_order([]), Nights.in_day_order(BATCHES)):
        report = render_report(_empty(nights), GENERATED, DAYS)
        for heading in SECTIONS:
            assert f"<h2>{heading}</h2>" in report.html
        assert "<svg" not in report.html or nights.total
        assert "No drift metrics yet." in report.html
        assert "No performance audit yet" in report.html
        assert "No check results yet." in report.html
    assert render_report(_empty(Nights.in_day_order([])), GENERATED, ()).sections_with_data == ()


def render_in_chromium(html: Path, png: Path, profile: Path) -> None:
    """Screenshot `html` with headless Chromium, started and stopped by its process id.

    A missing Chromium fails (never skips): the report's rendering is part of what is tested.
    """
    binary = shutil.which(CHROMIUM)
    if binary is None:
        pytest.fail(
            "Chromium is needed to check that the report renders: run "
            "'sudo apt-get install chromium' (Debian), or 'make servers'"
        )
    command = [
        binary, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
        "--hide-scrollbars", "--disable-dev-shm-usage", f"--user-data-dir={profile}",
        f"--screenshot={png}", "--window-size=1280,2000", html.resolve().as_uri(),
    ]  # fmt: skip
    # Its own session, so that the renderer and helper processes it starts stop with it.
    process = subprocess.Popen(
        command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True
    )
    try:
        _, errors = process.communicate(timeout=CHROMIUM_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        pytest.fail(f"Chromium did not render {html.name} within {CHROMIUM_TIMEOUT_S} s")
    assert process.returncode == 0, errors.decode(errors="replace")[-2000:]


def distinct_colours(png: Path) -> int:
    """How many different colours the image has."""
    from PIL import Image

    with Image.open(png) as image:
        colours = image.convert("RGB").getcolors(maxcolors=1 << 24)
    assert colours is not None
    return len(colours)


def test_the_page_renders_in_headless_chromium(inputs: ReportInputs, tmp_path: Path) -> None:
    html, png = tmp_path / "report.html", tmp_path / "report.png"
    write_page(render_report(inputs, GENERATED, DAYS).html, html)
    render_in_chromium(html, png, tmp_path / "chromium-profile")
    assert png.stat().st_size > 10_000
    # Anti-aliased charts: a blank page has one colour, a page of text alone a few hundred.
    assert distinct_colours(png) > 1000
