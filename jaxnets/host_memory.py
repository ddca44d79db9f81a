"""Host memory: keep freed buffers in the process instead of returning them to the OS.

On the CPU backend, XLA allocates each execution's temporary buffer with ``malloc`` and
frees it afterwards. glibc serves blocks above its mmap threshold (at most 32 MiB by
default) with fresh ``mmap`` pages and unmaps them on ``free``, so a compiled step whose
temporaries exceed it page-faults through all of them on every call (the benchmark CNN's
step does; ``python -m experiments.benchmarks`` counts its faults per step). Raising the mmap
and trim thresholds makes glibc keep such blocks in its heap and hand the same, already
mapped pages to the next call.

Blocks larger than the heap of one of glibc's per-thread arenas (64 MiB on 64-bit Linux)
are mapped afresh whatever the threshold when a worker thread allocates them (XLA's
executions run on worker threads); the environment variable ``MALLOC_ARENA_MAX=1`` keeps
those too, at the price of one arena for every thread.

This changes the whole process's allocator, so jaxnets never does it on import: its
command-line tools and experiment scripts call ``retain_freed_memory()`` at start-up, and a
script of yours may too. The cost is that memory freed by the process stays mapped
(resident set size stays at its peak), which suits a training run.
"""
from __future__ import annotations

import ctypes
import sys

#: glibc's ``mallopt`` parameter numbers (malloc.h).
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
#: The default threshold: blocks below 1 GiB come from (and go back to) the heap.
DEFAULT_THRESHOLD_BYTES = 2**30


def retain_freed_memory(threshold_bytes: int = DEFAULT_THRESHOLD_BYTES) -> bool:
    """Make glibc keep freed blocks below ``threshold_bytes`` for reuse (mmap and trim thresholds).

    Args:
      threshold_bytes: blocks smaller than this come from the heap and freed memory
        is not returned to the OS until more than this is free at the heap's top
        (1 <= threshold_bytes <= 2**31 - 1, ``mallopt`` takes an int).

    Returns:
      True if both settings were applied; False where there is no glibc ``mallopt``
      (macOS, Windows, musl): nothing changes there.

    Raises:
      ValueError: ``threshold_bytes`` out of range.

    >>> retain_freed_memory(0)
    Traceback (most recent call last):
    ...
    ValueError: threshold_bytes: got 0; allowed: an int from 1 to 2147483647
    """
    if isinstance(threshold_bytes, bool) or not isinstance(threshold_bytes, int) \
            or not 1 <= threshold_bytes <= 2**31 - 1:
        raise ValueError(f"threshold_bytes: got {threshold_bytes!r}; allowed: an int from 1 to {2**31 - 1}")
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt  # the C library the process already uses
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return mallopt(M_MMAP_THRESHOLD, threshold_bytes) == 1 and mallopt(M_TRIM_THRESHOLD, threshold_bytes) == 1


__all__ = ["DEFAULT_THRESHOLD_BYTES", "retain_freed_memory"]
