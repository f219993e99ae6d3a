"""Model registry: read and validate a model's manifest, check its weights, load it for inference.

A model is a folder holding `manifest.json` and either a weights file or, in the manifest, the
`s3://` URI of its weights. The manifest names the architecture, the input the model expects,
how instance scores become a study score, the decision threshold, the licence, the training data
and the SHA-256 of the weights; a model whose weights differ from that hash is refused, so that
every prediction's provenance (name, version, weights hash) is true. Weights from S3 are
downloaded once into a local cache, named by their hash, and re-checked on every load.
"""

from __future__ import annotations

import io
import pickle
import zipfile
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from models.architectures import ARCHITECTURES
from screenlake.errors import ConfigurationError, ModelIntegrityError
from screenlake.inference.manifest import (
    MANIFEST_FILE,
    ModelManifest,
    load_manifest,
    sha256_bytes,
)
from screenlake.inference.memory import keep_freed_memory_for_reuse
from screenlake.inference.weights_cache import cached_weights
from screenlake.objectstore.access import S3Access


@dataclass(frozen=True)
class LoadedModel:
    """A model ready for inference: its manifest, the module (eval mode, or a torch_export
    program as exported) and its device."""

    manifest: ModelManifest
    module: nn.Module
    device: str
    directory: Path


def resolve_device(device: str | None = None) -> str:
    """`device` checked against this machine, or "cuda" when available and "cpu" otherwise."""
    if device is None:
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        parsed = torch.device(device)
    except RuntimeError as error:
        raise ConfigurationError(
            f"inference device {device!r} is not a torch device; use 'cpu', 'cuda' or 'cuda:N'"
        ) from error
    if parsed.type == "cuda" and not torch.cuda.is_available():
        raise ConfigurationError(
            f"inference device {device!r} asked for, but torch sees no CUDA device here; "
            "use 'cpu' or install the CUDA build of torch"
        )
    if parsed.type not in ("cpu", "cuda"):
        raise ConfigurationError(
            f"inference device {device!r} is not supported; use 'cpu' or 'cuda'"
        )
    return str(parsed)


def load_model(
    model_dir: Path,
    device: str | None = None,
    cache_dir: Path | None = None,
    s3: S3Access | None = None,
) -> LoadedModel:
    """Load the model in `model_dir` after checking its manifest and weights hash.

    The weights are read once, hashed, and loaded from those same bytes, so the module that runs
    is the one the hash describes. Weights named by `weights_uri` are downloaded once through
    `s3` (default: AWS with the SCREENLAKE_MODELS_S3_* credentials) into `cache_dir`, which they
    need. Refuses (ModelIntegrityError) a hash that differs from the manifest, weights that do
    not fit the architecture, or a module that does not return one logit per image whatever
    the other images of its batch.
    """
    manifest = load_manifest(model_dir / MANIFEST_FILE)
    if manifest.weights_file is not None:
        weights_path = model_dir / manifest.weights_file
        advice = (
            "the file was changed after export. Restore the exported weights, or export the "
            "model again under a new version"
        )
    else:
        weights_path = cached_weights(manifest, cache_dir, s3)
        advice = (
            "the cached copy was changed after download. Delete it, and the next load "
            "downloads the weights again"
        )
    data = _verified_weights(weights_path, manifest.weights_sha256, advice)
    resolved = resolve_device(device)
    if resolved == "cpu":
        # This process is about to run batches on the CPU: let it reuse their memory.
        keep_freed_memory_for_reuse()
    module = _module_from_bytes(manifest, data, weights_path)
    module.to(resolved)
    if manifest.format != "torch_export":
        # An exported program is frozen in the mode it was exported in and refuses eval();
        # _check_output catches one exported in training mode.
        module.eval()
    for parameter in module.parameters():
        parameter.requires_grad_(False)
    _check_output(module, manifest, resolved, weights_path)
    return LoadedModel(manifest=manifest, module=module, device=resolved, directory=model_dir)


def _verified_weights(path: Path, expected: str, advice: str) -> bytes:
    try:
        data = path.read_bytes()
    except OSError as error:
        raise ModelIntegrityError(
            f"{path}: weights file named by the manifest cannot be read ({error.strerror})"
        ) from error
    digest = sha256_bytes(data)
    if digest != expected:
        raise ModelIntegrityError(
            f"{path}: weights hash {digest} differs from the manifest's weights_sha256 "
            f"{expected}; {advice}"
        )
    return data


def _module_from_bytes(manifest: ModelManifest, data: bytes, path: Path) -> nn.Module:
    if manifest.format == "torchscript":
        try:
            return torch.jit.load(io.BytesIO(data), map_location="cpu")
        except RuntimeError as error:
            raise ModelIntegrityError(
                f"{path}: not a loadable TorchScript module ({error})"
            ) from error
    if manifest.format == "torch_export":
        try:
            return torch.export.load(io.BytesIO(data)).module()
        except (RuntimeError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as error:
            raise ModelIntegrityError(
                f"{path}: not a program saved with torch.export.save ({error})"
            ) from error
    assert manifest.architecture is not None  # parse_manifest requires it for state_dict
    module = ARCHITECTURES[manifest.architecture]()
    try:
        state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except (RuntimeError, pickle.UnpicklingError, EOFError, ValueError) as error:
        raise ModelIntegrityError(f"{path}: not a loadable state_dict ({error})") from error
    if not isinstance(state, dict):
        raise ModelIntegrityError(f"{path}: holds a {type(state).__name__}, not a state_dict")
    try:
        module.load_state_dict(state)
    except RuntimeError as error:
        raise ModelIntegrityError(
            f"{path}: weights do not fit architecture {manifest.architecture!r} ({error})"
        ) from error
    return module


def _check_output(module: nn.Module, manifest: ModelManifest, device: str, path: Path) -> None:
    spec = manifest.input
    generator = torch.Generator().manual_seed(0)
    probe = torch.rand(2, spec.channels, spec.size, spec.size, generator=generator).to(device)
    outputs = [_run_probe(module, probe[:n], manifest, path) for n in (2, 1)]
    # Inference batches vary in size; an image's score must not depend on its batch neighbours
    # (BatchNorm or dropout left in training mode, typically in a torch_export program).
    if not torch.allclose(outputs[0].flatten()[:1], outputs[1].flatten(), rtol=1e-2, atol=1e-2):
        raise ModelIntegrityError(
            f"{path}: the model scores an image differently alone and in a batch of 2; "
            "put it in eval mode (module.eval()) before saving or exporting it"
        )


def _run_probe(
    module: nn.Module, probe: torch.Tensor, manifest: ModelManifest, path: Path
) -> torch.Tensor:
    n = probe.shape[0]
    hint = ""
    if manifest.format == "torch_export":
        hint = (
            "; export it with a dynamic batch dimension, e.g. an example batch of 2 and "
            "dynamic_shapes={'x': {0: torch.export.Dim('batch')}}"
        )
    try:
        with torch.inference_mode():
            out = module(probe)
    # torch.export programs check their input shapes with assertions.
    except (RuntimeError, AssertionError) as error:
        raise ModelIntegrityError(
            f"{path}: the model cannot read a batch of {n} inputs of shape "
            f"{tuple(probe.shape[1:])} as the manifest's input describes ({error}){hint}"
        ) from error
    if not isinstance(out, torch.Tensor) or out.numel() != n:
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ModelIntegrityError(
            f"{path}: the model returns {shape} for a batch of {n} inputs; "
            "it must return one logit per image"
        )
    return out
