"""The residual-PHI scan: search de-identified files for the originals' identifying values.

The identifying values come from the landed originals in the PHI zone (their headers only).
The scan reads each research-zone file from disk, its file meta, every element at every depth
that can hold text (private elements and values of unknown VR, UN, included; elements after the
pixel data too), and its path. Pixel data and other binary values (OB, OW, FL, US, AT...) are
skipped without being read. A finding names the file and the element and what kind of value
was found, never the value itself.

Files are read by `screenlake.text_elements` (one pass over the bytes, text values only), or
by pydicom when that reader leaves a file to it. Most files hold nothing: each file's text is
first searched as a whole (one token set, one pass of each pattern), and only a file with a
possible hit is read with pydicom and searched element by element, which decides. Large
batches are spread over worker processes, as de-identification spreads them.
"""

from __future__ import annotations

import os
import re
import warnings
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar, cast

import pydicom
from pydicom.charset import convert_encodings, decode_bytes, default_encoding
from pydicom.datadict import dictionary_VR
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence

from screenlake.identifiers import (
    DUTCH_PHONE,
    DUTCH_POSTCODE,
    NAME_PARTICLES,
    NINE_DIGITS,
    is_valid_bsn,
)
from screenlake.lifeline import bound_pool, die_with_parent
from screenlake.text_elements import TEXT_VRS, NotReadHere, TextElement, text_elements

# Attributes whose original values must never reach the research zone.
IDENTIFYING_KEYWORDS: dict[str, str] = {
    "PatientName": "patient name",
    "PatientID": "patient ID",
    "PatientBirthDate": "birth date",
    "PatientAddress": "address",
    "PatientTelephoneNumbers": "phone number",
    "AccessionNumber": "accession number",
    "StudyInstanceUID": "original UID",
    "SeriesInstanceUID": "original UID",
    "SOPInstanceUID": "original UID",
    "FrameOfReferenceUID": "original UID",
    "ReferringPhysicianName": "staff name",
    "PerformingPhysicianName": "staff name",
    "OperatorsName": "staff name",
    "RequestingPhysician": "staff name",
    "InstitutionName": "institution",
    "InstitutionAddress": "institution",
    "StationName": "device identity",
    "DeviceSerialNumber": "device identity",
}
# Kinds a deployment may keep on purpose by switching on a PS3.15 option in its profile.
KINDS_RETAINED_BY_OPTION: dict[str, frozenset[str]] = {
    "rtnInstIdOpt": frozenset({"institution"}),
    "rtnDevIdOpt": frozenset({"device identity"}),
}
# Kinds matched as whole values only: their words (a vendor in a hospital's name, a room
# number in a station name) also stand, harmlessly, in kept attributes.
_WHOLE_VALUE_KINDS = frozenset({"institution", "device identity"})
_PLACEHOLDERS = frozenset(
    {"anonymous", "anonymized", "anonymised", "unknown", "none", "n/a", "removed", "deidentified"}
)
# Patterns are searched in free-text value representations only: codes, numbers and UIDs
# hold no phone numbers, and "ISO 2022 IR 13" is no postcode.
_FREE_TEXT_VRS = frozenset({"LO", "LT", "SH", "ST", "UT", "UC", "PN", "UR"})
_MIN_TOKEN = 3
# Words too common to signal a name on their own: Dutch name particles, and the placeholder
# words of test and template files ("Last Name^First Name", "Observer^Verifying"), which
# coded concepts such as "Recording Observer's Name" use too.
_COMMON_TOKENS = NAME_PARTICLES | frozenset(
    {"name", "first", "last", "given", "family", "middle", "test", "patient", "observer"}
    | {"verifying", "recording", "physician", "doctor", "enter", "text", "unknown"}
)
_TOKEN_SPLIT = re.compile(r"[^0-9A-Za-zÀ-ÿ]+")
_UID = re.compile(r"[0-9]+(?:\.[0-9]+)+")
_YMD = re.compile(r"(?<!\d)(\d{4})[-/.](\d{1,2})[-/.](\d{1,2})(?!\d)")
_DMY = re.compile(r"(?<!\d)(\d{1,2})[-/.](\d{1,2})[-/.](\d{4})(?!\d)")
# Only elements of a VR in TEXT_VRS are read: every other one is binary (OB, OW, FL, US, AT,
# the ambiguous "US or SS"...), a number or a bitmap. UN, a value of unknown type, may be
# text and is searched as free text.
_TEXT_VRS = TEXT_VRS
_DATE_VRS = frozenset({"DA", "DT", "TM"})
_SINGLE_VALUED_VRS = frozenset({"LT", "ST", "UT", "UR"})
# Only these are written in the Specific Character Set; the others are plain ASCII.
_CHARSET_VRS = frozenset({"LO", "LT", "PN", "SH", "ST", "UC", "UT"})
# Characters that reset ISO 2022 code extensions within a value.
_DELIMITERS = {0x5C, 0x5E, 0x3D}
_CHARSET_TAG = 0x00080005
_BIRTH_DATE_TAG = 0x00100030
# Values longer than this (pixel data, blobs) are not read unless they can hold text.
DEFER_SIZE = 16 * 1024
# A worker process starts in some tens of milliseconds: small batches are scanned in-process.
_MIN_FILES_PER_WORKER = 64
_CHUNKS_PER_WORKER = 4
_IDENTIFYING_TAGS: dict[int, str] = {
    int(pydicom.datadict.tag_for_keyword(k) or 0): kind for k, kind in IDENTIFYING_KEYWORDS.items()
}
_T = TypeVar("_T")
_A = TypeVar("_A")
_R = TypeVar("_R")


