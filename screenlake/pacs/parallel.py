"""A few workers, each holding one connection or association, sharing a day's retrievals.

Workers report each file they finish; the calling thread hands the reports on, so whatever
records progress (the landing journal) runs in one thread only. The first worker that fails
stops the others at their next file, and its error is raised once every worker has returned,
after the files they did finish have been reported.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")
C = TypeVar("C")
R = TypeVar("R")
W = TypeVar("W")

_POLL_S = 0.05


def split_evenly(groups: Sequence[Sequence[T]], parts: int) -> list[list[T]]:
    """`groups` (a series' instances, say) spread over at most `parts` lists without splitting
    a group, largest group first onto the lightest list; empty lists are dropped."""
    if parts < 1:
        raise ValueError(f"need at least one worker; got {parts}")
    buckets: list[list[T]] = [[] for _ in range(parts)]
    for group in sorted(groups, key=len, reverse=True):
        min(buckets, key=len).extend(group)
    return [b for b in buckets if b]


def run_workers(
    chunks: Sequence[C],
    work: Callable[[C, Callable[[R], None], threading.Event], W],
    on_result: Callable[[R], None],
) -> list[W]:
    """Run `work(chunk, report, stop)` for every chunk, one thread each, and return what each
    returned, in chunk order.

    `report(result)` may be called from any worker; `on_result` sees every result in the calling
    thread. `stop` is set when a worker or `on_result` fails; workers should check it between
    files. The first failure is raised after all workers have finished.
    """
    if not chunks:
        return []
    reports: queue.Queue[R] = queue.Queue()
    stop = threading.Event()

    def drain(block: bool) -> None:
        while True:
            try:
                result = reports.get(timeout=_POLL_S) if block else reports.get_nowait()
            except queue.Empty:
                return
            block = False
            on_result(result)

    with ThreadPoolExecutor(max_workers=len(chunks), thread_name_prefix="pacs") as pool:
        futures: list[Future[W]] = [pool.submit(work, c, reports.put, stop) for c in chunks]
        handed_on = False
        try:
            while not all(f.done() for f in futures):
                drain(block=True)
                if any(f.done() and f.exception() is not None for f in futures):
                    stop.set()
            drain(block=False)
            handed_on = True
        finally:
            if not handed_on:
                stop.set()  # `on_result` failed: the workers stop, the pool waits for them
    failures = [e for e in (f.exception() for f in futures) if e is not None]
    if failures:
        raise failures[0]
    return [f.result() for f in futures]
