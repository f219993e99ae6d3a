"""What DataLoader workers do: read a unit of work's DICOM files and turn them into model inputs.

A unit is either a few instances read one by one (2D models) or one whole series read as a
volume (2.5D models, which see each slice between its neighbours). Every instance of a unit
comes back as an image or as a failure with its reason, so nothing is dropped: a file that does
not decode fails alone in 2D, and fails its whole series in 2.5D, where its neighbours need it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
import torch
from pydicom.errors import InvalidDicomError
from torch.utils.data import Dataset

from screenlake.errors import UnreadableInstanceError
from screenlake.inference.manifest import ModelManifest
from screenlake.inference.preprocess import (
    instance_pixels,
    instance_tensor,
    on_model_grid,
    pixel_spacing,
)
from screenlake.inference.series import (
    SliceGeometry,
    neighbour_stacks,
    order_volume,
    slice_geometry,
)


@dataclass(frozen=True)
class WorkUnit:
    """Rows of the instances table read together; `series` when they form one volume."""

    rows: tuple[int, ...]
    paths: tuple[str | None, ...]
    modalities: tuple[str | None, ...]
    series: bool


@dataclass(frozen=True)
class LoadedUnit:
    """A unit's model inputs (N, C, S, S) for rows `rows`, and the rows that failed, with why."""

    rows: list[int]
    images: torch.Tensor | None
    failures: list[tuple[int, str]]

    def pin_memory(self) -> LoadedUnit:
        """Called by the DataLoader when pin_memory is on (CUDA)."""
        images = self.images.pin_memory() if self.images is not None else None
        return LoadedUnit(self.rows, images, self.failures)


def read_instance(
    root: Path, relative: str | None, modality: str | None, manifest: ModelManifest
) -> pydicom.Dataset:
    """One research-zone file's dataset; UnreadableInstanceError with the reason otherwise."""
    if not relative:
        raise UnreadableInstanceError("instance has no research_path")
    # The catalogue's modality is checked first so that a misrouted series costs no reading.
    if modality is not None and modality.upper() not in manifest.modalities:
        raise UnreadableInstanceError(
            f"modality {modality} is not read by model {manifest.name} "
            f"(it reads {', '.join(manifest.modalities)})"
        )
    try:
        return pydicom.dcmread(root / relative)
    except InvalidDicomError as error:
        raise UnreadableInstanceError(f"not a DICOM file: {error}") from error
    except OSError as error:
        raise UnreadableInstanceError(f"file cannot be read: {error.strerror}") from error
    except (EOFError, ValueError, KeyError) as error:
        raise UnreadableInstanceError(f"DICOM header does not parse: {error}") from error


class UnitDataset(Dataset[LoadedUnit]):
    """Work units as model inputs, for a DataLoader without automatic batching."""

    def __init__(self, root: Path, units: Sequence[WorkUnit], manifest: ModelManifest) -> None:
        self.root, self.units, self.manifest = root, units, manifest

    def __len__(self) -> int:
        return len(self.units)

    def __getitem__(self, index: int) -> LoadedUnit:
        unit = self.units[index]
        return self._series(unit) if unit.series else self._images(unit)

    def _images(self, unit: WorkUnit) -> LoadedUnit:
        rows, images, failures = [], [], []
        for row, path, modality in zip(unit.rows, unit.paths, unit.modalities, strict=True):
            try:
                ds = read_instance(self.root, path, modality, self.manifest)
                images.append(instance_tensor(ds, self.manifest))
                rows.append(row)
            except UnreadableInstanceError as error:
                failures.append((row, str(error)))
        return LoadedUnit(rows, _stacked(images), failures)

    def _series(self, unit: WorkUnit) -> LoadedUnit:
        context = self.manifest.input.context_slices
        geometries: list[SliceGeometry | UnreadableInstanceError] = []
        spacings, slices, failures = [], [], []
        for row, path, modality in zip(unit.rows, unit.paths, unit.modalities, strict=True):
            try:
                ds = read_instance(self.root, path, modality, self.manifest)
                slices.append(on_model_grid(instance_pixels(ds, self.manifest), ds, self.manifest))
                spacings.append(pixel_spacing(ds))
                geometries.append(_geometry_or_error(ds))
            except UnreadableInstanceError as error:
                failures.append((row, str(error)))
        if failures:
            first = failures[0][1]
            failed = {row for row, _ in failures}
            reason = f"series not scored: {len(failures)} of its slices unreadable ({first})"
            return LoadedUnit(
                [], None, failures + [(r, reason) for r in unit.rows if r not in failed]
            )
        try:
            if len(unit.rows) < 2:
                raise UnreadableInstanceError(
                    f"series has a single slice; model {self.manifest.name} reads each slice "
                    f"with {context} neighbour(s) on either side"
                )
            volume = order_volume([_raised(g) for g in geometries])
            # Each slice went onto the model's grid as it was read, by its own pixel spacing,
            # so that no full-size volume is held: one grid for the series needs one spacing.
            if len(set(spacings)) > 1:
                raise UnreadableInstanceError("series mixes pixel spacings (PixelSpacing differs)")
            images = neighbour_stacks(np.stack([slices[i] for i in volume.order]), context)
        except UnreadableInstanceError as error:
            return LoadedUnit([], None, [(row, str(error)) for row in unit.rows])
        rows = [unit.rows[i] for i in volume.order]
        return LoadedUnit(rows, torch.from_numpy(np.ascontiguousarray(images)), [])


def _geometry_or_error(ds: pydicom.Dataset) -> SliceGeometry | UnreadableInstanceError:
    """A slice's geometry, or why its header lacks it: kept instead of the dataset, whose pixels
    (half a megabyte a 512 x 512 slice) the series does not need once on the model's grid."""
    try:
        return slice_geometry(ds)
    except UnreadableInstanceError as error:
        return error


def _raised(geometry: SliceGeometry | UnreadableInstanceError) -> SliceGeometry:
    if isinstance(geometry, UnreadableInstanceError):
        raise geometry
    return geometry


def _stacked(images: list[np.ndarray]) -> torch.Tensor | None:
    return torch.from_numpy(np.stack(images)) if images else None