@dataclass(frozen=True)
class Finding:
    """One identifier found: where (file, element path) and what kind, never the value."""

    file: str
    element: str
    kind: str


def _tokens(text: str) -> set[str]:
    return {
        t.lower()
        for t in _TOKEN_SPLIT.split(text)
        if len(t) >= _MIN_TOKEN and t.lower() not in _COMMON_TOKENS
    }


def _string_values(element: DataElement, encodings: tuple[str, ...]) -> Iterator[str]:
    if element.VR not in _TEXT_VRS and element.VR != "UN":
        return
    value = element.value
    if value is None:
        return
    if isinstance(value, bytes):
        yield from (text for text in _decoded_unknown(value, encodings) if text)
        return
    items = list(value) if isinstance(value, list | tuple | MultiValue) else [value]
    for item in items:
        text = str(item)
        if text:
            yield text


def _decoded_unknown(value: bytes, encodings: tuple[str, ...]) -> list[str]:
    # A value of unknown type is read in the data set's character set and byte for byte: its
    # writer may not have followed the character set.
    texts = [value.decode(default_encoding)]
    if encodings[0] != default_encoding:
        try:
            texts.append(value.decode(encodings[0], errors="replace"))
        except LookupError:
            pass
    return texts


@dataclass
class IdentifierIndex:
    """Identifying tokens of a set of originals, each with the kind of value it came from, and
    the attributes the profile keeps on purpose (`kept_on_purpose`): an institution's address,
    kept under Retain Institution Identity, holds its postcode, which is no patient's. Their
    values are not searched for patterns; every attribute is still searched for the originals'
    own identifying values."""

    tokens: dict[str, str]
    exact: dict[str, str]
    uids: set[str]
    birth_dates: set[str]
    kept_on_purpose: frozenset[int] = frozenset()

    @classmethod
    def empty(cls) -> IdentifierIndex:
        """An index that knows no identifiers yet."""
        return cls(tokens={}, exact={}, uids=set(), birth_dates=set())

    def add(self, kind: str, text: str) -> None:
        """Remember one identifying value."""
        text = text.strip()
        if not text:
            return
        if _UID.fullmatch(text):
            # UIDs share their roots: only a whole original UID is a hit.
            self.uids.add(text)
            return
        if kind == "birth date" and len(text) == 8 and text.isdigit():
            self.birth_dates.add(text)
        if not _identifying_length(text) or text.lower() in _PLACEHOLDERS:
            # "2", "0" or "ANONYMOUS" in an original identify nobody and match everything.
            return
        self.exact[text.lower()] = kind
        if kind in _WHOLE_VALUE_KINDS:
            return
        for token in _tokens(text.replace("^", " ")):
            # Short all-digit tokens (house numbers, days) would match everywhere.
            if token.isdigit() and len(token) < 6:
                continue
            self.tokens.setdefault(token, kind)

    def match(self, text: str, whole_only: bool = False) -> str | None:
        """The kind of identifier `text` holds, or None; `whole_only` compares whole values."""
        lowered = text.strip().lower()
        if lowered in self.exact:
            return self.exact[lowered]
        if whole_only:
            return None
        if any(uid in self.uids for uid in _UID.findall(text)):
            return "original UID"
        if self.birth_dates and not self.birth_dates.isdisjoint(_written_dates(text)):
            return "birth date"
        for token in _tokens(text.replace("^", " ")):
            if token in self.tokens:
                return self.tokens[token]
        return None


