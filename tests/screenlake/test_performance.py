"""The performance audit's metrics, intervals, rows, label joins and judgement."""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from screenlake.errors import ConfigurationError
from screenlake.inference.manifest import MonitoringLimits
from screenlake.labels import (
    device_models,
    labelled_studies,
    read_labels,
    site_token,
    site_tokens,
)
from screenlake.performance import (
    ALL,
    LABELLED_SCHEMA,
    UNKNOWN,
    auc,
    audit_rows,
    evaluate,
    judge,
    stack_labelled,
    window_days,
)
from screenlake.tables import PERFORMANCE_AUDIT, REVIEW_DECISIONS, frame_of, write_parquet
from tests.dicom_factory import ct_slice, write

KEY = b"test-pseudonym-key-for-screenlake-0123456789"
NOW = datetime(2024, 3, 12, 2, 0, tzinfo=UTC)

# A small fixed table: three positives, four negatives, one tie across the classes.
POS_SCORES = [0.9, 0.6, 0.4]
NEG_SCORES = [0.7, 0.4, 0.2, 0.1]
SCORES = POS_SCORES + NEG_SCORES
LABELS = [True] * 3 + [False] * 4
THRESHOLD = 0.5
FLAGS = [s >= THRESHOLD for s in SCORES]
# AUC by hand, as the share of (positive, negative) pairs the positive wins (a tie is half):
#   0.9 beats 0.7, 0.4, 0.2, 0.1                  -> 4
#   0.6 beats 0.4, 0.2, 0.1; loses to 0.7         -> 3
#   0.4 ties 0.4, beats 0.2, 0.1; loses to 0.7    -> 0.5 + 2 = 2.5
#   (4 + 3 + 2.5) / (3 positives * 4 negatives)  = 9.5 / 12 = 19/24 = 0.791666...
HAND_AUC = 19 / 24
# At threshold 0.5: flagged 0.9, 0.6 (positives) and 0.7 (a negative).
#   sensitivity = 2 flagged of 3 positives        = 2/3
#   specificity = 3 unflagged of 4 negatives      = 3/4
#   PPV         = 2 true of 3 flagged             = 2/3
HAND_SENSITIVITY, HAND_SPECIFICITY, HAND_PPV = 2 / 3, 3 / 4, 2 / 3


def test_auc_matches_the_hand_computed_value() -> None:
    assert auc(SCORES, LABELS) == pytest.approx(HAND_AUC)
    assert evaluate(SCORES, FLAGS, LABELS).auc.value == pytest.approx(HAND_AUC)


def test_sensitivity_specificity_and_ppv_match_the_hand_computed_values() -> None:
    result = evaluate(SCORES, FLAGS, LABELS)
    assert (result.studies, result.positives, result.flagged) == (7, 3, 3)
    assert result.sensitivity.value == pytest.approx(HAND_SENSITIVITY)
    assert result.specificity.value == pytest.approx(HAND_SPECIFICITY)
    assert result.ppv.value == pytest.approx(HAND_PPV)


def test_the_weighted_auc_equals_the_rank_auc_with_ties() -> None:
    rng = np.random.default_rng(3)
    labels = rng.random(400) < 0.3
    scores = np.round(np.where(labels, rng.normal(1, 1, 400), rng.normal(0, 1, 400)), 1)
    assert evaluate(scores, scores >= 0.5, labels, resamples=100).auc.value == pytest.approx(
        auc(scores, labels)
    )


def _width(estimate: object) -> float:
    low, high = estimate.low, estimate.high  # type: ignore[attr-defined]
    assert low is not None and high is not None
    return high - low


def test_intervals_contain_the_estimate_and_narrow_with_more_data() -> None:
    small = evaluate(SCORES * 5, FLAGS * 5, LABELS * 5)
    large = evaluate(SCORES * 50, FLAGS * 50, LABELS * 50)
    for name in ("auc", "sensitivity", "specificity", "ppv"):
        for result in (small, large):
            estimate = getattr(result, name)
            assert estimate.low <= estimate.value <= estimate.high, name
        # The same table repeated: the same estimate, known more precisely.
        assert getattr(large, name).value == pytest.approx(getattr(small, name).value)
        assert _width(getattr(large, name)) < _width(getattr(small, name)), name


