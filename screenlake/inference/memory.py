"""Keeping freed memory in the process for the next batch, for CPU inference on glibc.

glibc hands large allocations (a batch's activations: hundreds of MB) back to the kernel as soon
as they are freed, so every batch takes its memory again as fresh pages, one page fault at a
time: measured here, about 5,000 faults an image and half the model's speed on the CPU. Raising
glibc's mmap and trim thresholds keeps those blocks in the heap for reuse. The cost is that an
inference process keeps up to about a gigabyte it no longer uses until it exits.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

# mallopt parameters (malloc.h) and values: the largest mmap threshold glibc accepts on 64-bit,
# and trim/top-pad sizes that cover a batch's activations.
_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD = -1, -2, -3
_MMAP_THRESHOLD = 32 * 1024 * 1024
_TRIM_THRESHOLD = 1024 * 1024 * 1024
_TOP_PAD = 1024 * 1024 * 1024

_applied = False


def keep_freed_memory_for_reuse() -> bool:
    """Tune glibc's allocator once per process as above; False where there is no glibc."""
    global _applied
    if _applied:
        return True
    if not sys.platform.startswith("linux"):
        return False
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    libc = ctypes.CDLL(name)
    mallopt = getattr(libc, "mallopt", None)
    if mallopt is None:  # musl and other C libraries without mallopt
        return False
    settings = (
        (_M_MMAP_THRESHOLD, _MMAP_THRESHOLD),
        (_M_TRIM_THRESHOLD, _TRIM_THRESHOLD),
        (_M_TOP_PAD, _TOP_PAD),
    )
    _applied = all(mallopt(parameter, value) == 1 for parameter, value in settings)
    return _applied
