"""DICOM instance -> model input: rescale, window or normalise, resize.

`normalise`, `fit_to_input` and `model_input` hold the arithmetic and are shared with the
training script, so that a reference model is trained on exactly what inference feeds it;
`instance_pixels` and `instance_tensor` add the DICOM checks.
"""

from __future__ import annotations

import numpy as np
import pydicom
import torch
import torch.nn.functional as F

from screenlake.errors import UnreadableInstanceError
from screenlake.inference.manifest import InputSpec, ModelManifest

# What pydicom raises when pixel data are absent, truncated or in a syntax no plugin decodes.
_DECODE_ERRORS = (
    ValueError,
    AttributeError,
    NotImplementedError,
    RuntimeError,
    TypeError,
    KeyError,
)


def window(hounsfield: np.ndarray, center: float, width: float) -> np.ndarray:
    """Hounsfield units mapped linearly from [center - width/2, center + width/2] onto [0, 1]."""
    low = center - width / 2.0
    return np.clip((hounsfield.astype(np.float32) - low) / width, 0.0, 1.0).astype(np.float32)


def resize_area(images: np.ndarray, size: int) -> np.ndarray:
    """Images (..., H, W) resized to (..., size, size) by area averaging (float32)."""
    if images.shape[-2:] == (size, size):
        return images.astype(np.float32, copy=False)
    lead = images.shape[:-2]
    flat = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32))
    flat = flat.reshape(-1, 1, *images.shape[-2:])
    # Area averaging (not bilinear) so that a small lesion's contrast survives downsampling
    # the same way whatever the source matrix size.
    out = F.interpolate(flat, size=(size, size), mode="area")
    return out.reshape(*lead, size, size).numpy()


def normalise(
    values: np.ndarray, spec: InputSpec, bits_stored: int | None = None, invert: bool = False
) -> np.ndarray:
    """Pixel values (..., H, W) scaled to [0, 1] as float32, by the spec's normalisation.

    `values` are Hounsfield units for a `ct_window` spec and stored values for `bits_stored`
    (then `bits_stored` is required; `invert` flips MONOCHROME1 so dense tissue is bright).
    """
    if spec.normalisation == "ct_window":
        assert spec.window_center_hu is not None and spec.window_width_hu is not None
        return window(values, spec.window_center_hu, spec.window_width_hu)
    if spec.normalisation == "bits_stored":
        if bits_stored is None or not 1 <= bits_stored <= 16:
            raise ValueError(f"bits_stored must be 1..16 for this normalisation, got {bits_stored}")
        top = float(2**bits_stored - 1)
        scaled = np.clip(values.astype(np.float32) / top, 0.0, 1.0).astype(np.float32)
        return (1.0 - scaled) if invert else scaled
    raise ValueError(f"unknown normalisation {spec.normalisation!r}")


def resample_to_spacing(
    images: np.ndarray, spacing: tuple[float, float], target_mm: float, size: int
) -> np.ndarray:
    """Images (..., H, W) with pixel `spacing` (row, column mm) resampled to `target_mm` pixels
    and centre-cropped or zero-padded to (..., size, size): the model sees millimetres as it
    was trained to, whatever the detector or reconstruction matrix."""
    rows = max(1, round(images.shape[-2] * spacing[0] / target_mm))
    cols = max(1, round(images.shape[-1] * spacing[1] / target_mm))
    lead = images.shape[:-2]
    flat = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32))
    flat = flat.reshape(-1, 1, *images.shape[-2:])
    shrinking = rows <= images.shape[-2] and cols <= images.shape[-1]
    # Area averaging when shrinking keeps small lesions' contrast; bilinear when enlarging.
    mode = "area" if shrinking else "bilinear"
    resized = F.interpolate(flat, size=(rows, cols), mode=mode).reshape(-1, rows, cols)
    out = torch.zeros((resized.shape[0], size, size), dtype=torch.float32)
    top, left = (rows - size) // 2, (cols - size) // 2
    src_r0, src_c0 = max(top, 0), max(left, 0)
    dst_r0, dst_c0 = max(-top, 0), max(-left, 0)
    height, width = min(rows - src_r0, size - dst_r0), min(cols - src_c0, size - dst_c0)
    out[:, dst_r0 : dst_r0 + height, dst_c0 : dst_c0 + width] = resized[
        :, src_r0 : src_r0 + height, src_c0 : src_c0 + width
    ]
    return out.reshape(*lead, size, size).numpy()


def fit_to_input(
    images: np.ndarray, spec: InputSpec, spacing: tuple[float, float] | None = None
) -> np.ndarray:
    """Normalised images (..., H, W) on the model's grid (..., S, S): resampled to the spec's
    pixel spacing when it names one (then `spacing` is required), else resized whole."""
    if spec.spacing_mm is None:
        return resize_area(images, spec.size)
    if spacing is None:
        raise ValueError(
            f"the model reads {spec.spacing_mm} mm pixels, but the pixel spacing is unknown"
        )
    return resample_to_spacing(images, spacing, spec.spacing_mm, spec.size)


