"""Drift statistics: PSI, KS and the positive rate, and the rows a partition gets."""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import UTC, datetime

import numpy as np
import polars as pl
import pytest

from screenlake import drift
from screenlake.drift import PartitionTables
from screenlake.tables import (
    DRIFT_METRICS,
    INSTANCE_CATALOG,
    INSTANCE_PREDICTIONS,
    STUDY_FINDINGS,
    conform,
    frame_of,
)

NOW = datetime(2024, 3, 1, 2, 0, tzinfo=UTC)


def partition_tables(
    studies: int = 60,
    *,
    batch_id: str = "Bcurrent",
    programme: str = "cxr_tb",
    seed: int = 0,
    manufacturers: Sequence[str] = ("Siemens", "Philips"),
    kvps: Sequence[float] = (110.0, 120.0, 125.0),
    input_mean: float = 0.45,
    score_mean: float = 0.3,
    flagged_share: float = 0.2,
    images_per_study: int = 1,
) -> PartitionTables:
    """A partition's catalog, predictions and findings, with full lake schemas: one series a
    study, its images sharing the scanner and kVp, values drawn around the given centres."""
    rng = np.random.default_rng(seed)
    catalog, predictions, findings = [], [], []
    for s in range(studies):
        study, series = f"2.25.{seed}.{s}", f"2.25.{seed}.{s}.1"
        manufacturer = str(rng.choice(list(manufacturers)))
        kvp = float(rng.choice(list(kvps)))
        spacing = float(rng.normal(0.7, 0.02))
        scores = np.clip(rng.normal(score_mean, 0.15, images_per_study), 0.0, 1.0)
        for i in range(images_per_study):
            sop = f"{series}.{i}"
            catalog.append(
                {
                    "batch_id": batch_id,
                    "programme": programme,
                    "sop_instance_uid": sop,
                    "series_instance_uid": series,
                    "study_instance_uid": study,
                    "patient_pseudonym": f"P{s}",
                    "modality": "DX",
                    "pixel_spacing_row_mm": spacing,
                    "slice_thickness_mm": 1.0,
                    "kvp": kvp,
                    "manufacturer": manufacturer,
                    "manufacturer_model_name": f"{manufacturer} One",
                    "research_path": f"dicom/{sop}.dcm",
                    "size_bytes": 1000,
                }
            )
            predictions.append(
                {
                    "batch_id": batch_id,
                    "programme": programme,
                    "sop_instance_uid": sop,
                    "study_instance_uid": study,
                    "status": "ok",
                    "score": float(scores[i]),
                    "input_mean": float(rng.normal(input_mean, 0.05)),
                    "input_std": float(rng.normal(0.2, 0.02)),
                    "model_name": "m",
                    "model_version": "1.0.0",
                    "weights_sha256": "0" * 64,
                }
            )
        findings.append(
            {
                "batch_id": batch_id,
                "programme": programme,
                "study_instance_uid": study,
                "patient_pseudonym": f"P{s}",
                "score": float(scores.max()),
                "flag": bool(rng.random() < flagged_share),
                "priority_rank": s + 1,
                "instances_scored": images_per_study,
                "instances_failed": 0,
                "threshold": 0.5,
                "model_name": "m",
                "model_version": "1.0.0",
                "weights_sha256": "0" * 64,
            }
        )
    return PartitionTables(
        frame_of(catalog, INSTANCE_CATALOG),
        frame_of(predictions, INSTANCE_PREDICTIONS),
        frame_of(findings, STUDY_FINDINGS),
    )


def _rows(
    current: PartitionTables,
    reference: PartitionTables,
    band: tuple[float, float] | None = (0.05, 0.6),
    batches: int = 2,
) -> pl.DataFrame:
    return drift.drift_rows(
        current,
        reference,
        batch_id="Bcurrent",
        programme="cxr_tb",
        reference_batches=batches,
        positive_rate_band=band,
        computed_at=NOW,
    )


def _row(rows: pl.DataFrame, feature: str, statistic: str) -> dict[str, object]:
    [row] = rows.filter(
        (pl.col("feature") == feature) & (pl.col("statistic") == statistic)
    ).to_dicts()
    return row


def _reference(seed: int = 100, **kwargs: object) -> PartitionTables:
    return PartitionTables.combined(
        [
            partition_tables(batch_id="Bref1", seed=seed, **kwargs),  # type: ignore[arg-type]
            partition_tables(batch_id="Bref2", seed=seed + 1, **kwargs),  # type: ignore[arg-type]
        ]
    )


# PSI
def test_psi_of_a_tiny_numeric_example_matches_the_hand_computed_value() -> None:
    # Reference median 2.5: shares (0.5, 0.5); current (0.75, 0.25).
    expected = (0.75 - 0.5) * math.log(0.75 / 0.5) + (0.25 - 0.5) * math.log(0.25 / 0.5)
    assert drift.psi_numeric([1, 1, 1, 4], [1, 2, 3, 4], bins=2) == pytest.approx(expected)
    assert expected == pytest.approx(0.274653, abs=1e-6)


