"""glibc malloc settings for the many large, short-lived tensors of sampling and training.

PyTorch's CPU allocator does not cache: every tensor is a ``malloc`` and a ``free``.  By default
glibc (mallopt(3))

* serves blocks above ``M_MMAP_THRESHOLD`` (128 KiB, raised dynamically as blocks are freed) with
  fresh ``mmap`` pages, and
* gives the free top of the heap back to the kernel once it exceeds ``M_TRIM_THRESHOLD``,

so the next tensor of the same size faults its pages in again.  A 256² image is 0.25–0.5 MiB and
a network activation several MiB, so a sampler that runs the operator and the network thousands
of times spends much of its time in the kernel (system time and minor page faults, measured side
by side by ``benchmarks/allocator.py``).

:func:`retain_freed_memory` keeps freed memory in the process instead: blocks up to 1 GiB come
from the heap (a 15-coil batch of 8 images at 320² is a 98 MB tensor; glibc versions that refuse
so large a threshold get 32 MiB, mallopt(3)'s documented ceiling on 64-bit), and the heap is
trimmed only beyond 1 GiB of free memory, which the process keeps for its next tensors.  Other C
libraries are left alone, and ``SCORERECON_MALLOC=default`` leaves glibc's defaults in place.
"""

from __future__ import annotations

import ctypes
import os
import sys

M_TRIM_THRESHOLD = -1
M_TOP_PAD = -2
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLDS = (1 << 30, 32 << 20)  # the first one glibc accepts
SETTINGS = ((M_TRIM_THRESHOLD, 1 << 30), (M_TOP_PAD, 64 << 20))

_applied: bool | None = None


def retain_freed_memory() -> bool:
    """Apply :data:`MMAP_THRESHOLDS` and :data:`SETTINGS` with glibc's ``mallopt`` once per
    process; True when in effect."""
    global _applied
    if _applied is None:
        mallopt = glibc_mallopt()
        _applied = mallopt is not None and os.environ.get("SCORERECON_MALLOC") != "default" \
            and any(mallopt(M_MMAP_THRESHOLD, value) == 1 for value in MMAP_THRESHOLDS) \
            and all(mallopt(param, value) == 1 for param, value in SETTINGS)
    return _applied


def glibc_mallopt():
    """glibc's ``mallopt`` through ctypes, or None elsewhere (musl's does nothing; macOS has none)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None)
        libc.gnu_get_libc_version
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return None
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    return mallopt
