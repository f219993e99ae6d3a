"""The elements of a DICOM file that can hold text, read straight from its bytes.

The residual-PHI scan reads every file of a batch, and pydicom spends most of that time on
what the scan does not need: a Python object per element and per sequence item. Here the
file is walked once, in place (memory-mapped: pixel data and other binary values are stepped
over, never read), and only the raw bytes of text elements are returned, at every depth, with
the character set that applies to each. Explicit and implicit VR little endian files, the
transfer syntaxes nearly every export uses, are read here; any other file, and any file whose
structure is not exactly as expected, raises `NotReadHere` for the caller to read it with
pydicom instead, so that nothing is skipped by guessing.
"""

from __future__ import annotations

import mmap
import struct
from pathlib import Path
from typing import NamedTuple

from pydicom.charset import convert_encodings, default_encoding
from pydicom.datadict import dictionary_VR
from pydicom.uid import UID

# Value representations that hold text; UN (unknown) may. Every other one is binary.
TEXT_VRS = frozenset(
    {"AE", "AS", "CS", "DA", "DS", "DT", "IS", "LO", "LT", "PN", "SH", "ST", "TM", "UC", "UI"}
    | {"UR", "UT"}
)
_LONG_VRS = frozenset(
    {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"}
)
_TEXT_VRS_BYTES = frozenset(vr.encode("ascii") for vr in TEXT_VRS) | {b"UN"}
_KNOWN_VRS = _TEXT_VRS_BYTES | _LONG_VRS | {b"AT", b"FD", b"FL", b"SL", b"SS", b"UL", b"US"}
_ITEM, _ITEM_END, _SEQUENCE_END = 0xFFFEE000, 0xFFFEE00D, 0xFFFEE0DD
_UNDEFINED = 0xFFFFFFFF
_CHARSET_TAG = 0x00080005
_TRANSFER_SYNTAX_TAG = 0x00020010
_TAG_LENGTH = struct.Struct("<HHL")
_EXPLICIT = struct.Struct("<HH2sH")
_LONG_LENGTH = struct.Struct("<L")
_PREAMBLE = 128


class NotReadHere(Exception):
    """The file is not one this reader walks (another transfer syntax, an odd structure)."""


class TextElement(NamedTuple):
    """One element that can hold text: its tag, VR, raw value and the character set for it."""

    tag: int
    vr: str
    value: bytes
    encodings: tuple[str, ...]


def text_elements(path: Path) -> list[TextElement]:
    """The text elements of the file at `path`: file meta first, then the data set, in order.

    Raises `NotReadHere` for a file this reader does not walk (read it with pydicom), and
    `OSError` when the file cannot be opened.
    """
    with path.open("rb") as handle:
        try:
            view = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
        except ValueError as error:  # an empty file
            raise NotReadHere("empty file") from error
        with view:
            try:
                return _Walker(view).file()
            except (struct.error, IndexError, ValueError, KeyError) as error:
                raise NotReadHere(str(error)) from error


class _Walker:
    def __init__(self, data: mmap.mmap) -> None:
        self.data = data
        self.found: list[TextElement] = []
        self.implicit = False

    def file(self) -> list[TextElement]:
        data = self.data
        if data[_PREAMBLE : _PREAMBLE + 4] != b"DICM":
            raise NotReadHere("no DICM preamble")
        position = self._meta(_PREAMBLE + 4)
        self._dataset(position, len(data), (default_encoding,), in_item=False)
        return self.found

    def _meta(self, position: int) -> int:
        syntax = None
        data = self.data
        while position + 8 <= len(data):
            group, element, vr, length = _EXPLICIT.unpack_from(data, position)
            if group != 0x0002:
                break
            if vr in _LONG_VRS:
                (length,) = _LONG_LENGTH.unpack_from(data, position + 8)
                position += 12
            else:
                position += 8
            if length == _UNDEFINED or position + length > len(data):
                raise NotReadHere("file meta element of undefined or impossible length")
            value = data[position : position + length]
            if vr in _TEXT_VRS_BYTES:
                tag = group << 16 | element
                self.found.append(TextElement(tag, vr.decode("ascii"), value, (default_encoding,)))
            if group << 16 | element == _TRANSFER_SYNTAX_TAG:
                syntax = UID(value.decode("ascii").strip(" \x00"))
            position += length
        if syntax is None or not syntax.is_transfer_syntax or syntax.is_deflated:
            raise NotReadHere("deflated, unknown or missing transfer syntax")
        if not syntax.is_little_endian:
            raise NotReadHere("big endian transfer syntax")
        self.implicit = syntax.is_implicit_VR
        return position

    def _dataset(
        self,
        position: int,
        end: int,
        encodings: tuple[str, ...],
        in_item: bool,
        implicit: bool | None = None,
    ) -> int:
        """Walk the elements from `position` to `end`, or to an item delimiter when `in_item`
        and the item's length is undefined; return the position after them."""
        implicit = self.implicit if implicit is None else implicit
        data, found = self.data, self.found
        # The loop runs once per element of every file of a batch: names are bound locally.
        unpack_tag_length, unpack_explicit = _TAG_LENGTH.unpack_from, _EXPLICIT.unpack_from
        long_vrs, known_vrs, text_vrs = _LONG_VRS, _KNOWN_VRS, _TEXT_VRS_BYTES
        while position < end:
            if implicit:
                group, element, length = unpack_tag_length(data, position)
                vr = _implicit_vr(group << 16 | element)
                position += 8
            else:
                group, element, vr, length = unpack_explicit(data, position)
                if group == 0xFFFE:  # items and delimiters have no VR
                    group, element, length = unpack_tag_length(data, position)
                    position += 8
                elif vr in long_vrs:
                    (length,) = _LONG_LENGTH.unpack_from(data, position + 8)
                    position += 12
                elif vr in known_vrs:
                    position += 8
                else:
                    raise NotReadHere(f"element {group:04X},{element:04X}: unknown explicit VR")
            tag = group << 16 | element
            nested_implicit = implicit
            if vr == b"UN" and not implicit:
                # As pydicom does: a public element written as UN is what the dictionary says,
                # and a sequence written as UN is encoded in implicit VR.
                vr = _implicit_vr(tag)
                nested_implicit = True
            if group == 0xFFFE:
                if tag != _ITEM_END or not in_item or length != 0:
                    raise NotReadHere(f"item tag {tag:08X} among elements")
                return position
            if length == _UNDEFINED:
                if vr in (b"SQ", b"UN"):
                    # A value of unknown type and undefined length is an implicit VR sequence.
                    implicit_items = nested_implicit or vr == b"UN"
                    position = self._sequence(position, None, encodings, implicit_items)
                else:
                    position = self._fragments(position)
                continue
            if position + length > end:
                raise NotReadHere(f"element {tag:08X} runs past its end")
            if vr in text_vrs:
                value = data[position : position + length]
                if tag == _CHARSET_TAG:
                    terms = value.decode("ascii", errors="replace").strip(" \x00").split("\\")
                    encodings = tuple(convert_encodings([t.strip() for t in terms]))
                found.append(TextElement(tag, vr.decode("ascii"), value, encodings))
            elif vr == b"SQ":
                self._sequence(position, position + length, encodings, nested_implicit)
            position += length
        if in_item and end == len(data):
            raise NotReadHere("item of undefined length without its delimiter")
        if position != end:
            raise NotReadHere("elements run past the end of their data set")
        return position

    def _sequence(
        self, position: int, end: int | None, encodings: tuple[str, ...], implicit: bool
    ) -> int:
        data = self.data
        while end is None or position < end:
            group, element, length = _TAG_LENGTH.unpack_from(data, position)
            tag = group << 16 | element
            position += 8
            if tag == _SEQUENCE_END and end is None:
                return position
            if tag != _ITEM:
                raise NotReadHere(f"{tag:08X} where a sequence item should be")
            if length == _UNDEFINED:
                position = self._dataset(position, len(data), encodings, True, implicit)
            else:
                self._dataset(position, position + length, encodings, False, implicit)
                position += length
        if position != end:
            raise NotReadHere("sequence items run past the end of the sequence")
        return position

    def _fragments(self, position: int) -> int:
        """Step over an encapsulated value (compressed pixel data): its fragments, unread."""
        data = self.data
        while True:
            group, element, length = _TAG_LENGTH.unpack_from(data, position)
            tag = group << 16 | element
            position += 8
            if tag == _SEQUENCE_END:
                return position
            if tag != _ITEM or length == _UNDEFINED or position + length > len(data):
                raise NotReadHere("encapsulated value that is not a list of fragments")
            position += length


def _implicit_vr(tag: int) -> bytes:
    """The VR an implicit VR file leaves to the dictionary; UN for private and unknown tags."""
    vr = _IMPLICIT_VRS.get(tag)
    if vr is None:
        vr = _IMPLICIT_VRS[tag] = _dictionary_vr(tag)
    return vr


def _dictionary_vr(tag: int) -> bytes:
    if tag >> 16 == 0xFFFE:
        return b"NONE"
    if tag & 0xFFFF == 0:
        return b"UL"  # group length
    try:
        # "US or SS", "OB or OW": binary whichever they are, and in no set of text VRs.
        return str(dictionary_VR(tag)).encode("ascii")
    except KeyError:
        return b"UN"


# Looked up once per tag and process: an implicit VR file asks for every element's.
_IMPLICIT_VRS: dict[int, bytes] = {}