def test_an_empty_bin_counts_as_half_an_observation() -> None:
    eps = 0.5 / 4
    expected = (1.0 - 0.5) * math.log(1.0 / 0.5) + (eps - 0.5) * math.log(eps / 0.5)
    assert drift.psi_from_counts([4, 0], [2, 2]) == pytest.approx(expected)
    assert math.isfinite(drift.psi_from_counts([4, 0], [2, 2]))


def test_identical_distributions_give_a_psi_of_about_zero() -> None:
    rng = np.random.default_rng(1)
    values = rng.normal(0.0, 1.0, 500)
    assert drift.psi_numeric(values, values) == pytest.approx(0.0, abs=1e-12)
    same_law = drift.psi_numeric(rng.normal(0.0, 1.0, 2000), rng.normal(0.0, 1.0, 2000))
    assert same_law < 0.05
    assert drift.psi_categorical(["a", "b", "b"], ["b", "a", "b"]) == pytest.approx(0.0)


def test_psi_of_a_discrete_feature_sees_a_value_it_never_took() -> None:
    # All reference kVp equal: the deciles merge into one edge, and 100 kV falls below it.
    assert drift.psi_numeric([100.0] * 40, [120.0] * 40) > drift.PSI_WARNING
    assert drift.psi_numeric([120.0] * 40, [120.0] * 40) == pytest.approx(0.0)


def test_psi_of_a_changed_category_mix_matches_the_hand_computed_value() -> None:
    current = ["GE"] * 3 + ["Siemens"] * 1
    reference = ["GE"] * 1 + ["Siemens"] * 3
    expected = 2 * (0.75 - 0.25) * math.log(0.75 / 0.25)
    assert drift.psi_categorical(current, reference) == pytest.approx(expected)
    assert expected > drift.PSI_WARNING


def test_a_missing_category_is_a_category_of_its_own() -> None:
    # Half the current series lost their manufacturer; the reference never did.
    psi = drift.psi_categorical(["GE", None, "GE", None], ["GE"] * 4)
    eps = 0.5 / 4  # the reference's empty "(missing)": half of one of its 4 series
    expected = (0.5 - 1.0) * math.log(0.5) + (0.5 - eps) * math.log(0.5 / eps)
    assert psi == pytest.approx(expected)


def test_the_psi_limit_grows_for_small_samples_and_holds_at_the_convention_for_large() -> None:
    assert drift.psi_limit(100_000, 1_000_000, 10) == drift.PSI_WARNING
    small = drift.psi_limit(30, 420, 10)
    assert small > 0.5
    # Two samples of one distribution stay under it ~99 times in 100.
    rng = np.random.default_rng(3)
    above = sum(
        drift.psi_numeric(rng.normal(size=30), rng.normal(size=420)) > small for _ in range(400)
    )
    assert above <= 12
    assert (
        sum(
            drift.psi_numeric(rng.normal(size=30), rng.normal(size=420)) > drift.PSI_WARNING
            for _ in range(100)
        )
        > 50
    )


# KS
def test_ks_detects_a_shifted_normal_and_not_a_resampled_one() -> None:
    rng = np.random.default_rng(2)
    reference = rng.normal(0.0, 1.0, 300)
    statistic, p_value = drift.ks_test(rng.normal(0.6, 1.0, 300), reference)
    assert p_value < drift.KS_P_VALUE
    assert statistic > drift.KS_MIN_STATISTIC
    _, same = drift.ks_test(rng.normal(0.0, 1.0, 300), reference)
    assert same > drift.KS_P_VALUE


# Rows of a partition
def test_a_partition_like_its_reference_warns_nowhere() -> None:
    rows = _rows(partition_tables(seed=7), _reference())
    assert conform(rows, DRIFT_METRICS).num_rows == rows.height
    assert set(rows["feature"]) == {
        *drift.CATEGORICAL_INPUTS,
        *drift.ACQUISITION_INPUTS,
        *drift.INTENSITY_INPUTS,
        *drift.SCORE_OUTPUTS,
        drift.POSITIVE_RATE,
    }
    # Categorical: PSI only; numeric: PSI and KS; the positive rate: one row.
    assert rows.height == 2 + 2 * 7 + 1
    assert rows["value"].null_count() == 0
    assert not rows["warning"].any(), rows.filter(pl.col("warning")).to_dicts()
    assert set(rows["reference_batches"]) == {2}
    assert _row(rows, "kvp", "psi")["reference_rows"] == 120


