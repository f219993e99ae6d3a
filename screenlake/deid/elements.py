"""Applying the profile's action to every element of a data set, at every sequence depth.

The walk looks the action up by tag on the element as read, still raw: an element that stays
as it was is never decoded (only checked to fit its VR), an element removed is dropped undecoded
unless its value identifies someone whose name or number descriptor text could repeat.
Elements are replaced, never changed in place, so that a data set copied structurally
(`engine.deidentify_dataset`) leaves its original alone. Text to clean is collected during the
walk and cleaned after it, when every identifier of the instance is known.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache

from pydicom import config
from pydicom.datadict import dictionary_VM, keyword_for_tag, tag_for_keyword
from pydicom.dataelem import DataElement, RawDataElement, empty_value_for_VR
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence
from pydicom.tag import BaseTag

from screenlake.deid.content import keep_item, replace_code
from screenlake.deid.dates import shift_values
from screenlake.deid.descriptors import KINDS_BY_KEYWORD, Identifiers
from screenlake.deid.private import clean_private
from screenlake.deid.profile import DUMMY_VRS, REPLACEMENT_GENERATORS, Action, Profile
from screenlake.deid.profile_file import dictionary_vr
from screenlake.deid.uids import remap_uids
from screenlake.errors import UnreadableInstanceError
from screenlake.keys import accession_pseudonym

# Kept values of these VRs are searched for identifiers (the sweep) or cleaned (under C).
SWEPT_VRS = frozenset({"LO", "LT", "SH", "ST", "UC", "UT"})
_CHECKED_VRS = DUMMY_VRS | {"UI"}
# Values of these VRs are plain ASCII: their raw bytes need no character set to be read.
_ASCII_VRS = frozenset({"AE", "AS", "CS", "DA", "DS", "DT", "IS", "TM", "UI", "UR"})
# Text VRs whose backslash is a character, not a value separator.
_SINGLE_TEXT_VRS = frozenset({"LT", "ST", "UT", "UR"})
_FIXED_SIZES = {"US": 2, "SS": 2, "UL": 4, "SL": 4, "FL": 4, "FD": 8, "SV": 8, "UV": 8}
# Control characters no text VR allows (TAB, LF, FF, CR and ESC are allowed in some).
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0e-\x1a\x1c-\x1f\x7f]")
# Characters a value of these VRs can hold, leniently (lower case and the punctuation some
# vendors use are tolerated); a name or an ID that lands here through damage does not fit.
_VR_CHARACTERS = {
    vr: re.compile(pattern)
    for vr, pattern in (
        ("UI", r"[0-9.]{0,64}"),
        ("DS", r"[0-9+\-.eE ]{0,32}"),
        ("IS", r"[0-9+\-. ]{0,16}"),
        ("AS", r"[0-9DWMY ]{0,8}"),
        ("CS", r"[A-Za-z0-9 _\-./]{0,32}"),
        ("DA", r"[0-9.\- ]{0,18}"),
        ("TM", r"[0-9.: ]{0,28}"),
        ("DT", r"[0-9.+\- ]{0,54}"),
    )
}
_OVERLAY_DATA_MASK, _OVERLAY_DATA = 0xFF00FFFF, 0x60003000
_KINDS: dict[int, str] = {
    int(tag_for_keyword(keyword) or 0): kind for keyword, kind in KINDS_BY_KEYWORD.items()
}


@dataclass
class Walk:
    """What one instance's walk needs and gathers."""

    profile: Profile
    key: bytes
    patient_pseudonym: str
    shift_days: int
    identifiers: Identifiers = field(default_factory=Identifiers)
    to_clean: list[tuple[Dataset, BaseTag]] = field(default_factory=list)
    to_sweep: list[tuple[Dataset, BaseTag]] = field(default_factory=list)
    applied: int = 0
    # Kept free-text values the sweep found an identifier in and cleaned.
    swept: int = 0


def clean_dataset(ds: Dataset, walk: Walk, cleaning: bool = False) -> None:
    """Apply the profile to every element of `ds` and its sequences; `cleaning` is set inside a
    sequence the profile cleans (C), where kept text is cleaned rather than only swept."""
    elements = ds._dict
    private: list[BaseTag] = []
    overlays: set[int] = set()
    for tag in list(elements):
        # Plain ints for the lookups: a BaseTag key compares through Python-level __eq__.
        number = int(tag)
        group = number >> 16
        if group & 1:
            private.append(tag)
            continue
        element = elements[tag]
        vr = element.VR
        expected = dictionary_vr(number)
        # Group lengths would be stale after removals; command and file meta elements do not
        # belong in a stored data set (the file meta is rebuilt); an attribute no dictionary
        # knows cannot be checked against any rule.
        if group <= 0x0002 or not number & 0xFFFF or not expected:
            vr = None
        elif vr is None:
            vr = expected
        elif vr == "UN":
            # Known public attributes sent as UN are decoded with their dictionary VR.
            element = ds[tag]
            vr = element.VR if element.VR != "UN" else None
        elif vr != expected and vr not in _allowed_vrs(number):
            # A damaged or mis-encoded element: the rule for its tag cannot vouch for a value
            # of another VR, and a replacement of the tag's VR would not fit it.
            vr = None
        if vr is None:
            del elements[tag]
            walk.applied += 1
            continue
        action = walk.profile.resolve(number)
        if action is Action.REMOVE and number & _OVERLAY_DATA_MASK == _OVERLAY_DATA:
            overlays.add(group)
        _apply(ds, tag, element, vr, action, walk, cleaning)
    for group in overlays:
        # An overlay without its data is no overlay; its other attributes go with it.
        for tag in [t for t in elements if t >> 16 == group]:
            del elements[tag]
    if private:
        _private(ds, private, walk, cleaning)


