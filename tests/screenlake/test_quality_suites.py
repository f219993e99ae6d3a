"""The Great Expectations suites on clean frames and on frames with one defect each."""

from __future__ import annotations

import dataclasses
import math
from datetime import date
from pathlib import Path

import polars as pl
import pytest

from screenlake import gx_runner
from screenlake import quality_suites as qs
from screenlake.inference.manifest import ModelManifest, MonitoringLimits, load_manifest
from screenlake.keys import keyed_uid, patient_pseudonym
from screenlake.layout import Batch
from screenlake.tables import (
    INSTANCE_CATALOG,
    INSTANCE_PREDICTIONS,
    STUDY_FINDINGS,
    VALIDATED_FINDINGS,
    frame_of,
)

PROGRAMME = "cxr_tb"
MODELS = Path(__file__).resolve().parents[2] / "models"
Frames = dict[str, pl.DataFrame]


@pytest.fixture(scope="module")
def manifest() -> ModelManifest:
    loaded = load_manifest(MODELS / "cxr_tb_reference" / "manifest.json")
    limits = MonitoringLimits(0.05, 0.6, 0.85, 0.8, 0.8)
    return dataclasses.replace(loaded, monitoring=limits)


@pytest.fixture(scope="module")
def batch_id() -> str:
    return Batch(date(2024, 3, 1), PROGRAMME).research_id(b"test-key-for-the-quality-suites")


def _frames(batch_id: str, manifest: ModelManifest, studies: int = 4, flagged: int = 1) -> Frames:
    """A clean batch: `studies` studies of two images each, the first `flagged` flagged."""
    key = b"test-key-for-the-quality-suites"
    catalog, predictions, findings = [], [], []
    provenance = {
        "model_name": manifest.name,
        "model_version": manifest.version,
        "weights_sha256": manifest.weights_sha256,
    }
    for s in range(studies):
        study, series = keyed_uid(key, f"study{s}"), keyed_uid(key, f"series{s}")
        patient = patient_pseudonym(key, f"patient{s}")
        score = 0.9 if s < flagged else 0.1
        for i in range(2):
            sop = keyed_uid(key, f"sop{s}.{i}")
            common = {"batch_id": batch_id, "programme": PROGRAMME, "sop_instance_uid": sop}
            catalog.append(
                {
                    **common,
                    "series_instance_uid": series,
                    "study_instance_uid": study,
                    "patient_pseudonym": patient,
                    "sop_class_uid": "1.2.840.10008.5.1.4.1.1.1.1",
                    "transfer_syntax_uid": "1.2.840.10008.1.2.1",
                    "modality": "DX",
                    "body_part_examined": "CHEST",
                    "study_date": date(2023, 11, 2),
                    "series_number": 1,
                    "instance_number": i + 1,
                    "rows": 512,
                    "columns": 512,
                    "number_of_frames": 1,
                    "pixel_spacing_row_mm": 0.2,
                    "pixel_spacing_col_mm": 0.2,
                    "kvp": 120.0,
                    "manufacturer": "ACME Imaging",
                    "manufacturer_model_name": "Imager 3000",
                    "patient_sex": "F",
                    "patient_age": "054Y",
                    "research_path": f"dicom/programme={PROGRAMME}/batch={batch_id}/"
                    f"{study}/{series}/{sop}.dcm",
                    "size_bytes": 4096,
                }
            )
            predictions.append(
                {
                    **common,
                    "study_instance_uid": study,
                    "status": "ok",
                    "score": score,
                    "input_mean": 0.4,
                    "input_std": 0.2,
                    **provenance,
                }
            )
        findings.append(
            {
                "batch_id": batch_id,
                "programme": PROGRAMME,
                "study_instance_uid": study,
                "patient_pseudonym": patient,
                "study_date": date(2023, 11, 2),
                "score": score,
                "flag": score >= manifest.threshold,
                "priority_rank": s + 1,
                "instances_scored": 2,
                "instances_failed": 0,
                "threshold": manifest.threshold,
                **provenance,
            }
        )
    return {
        "catalog": frame_of(catalog, INSTANCE_CATALOG),
        "predictions": frame_of(predictions, INSTANCE_PREDICTIONS),
        "findings": frame_of(findings, STUDY_FINDINGS),
    }


@pytest.fixture
def frames(batch_id: str, manifest: ModelManifest) -> Frames:
    return _frames(batch_id, manifest)


