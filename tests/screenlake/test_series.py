"""Series assembled into volumes: order along the slice normal, and the checks that refuse
what is not one regular volume."""

from __future__ import annotations

import numpy as np
import pytest

from screenlake.errors import UnreadableInstanceError
from screenlake.inference.series import (
    SliceGeometry,
    neighbour_stacks,
    order_volume,
)

AXIAL = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)


def _slices(positions: list[float], orientation: tuple[float, ...] = AXIAL) -> list[SliceGeometry]:
    row, col = np.array(orientation[:3]), np.array(orientation[3:])
    normal = np.cross(row, col)
    return [
        SliceGeometry(
            position=tuple(float(v) for v in (normal * z + np.array([-100.0, -80.0, 0.0]))),  # type: ignore[arg-type]
            orientation=orientation,  # type: ignore[arg-type]
            rows=64,
            columns=64,
        )
        for z in positions
    ]


def test_slices_are_ordered_by_position_along_the_normal() -> None:
    volume = order_volume(_slices([5.0, -5.0, 0.0, 10.0, -10.0]))
    assert volume.order == (4, 1, 2, 0, 3)
    assert volume.spacing_mm == pytest.approx(5.0)


def test_an_oblique_series_is_ordered_along_its_own_normal() -> None:
    tilt = np.deg2rad(20)
    oblique = (1.0, 0.0, 0.0, 0.0, float(np.cos(tilt)), float(np.sin(tilt)))
    volume = order_volume(_slices([2.5, 0.0, 5.0], oblique))
    assert volume.order == (1, 0, 2)
    assert volume.spacing_mm == pytest.approx(2.5)


def test_a_single_slice_is_a_volume_of_one() -> None:
    assert order_volume(_slices([3.0])).order == (0,)


@pytest.mark.parametrize(
    ("slices", "reason"),
    [
        (
            _slices([0.0, 5.0]) + _slices([10.0], (0.0, 1.0, 0.0, 0.0, 0.0, -1.0)),
            "mixes slice orientations",
        ),
        (
            _slices([0.0, 5.0, 15.0, 20.0]),
            "missing slices: a gap of 10.00 mm where the spacing is 5.00 mm",
        ),
        (_slices([0.0, 5.0, 11.0, 16.0, 21.0]), "spacing varies from 5.00 to 6.00 mm"),
        (_slices([0.0, 5.0, 5.0, 10.0]), "two slices at the same position"),
    ],
)
def test_what_is_not_one_regular_volume_is_refused(
    slices: list[SliceGeometry], reason: str
) -> None:
    with pytest.raises(UnreadableInstanceError, match=reason):
        order_volume(slices)


def test_mixed_matrix_sizes_are_refused() -> None:
    slices = _slices([0.0, 5.0])
    slices[1] = SliceGeometry(slices[1].position, slices[1].orientation, 32, 32)
    with pytest.raises(UnreadableInstanceError, match="mixes matrix sizes"):
        order_volume(slices)


def test_neighbour_stacks_put_each_slice_between_its_neighbours() -> None:
    volume = np.arange(4, dtype=np.float32)[:, None, None] * np.ones((4, 2, 2), np.float32)
    stacks = neighbour_stacks(volume, context=1)
    assert stacks.shape == (4, 3, 2, 2)
    assert stacks[:, :, 0, 0].tolist() == [[0, 0, 1], [0, 1, 2], [1, 2, 3], [2, 3, 3]]
