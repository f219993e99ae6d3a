"""Image size presets of the synthetic export, and the transfer syntax each device writes.

`demo` keeps the export small for the demo and the tests: 24 CT slices of 96x96 and radiographs
of 256x256, all unsigned 12-bit and uncompressed. `real` writes what a screening night weighs:
low-dose CT series of 300 slices of 512x512 stored as scanners store them (signed int16,
RescaleIntercept -1024, padding outside the reconstruction circle), radiographs at detector size
(3,000 x 3,000; CR 12 bits, DX 14 bits), and the transfer syntaxes real exports carry: most
devices send Explicit VR Little Endian, the second CT scanner JPEG-LS lossless and the DX device
JPEG 2000 lossless.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from pydicom.dataset import Dataset
from pydicom.pixels import get_encoder
from pydicom.uid import UID, ExplicitVRLittleEndian, JPEG2000Lossless, JPEGLSLossless

from screenlake.errors import ConfigurationError
from screenlake.synth.plan import PlannedStudy

MAX_CT_SLICES = 2000
# Devices that compress, by modality and position among the institution's devices of that
# modality; every other device sends Explicit VR Little Endian.
_DEVICE_SYNTAXES = {("CT", 1): JPEGLSLossless, ("DX", 0): JPEG2000Lossless}
# One named plugin per syntax, so that the same seed gives the same bytes wherever more than
# one encoder is installed.
_PLUGINS = {
    JPEGLSLossless: ("pyjpegls", "pyjpegls"),
    JPEG2000Lossless: ("pylibjpeg", "pylibjpeg-openjpeg"),
}


@dataclass(frozen=True)
class ImagePreset:
    """Image sizes and storage of the synthetic export.

    `device_storage` stores pixels as the devices do: CT signed with padding and generated one
    slice at a time, DX at `dx_bits_stored` bits, and some devices' series compressed
    losslessly. Without it, every image is unsigned 12-bit Explicit VR Little Endian, byte for
    byte as the demo has always written it.
    """

    name: str
    ct_slices: int
    ct_size: int
    cxr_rows: int
    cxr_columns: int
    device_storage: bool
    dx_bits_stored: int = 12

    def __post_init__(self) -> None:
        if not 8 <= self.ct_slices <= MAX_CT_SLICES:
            raise ConfigurationError(
                f"CT slices must be 8 to {MAX_CT_SLICES}; got {self.ct_slices}"
            )
        if self.ct_size < 32:
            raise ConfigurationError(f"CT matrix must be at least 32 pixels; got {self.ct_size}")
        if min(self.cxr_rows, self.cxr_columns) < 64:
            raise ConfigurationError(
                f"radiographs must be at least 64x64 pixels; got {self.cxr_rows}x{self.cxr_columns}"
            )
        if not 12 <= self.dx_bits_stored <= 16:
            raise ConfigurationError(f"DX bits stored must be 12 to 16; got {self.dx_bits_stored}")


DEMO = ImagePreset(
    "demo", ct_slices=24, ct_size=96, cxr_rows=256, cxr_columns=256, device_storage=False
)
REAL = ImagePreset(
    "real",
    ct_slices=300,
    ct_size=512,
    # A 43 x 43 cm flat panel at 143 um. Portrait cassettes (3,000 x 2,500) work too, but the
    # CXR reference model resizes whole images: squashed, negatives score just under its threshold.
    cxr_rows=3000,
    cxr_columns=3000,
    device_storage=True,
    dx_bits_stored=14,
)
PRESETS = {preset.name: preset for preset in (DEMO, REAL)}


def image_preset(name: str, ct_slices: int | None = None) -> ImagePreset:
    """The preset called `name` (`demo` or `real`), with `ct_slices` CT slices when given."""
    if name not in PRESETS:
        raise ConfigurationError(
            f"unknown size preset {name!r}; choose one of {', '.join(PRESETS)}"
        )
    preset = PRESETS[name]
    return preset if ct_slices is None else replace(preset, ct_slices=ct_slices)


def transfer_syntax(preset: ImagePreset, study: PlannedStudy) -> UID:
    """The transfer syntax the study's device writes under `preset`."""
    if not preset.device_storage:
        return ExplicitVRLittleEndian
    position = study.institution.stations_for(study.modality).index(study.station)
    return _DEVICE_SYNTAXES.get((study.modality, position), ExplicitVRLittleEndian)


def encode(ds: Dataset, syntax: UID) -> None:
    """Compress `ds`'s uncompressed pixel data, in place, to the lossless `syntax`."""
    plugin, package = _PLUGINS[syntax]
    if not get_encoder(syntax).is_available:
        raise ConfigurationError(
            f"no {syntax.name} encoder is installed; install {package} to write the real preset"
        )
    # The SOP Instance UID is the export's, drawn from the seed: a lossless encoding keeps it.
    ds.compress(syntax, encoding_plugin=plugin, generate_instance_uid=False)
