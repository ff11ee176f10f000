"""Allocator tuning for large torch CPU tensors.

glibc serves allocations above ``M_MMAP_THRESHOLD`` (128 KiB, adaptive up to 32 MiB) with fresh
``mmap`` pages and returns freed heap tops above ``M_TRIM_THRESHOLD`` to the OS; the projector's
10-30 MB temporaries then page-fault on every use (system time above user time). Raising both keeps
them in the heap. ``MALLOC_MMAP_THRESHOLD_`` / ``MALLOC_TRIM_THRESHOLD_`` in the environment do the
same for a new process; :func:`tune_allocator` does it for the running one (bench/simulate.py measures it).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_done = False


def tune_allocator(mmap_threshold: int = 32 * 1024 * 1024, trim_threshold: int = 1024 * 1024 * 1024) -> bool:
    """Raise glibc's mmap / trim thresholds for this process (no-op elsewhere). True when applied."""
    global _done
    if _done or not sys.platform.startswith("linux"):
        return _done
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        ok = libc.mallopt(_M_MMAP_THRESHOLD, int(mmap_threshold)) == 1
        ok = libc.mallopt(_M_TRIM_THRESHOLD, int(trim_threshold)) == 1 and ok
    except (OSError, AttributeError):
        return False
    _done = ok
    return ok