def finish_text(walk: Walk) -> None:
    """Clean the text collected by the walk: every C text value, and every kept free-text value
    (the sweep) that mentions an identifier of the instance."""
    for ds, tag in walk.to_clean:
        if tag in ds._dict:  # an overlay's text goes with its group
            _clean_text(ds, tag, walk)
    for ds, tag in walk.to_sweep:
        if tag in ds._dict and _mentions(ds, tag, walk.identifiers) and _clean_text(ds, tag, walk):
            walk.swept += 1


def _apply(
    ds: Dataset,
    tag: BaseTag,
    element: DataElement | RawDataElement,
    vr: str,
    action: Action,
    walk: Walk,
    cleaning: bool,
) -> None:
    if action is Action.KEEP or (action is Action.CLEAN and vr == "TM"):
        if vr == "SQ":
            _clean_items(ds, tag, walk, cleaning, dummy=False)
        else:
            _keep(ds, tag, element, vr, walk, cleaning)
        return
    kind = _kind(int(tag), vr)
    if kind is not None:
        walk.identifiers.add(kind, strings(ds, tag, element, vr))
    walk.applied += 1
    if action is Action.REMOVE:
        del ds._dict[tag]
    elif action is Action.ZERO:
        _put(ds, tag, vr, Sequence() if vr == "SQ" else empty_value_for_VR(vr))
    elif action is Action.UID:
        _put(ds, tag, vr, _joined(remap_uids(walk.key, strings(ds, tag, element, vr))))
    elif action is Action.DUMMY:
        _dummy(ds, tag, element, vr, walk)
    elif vr in ("DA", "DT"):
        values = shift_values(strings(ds, tag, element, vr), vr, walk.shift_days)
        _put(ds, tag, vr, _joined(values))
    elif vr == "SQ":
        _clean_items(ds, tag, walk, cleaning=True, dummy=False)
    else:
        walk.to_clean.append((ds, tag))


def _keep(
    ds: Dataset,
    tag: BaseTag,
    element: DataElement | RawDataElement,
    vr: str,
    walk: Walk,
    cleaning: bool,
) -> None:
    check_kept(ds, tag, element, vr)
    if vr in SWEPT_VRS:
        if cleaning:
            walk.to_clean.append((ds, tag))
        elif walk.profile.kept_text_sweep:
            walk.to_sweep.append((ds, tag))


def _dummy(
    ds: Dataset, tag: BaseTag, element: DataElement | RawDataElement, vr: str, walk: Walk
) -> None:
    generator = walk.profile.replacement_for(tag)
    if generator is not None:
        values = strings(ds, tag, element, vr)
        _put(ds, tag, vr, _REPLACEMENTS[generator](walk, values[0] if values else ""))
    elif vr == "UI":
        _put(ds, tag, vr, _joined(remap_uids(walk.key, strings(ds, tag, element, vr))))
    elif vr == "SQ":
        # A sequence marked D keeps its items, each de-identified (PS3.15 E.1.1: sequences
        # are still cleaned); a code that identifies a person gets a dummy code.
        _clean_items(ds, tag, walk, cleaning=False, dummy=True)
    elif vr in walk.profile.dummy_values:
        _put(ds, tag, vr, walk.profile.dummy_values[vr])
    else:
        _put(ds, tag, vr, empty_value_for_VR(vr))


def _clean_items(ds: Dataset, tag: BaseTag, walk: Walk, cleaning: bool, dummy: bool) -> None:
    items = ds[tag].value or ()
    kept = []
    for item in items:
        clean_dataset(item, walk, cleaning)
        if dummy and replace_code(item, walk.profile.dummy_values):
            walk.applied += 1
        if keep_item(tag, item):
            kept.append(item)
    if len(kept) != len(items):
        walk.applied += len(items) - len(kept)
        ds[tag] = DataElement(tag, "SQ", Sequence(kept))


def _private(ds: Dataset, tags: list[BaseTag], walk: Walk, cleaning: bool) -> None:
    removed, kept = clean_private(ds, tags, walk.profile.safe_private)
    walk.applied += removed
    for tag, vr in kept:
        _keep(ds, tag, ds._dict[tag], vr, walk, cleaning)


