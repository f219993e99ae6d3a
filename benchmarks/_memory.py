"""Memory of a benchmark's processes: the peak RSS of one process, and a sampler of the memory
of this process and every descendant, for the peak of a whole tree or of one step's subtree."""

from __future__ import annotations

import resource
import sys
import threading
import time
from collections import defaultdict
from pathlib import Path
from typing import Self

import psutil


def vm_hwm(pid: int | str = "self") -> int:
    """A process's peak RSS in bytes from /proc (VmHWM); 0 when it has ended or there is none.

    Linux carries `ru_maxrss` across exec, so a child started from a big parent would report
    the parent's peak; VmHWM belongs to the new program alone.
    """
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass  # the process ended between the listing and the read, or there is no /proc
    return 0


def proportional_set_size(pid: int) -> int:
    """A process's PSS in bytes (its private pages plus its share of each page it shares), from
    /proc/PID/smaps_rollup (Linux 4.14 and later); 0 when it has ended or there is none."""
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass  # the process ended between the listing and the read, or there is no smaps_rollup
    return 0


def own_peak_rss() -> int:
    """This process's peak RSS in bytes (VmHWM, else `ru_maxrss` where there is no /proc)."""
    peak = vm_hwm()
    if peak:
        return peak
    scale = 1 if sys.platform == "darwin" else 1024  # bytes on macOS, KiB elsewhere
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale


def reset_own_peak() -> None:
    """Start this process's VmHWM afresh (Linux 4.0 and later), so a later peak is its own."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


class TreeSampler:
    """Samples the memory and parent of this process and every descendant every `interval`
    seconds, and keeps each descendant's VmHWM.

    Memory is RSS, or with `proportional` PSS for each process over `PSS_ABOVE` of RSS. RSS
    summed over a tree counts a page that forked processes share once per process: a step with
    two DataLoader workers forked after torch loaded would count torch three times. PSS counts
    each page once in all; reading it costs about 1.5 ms a large process, hence the longer
    interval it wants and the small processes (a PostgreSQL backend) left at their RSS.
    """

    PSS_ABOVE = 64 * 1024 * 1024

    def __init__(self, interval: float = 0.05, proportional: bool = False) -> None:
        self.samples: list[tuple[float, dict[int, tuple[int, int]]]] = []
        self.hwm: dict[int, int] = {}
        self._interval = interval
        self._proportional = proportional
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        me = psutil.Process()
        while not self._stop.is_set():
            now, sample = time.time(), {}
            for process in [me, *me.children(recursive=True)]:
                try:
                    memory = process.memory_info().rss
                    parent = process.ppid()
                except psutil.Error:
                    continue  # a process that exited between the listing and the read
                if self._proportional and memory > self.PSS_ABOVE:
                    memory = proportional_set_size(process.pid) or memory
                sample[process.pid] = (parent, memory)
                if process.pid != me.pid:
                    self.hwm[process.pid] = max(self.hwm.get(process.pid, 0), vm_hwm(process.pid))
            self.samples.append((now, sample))
            self._stop.wait(self._interval)

    def tree_peak(self, root: int, start: float = 0.0, end: float = float("inf")) -> int:
        """Largest sampled memory summed over `root` and its descendants between start and end."""
        peak = 0
        for when, sample in self.samples:
            # One interval of slack either side, so a step shorter than it still gets a sample.
            if not start - self._interval <= when <= end + self._interval:
                continue
            children: dict[int, list[int]] = defaultdict(list)
            for pid, (ppid, _) in sample.items():
                children[ppid].append(pid)
            total, stack = 0, [root]
            while stack:
                pid = stack.pop()
                total += sample.get(pid, (0, 0))[1]
                stack.extend(children.get(pid, ()))
            peak = max(peak, total)
        return peak
