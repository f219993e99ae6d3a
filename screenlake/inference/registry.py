"""Model registry: read and validate a model's manifest, check its weights, load it for inference.

A model is a folder holding `manifest.json` and a weights file. The manifest names the
architecture, the input the model expects, how instance scores become a study score, the
decision threshold and the SHA-256 of the weights; a model whose weights differ from that hash
is refused, so that every prediction's provenance (name, version, weights hash) is true.
"""

from __future__ import annotations

import hashlib
import io
import json
import pickle
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from models.architectures import ARCHITECTURES
from screenlake.errors import ConfigurationError, ModelIntegrityError
from screenlake.programmes import PROGRAMMES

MANIFEST_FILE = "manifest.json"
FORMATS = ("state_dict", "torchscript")
NORMALISATIONS = ("ct_window", "bits_stored")
AGGREGATIONS = ("max", "mean")

_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_VERSION = re.compile(r"^\d+\.\d+\.\d+([-+][0-9A-Za-z.-]+)?$")
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")

_TOP_LEVEL = {
    "name",
    "version",
    "programme",
    "modalities",
    "task",
    "architecture",
    "format",
    "weights_file",
    "weights_sha256",
    "input",
    "aggregation",
    "output_label",
    "threshold",
    "training",
    "evaluation",
    "intended_use",
    "disclaimer",
}
_INPUT = {"size", "channels", "normalisation", "window_center_hu", "window_width_hu", "resize"}


@dataclass(frozen=True)
class InputSpec:
    """What one model input is: a (channels, size, size) float image scaled to [0, 1].

    `ct_window` maps Hounsfield units linearly from [center - width/2, center + width/2] onto
    [0, 1] and clips; `bits_stored` divides stored values by 2**BitsStored - 1 (MONOCHROME1
    images are inverted so that dense tissue is always bright).
    """

    size: int
    channels: int
    normalisation: str
    window_center_hu: float | None = None
    window_width_hu: float | None = None
    resize: str = "area"

    def to_json(self) -> dict[str, Any]:
        """The spec as the manifest's `input` object."""
        out: dict[str, Any] = {
            "size": self.size,
            "channels": self.channels,
            "normalisation": self.normalisation,
            "resize": self.resize,
        }
        if self.normalisation == "ct_window":
            out["window_center_hu"] = self.window_center_hu
            out["window_width_hu"] = self.window_width_hu
        return out


@dataclass(frozen=True)
class HeldOutEvaluation:
    """Study-level performance on data the model and its threshold never saw."""

    auc: float
    sensitivity: float
    specificity: float
    studies_positive: int
    studies_negative: int
    description: str


@dataclass(frozen=True)
class ModelManifest:
    """A validated `manifest.json`: what the model is, what it reads and how to use its output."""

    name: str
    version: str
    programme: str
    modalities: tuple[str, ...]
    task: str
    architecture: str | None
    format: str
    weights_file: str
    weights_sha256: str
    input: InputSpec
    aggregation: str
    output_label: str
    threshold: float
    evaluation: HeldOutEvaluation
    intended_use: str
    disclaimer: str
    # Free-form provenance (generator, seed, sizes, epochs); kept out of hashing and comparison.
    training: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)
    source: Path | None = field(default=None, compare=False)


@dataclass(frozen=True)
class LoadedModel:
    """A model ready for inference: its manifest, the module (eval mode) and its device."""

    manifest: ModelManifest
    module: nn.Module
    device: str
    directory: Path


