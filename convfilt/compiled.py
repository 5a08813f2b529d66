"""The compiled banded road: small kernels in one pass over the image, on every core (numba).

numba and the kernels (``compiled_kernels``) are imported only when the planner has picked
the ``compiled`` strategy: importing them and loading their cached machine code costs about
0.7 s, compiling it (a cold cache) several seconds, so the command line's help and small images
never pay it. This module is light (no numba): it tells the planner what is paid already
(``imported``, ``loaded``, ``code_cached``) and runs the kernels (``correlate``).

How it runs: the output is cut into bands of rows; each core takes whole bands. A band's
extended input rows (the boundary mode applied through the index tables ``rows`` and
``cols``, as in ``engine.Source``, and integer pixels converted to the working float) are
written once into a buffer of about ``BAND_BYTES``, which stays in the core's L2 cache; no
padded copy of the whole image is made. Each output row is then a sum over the kernel's taps
of shifted slices of that buffer, added four taps at a time (one store per four multiply-
adds), in loops that LLVM turns into SIMD instructions. ``(H, W, C)`` images are filtered
interleaved: a row of C channels is one flat line and a tap shifts it by C. Integer outputs
are rounded half-to-even and clipped in the same pass, so an 8-bit image never exists as a
full-size float copy.

``fastmath`` stays off: the sums are the plain IEEE sums of the taps (in groups of four), so
results agree with the other roads within the tolerance the tests hold every road to.

numba caches the machine code beside the kernels (``__pycache__``); where that folder is
not writable (an installed package owned by root), ``NUMBA_CACHE_DIR`` is set, before numba
is imported, to convfilt's own cache folder (``$CONVFILT_CACHE_DIR``, else
``$XDG_CACHE_HOME/convfilt`` or ``~/.cache/convfilt``), under ``numba/``.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
from numpy.typing import NDArray

from . import calibration, cost, names


def cache_folder() -> Path | None:
    """Where numba should cache convfilt's compiled code: None when beside this module
    (its ``__pycache__`` can be written), else convfilt's cache folder under ``numba``."""
    here = Path(__file__).parent
    pycache = here / "__pycache__"
    target = pycache if pycache.is_dir() else here
    if os.access(target, os.W_OK):
        return None
    return calibration.constants_path().parent / "numba"


BAND_BYTES = 2**18  # a band's extended rows: a quarter of a core's L2, room for the rest
# Multiply-adds below which a call runs on the calling thread alone: waking numba's workers
# costs more than they save there, and on a loaded machine a descheduled worker held a
# 512² call for 20-100 ms (benchmarks/planner.py, docs/performance.md).
SERIAL_WORK = 2**22
# Fewest output rows a band takes, whatever its width: a row over BAND_BYTES made bands of one
# row, each filling kh - 1 halo rows for it (a 12288-wide RGB blur, sigma 2: 28% slower than
# bands of 8-16 rows; docs/performance.md, section 12).
LEAST_BAND_ROWS = 8


# (image dtype, output dtype, form) specialisations this process has run: loaded
_loaded: set[tuple[str, str, str]] = set()


def imported() -> bool:
    """Whether numba and the kernels are imported in this process (their import is paid)."""
    return "convfilt.compiled_kernels" in sys.modules


def loaded(source: str, output: str, form: str) -> bool:
    """Whether this process has run the ``form`` kernel ("direct", "separable") on
    ``source`` images into ``output`` arrays (its machine code is in memory)."""
    return (source, output, form) in _loaded


def code_cached(form: str) -> bool:
    """Whether numba's cache holds machine code for the ``form`` kernel (its index file is
    there), so that a first call loads it rather than compiles it. Not per dtype: a
    specialisation not yet compiled still compiles (the estimate is then too low).

    Looked up once per process and form (a folder listing cost more than a small image's
    whole filter): once this process has run the form, ``loaded`` answers instead.
    """
    if form not in _code_cached:
        _code_cached[form] = _look_for_code(form)
    return _code_cached[form]


_code_cached: dict[str, bool] = {}


