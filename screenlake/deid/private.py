"""Private attributes: removed, unless the Retain Safe Private allow-list names them.

A private element (gggg,bbxx) belongs to the block bb of its group, and the block's private
creator (gggg,00bb) says whose it is. The allow-list is keyed by group, creator and offset xx,
so the creator is looked up per block in the data set at hand: a block whose creator is not
on the list loses its elements even when another block of the group is allowed, two blocks
with the same creator are both that creator's, and an element whose block has no creator
(an orphan) is removed. A creator stays only while an element of its block stays.
"""

from __future__ import annotations

from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset
from pydicom.tag import BaseTag, Tag

_FIRST_BLOCK, _LAST_BLOCK = 0x10, 0xFF
_FIRST_PRIVATE_ELEMENT = 0x1000


def clean_private(
    ds: Dataset, tags: list[BaseTag], allowed: dict[tuple[int, str, int], str]
) -> tuple[int, list[tuple[BaseTag, str]]]:
    """Remove the private elements `tags` of `ds` the allow-list does not keep.

    Returns how many elements were removed and the (tag, VR) of each element kept (creators
    excepted), for the engine to check and sweep like any kept value.
    """
    elements = ds._dict
    if not allowed:
        for tag in tags:
            del elements[tag]
        return len(tags), []
    creators = {
        (tag >> 16, tag & 0xFFFF): _creator(elements[tag])
        for tag in tags
        if _FIRST_BLOCK <= tag & 0xFFFF <= _LAST_BLOCK
    }
    kept: list[tuple[BaseTag, str]] = []
    kept_creators: set[int] = set()
    for tag in tags:
        group, element = tag >> 16, tag & 0xFFFF
        if element < _FIRST_PRIVATE_ELEMENT:
            continue  # creators are settled below; (gggg,0001-000F) are not allowed at all
        creator = creators.get((group, element >> 8))
        vr = allowed.get((group, creator, element & 0xFF)) if creator else None
        if vr is not None and _retype(ds, tag, vr):
            kept.append((tag, vr))
            kept_creators.add(Tag(group, element >> 8))
    removed = 0
    kept_tags = {tag for tag, _ in kept} | kept_creators
    for tag in tags:
        if tag not in kept_tags:
            del elements[tag]
            removed += 1
    return removed, kept


def _creator(element: DataElement | RawDataElement) -> str:
    value = element.value
    if isinstance(value, bytes):
        value = value.decode("latin-1")
    return str(value or "").strip("\x00 ")


def _retype(ds: Dataset, tag: BaseTag, vr: str) -> bool:
    """Whether the element at `tag` can stay as `vr`: it has that VR, or no VR (implicit VR
    files), or UN of defined length in a little-endian data set, whose bytes are then read as
    `vr`."""
    element = ds._dict[tag]
    if element.VR == vr or element.VR is None:
        return True
    if element.VR != "UN" or not isinstance(element, RawDataElement):
        return False
    if not element.is_little_endian or element.length == 0xFFFFFFFF:
        return False
    ds._dict[tag] = element._replace(VR=vr)
    return True
