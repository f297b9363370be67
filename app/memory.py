"""The viewer process's heap: large arrays go back to the system when they are freed.

glibc serves a request from its heap below a threshold and maps it from the system above it. The
threshold starts at 128 kB, and each freed mapping raises it to that mapping's size (up to 32 MB). In a
viewer that opens scan after scan, volumes of 10-35 MB soon raise it, and then every slice, map and
image buffer of a few MB comes from the heap; the heap fragments and keeps them. bench_soak.py measured
that: RSS about 400 MB higher, varying by +-50 MB between visits of the same kind of scan, and 140 MB of
growth over 20 scans. With the threshold fixed at 1 MB, it sat 400 MB lower, steadily, and ran no slower.
"""

from __future__ import annotations

import ctypes
import sys

M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter (malloc.h)
MMAP_THRESHOLD_BYTES = 1 << 20  # requests from 1 MB on are mapped, and returned when freed


def steady_heap() -> bool:
    """Fix glibc's mmap threshold at 1 MB (which also stops its dynamic raising); True when it took.
    Elsewhere (macOS, Windows, another libc) there is nothing to do, and it returns False."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES) == 1