def _look_for_code(form: str) -> bool:
    """Whether an index file of the ``form`` kernel is in numba's cache folder."""
    pattern = f"compiled_kernels.{form}-*.nbi"
    folder = cache_folder()
    try:
        if folder is None:
            return any((Path(__file__).parent / "__pycache__").glob(pattern))
        return folder.is_dir() and any(folder.rglob(pattern))
    except OSError:  # unreadable: numba will not load from it either
        return False


def band_rows(
    extended_width: int, itemsize: int, height: int, kh: int, cores: int | None = None
) -> int:
    """Output rows per band: :func:`_rows_wanted`, but at most a quarter of a core's share of
    ``height`` where the image has the rows (so that a core slowed by another process holds
    up less of the call); ``cores``: the threads that share the bands (default
    :func:`threads`)."""
    per_core = -(-height // (4 * (threads() if cores is None else cores)))
    return max(1, min(_rows_wanted(extended_width, itemsize, kh), per_core))


def _rows_wanted(extended_width: int, itemsize: int, kh: int) -> int:
    """``BAND_BYTES`` of extended rows, but at least ``kh - 1`` and :data:`LEAST_BAND_ROWS`
    (a band fills its ``kh - 1`` halo rows too, so the fill is at most doubled)."""
    return max(BAND_BYTES // max(1, extended_width * itemsize), kh - 1, LEAST_BAND_ROWS)


def scratch_bytes(width: int, channels: int, itemsize: int, kh: int) -> int:
    """The most the kernels' band buffers hold at once for an image ``width`` wide with a
    ``kh``-row kernel (as wide): each thread's band of extended rows at :func:`_rows_wanted`
    (an upper bound: :func:`band_rows` may take fewer)."""
    extended = (width + kh - 1) * channels
    rows = _rows_wanted(extended, itemsize, kh)
    return threads() * (rows + kh - 1) * extended * itemsize


def _kernels() -> ModuleType:
    """The numba kernels, imported on first use, numba's cache folder set before. Kept once
    the import has finished (another thread may see the module half-initialised before)."""
    if _module:
        return _module[0]
    folder = cache_folder()
    if folder is not None and "NUMBA_CACHE_DIR" not in os.environ:
        os.environ["NUMBA_CACHE_DIR"] = str(folder)
    from . import compiled_kernels

    _module[:] = [compiled_kernels]
    return compiled_kernels


_module: list[ModuleType] = []


def threads() -> int:
    """The threads the kernels run on: numba's setting once imported, else the cores."""
    if imported():
        import numba

        return int(numba.get_num_threads())
    return len(os.sched_getaffinity(0))


def correlate(
    src: NDArray[np.generic],
    rows: NDArray[np.intp],
    cols: NDArray[np.intp],
    left: int,
    cval: float,
    kernel: NDArray[np.floating] | tuple[NDArray[np.floating], NDArray[np.floating]],
    out: NDArray[np.generic],
) -> None:
    """Correlate the (H, W, C) image ``src`` seen through ``rows``/``cols`` into ``out``.

    ``rows``/``cols`` give the input index of each extended row/column (-1: ``cval``), with
    ``cols[left + x] == x`` for the image's own columns (``engine.Source``'s convention).
    ``kernel`` is a 2-D kernel or a (column, row) pair of 1-D factors, in the working float
    dtype. ``out`` (C-contiguous, (len(rows) - kh + 1, len(cols) - kw + 1, C)) is of that
    dtype, or of an integer dtype: then each result is rounded half-to-even and clipped to
    the dtype's range in the same pass.
    """
    jit = _kernels()
    work = kernel[0].dtype if isinstance(kernel, tuple) else kernel.dtype
    kh, kw = (len(kernel[0]), len(kernel[1])) if isinstance(kernel, tuple) else kernel.shape
    channels = src.shape[2]
    expected = (len(rows) - kh + 1, len(cols) - kw + 1, channels)
    if out.shape != expected or not (out.flags.c_contiguous and src.flags.c_contiguous):
        # the kernels do not check their bounds: a wrong shape would read past the buffers
        raise ValueError(f"compiled.correlate: out must be C-contiguous {expected}")
    rounding, low, high = None, 0.0, 0.0
    if out.dtype.kind in "iu":
        info = np.iinfo(cost.dtype_name(out.dtype))
        rounding, low, high = True, float(info.min), float(info.max)
    rows64, cols64 = rows.astype(np.int64, copy=False), cols.astype(np.int64, copy=False)
    if isinstance(kernel, tuple):
        form, work_done = names.SEPARABLE, out.size * (kh + kw)
        weights: tuple[NDArray[Any], ...] = tuple(np.ascontiguousarray(f) for f in kernel)
    else:
        form, work_done = names.DIRECT, out.size * kh * kw
        weights = (*_tap_offsets(kh, kw, channels), np.ascontiguousarray(kernel).reshape(-1))
    parallel = work_done > SERIAL_WORK
    run = _RUNNERS[form, parallel](jit)
    band = band_rows(len(cols) * channels, work.itemsize, out.shape[0], kh, None if parallel else 1)
    run(src, rows64, cols64, left, cval, weights, out, rounding, band, low, high)
    _loaded.add((cost.dtype_name(src.dtype), cost.dtype_name(out.dtype), form))


# (form, parallel) -> the kernel that runs it, from the imported kernels module
_RUNNERS: dict[tuple[str, bool], Callable[[ModuleType], Callable[..., None]]] = {
    (names.SEPARABLE, True): lambda jit: jit.separable,
    (names.SEPARABLE, False): lambda jit: jit.separable_serial,
    (names.DIRECT, True): lambda jit: jit.direct,
    (names.DIRECT, False): lambda jit: jit.direct_serial,
}


@lru_cache(maxsize=64)
def _tap_offsets(kh: int, kw: int, channels: int) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """Each tap's row and (interleaved) column offset, row-major, for the direct kernel;
    remembered (building them cost a small image's call more than its taps). Left writable:
    numba compiles read-only arrays as a type of their own, and the kernels only read them."""
    rows = np.repeat(np.arange(kh, dtype=np.int64), kw)
    cols = np.tile(np.arange(kw, dtype=np.int64) * channels, kh)
    return rows, cols


def window_energy_band(
    plane: NDArray[np.floating],
    centre: float,
    window: tuple[int, int],
    own_mean: bool,
    flat: float,
    start: int,
    out: NDArray[np.float64],
) -> None:
    """Rows ``start : start + window[0]`` of matching's window energies into ``out`` (see
    ``compiled_kernels.energy_band``; ``start`` a multiple of ``window[0]``). Releases the
    GIL, so several threads may fill bands of one ``out`` side by side."""
    jit = _kernels()
    height, width = window
    expected = (plane.shape[0] - height + 1, plane.shape[1] - width + 1)
    aligned = start % height == 0 and 0 <= start < expected[0]
    if (
        out.shape != expected
        or not aligned
        or not (out.flags.c_contiguous and plane.flags.c_contiguous)
    ):
        # the kernel does not check its bounds: a wrong shape or band would write past them
        raise ValueError(
            f"compiled.window_energy_band: out must be C-contiguous {expected}, start a "
            f"multiple of {height} within it, the plane C-contiguous"
        )
    jit.energy_band(plane, float(centre), height, width, own_mean, flat, start, out)
    _loaded.add((cost.dtype_name(plane.dtype), "float64", ENERGY))


ENERGY = "energy_band"  # the form name of matching's window energies (``loaded``, ``code_cached``)


def ncc_band(
    cross: NDArray[np.floating],
    energy: NDArray[np.floating],
    root: float,
    floor: float,
    out: NDArray[np.float64],
) -> None:
    """Matching's NCC scores of one band into ``out`` (see ``compiled_kernels.ncc_band``):
    ``cross``, ``energy`` and ``out`` of one shape, ``out`` C-contiguous. Releases the GIL, so
    threads score bands side by side."""
    jit = _kernels()
    if not (cross.shape == energy.shape == out.shape and out.flags.c_contiguous):
        # the kernel does not check its bounds: a shorter input would be read past its end
        raise ValueError(
            f"compiled.ncc_band: cross {cross.shape}, energy {energy.shape} and out "
            f"{out.shape} must have one shape, out C-contiguous"
        )
    jit.ncc_band(cross.ravel(), energy.ravel(), float(root), float(floor), out.reshape(-1))
    _loaded.add((cost.dtype_name(cross.dtype), "float64", SCORES))


SCORES = "ncc_band"  # the form name of matching's NCC scores (``loaded``, ``code_cached``)