def _suites(frames: Frames, batch_id: str, manifest: ModelManifest) -> list[qs.Suite]:
    return [
        qs.catalogue_suite(frames["catalog"], batch_id, PROGRAMME),
        qs.predictions_suite(frames["predictions"], frames["catalog"], batch_id, PROGRAMME),
        qs.findings_suite(frames["findings"], batch_id, PROGRAMME, manifest),
    ]


def _failed(result: qs.SuiteResult) -> dict[str, qs.ExpectationOutcome]:
    return {o.expectation: o for o in result.failed()}


def test_clean_frames_meet_every_suite(
    frames: Frames, batch_id: str, manifest: ModelManifest
) -> None:
    for suite in _suites(frames, batch_id, manifest):
        result = gx_runner.run_suite(suite)
        assert result.success, (suite.name, result.summary)
        groups = {o.group for o in result.outcomes}
        assert {"schema", "completeness", "uniqueness", "allowed values", "identifiers"} <= groups
        assert result.summary.startswith(f"{suite.name} suite: all ")
    findings = gx_runner.run_suite(_suites(frames, batch_id, manifest)[2])
    assert {"provenance", "positive rate", "ranges"} <= {o.group for o in findings.outcomes}


def test_an_empty_batch_meets_every_suite(
    frames: Frames, batch_id: str, manifest: ModelManifest
) -> None:
    empty = {name: frame.clear() for name, frame in frames.items()}
    for suite in _suites(empty, batch_id, manifest):
        assert gx_runner.run_suite(suite).success, suite.name


def test_a_duplicate_key_fails_uniqueness(frames: Frames, batch_id: str) -> None:
    catalog = frames["catalog"]
    result = gx_runner.run_suite(
        qs.catalogue_suite(pl.concat([catalog, catalog.head(1)]), batch_id, PROGRAMME)
    )
    failed = _failed(result)
    assert set(failed) == {"expect_column_values_to_be_unique(sop_instance_uid)"}
    outcome = failed["expect_column_values_to_be_unique(sop_instance_uid)"]
    assert outcome.group == "uniqueness" and outcome.unexpected == 2
    # By row number: a pseudonymous UID in a check's result would outlive the patient's erasure.
    assert outcome.examples[0] == {"row": "1"}
    assert catalog["sop_instance_uid"][0] not in repr(result)
    assert result.failed_by_group() == {"uniqueness": 1}


@pytest.mark.parametrize("bad", [1.5, -0.1, float("nan")])
def test_a_score_outside_the_unit_interval_fails_its_range(
    frames: Frames, batch_id: str, bad: float
) -> None:
    predictions = frames["predictions"].with_columns(
        pl.when(pl.int_range(pl.len()) == 3).then(bad).otherwise(pl.col("score")).alias("score")
    )
    result = gx_runner.run_suite(
        qs.predictions_suite(predictions, frames["catalog"], batch_id, PROGRAMME)
    )
    failed = _failed(result)
    assert set(failed) == {"expect_column_values_to_be_between(score)"}
    [example] = failed["expect_column_values_to_be_between(score)"].examples
    assert example["row"] == "4"
    assert example["score"] == ("NaN" if math.isnan(bad) else str(bad))


def test_a_catalogued_instance_without_prediction_fails_completeness(
    frames: Frames, batch_id: str
) -> None:
    predictions = frames["predictions"].slice(1)
    result = gx_runner.run_suite(
        qs.predictions_suite(predictions, frames["catalog"], batch_id, PROGRAMME)
    )
    failed = _failed(result)
    assert set(failed) == {"expect_column_values_to_be_in_set(predicted)"}
    outcome = failed["expect_column_values_to_be_in_set(predicted)"]
    assert outcome.validation == "instance_predictions_completeness"
    assert outcome.group == "completeness" and outcome.unexpected == 1
    assert outcome.examples[0]["row"] == "1"


def test_a_prediction_for_an_unknown_instance_fails_completeness(
    frames: Frames, batch_id: str
) -> None:
    result = gx_runner.run_suite(
        qs.predictions_suite(frames["predictions"], frames["catalog"].slice(1), batch_id, PROGRAMME)
    )
    assert set(_failed(result)) == {"expect_column_values_to_be_in_set(catalogued)"}


