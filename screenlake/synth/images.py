"""Synthetic pixel data: chest CT volumes and chest radiographs, with a lesion in positive cases.

The same functions feed the synthetic PACS export and the reference models' training scripts,
so that a model trained here sees exactly the kind of image the demo produces.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache

import numpy as np

CT_AIR_HU = -1000
CT_LUNG_HU = -850
CT_SOFT_TISSUE_HU = 40
CT_NODULE_HU = 60
CT_RESCALE_INTERCEPT = -1024
# Stored value outside the reconstruction circle (PixelPaddingValue), as GE scanners write it.
CT_PADDING_VALUE = -2000


@dataclass(frozen=True)
class CtVolume:
    """A CT volume in Hounsfield units, shape (slices, rows, cols), with per-slice lesion labels."""

    hounsfield: np.ndarray
    slice_has_lesion: np.ndarray


@dataclass(frozen=True)
class CtPhantom:
    """The drawn anatomy of a chest CT: body and lung outlines and, in positives, one nodule.

    Slices come from `ct_slices`, one at a time, so that a 300-slice study at 512x512 never
    sits in memory whole.
    """

    slices: int
    size: int
    body: np.ndarray
    lung_ry: float
    lung_rx: float
    lung_dx: float
    nodule: tuple[float, float, float, float] | None  # slice, row, column, radius in pixels

    def slice_has_lesion(self, k: int) -> bool:
        """Whether slice `k` cuts the nodule."""
        return bool(self._sphere(k).any())

    def _sphere(self, k: int) -> np.ndarray:
        if self.nodule is None:
            return np.zeros((self.size, self.size), dtype=bool)
        cz, cy, cx, radius = self.nodule
        yy, xx = np.ogrid[: self.size, : self.size]
        # Slices are thicker than pixels are wide: the sphere spans fewer slices than pixels.
        return ((k - cz) * 2.0) ** 2 + (yy - cy) ** 2 + (xx - cx) ** 2 <= radius**2


def _ellipse(rows: int, cols: int, cy: float, cx: float, ry: float, rx: float) -> np.ndarray:
    y, x = np.ogrid[:rows, :cols]
    return ((y - cy) / ry) ** 2 + ((x - cx) / rx) ** 2 <= 1.0


def ct_phantom(
    rng: np.random.Generator, positive: bool, slices: int = 32, size: int = 128
) -> CtPhantom:
    """Draw a chest CT's anatomy: body, two lungs and, in positive cases, one spherical nodule."""
    if slices < 8 or size < 32:
        raise ValueError(f"a CT volume needs at least 8 slices of 32x32; got {slices} of {size}")
    body_ry, body_rx = size * rng.uniform(0.33, 0.38), size * rng.uniform(0.42, 0.47)
    body = _ellipse(size, size, size / 2, size / 2, body_ry, body_rx)
    lung_ry, lung_rx = body_ry * 0.75, body_rx * 0.38
    nodule = None
    if positive:
        left = _ellipse(size, size, size / 2, size / 2 - body_rx * 0.45, lung_ry, lung_rx)
        right = _ellipse(size, size, size / 2, size / 2 + body_rx * 0.45, lung_ry, lung_rx)
        radius = rng.uniform(2.5, 5.0) * size / 128
        cz = rng.integers(slices // 4, 3 * slices // 4)
        side = left if rng.random() < 0.5 else right
        ys, xs = np.nonzero(
            side & ~_ellipse(size, size, size / 2, size / 2, body_ry, body_rx * 0.15)
        )
        pick = rng.integers(len(ys))
        nodule = (float(cz), float(ys[pick]), float(xs[pick]), float(radius))
    return CtPhantom(slices, size, body, lung_ry, lung_rx, body_rx * 0.45, nodule)


def ct_slices(phantom: CtPhantom, rng: np.random.Generator) -> Iterator[np.ndarray]:
    """The phantom's slices in Hounsfield units (float32), superior first, with noise from `rng`.

    `rng` must be the generator that drew the phantom, untouched since.
    """
    size, z = phantom.size, np.linspace(-1.0, 1.0, phantom.slices)
    for k in range(phantom.slices):
        # Lungs taper towards apex and base: scale the lung mask per slice.
        taper = 0.55 + 0.45 * np.sqrt(max(0.0, 1.0 - z[k] ** 2))
        sl = np.full((size, size), CT_AIR_HU, dtype=np.float32)
        sl[phantom.body] = CT_SOFT_TISSUE_HU
        ry, rx = phantom.lung_ry * taper, phantom.lung_rx * taper
        lungs = _ellipse(size, size, size / 2, size / 2 - phantom.lung_dx, ry, rx) | _ellipse(
            size, size, size / 2, size / 2 + phantom.lung_dx, ry, rx
        )
        sl[lungs] = CT_LUNG_HU
        sl[phantom._sphere(k)] = CT_NODULE_HU
        sl += rng.normal(0.0, 18.0, size=sl.shape).astype(np.float32)
        yield np.clip(sl, -1024, 3071)


def ct_volume(
    rng: np.random.Generator, positive: bool, slices: int = 32, size: int = 128
) -> CtVolume:
    """A chest CT volume: body, two lungs, noise, and in positive cases one spherical nodule."""
    phantom = ct_phantom(rng, positive, slices, size)
    labels = np.array([phantom.slice_has_lesion(k) for k in range(slices)], dtype=bool)
    return CtVolume(hounsfield=np.stack(list(ct_slices(phantom, rng))), slice_has_lesion=labels)


def ct_stored_values(hounsfield: np.ndarray) -> np.ndarray:
    """Stored pixel values (uint16) for a Hounsfield volume under RescaleIntercept -1024, slope 1."""
    return np.round(hounsfield - CT_RESCALE_INTERCEPT).astype(np.uint16)


def ct_stored_signed(hounsfield: np.ndarray) -> np.ndarray:
    """Signed stored values (int16) under RescaleIntercept -1024, slope 1, as many scanners write
    them: pixels outside the circular reconstruction field hold `CT_PADDING_VALUE`."""
    stored = np.round(hounsfield - CT_RESCALE_INTERCEPT).astype(np.int16)
    stored[..., _outside_reconstruction(hounsfield.shape[-1])] = CT_PADDING_VALUE
    return stored


@cache
def _outside_reconstruction(size: int) -> np.ndarray:
    return ~_ellipse(size, size, (size - 1) / 2, (size - 1) / 2, size / 2, size / 2)


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


def detector_radiograph(
    rng: np.random.Generator, positive: bool, rows: int, columns: int, bits_stored: int = 12
) -> np.ndarray:
    """`chest_radiograph` on a `rows` x `columns` detector storing `bits_stored` bits (uint16).

    The image is drawn square at the longer side and centre-cropped, so a portrait cassette
    shows the same chest as a square panel; values scale from 12 bits to `bits_stored`.
    """
    if not 12 <= bits_stored <= 16:
        raise ValueError(f"a radiograph stores 12 to 16 bits here; got {bits_stored}")
    side = max(rows, columns)
    image = chest_radiograph(rng, positive, size=side)
    top, left = (side - rows) // 2, (side - columns) // 2
    image = image[top : top + rows, left : left + columns]
    if bits_stored > 12:
        image = image << np.uint16(bits_stored - 12)
    return image
