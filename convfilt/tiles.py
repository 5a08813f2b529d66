"""How a computation runs: in memory, by row bands with halos, or on Dask.

A filter (any of :mod:`convfilt.filters`, or :func:`convfilt.engine.correlate` itself) runs
on a band of an image when it is given the band's rows plus the halo its kernel reaches, and an
:class:`Band` saying which image rows those are. The halo at the image's edges
comes from the *global* boundary rule (:func:`band_rows`): the top band of a ``wrap`` image
holds the image's bottom rows, a ``reflect`` band the rows the reflection reads. The engine
then extends each band through the whole image's index map and runs the strategy it would
choose for the whole image, so:

- the banded roads (direct, separable) give the whole image's result bit for bit, provided
  bands start at multiples of :data:`ALIGN` rows (the engine's products then see the same
  operands in the same order: :func:`layout` always aligns them);
- the transform roads give it within the engine's float tolerance (a band through the FFT is
  one block of overlap-save).

:func:`run` streams bands from any row-sliceable source (a numpy array, a memory map, a
:mod:`convfilt.streams` reader) to a writer, reading the next band and writing the last one in
threads while the current one is filtered. :func:`apply` is the in-memory form (arrays in,
arrays out); :func:`on_dask` the same mechanism over a lazy dask array.

Examples
--------
>>> import numpy as np
>>> from functools import partial
>>> from convfilt import filters, tiles
>>> image = np.random.default_rng(0).random((300, 40))
>>> blur = partial(filters.gaussian_blur, sigma=2.0, mode="wrap")
>>> banded = tiles.apply(image, blur, reach=8, mode="wrap", rows=64)
>>> bool(np.array_equal(banded, blur(image)))
True
"""

from __future__ import annotations

import functools
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar, cast

import numpy as np
from numpy.typing import NDArray

from . import compiled, names
from .cost import transform_threads
from .errors import ConvfiltError, UsageError

F = TypeVar("F", bound=Callable[..., Any])
LANES = 2  # bands filtered at once (the reference machine has 2 cores)
# ... except on a road whose kernels share each band among every core themselves
ONE_LANE = frozenset({"compiled"})


def lanes_for(strategy: str) -> int:
    """Bands filtered at once on ``strategy``: one where its kernels use every core (two
    lanes of them measured slower: docs/performance.md, §8), else :data:`LANES`."""
    return 1 if strategy in ONE_LANE else LANES


ALIGN = 64  # bands start at multiples of this: the engine's largest banded step (cost.py)
MIN_ROWS = ALIGN  # the smallest band
FIXED_BYTES = 48 * 2**20  # interpreter, libraries and the engine's own buffers
# what a road keeps resident besides: numba, LLVM and the compiled road's machine code, about
# 130 MB once its kernels have run (docs/performance.md, §8)
RESIDENT_BYTES = {"compiled": 128 * 2**20}


# what a road's kernels hold besides, for (width, channels, work itemsize, kernel rows): the
# compiled road's per-thread band buffers (wide rows make them several MB)
SCRATCH_BYTES: dict[str, Callable[[int, int, int, int], int]] = {"compiled": compiled.scratch_bytes}


def fixed_bytes(strategy: str, shape: tuple[int, ...], reach: int, work_itemsize: int = 4) -> int:
    """Bytes a run of an image of ``shape`` holds whatever its bands: :data:`FIXED_BYTES`,
    the road's resident code (:data:`RESIDENT_BYTES`) and its kernels' scratch
    (:data:`SCRATCH_BYTES`, for a kernel of ``2 * reach + 1`` rows)."""
    scratch = SCRATCH_BYTES.get(strategy)
    channels = shape[2] if len(shape) == 3 else 1
    extra = scratch(shape[1], channels, work_itemsize, 2 * reach + 1) if scratch else 0
    return FIXED_BYTES + RESIDENT_BYTES.get(strategy, 0) + extra


# float copies of one band row that a filter holds at once, per road: the channel in its
# working dtype, its premultiplied and filtered copies, the engine's output plane; a
# transform holds its padded input and complex spectrum on top; the compiled road reads the
# stored pixels and rounds as it writes, so only its output plane
WORK_COPIES = {"direct": 4, "separable": 4, "compiled": 1, "overlap-add": 6, "fft": 10}
# a transform road wants bands much taller than its halo (the halo is recomputed per band)
HALO_SHARE = {"direct": 2, "separable": 2, "compiled": 2, "overlap-add": 8, "fft": 8}


# --- the global boundary rule ----------------------------------------------------------------


