"""Masking the rectangles that pixel-cleaning rules name, in every frame and every sample.

Masking is done here with numpy rather than with deid's DicomCleaner, which writes PNGs through
matplotlib, handles neither planar configuration nor bit-packed data, and lets a rectangle past
the image edge clip silently. A rectangle that does not fit the image quarantines the instance.

Uncompressed pixel data is masked in place, cell by cell: every byte outside the rectangles,
including bits above BitsStored, stays as it was, and so does the transfer syntax. Compressed
data, and uncompressed YBR_FULL or YBR_FULL_422 data, is decoded by pydicom (with pylibjpeg),
converted to RGB as pydicom does, masked, and written back uncompressed as Explicit VR Little
Endian with PlanarConfiguration 0. Masked cells hold 0 (black for
MONOCHROME2 and RGB, white for MONOCHROME1).
"""

from __future__ import annotations

import struct

import numpy as np
from numpy.typing import NDArray
from pydicom.dataset import Dataset
from pydicom.pixels import get_decoder
from pydicom.uid import UID, ExplicitVRLittleEndian

from screenlake.deid.pixels.risk import pixel_identity_risk
from screenlake.deid.pixels.rules import ULTRASOUND_REGIONS, PixelRules, Region
from screenlake.errors import UnreadableInstanceError

_BUILT_IN = "built-in ultrasound regions rule"
_REGION_CORNERS = (
    "RegionLocationMinX0",
    "RegionLocationMinY0",
    "RegionLocationMaxX1",
    "RegionLocationMaxY1",
)
# What pydicom's decoders and the pylibjpeg plugins raise on data they cannot decode.
_DECODE_ERRORS = (
    ValueError,
    RuntimeError,
    NotImplementedError,
    TypeError,
    KeyError,
    IndexError,
    AttributeError,
    EOFError,
    OSError,
    struct.error,
)


class _Undecodable(Exception):
    """The pixel data cannot be decoded or masked; the message says why, without values."""


def clean_pixels(ds: Dataset, rules: PixelRules) -> int:
    """Mask, in place, every rectangle the rules matching `ds` name; return how many were masked.

    The rules are the `%filter` rules whose criteria `ds` meets and, for a loaded rule set, the
    built-in ultrasound rule: with SequenceOfUltrasoundRegions, everything outside the union of
    the regions is masked (one region masked), before the file's rules apply in file order.
    Every frame and every sample is masked. BurnedInAnnotation becomes NO.

    Raises UnreadableInstanceError, whose message is the quarantine reason: "pixels may carry
    identity: ..." when no rule masks anything, a blacklist rule matches or the pixels do not
    decode; "pixel cleaning rule does not fit: ..." when a rectangle falls outside the image.
    `ds` is changed only when cleaning succeeds.
    """
    risk = pixel_identity_risk(ds) or "pixel cleaning was requested"
    matched = rules.matching(ds)
    for rule in matched:
        if rule.quarantines:
            raise UnreadableInstanceError(
                f"pixels may carry identity: {risk}; rule '{rule.label}' (%filter blacklist) "
                "keeps such instances in quarantine"
            )
    operations: list[tuple[str, Region]] = []
    if rules.ultrasound_regions and ULTRASOUND_REGIONS in ds:
        operations += [(_BUILT_IN, Region(False, None)), (_BUILT_IN, Region(True, None, True))]
    operations += [(rule.label, region) for rule in matched for region in rule.regions]
    if not operations:
        where = f"in {rules.source}" if rules.rules else "(no pixel rules are configured)"
        raise UnreadableInstanceError(
            f"pixels may carry identity: {risk}; no pixel cleaning rule matches {where}; add a "
            "%filter rule with coordinates for this source, or leave it in quarantine"
        )
    try:
        rows, columns = _size(ds)
        mask, masked = _mask(ds, operations, rows, columns)
        _write_masked(ds, mask)
    except _Undecodable as error:
        raise UnreadableInstanceError(f"pixels may carry identity: {risk}; {error}") from error
    ds.BurnedInAnnotation = "NO"
    return masked


