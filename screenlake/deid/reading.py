"""Reading one landed file, and the file-level reasons to quarantine it instead.

Every reason is `category: detail; what to do`, names attributes and sizes but never a value
of the file, and becomes the `UnreadableInstanceError` message the batch writes beside the
quarantined original. Elements are not decoded here: the engine decodes only what it changes,
and a value that is damaged fails there, with the same kind of reason.
"""

from __future__ import annotations

import struct
from pathlib import Path

import pydicom
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.errors import BytesLengthException, InvalidDicomError
from pydicom.pixels.utils import get_expected_length
from pydicom.tag import BaseTag
from pydicom.uid import UID, UID_dictionary

from screenlake.deid.filemeta import original_transfer_syntax
from screenlake.deid.profile_file import dictionary_vr
from screenlake.errors import UnreadableInstanceError

# What pydicom raises on damaged input: unknown VRs (NotImplementedError), ambiguous VRs it
# cannot resolve (AttributeError), a character set of the wrong type (TypeError), values of
# the wrong length or form, items past the end.
READ_ERRORS = (
    EOFError,
    ValueError,
    BytesLengthException,
    struct.error,
    OverflowError,
    NotImplementedError,
    AttributeError,
    TypeError,
    KeyError,
    IndexError,
)
# Values longer than this are read from the file only when used.
DEFER_SIZE = 64 * 1024
_REQUIRED = (
    ("SOPClassUID", "the instance cannot be written as a DICOM file"),
    ("SOPInstanceUID", "the instance cannot be identified or deduplicated"),
    ("StudyInstanceUID", "the instance cannot be placed in a study"),
    ("SeriesInstanceUID", "the instance cannot be placed in a series"),
    ("PatientID", "no pseudonym or date shift can be derived"),
)
_IMAGE_ATTRIBUTES = ("Rows", "Columns", "BitsAllocated", "SamplesPerPixel")
_PIXEL_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")
# The first bytes of a data set written without preamble: a group 0002 or 0008 element, little
# endian, explicit (a VR of two capitals) or implicit.
_BARE_DATA_SET_GROUPS = (b"\x02\x00", b"\x08\x00")


def read_instance(src: Path) -> Dataset:
    """Read a DICOM file, and fail on empty, non-DICOM, preamble-less, truncated,
    unknown-transfer-syntax or pixel-less image files.

    Values over `DEFER_SIZE` (pixel data, large private blobs) are read only when used: from
    the file, when the output is written. An instance quarantined for its header, or a blob
    removed, never costs reading them.
    """
    try:
        size: int | None = src.stat().st_size
        if size == 0:
            raise UnreadableInstanceError("empty file: 0 bytes; re-export the instance")
        ds = pydicom.dcmread(src, force=False, defer_size=DEFER_SIZE)
        syntax = original_transfer_syntax(ds)
        if syntax is not None and syntax in UID_dictionary and syntax.is_deflated:
            # A deferred value would be read back from the deflated bytes at the wrong place.
            ds = pydicom.dcmread(src, force=False)
            size = None
    except InvalidDicomError as error:
        raise UnreadableInstanceError(_not_dicom_reason(src)) from error
    except OSError as error:
        if error.errno is None:
            # pydicom raises a bare OSError when an item or value runs past the end of the file.
            raise malformed(error) from error
        raise UnreadableInstanceError(f"unreadable file: {error.strerror}") from error
    except READ_ERRORS as error:
        raise malformed(error) from error
    if len(ds) == 0:
        # pydicom returns an empty data set when the file ends inside an undefined length.
        raise UnreadableInstanceError(
            "truncated file: no data set after the file meta header; re-export the instance"
        )
    check_transfer_syntax(ds)
    _decode_if_misencoded(ds)
    check_pixel_data(ds, size)
    return ds


def _decode_if_misencoded(ds: Dataset) -> None:
    """Decode every element of a data set encoded otherwise than its transfer syntax says.

    pydicom reads such a file by looking at its bytes, but elements kept raw would be written
    back in the wrong encoding (implicit VR elements under an explicit VR transfer syntax have
    no VR to write). Decoded, they are written in the declared one. Rare, so done in full.
    """
    syntax = original_transfer_syntax(ds)
    first = next(iter(ds._dict.values()))
    if syntax is None or not isinstance(first, RawDataElement):
        return
    if (first.is_implicit_VR, first.is_little_endian) != (
        syntax.is_implicit_VR,
        syntax.is_little_endian,
    ):
        try:
            for _ in ds.iterall():
                pass
        except READ_ERRORS as error:
            raise malformed(error) from error


def malformed(error: BaseException) -> UnreadableInstanceError:
    """The quarantine error for a parsing failure; the exception's own text can quote element
    values, so only its type is kept."""
    kind = "struct.error" if isinstance(error, struct.error) else type(error).__name__
    return UnreadableInstanceError(
        f"malformed DICOM: {kind} while parsing; the file is truncated or damaged, "
        "re-export the instance"
    )


