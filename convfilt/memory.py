"""Keep large freed blocks in the process instead of handing them back to the system.

glibc's malloc serves a block larger than its mmap threshold (128 KiB at start, raised
dynamically up to 32 MiB as such blocks are freed) with a fresh ``mmap`` and unmaps it on
``free``, and returns free memory at the top of the heap once it exceeds the trim threshold.
Every transform, product and score map here is such a block, so each call pays a page
fault, and the zeroing of a page, for every 4 KiB it touches (what that costs mid-size
transforms: docs/performance.md, §5).

``retain_freed_blocks`` fixes both thresholds (``mallopt``): blocks up to 32 MiB come from
the heap and are reused, and up to 256 MiB of free heap is kept. The cost is memory that the
process keeps after a large computation (its peak resident size stays). It changes the whole
process, so the library never calls it by itself: the command line does, at its entry point
(``cli.main``), and a program using the library opts in with one call to
``convfilt.retain_freed_blocks()``. ``CONVFILT_MALLOC=system`` (in the environment) leaves the
allocator as it is. It does nothing where the C library has no glibc ``mallopt``.
"""

from __future__ import annotations

import os
import sys

MMAP_THRESHOLD = 32 * 2**20  # glibc's largest allowed value on 64-bit systems
TRIM_THRESHOLD = 256 * 2**20
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters (malloc.h)

_applied: list[bool] = []


def retain_freed_blocks() -> bool:
    """Set glibc's mmap and trim thresholds (once per process); True if they were set.

    Returns
    -------
    bool
        True if glibc took both thresholds; False with ``CONVFILT_MALLOC=system``, on other
        C libraries, or if glibc refused. Later calls return the first call's answer.

    Notes
    -----
    Process-wide: it changes the allocator for every library in the process, which is why
    convfilt's library never calls it by itself (the command line does, at its start).

    Examples
    --------
    >>> import convfilt
    >>> convfilt.retain_freed_blocks() in (True, False)
    True
    """
    if _applied:
        return _applied[0]
    _applied.append(False)
    if os.environ.get("CONVFILT_MALLOC", "").lower() == "system":
        return False
    if not sys.platform.startswith("linux"):  # glibc's thresholds; others have their own
        return False
    try:
        import ctypes

        libc = ctypes.CDLL(None)
        if not hasattr(libc, "gnu_get_libc_version"):  # musl, macOS, ...: other allocators
            return False
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # pragma: no cover - no C library to ask
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    applied = bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(
        mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD)
    )
    _applied[0] = applied
    return applied
