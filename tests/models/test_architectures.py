"""The reference architectures, and the evaluation helpers of the training script.

The helpers live in `models/train_reference.py`; they are tested here rather than through a
training run, which takes a minute per model.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from models import ARCHITECTURE_NAMES
from models.architectures import ARCHITECTURES, INPUT_SIZE, build
from models.train_reference import auc, choose_threshold, sensitivity_specificity


@pytest.mark.parametrize("key", sorted(ARCHITECTURES))
def test_architecture_returns_one_logit_per_image(key: str) -> None:
    torch.manual_seed(0)
    module = build(key).eval()
    channels = getattr(module, "in_channels", 1)
    with torch.inference_mode():
        out = module(torch.rand(3, channels, INPUT_SIZE, INPUT_SIZE))
    assert out.shape == (3, 1)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("key", sorted(ARCHITECTURES))
def test_architecture_is_small(key: str) -> None:
    parameters = sum(p.numel() for p in build(key).parameters())
    # 4 bytes each: committed weights stay under 1.6 MB.
    assert parameters < 400_000


def test_manifests_accept_exactly_the_architectures_there_are() -> None:
    # Manifests are validated against ARCHITECTURE_NAMES so that reading one needs no torch.
    assert sorted(ARCHITECTURE_NAMES) == sorted(ARCHITECTURES)


def test_unknown_architecture_names_the_known_ones() -> None:
    with pytest.raises(KeyError, match="small_cnn_v1"):
        build("resnet9000")


def test_auc_hand_computed() -> None:
    # Positives 0.9, 0.4, 0.6; negatives 0.1, 0.4, 0.8. Pairs (pos > neg): 0.9 beats all 3;
    # 0.4 beats 0.1 and ties 0.4 (1.5); 0.6 beats 0.1 and 0.4 (2). (3 + 1.5 + 2) / 9.
    scores = [0.9, 0.1, 0.4, 0.4, 0.6, 0.8]
    labels = [True, False, True, False, True, False]
    assert auc(scores, labels) == pytest.approx(6.5 / 9)


def test_auc_extremes_and_invariance() -> None:
    labels = np.array([True, True, False, False])
    assert auc([0.9, 0.8, 0.2, 0.1], labels) == 1.0
    assert auc([0.1, 0.2, 0.8, 0.9], labels) == 0.0
    assert auc([0.5, 0.5, 0.5, 0.5], labels) == 0.5
    rng = np.random.default_rng(1)
    scores, y = rng.random(50), rng.random(50) < 0.4
    assert auc(scores, y) == pytest.approx(auc(np.log(scores), y))  # ranks only


def test_auc_needs_both_classes() -> None:
    with pytest.raises(ValueError, match="positive and one negative"):
        auc([0.1, 0.2], [True, True])


def test_threshold_reaches_target_sensitivity_with_margin() -> None:
    scores = np.array([0.95, 0.9, 0.8, 0.7, 0.3, 0.6, 0.2, 0.1, 0.05, 0.65])
    labels = np.array([True] * 5 + [False] * 5)
    threshold = choose_threshold(scores, labels, target=0.8)
    sensitivity, specificity = sensitivity_specificity(scores, labels, threshold)
    assert sensitivity >= 0.8
    # Best trade-off at 4 of 5 positives: between 0.7 (positive) and 0.65 (negative).
    assert threshold == pytest.approx(0.675)
    assert specificity == 1.0


def test_threshold_for_separable_scores_sits_in_the_gap() -> None:
    scores = np.array([0.9, 0.8, 0.3, 0.1])
    labels = np.array([True, True, False, False])
    assert choose_threshold(scores, labels, target=0.9) == pytest.approx(0.55)


def test_sensitivity_specificity() -> None:
    scores = np.array([0.9, 0.4, 0.6, 0.1])
    labels = np.array([True, True, False, False])
    assert sensitivity_specificity(scores, labels, 0.5) == (0.5, 0.5)