def test_a_new_scanner_and_kvp_warn_as_input_drift_and_leave_the_output_alone() -> None:
    current = partition_tables(seed=7, manufacturers=("Canon",), kvps=(90.0,))
    rows = _rows(current, _reference())
    warned = drift.warnings_of(rows, "input")
    assert {"manufacturer", "manufacturer_model_name", "kvp"} <= set(warned["feature"])
    assert _row(rows, "kvp", "ks")["warning"]
    assert _row(rows, "kvp", "ks")["p_value"] < drift.KS_P_VALUE  # type: ignore[operator]
    assert not _row(rows, "input_mean", "psi")["warning"]
    assert drift.warnings_of(rows, "output").is_empty()


def test_brighter_inputs_and_higher_scores_warn() -> None:
    current = partition_tables(seed=7, input_mean=0.6, score_mean=0.55)
    rows = _rows(current, _reference())
    assert {"input_mean"} == set(drift.warnings_of(rows, "input")["feature"])
    assert {"image_score", "study_score"} <= set(drift.warnings_of(rows, "output")["feature"])


def test_too_few_studies_on_either_side_give_no_value_and_no_warning() -> None:
    few = drift.MIN_STUDIES - 1
    drifted = partition_tables(few, seed=7, manufacturers=("Canon",), kvps=(90.0,))
    rows = _rows(drifted, _reference())
    assert rows["value"].null_count() == rows["threshold"].null_count() == rows.height
    assert not rows["warning"].any()
    # A small reference: no comparison either; the positive rate still has its value.
    rows = _rows(partition_tables(seed=7, kvps=(90.0,)), partition_tables(few, seed=100))
    compared = rows.filter(pl.col("feature") != drift.POSITIVE_RATE)
    assert compared["value"].null_count() == compared.height
    assert _row(rows, drift.POSITIVE_RATE, drift.POSITIVE_RATE)["p_value"] is None
    assert not rows["warning"].any()
    row = _row(_rows(drifted, _reference()), "kvp", "psi")
    assert (row["current_rows"], row["reference_rows"]) == (few, 120)


def test_the_first_partition_has_no_reference_and_no_drift_warning() -> None:
    rows = _rows(partition_tables(seed=7), PartitionTables.empty(), batches=0)
    assert set(rows["reference_batches"]) == {0}
    assert set(rows["reference_rows"]) == {0}
    assert not rows["warning"].any()
    # The positive rate still reads against the band, which needs no reference.
    rate = _row(rows, drift.POSITIVE_RATE, drift.POSITIVE_RATE)
    assert rate["value"] is not None and rate["p_value"] is None


def test_acquisition_attributes_count_once_per_series() -> None:
    ct = partition_tables(40, seed=7, images_per_study=50)
    samples = drift.feature_samples(ct)
    assert samples["kvp"].rows == samples["manufacturer"].rows == 40
    assert samples["input_mean"].rows == samples["image_score"].rows == 2000
    assert samples["study_score"].rows == 40


def test_only_scored_predictions_count() -> None:
    tables = partition_tables(40, seed=7)
    failed = tables.predictions.with_columns(
        pl.when(pl.int_range(pl.len()) < 10)
        .then(pl.lit("failed"))
        .otherwise(pl.col("status"))
        .alias("status")
    )
    samples = drift.feature_samples(PartitionTables(tables.catalog, failed, tables.findings))
    assert samples["input_mean"].rows == samples["image_score"].rows == 30


# Positive rate
def test_a_positive_rate_outside_the_band_warns_and_names_the_limit() -> None:
    rows = _rows(partition_tables(seed=7, flagged_share=0.9), PartitionTables.empty(), batches=0)
    rate = _row(rows, drift.POSITIVE_RATE, drift.POSITIVE_RATE)
    assert rate["value"] > 0.6  # type: ignore[operator]
    assert rate["threshold"] == 0.6
    assert rate["warning"]


def test_a_positive_rate_far_from_the_reference_rate_warns_inside_the_band() -> None:
    current = partition_tables(seed=7, flagged_share=0.5)
    reference = _reference(flagged_share=0.1)
    rate = _row(_rows(current, reference), drift.POSITIVE_RATE, drift.POSITIVE_RATE)
    assert 0.05 <= rate["value"] <= 0.6  # type: ignore[operator]
    assert rate["p_value"] < drift.RATE_P_VALUE  # type: ignore[operator]
    assert rate["warning"]
    near = _row(
        _rows(partition_tables(seed=7, flagged_share=0.1), reference),
        drift.POSITIVE_RATE,
        drift.POSITIVE_RATE,
    )
    assert not near["warning"]


def test_without_a_band_only_the_reference_rate_counts() -> None:
    rows = _rows(partition_tables(seed=7, flagged_share=0.9), PartitionTables.empty(), None, 0)
    rate = _row(rows, drift.POSITIVE_RATE, drift.POSITIVE_RATE)
    assert rate["threshold"] is None
    assert not rate["warning"]
