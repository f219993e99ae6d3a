"""Assembling a series' slices into a volume: spatial order and the checks that make it one.

Slices are ordered by their position along the slice normal (ImagePositionPatient projected on
the cross product of the ImageOrientationPatient row and column directions), never by
InstanceNumber, which scanners and PACS exports do not keep reliably. A series whose slices do
not form one regular volume (mixed orientation or matrix, missing or duplicate positions,
varying spacing) is reported with the reason and not scored.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pydicom

from screenlake.errors import UnreadableInstanceError

# Direction cosines agree to this (about 0.06 degrees); positions to a hundredth of a millimetre.
ORIENTATION_TOLERANCE = 1e-3
POSITION_TOLERANCE_MM = 1e-2
# Gaps between neighbouring slices may differ from the median by this share (rounding in
# exported positions); beyond it the series is irregular or has missing slices.
SPACING_TOLERANCE = 0.1
# A gap this many times the median spacing means at least one slice is absent.
MISSING_SLICE_GAP = 1.5


@dataclass(frozen=True)
class SliceGeometry:
    """Where one slice lies: position of its first pixel, orientation, matrix size."""

    position: tuple[float, float, float]
    orientation: tuple[float, float, float, float, float, float]
    rows: int
    columns: int


@dataclass(frozen=True)
class OrderedVolume:
    """A series' slices in spatial order (indices into the list given) and its slice spacing."""

    order: tuple[int, ...]
    spacing_mm: float | None


def slice_geometry(ds: pydicom.Dataset) -> SliceGeometry:
    """The geometry of one slice; raises UnreadableInstanceError when its header lacks it."""
    position = ds.get("ImagePositionPatient")
    orientation = ds.get("ImageOrientationPatient")
    if position is None or len(position) != 3:
        raise UnreadableInstanceError("slice has no ImagePositionPatient (3 values)")
    if orientation is None or len(orientation) != 6:
        raise UnreadableInstanceError("slice has no ImageOrientationPatient (6 values)")
    try:
        pos = tuple(float(v) for v in position)
        cosines = tuple(float(v) for v in orientation)
    except (TypeError, ValueError):
        raise UnreadableInstanceError("slice position or orientation is not numeric") from None
    return SliceGeometry(
        position=(pos[0], pos[1], pos[2]),
        orientation=(cosines[0], cosines[1], cosines[2], cosines[3], cosines[4], cosines[5]),
        rows=int(ds.get("Rows") or 0),
        columns=int(ds.get("Columns") or 0),
    )


def order_volume(slices: Sequence[SliceGeometry]) -> OrderedVolume:
    """The spatial order of `slices` and their spacing; raises UnreadableInstanceError naming
    what keeps them from forming one regular volume."""
    if not slices:
        raise UnreadableInstanceError("series has no slices")
    first = np.asarray(slices[0].orientation)
    for geometry in slices[1:]:
        if np.max(np.abs(np.asarray(geometry.orientation) - first)) > ORIENTATION_TOLERANCE:
            raise UnreadableInstanceError(
                "series mixes slice orientations (ImageOrientationPatient differs)"
            )
        if (geometry.rows, geometry.columns) != (slices[0].rows, slices[0].columns):
            raise UnreadableInstanceError("series mixes matrix sizes (Rows/Columns differ)")
    normal = np.cross(first[:3], first[3:])
    if np.linalg.norm(normal) < 0.5:
        raise UnreadableInstanceError("ImageOrientationPatient rows and columns are parallel")
    along = np.array([float(np.dot(normal, g.position)) for g in slices])
    order = tuple(int(i) for i in np.argsort(along, kind="stable"))
    if len(slices) == 1:
        return OrderedVolume(order, None)
    gaps = np.diff(along[list(order)])
    if np.min(gaps) < POSITION_TOLERANCE_MM:
        raise UnreadableInstanceError("series has two slices at the same position")
    median = float(np.median(gaps))
    if np.max(gaps) > median * MISSING_SLICE_GAP:
        raise UnreadableInstanceError(
            f"series has missing slices: a gap of {np.max(gaps):.2f} mm where the spacing is "
            f"{median:.2f} mm"
        )
    if np.max(np.abs(gaps - median)) > median * SPACING_TOLERANCE:
        raise UnreadableInstanceError(
            f"series spacing varies from {np.min(gaps):.2f} to {np.max(gaps):.2f} mm"
        )
    return OrderedVolume(order, median)


def neighbour_stacks(volume: np.ndarray, context: int) -> np.ndarray:
    """2.5D inputs: for slices (N, H, W) in spatial order, (N, 2*context+1, H, W) holding each
    slice between its `context` neighbours on either side; the edge slices repeat at the ends."""
    count = volume.shape[0]
    offsets = np.arange(-context, context + 1)
    neighbours = np.clip(np.arange(count)[:, None] + offsets[None, :], 0, count - 1)
    return volume[neighbours]
