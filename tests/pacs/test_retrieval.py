"""A DIMSE worker's bookkeeping (`screenlake.pacs.dimse`): a series per request, halves after a
failed batch, give-up with the PACS's status, instances without a UID by series."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydicom.dataset import Dataset

from screenlake.errors import ConfigurationError, PacsRefusedError
from screenlake.ingest import SourceFile
from screenlake.pacs.dimse import (
    Received,
    Request,
    Retrieval,
    check_ae_title,
    find_outcome,
    rejection_text,
    retrieve_identifier,
)
from screenlake.pacs.retry import TransientError


def _retrieval(tmp_path: Path, sops: list[str | None], series: str = "se") -> Retrieval:
    unnamed = 0
    items = []
    for n, sop in enumerate(sops):
        if sop is None:
            unnamed += 1
            ref = f"st/{series}/?{unnamed}"
        else:
            ref = f"st/{series}/{sop}"
        items.append((SourceFile(ref, "st", sop), tmp_path / f"L{n}.dcm"))
    return Retrieval(items)


def _deliver(retrieval: Retrieval, sop: str | None, named: bool = True) -> int | None:
    return retrieval.store(sop, lambda: named, lambda: b"DICM" + (sop or "?").encode())


def test_a_series_goes_in_one_request_and_what_arrives_is_reported(tmp_path: Path) -> None:
    retrieval = _retrieval(tmp_path, ["1", "2", "3"])
    reported: list[Received] = []
    retrieval.report = reported.append
    request = next(retrieval.requests())
    assert request == Request("st", "se", ("1", "2", "3"))
    identifier = retrieve_identifier(request)
    assert identifier.QueryRetrieveLevel == "IMAGE" and list(identifier.SOPInstanceUID) == [
        "1",
        "2",
        "3",
    ]
    retrieval.expect(request)
    for sop in ("1", "2", "3"):
        assert _deliver(retrieval, sop) == 0x0000
    assert _deliver(retrieval, "1") is None  # twice: not taken again
    assert _deliver(retrieval, "9") is None  # not ours
    retrieval.settle(request, 0x0000)
    assert not retrieval.pending() and retrieval.done_count() == 3
    assert [r.path.read_bytes() for r in reported] == [b"DICM1", b"DICM2", b"DICM3"]
    assert list(retrieval.requests()) == []


def test_after_a_failed_batch_the_rest_is_asked_for_in_halves(tmp_path: Path) -> None:
    retrieval = _retrieval(tmp_path, [str(i) for i in range(8)])
    sent = []
    for request in retrieval.requests():
        sent.append(request.sop_uids)
        retrieval.expect(request)
        for sop in request.sop_uids:
            if sop == "5":
                break  # the PACS stops at the bad instance, like Orthanc
            _deliver(retrieval, sop)
        retrieval.settle(request, 0xC000)
    assert sent == [
        tuple("01234567"),
        tuple("567"),  # what did not arrive, in batches of at most half of 8
        ("5",),  # then at most half of 3: one at a time
        ("6",),
        ("7",),
    ]
    assert retrieval.done_count() == 7 and not retrieval.pending()
    assert retrieval.missing == ["not sent by the PACS (final status 0xC000)"]


def test_instances_without_a_uid_come_with_their_series(tmp_path: Path) -> None:
    retrieval = _retrieval(tmp_path, ["1", None])
    first = next(retrieval.requests())
    retrieval.expect(first)
    _deliver(retrieval, "1")
    retrieval.settle(first, 0x0000)
    series = next(retrieval.requests())
    assert series.whole_series and retrieve_identifier(series).QueryRetrieveLevel == "SERIES"
    retrieval.expect(series)
    assert _deliver(retrieval, "1") == 0x0000  # a named one of the series: answered, not kept
    assert _deliver(retrieval, "", named=False) == 0x0000
    retrieval.settle(series, 0x0000)
    assert retrieval.done_count() == 2 and retrieval.missing == []
    assert (tmp_path / "L1.dcm").read_bytes() == b"DICM?"


def test_an_interrupted_request_is_asked_for_again(tmp_path: Path) -> None:
    retrieval = _retrieval(tmp_path, ["1", "2"])
    request = next(retrieval.requests())
    retrieval.expect(request)
    _deliver(retrieval, "1")
    # The association dropped: no settle. The next association asks for what is left.
    assert next(retrieval.requests()) == Request("st", "se", ("2",))


def test_c_find_outcomes() -> None:
    def status(code: int) -> Dataset:
        ds = Dataset()
        ds.Status = code
        return ds

    assert find_outcome(status(0xFF00), "e") == "pending"
    assert find_outcome(status(0x0000), "e") == "done"
    assert find_outcome(Dataset(), "e") == "ended"
    with pytest.raises(PacsRefusedError, match="0xA900"):
        find_outcome(status(0xA900), "pacs:104")
    with pytest.raises(TransientError, match="0xC001"):
        find_outcome(status(0xC001), "pacs:104")


def test_ae_titles_and_rejections_in_words() -> None:
    assert check_ae_title("SCREENLAKE", "SCREENLAKE_AET") == "SCREENLAKE"
    for bad in ("", "   ", "A" * 17, "A\\B", "AÉ"):
        with pytest.raises(ConfigurationError, match="SCREENLAKE_AET"):
            check_ae_title(bad, "SCREENLAKE_AET")
    assert rejection_text(1, 7) == "called AE title not recognised"
    assert rejection_text(1, 3) == "calling AE title not recognised"
    assert rejection_text(9, 9) == "source 9, reason 9"