def _size(ds: Dataset) -> tuple[int, int]:
    if "PixelData" not in ds:
        raise _Undecodable("there is no PixelData to clean")
    try:
        rows, columns = int(ds.Rows), int(ds.Columns)
    except (AttributeError, TypeError, ValueError) as error:
        raise _Undecodable("the pixel data has no valid Rows and Columns") from error
    if rows <= 0 or columns <= 0:
        raise _Undecodable("the pixel data has no valid Rows and Columns")
    return rows, columns


def _mask(
    ds: Dataset, operations: list[tuple[str, Region]], rows: int, columns: int
) -> tuple[NDArray[np.bool_], int]:
    """The cells to zero (True), built in order as deid does: masks set, keeps clear."""
    mask = np.zeros((rows, columns), dtype=bool)
    masked = 0
    for label, region in operations:
        for x0, y0, x1, y1 in _boxes(ds, label, region, rows, columns):
            mask[y0:y1, x0:x1] = not region.keep
            masked += not region.keep
    return mask, masked


def _boxes(
    ds: Dataset, label: str, region: Region, rows: int, columns: int
) -> list[tuple[int, int, int, int]]:
    if region.ultrasound_regions:
        return _ultrasound_boxes(ds, rows, columns)
    if region.box is None:
        return [(0, 0, columns, rows)]
    x0, y0, x1, y1 = region.box
    if x1 > columns or y1 > rows:
        raise UnreadableInstanceError(
            f"pixel cleaning rule does not fit: rule '{label}' rectangle {x0},{y0},{x1},{y1} "
            f"(x0,y0,x1,y1) reaches outside the {columns}x{rows} image (columns x rows); "
            "narrow the rule's criteria (equals Rows / equals Columns) or fix its coordinates"
        )
    return [region.box]


def _ultrasound_boxes(ds: Dataset, rows: int, columns: int) -> list[tuple[int, int, int, int]]:
    """The regions as half-open boxes. RegionLocationMax is the last pixel of the region (PS3.3
    C.8.5.5.1); a vendor that writes one past it (Max = Columns or Rows) is accepted, as keeping
    less is safe."""
    items = list(ds.get(ULTRASOUND_REGIONS) or [])
    if not items:
        raise UnreadableInstanceError(
            f"pixel cleaning rule does not fit: {ULTRASOUND_REGIONS} has no regions"
        )
    boxes = []
    for number, item in enumerate(items, start=1):
        try:
            x0, y0, x1, y1 = (int(item[keyword].value) for keyword in _REGION_CORNERS)
        except (KeyError, TypeError, ValueError) as error:
            raise UnreadableInstanceError(
                f"pixel cleaning rule does not fit: ultrasound region {number} has no valid "
                "RegionLocationMinX0/MinY0/MaxX1/MaxY1"
            ) from error
        if not (0 <= x0 <= x1 <= columns and 0 <= y0 <= y1 <= rows and x0 < columns and y0 < rows):
            raise UnreadableInstanceError(
                f"pixel cleaning rule does not fit: ultrasound region {number} "
                f"({x0},{y0},{x1},{y1}) lies outside the {columns}x{rows} image (columns x rows)"
            )
        boxes.append((x0, y0, min(x1 + 1, columns), min(y1 + 1, rows)))
    return boxes


