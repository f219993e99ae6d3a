"""The model registry: where reference and local models live, and which device runs them."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import dagster as dg

if TYPE_CHECKING:
    from screenlake.inference.registry import LoadedModel

DEFAULT_MODELS_ROOT = Path(__file__).resolve().parents[1] / "models"


class ModelRegistry(dg.ConfigurableResource):
    """Models by name from a folder of model folders (manifest + weights), hash-checked on load."""

    models_root: str = str(DEFAULT_MODELS_ROOT)
    device: str | None = None
    batch_size: int = 64
    loader_workers: int = 0

    def models_root_path(self) -> Path:
        """The folder holding one sub-folder per registered model."""
        return Path(self.models_root).resolve()

    def load(self, model_name: str) -> LoadedModel:
        """Load and verify a model; raises ModelIntegrityError when its weights do not match."""
        # torch takes over a second to import: only runs that infer pay for it.
        from screenlake.inference.registry import load_model, model_dir_for

        return load_model(model_dir_for(self.models_root_path(), model_name), device=self.device)
