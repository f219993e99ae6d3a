"""Structured reports and presentation states: what their items must keep to stay valid.

The table's rules clean every content item (PNAME replaced, DATE and DATETIME shifted, UIDREF
remapped, observer names and organisations replaced). Two things are structural and live here:
an item whose content the rules removed is dropped (an SR TEXT item without its Text Value, a
text object without its text, a graphic annotation left with neither), and a code item that
sits directly in a sequence the table replaces with a dummy (Person Identification Code
Sequence: its code identifies a person) gets a dummy code.
"""

from __future__ import annotations

from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset

CONTENT_SEQUENCE = 0x0040A730
_VALUE_TYPE = 0x0040A040
_TEXT_VALUE = 0x0040A160
_GRAPHIC_ANNOTATION_SEQUENCE = 0x00700001
_TEXT_OBJECT_SEQUENCE = 0x00700008
_GRAPHIC_OBJECT_SEQUENCE = 0x00700009
_UNFORMATTED_TEXT_VALUE = 0x00700006
_CODE_VALUE = 0x00080100
_CODING_SCHEME_DESIGNATOR = 0x00080102
_CODE_MEANING = 0x00080104
_CODE_DROPPED = (0x00080103, 0x00080119, 0x00080120)  # version, long and URN code values
_CODE_ANY = (_CODE_VALUE, _CODE_MEANING, 0x00080119, 0x00080120)


def keep_item(sequence_tag: int, item: Dataset) -> bool:
    """Whether a de-identified item of the sequence `sequence_tag` still has its content."""
    if sequence_tag == CONTENT_SEQUENCE:
        value_type = item.get(_VALUE_TYPE)
        return _TEXT_VALUE in item or value_type is None or str(value_type.value).strip() != "TEXT"
    if sequence_tag == _TEXT_OBJECT_SEQUENCE:
        return _UNFORMATTED_TEXT_VALUE in item
    if sequence_tag == _GRAPHIC_ANNOTATION_SEQUENCE:
        return _has_items(item, _TEXT_OBJECT_SEQUENCE) or _has_items(item, _GRAPHIC_OBJECT_SEQUENCE)
    return True


def replace_code(item: Dataset, dummy_values: dict[str, str]) -> bool:
    """Give a code item a dummy code (value, scheme and meaning); False when `item` is no
    code item."""
    if not any(tag in item for tag in _CODE_ANY):
        return False
    for tag in _CODE_DROPPED:
        if tag in item:
            del item[tag]
    for tag, vr in (
        (_CODE_VALUE, "SH"),
        (_CODING_SCHEME_DESIGNATOR, "SH"),
        (_CODE_MEANING, "LO"),
    ):
        item[tag] = DataElement(tag, vr, dummy_values[vr])
    return True


def _has_items(item: Dataset, tag: int) -> bool:
    element = item.get(tag)
    return element is not None and len(element.value or ()) > 0
