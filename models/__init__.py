"""Reference model code (plain PyTorch), manifests and weights, shipped as package data."""

from __future__ import annotations

from pathlib import Path

# The keys of `models.architectures.ARCHITECTURES`, here so that a manifest can be validated
# without importing torch (tests/models/test_architectures.py keeps the two equal).
ARCHITECTURE_NAMES: tuple[str, ...] = (
    "screening_cnn_25d_v2",
    "screening_cnn_2d_v2",
    "small_cnn_v1",
)


def bundled_models_root() -> Path:
    """The folder of the reference models that ship with the code: one folder per model."""
    return Path(__file__).resolve().parent
