"""The model registry: where reference and local models live, and which device runs them.

Imports no torch: the manifest is all that most assets need, and only `load` brings in the
model code."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import dagster as dg
from pydantic import Field

from models import bundled_models_root
from screenlake.inference.manifest import MANIFEST_FILE, ModelManifest, load_manifest, model_dir_for
from screenlake.objectstore.access import DEFAULT_REGION, S3Access

if TYPE_CHECKING:
    from screenlake.inference.registry import LoadedModel

MODELS_S3_CREDENTIALS_ENV = "SCREENLAKE_MODELS_S3"


class ModelRegistry(dg.ConfigurableResource):
    """Models by name from a folder of model folders (manifest + weights), hash-checked on load.

    A manifest may name its weights by `weights_uri` (s3://bucket/key) instead of a file: they
    are downloaded once into `cache_dir` from `s3_endpoint_url` (None: AWS) with the credentials
    in SCREENLAKE_MODELS_S3_ACCESS_KEY_ID / _SECRET_ACCESS_KEY (else boto3's default chain).
    """

    models_root: str = str(bundled_models_root())
    device: str | None = None
    # None: 64 images a batch on the CPU, 256 on a GPU (`default_batch_size`).
    batch_size: int | None = None
    # None: one per core up to 8, two cores left to the main process with CUDA
    # (`default_loader_workers`).
    loader_workers: int | None = None
    cache_dir: str | None = None
    s3_endpoint_url: str | None = None
    s3_region: str = DEFAULT_REGION
    # Programme -> registered model name, where the deployment chooses another model than the
    # programme's reference model (SCREENLAKE_MODEL_<PROGRAMME>): no code changes to swap one.
    programme_models: dict[str, str] = Field(default_factory=dict)

    def model_name_for(self, programme: str) -> str:
        """The registered model that scores `programme`: the configured one, else the
        programme's reference model."""
        from screenlake.programmes import get_programme

        return self.programme_models.get(programme) or get_programme(programme).model_name

    def models_root_path(self) -> Path:
        """The folder holding one sub-folder per registered model."""
        return Path(self.models_root).resolve()

    def model_dir(self, model_name: str) -> Path:
        """The folder of registered model `model_name`; ConfigurationError names the models
        there when it is absent."""
        return model_dir_for(self.models_root_path(), model_name)

    def manifest_for(self, programme: str) -> ModelManifest:
        """The validated manifest of the model that scores `programme` (`model_name_for`),
        without loading the model: ConfigurationError when the model is not there,
        ModelIntegrityError naming the field when its manifest is wrong."""
        return load_manifest(self.model_dir(self.model_name_for(programme)) / MANIFEST_FILE)

    def cache_path(self) -> Path | None:
        """The folder that keeps weights downloaded from object storage; None when unset."""
        return Path(self.cache_dir).expanduser().resolve() if self.cache_dir else None

    def s3_access(self) -> S3Access:
        """How to reach the object store that holds models' `weights_uri`."""
        return S3Access(self.s3_endpoint_url or None, self.s3_region, MODELS_S3_CREDENTIALS_ENV)

    def load(self, model_name: str) -> LoadedModel:
        """Load and verify a model; raises ModelIntegrityError when its weights do not match."""
        # torch takes over a second to import: only runs that infer pay for it.
        from screenlake.inference.registry import load_model

        return load_model(
            self.model_dir(model_name),
            device=self.device,
            cache_dir=self.cache_path(),
            s3=self.s3_access(),
        )
