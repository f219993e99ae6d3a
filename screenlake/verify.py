"""The residual-PHI scan: search de-identified files for the originals' identifying values.

The identifying values come from the landed originals in the PHI zone; the scan reads every
element at every depth of each research-zone file, its file meta and its path. A finding names
the file and the element and what kind of value was found, never the value itself.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pydicom
from pydicom.dataelem import DataElement
from pydicom.errors import InvalidDicomError
from pydicom.multival import MultiValue

from screenlake.identifiers import (
    DUTCH_PHONE,
    DUTCH_POSTCODE,
    NAME_PARTICLES,
    NINE_DIGITS,
    is_valid_bsn,
)

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


def _string_values(element: DataElement) -> Iterator[str]:
    if element.VR in ("SQ", "OB", "OW", "OF", "OD", "OL", "OV", "UN"):
        return
    value = element.value
    if value is None:
        return
    items = list(value) if isinstance(value, list | tuple | MultiValue) else [value]
    for item in items:
        text = str(item)
        if text:
            yield text


@dataclass
class IdentifierIndex:
    """Identifying tokens of a set of originals, each with the kind of value it came from."""

    tokens: dict[str, str]
    exact: dict[str, str]
    uids: set[str]
    birth_dates: set[str]

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


def index_originals(paths: Iterable[Path], retained_options: Iterable[str] = ()) -> IdentifierIndex:
    """Collect the identifying values of the originals at `paths` (unreadable files skipped).

    Kinds that a switched-on profile option keeps on purpose (`retained_options`, e.g.
    institution identity) are not searched for.
    """
    allowed = frozenset().union(
        *(KINDS_RETAINED_BY_OPTION.get(o, frozenset()) for o in retained_options)
    )
    index = IdentifierIndex.empty()
    for path in paths:
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True)
        except (InvalidDicomError, EOFError, OSError, ValueError, KeyError, TypeError):
            continue
        for element in _walk(ds):
            kind = IDENTIFYING_KEYWORDS.get(element.keyword or "")
            if kind is None or kind in allowed:
                continue
            for text in _string_values(element):
                index.add(kind, text)
    return index


def _walk(ds: pydicom.Dataset) -> Iterator[DataElement]:
    yield from ds.file_meta if hasattr(ds, "file_meta") else ()
    yield from ds.iterall()


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


def scan_file(path: Path, label: str, index: IdentifierIndex) -> list[Finding]:
    """Findings in one de-identified file and its name; `label` names it in the findings."""
    findings = [
        Finding(label, "file path", kind)
        for part in Path(label).parts
        if (kind := index.match(Path(part).stem) or _pattern_kind(part))
    ]
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    for element in _walk(ds):
        if element.VR in ("DA", "DT", "TM") and element.keyword != "PatientBirthDate":
            # Shifted dates are all eight digits: only an original birth date is a hit.
            for text in _string_values(element):
                if index.exact.get(text.strip().lower()) == "birth date":
                    findings.append(Finding(label, _element_path(element), "birth date"))
            continue
        for text in _string_values(element):
            free_text = element.VR in _FREE_TEXT_VRS
            # A code string's terms (PERFUSION, AXIAL) are defined terms, not words of a name.
            kind = index.match(text, whole_only=element.VR == "CS") or (
                _pattern_kind(text) if free_text else None
            )
            if kind:
                findings.append(Finding(label, _element_path(element), kind))
                break
    return findings


def scan_files(files: Iterable[tuple[Path, str]], index: IdentifierIndex) -> list[Finding]:
    """Findings over (path, label) pairs of de-identified files."""
    return [finding for path, label in files for finding in scan_file(path, label, index)]
