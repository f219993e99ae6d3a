"""A model's `manifest.json`: what the model is, what it reads, how its output is used, and
the SHA-256 of its weights. Parsed and validated here, before any weights are read.

Imports no torch: assets that only need a manifest (thresholds, monitoring limits) read it
through `ModelRegistry.manifest_for` without paying for the model code."""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from models import ARCHITECTURE_NAMES
from screenlake.errors import ConfigurationError, ModelIntegrityError
from screenlake.objectstore.location import parse_s3_uri
from screenlake.programmes import PROGRAMMES

MANIFEST_FILE = "manifest.json"
FORMATS = ("state_dict", "torchscript", "torch_export")
NORMALISATIONS = ("ct_window", "bits_stored")
AGGREGATIONS = ("max", "mean")

_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_VERSION = re.compile(r"^\d+\.\d+\.\d+([-+][0-9A-Za-z.-]+)?$")
SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_OPERATING_POINT = re.compile(r"^[a-z][a-z0-9_]*$")

_TOP_LEVEL = {
    "name",
    "version",
    "programme",
    "modalities",
    "task",
    "architecture",
    "format",
    "weights_file",
    "weights_uri",
    "weights_sha256",
    "input",
    "aggregation",
    "output_label",
    "threshold",
    "operating_points",
    "training",
    "training_data",
    "evaluation",
    "intended_use",
    "disclaimer",
    "licence",
    "monitoring",
}
_INPUT = {
    "size",
    "channels",
    "normalisation",
    "window_center_hu",
    "window_width_hu",
    "resize",
    "spacing_mm",
    "context_slices",
}


@dataclass(frozen=True)
class InputSpec:
    """What one model input is: a (channels, size, size) float image scaled to [0, 1].

    `ct_window` maps Hounsfield units linearly from [center - width/2, center + width/2] onto
    [0, 1] and clips; `bits_stored` divides stored values by 2**BitsStored - 1 (MONOCHROME1
    images are inverted so that dense tissue is always bright). `spacing_mm`, when set, is the
    in-plane pixel spacing the model expects. A 2.5D model (`context_slices` k > 0) reads each CT
    slice with its k neighbours on each side stacked as channels, so `channels` is 2k + 1.
    """

    size: int
    channels: int
    normalisation: str
    window_center_hu: float | None = None
    window_width_hu: float | None = None
    resize: str = "area"
    spacing_mm: float | None = None
    context_slices: int = 0

    @property
    def needs_series(self) -> bool:
        """Whether one input needs the neighbouring slices of its series, not one instance."""
        return self.context_slices > 0

    def to_json(self) -> dict[str, Any]:
        """The spec as the manifest's `input` object (optional keys only when set)."""
        out: dict[str, Any] = {
            "size": self.size,
            "channels": self.channels,
            "normalisation": self.normalisation,
            "resize": self.resize,
        }
        if self.normalisation == "ct_window":
            out["window_center_hu"] = self.window_center_hu
            out["window_width_hu"] = self.window_width_hu
        if self.spacing_mm is not None:
            out["spacing_mm"] = self.spacing_mm
        if self.context_slices > 0:
            out["context_slices"] = self.context_slices
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
class MonitoringLimits:
    """What the programme accepts from the model in service: the band its nightly positive
    rate should stay in, and the least AUC, sensitivity and specificity the performance audit
    may find before it fails."""

    positive_rate_low: float
    positive_rate_high: float
    minimum_auc: float
    minimum_sensitivity: float
    minimum_specificity: float


@dataclass(frozen=True)
class ModelManifest:
    """A validated `manifest.json`: what the model is, what it reads and how to use its output.

    Exactly one of `weights_file` (a file in the model folder) and `weights_uri` (`s3://...`) is
    set. `threshold` is the operating point that flags use; `operating_points` are other named
    thresholds, sorted by name, for reporting.
    """

    name: str
    version: str
    programme: str
    modalities: tuple[str, ...]
    task: str
    architecture: str | None
    format: str
    weights_file: str | None
    weights_uri: str | None
    weights_sha256: str
    input: InputSpec
    aggregation: str
    output_label: str
    threshold: float
    evaluation: HeldOutEvaluation
    intended_use: str
    disclaimer: str
    licence: str
    training_data: str
    operating_points: tuple[tuple[str, float], ...] = ()
    monitoring: MonitoringLimits | None = None
    # Free-form provenance (generator, seed, sizes, epochs); kept out of hashing and comparison.
    training: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)
    source: Path | None = field(default=None, compare=False)


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

    def given(self, key: str) -> bool:
        """Whether an optional field is present with a value (absent and null read the same)."""
        return self.data.get(key) is not None

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
    architecture: str | None = None
    if fmt == "state_dict":
        architecture = top.choice("architecture", ARCHITECTURE_NAMES)
    elif top.given("architecture"):
        raise top.fail(
            "architecture",
            f"must be absent or null for format {fmt!r}, which carries its own graph",
        )

    modalities = top.raw("modalities")
    if (
        not isinstance(modalities, list)
        or not modalities
        or not all(isinstance(m, str) and m for m in modalities)
    ):
        raise top.fail(
            "modalities", f"must be a non-empty list of DICOM modalities, not {modalities!r}"
        )

    weights_file, weights_uri = _weights_source(top)
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
        weights_uri=weights_uri,
        weights_sha256=sha,
        input=spec,
        aggregation=top.choice("aggregation", AGGREGATIONS),
        output_label=top.text("output_label"),
        threshold=top.number("threshold", 0.0, 1.0),
        evaluation=evaluation,
        intended_use=top.text("intended_use"),
        disclaimer=top.text("disclaimer"),
        licence=top.text("licence"),
        training_data=top.text("training_data"),
        operating_points=_operating_points(top),
        monitoring=_monitoring(top, source),
        training=dict(training),
        source=source,
    )


