"""Encoding a de-identified data set as a DICOM file, fast where elements are untouched.

Most elements of a de-identified instance are the bytes read (the engine decodes only what it
changes). pydicom's writer spends tens of microseconds per element on those; here an untouched
element of defined length, in the encoding it was read in, is written as its header and its
raw bytes; plain ASCII text (the UIDs, dates, dummies and names the engine puts), whole numbers
and the file meta are encoded directly; sequences are written with undefined lengths so that
their items get the same treatment. Every other element, pixel data of undefined length
included, goes through pydicom's `write_data_element`, and deflated transfer syntaxes through
pydicom whole. The output reads back equal to pydicom's own (a test holds them together).
"""

from __future__ import annotations

import copy
import struct
from typing import BinaryIO, cast

from pydicom.charset import default_encoding
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import correct_ambiguous_vr_element, write_data_element
from pydicom.multival import MultiValue
from pydicom.uid import UID
from pydicom.valuerep import EXPLICIT_VR_LENGTH_32, PersonName

_UNDEFINED = 0xFFFFFFFF
_SPECIFIC_CHARACTER_SET = 0x00080005
_ITEM, _ITEM_END, _SEQUENCE_END = (0xFFFE, 0xE000), (0xFFFE, 0xE00D), (0xFFFE, 0xE0DD)
_LONG_VRS = frozenset(str(vr) for vr in EXPLICIT_VR_LENGTH_32)
_TEXT_VRS = frozenset(
    {"AE", "AS", "CS", "DA", "DT", "LO", "LT", "PN", "SH", "ST", "TM", "UC", "UI", "UR", "UT"}
)
_TEXT_TYPES = (str, UID, PersonName)
_INTEGER_FORMATS = {"US": "H", "SS": "h", "UL": "L", "SL": "l"}


def write_file(ds: Dataset, handle: BinaryIO) -> None:
    """Write `ds` (with its rebuilt `file_meta` and preamble) as a DICOM file to `handle`."""
    syntax = UID(ds.file_meta.TransferSyntaxUID)
    if syntax.is_deflated:
        ds.save_as(handle, enforce_file_format=True)
        return
    meta = _Writer(implicit=False, little=True)
    meta.file_meta(ds.file_meta)
    body = _Writer(implicit=syntax.is_implicit_VR, little=syntax.is_little_endian)
    body.dataset(ds, default_encoding, [])
    handle.write(b"".join([ds.preamble, b"DICM", *meta.parts, *body.parts]))