def _identifying_length(text: str) -> bool:
    return len(text) >= 4 if text.isdigit() else len(text) >= 3


def _written_dates(text: str) -> set[str]:
    """Dates written in free text (1958-03-12, 12-03-1958, 12/3/1958, 12.03.1958) as YYYYMMDD."""
    found = {f"{y}{m:0>2}{d:0>2}" for y, m, d in _YMD.findall(text)}
    found |= {f"{y}{m:0>2}{d:0>2}" for d, m, y in _DMY.findall(text)}
    return found


def _pattern_kind(text: str) -> str | None:
    for candidate in NINE_DIGITS.findall(text):
        if is_valid_bsn(candidate):
            return "BSN pattern"
    if DUTCH_PHONE.search(text):
        return "phone number pattern"
    if DUTCH_POSTCODE.search(text):
        return "postcode pattern"
    return None


def _element_path(element: DataElement) -> str:
    return f"{element.keyword or 'private'} {element.tag}"


def _identifying_values(task: tuple[list[Path], frozenset[str]]) -> list[tuple[str, str]]:
    paths, retained = task
    found: list[tuple[str, str]] = []
    for path in paths:
        try:
            elements = text_elements(path)
        except NotReadHere:
            found.extend(_identifying_values_read_by_pydicom(path, retained))
            continue
        except OSError:
            continue
        for element in elements:
            kind = _IDENTIFYING_TAGS.get(element.tag)
            if kind is None or kind in retained:
                continue
            text = _decoded(element)[0]
            items = [text] if element.vr in _SINGLE_VALUED_VRS else text.split("\\")
            # pydicom strips the padding of a value: so does this, for the same values.
            found.extend((kind, item) for v in items if (item := v.strip(" \x00")))
    return found


def _identifying_values_read_by_pydicom(
    path: Path, retained: frozenset[str]
) -> list[tuple[str, str]]:
    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
    except (InvalidDicomError, EOFError, OSError, ValueError, KeyError, TypeError):
        return []
    found: list[tuple[str, str]] = []
    for owner, element, _, encodings in _file_elements(ds):
        kind = _IDENTIFYING_TAGS.get(element.tag)
        if kind is None or kind in retained:
            continue
        values = _string_values(_converted(owner, element), encodings)
        found.extend((kind, text) for text in values)
    return found


def index_originals(
    paths: Iterable[Path], retained_options: Iterable[str] = (), workers: int = 0
) -> IdentifierIndex:
    """Collect the identifying values of the originals at `paths` (unreadable files skipped).

    Kinds that a switched-on profile option keeps on purpose (`retained_options`, e.g.
    institution identity) are not searched for. `workers` processes share a large batch (0:
    every core); the index is the same whatever their number.
    """
    retained = frozenset().union(
        *(KINDS_RETAINED_BY_OPTION.get(o, frozenset()) for o in retained_options)
    )
    count, chunks = _chunks(list(paths), workers)
    tasks = [(chunk, retained) for chunk in chunks]
    results = (
        _pooled(_identifying_values, tasks, count, None)
        if count > 1
        else map(_identifying_values, tasks)
    )
    index = IdentifierIndex.empty()
    index.kept_on_purpose = frozenset(
        tag for tag, kind in _IDENTIFYING_TAGS.items() if kind in retained
    )
    for found in results:
        for kind, text in found:
            index.add(kind, text)
    return index


_Element = DataElement | RawDataElement


