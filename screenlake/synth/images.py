"""Synthetic pixel data: chest CT volumes and chest radiographs, with a lesion in positive cases.

The same functions feed the synthetic PACS export and the reference models' training scripts,
so that a model trained here sees exactly the kind of image the demo produces.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

CT_AIR_HU = -1000
CT_LUNG_HU = -850
CT_SOFT_TISSUE_HU = 40
CT_NODULE_HU = 60
CT_RESCALE_INTERCEPT = -1024


@dataclass(frozen=True)
class CtVolume:
    """A CT volume in Hounsfield units, shape (slices, rows, cols), with per-slice lesion labels."""

    hounsfield: np.ndarray
    slice_has_lesion: np.ndarray


def _ellipse(rows: int, cols: int, cy: float, cx: float, ry: float, rx: float) -> np.ndarray:
    y, x = np.ogrid[:rows, :cols]
    return ((y - cy) / ry) ** 2 + ((x - cx) / rx) ** 2 <= 1.0


def ct_volume(
    rng: np.random.Generator, positive: bool, slices: int = 32, size: int = 128
) -> CtVolume:
    """A chest CT volume: body, two lungs, noise, and in positive cases one spherical nodule."""
    if slices < 8 or size < 32:
        raise ValueError(f"a CT volume needs at least 8 slices of 32x32; got {slices} of {size}")
    body_ry, body_rx = size * rng.uniform(0.33, 0.38), size * rng.uniform(0.42, 0.47)
    body = _ellipse(size, size, size / 2, size / 2, body_ry, body_rx)
    lung_ry, lung_rx = body_ry * 0.75, body_rx * 0.38
    left = _ellipse(size, size, size / 2, size / 2 - body_rx * 0.45, lung_ry, lung_rx)
    right = _ellipse(size, size, size / 2, size / 2 + body_rx * 0.45, lung_ry, lung_rx)
    # Lungs taper towards apex and base: scale the lung mask per slice.
    volume = np.empty((slices, size, size), dtype=np.float32)
    z = np.linspace(-1.0, 1.0, slices)
    for k in range(slices):
        taper = 0.55 + 0.45 * np.sqrt(max(0.0, 1.0 - z[k] ** 2))
        sl = np.full((size, size), CT_AIR_HU, dtype=np.float32)
        sl[body] = CT_SOFT_TISSUE_HU
        lung_k = _ellipse(
            size, size, size / 2, size / 2 - body_rx * 0.45, lung_ry * taper, lung_rx * taper
        ) | _ellipse(
            size, size, size / 2, size / 2 + body_rx * 0.45, lung_ry * taper, lung_rx * taper
        )
        sl[lung_k] = CT_LUNG_HU
        volume[k] = sl

    labels = np.zeros(slices, dtype=bool)
    if positive:
        radius = rng.uniform(2.5, 5.0) * size / 128
        cz = rng.integers(slices // 4, 3 * slices // 4)
        side = left if rng.random() < 0.5 else right
        ys, xs = np.nonzero(
            side & ~_ellipse(size, size, size / 2, size / 2, body_ry, body_rx * 0.15)
        )
        pick = rng.integers(len(ys))
        cy, cx = float(ys[pick]), float(xs[pick])
        zz, yy, xx = np.ogrid[:slices, :size, :size]
        # Slices are thicker than pixels are wide: the sphere spans fewer slices than pixels.
        sphere = ((zz - cz) * 2.0) ** 2 + (yy - cy) ** 2 + (xx - cx) ** 2 <= radius**2
        volume[sphere] = CT_NODULE_HU
        labels = np.asarray(sphere.any(axis=(1, 2)), dtype=bool)

    volume += rng.normal(0.0, 18.0, size=volume.shape).astype(np.float32)
    return CtVolume(hounsfield=np.clip(volume, -1024, 3071), slice_has_lesion=labels)


def ct_stored_values(hounsfield: np.ndarray) -> np.ndarray:
    """Stored pixel values (uint16) for a Hounsfield volume under RescaleIntercept -1024, slope 1."""
    return np.round(hounsfield - CT_RESCALE_INTERCEPT).astype(np.uint16)


def chest_radiograph(rng: np.random.Generator, positive: bool, size: int = 256) -> np.ndarray:
    """A 12-bit MONOCHROME2 PA chest radiograph (uint16); positives carry a focal opacity."""
    if size < 64:
        raise ValueError(f"a chest radiograph needs at least 64x64 pixels; got {size}")
    image = np.full((size, size), 3000.0, dtype=np.float32)
    body = _ellipse(size, size, size * 0.55, size / 2, size * 0.45, size * 0.42)
    image[body] = 2200.0
    lung_ry, lung_rx = size * rng.uniform(0.27, 0.31), size * rng.uniform(0.13, 0.16)
    left = _ellipse(size, size, size * 0.5, size * 0.32, lung_ry, lung_rx)
    right = _ellipse(size, size, size * 0.5, size * 0.68, lung_ry, lung_rx)
    image[left | right] = 700.0
    # Ribs: faint horizontal bands across the lung fields.
    y = np.arange(size)[:, None]
    ribs = (np.sin(y / size * np.pi * rng.uniform(16, 20)) > 0.6) & (left | right)
    image[ribs] += 250.0
    if positive:
        side = left if rng.random() < 0.5 else right
        ys, xs = np.nonzero(side)
        pick = rng.integers(len(ys))
        cy, cx = ys[pick], xs[pick]
        sigma = size * rng.uniform(0.03, 0.06)
        yy, xx = np.ogrid[:size, :size]
        blob = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * sigma**2))
        image += (blob * rng.uniform(700, 1100) * side).astype(np.float32)
    image += rng.normal(0.0, 60.0, size=image.shape).astype(np.float32)
    return np.clip(image, 0, 4095).astype(np.uint16)