class _Writer:
    def __init__(self, implicit: bool, little: bool) -> None:
        self.parts: list[bytes] = []
        self.implicit = implicit
        self.little = little
        self.order = "<" if little else ">"
        self.implicit_header = struct.Struct(f"{self.order}HHL")
        self.short_header = struct.Struct(f"{self.order}HH2sH")
        self.long_header = struct.Struct(f"{self.order}HH2sHL")

    def file_meta(self, meta: FileMetaDataset) -> None:
        """The file meta group, explicit VR little endian, led by its group length."""
        group = _Writer(implicit=False, little=True)
        for tag in sorted(meta._dict):
            if tag != 0x00020000:
                group.element(meta, tag, meta[tag], default_encoding, [])
        length = sum(len(part) for part in group.parts)
        self.put(0x00020000, "UL", struct.pack("<L", length))
        self.parts += group.parts

    def dataset(
        self, ds: Dataset, parent_encoding: str | list[str], ancestors: list[Dataset]
    ) -> None:
        ancestors = [ds, *ancestors]
        encoding = parent_encoding
        if _SPECIFIC_CHARACTER_SET in ds._dict:
            encoding = ds[_SPECIFIC_CHARACTER_SET].value or parent_encoding
        elements = ds._dict
        for tag in sorted(elements, key=int):  # int keys: BaseTag compares in Python
            if not tag & 0xFFFF and tag >> 16 > 6:
                continue  # retired group lengths are never written (PS3.5 7.2)
            self.element(ds, tag, elements[tag], encoding, ancestors)

    def element(
        self,
        ds: Dataset,
        tag: int,
        element: DataElement | RawDataElement,
        encoding: str | list[str],
        ancestors: list[Dataset],
    ) -> None:
        if isinstance(element, RawDataElement):
            if self._raw(element):
                return
            element = cast(DataElement, ds[tag])  # decoded in its own encoding and charset
        if " or " in element.VR:
            # An in-memory element ("OB or OW", "US or SS"): its VR follows from the data set;
            # a copy is corrected, so that a caller's element stays as it was.
            corrected = correct_ambiguous_vr_element(copy.copy(element), ds, self.little, ancestors)
            if isinstance(corrected, DataElement):
                element = corrected
        if element.VR == "SQ":
            self._sequence(element, encoding, ancestors)
        elif not self._plain(element):
            fp = DicomBytesIO()
            fp.is_implicit_VR, fp.is_little_endian = self.implicit, self.little
            write_data_element(fp, element, encoding)
            self.parts.append(fp.getvalue())

    def put(self, tag: int, vr: str | None, value: bytes) -> bool:
        """Append one element of defined length; False when its VR cannot hold the length."""
        group, number = tag >> 16, tag & 0xFFFF
        if self.implicit:
            self.parts.append(self.implicit_header.pack(group, number, len(value)))
        elif vr is None or vr == "SQ":
            return False
        elif vr in _LONG_VRS:
            self.parts.append(self.long_header.pack(group, number, vr.encode(), 0, len(value)))
        elif len(value) <= 0xFFFF:
            self.parts.append(self.short_header.pack(group, number, vr.encode(), len(value)))
        else:
            return False
        self.parts.append(value)
        return True

    def _raw(self, element: RawDataElement) -> bool:
        """An untouched element as read; False when it needs pydicom."""
        if (
            element.length == _UNDEFINED
            or (element.value is None and element.length)  # deferred: pydicom reads it
            or element.is_buffered
            or element.is_implicit_VR != self.implicit
            or element.is_little_endian != self.little
        ):
            return False
        return self.put(element.tag, element.VR, element.value or b"")

    def _plain(self, element: DataElement) -> bool:
        """ASCII text or whole numbers, encoded directly; False when it needs pydicom."""
        if element.is_undefined_length:
            return False
        vr, value = element.VR, element.value
        values = [] if value is None or value == "" else value
        if not isinstance(values, list | MultiValue):
            values = [values]
        if vr in _INTEGER_FORMATS:
            if not all(type(v) is int for v in values):
                return False
            try:
                packed = struct.pack(f"{self.order}{len(values)}{_INTEGER_FORMATS[vr]}", *values)
            except struct.error:
                return False
            return self.put(element.tag, vr, packed)
        if vr not in _TEXT_VRS or not all(type(v) in _TEXT_TYPES for v in values):
            return False
        text = "\\".join(str(v) for v in values)
        if not text.isascii():
            return False
        encoded = text.encode("ascii")
        if len(encoded) % 2:
            encoded += b"\x00" if vr == "UI" else b" "
        return self.put(element.tag, vr, encoded)

    def _sequence(
        self, element: DataElement, encoding: str | list[str], ancestors: list[Dataset]
    ) -> None:
        group, number = element.tag >> 16, element.tag & 0xFFFF
        if self.implicit:
            self.parts.append(self.implicit_header.pack(group, number, _UNDEFINED))
        else:
            self.parts.append(self.long_header.pack(group, number, b"SQ", 0, _UNDEFINED))
        for item in element.value or ():
            self.parts.append(self.implicit_header.pack(*_ITEM, _UNDEFINED))
            self.dataset(item, encoding, ancestors)
            self.parts.append(self.implicit_header.pack(*_ITEM_END, 0))
        self.parts.append(self.implicit_header.pack(*_SEQUENCE_END, 0))
