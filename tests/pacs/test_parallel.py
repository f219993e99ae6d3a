"""Workers that share a day's retrievals: results handed on in the calling thread, the first
failure stops the rest and is raised after what finished was handed on."""

from __future__ import annotations

import threading

import pytest

from screenlake.pacs.parallel import run_workers, split_evenly


def test_groups_are_spread_whole_over_the_workers() -> None:
    groups = [[1] * 5, [2] * 3, [3] * 3, [4] * 1]
    chunks = split_evenly(groups, 2)
    assert sorted(len(c) for c in chunks) == [6, 6]
    assert all(sum(value in c for c in chunks) == 1 for value in (1, 2, 3, 4))  # never split
    assert sorted(x for c in chunks for x in c) == sorted(x for g in groups for x in g)
    assert split_evenly([[1]], 4) == [[1]]
    with pytest.raises(ValueError, match="at least one worker"):
        split_evenly(groups, 0)


def test_results_reach_the_calling_thread() -> None:
    caller = threading.get_ident()
    seen: list[tuple[int, int]] = []

    def work(chunk: list[int], report, stop: threading.Event) -> int:  # type: ignore[no-untyped-def]
        for item in chunk:
            report(item)
        return len(chunk)

    def on_result(item: int) -> None:
        seen.append((item, threading.get_ident()))

    assert run_workers([[1, 2], [3], [4, 5, 6]], work, on_result) == [2, 1, 3]
    assert sorted(i for i, _ in seen) == [1, 2, 3, 4, 5, 6]
    assert {t for _, t in seen} == {caller}


def test_the_first_failure_stops_the_others_and_is_raised_after_their_results() -> None:
    seen: list[str] = []
    failed = threading.Event()

    def work(chunk: str, report, stop: threading.Event) -> None:  # type: ignore[no-untyped-def]
        if chunk == "bad":
            failed.set()
            raise RuntimeError("PACS down")
        failed.wait(5)
        report("finished before stopping")
        assert stop.wait(5)  # the failure reaches the others

    with pytest.raises(RuntimeError, match="PACS down"):
        run_workers(["bad", "good"], work, seen.append)
    assert seen == ["finished before stopping"]


def test_a_failing_handler_stops_the_workers() -> None:
    stopped = threading.Event()

    def work(chunk: int, report, stop: threading.Event) -> None:  # type: ignore[no-untyped-def]
        report(chunk)
        if stop.wait(5):
            stopped.set()

    def on_result(item: int) -> None:
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        run_workers([1], work, on_result)
    assert stopped.is_set()