def test_the_bootstrap_is_seeded() -> None:
    first = evaluate(SCORES * 5, FLAGS * 5, LABELS * 5, seed=7)
    assert evaluate(SCORES * 5, FLAGS * 5, LABELS * 5, seed=7) == first
    assert evaluate(SCORES * 5, FLAGS * 5, LABELS * 5, seed=8) != first


def test_undefined_metrics_and_too_few_cases_are_null() -> None:
    only_positives = evaluate([0.9, 0.2], [True, False], [True, True])
    assert only_positives.sensitivity.value == 0.5
    assert only_positives.auc.value is None
    assert only_positives.specificity.value is None
    nothing_flagged = evaluate([0.2, 0.1], [False, False], [True, False])
    assert nothing_flagged.ppv.value is None
    assert nothing_flagged.auc.value == 1.0
    # Defined, but from 3 positives and 4 negatives: no interval (fewer than 5 cases).
    small = evaluate(SCORES, FLAGS, LABELS)
    assert small.auc.low is None and small.sensitivity.high is None
    assert evaluate(SCORES, FLAGS, LABELS, min_cases=3).auc.low is not None
    empty = evaluate([], [], [])
    assert (empty.studies, empty.auc.value, empty.ppv.value) == (0, None, None)


def test_nan_scores_are_refused() -> None:
    with pytest.raises(ValueError, match="unscored"):
        evaluate([0.1, float("nan")], [False, False], [True, False])


def test_window_days_end_on_the_day() -> None:
    assert window_days(date(2024, 3, 2), 3) == [
        date(2024, 2, 29),
        date(2024, 3, 1),
        date(2024, 3, 2),
    ]
    with pytest.raises(ConfigurationError):
        window_days(date(2024, 3, 2), 0)


def _labelled(sites: list[str], devices: list[str], version: str = "2.0.0") -> pl.DataFrame:
    n = len(SCORES)
    return pl.DataFrame(
        {
            "programme": ["cxr_tb"] * n,
            "model_name": ["cxr_tb_reference"] * n,
            "model_version": [version] * n,
            "threshold": [THRESHOLD] * n,
            "site": sites,
            "device_model": devices,
            "score": SCORES,
            "flag": FLAGS,
            "label": LABELS,
        },
        schema=LABELLED_SCHEMA,
    )


def test_audit_rows_cover_overall_each_device_and_each_site() -> None:
    studies = _labelled(["S1", "S1", "S2", "S1", "S2", "S1", "S2"], ["A", "B"] * 3 + ["A"])
    rows = audit_rows(studies, "all_time", "Bbatch", NOW, resamples=200)
    assert rows.columns == PERFORMANCE_AUDIT.columns
    groups = set(zip(rows["site"], rows["device_model"], strict=True))
    assert groups == {(ALL, ALL), (ALL, "A"), (ALL, "B"), ("S1", ALL), ("S2", ALL)}
    overall = rows.filter((pl.col("site") == ALL) & (pl.col("device_model") == ALL)).row(
        0, named=True
    )
    assert overall["auc"] == pytest.approx(HAND_AUC)
    assert (overall["studies"], overall["positives"], overall["window"]) == (7, 3, "all_time")
    assert overall["threshold"] == THRESHOLD and overall["batch_id"] == "Bbatch"
    # Site S2 holds 0.4 (positive), 0.4 and 0.1 (negatives): AUC (0.5 + 1) / 2.
    s2 = rows.filter(pl.col("site") == "S2").row(0, named=True)
    assert (s2["studies"], s2["positives"]) == (3, 1)
    assert s2["auc"] == pytest.approx(0.75)
    assert s2["ppv"] is None  # nothing flagged there