def test_a_failure_row_needs_a_reason_and_no_score(frames: Frames, batch_id: str) -> None:
    predictions = frames["predictions"].with_columns(
        pl.when(pl.int_range(pl.len()) == 0)
        .then(pl.lit("failed"))
        .otherwise("status")
        .alias("status")
    )
    result = gx_runner.run_suite(
        qs.predictions_suite(predictions, frames["catalog"], batch_id, PROGRAMME)
    )
    assert set(_failed(result)) == {
        "expect_column_values_to_be_null(score) where status == 'failed'",
        "expect_column_values_to_not_be_null(failure_reason) where status == 'failed'",
    }


@pytest.mark.parametrize("column", ["model_version", "weights_sha256"])
def test_missing_model_provenance_fails_provenance(
    frames: Frames, batch_id: str, manifest: ModelManifest, column: str
) -> None:
    predictions = frames["predictions"].with_columns(pl.lit(None, pl.String).alias(column))
    result = gx_runner.run_suite(
        qs.predictions_suite(predictions, frames["catalog"], batch_id, PROGRAMME)
    )
    failed = _failed(result)
    assert f"expect_column_values_to_not_be_null({column})" in failed
    assert set(result.failed_by_group()) == {"provenance"}
    findings = frames["findings"].with_columns(pl.lit(None, pl.String).alias(column))
    result = gx_runner.run_suite(qs.findings_suite(findings, batch_id, PROGRAMME, manifest))
    assert f"expect_column_values_to_not_be_null({column})" in _failed(result)
    assert set(result.failed_by_group()) == {"provenance"}


def test_findings_of_another_model_fail_provenance(
    frames: Frames, batch_id: str, manifest: ModelManifest
) -> None:
    findings = frames["findings"].with_columns(pl.lit("0" * 64).alias("weights_sha256"))
    result = gx_runner.run_suite(qs.findings_suite(findings, batch_id, PROGRAMME, manifest))
    assert set(_failed(result)) == {"expect_column_values_to_be_in_set(weights_sha256)"}


@pytest.mark.parametrize(
    ("leak", "kind"),
    [
        ("111222333", "BSN-like nine-digit number"),
        ("bel 06-12345678", "Dutch phone number"),
        ("Kerkstraat 1, 3511 AB Utrecht", "Dutch postcode"),
        ("JANSEN^PIETER", "DICOM person name"),
    ],
)
def test_an_identifier_in_a_result_table_fails_and_is_withheld(
    frames: Frames, batch_id: str, leak: str, kind: str
) -> None:
    catalog = frames["catalog"].with_columns(
        pl.when(pl.int_range(pl.len()) == 2)
        .then(pl.lit(leak))
        .otherwise(pl.col("manufacturer_model_name"))
        .alias("manufacturer_model_name")
    )
    result = gx_runner.run_suite(qs.catalogue_suite(catalog, batch_id, PROGRAMME))
    failed = _failed(result)
    label = "expect_column_values_to_not_match_regex_list(manufacturer_model_name)"
    assert set(failed) == {label}
    assert failed[label].group == "identifiers" and failed[label].unexpected == 1
    assert failed[label].examples == ({"manufacturer_model_name": qs.WITHHELD, "row": "3"},)
    assert leak not in repr(result)
    assert kind in qs.IDENTIFIER_PATTERNS


def test_an_identifier_in_place_of_a_pseudonym_fails_and_is_withheld(
    frames: Frames, batch_id: str, manifest: ModelManifest
) -> None:
    findings = frames["findings"].with_columns(
        pl.when(pl.int_range(pl.len()) == 0)
        .then(pl.lit("111222333"))
        .otherwise(pl.col("patient_pseudonym"))
        .alias("patient_pseudonym")
    )
    result = gx_runner.run_suite(qs.findings_suite(findings, batch_id, PROGRAMME, manifest))
    failed = _failed(result)
    assert set(failed) == {"expect_column_values_to_match_regex(patient_pseudonym)"}
    assert failed["expect_column_values_to_match_regex(patient_pseudonym)"].examples == (
        {"patient_pseudonym": qs.WITHHELD, "row": "1"},
    )
    assert "111222333" not in repr(result)


def test_a_status_outside_ok_and_failed_fails_allowed_values(frames: Frames, batch_id: str) -> None:
    predictions = frames["predictions"].with_columns(
        pl.when(pl.int_range(pl.len()) == 1)
        .then(pl.lit("maybe"))
        .otherwise("status")
        .alias("status")
    )
    result = gx_runner.run_suite(
        qs.predictions_suite(predictions, frames["catalog"], batch_id, PROGRAMME)
    )
    failed = _failed(result)
    assert set(failed) == {"expect_column_values_to_be_in_set(status)"}
    assert failed["expect_column_values_to_be_in_set(status)"].examples[0]["status"] == "maybe"