def _reflect(i: NDArray[np.intp], n: int) -> NDArray[np.intp]:
    j = np.mod(i, 2 * n)
    return np.where(j < n, j, 2 * n - 1 - j)


def _mirror(i: NDArray[np.intp], n: int) -> NDArray[np.intp]:
    if n == 1:
        return np.zeros_like(i)
    j = np.mod(i, 2 * n - 2)
    return np.where(j < n, j, 2 * n - 2 - j)


def _nearest(i: NDArray[np.intp], n: int) -> NDArray[np.intp]:
    return np.clip(i, 0, n - 1)


def _wrap(i: NDArray[np.intp], n: int) -> NDArray[np.intp]:
    return np.mod(i, n)


def _constant(i: NDArray[np.intp], n: int) -> NDArray[np.intp]:
    return np.where((i >= 0) & (i < n), i, -1)


# mode -> which input index each extended index reads (-1: the constant cval)
EXTENSIONS: dict[str, Callable[[NDArray[np.intp], int], NDArray[np.intp]]] = {
    "reflect": _reflect,
    "mirror": _mirror,
    "nearest": _nearest,
    "wrap": _wrap,
    "constant": _constant,
}


def extension_indices(n: int, before: int, after: int, mode: str) -> NDArray[np.intp]:
    """Input index of each of the ``before + n + after`` extended positions (-1 for cval).

    Tables up to ``REMEMBERED_TABLE`` entries are remembered (a small image's call spent
    more on building its two tables than on a 3x3 kernel's taps) and handed out as copies;
    longer ones (a tall streamed image) are built each time, so no cache holds them."""
    if n + before + after > REMEMBERED_TABLE:
        return _extension(n, before, after, mode)
    return _remembered_extension(n, before, after, mode).copy()


REMEMBERED_TABLE = 2**14  # entries: 128 KiB a table at most, 32 tables


def _extension(n: int, before: int, after: int, mode: str) -> NDArray[np.intp]:
    """``extension_indices``, built."""
    return EXTENSIONS[mode](np.arange(-before, n + after, dtype=np.intp), n)


@functools.lru_cache(maxsize=32)
def _remembered_extension(n: int, before: int, after: int, mode: str) -> NDArray[np.intp]:
    """``extension_indices``, remembered read-only (callers get copies)."""
    table = _extension(n, before, after, mode)
    table.flags.writeable = False
    return table


@dataclass(frozen=True)
class Band:
    """Output rows ``start:stop`` of an image of ``height`` rows, from an array of some of its rows.

    ``held`` is the image row of each row of the array given (increasing, no repeats): the
    band plus the halo its kernel reaches, which at the image's edges is whatever rows the
    *global* boundary rule reads (for ``wrap``, the top band holds the bottom rows). The
    engine then extends through the whole image's index map, so each output row sees exactly
    what it sees in the whole image. ``strategy`` is the road decided once for the whole
    image (the planner's choice for its shape), which the band takes where its filter's
    strategy is auto, so that no band takes another road (None: the band plans for the
    whole image's shape itself). Built by :mod:`convfilt.tiles`.
    """

    held: NDArray[np.intp]
    height: int
    start: int
    stop: int
    opaque: bool | None = None  # the whole image's alpha is fully opaque (None: not known)
    strategy: str | None = None  # the whole image's road (None: not decided)

    @property
    def rows(self) -> int:
        """Output rows of the band."""
        return self.stop - self.start

    @property
    def inner(self) -> slice:
        """Where the output rows sit in the array given."""
        first = int(np.searchsorted(self.held, self.start))
        return slice(first, first + self.rows)

    def extended(self, before: int, after: int, mode: str) -> NDArray[np.intp]:
        """The rows the band's outputs read, as indices into the array given (-1: cval)."""
        wanted = extension_indices(self.height, before, after, mode)
        wanted = wanted[self.start : self.stop + before + after]
        local = np.searchsorted(self.held, wanted)
        inside = wanted >= 0
        found = local[inside]
        if np.any(found >= len(self.held)) or np.any(self.held[found] != wanted[inside]):
            raise ValueError("the band does not hold every row its kernel reaches")
        return np.where(inside, local, -1).astype(np.intp)


class BandFilter(Protocol):
    """A filter that computes one band: ``f(pixels, band=band) -> the band's output rows``
    (without ``band``: the whole image)."""

    def __call__(self, pixels: NDArray[Any], *, band: Band | None = None) -> NDArray[Any]: ...


