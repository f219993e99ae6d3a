"""DICOM instance -> model input: rescale, window or normalise, resize.

`model_input` holds the arithmetic and is shared with the training script, so that a reference
model is trained on exactly what inference feeds it; `instance_tensor` adds the DICOM checks.
"""

from __future__ import annotations

import numpy as np
import pydicom
import torch
import torch.nn.functional as F

from screenlake.errors import UnreadableInstanceError
from screenlake.inference.registry import InputSpec, ModelManifest

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


def model_input(
    values: np.ndarray, spec: InputSpec, bits_stored: int | None = None, invert: bool = False
) -> np.ndarray:
    """Pixel values (H, W) or (N, H, W) as model input (1, S, S) or (N, 1, S, S), float32 in [0, 1].

    `values` are Hounsfield units for a `ct_window` spec and stored values for `bits_stored`
    (then `bits_stored` is required; `invert` flips MONOCHROME1 so dense tissue is bright).
    """
    if values.ndim not in (2, 3):
        raise ValueError(f"expected pixel values of shape (H, W) or (N, H, W), got {values.shape}")
    if spec.normalisation == "ct_window":
        assert spec.window_center_hu is not None and spec.window_width_hu is not None
        scaled = window(values, spec.window_center_hu, spec.window_width_hu)
    elif spec.normalisation == "bits_stored":
        if bits_stored is None or not 1 <= bits_stored <= 16:
            raise ValueError(f"bits_stored must be 1..16 for this normalisation, got {bits_stored}")
        top = float(2**bits_stored - 1)
        scaled = np.clip(values.astype(np.float32) / top, 0.0, 1.0).astype(np.float32)
        if invert:
            scaled = 1.0 - scaled
    else:
        raise ValueError(f"unknown normalisation {spec.normalisation!r}")
    resized = resize_area(scaled, spec.size)
    return np.expand_dims(resized, axis=-3)


def instance_tensor(ds: pydicom.Dataset, manifest: ModelManifest) -> np.ndarray:
    """The model input (1, S, S) float32 in [0, 1] for one DICOM instance.

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
        hounsfield = pixels.astype(np.float32) * float(slope) + float(intercept)
        return model_input(hounsfield, spec)
    bits = _int_or(ds.get("BitsStored"), 0)
    if not 1 <= bits <= 16:
        raise UnreadableInstanceError(f"BitsStored {bits or '(missing)'} is not 1..16")
    return model_input(pixels, spec, bits_stored=bits, invert=photometric == "MONOCHROME1")


def _int_or(value: object, default: int) -> int:
    if value is None or value == "":
        return default
    try:
        return int(value)  # type: ignore[call-overload]
    except (TypeError, ValueError):
        raise UnreadableInstanceError(f"header value {value!r} is not an integer") from None