class _Fields:
    """Typed access to one JSON object of a manifest, raising errors that name field and file."""

    def __init__(self, data: Any, path: Path, prefix: str = "") -> None:
        if not isinstance(data, dict):
            what = f"field {prefix.rstrip('.')!r}" if prefix else "the manifest"
            raise ModelIntegrityError(f"{path}: {what} must be a JSON object")
        self.data, self.path, self.prefix = data, path, prefix

    def fail(self, key: str, problem: str) -> ModelIntegrityError:
        return ModelIntegrityError(
            f"{self.path}: field {self.prefix + key!r} {problem}; fix the manifest "
            "or re-export the model"
        )

    def raw(self, key: str, optional: bool = False) -> Any:
        if key not in self.data or (self.data[key] is None and not optional):
            raise self.fail(key, "is missing")
        return self.data[key]

    def text(self, key: str) -> str:
        value = self.raw(key)
        if not isinstance(value, str) or not value.strip():
            raise self.fail(key, f"must be a non-empty string, not {value!r}")
        return value

    def choice(self, key: str, allowed: tuple[str, ...]) -> str:
        value = self.text(key)
        if value not in allowed:
            raise self.fail(key, f"is {value!r}; allowed: {', '.join(allowed)}")
        return value

    def number(self, key: str, low: float | None = None, high: float | None = None) -> float:
        value = self.raw(key)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise self.fail(key, f"must be a number, not {value!r}")
        if (low is not None and value < low) or (high is not None and value > high):
            raise self.fail(key, f"is {value}, outside [{low}, {high}]")
        return float(value)

    def integer(self, key: str, low: int = 0) -> int:
        value = self.raw(key)
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise self.fail(key, f"must be an integer >= {low}, not {value!r}")
        return value

    def unknown(self, known: set[str]) -> None:
        extra = sorted(set(self.data) - known)
        if extra:
            raise self.fail(
                extra[0], f"is not a manifest field (known: {', '.join(sorted(known))})"
            )


def parse_manifest(data: Any, source: Path) -> ModelManifest:
    """Validate a manifest already parsed from JSON; `source` names it in error messages."""
    top = _Fields(data, source)
    top.unknown(_TOP_LEVEL)
    fmt = top.choice("format", FORMATS)
    architecture: str | None
    if fmt == "state_dict":
        architecture = top.choice("architecture", tuple(sorted(ARCHITECTURES)))
    else:
        raw_arch = top.raw("architecture", optional=True)
        architecture = raw_arch if isinstance(raw_arch, str) else None

    modalities = top.raw("modalities")
    if (
        not isinstance(modalities, list)
        or not modalities
        or not all(isinstance(m, str) and m for m in modalities)
    ):
        raise top.fail(
            "modalities", f"must be a non-empty list of DICOM modalities, not {modalities!r}"
        )

    weights_file = top.text("weights_file")
    if not _SAFE_NAME.match(weights_file):
        raise top.fail(
            "weights_file", f"must be a file name inside the model folder, not {weights_file!r}"
        )
    sha = top.text("weights_sha256")
    if not _SHA256.match(sha):
        raise top.fail("weights_sha256", "must be 64 lower-case hexadecimal digits")
    version = top.text("version")
    if not _VERSION.match(version):
        raise top.fail("version", f"must be a semantic version such as '1.0.0', not {version!r}")
    programme = top.choice("programme", tuple(sorted(PROGRAMMES)))

    spec = _input_spec(_Fields(top.raw("input"), source, "input."))
    ev = _Fields(top.raw("evaluation"), source, "evaluation.")
    evaluation = HeldOutEvaluation(
        auc=ev.number("auc", 0.0, 1.0),
        sensitivity=ev.number("sensitivity", 0.0, 1.0),
        specificity=ev.number("specificity", 0.0, 1.0),
        studies_positive=ev.integer("studies_positive"),
        studies_negative=ev.integer("studies_negative"),
        description=ev.text("description"),
    )
    training = _Fields(top.raw("training"), source, "training.").data

    return ModelManifest(
        name=top.text("name"),
        version=version,
        programme=programme,
        modalities=tuple(m.upper() for m in modalities),
        task=top.text("task"),
        architecture=architecture,
        format=fmt,
        weights_file=weights_file,
        weights_sha256=sha,
        input=spec,
        aggregation=top.choice("aggregation", AGGREGATIONS),
        output_label=top.text("output_label"),
        threshold=top.number("threshold", 0.0, 1.0),
        evaluation=evaluation,
        intended_use=top.text("intended_use"),
        disclaimer=top.text("disclaimer"),
        training=dict(training),
        source=source,
    )