def test_audit_rows_keep_model_versions_apart_and_accept_no_studies() -> None:
    studies = pl.concat(
        [_labelled(["S1"] * 7, ["A"] * 7), _labelled(["S1"] * 7, ["A"] * 7, "3.0.0")]
    )
    rows = audit_rows(studies, "last_30_days", "Bbatch", NOW, resamples=100)
    assert sorted(set(rows["model_version"])) == ["2.0.0", "3.0.0"]
    assert rows.filter(pl.col("model_version") == "3.0.0").height == 3
    assert audit_rows(stack_labelled([]), "all_time", "Bbatch", NOW).height == 0


def _decision(accession: str, label: bool | None, reviewed: datetime) -> dict[str, object]:
    return {
        "programme": "cxr_tb",
        "accession_number": accession,
        "patient_id": None,
        "review_status": "confirmed",
        "label": label,
        "reviewer": "dr. test",
        "reviewed_at": reviewed,
        "source_file": "worklist.xlsx",
        "imported_at": NOW,
    }


def test_review_decisions_override_the_ground_truth(tmp_path: Path) -> None:
    truth = tmp_path / "ground_truth.csv"
    truth.write_text(
        "accession_number,programme,label\n"
        "0000000001,cxr_tb,1\n0000000002,cxr_tb,0\n0000000003,cxr_tb,0\n9,lung_ldct,1\n"
    )
    early, late = datetime(2024, 3, 1, tzinfo=UTC), datetime(2024, 3, 5, tzinfo=UTC)
    decisions = tmp_path / "decisions.parquet"
    rows = [
        _decision("0000000002", True, late),
        _decision("0000000002", False, early),  # older: the later decision counts
        _decision("0000000003", None, late),  # no finding recorded: the truth stands
        _decision("0000000004", True, early),
    ]
    write_parquet(frame_of(rows, REVIEW_DECISIONS), REVIEW_DECISIONS, decisions)
    labels, from_truth, from_review = read_labels(truth, [decisions], "cxr_tb")
    got = dict(labels.sort("accession_number").iter_rows())
    # Accession numbers stay text: leading zeros are kept.
    assert got == {"0000000001": True, "0000000002": True, "0000000003": False, "0000000004": True}
    assert (from_truth, from_review) == (2, 2)
    assert read_labels(None, [], "cxr_tb")[0].height == 0


def test_a_bad_label_is_refused(tmp_path: Path) -> None:
    truth = tmp_path / "ground_truth.csv"
    truth.write_text("accession_number,programme,label\n1,cxr_tb,maybe\n")
    with pytest.raises(ConfigurationError, match="label must be 0 or 1"):
        read_labels(truth, [], "cxr_tb")
    truth.write_text("accession,label\n1,1\n")
    with pytest.raises(ConfigurationError, match="accession_number"):
        read_labels(truth, [], "cxr_tb")


def test_device_model_is_the_most_common_within_the_study() -> None:
    catalog = pl.DataFrame(
        {
            "study_instance_uid": ["s1", "s1", "s1", "s2", "s3"],
            "manufacturer": ["Acme", "Acme", "Other", None, "Solo"],
            "manufacturer_model_name": ["X1", "X1", "Y", None, None],
        }
    )
    got = dict(device_models(catalog).iter_rows())
    assert got == {"s1": "Acme X1", "s2": UNKNOWN, "s3": "Solo"}


def test_site_tokens_are_keyed_and_never_the_name(tmp_path: Path) -> None:
    assert site_token(KEY, "Ziekenhuis  Utrecht ") == site_token(KEY, "ZIEKENHUIS UTRECHT")
    assert site_token(KEY, "Ziekenhuis Utrecht") != site_token(
        b"another-key" * 4, "Ziekenhuis Utrecht"
    )
    assert site_token(KEY, "") == site_token(KEY, None) == UNKNOWN
    named, unnamed = ct_slice(study_uid="1.2.3"), ct_slice(study_uid="1.2.4")
    named.InstitutionName = "Ziekenhuis Utrecht"
    write(named, tmp_path / "0.dcm")
    write(unnamed, tmp_path / "1.dcm")
    (tmp_path / "2.dcm").write_bytes(b"not dicom")
    manifest = pl.DataFrame(
        {
            "study_instance_uid": ["1.2.5", "1.2.3", "1.2.4", "1.2.6"],
            "landed_path": ["2.dcm", "0.dcm", "1.dcm", "3.dcm"],
            "problem": [None, None, None, "not DICOM"],
        }
    )
    sites = site_tokens(manifest, lambda name: tmp_path / name, KEY)
    assert sites == {"1.2.3": site_token(KEY, "Ziekenhuis Utrecht"), "1.2.4": UNKNOWN}
    assert all("Utrecht" not in token for token in sites.values())