def _text_elements(
    ds: Dataset, encodings: tuple[str, ...]
) -> Iterator[tuple[Dataset, _Element, str, tuple[str, ...]]]:
    """(owner, element, VR, character set) of each element at any depth that can hold text.

    Elements are left as read: only sequences, and values whose type the file does not say
    (implicit VR, UN), are decoded here, by pydicom, so that it decides what they are.
    """
    if _CHARSET_TAG in ds:
        encodings = tuple(convert_encodings(ds.SpecificCharacterSet or ""))
    for element in list(ds.values()):
        vr = element.VR
        if vr is None or vr == "UN":
            vr = _dictionary_vr(int(element.tag))
            if vr in ("SQ", "UN") and isinstance(element, RawDataElement):
                element = ds[element.tag]
                vr = element.VR
        elif vr == "SQ" and isinstance(element, RawDataElement):
            element = ds[element.tag]
        if vr == "SQ":
            for item in cast(Sequence, element.value or Sequence()):
                yield from _text_elements(item, encodings)
        elif vr in _TEXT_VRS or vr == "UN":
            yield ds, element, vr, encodings


def _dictionary_vr(tag: int) -> str:
    try:
        return str(dictionary_VR(tag))
    except KeyError:  # private, or unknown to pydicom's dictionary
        return "UN"


def _file_elements(ds: Dataset) -> Iterator[tuple[Dataset, _Element, str, tuple[str, ...]]]:
    yield from _text_elements(ds.file_meta, (default_encoding,)) if hasattr(ds, "file_meta") else ()
    yield from _text_elements(ds, (default_encoding,))


def _converted(owner: Dataset, element: _Element) -> DataElement:
    # Reading a deferred value (a long text) goes back to the file for it alone.
    return owner[element.tag] if isinstance(element, RawDataElement) else element


def _texts(owner: Dataset, element: _Element, vr: str, encodings: tuple[str, ...]) -> list[str]:
    value = element.value
    if not isinstance(element, RawDataElement) or value is None:
        return list(_string_values(_converted(owner, element), encodings))
    if vr == "UN":
        return _decoded_unknown(value, encodings)
    if vr in _CHARSET_VRS:
        return [decode_bytes(value, encodings, _DELIMITERS)]
    return [value.decode(default_encoding)]


def _whole_values(texts: list[str]) -> set[str]:
    return {v.strip().lower() for v in "\\".join(texts).replace("\x00", " ").split("\\")}


def _may_hold_identifier(
    texts: Iterable[tuple[int, str, list[str]]], index: IdentifierIndex
) -> bool:
    """False only when no element of a file, given as (tag, VR, texts), can be a finding.

    Every test of `IdentifierIndex.match` and `_pattern_kind` has its whole-file form here:
    the same whole values, tokens, UIDs, written dates and patterns, in texts joined by NULs,
    which none of them can match across.
    """
    anywhere: list[str] = []
    free: list[str] = []
    whole: list[str] = []
    dates: list[str] = []
    for tag, vr, values in texts:
        if vr in _DATE_VRS and tag != _BIRTH_DATE_TAG:
            dates.extend(values)
        elif vr == "CS":
            whole.extend(values)
        else:
            anywhere.extend(values)
            if (vr in _FREE_TEXT_VRS or vr == "UN") and tag not in index.kept_on_purpose:
                free.extend(values)
    exact = index.exact
    if any(exact.get(value) == "birth date" for value in _whole_values(dates)):
        return True
    if not exact.keys().isdisjoint(_whole_values(whole + anywhere)):
        return True
    joined = "\x00".join(anywhere)
    # Splitting before lowering, as `_tokens` does: no character of a token lowers into
    # another class.
    if not index.tokens.keys().isdisjoint(_TOKEN_SPLIT.sub(" ", joined).lower().split()):
        return True
    if index.uids and not index.uids.isdisjoint(_UID.findall(joined)):
        return True
    if index.birth_dates and not index.birth_dates.isdisjoint(_written_dates(joined)):
        return True
    return _pattern_kind("\x00".join(free)) is not None


def _element_findings(ds: Dataset, label: str, index: IdentifierIndex) -> list[Finding]:
    findings = []
    for owner, raw, _, encodings in _file_elements(ds):
        element = _converted(owner, raw)
        values = list(_string_values(element, encodings))
        if element.VR in _DATE_VRS and element.tag != _BIRTH_DATE_TAG:
            # Shifted dates are all eight digits: only an original birth date is a hit.
            for text in values:
                if index.exact.get(text.strip().lower()) == "birth date":
                    findings.append(Finding(label, _element_path(element), "birth date"))
            continue
        free_text = (element.VR in _FREE_TEXT_VRS or element.VR == "UN") and int(
            element.tag
        ) not in index.kept_on_purpose
        for text in values:
            # A code string's terms (PERFUSION, AXIAL) are defined terms, not words of a name.
            kind = index.match(text, whole_only=element.VR == "CS") or (
                _pattern_kind(text) if free_text else None
            )
            if kind:
                findings.append(Finding(label, _element_path(element), kind))
                break
    return findings