def _not_dicom_reason(src: Path) -> str:
    try:
        with src.open("rb") as handle:
            head = handle.read(8)
    except OSError:
        head = b""
    bare = head[:2] in _BARE_DATA_SET_GROUPS and (
        head[4:6].isalpha() and head[4:6].isupper() or head[4:8] != b"\x00" * 4
    )
    if head.startswith(b"DICM") or bare:
        return (
            "no DICOM preamble: the file starts with a data set, without the 128-byte preamble "
            "and the 'DICM' prefix of a DICOM file (PS3.10 7.1); re-export it as a DICOM file"
        )
    return (
        "not DICOM: no valid DICOM file header (preamble, 'DICM' prefix and file meta "
        "information); the file is not a DICOM instance"
    )


def check_transfer_syntax(ds: Dataset) -> None:
    """Quarantine a file whose transfer syntax is missing or not one the standard defines:
    its data set may have been decoded with the wrong encoding."""
    syntax = original_transfer_syntax(ds)
    if syntax is None:
        raise UnreadableInstanceError(
            "missing transfer syntax: the file meta has no TransferSyntaxUID; fix the export"
        )
    entry = UID_dictionary.get(syntax)
    if entry is None or entry[1] != "Transfer Syntax":
        raise UnreadableInstanceError(
            "unknown transfer syntax: the file meta names a TransferSyntaxUID the DICOM "
            "standard does not define; re-export the instance in a standard transfer syntax"
        )


def identity_problem(ds: Dataset) -> str | None:
    """Why the instance cannot be de-identified consistently (a missing identifier or UID),
    or None."""
    for keyword, why in _REQUIRED:
        if not str(ds.get(keyword) or "").strip():
            return f"missing {keyword}: {why}; fix the export"
        element = ds.data_element(keyword)
        if element is not None and not vr_matches(element.tag, element.VR):
            return f"malformed DICOM: {keyword} has VR {element.VR}; the file is damaged"
    return None


def vr_matches(tag: int, vr: str | None) -> bool:
    """Whether `vr` (None for implicit VR) is the data dictionary's VR for `tag`."""
    expected = dictionary_vr(tag)
    if vr is None or not expected:
        return True
    # An in-memory element can still carry the dictionary's "OB or OW" until it is written.
    return vr == expected or vr in expected.split(" or ")


def check_pixel_data(ds: Dataset, file_size: int | None = None) -> None:
    """Quarantine an image without its pixel data, or with pixel data shorter than its
    attributes say or running past the end of the file (`file_size`): a truncated file."""
    sop_class = UID(str(ds.get("SOPClassUID") or ""))
    is_image = "Rows" in ds or "Image Storage" in sop_class.name
    if is_image and not any(k in ds for k in _PIXEL_KEYWORDS):
        raise UnreadableInstanceError(
            "truncated file: an image instance without pixel data; re-export the instance"
        )
    if "PixelData" not in ds:
        return
    missing = [k for k in _IMAGE_ATTRIBUTES if not isinstance(ds.get(k), int)]
    if not str(ds.get("PhotometricInterpretation") or "").strip():
        missing.append("PhotometricInterpretation")
    if missing:
        raise UnreadableInstanceError(
            f"incomplete image: pixel data without a valid {', '.join(missing)}; fix the export"
        )
    element = ds._dict[BaseTag(0x7FE00010)]  # as read: a deferred value stays unread
    syntax = original_transfer_syntax(ds)
    if syntax is not None and syntax.is_encapsulated:
        if not fragments_complete(ds.PixelData):
            raise UnreadableInstanceError(
                "truncated file: encapsulated pixel data ends inside a fragment; "
                "re-export the instance"
            )
        return
    if isinstance(element, RawDataElement):
        length = element.length if element.value is None else len(element.value)
        if file_size is not None and element.value_tell + element.length > file_size:
            raise UnreadableInstanceError(
                f"truncated file: pixel data runs {element.value_tell + element.length - file_size}"
                " bytes past the end of the file; re-export the instance"
            )
    else:
        length = len(ds.PixelData or b"")
    try:
        expected = int(get_expected_length(ds, "bytes"))
    except (TypeError, ValueError, AttributeError) as error:
        raise UnreadableInstanceError(
            "incomplete image: the image pixel attributes do not give a pixel data length; "
            "fix the export"
        ) from error
    if length < expected:
        raise UnreadableInstanceError(
            f"truncated file: pixel data has {length} bytes, expected {expected}; "
            "re-export the instance"
        )


def fragments_complete(pixels: bytes) -> bool:
    """Whether encapsulated pixel data is whole: an offset table and at least one fragment,
    each item's declared length inside the value (PS3.5 A.4)."""
    offset = items = 0
    while offset + 8 <= len(pixels):
        group, element, length = struct.unpack_from("<HHL", pixels, offset)
        if (group, element) != (0xFFFE, 0xE000):
            return False
        offset += 8 + length
        items += 1
    return offset == len(pixels) and items >= 2