def check_kept(ds: Dataset, tag: BaseTag, element: DataElement | RawDataElement, vr: str) -> None:
    """A kept value must look like its VR; damage (a flipped tag byte, a wrong length
    swallowing the next elements) would otherwise carry identifiers under a harmless tag."""
    if vr in _FIXED_SIZES:
        if (
            isinstance(element, RawDataElement)
            and element.length > _FIXED_SIZES[vr]
            and _single_valued(int(tag))
        ):
            raise _unfit(tag, vr)
        return
    if vr not in _CHECKED_VRS:
        return
    characters = _VR_CHARACTERS.get(vr)
    for value in strings(ds, tag, element, vr):
        if _CONTROL.search(value) or (characters is not None and not characters.fullmatch(value)):
            raise _unfit(tag, vr)


def _unfit(tag: BaseTag, vr: str) -> UnreadableInstanceError:
    return UnreadableInstanceError(
        f"malformed DICOM: {keyword_for_tag(tag) or tag} holds a value that is not a valid "
        f"{vr}; the file is damaged, re-export the instance"
    )


def strings(ds: Dataset, tag: int, element: DataElement | RawDataElement, vr: str) -> list[str]:
    """The values of a text element as strings, padding stripped; raw ASCII values are read
    without decoding the element, others through pydicom with the data set's character set."""
    if isinstance(element, RawDataElement) and element.value is None and element.length:
        element = ds[tag]  # a long value, deferred: read it from the file now
    if isinstance(element, RawDataElement):
        raw = element.value
        if not raw:
            return []
        # ASCII bytes read the same in every DICOM character set, ISO 2022 escapes excepted.
        if vr in _ASCII_VRS or (raw.isascii() and b"\x1b" not in raw):
            text = raw.decode("latin-1")
            if vr in _SINGLE_TEXT_VRS:
                return [text.rstrip("\x00 ")]
            return [v.strip("\x00 ") for v in text.split("\\")]
        element = ds[tag]
    value = element.value
    if value is None or value == "":
        return []
    if isinstance(value, MultiValue | list | tuple):
        return [str(v).strip("\x00 ") for v in value]
    return [str(value).strip("\x00 ")]


def _mentions(ds: Dataset, tag: BaseTag, identifiers: Identifiers) -> bool:
    element = ds._dict[tag]
    raw = element.value if isinstance(element, RawDataElement) else None
    if isinstance(raw, bytes) and raw.isascii():
        # The cheap look, on the bytes as read; a hit is decoded and cleaned properly.
        return identifiers.mentioned_in(raw.decode("ascii"))
    return any(identifiers.mentioned_in(v) for v in strings(ds, tag, ds[tag], ""))


def _clean_text(ds: Dataset, tag: BaseTag, walk: Walk) -> bool:
    """Clean one text element of the walk's identifiers; whether anything was removed."""
    element = ds[tag]
    values = strings(ds, tag, element, element.VR)
    # A value that was all identifier gets the VR's dummy: the attribute may be type 1.
    dummy = walk.profile.dummy_values.get(element.VR, "")
    cleaned = [walk.identifiers.clean(v) or (dummy if v else "") for v in values]
    if cleaned == values:
        return False
    _put(ds, tag, element.VR, _joined(cleaned))
    walk.applied += 1
    return True


def _put(ds: Dataset, tag: BaseTag, vr: str, value: object) -> None:
    # The values put here are made to fit their VR; pydicom need not check them again.
    element = DataElement(tag, vr, value, validation_mode=config.IGNORE)
    if vr == "SQ":
        ds[tag] = element
    else:
        ds._dict[tag] = element


def _joined(values: list[str]) -> str | list[str]:
    if not values:
        return ""
    return values[0] if len(values) == 1 else values


def _kind(number: int, vr: str) -> str | None:
    kind = _KINDS.get(number)
    return kind if kind is not None else ("name" if vr == "PN" else None)


@lru_cache(maxsize=4096)
def _allowed_vrs(tag: int) -> frozenset[str]:
    expected = dictionary_vr(tag)
    return frozenset({expected, *expected.split(" or ")})


@lru_cache(maxsize=4096)
def _single_valued(tag: int) -> bool:
    try:
        return dictionary_VM(tag) == "1"
    except KeyError:
        return False


def _patient_replacement(walk: Walk, value: str) -> str:
    return walk.patient_pseudonym


def _accession_replacement(walk: Walk, value: str) -> str:
    return accession_pseudonym(walk.key, value) if value.strip() else ""


_REPLACEMENTS: dict[str, Callable[[Walk, str], str]] = {
    "patient_pseudonym": _patient_replacement,
    "accession_pseudonym": _accession_replacement,
}
if set(_REPLACEMENTS) != REPLACEMENT_GENERATORS:  # pragma: no cover - caught by any test run
    raise AssertionError("engine replacements and profile.REPLACEMENT_GENERATORS disagree")