def test_an_identifier_is_withheld_from_every_expectation_that_meets_it(
    frames: Frames, batch_id: str
) -> None:
    catalog = frames["catalog"]
    original = "1.2.840.113619.2.55.3.604688119"  # an original UID, not a keyed 2.25. one
    predictions = frames["predictions"].with_columns(
        pl.when(pl.int_range(pl.len()) == 0)
        .then(pl.lit("111222333"))
        .otherwise("status")
        .alias("status"),
        pl.when(pl.int_range(pl.len()) == 1)
        .then(pl.lit(original))
        .otherwise("sop_instance_uid")
        .alias("sop_instance_uid"),
    )
    result = gx_runner.run_suite(qs.predictions_suite(predictions, catalog, batch_id, PROGRAMME))
    failed = _failed(result)
    status = failed["expect_column_values_to_be_in_set(status)"]
    assert status.examples[0] == {"status": qs.WITHHELD, "row": "1"}
    assert "expect_column_values_to_not_match_regex_list(status)" in failed
    unknown = failed["expect_column_values_to_be_in_set(catalogued)"]
    assert unknown.examples == ({"catalogued": "False", "row": "2"},)
    assert "111222333" not in repr(result) and original not in repr(result)


def test_rows_of_another_batch_fail_allowed_values(frames: Frames, batch_id: str) -> None:
    catalog = frames["catalog"].with_columns(pl.lit("B000000000000000").alias("batch_id"))
    result = gx_runner.run_suite(qs.catalogue_suite(catalog, batch_id, PROGRAMME))
    assert set(_failed(result)) == {"expect_column_values_to_be_in_set(batch_id)"}
    moved = frames["catalog"].with_columns(pl.col("research_path").str.replace(batch_id, "B0"))
    moved_result = gx_runner.run_suite(qs.catalogue_suite(moved, batch_id, PROGRAMME))
    assert set(_failed(moved_result)) == {"expect_column_values_to_match_regex(research_path)"}
    # What a check's metadata shows names no batch token: Dagster shows it beside the real date.
    for shown in (result, moved_result):
        metadata = repr([o.as_metadata() for o in shown.outcomes]) + shown.summary
        assert "B000000000000000" not in metadata and "B0/" not in metadata
        assert batch_id not in metadata


def test_a_missing_column_and_a_wrong_type_fail_the_schema(frames: Frames, batch_id: str) -> None:
    catalog = frames["catalog"].drop("kvp").with_columns(pl.col("rows").cast(pl.Int64))
    result = gx_runner.run_suite(qs.catalogue_suite(catalog, batch_id, PROGRAMME))
    failed = _failed(result)
    assert "expect_table_columns_to_match_ordered_list" in failed
    assert failed["expect_column_values_to_be_of_type(rows)"].observed == "int64"
    missing = failed["expect_column_values_to_be_of_type(kvp)"]
    assert not missing.success and missing.error
    assert set(result.failed_by_group()) == {"schema", "ranges"}


def test_a_scored_study_without_flag_fails_completeness(
    frames: Frames, batch_id: str, manifest: ModelManifest
) -> None:
    findings = frames["findings"].with_columns(
        pl.when(pl.int_range(pl.len()) == 0).then(None).otherwise(pl.col("flag")).alias("flag")
    )
    result = gx_runner.run_suite(qs.findings_suite(findings, batch_id, PROGRAMME, manifest))
    assert set(_failed(result)) == {
        "expect_column_values_to_not_be_null(flag) where score is not null"
    }


def test_a_positive_rate_far_outside_the_band_fails(batch_id: str, manifest: ModelManifest) -> None:
    many = _frames(batch_id, manifest, studies=60, flagged=60)["findings"]
    result = gx_runner.run_suite(qs.findings_suite(many, batch_id, PROGRAMME, manifest))
    failed = _failed(result)
    assert set(failed) == {"expect_column_mean_to_be_between(flag)"}
    assert failed["expect_column_mean_to_be_between(flag)"].group == "positive rate"
    assert failed["expect_column_mean_to_be_between(flag)"].observed == "1.0"
    # None of 60 could be chance at a true rate of 0.05 (0.95**60 = 0.05); none of 200 cannot.
    none = _frames(batch_id, manifest, studies=60, flagged=0)["findings"]
    assert gx_runner.run_suite(qs.findings_suite(none, batch_id, PROGRAMME, manifest)).success
    none = _frames(batch_id, manifest, studies=200, flagged=0)["findings"]
    assert not gx_runner.run_suite(qs.findings_suite(none, batch_id, PROGRAMME, manifest)).success
    # Two studies, neither flagged: a rate of 0 is what a band of [0.05, 0.6] often shows.
    few = _frames(batch_id, manifest, studies=2, flagged=0)["findings"]
    assert gx_runner.run_suite(qs.findings_suite(few, batch_id, PROGRAMME, manifest)).success