class RowSource(Protocol):
    """Anything with a shape and a dtype that hands out rows by slice (numpy arrays do)."""

    @property
    def shape(self) -> tuple[int, ...]: ...

    @property
    def dtype(self) -> np.dtype: ...

    def __getitem__(self, rows: slice) -> NDArray[Any]: ...


@dataclass(frozen=True)
class Layout:
    """How an image is cut: ``count`` bands of ``rows`` output rows (the last may be shorter),
    each read with ``reach`` rows of halo above and below, every one through ``strategy``
    (the whole image's road; auto: each band plans for itself)."""

    height: int
    width: int
    rows: int
    reach: int
    strategy: str

    @property
    def count(self) -> int:
        """Number of bands."""
        return -(-self.height // self.rows)

    def describe(self) -> str:
        """One line for ``explain``."""
        return (
            f"{self.count} bands of {min(self.rows, self.height)}x{self.width} "
            f"(halo {self.reach} rows) through {self.strategy}"
        )


def band_rows(height: int, start: int, stop: int, reach: int, mode: str) -> NDArray[np.intp]:
    """The image rows (increasing, no repeats) that output rows ``start:stop`` read.

    ``reach`` rows above and below, through the global boundary rule ``mode``; rows outside the
    image in ``constant`` mode are the constant, so they are not read.
    """
    wanted = extension_indices(height, reach, reach, mode)[start : stop + 2 * reach]
    return np.unique(wanted[wanted >= 0])


def bands(height: int, rows: int, reach: int, mode: str) -> Iterator[Band]:
    """The bands of ``rows`` output rows (aligned to :data:`ALIGN`) covering ``height`` rows."""
    if rows < 1 or (rows % ALIGN and rows < height):
        raise UsageError(f"rows must be a multiple of {ALIGN}, got {rows}", parameters=["rows"])
    for start in range(0, height, rows):
        stop = min(height, start + rows)
        yield Band(band_rows(height, start, stop, reach, mode), height, start, stop)


def working_set(
    shape: tuple[int, ...], dtype: np.dtype, *, strategy: str = "direct", work_itemsize: int = 4
) -> int:
    """Bytes one band row costs: the bands read ahead, filtered (:func:`lanes_for` at once)
    and being written, plus each filter's float copies."""
    width = shape[1]
    channels = shape[2] if len(shape) == 3 else 1
    stored = width * channels * np.dtype(dtype).itemsize
    work = WORK_COPIES.get(strategy, 10) * width * work_itemsize
    lanes = lanes_for(strategy)
    return (2 * lanes + 2) * stored + lanes * work


def whole_image_bytes(
    shape: tuple[int, ...],
    dtype: np.dtype,
    *,
    strategy: str = "direct",
    work_itemsize: int = 4,
    reach: int = 0,
) -> int:
    """Bytes a whole-image (in memory) run needs: input, output and one filter's copies (and
    what :func:`fixed_bytes` holds for a kernel reaching ``reach`` rows)."""
    width = shape[1]
    stored = width * (shape[2] if len(shape) == 3 else 1) * np.dtype(dtype).itemsize
    per_row = 2 * stored + WORK_COPIES.get(strategy, 10) * width * work_itemsize
    return fixed_bytes(strategy, shape, reach, work_itemsize) + shape[0] * per_row


@dataclass(frozen=True)
class _BandCost:
    """What a band of an image costs on a road (:func:`layout`): bytes per band row, the
    smallest band's rows, the bytes held whatever the bands, and the smallest budget."""

    per_row: int
    floor: int
    fixed: int
    least: int


def _band_cost(
    shape: tuple[int, ...], dtype: np.dtype, reach: int, strategy: str, work_itemsize: int
) -> _BandCost:
    per_row = working_set(shape, dtype, strategy=strategy, work_itemsize=work_itemsize)
    floor = max(MIN_ROWS, HALO_SHARE.get(strategy, 8) * reach)
    floor = -(-floor // ALIGN) * ALIGN
    fixed = fixed_bytes(strategy, shape, reach, work_itemsize)
    return _BandCost(per_row, floor, fixed, fixed + (min(floor, shape[0]) + 2 * reach) * per_row)


def least_budget(
    shape: tuple[int, ...], dtype: np.dtype, *, reach: int, strategy: str, work_itemsize: int = 4
) -> int:
    """The smallest ``budget`` :func:`layout` accepts for this image on ``strategy``."""
    return _band_cost(shape, dtype, reach, strategy, work_itemsize).least


def layout(
    shape: tuple[int, ...],
    dtype: np.dtype,
    *,
    reach: int,
    budget: int,
    strategy: str = "direct",
    work_itemsize: int = 4,
) -> Layout:
    """Cut an image into bands that fit ``budget`` bytes, aligned for bit-identical results.

    The bands are as tall as the budget allows (fewer bands, less halo recomputed), at least
    :data:`MIN_ROWS` and, for a transform road, :data:`HALO_SHARE` times the halo.

    Raises
    ------
    UsageError
        If ``budget`` cannot hold the smallest band (the message says the minimum).
    """
    height = shape[0]
    cost = _band_cost(shape, dtype, reach, strategy, work_itemsize)
    if budget < cost.least:
        raise UsageError(
            f"memory budget {format_size(budget)} is too small for one band of this image: "
            f"it needs at least {format_size(cost.least)}",
            parameters=["memory"],
        )
    fits = (budget - cost.fixed) // cost.per_row - 2 * reach
    rows = max(cost.floor, fits // ALIGN * ALIGN)
    return Layout(height, shape[1], min(rows, -(-height // ALIGN) * ALIGN), reach, strategy)


def gather(source: RowSource, held: NDArray[np.intp]) -> NDArray[Any]:
    """Rows ``held`` of ``source``, read as runs of consecutive rows (one slice each)."""
    cuts = np.flatnonzero(np.diff(held) != 1) + 1
    runs = np.split(held, cuts)
    pieces = [np.asarray(source[int(run[0]) : int(run[-1]) + 1]) for run in runs]
    return pieces[0] if len(pieces) == 1 else np.concatenate(pieces)


def run(
    source: RowSource,
    func: BandFilter,
    layout: Layout,
    mode: str,
    write: Callable[[int, NDArray[Any]], None],
    *,
    opaque: bool | None = None,
    progress: Callable[[int], None] | None = None,
    lanes: int = LANES,
) -> None:
    """Filter ``source`` band by band, handing each band's output to ``write(start, rows)``.

    Every band takes ``layout.strategy``, the road decided once for the whole image (unless
    it is auto).

    One thread reads ahead, ``lanes`` threads filter bands side by side (each with one
    BLAS thread and one transform thread, rather than BLAS's own threads, which spin on a
    busy machine: docs/performance.md), one writes, in order, so that I/O overlaps
    computation. At most ``lanes`` bands are being filtered at once (more than the cores
    only when ``func`` runs elsewhere: :func:`remote`, :func:`in_flight`). ``opaque`` (the
    whole image's alpha is fully opaque) is passed to every band, so each band takes the
    whole image's alpha path. ``progress(done)`` is called after each band. An exception
    anywhere (or Ctrl-C) stops the pipeline and is raised here, after the threads are
    finished.
    """
    from threadpoolctl import threadpool_limits

    road = None if layout.strategy == names.AUTO else layout.strategy
    todo = [
        Band(b.held, b.height, b.start, b.stop, opaque, road)
        for b in bands(layout.height, layout.rows, layout.reach, mode)
    ]
    lanes = max(1, min(lanes, len(todo)))
    with (
        ThreadPoolExecutor(1, "convfilt-read") as reader,
        ThreadPoolExecutor(lanes, "convfilt-filter") as filterer,
        ThreadPoolExecutor(1, "convfilt-write") as writer,
        threadpool_limits(1, user_api="blas"),  # bands side by side, one BLAS thread each
    ):
        try:
            _pipeline(source, func, todo, write, progress, (reader, filterer, writer), lanes)
        except BaseException:
            for pool in (reader, filterer, writer):
                pool.shutdown(cancel_futures=True)
            raise


def _filter_band(pixels: Future[NDArray[Any]], func: BandFilter, band: Band) -> NDArray[Any]:
    """One band, once read; its transforms on one thread (the other lanes have the rest)."""
    with transform_threads(1):
        return func(pixels.result(), band=band)


def _pipeline(
    source: RowSource,
    func: BandFilter,
    todo: list[Band],
    write: Callable[[int, NDArray[Any]], None],
    progress: Callable[[int], None] | None,
    pools: tuple[ThreadPoolExecutor, ThreadPoolExecutor, ThreadPoolExecutor],
    lanes: int,
) -> None:
    """Read ahead, filter ``lanes`` bands at once, write in order (see :func:`run`)."""
    reader, filterer, writer = pools
    reads = [reader.submit(gather, source, band.held) for band in todo[: lanes + 1]]
    filtering: deque[tuple[int, Future[NDArray[Any]]]] = deque()
    written: Future[None] | None = None
    done = 0

    def write_oldest() -> None:
        nonlocal written, done
        start, result = filtering.popleft()
        out = result.result()
        if written is not None:
            written.result()
        written = writer.submit(write, start, out)
        done += 1
        if progress is not None:
            progress(done)

    for index, band in enumerate(todo):
        filtering.append((band.start, filterer.submit(_filter_band, reads[index], func, band)))
        reads[index] = None  # type: ignore[call-overload]
        if index + lanes + 1 < len(todo):
            reads.append(reader.submit(gather, source, todo[index + lanes + 1].held))
        if len(filtering) == lanes:
            write_oldest()
    while filtering:
        write_oldest()
    if written is not None:
        written.result()


def apply(
    image: NDArray[Any],
    func: BandFilter,
    *,
    reach: int,
    mode: str,
    rows: int | None = None,
    budget: int | None = None,
    strategy: str = names.AUTO,
    opaque: bool | None = None,
) -> NDArray[Any]:
    """Run ``func`` over an in-memory image band by band; the same result as ``func(image)``.

    Parameters
    ----------
    image : (H, W) or (H, W, C) array.
    func : a filter taking ``band=`` (e.g. ``partial(filters.gaussian_blur, sigma=2)``).
    reach : rows the filter's kernel reaches above or below an output row (the larger).
    mode : the filter's boundary mode (the halo at the image's edges follows it).
    rows : output rows per band (a multiple of :data:`ALIGN`); default from ``budget``.
    budget : bytes for the bands (default: whole-image bytes, i.e. one band).
    strategy : the road the whole image takes (e.g. ``engine.plan(image.shape, kernel)``'s),
        given to every band and sizing them (:func:`layout`); auto: each band plans itself.
    opaque : whether the image's alpha (last channel) is fully opaque; default: measured
        here if the image has more than one channel, so every band decides as the whole does.

    Returns
    -------
    The filtered image (the filter's output dtype).
    """
    shape = tuple(image.shape)
    if rows is None:
        budget = budget or whole_image_bytes(shape, image.dtype, strategy=strategy, reach=reach)
        rows = layout(shape, image.dtype, reach=reach, budget=budget, strategy=strategy).rows
    chosen = Layout(shape[0], shape[1], rows, reach, strategy)
    if opaque is None and image.ndim == 3 and shape[2] > 1:
        opaque = bool(np.all(image[..., -1] == _full_scale(image.dtype)))
    parts: dict[int, NDArray[Any]] = {}
    run(image, func, chosen, mode, parts.__setitem__, opaque=opaque)
    return np.concatenate([parts[start] for start in sorted(parts)])


def _full_scale(dtype: np.dtype) -> float:
    """Full intensity in stored units (255, 65535, ..., 1.0 for floats)."""
    return float(np.iinfo(dtype).max) if dtype.kind in "iu" else 1.0


# --- sizes ---------------------------------------------------------------------------------------

_UNITS = {"": 1, "B": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}


def parse_size(text: str, name: str = "memory") -> int:
    """Bytes from ``256M``, ``2G``, ``1.5GiB``, ``500000`` (binary units); UsageError if not."""
    value = text.strip().upper().removesuffix("IB").removesuffix("B")
    unit = value[-1:] if value[-1:] in _UNITS and value[-1:] != "" else ""
    number = value[: len(value) - len(unit)].strip()
    try:
        size = float(number) * _UNITS[unit]
    except ValueError:
        size = math.nan
    if not (math.isfinite(size) and size >= 1):
        raise UsageError(
            f"{name} must be a size such as 256M or 2G, got {text!r}", parameters=[name]
        )
    return int(size)


def format_size(size: float) -> str:
    """``268435456`` -> ``256 MiB``."""
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if size >= scale:
            return f"{size / scale:.3g} {unit}"
    return f"{int(size)} B"


def over_budget(
    name: str, subject: str, shape: tuple[int, ...], need: int, budget: int, remedy: str
) -> ConvfiltError:
    """The one-line refusal of work too large for the memory budget: ``name: <subject> a
    WxH <image> needs ~N, over the memory budget of B; <remedy>`` (``subject`` holds ``{}``
    where the size goes)."""
    pixels = "x".join(str(n) for n in shape[:2])
    return ConvfiltError(
        f"{name}: {subject.format(pixels)} needs ~{format_size(need)}, over the memory budget "
        f"of {format_size(budget)}; {remedy}",
        parameters=["memory"],
    )


def available_memory() -> int | None:
    """Bytes of memory available now (Linux ``MemAvailable``), or None where unknown."""
    try:
        with open("/proc/meminfo", encoding="ascii") as info:
            for line in info:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def default_budget() -> int:
    """A quarter of the available memory, at most 2 GiB (1 GiB where it is unknown)."""
    free = available_memory()
    return min(2 * 2**30, free // 4) if free else 2**30


# --- Dask ---------------------------------------------------------------------------------------


def is_dask(image: object) -> bool:
    """Whether ``image`` is a dask array (checked without importing dask)."""
    return type(image).__module__.split(".")[0] == "dask" and hasattr(image, "chunks")


@dataclass(frozen=True)
class BandCall:
    """A filter call with its parameters bound, run on one band: picklable for Dask workers
    when ``func`` is a module-level function."""

    func: Callable[..., NDArray[Any]]
    args: tuple[Any, ...]
    kwargs: dict[str, Any]

    def __call__(self, pixels: NDArray[Any], *, band: Band | None = None) -> NDArray[Any]:
        return self.func(pixels, *self.args, band=band, **self.kwargs)


def _run_band(pixels: NDArray[Any], func: BandFilter, band: Band) -> NDArray[Any]:
    """One Dask task's band; its transforms on one thread (the scheduler runs a task per
    core), as the bands of :func:`run`."""
    with transform_threads(1):
        return func(np.asarray(pixels), band=band)


def on_dask(
    image: Any,
    func: BandFilter,
    *,
    reach: int,
    mode: str,
    dtype: np.dtype,
    opaque: bool | None = None,
    rows: int | None = None,
    strategy: str | None = None,
) -> Any:
    """The lazy dask array of ``func`` over ``image`` (a dask array), band by band.

    Each output band is one task on the rows it reads, gathered from whatever chunks hold
    them through the *global* boundary rule (so ``wrap`` reads the far edge, and chunks
    smaller than the reach need no rechunking); every band takes ``strategy``, the road
    decided once for the whole image (None: each band plans for the whole image's shape),
    so the result equals the in-memory one (bit for bit on the banded roads) whichever
    worker runs a band. Bands are full-width, as tall as the input's row chunks (at least
    :data:`ALIGN` rows); the result is rechunked like the input.
    """
    import dask.array as da

    height = image.shape[0]
    if rows is None:
        rows = max(ALIGN, -(-max(image.chunks[0]) // ALIGN) * ALIGN)
    tail = tuple(image.shape[1:])
    pieces = []
    for band in bands(height, rows, reach, mode):
        band = Band(band.held, band.height, band.start, band.stop, opaque, strategy)
        runs = np.split(band.held, np.flatnonzero(np.diff(band.held) != 1) + 1)
        held = da.concatenate([image[int(r[0]) : int(r[-1]) + 1] for r in runs], axis=0)
        held = held.rechunk((held.shape[0], *tail))
        pieces.append(
            da.map_blocks(
                functools.partial(_run_band, func=func, band=band),
                held,
                dtype=dtype,
                chunks=(band.rows, *tail),
                meta=np.empty((0,) * image.ndim, dtype=dtype),
            )
        )
    result = da.concatenate(pieces, axis=0)
    return result.rechunk(image.chunks)


def given_kernel(kernel: Any, *args: Any, **kwargs: Any) -> NDArray[Any]:
    """The 2-D kernel of a filter whose first parameter is its kernel."""
    return np.asarray(kernel, dtype=np.float64)


# :func:`convfilt.engine.plan`'s form: ``plan(shape, kernel, *, dtype, mode, ...) -> Plan``
Planner = Callable[..., Any]


def dask_aware(
    kernel: Callable[..., NDArray[Any]],
    dtype: Callable[[np.dtype], np.dtype] = np.dtype,
    plan: Planner | None = None,
) -> Callable[[F], F]:
    """Make a filter ``f(image, *args, **kwargs)`` that takes ``band=`` accept a dask array
    and return a lazy one (:func:`on_dask`).

    ``kernel(*args, **kwargs)`` is its 2-D kernel (its halo is the rows it reaches);
    ``dtype(image dtype)`` its output dtype when ``output`` is not given; ``plan`` the
    planner (:func:`convfilt.engine.plan`), asked once for the whole image's road, which
    every band then takes (:func:`whole_road`). On Dask, ``on_plan`` is not called (the
    bands run on workers); ``has_alpha`` makes one eager pass over the alpha channel, so
    that every band takes the whole image's alpha path.
    """

    def decorate(func: F) -> F:
        @functools.wraps(func)
        def run(image: Any, *args: Any, **kwargs: Any) -> Any:
            if not is_dask(image):
                return func(image, *args, **kwargs)
            return _dask_call(run, image, args, kwargs, (kernel, dtype, plan))

        return cast(F, run)

    return decorate


def _dask_call(
    run: Callable[..., Any],
    image: Any,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    how: tuple[Callable[..., NDArray[Any]], Callable[[np.dtype], np.dtype], Planner | None],
) -> Any:
    """``run`` over a dask ``image`` (see :func:`dask_aware`)."""
    if image.ndim not in (2, 3):
        raise UsageError(f"image must be (H, W) or (H, W, C), got shape {image.shape}")
    if kwargs.get("band") is not None:
        raise UsageError("band is not for dask arrays: their bands are made here")
    if kwargs.get("channel_axis") not in (None, -1, image.ndim - 1):
        raise UsageError(
            "a dask image keeps its channels on the last axis", parameters=["channel_axis"]
        )
    output = kwargs.pop("output", None)
    if isinstance(output, np.ndarray):
        raise UsageError(
            "output must be a dtype for a dask image, not an array", parameters=["output"]
        )
    kwargs.pop("on_plan", None)
    kernel_of, dtype, plan = how
    out_dtype = np.dtype(output) if output is not None else dtype(np.dtype(image.dtype))
    opaque = None
    if kwargs.get("has_alpha") and image.ndim == 3:
        opaque = bool((image[..., -1] == _full_scale(np.dtype(image.dtype))).all().compute())
    kernel = kernel_of(*args, **kwargs)
    call = BandCall(run, args, {**kwargs, "output": output} if output is not None else kwargs)
    return on_dask(
        image,
        call,
        reach=int(np.shape(kernel)[0]) // 2,
        mode=kwargs.get("mode", names.REFLECT),
        dtype=out_dtype,
        opaque=opaque,
        strategy=None if plan is None else whole_road(image, kernel, plan, kwargs),
    )


def whole_road(image: Any, kernel: NDArray[Any], plan: Planner, options: dict[str, Any]) -> str:
    """The road every band of a dask ``image`` takes: the planner's choice for the whole
    image's shape (a forced ``strategy`` as it is). A float32 image's max|x| decides
    whether a transform can overflow, so it is measured (one eager pass) when the choice is
    a transform."""
    strategy = options.get("strategy") or options.get("method") or names.AUTO
    if strategy != names.AUTO:
        return str(strategy)
    asked: dict[str, Any] = {"mode": options.get("mode", names.REFLECT)}
    if options.get("tolerance") is not None:
        asked["tolerance"] = options["tolerance"]
    dtype = np.dtype(image.dtype)
    chosen = plan(tuple(image.shape), kernel, dtype=dtype, **asked)
    if chosen.strategy in names.TRANSFORMS and dtype == np.float32:
        import dask.array as da

        finite = da.where(da.isfinite(image), abs(image), 0)
        largest = float(finite.max().compute())
        chosen = plan(tuple(image.shape), kernel, dtype=dtype, largest=largest, **asked)
    return str(chosen.strategy)


# --- a running Dask scheduler ------------------------------------------------------------------

CONNECT_SECONDS = 5  # an unreachable scheduler is answered within this
NO_WORKER_SECONDS = 10  # a run with no worker left for this long fails


def connect(address: str) -> Any:
    """A ``distributed.Client`` of the scheduler at ``address``.

    Raises
    ------
    ConvfiltError
        If the scheduler does not answer within :data:`CONNECT_SECONDS`, or has no worker,
        or distributed is not installed.
    """
    try:
        import distributed
    except ImportError:
        raise ConvfiltError(
            "a scheduler needs distributed: pip install 'convfilt[dask]'", parameters=["scheduler"]
        ) from None
    try:
        client = _client_within(distributed, address, CONNECT_SECONDS)
    except Exception as exc:  # refused, unresolved, silent, or not speaking Dask at all
        raise ConvfiltError(
            f"scheduler {address}: cannot connect within {CONNECT_SECONDS} s "
            f"({type(exc).__name__}; is it a Dask scheduler?)",
            parameters=["scheduler"],
        ) from None
    try:
        client.wait_for_workers(1, timeout=CONNECT_SECONDS)
    except (OSError, TimeoutError):
        client.close()
        raise ConvfiltError(
            f"scheduler {address}: no worker joined within {CONNECT_SECONDS} s",
            parameters=["scheduler"],
        ) from None
    return client


def _client_within(distributed: Any, address: str, seconds: float) -> Any:
    """``distributed.Client(address)``, given up after ``seconds`` (plus one for its own
    timeout to fire): its timeout covers opening the connection, not the handshake, so an
    address that accepts a connection and never answers (a web server, a busy port) held the
    command forever. The attempt runs on a daemon thread, left behind if it never returns.

    Raises
    ------
    TimeoutError
        If no client came within the time; else whatever the attempt raised.
    """
    outcome: list[Any] = []

    def attempt() -> None:
        try:
            outcome.append(distributed.Client(address, timeout=seconds, set_as_default=False))
        except BaseException as exc:  # handed to the caller's thread
            outcome.append(exc)

    thread = threading.Thread(target=attempt, name="convfilt-connect", daemon=True)
    thread.start()
    thread.join(seconds + 1)
    if not outcome:
        raise TimeoutError(f"no answer from {address}")
    if isinstance(outcome[0], BaseException):
        raise outcome[0]
    return outcome[0]


def workers(client: Any) -> int:
    """Workers the scheduler has now."""
    return len(client.scheduler_info().get("workers", {}))


def compute(client: Any, lazy: Any) -> NDArray[Any]:
    """``lazy`` computed on ``client``'s cluster, as a numpy array (see :func:`wait`)."""
    return wait(client, client.compute(lazy))


def wait(client: Any, future: Any) -> NDArray[Any]:
    """The result of ``future`` (a task on ``client``'s cluster), as a numpy array.

    A worker that dies mid-run loses its tasks, which the scheduler runs again on the
    workers left (up to its ``distributed.scheduler.allowed-failures``), so the result is
    the same; only when the scheduler gives up does the run fail.

    Raises
    ------
    ConvfiltError
        If the scheduler gives up on a task (as many workers as it allows died running it),
        or no worker is left for :data:`NO_WORKER_SECONDS`, or the connection is lost.
    """
    import distributed

    alone_since: float | None = None
    try:
        while True:
            try:
                return np.asarray(future.result(timeout=1))
            except (TimeoutError, distributed.TimeoutError):
                pass
            if workers(client):
                alone_since = None
            elif alone_since is None:
                alone_since = time.monotonic()
            elif time.monotonic() - alone_since > NO_WORKER_SECONDS:
                raise ConvfiltError("the scheduler's workers died mid-run; nothing was written")
    except distributed.client.FutureCancelledError:
        raise ConvfiltError("the computation was cancelled on the scheduler") from None
    except distributed.KilledWorker as exc:
        raise ConvfiltError(
            f"a worker died mid-run: {exc.allowed_failures + 1} workers died running the same "
            "task, so the scheduler gave up; nothing was written"
        ) from None
    except OSError as exc:
        raise ConvfiltError(f"lost the scheduler mid-run ({type(exc).__name__})") from None
    finally:
        future.cancel()


def on_cluster(client: Any, func: Callable[[Any], Any], pixels: NDArray[Any]) -> NDArray[Any]:
    """``func(pixels)`` (a :func:`dask_aware` filter) computed band by band on ``client``'s
    workers: bands of at least :data:`ALIGN` rows, two per worker."""
    import dask.array as da

    count = 2 * max(1, workers(client))
    rows = max(ALIGN, -(-pixels.shape[0] // count // ALIGN) * ALIGN)
    lazy = func(da.from_array(pixels, chunks=(rows, *pixels.shape[1:])))
    return compute(client, lazy)


def remote(client: Any, func: BandFilter) -> BandFilter:
    """``func`` run on ``client``'s cluster, one task per band: for :func:`run`, whose
    ``lanes`` (:func:`in_flight`) say how many bands are on the cluster at once."""

    def on_worker(pixels: NDArray[Any], *, band: Band | None = None) -> NDArray[Any]:
        return wait(client, client.submit(func, pixels, band=band, pure=False))

    return on_worker


def in_flight(
    layout: Layout, shape: tuple[int, ...], dtype: np.dtype, budget: int, workers: int
) -> int:
    """Bands :func:`run` keeps on a cluster at once (:func:`remote`): two per worker, as many
    as the memory budget holds here. Each band in flight holds its rows (with their halo)
    and its result in this process; the pipeline also holds the bands read ahead and the
    ones being written, about three bands' rows per band in flight, plus four."""
    stored = int(np.prod(shape[1:])) * np.dtype(dtype).itemsize
    band = (layout.rows + 2 * layout.reach) * stored
    fits = ((budget - FIXED_BYTES) // band - 4) // 3
    return int(max(1, min(2 * max(1, workers), fits)))