def _monitoring(top: _Fields, source: Path) -> MonitoringLimits | None:
    """The optional `monitoring` object: `positive_rate_band` [low, high] and the minimums."""
    if not top.given("monitoring"):
        return None
    fields = _Fields(top.raw("monitoring"), source, "monitoring.")
    fields.unknown(
        {"positive_rate_band", "minimum_auc", "minimum_sensitivity", "minimum_specificity"}
    )
    band = fields.raw("positive_rate_band")
    if (
        not isinstance(band, list)
        or len(band) != 2
        or not all(isinstance(v, int | float) and not isinstance(v, bool) for v in band)
        or not 0.0 <= band[0] <= band[1] <= 1.0
    ):
        raise fields.fail("positive_rate_band", "must be [low, high] with 0 <= low <= high <= 1")
    return MonitoringLimits(
        positive_rate_low=float(band[0]),
        positive_rate_high=float(band[1]),
        minimum_auc=fields.number("minimum_auc", 0.0, 1.0),
        minimum_sensitivity=fields.number("minimum_sensitivity", 0.0, 1.0),
        minimum_specificity=fields.number("minimum_specificity", 0.0, 1.0),
    )


def _weights_source(top: _Fields) -> tuple[str | None, str | None]:
    """(weights_file, weights_uri), exactly one of them set."""
    has_file, has_uri = top.given("weights_file"), top.given("weights_uri")
    if has_file == has_uri:
        problem = "are both set" if has_file else "are both missing"
        raise top.fail(
            "weights_file",
            f"and 'weights_uri' {problem}: give exactly one, the weights' file name inside the "
            "model folder or their s3://bucket/key",
        )
    if has_file:
        weights_file = top.text("weights_file")
        if not SAFE_NAME.match(weights_file):
            raise top.fail(
                "weights_file",
                f"must be a file name inside the model folder, not {weights_file!r}",
            )
        return weights_file, None
    uri = top.text("weights_uri")
    try:
        location = parse_s3_uri(uri, "weights_uri")
    except ConfigurationError as error:
        raise top.fail("weights_uri", f"is not usable ({error})") from None
    if not location.prefix or uri.strip() != uri or uri.endswith("/"):
        raise top.fail("weights_uri", f"must name one object, s3://bucket/key, not {uri!r}")
    return None, uri


def _operating_points(top: _Fields) -> tuple[tuple[str, float], ...]:
    if not top.given("operating_points"):
        return ()
    points = _Fields(top.raw("operating_points"), top.path, "operating_points.")
    for name in points.data:
        if not _OPERATING_POINT.match(name):
            raise points.fail(
                name,
                "is not an operating-point name (lower-case letters, digits and '_', "
                "starting with a letter)",
            )
    return tuple((name, points.number(name, 0.0, 1.0)) for name in sorted(points.data))


def _input_spec(fields: _Fields) -> InputSpec:
    fields.unknown(_INPUT)
    context = fields.integer("context_slices") if fields.given("context_slices") else 0
    channels = fields.integer("channels", low=1)
    if channels != 2 * context + 1:
        raise fields.fail(
            "channels",
            f"is {channels}, but context_slices is {context}: a model reads each slice with "
            f"context_slices neighbours on each side as channels, so channels must be "
            f"2 * {context} + 1 = {2 * context + 1}",
        )
    spacing = None
    if fields.given("spacing_mm"):
        spacing = fields.number("spacing_mm", low=0.0)
        if spacing <= 0.0:
            raise fields.fail(
                "spacing_mm", f"must be a positive pixel spacing in mm, not {spacing}"
            )
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
        spacing_mm=spacing,
        context_slices=context,
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


def model_dir_for(models_root: Path, model_name: str) -> Path:
    """The folder of model `model_name` under `models_root`; ConfigurationError if it is absent."""
    if not SAFE_NAME.match(model_name):
        raise ConfigurationError(
            f"model name {model_name!r} is not a plain folder name (letters, digits, '_', '-', '.')"
        )
    directory = models_root / model_name
    if not (directory / MANIFEST_FILE).is_file():
        available = sorted(p.parent.name for p in models_root.glob(f"*/{MANIFEST_FILE}"))
        raise ConfigurationError(
            f"no model {model_name!r} under {models_root} (expected {directory / MANIFEST_FILE}); "
            f"models there: {', '.join(available) or 'none'}. Point the models root "
            "(SCREENLAKE_MODELS) at the folder that holds the model, or train it with "
            "`python -m models.train_reference`"
        )
    return directory


def sha256_bytes(data: bytes) -> str:
    """Lower-case hexadecimal SHA-256 of `data`."""
    return hashlib.sha256(data).hexdigest()