def scan_file(path: Path, label: str, index: IdentifierIndex) -> list[Finding]:
    """Findings in one de-identified file and its name; `label` names it in the findings."""
    findings = [
        Finding(label, "file path", kind)
        for part in Path(label).parts
        if (kind := index.match(Path(part).stem) or _pattern_kind(part))
    ]
    ds = None
    try:
        texts = [(e.tag, e.vr, _decoded(e)) for e in text_elements(path)]
    except NotReadHere:
        ds = _read_with_pydicom(path)
        texts = [(int(e.tag), vr, _texts(o, e, vr, enc)) for o, e, vr, enc in _file_elements(ds)]
    if _may_hold_identifier(texts, index):
        # Rare: the file is read again, with pydicom, to decide element by element.
        ds = ds or _read_with_pydicom(path)
        findings.extend(_element_findings(ds, label, index))
    return findings


def _read_with_pydicom(path: Path) -> Dataset:
    """The file as pydicom reads it, pixel data and long values deferred (not read).

    pydicom gives up on a damaged file past its header without an error (a truncated pixel
    data element leaves an empty data set): then the header alone, as read up to the pixel
    data, is what is searched.
    """
    header = pydicom.dcmread(path, stop_before_pixels=True)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            whole = pydicom.dcmread(path, defer_size=DEFER_SIZE)
    except (InvalidDicomError, EOFError, OSError, ValueError, KeyError, TypeError):
        return header
    return whole if set(header.keys()) <= set(whole.keys()) else header


def _decoded(element: TextElement) -> list[str]:
    if element.vr == "UN":
        return _decoded_unknown(element.value, element.encodings)
    if element.vr in _CHARSET_VRS:
        return [decode_bytes(element.value, element.encodings, _DELIMITERS)]
    return [element.value.decode(default_encoding)]


def _scan_chunk(files: list[tuple[Path, str]]) -> list[Finding]:
    assert _WORKER_INDEX is not None, "a scan worker starts with the index"
    return [finding for path, label in files for finding in scan_file(path, label, _WORKER_INDEX)]


def scan_files(
    files: Iterable[tuple[Path, str]], index: IdentifierIndex, workers: int = 0
) -> list[Finding]:
    """Findings over (path, label) pairs of de-identified files, in their order.

    `workers` processes share a large batch (0: every core, as de-identification's setting).
    """
    count, chunks = _chunks(list(files), workers)
    if count == 1:
        return [
            finding
            for chunk in chunks
            for p, label in chunk
            for finding in scan_file(p, label, index)
        ]
    return [finding for found in _pooled(_scan_chunk, chunks, count, index) for finding in found]


def _chunks(items: list[_T], workers: int) -> tuple[int, list[list[_T]]]:
    """(processes to use, `items` in consecutive chunks): one process for a small batch."""
    count = workers if workers > 0 else (os.cpu_count() or 1)
    count = max(1, min(count, len(items) // _MIN_FILES_PER_WORKER))
    parts = count * _CHUNKS_PER_WORKER if count > 1 else 1
    size = max(1, -(-len(items) // parts))
    return count, [items[start : start + size] for start in range(0, len(items), size)]


# The index a scan worker searches for, sent once to each worker rather than with every chunk.
_WORKER_INDEX: IdentifierIndex | None = None


def _start_worker(parent_pid: int, index: IdentifierIndex | None) -> None:
    global _WORKER_INDEX
    die_with_parent(parent_pid)
    _WORKER_INDEX = index


def _pooled(
    function: Callable[[_A], _R], tasks: list[_A], workers: int, index: IdentifierIndex | None
) -> Iterator[_R]:
    """`function` over `tasks`, in order, in `workers` processes that start with `index`."""
    # Workers die with this process: killed, it cannot shut its pool down itself.
    with bound_pool(workers, _start_worker, (index,)) as pool:
        yield from pool.map(function, tasks)