def test_labelled_studies_join_through_the_vault_and_drop_identifiers() -> None:
    findings = pl.DataFrame(
        {
            "study_instance_uid": ["2.25.1", "2.25.2", "2.25.3", "2.25.4"],
            "programme": ["cxr_tb"] * 4,
            "score": [0.9, 0.2, None, 0.6],
            "flag": [True, False, None, True],
            "threshold": [0.5] * 4,
            "model_name": ["m"] * 4,
            "model_version": ["1.0.0"] * 4,
        }
    )
    vault = pl.DataFrame(
        {
            "study_instance_uid": ["2.25.1", "2.25.2", "2.25.3", "2.25.4"],
            "accession_number": ["A1", "A2", "A3", None],
            "original_study_instance_uid": ["1.1", "1.2", "1.3", "1.4"],
        }
    )
    labels = pl.DataFrame({"accession_number": ["A1", "A2", "A3"], "label": [True, False, True]})
    devices = pl.DataFrame({"study_instance_uid": ["2.25.1"], "device_model": ["Acme X1"]})
    got = labelled_studies(findings, vault, labels, devices, {"1.1": "SABC"})
    # 2.25.3 is unscored and 2.25.4 has no accession: neither can be audited.
    assert got.columns == LABELLED_SCHEMA.names()
    assert got.sort("score")["label"].to_list() == [False, True]
    assert got.sort("score")["site"].to_list() == [UNKNOWN, "SABC"]
    assert got.sort("score")["device_model"].to_list() == [UNKNOWN, "Acme X1"]


LIMITS = MonitoringLimits(
    0.05, 0.6, minimum_auc=0.85, minimum_sensitivity=0.8, minimum_specificity=0.7
)


def _audit(version: str = "2.0.0", copies: int = 5) -> pl.DataFrame:
    studies = stack_labelled([_labelled(["S1"] * 7, ["A"] * 7, version)] * copies).with_columns(
        pl.lit("cxr_tb_reference").alias("model_name")
    )
    return audit_rows(studies, "all_time", "Bbatch", NOW, resamples=200)


def test_judge_names_metrics_below_their_minimums() -> None:
    # 15 positives and 20 negatives: AUC 0.79 < 0.85, sensitivity 0.67 < 0.8, specificity 0.75.
    verdict = judge(_audit(), LIMITS, "cxr_tb_reference", "2.0.0", minimum_cases=10)
    assert not verdict.passed
    assert {(s.window, s.metric) for s in verdict.shortfalls} == {
        ("all_time", "auc"),
        ("all_time", "sensitivity"),
    }
    auc_shortfall = next(s for s in verdict.shortfalls if s.metric == "auc")
    assert auc_shortfall.value == pytest.approx(HAND_AUC)
    assert auc_shortfall.minimum == 0.85 and auc_shortfall.cases == 15
    assert auc_shortfall.low is not None and auc_shortfall.low < HAND_AUC
    assert "all_time specificity" in verdict.judged


def test_judge_leaves_small_samples_and_other_models_unjudged() -> None:
    few = judge(_audit(copies=1), LIMITS, "cxr_tb_reference", "2.0.0", minimum_cases=10)
    assert few.passed and not few.judged and len(few.not_judged) == 3
    other = judge(_audit(version="1.0.0"), LIMITS, "cxr_tb_reference", "2.0.0", minimum_cases=10)
    assert other.passed and not other.judged and not other.not_judged
    lenient = MonitoringLimits(0.05, 0.6, 0.7, 0.6, 0.7)
    assert judge(_audit(), lenient, "cxr_tb_reference", "2.0.0", minimum_cases=10).passed
