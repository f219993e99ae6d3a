"""What a PACS said about each instance we sent it: accepted or not, and a short reason.

Reasons are status codes and fixed phrases, never identifiers, so that an outcome table or a
log line can be read outside the PHI zone's tools without revealing a patient.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from pydicom.dataset import Dataset

# C-STORE warnings (PS3.4 B.2.3): the PACS kept the instance, perhaps coerced.
_STORE_WARNINGS = frozenset({0x0001, 0xB000, 0xB006, 0xB007})
ACCEPTED = "accepted"
WRITTEN_TO_OUTBOX = "written to outbox"


@dataclass(frozen=True)
class StoreOutcome:
    """One sent instance: its SOPInstanceUID, whether the PACS kept it, and why (no PHI)."""

    sop_instance_uid: str
    accepted: bool
    reason: str


def stow_outcomes(response: Dataset, sent: Sequence[str]) -> list[StoreOutcome]:
    """Outcomes from a STOW-RS Store Instances Response (PS3.18 10.5.3), one per UID in `sent`,
    in that order. An instance the response does not mention counts as not accepted."""
    outcomes: dict[str, StoreOutcome] = {}
    for item in response.get("ReferencedSOPSequence", []):
        uid = str(item.get("ReferencedSOPInstanceUID", ""))
        warning = item.get("WarningReason")
        reason = ACCEPTED if warning is None else f"accepted with warning 0x{int(warning):04X}"
        outcomes[uid] = StoreOutcome(uid, True, reason)
    for item in response.get("FailedSOPSequence", []):
        uid = str(item.get("ReferencedSOPInstanceUID", ""))
        failure = item.get("FailureReason")
        reason = "refused" if failure is None else f"refused (failure reason 0x{int(failure):04X})"
        outcomes[uid] = StoreOutcome(uid, False, reason)
    return [
        outcomes.get(uid, StoreOutcome(uid, False, "not in the server's response")) for uid in sent
    ]


def c_store_outcome(sop_instance_uid: str, status: int) -> StoreOutcome:
    """The outcome of one C-STORE from its response status (PS3.4 B.2.3)."""
    if status == 0x0000:
        return StoreOutcome(sop_instance_uid, True, ACCEPTED)
    if status in _STORE_WARNINGS:
        return StoreOutcome(sop_instance_uid, True, f"accepted with warning 0x{status:04X}")
    return StoreOutcome(sop_instance_uid, False, f"refused (status 0x{status:04X})")