def _write_masked(ds: Dataset, mask: NDArray[np.bool_]) -> None:
    meta = getattr(ds, "file_meta", None)
    syntax = meta.get("TransferSyntaxUID") if meta is not None else None
    if not syntax:
        raise _Undecodable("there is no TransferSyntaxUID to decode the pixel data with")
    syntax = UID(syntax)
    samples, bits = _int(ds, "SamplesPerPixel"), _int(ds, "BitsAllocated")
    frames = _int(ds, "NumberOfFrames", default=1)
    photometric = str(ds.get("PhotometricInterpretation") or "").strip().upper()
    if syntax.is_compressed or photometric.startswith("YBR_FULL"):
        if not syntax.is_little_endian:
            # Decoded pixels are written little endian, and pydicom will not re-encode the rest.
            raise _Undecodable("big endian YBR pixel data cannot be cleaned")
        _decode_and_mask(ds, mask, syntax, frames, samples, bits)
        return
    planar = _int(ds, "PlanarConfiguration", default=0) if samples > 1 else 0
    data: bytes = ds.PixelData
    # Big endian OW data is a run of byte-swapped 16-bit words, so narrower cells change places.
    swapped = not syntax.is_little_endian and ds["PixelData"].VR == "OW" and bits < 16
    if swapped:
        if bits == 1 or len(data) % 2:
            raise _Undecodable("bit-packed big endian pixel data cannot be masked")
        data = _swap_pairs(data)
    cells = frames * mask.size * samples
    if bits == 1:
        if len(data) * 8 < cells:
            raise _Undecodable("the pixel data is shorter than its image attributes say")
        unpacked = np.unpackbits(np.frombuffer(data, dtype=np.uint8), bitorder="little")
        _zero(unpacked[:cells], mask, frames, samples, planar)
        masked = np.packbits(unpacked, bitorder="little").tobytes()
    elif bits in (8, 16, 32, 64):
        size = bits // 8
        if len(data) < cells * size:
            raise _Undecodable("the pixel data is shorter than its image attributes say")
        values = np.frombuffer(data, dtype=f"u{size}", count=cells).copy()
        _zero(values, mask, frames, samples, planar)
        masked = values.tobytes() + data[cells * size :]
    else:
        raise _Undecodable(f"pixel data with BitsAllocated {bits} cannot be masked")
    ds.PixelData = _swap_pairs(masked) if swapped else masked


def _swap_pairs(data: bytes) -> bytes:
    return np.frombuffer(data, dtype=np.uint16).byteswap().tobytes()


def _zero(
    cells: NDArray[np.generic], mask: NDArray[np.bool_], frames: int, samples: int, planar: int
) -> None:
    rows, columns = mask.shape
    if planar:
        cells.reshape(frames, samples, rows, columns)[:, :, mask] = 0
    else:
        cells.reshape(frames, rows, columns, samples)[:, mask, :] = 0


def _decode_and_mask(
    ds: Dataset, mask: NDArray[np.bool_], syntax: UID, frames: int, samples: int, bits: int
) -> None:
    decoder = get_decoder(syntax)
    if not decoder.is_available:
        raise _Undecodable(f"no decoder for {syntax.name} is installed")
    dtype = np.dtype(f"<{'i' if _int(ds, 'PixelRepresentation', default=0) else 'u'}{bits // 8}")
    decoded: list[NDArray[np.generic]] = []
    photometric = ""
    try:
        for array, image_pixel in decoder.iter_array(ds, as_rgb=True):
            frame = array.reshape(mask.shape + (-1,)).copy()
            frame[mask] = 0
            decoded.append(frame if bits == 1 else frame.astype(dtype, copy=False))
            photometric = str(image_pixel["photometric_interpretation"])
    except _DECODE_ERRORS as error:
        raise _Undecodable(
            f"the {syntax.name} pixel data does not decode ({type(error).__name__})"
        ) from error
    if len(decoded) != frames:
        raise _Undecodable(f"{len(decoded)} frames decode where NumberOfFrames says {frames}")
    if bits == 1:
        data = np.packbits(np.stack(decoded).ravel(), bitorder="little").tobytes()
    else:
        data = b"".join(frame.tobytes() for frame in decoded)
    data += b"\x00" * (len(data) % 2)
    ds.PixelData = data
    element = ds["PixelData"]
    element.VR = "OB" if bits <= 8 else "OW"
    element.is_undefined_length = False
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.PhotometricInterpretation = photometric
    if samples > 1:
        ds.PlanarConfiguration = 0
    for keyword in ("ExtendedOffsetTable", "ExtendedOffsetTableLengths"):
        if keyword in ds:
            delattr(ds, keyword)


def _int(ds: Dataset, keyword: str, default: int | None = None) -> int:
    value = ds.get(keyword)
    if value is None or value == "":
        if default is None:
            raise _Undecodable(f"the pixel data has no valid {keyword}")
        return default
    try:
        return int(value)
    except (TypeError, ValueError) as error:
        raise _Undecodable(f"the pixel data has no valid {keyword}") from error
