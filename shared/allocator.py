"""The C allocator's tuning for a process whose work is large numpy temporaries (the scanner).

glibc returns freed memory at the top of its heap to the system once more than ``M_TRIM_THRESHOLD``
is free there (about 2 MB after its own adjustments), and serves blocks above ``M_MMAP_THRESHOLD`` by
``mmap``. A scan allocates and frees a few dozen arrays of about 1 MB each: with the defaults, each
scan then faults thousands of fresh zeroed pages back in (measured: ~2,700 page faults per scan of
478 symbols, about a third of its CPU). ``keep_freed_memory`` raises both thresholds so the freed
pages are reused. It changes no value computed, only where the memory comes from; the process keeps
up to ``trim_bytes`` of freed memory mapped.
"""

from __future__ import annotations

import ctypes
import logging

log = logging.getLogger(__name__)

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_MAX = 32 << 20  # glibc's upper bound on 64-bit systems


def keep_freed_memory(trim_bytes: int = 256 << 20, mmap_bytes: int = MMAP_THRESHOLD_MAX) -> bool:
    """Ask glibc's ``mallopt`` to keep up to ``trim_bytes`` of freed heap and to serve blocks below
    ``mmap_bytes`` from the heap. False (nothing changed) where the C library has no ``mallopt``."""
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        log.info("allocator: no mallopt in this C library; defaults kept")
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, min(mmap_bytes, MMAP_THRESHOLD_MAX)) and mallopt(M_TRIM_THRESHOLD, trim_bytes))
