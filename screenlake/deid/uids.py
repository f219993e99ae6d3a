"""UIDs: every instance, series, study, frame of reference and reference UID becomes keyed.

`keys.keyed_uid` maps one original UID to one 2.25 UID under the key, so a reference in one
file (ReferencedSOPInstanceUID, SourceImageSequence, ReferencedFrameOfReferenceUID) still
points at the de-identified UID of its target in another file, in this batch or a later one.
Registered DICOM UIDs (SOP classes, transfer syntaxes, well-known frames of reference, coding
schemes) identify no one and stay.
"""

from __future__ import annotations

from functools import lru_cache

from pydicom.uid import UID_dictionary

from screenlake.keys import keyed_uid


@lru_cache(maxsize=8192)
def remap_uid(key: bytes, value: str) -> str:
    """The keyed UID for `value` under `key`; empty and registered UIDs are returned as they are."""
    value = value.strip("\x00 ")
    if not value or value in UID_dictionary:
        return value
    return keyed_uid(key, value)


def remap_uids(key: bytes, values: list[str]) -> list[str]:
    """Each UID of a (multi-valued) element remapped."""
    return [remap_uid(key, v) for v in values]