def test_positive_rate_bounds_widen_the_band_for_small_batches() -> None:
    assert qs.positive_rate_bounds(2, 0.05, 0.6) == (0.0, 1.0)
    low, high = qs.positive_rate_bounds(1000, 0.05, 0.6)
    assert 0.03 < low < 0.05 and 0.6 < high < 0.65
    low, high = qs.positive_rate_bounds(100, 0.2, 0.2)
    assert low < 0.2 < high
    with pytest.raises(ValueError, match="at least one scored study"):
        qs.positive_rate_bounds(0, 0.05, 0.6)


def test_no_band_and_no_scored_study_mean_no_positive_rate_expectation(
    frames: Frames, batch_id: str, manifest: ModelManifest
) -> None:
    unbanded = dataclasses.replace(manifest, monitoring=None)
    suite = qs.findings_suite(frames["findings"], batch_id, PROGRAMME, unbanded)
    assert "positive rate" not in {e.group for v in suite.validations for e in v.expectations}
    unscored = frames["findings"].with_columns(
        pl.lit(None, pl.Float64).alias("score"), pl.lit(None, pl.Boolean).alias("flag")
    )
    suite = qs.findings_suite(unscored, batch_id, PROGRAMME, manifest)
    assert "positive rate" not in {e.group for v in suite.validations for e in v.expectations}
    assert gx_runner.run_suite(suite).success


def test_the_findings_suite_validates_validated_findings_too(
    frames: Frames, batch_id: str, manifest: ModelManifest
) -> None:
    validated = frames["findings"].with_columns(
        pl.datetime(2024, 3, 2, time_zone="UTC").alias("validated_at")
    )
    suite = qs.findings_suite(validated, batch_id, PROGRAMME, manifest, VALIDATED_FINDINGS)
    assert gx_runner.run_suite(suite).success
    with pytest.raises(ValueError, match="not instance_catalog"):
        qs.findings_suite(validated, batch_id, PROGRAMME, manifest, INSTANCE_CATALOG)


def test_data_docs_list_every_suite_and_a_rerun_replaces_its_result(
    frames: Frames, batch_id: str, manifest: ModelManifest, tmp_path: Path
) -> None:
    evidence = tmp_path / "evidence"
    for suite in _suites(frames, batch_id, manifest):
        result = gx_runner.run_suite(suite, evidence, run_name="run-1")
        assert result.data_docs == evidence / "index.html"
    index = (evidence / "index.html").read_text()
    for name in ("instance_catalog", "instance_predictions", "instance_predictions_completeness"):
        assert name in index
    assert "study_findings" in index

    leak = frames["catalog"].with_columns(pl.lit("JANSEN^PIETER").alias("manufacturer"))
    failed = gx_runner.run_suite(
        qs.catalogue_suite(leak, batch_id, PROGRAMME), evidence, run_name="run-2"
    )
    assert not failed.success
    pages = sorted((evidence / "validations" / "instance_catalog").rglob("*.html"))
    assert len(pages) == 1 and "run-2" in str(pages[0])
    assert qs.WITHHELD in pages[0].read_text()
    for path in evidence.rglob("*"):
        if path.is_file() and path.suffix in (".html", ".json", ".yml"):
            assert "JANSEN" not in path.read_text(errors="replace"), path


def test_an_unknown_programme_or_condition_is_refused(frames: Frames, batch_id: str) -> None:
    with pytest.raises(ValueError, match="unknown programme 'mammo_x'"):
        qs.catalogue_suite(frames["catalog"], batch_id, "mammo_x")
    with pytest.raises(ValueError, match="condition '>'"):
        qs.Expect("ranges", "ExpectColumnValuesToBeBetween", {"column": "s"}, where=("s", ">", 1))
