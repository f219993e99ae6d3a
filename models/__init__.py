"""Reference model code (plain PyTorch), manifests and weights, shipped as package data."""

from __future__ import annotations

from pathlib import Path


def bundled_models_root() -> Path:
    """The folder of the reference models that ship with the code: one folder per model."""
    return Path(__file__).resolve().parent
