"""Store outcomes from STOW-RS responses and C-STORE statuses: accepted or not, why, no PHI."""

from __future__ import annotations

from pydicom.dataset import Dataset

from screenlake.pacs.store import ACCEPTED, StoreOutcome, c_store_outcome, stow_outcomes


def _item(uid: str, **values: int) -> Dataset:
    item = Dataset()
    item.ReferencedSOPInstanceUID = uid
    for keyword, value in values.items():
        setattr(item, keyword, value)
    return item


def test_stow_response_gives_one_outcome_per_sent_instance_in_order() -> None:
    response = Dataset()
    response.ReferencedSOPSequence = [_item("2.25.1"), _item("2.25.2", WarningReason=0xB000)]
    response.FailedSOPSequence = [_item("2.25.3", FailureReason=0xA700)]
    outcomes = stow_outcomes(response, ["2.25.3", "2.25.1", "2.25.2", "2.25.4"])
    assert outcomes == [
        StoreOutcome("2.25.3", False, "refused (failure reason 0xA700)"),
        StoreOutcome("2.25.1", True, ACCEPTED),
        StoreOutcome("2.25.2", True, "accepted with warning 0xB000"),
        StoreOutcome("2.25.4", False, "not in the server's response"),
    ]


def test_c_store_statuses_sort_into_accepted_warned_and_refused() -> None:
    assert c_store_outcome("2.25.1", 0x0000) == StoreOutcome("2.25.1", True, ACCEPTED)
    assert c_store_outcome("2.25.1", 0xB007).accepted
    refused = c_store_outcome("2.25.1", 0xA700)
    assert not refused.accepted and refused.reason == "refused (status 0xA700)"