def model_input(
    values: np.ndarray, spec: InputSpec, bits_stored: int | None = None, invert: bool = False
) -> np.ndarray:
    """Pixel values (H, W) or (N, H, W) as model input (1, S, S) or (N, 1, S, S), float32 in [0, 1]
    (see `normalise`), resized whole to the model's size."""
    if values.ndim not in (2, 3):
        raise ValueError(f"expected pixel values of shape (H, W) or (N, H, W), got {values.shape}")
    resized = resize_area(normalise(values, spec, bits_stored, invert), spec.size)
    return np.expand_dims(resized, axis=-3)


def pixel_spacing(ds: pydicom.Dataset) -> tuple[float, float] | None:
    """Row and column spacing in mm: PixelSpacing, else ImagerPixelSpacing (projection
    radiographs); None when the header has neither or they are not positive numbers."""
    for keyword in ("PixelSpacing", "ImagerPixelSpacing"):
        value = ds.get(keyword)
        if value is not None and len(value) == 2:
            try:
                row, col = float(value[0]), float(value[1])
            except (TypeError, ValueError):
                return None
            return (row, col) if row > 0 and col > 0 else None
    return None


def instance_pixels(ds: pydicom.Dataset, manifest: ModelManifest) -> np.ndarray:
    """One DICOM instance's pixels (H, W) normalised to [0, 1] for `manifest`'s model.

    Raises UnreadableInstanceError, whose message is the reason recorded with the failed
    prediction, when the instance is of a modality the model does not read, is multi-frame,
    not monochrome, lacks the rescale a CT window needs, or its pixel data do not decode.
    """
    modality = str(ds.get("Modality", "") or "").upper()
    if modality not in manifest.modalities:
        raise UnreadableInstanceError(
            f"modality {modality or '(missing)'} is not read by model {manifest.name} "
            f"(it reads {', '.join(manifest.modalities)})"
        )
    frames = _int_or(ds.get("NumberOfFrames"), 1)
    if frames != 1:
        raise UnreadableInstanceError(
            f"multi-frame instance ({frames} frames); "
            f"model {manifest.name} reads single frames only"
        )
    samples = _int_or(ds.get("SamplesPerPixel"), 1)
    photometric = str(ds.get("PhotometricInterpretation", "") or "")
    if samples != 1 or photometric not in ("MONOCHROME1", "MONOCHROME2"):
        raise UnreadableInstanceError(
            f"not a greyscale image (SamplesPerPixel {samples}, PhotometricInterpretation "
            f"{photometric or '(missing)'}); model {manifest.name} reads MONOCHROME1/2 only"
        )
    if "PixelData" not in ds:
        raise UnreadableInstanceError("instance holds no PixelData")
    try:
        pixels = ds.pixel_array
    except _DECODE_ERRORS as error:
        raise UnreadableInstanceError(f"pixel data do not decode: {error}") from error
    if pixels.ndim != 2:
        raise UnreadableInstanceError(
            f"decoded pixels have shape {pixels.shape}, not (rows, columns)"
        )

    spec = manifest.input
    if spec.normalisation == "ct_window":
        slope, intercept = ds.get("RescaleSlope"), ds.get("RescaleIntercept")
        if slope is None or intercept is None:
            raise UnreadableInstanceError(
                "RescaleSlope/RescaleIntercept missing, so Hounsfield units are unknown"
            )
        return normalise(pixels.astype(np.float32) * float(slope) + float(intercept), spec)
    bits = _int_or(ds.get("BitsStored"), 0)
    if not 1 <= bits <= 16:
        raise UnreadableInstanceError(f"BitsStored {bits or '(missing)'} is not 1..16")
    return normalise(pixels, spec, bits_stored=bits, invert=photometric == "MONOCHROME1")


def on_model_grid(images: np.ndarray, ds: pydicom.Dataset, manifest: ModelManifest) -> np.ndarray:
    """`fit_to_input` for images of instance `ds`; a missing spacing is the instance's fault."""
    try:
        return fit_to_input(images, manifest.input, pixel_spacing(ds))
    except ValueError as error:
        raise UnreadableInstanceError(str(error)) from error


def instance_tensor(ds: pydicom.Dataset, manifest: ModelManifest) -> np.ndarray:
    """The model input (1, S, S) float32 in [0, 1] for one DICOM instance of a 2D model."""
    return np.expand_dims(on_model_grid(instance_pixels(ds, manifest), ds, manifest), axis=0)


def _int_or(value: object, default: int) -> int:
    if value is None or value == "":
        return default
    try:
        return int(value)  # type: ignore[call-overload]
    except (TypeError, ValueError):
        raise UnreadableInstanceError(f"header value {value!r} is not an integer") from None