def _input_spec(fields: _Fields) -> InputSpec:
    fields.unknown(_INPUT)
    channels = fields.integer("channels", low=1)
    if channels != 1:
        raise fields.fail("channels", f"is {channels}; only single-channel models are supported")
    normalisation = fields.choice("normalisation", NORMALISATIONS)
    center = width = None
    if normalisation == "ct_window":
        center = fields.number("window_center_hu", -2048.0, 4095.0)
        width = fields.number("window_width_hu", 1.0, 8192.0)
    resize = fields.choice("resize", ("area",)) if "resize" in fields.data else "area"
    return InputSpec(
        size=fields.integer("size", low=8),
        channels=channels,
        normalisation=normalisation,
        window_center_hu=center,
        window_width_hu=width,
        resize=resize,
    )


def load_manifest(path: Path) -> ModelManifest:
    """The validated manifest at `path`; ModelIntegrityError names the bad field and the file."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise ModelIntegrityError(f"{path}: manifest cannot be read ({error.strerror})") from error
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise ModelIntegrityError(f"{path}: manifest is not valid JSON ({error})") from error
    return parse_manifest(data, path)


def sha256_bytes(data: bytes) -> str:
    """Lower-case hexadecimal SHA-256 of `data`."""
    return hashlib.sha256(data).hexdigest()


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


def load_model(model_dir: Path, device: str | None = None) -> LoadedModel:
    """Load the model in `model_dir` after checking its manifest and weights hash.

    The weights are read once, hashed, and loaded from those same bytes, so the module that runs
    is the one the hash describes. Refuses (ModelIntegrityError) a hash that differs from the
    manifest, weights that do not fit the architecture, or a module that does not return one
    logit per image.
    """
    manifest = load_manifest(model_dir / MANIFEST_FILE)
    weights_path = model_dir / manifest.weights_file
    try:
        data = weights_path.read_bytes()
    except OSError as error:
        raise ModelIntegrityError(
            f"{weights_path}: weights file named by the manifest cannot be read ({error.strerror})"
        ) from error
    digest = sha256_bytes(data)
    if digest != manifest.weights_sha256:
        raise ModelIntegrityError(
            f"{weights_path}: weights hash {digest} differs from the manifest's weights_sha256 "
            f"{manifest.weights_sha256}; the file was changed after export. Restore the exported "
            "weights, or export the model again under a new version"
        )
    resolved = resolve_device(device)
    module = _module_from_bytes(manifest, data, weights_path)
    module.to(resolved)
    module.eval()
    for parameter in module.parameters():
        parameter.requires_grad_(False)
    _check_output(module, manifest, resolved, weights_path)
    return LoadedModel(manifest=manifest, module=module, device=resolved, directory=model_dir)


def _module_from_bytes(manifest: ModelManifest, data: bytes, path: Path) -> nn.Module:
    if manifest.format == "torchscript":
        try:
            return torch.jit.load(io.BytesIO(data), map_location="cpu")
        except RuntimeError as error:
            raise ModelIntegrityError(
                f"{path}: not a loadable TorchScript module ({error})"
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
    probe = torch.zeros(2, spec.channels, spec.size, spec.size, device=device)
    with torch.inference_mode():
        out = module(probe)
    if not isinstance(out, torch.Tensor) or out.numel() != 2:
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ModelIntegrityError(
            f"{path}: the model returns {shape} for a batch of 2 inputs; "
            "it must return one logit per image"
        )


def model_dir_for(models_root: Path, model_name: str) -> Path:
    """The folder of model `model_name` under `models_root`; ConfigurationError if it is absent."""
    if not _SAFE_NAME.match(model_name):
        raise ConfigurationError(
            f"model name {model_name!r} is not a plain folder name (letters, digits, '_', '-', '.')"
        )
    directory = models_root / model_name
    if not (directory / MANIFEST_FILE).is_file():
        available = sorted(p.parent.name for p in models_root.glob(f"*/{MANIFEST_FILE}"))
        raise ConfigurationError(
            f"no model {model_name!r} under {models_root} (expected {directory / MANIFEST_FILE}); "
            f"models there: {', '.join(available) or 'none'}. Point the models root at the "
            "folder that holds the model, or train it with `python -m models.train_reference`"
        )
    return directory


def bundled_models_root() -> Path:
    """The folder of the reference models that ship with the code (`models/`)."""
    import models

    return Path(models.__file__).resolve().parent
