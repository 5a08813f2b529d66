"""convolve / correlate on arrays: the strategies, and the planner that picks one.

Every strategy computes the same thing: the *valid* correlation of the kernel with the image
seen through its boundary extension (``Source``), so the boundary modes are implemented once,
and ``convolve`` is ``correlate`` with the kernel flipped and, along even axes, the extension
shifted by one pixel (scipy.ndimage's centre convention). The strategies (``STRATEGY_TABLE``):

- ``direct``: for each band of R rows, ``out = Σ_j T_j @ E[band, j:j+W]`` with ``T_j`` the
  banded Toeplitz matrix of kernel column j: a few large BLAS products instead of a loop per
  tap (docs/performance.md compares it with ``scipy.ndimage.correlate``).
- ``separable``: rank-one kernels (``kernels.separate``), two banded Toeplitz passes: a column
  pass ``T_col @ E[band]`` and a row pass ``V[:, block] @ T_row`` (docs/performance.md compares
  it with ``scipy.ndimage.correlate1d``).
- ``fft``: the extended image zero-padded to ``next_fast_len`` sizes, ``rfft2`` on all cores
  (one thread for small transforms), times the conjugate spectrum of the kernel (whose zero
  rows are not transformed), the inverse of the output rows only, crop. float32 stays float32.
- ``overlap-add``: the same through the FFT in output tiles (each tile reads its halo, the
  overlap-save form, so no sums of overlaps are needed); it bounds memory and wins on large
  images with medium kernels.

Policies:
- Integer images are computed in float64. With an integer-valued kernel too (and, in
  ``constant`` mode, an integer-valued ``cval``) the result is rounded to the nearest integer,
  which makes it exact wherever ``max(max|x|, |cval|)·Σ|k|`` (max|x| bounded by the dtype's
  range) is below 2**40 on the FFT and separable roads and 2**53 on the direct one; above 2**40
  only ``direct`` applies, and above 2**53 (int64, uint64) float64 cannot hold every integer,
  so the rounded result is only the nearest float64 (the plan's note says so).
- float32 images through a transform: the DC term sums every value, so when
  ``max|x|·Σ|k|·P`` (P transform points) comes within 1/16 of float32's largest value the FFT
  roads do not apply (the plan says why) and the banded roads, whose sums are per output, run.
- ``cval`` must be finite (UsageError): a transform or banded product would spread a NaN cval
  over whole bands, where scipy keeps it at the border.
- Non-finite input (NaN, inf): every road computes finite planes only; ``nan_policy``
  (``propagate``, scipy.ndimage's result; ``omit``, normalized convolution; ``raise``) is
  turned into such correlations by :mod:`convfilt.weighted` (zeroed values, then each
  non-finite value's footprint marked, or the weighted sums divided), so every road and mode
  gives the same answer, and a band of the image computed alone gives the same as the whole.
  A non-finite kernel is a UsageError.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field, replace
from functools import cached_property, lru_cache, partial
from itertools import pairwise
from typing import Any

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from numpy.typing import ArrayLike, NDArray

from . import calibration, cost, names, pools, weighted
from .errors import UsageError
from .kernels import separate
from .tiles import EXTENSIONS as EXTENSIONS  # re-exported: the boundary rule lives in tiles
from .tiles import Band, dask_aware, extension_indices, given_kernel

MODES = names.MODES
STRATEGIES = names.STRATEGIES

EXACT_FFT_LIMIT = 2.0**40  # |result| bound under which rounding an FFT/separable result is exact
EXACT_DIRECT_LIMIT = 2.0**53  # float64 sums of integers are exact below this
FLOAT32_TRANSFORM_LIMIT = float(np.finfo(np.float32).max) / 16  # max|x|·Σ|k|·P allowed
FFT_MEMORY_LIMIT = 128 * 2**20  # bytes of whole-image transforms ``auto`` accepts (CLI budget)
# ``auto`` takes a banded road (direct, separable) over a transform whose estimate is lower by
# less than this fraction. The estimates cannot tell such roads apart (they are off by 10-25%,
# docs/performance.md), and on a near-tie the banded roads win on the rest: each output is
# summed from its own window (no rounding relative to the whole image), in bands of memory.
# The near-tie that set it: docs/performance.md, §5.
BANDED_PREFERENCE = 0.05
BANDED = names.BANDED
BAND_BYTES = 2**20  # extended row band of the banded strategies: in L2, and small enough that
# its buffers are reused from the heap, not mapped and page-faulted afresh on every call
# (docs/performance.md, §5)


@dataclass(frozen=True)
class Plan:
    """The planner's decision for one image shape and kernel.

    ``estimates`` maps every strategy that can apply to its predicted time in seconds;
    ``error_bounds`` each one's bound on ``max|result - exact| / max|image|``
    (:func:`convfilt.cost.error_bound`); ``reason`` is one human-readable line. ``dtype`` is
    the *working* dtype the strategy computes (and returns) in: float32 for float32/float16
    images, else float64.
    """

    strategy: str
    estimates: dict[str, float]
    reason: str
    image_shape: tuple[int, ...]
    kernel_shape: tuple[int, int]
    dtype: str
    mode: str
    notes: tuple[str, ...] = field(default=())
    error_bounds: dict[str, float] = field(default_factory=dict)


# --- boundary extension: tiles.EXTENSIONS, extension_indices and Band ---------------------


@dataclass(frozen=True)
class Source:
    """A 2-D plane seen through its boundary extension; hands out extended rows on demand.

    Only the requested band is ever materialised, so no strategy needs a padded copy of the
    whole image unless it transforms the whole image.
    """

    plane: NDArray[np.generic]
    rows: NDArray[np.intp]
    cols: NDArray[np.intp]
    left: int
    cval: float

    @property
    def height(self) -> int:
        """Rows of the extended plane."""
        return len(self.rows)

    @property
    def width(self) -> int:
        """Columns of the extended plane."""
        return len(self.cols)

    def fill(self, start: int, stop: int, out: NDArray[np.floating]) -> NDArray[np.floating]:
        """Write extended rows ``start:stop`` into ``out[:stop-start, :width]``; return that."""
        target = out[: stop - start, : self.width]
        rows = self.rows[start:stop]
        w = self.plane.shape[1]
        inner = target[:, self.left : self.left + w]
        # copy runs of consecutive input rows as slices; a cval row (-1) is a run of its own
        cuts = np.flatnonzero((np.diff(rows) != 1) | (rows[:-1] < 0)) + 1
        bounds = [0, *cuts.tolist(), len(rows)]
        for begin, end in pairwise(bounds):
            first = int(rows[begin])
            if first < 0:
                target[begin:end] = self.cval
            else:
                inner[begin:end] = self.plane[first : first + end - begin]
        for side in (slice(0, self.left), slice(self.left + w, self.width)):
            index = self.cols[side]
            if len(index) == 0:
                continue
            if index[0] < 0:  # constant mode: the pads are cval
                target[:, side] = self.cval
            else:
                target[:, side] = inner[:, index]
        return target

    def whole(self, dtype: np.dtype) -> NDArray[np.floating]:
        """The whole extended plane in ``dtype``: the plane itself when nothing extends it."""
        plain = (
            self.left == 0
            and self.plane.shape == (self.height, self.width)
            and self.plane.dtype == dtype
            and bool(np.all(self.rows == np.arange(self.height)))
            and bool(np.all(self.cols == np.arange(self.width)))
        )
        if plain:
            return self.plane  # type: ignore[return-value]
        return self.fill(0, self.height, np.empty((self.height, self.width), dtype=dtype))


# --- the problem every strategy sees ----------------------------------------------------------


@dataclass(frozen=True)
class Problem:
    """One filtering job: output plane size, channels, kernels (correlation orientation)."""

    height: int
    width: int
    channels: int
    kernels: tuple[NDArray[np.float64], ...]
    dtype: np.dtype
    factors: tuple[tuple[NDArray[np.float64], NDArray[np.float64]], ...] | None
    exact: bool  # integer image, kernels and cval: round the result
    bound: float  # max|x| · Σ|k| (from the dtype's range for integer images), inf if unknown
    norms: cost.KernelNorms  # what the error bounds need of the kernels (``_norms``)
    source: str = "float64"  # the image's dtype
    output: str = "float64"  # the result's: ``dtype``, or an integer image's own (``stored``)

    @cached_property
    def kh(self) -> int:
        return int(self.kernels[0].shape[0])

    @cached_property
    def kw(self) -> int:
        return int(self.kernels[0].shape[1])

    @cached_property
    def shape(self) -> cost.Shape:
        """The cost model's view (built once: the planner asks for it per strategy)."""
        return cost.Shape(
            self.height,
            self.width,
            self.channels,
            len(self.kernels),
            self.kh,
            self.kw,
            rank_one=self.factors is not None,
        )


# A prepared strategy: fills each output plane (C-contiguous, one per kernel) from a Source.
Runner = Callable[[Source, Sequence[NDArray[np.floating]]], None]


def _toeplitz(taps: NDArray[np.float64], rows: int, dtype: np.dtype) -> NDArray[np.floating]:
    """``T`` of shape (rows, rows + len(taps) - 1) with ``T[r, r + i] = taps[i]`` (read-only:
    remembered for the kernels of recent calls, since building it cost a small image's call
    more than filtering it)."""
    return _toeplitz_of(np.asarray(taps, dtype=np.float64).tobytes(), rows, np.dtype(dtype))


@lru_cache(maxsize=128)  # band_rows or COLUMN_BLOCK rows by that plus the kernel's length
def _toeplitz_of(taps: bytes, rows: int, dtype: np.dtype) -> NDArray[np.floating]:
    values = np.frombuffer(taps, dtype=np.float64)
    t = np.zeros((rows, rows + len(values) - 1), dtype=dtype)
    r = np.arange(rows)
    for i, tap in enumerate(values):
        t[r, r + i] = tap
    t.flags.writeable = False
    return t


def _band(problem: Problem, step: int, source_width: int) -> int:
    """Output rows per extended band: about BAND_BYTES, at least 2·kh, a multiple of step."""
    by_bytes = BAND_BYTES // max(1, source_width * problem.dtype.itemsize)
    rows = max(step, by_bytes, 2 * problem.kh)
    return min(-(-rows // step) * step, max(problem.height, 1))


def _overflows_float32(problem: Problem) -> str | None:
    """Why a float32 transform would overflow (its DC term sums max|x|·Σ|k| over P points)."""
    if problem.dtype != np.float32 or not np.isfinite(problem.bound):  # inf: not measured
        return None
    rows, cols = cost.fft_size(problem.shape)
    points = float(rows * cols)
    if problem.bound * points > FLOAT32_TRANSFORM_LIMIT:
        return (
            f"float32 transform sums up to {problem.bound * points:.3g}, near float32's "
            "largest value"
        )
    return None


def _not_roundable(problem: Problem) -> str | None:
    if problem.exact and problem.bound > EXACT_FFT_LIMIT:
        return f"an exact integer result up to {problem.bound:.3g} cannot be rounded from floats"
    return None


# --- direct ------------------------------------------------------------------------------------


def _direct_applies(problem: Problem) -> str | None:
    return None


def _prepare_direct(problem: Problem, constants: cost.Constants) -> Runner:
    kh, kw, width, dt = problem.kh, problem.kw, problem.width, problem.dtype
    step = cost.band_rows(kh)
    toeplitz = [[_toeplitz(k[:, j], step, dt) for j in range(kw)] for k in problem.kernels]

    def run(source: Source, outs: Sequence[NDArray[np.floating]]) -> None:
        band = _band(problem, step, source.width)
        buffer = np.empty((band + kh - 1, source.width), dtype=dt)
        scratch = np.empty((band, width), dtype=dt)
        for r0 in range(0, problem.height, band):
            rb = min(band, problem.height - r0)
            extended = source.fill(r0, r0 + rb + kh - 1, buffer)
            # the band's whole steps as one stack of overlapping (step + kh - 1)-row windows,
            # so each kernel column is one stacked BLAS call rather than one per step; the
            # last partial step on its own
            whole = rb // step * step
            pieces = []
            if whole:
                stack = sliding_window_view(extended[: whole + kh - 1], step + kh - 1, axis=0)
                pieces.append((0, stack[::step].swapaxes(1, 2), step))
            if rb > whole:
                pieces.append((whole, extended[np.newaxis, whole : rb + kh - 1], rb - whole))
            for matrices, out in zip(toeplitz, outs, strict=True):
                for s0, windows, rows in pieces:
                    shape = (len(windows), rows, width)
                    r = shape[0] * rows
                    acc = out[r0 + s0 : r0 + s0 + r].reshape(shape)  # a view: out is contiguous
                    term = scratch[:r].reshape(shape)
                    np.matmul(matrices[0][:rows, : rows + kh - 1], windows[..., :width], out=acc)
                    for j in range(1, kw):
                        matrix = matrices[j][:rows, : rows + kh - 1]
                        acc += np.matmul(matrix, windows[..., j : j + width], out=term)

    return run


# --- separable ---------------------------------------------------------------------------------


def _separable_applies(problem: Problem) -> str | None:
    if problem.factors is None:
        return "the kernel is not rank one (SVD)"
    return _not_roundable(problem)


def _prepare_separable(problem: Problem, constants: cost.Constants) -> Runner:
    assert problem.factors is not None
    kh, kw, width, dt = problem.kh, problem.kw, problem.width, problem.dtype
    step, block = cost.band_rows(kh), cost.COLUMN_BLOCK
    passes = [
        (_toeplitz(column, step, dt), np.ascontiguousarray(_toeplitz(row, block, dt).T))
        for column, row in problem.factors
    ]

    # the row pass always multiplies whole blocks (the last one padded with zero columns) of
    # at least two rows (one row would be a matrix-vector product, rounded differently): BLAS
    # then rounds each output alike whatever the band's height, so a band of an image
    # (tiles.py) gives the whole image's bits
    padded = -(-width // block) * block + kw - 1

    def run(source: Source, outs: Sequence[NDArray[np.floating]]) -> None:
        band = _band(problem, step, source.width)
        buffer = np.empty((band + kh - 1, source.width), dtype=dt)
        vertical = np.zeros((max(band, 2), max(padded, source.width)), dtype=dt)
        last = np.empty((max(band, 2), block), dtype=dt)
        for r0 in range(0, problem.height, band):
            rb = min(band, problem.height - r0)
            extended = source.fill(r0, r0 + rb + kh - 1, buffer)
            for (t_column, t_row), out in zip(passes, outs, strict=True):
                for s0 in range(0, rb, step):
                    r = min(step, rb - s0)
                    np.matmul(
                        t_column[:r, : r + kh - 1],
                        extended[s0 : s0 + r + kh - 1],
                        out=vertical[s0 : s0 + r, : source.width],
                    )
                m = max(rb, 2)
                for c0 in range(0, width, block):
                    b = min(block, width - c0)
                    whole = b == block and m == rb
                    target = out[r0 : r0 + rb, c0 : c0 + b] if whole else last[:m]
                    np.matmul(vertical[:m, c0 : c0 + block + kw - 1], t_row, out=target)
                    if not whole:
                        out[r0 : r0 + rb, c0 : c0 + b] = last[:rb, :b]

    return run


# --- fft and overlap-add -----------------------------------------------------------------------


def _fft_applies(problem: Problem) -> str | None:
    return _not_roundable(problem) or _overflows_float32(problem)


def _spectrum(block: NDArray[np.floating], shape: tuple[int, int]) -> NDArray[np.complexfloating]:
    """``rfft2`` of ``block`` zero-padded to ``shape``, without transforming the zero rows.

    The row transforms run on ``block``'s rows only, then the column transforms pad to
    ``shape[0]``: for a kernel of kh rows that halves the work of a padded ``rfft2``.
    """
    import scipy.fft as sfft

    workers = cost.fft_workers(shape[0] * shape[1])
    rows = sfft.rfft(block, n=shape[1], axis=1, workers=workers)
    return sfft.fft(rows, n=shape[0], axis=0, workers=workers, overwrite_x=True)


def _image_spectrum(
    source: Source, shape: tuple[int, int], dtype: np.dtype
) -> NDArray[np.complexfloating]:
    """``rfft2`` of the extended plane zero-padded to ``shape``.

    The extension is written straight into the zero-padded buffer, which the transform may
    overwrite, so the plane is copied once (not extended, then padded); a plane that needs
    neither extension nor padding is transformed as it is.
    """
    import scipy.fft as sfft

    workers = cost.fft_workers(shape[0] * shape[1])
    whole = source.whole(dtype) if (source.height, source.width) == shape else None
    if whole is not None:
        return sfft.rfft2(whole, workers=workers, overwrite_x=whole is not source.plane)
    padded = np.zeros(shape, dtype=dtype)
    source.fill(0, source.height, padded)
    return sfft.rfft2(padded, workers=workers, overwrite_x=True)


def _inverse(
    product: NDArray[np.complexfloating], shape: tuple[int, int], height: int
) -> NDArray[np.floating]:
    """The first ``height`` rows of ``irfft2(product, s=shape)``; overwrites ``product``.

    Column transforms first, then row transforms of the rows kept only (the rest would be
    cropped away), which also measured faster than one ``irfft2`` (docs/performance.md, §5).
    """
    import scipy.fft as sfft

    workers = cost.fft_workers(shape[0] * shape[1])
    columns = sfft.ifft(product, axis=0, workers=workers, overwrite_x=True)[:height]
    return sfft.irfft(columns, n=shape[1], axis=1, workers=workers, overwrite_x=True)


def _kernel_spectra(problem: Problem, shape: tuple[int, int]) -> list[NDArray[np.complexfloating]]:
    """Conjugate spectra of the kernels (correlation = product with the conjugate)."""
    spectra = [_spectrum(k.astype(problem.dtype), shape) for k in problem.kernels]
    return [np.conjugate(spectrum, out=spectrum) for spectrum in spectra]


def _kernel_spectra_soon(
    problem: Problem, shape: tuple[int, int]
) -> Callable[[], list[NDArray[np.complexfloating]]]:
    """``_kernel_spectra``, started on a second thread (the caller transforms the image
    meanwhile): the thread of the caller's side work, ahead of that work, where there is one
    (``correlate_valid``'s ``beside``) and a second core; else a thread of its own where
    ``cost.concurrent_spectra`` says so; else computed now. Call the result to have them. The
    thread transforms under the caller's scipy.fft backend (``set_backend``), so both
    transforms come from one backend."""
    side = _side_work.get()
    if side is not None and cost.available_cores() >= 2:
        backend = _fft_backend_state()
        if backend is not None:
            ready = side.start(partial(_kernel_spectra_under, backend, problem, shape))
            if ready is not None:
                return ready
    pending = None
    if cost.concurrent_spectra(shape[0] * shape[1]):
        backend = _fft_backend_state()
        if backend is not None:
            pending = _spectra_pool.submit(_kernel_spectra_under, backend, problem, shape)
    if pending is None:
        spectra = _kernel_spectra(problem, shape)
        return lambda: spectra
    return pending.result


_spectra_pool = pools.LazyPool("convfilt-spectra", cost.available_cores)
# The caller's side work while ``correlate_valid`` prepares its road (``beside``): the FFT
# road makes its kernel spectra on that work's thread, ahead of it.
_side_work: ContextVar[pools.SideWork | None] = ContextVar("side_work", default=None)


def _fft_backend_state() -> Any:
    """The calling thread's scipy.fft backends (uarray's state), or None where this scipy
    does not expose it: the spectra are then made on the caller's thread."""
    try:
        from scipy._lib._uarray import get_state
    except ImportError:  # pragma: no cover - a scipy without uarray's state
        return None
    return get_state()


def _kernel_spectra_under(
    backend: Any, problem: Problem, shape: tuple[int, int]
) -> list[NDArray[np.complexfloating]]:
    """``_kernel_spectra`` under the scipy.fft backends ``backend`` (another thread's)."""
    from scipy._lib._uarray import set_state

    with set_state(backend):
        return _kernel_spectra(problem, shape)


def _prepare_fft(problem: Problem, constants: cost.Constants) -> Runner:
    import scipy.fft as sfft

    shape = cost.fft_size(problem.shape, sfft.next_fast_len)
    kernel_spectra = _kernel_spectra_soon(problem, shape)
    h, w = problem.height, problem.width

    def run(source: Source, outs: Sequence[NDArray[np.floating]]) -> None:
        spectrum = _image_spectrum(source, shape, problem.dtype)
        spectra = kernel_spectra()
        for index, (kernel, out) in enumerate(zip(spectra, outs, strict=True)):
            last = index == len(spectra) - 1
            product = np.multiply(spectrum, kernel, out=spectrum if last else None)
            out[...] = _inverse(product, shape, h)[:, :w]

    return run


def _prepare_overlap_add(problem: Problem, constants: cost.Constants) -> Runner:
    import scipy.fft as sfft

    kh, kw, dt = problem.kh, problem.kw, problem.dtype
    th, tw, _ = cost.overlap_tile(problem.shape, constants, dt)
    shape = (sfft.next_fast_len(th + kh - 1), sfft.next_fast_len(tw + kw - 1, real=True))
    spectra = _kernel_spectra(problem, shape)
    starts = range(0, problem.width, tw)

    def run(source: Source, outs: Sequence[NDArray[np.floating]]) -> None:
        buffer = np.empty((th + kh - 1, source.width), dtype=dt)
        tiles = np.zeros((len(starts), *shape), dtype=dt)
        for r0 in range(0, problem.height, th):
            rb = min(th, problem.height - r0)
            extended = source.fill(r0, r0 + rb + kh - 1, buffer)
            tiles[:] = 0
            for t, c0 in enumerate(starts):
                b = min(tw, problem.width - c0)
                tiles[t, : rb + kh - 1, : b + kw - 1] = extended[:, c0 : c0 + b + kw - 1]
            spectrum = sfft.rfft2(tiles, axes=(-2, -1), workers=cost.fft_workers(tiles.size))
            for kernel, out in zip(spectra, outs, strict=True):
                result = sfft.irfft2(
                    spectrum * kernel,
                    s=shape,
                    axes=(-2, -1),
                    workers=cost.fft_workers(tiles.size),
                    overwrite_x=True,
                )
                for t, c0 in enumerate(starts):
                    b = min(tw, problem.width - c0)
                    out[r0 : r0 + rb, c0 : c0 + b] = result[t, :rb, :b]

    return run


# --- compiled ----------------------------------------------------------------------------------

# integer results (``Problem.output``), rounded by the roads (``_estimates``)
INTEGER_OUTPUTS = frozenset(np.dtype(t).name for t in np.typecodes["AllInteger"])

# image dtypes the compiled road reads as they are (each is compiled on its first use)
COMPILED_INPUTS = ("uint8", "int8", "uint16", "int16", "uint32", "int32", "float32", "float64")


def _compiled_applies(problem: Problem) -> str | None:
    if problem.source not in COMPILED_INPUTS:
        return f"it reads {', '.join(COMPILED_INPUTS)} images, not {problem.source}"
    return None


def _prepare_compiled(problem: Problem, constants: cost.Constants) -> Runner:
    """``compiled.correlate`` (numba, imported on the first call): the separable form for a
    rank-one kernel where it is cheaper, else every tap; an (H, W, C) image in one pass."""
    from . import compiled

    dt = problem.dtype
    forms: list[NDArray[np.floating] | tuple[NDArray[np.floating], NDArray[np.floating]]]
    if cost.compiled_form(problem.shape, problem.factors is not None) == names.SEPARABLE:
        assert problem.factors is not None
        forms = [(column.astype(dt), row.astype(dt)) for column, row in problem.factors]
    else:
        forms = [k.astype(dt) for k in problem.kernels]

    def run(source: Source, outs: Sequence[NDArray[np.floating]]) -> None:
        plane = source.plane if source.plane.ndim == 3 else source.plane[..., np.newaxis]
        plane = np.ascontiguousarray(plane)
        for form, out in zip(forms, outs, strict=True):
            target = out if out.ndim == 3 else out[..., np.newaxis]
            compiled.correlate(
                plane, source.rows, source.cols, source.left, source.cval, form, target
            )

    return run


def _compiled_one_time(problem: Problem, constants: cost.Constants) -> float:
    """What the compiled road's first call would still pay in this process: numba's import,
    and loading (cache warm) or compiling (cache cold) this specialisation."""
    form = cost.compiled_form(problem.shape, problem.factors is not None)
    return _unpaid(form, problem.source, problem.output, constants)


def _unpaid(form: str, source: str, output: str, constants: cost.Constants) -> float:
    """The one-time cost still unpaid in this process for the compiled ``form`` kernel on
    ``source`` images into ``output`` arrays (0 once this process has run it)."""
    from . import compiled

    if compiled.loaded(source, output, form):
        return 0.0
    return cost.compiled_one_time(
        constants, imported=compiled.imported(), cached=compiled.code_cached(form)
    )


# --- the strategy table ------------------------------------------------------------------------


@dataclass(frozen=True)
class Strategy:
    """One road: whether it applies (None, or why not), how to run it (``name`` is also its
    cost-model key). An ``interleaved`` road takes an (H, W, C) image whole, as one Source,
    and writes integer outputs itself (rounded, clipped); the others get one contiguous
    float plane per channel."""

    name: str
    applies: Callable[[Problem], str | None]
    prepare: Callable[[Problem, cost.Constants], Runner]
    interleaved: bool = False


STRATEGY_TABLE: dict[str, Strategy] = {
    s.name: s
    for s in (
        Strategy(names.DIRECT, _direct_applies, _prepare_direct),
        Strategy(names.SEPARABLE, _separable_applies, _prepare_separable),
        Strategy(names.FFT, _fft_applies, _prepare_fft),
        Strategy(names.OVERLAP_ADD, _fft_applies, _prepare_overlap_add),
        Strategy(names.COMPILED, _compiled_applies, _prepare_compiled, interleaved=True),
    )
}


# --- planning ----------------------------------------------------------------------------------


def working_dtype(dtype: np.dtype | type | str) -> np.dtype:
    """float32 (and float16) compute in float32, everything else real in float64."""
    dt = np.dtype(dtype)
    if dt.kind == "c" or dt.kind not in "biuf":
        raise UsageError(f"cannot filter an image of dtype {dt}: real numbers only")
    if dt.kind == "f" and dt.itemsize <= 4:
        return np.dtype(np.float32)
    return np.dtype(np.float64)


def _value_bound(dtype: np.dtype) -> float:
    """Largest |x| an integer dtype holds (inf for floats)."""
    if dtype.kind == "b":
        return 1.0
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        return float(max(abs(int(info.min)), int(info.max)))
    return float("inf")


def _check_kernel(kernel: ArrayLike, name: str = "kernel") -> NDArray[np.float64]:
    if np.iscomplexobj(kernel):
        raise UsageError(
            f"{name}: complex numbers are not supported, only real ones", parameters=["kernel"]
        )
    try:
        k = np.asarray(kernel, dtype=np.float64)
    except (TypeError, ValueError):
        raise UsageError(f"{name}: not an array of real numbers", parameters=["kernel"]) from None
    if k.ndim != 2 or k.size == 0:
        raise UsageError(
            f"{name}: must be a non-empty 2-D array, got shape {k.shape}", parameters=["kernel"]
        )
    if not np.all(np.isfinite(k)):
        raise UsageError(f"{name}: holds NaN or infinity", parameters=["kernel"])
    return k


def strategy_keyword(strategy: str, method: str | None) -> str:
    """The road asked for: ``strategy``, or the deprecated ``method=`` spelling of it.

    ``method=`` named the strategy in convfilt 0.1; it now warns (DeprecationWarning) and
    still works. Both, naming different roads, is a UsageError.
    """
    if method is None:
        return strategy
    warnings.warn("method= naming the strategy is deprecated; use strategy=", DeprecationWarning, 3)
    if strategy not in (names.AUTO, method):
        raise UsageError(
            f"strategy={strategy!r} and method={method!r} disagree; give strategy only",
            parameters=["strategy"],
        )
    return method


def check_tolerance(tolerance: float | None) -> float | None:
    """``tolerance`` (None, or a bound on ``max|result - exact| / max|image|`` > 0); a
    UsageError for 0, negatives and NaN, TypeError for what is not a number."""
    if tolerance is None:
        return None
    if isinstance(tolerance, bool) or not isinstance(tolerance, int | float | np.floating):
        raise TypeError(f"tolerance must be a number or None, got {type(tolerance).__name__}")
    if not tolerance > 0:  # NaN too
        raise UsageError(
            f"tolerance must be > 0 (a fraction of max|image|), got {tolerance}",
            parameters=["tolerance"],
        )
    return float(tolerance)


def _check_mode_strategy(mode: str, strategy: str) -> None:
    if mode not in MODES:
        raise UsageError(
            f"unknown mode {mode!r}; choose one of {', '.join(MODES)}", parameters=["mode"]
        )
    if strategy != names.AUTO and strategy not in STRATEGIES:
        raise UsageError(
            f"unknown strategy {strategy!r}; choose auto or one of {', '.join(STRATEGIES)}",
            parameters=["strategy"],
        )


@dataclass(frozen=True)
class _KernelFacts:
    """What planning needs of one kernel: its rank-one factors (None if it has none), whether
    every tap is an integer, and its norms (``cost.KernelNorms``)."""

    factors: tuple[NDArray[np.float64], NDArray[np.float64]] | None
    integer: bool
    norms: cost.KernelNorms


def _kernel_facts(kernel: NDArray[np.float64], dtype: np.dtype) -> _KernelFacts:
    """``_KernelFacts`` of ``kernel`` separated for ``dtype``, remembered for the kernels of
    recent calls (a batch of images, a band per call, the channels: the same kernel again):
    separating it cost a small image's call more than filtering it."""
    k = np.asarray(kernel, np.float64)
    return _facts_of(k.tobytes(), k.shape, dtype)


@lru_cache(maxsize=64)
def _facts_of(values: bytes, shape: tuple[int, int], dtype: np.dtype) -> _KernelFacts:
    """``_kernel_facts`` of the float64 kernel ``values`` of ``shape`` (its factors made
    read-only: the cache hands them to every later call)."""
    k = np.frombuffer(values, dtype=np.float64).reshape(shape)
    factors = separate(k, dtype)
    integer = bool((k == np.round(k)).all())
    l1 = float(np.abs(k).sum())
    if factors is None:
        return _KernelFacts(None, integer, cost.KernelNorms(l1))
    for factor in factors:
        factor.flags.writeable = False
    column, row = factors
    factored = float(np.abs(column).sum() * np.abs(row).sum())
    residual = float(np.abs(k - np.outer(column, row)).sum())
    return _KernelFacts(factors, integer, cost.KernelNorms(l1, factored, residual))


def _norms(each: list[cost.KernelNorms], *, separable: bool) -> cost.KernelNorms:
    """The norms of several kernels for the error bounds: the largest of each term, and the
    factored terms only if every kernel is ``separable``."""
    l1 = max(n.l1 for n in each)
    if not separable:
        return cost.KernelNorms(l1)
    return cost.KernelNorms(l1, max(n.factored for n in each), max(n.residual for n in each))


def _problem(
    out_shape: tuple[int, int],
    channels: int,
    kernels: Sequence[NDArray[np.float64]],
    image_dtype: np.dtype,
    *,
    cval: float | None = None,
    largest: float | None = None,
    work: np.dtype | None = None,
    stored: bool = False,
) -> Problem:
    """The job; ``cval`` only where it is read (constant mode), ``largest`` the measured
    max|x| of a float image (else the dtype's range, infinite for floats); ``work``
    overrides the working dtype; ``stored``: an integer image's result in its own dtype."""
    dt = working_dtype(image_dtype) if work is None else work
    facts = [_kernel_facts(k, dt) for k in kernels]
    factors = [f.factors for f in facts if f.factors is not None]
    integer_cval = cval is None or float(cval).is_integer()
    magnitude = _value_bound(image_dtype) if largest is None else largest
    magnitude = max(magnitude, 0.0 if cval is None else abs(cval))
    norms = _norms([f.norms for f in facts], separable=len(factors) == len(kernels))
    bound = magnitude * norms.l1
    return Problem(
        height=out_shape[0],
        width=out_shape[1],
        channels=channels,
        kernels=tuple(kernels),
        dtype=dt,
        factors=tuple(factors) if len(factors) == len(kernels) else None,
        exact=image_dtype.kind in "biu" and all(f.integer for f in facts) and integer_cval,
        bound=bound,
        norms=norms,
        source=cost.dtype_name(image_dtype),
        output=cost.dtype_name(image_dtype if stored and image_dtype.kind in "iu" else dt),
    )


def _estimates(
    problem: Problem, forced: str, constants: cost.Constants
) -> tuple[dict[str, float], dict[str, float], list[str]]:
    """Each applicable strategy's estimate and error bound, and a note for each that does
    not apply (an error if it is the forced one)."""
    estimates: dict[str, float] = {}
    bounds: dict[str, float] = {}
    notes: list[str] = []
    # every road but the compiled one rounds an integer image's result in a pass of its own
    rounding = cost.rounding_seconds(problem.shape) if problem.output in INTEGER_OUTPUTS else 0.0
    for name, strategy in STRATEGY_TABLE.items():
        why_not = strategy.applies(problem)
        if why_not is None:
            estimate = cost.estimate(name, problem.shape, problem.dtype, constants)
            estimates[name] = estimate + (0.0 if name == names.COMPILED else rounding)
            bounds[name] = cost.error_bound(
                name, problem.shape, problem.dtype, problem.norms, constants
            )
            continue
        notes.append(f"{name} does not apply: {why_not}")
        if forced == name:
            raise UsageError(f"strategy {name!r} cannot apply: {why_not}", parameters=["strategy"])
    return estimates, bounds, notes


def _within_tolerance(
    candidates: dict[str, float], bounds: dict[str, float], forced: str, tolerance: float | None
) -> list[str]:
    """Drop from ``candidates`` the roads whose error bound exceeds ``tolerance``; the notes
    saying so. A forced road, or none left, is a UsageError naming the tightest bound."""
    if tolerance is None:
        return []
    over = {name: bound for name, bound in bounds.items() if bound > tolerance}
    if forced in over:
        raise UsageError(
            f"strategy {forced!r} cannot meet tolerance {tolerance:.3g}: its error bound is "
            f"{over[forced]:.3g} of max|image|",
            parameters=["strategy", "tolerance"],
        )
    if over and len(over) == len(candidates):
        tightest = min(bounds, key=bounds.__getitem__)
        raise UsageError(
            f"no strategy meets tolerance {tolerance:.3g}: the tightest error bound is "
            f"{tightest}'s, {bounds[tightest]:.3g} of max|image|",
            parameters=["tolerance"],
        )
    for name in over:
        candidates.pop(name, None)
    return [
        f"auto skips {n}: error bound {b:.2g} > tolerance {tolerance:.2g}" for n, b in over.items()
    ]


def _policy_notes(problem: Problem) -> list[str]:
    """What the plan does beyond its road: rounding integers."""
    notes = []
    if problem.exact and problem.bound < EXACT_DIRECT_LIMIT:
        notes.append("integer image and kernel: results rounded to exact integers")
    elif problem.exact:
        notes.append(
            "integer image and kernel: results rounded to integers, but beyond 2**53 only to "
            "the nearest float64"
        )
    return notes


def _cheapest(candidates: dict[str, float], estimates: dict[str, float]) -> tuple[str, str]:
    """``auto``'s pick among ``candidates`` and its reason: the cheapest estimate, or a banded
    road within ``BANDED_PREFERENCE`` of it."""
    chosen = min(candidates, key=candidates.__getitem__)
    others = sorted((s, n) for n, s in estimates.items() if n != chosen)
    runner_up = f"; next {others[0][1]} {others[0][0] * 1e3:.3g} ms" if others else ""
    reason = f"{chosen}: cheapest estimate, {estimates[chosen] * 1e3:.3g} ms{runner_up}"
    tie = candidates[chosen] * (1 + BANDED_PREFERENCE)
    near = [n for n in BANDED if candidates.get(n, np.inf) <= tie]
    if chosen not in BANDED and near:
        fastest, chosen = chosen, min(near, key=candidates.__getitem__)
        reason = (
            f"{chosen}: estimate {estimates[chosen] * 1e3:.3g} ms, within "
            f"{BANDED_PREFERENCE:.0%} of {fastest}'s {estimates[fastest] * 1e3:.3g} ms, "
            "and banded roads sum each output from its own window"
        )
    return chosen, reason


# Seconds the compiled road would have saved the calls that did not take it because its
# one-time cost was unpaid (``_amortise``).
_forgone = [0.0]


def _amortise(
    chosen: str, reason: str, candidates: dict[str, float], one_time: float, runs: int
) -> tuple[str, str]:
    """The compiled road's one-time cost (import, machine code) paid as a ski rental.

    A call takes the road once the time it would save, added to what earlier calls of this
    process would have saved, reaches that cost: one large image pays it at once, a run of
    medium ones after a few calls, a single small image never (at most twice the best choice
    in hindsight). ``runs``: how often the caller will run the plan (a deconvolution runs
    it twice an iteration), each saving counted; 0 for a question (``plan``), counted not.
    """
    if one_time <= 0 or chosen == names.COMPILED or names.COMPILED not in candidates:
        return chosen, reason
    steady = candidates[names.COMPILED] - one_time
    saving = (candidates[chosen] - steady) * max(runs, 1)
    if saving <= 0:
        return chosen, reason
    if _rent(saving, one_time, count=runs > 0):
        return names.COMPILED, (
            f"compiled: {steady * 1e3:.3g} ms a call against {chosen}'s "
            f"{candidates[chosen] * 1e3:.3g} ms; its one-time {one_time:.2g} s (import, "
            "machine code) is paid now, as this call's and earlier calls' savings reach it"
        )
    return chosen, (
        f"{reason}; compiled would take {steady * 1e3:.3g} ms once its one-time "
        f"{one_time:.2g} s is paid (savings so far {_forgone[0]:.2g} s)"
    )


def _rent(saving: float, one_time: float, *, count: bool) -> bool:
    """The ski rental's account: whether ``saving`` and what earlier calls forwent reach
    ``one_time`` (then the account is spent, if ``count``); else ``count`` adds it."""
    if _forgone[0] + saving >= one_time:
        if count:
            _forgone[0] = 0.0
        return True
    if count:
        _forgone[0] += saving
    return False


def rent_compiled_kernel(form: str, source: str, saving: float) -> bool:
    """Whether a caller's own compiled kernel (``form``, on ``source`` images: matching's
    window energies) should run rather than its numpy loops, which take ``saving`` seconds
    longer: yes once its one-time cost (numba's import, its machine code) is paid in this
    process, or when this call's saving and what earlier calls forwent reach that cost (the
    roads' ski rental, one account: ``_amortise``); else this saving is counted."""
    one_time = _unpaid(form, source, "float64", calibration.load_constants())
    return one_time == 0.0 or _rent(saving, one_time, count=True)


def _decide(
    problem: Problem,
    forced: str,
    image_shape: tuple[int, ...],
    mode: str,
    tolerance: float | None = None,
    runs: int = 0,
) -> tuple[Plan, Strategy, cost.Constants]:
    """Estimate every applicable strategy and pick (or check the forced) one, among those
    whose error bound is within ``tolerance``; ``runs``: how often the caller runs the plan
    (0: not at all, a question; ``_amortise``)."""
    constants = calibration.load_constants()
    estimates, bounds, notes = _estimates(problem, forced, constants)
    one_time = 0.0
    if names.COMPILED in estimates:
        one_time = _compiled_one_time(problem, constants)
        estimates[names.COMPILED] += one_time
    candidates = dict(estimates)
    notes += _within_tolerance(candidates, bounds, forced, tolerance)
    rows, cols = cost.fft_size(problem.shape)
    fft_bytes = 3 * rows * cols * problem.dtype.itemsize
    fft, overlap_add = names.TRANSFORMS
    if fft in candidates and overlap_add in candidates and fft_bytes > FFT_MEMORY_LIMIT:
        del candidates[fft]
        notes.append(f"auto skips fft: it needs ~{fft_bytes / 2**20:.0f} MB of transforms")
    notes += _policy_notes(problem)
    if forced == names.AUTO:
        chosen, reason = _cheapest(candidates, estimates)
        chosen, reason = _amortise(chosen, reason, candidates, one_time, runs)
    else:
        chosen, reason = forced, f"{forced}: forced by strategy={forced!r}"
    plan = Plan(
        strategy=chosen,
        estimates=estimates,
        reason=reason,
        image_shape=image_shape,
        kernel_shape=(problem.kh, problem.kw),
        dtype=cost.dtype_name(problem.dtype),
        mode=mode,
        notes=tuple(notes),
        error_bounds=bounds,
    )
    return plan, STRATEGY_TABLE[chosen], constants


def plan(
    image_shape: Sequence[int],
    kernel: ArrayLike,
    *,
    dtype: np.dtype | type | str = np.float32,
    mode: str = names.REFLECT,
    strategy: str = names.AUTO,
    tolerance: float | None = None,
    method: str | None = None,
    runs: int = 0,
    largest: float | None = None,
    work: np.dtype | type | str | None = None,
    stored: bool = False,
) -> Plan:
    """Choose a strategy for correlating an image of ``image_shape`` with ``kernel``.

    Parameters
    ----------
    image_shape : sequence of int
        (H, W) or (H, W, C).
    kernel : array_like
        The 2-D kernel, real and finite.
    dtype : dtype, optional
        The image's dtype: float32 (and float16) compute in float32, others in float64.
    mode : str, optional
        Boundary mode, as in ``scipy.ndimage`` (``names.MODES``).
    strategy : str, optional
        ``"auto"`` lets the planner choose; a strategy's name (``names.STRATEGIES``) forces it.
    tolerance : float, optional
        Skip the roads whose error bound exceeds this fraction of max|image|.
    method : str, optional
        Deprecated spelling of ``strategy``.
    runs : int, optional
        How many times the caller will run the plan (an iterative deconvolution runs one
        convolution many times). The compiled road's one-time cost is weighed against its
        saving over all of them, and they count toward that cost in later plans, as calls
        that ran do. 0, the default: a question only, which counts nothing.
    largest : float, optional
        max|image|, where the caller has measured it: it decides whether a float32
        transform can overflow (unmeasured, it is assumed not to).
    work : dtype, optional
        The working dtype, where the caller computes in another than ``dtype``'s own (the
        filters compute 8- and 16-bit images in float32).
    stored : bool, optional
        The result is rounded back to an integer image's dtype (as the filters return it):
        a pass that every road but the compiled one prices.

    Returns
    -------
    Plan
        The chosen strategy, every applicable strategy's estimated seconds and error bound,
        the reason and notes (strategies that do not apply, and why).

    Raises
    ------
    UsageError
        An unknown mode or strategy, a forced strategy that cannot apply, a bad kernel or shape.

    Notes
    -----
    The estimates come from the cost model (``cost``) with the constants ``convfilt
    calibrate`` stored, or the shipped ones (``calibration``); planning costs tens of
    microseconds and touches no pixel. ``auto`` takes the cheapest estimate, preferring a
    banded road within ``BANDED_PREFERENCE`` of a transform's.

    Examples
    --------
    >>> import numpy as np
    >>> from convfilt import plan
    >>> chosen = plan((512, 512), np.ones((3, 3)) / 9)
    >>> sorted(chosen.estimates)
    ['compiled', 'direct', 'fft', 'overlap-add', 'separable']
    >>> chosen.strategy in chosen.estimates
    True
    >>> plan((512, 512), np.ones((3, 3)), strategy="fft").reason
    "fft: forced by strategy='fft'"
    """
    strategy = strategy_keyword(strategy, method)
    _check_mode_strategy(mode, strategy)
    k = _check_kernel(kernel)
    shape = tuple(int(n) for n in image_shape)
    if len(shape) not in (2, 3) or min(shape) < 1:
        raise UsageError(f"image shape must be (H, W) or (H, W, C), got {shape}")
    channels = shape[2] if len(shape) == 3 else 1
    size = (shape[0], shape[1])
    if isinstance(runs, bool) or not isinstance(runs, int) or runs < 0:
        raise UsageError(f"runs must be an int >= 0, got {runs!r}", parameters=["runs"])
    if largest is not None and not np.isfinite(largest):
        raise UsageError(f"largest must be a finite max|image|, got {largest}")
    working = None if work is None else np.dtype(work)
    problem = _problem(
        size, channels, [k], np.dtype(dtype), largest=largest, work=working, stored=stored
    )
    return _decide(problem, strategy, shape, mode, check_tolerance(tolerance), runs=runs)[0]


def _all_finite(x: NDArray[np.generic]) -> bool:
    """True if a float array holds no NaN/inf (a sum first: one cheap pass when it is clean)."""
    if x.dtype.kind != "f":
        return True
    with np.errstate(over="ignore", invalid="ignore"):
        if np.isfinite(x.sum()):  # in the array's own dtype, faster than in float64 (§5)
            return True
    return bool(np.isfinite(x).all())


def _largest(x: NDArray[np.generic]) -> float | None:
    """max|x| of a float32/float16 image (None otherwise): it decides whether a float32
    transform can overflow; wider dtypes cannot (their bound stays the dtype's range).
    NaN if ``x`` holds a NaN, inf if an infinity."""
    if x.dtype.kind != "f" or x.dtype.itemsize > 4:
        return None
    return max(float(x.max()), -float(x.min()))


def _finite_and_largest(x: NDArray[np.generic]) -> tuple[bool, float | None]:
    """``(_all_finite(x), _largest(x))`` in as few passes: for a float32 image max and min
    tell both (a NaN or an infinity shows in them), else the one-pass check alone."""
    largest = _largest(x)
    if largest is None:
        return _all_finite(x), None
    finite = math.isfinite(largest)
    return finite, largest if finite else None


def as_image(image: ArrayLike, ndims: tuple[int, ...] = (2, 3)) -> NDArray[np.generic]:
    """The image as an array: TypeError unless it holds real numbers, UsageError unless it
    has one of ``ndims`` dimensions and some pixels."""
    x = np.asarray(image) if image is not None else None
    if x is None or x.dtype.kind not in "biufc":
        raise TypeError(f"image must be an array of real numbers, got {type(image).__name__}")
    if x.ndim not in ndims or x.size == 0:
        layouts = " or ".join({2: "(H, W)", 3: "(H, W, C)"}[n] for n in ndims)
        raise UsageError(
            f"image must be a non-empty {layouts} array, got shape {x.shape}",
            parameters=["image"],
        )
    return x


Output = NDArray[np.generic] | np.dtype | type | str | None


_ROUND_BYTES = 2**21  # rows of floats rounded at a time by ``_round_into``, in cache


def _round_into(result: NDArray[Any], target: NDArray[Any]) -> None:
    """``target[...] = clip(rint(result))`` to the integer range, a few rows at a time: no
    full-size float temporary (a streamed band's pair of them was most of its memory)."""
    info = np.iinfo(target.dtype.name)
    row_bytes = max(1, result[:1].nbytes)
    step = max(1, _ROUND_BYTES // row_bytes)
    scratch = np.empty((min(step, len(result)), *result.shape[1:]), dtype=result.dtype)
    for start in range(0, len(result), step):
        rows = scratch[: len(result[start : start + step])]
        np.rint(result[start : start + step], out=rows)
        np.clip(rows, info.min, info.max, out=rows)
        np.copyto(target[start : start + step], rows, casting="unsafe")


def to_output(result: NDArray[Any], output: Output) -> NDArray[Any]:
    """``result`` as ``output`` asks, as in scipy.ndimage: None keeps it; a dtype, or an array
    of the result's shape to fill. Integer outputs are rounded half-to-even and clipped to
    their range (scipy truncates and wraps around instead)."""
    if output is None:
        return result
    if isinstance(output, np.ndarray):
        if output.shape != result.shape:
            raise UsageError(
                f"output has shape {output.shape}, the result {result.shape}",
                parameters=["output"],
            )
        target = output
    else:
        target = np.empty(result.shape, dtype=np.dtype(output))
    kind = target.dtype.kind
    if kind in "iu" and result.ndim and result.dtype.kind == "f":
        _round_into(result, target)
        return target
    if kind in "iu":
        info = np.iinfo(target.dtype.name)
        result = np.clip(np.rint(result), info.min, info.max)
    elif kind == "b":
        result = np.rint(result) != 0
    elif kind != "f":
        raise TypeError(f"output must be a real dtype or array, got {target.dtype}")
    np.copyto(target, result, casting="unsafe")
    return target


def _filter(
    image: ArrayLike,
    kernel: ArrayLike,
    *,
    flip: bool,
    mode: str,
    cval: float,
    strategy: str,
    nan_policy: str,
    on_plan: Callable[[Plan], None] | None,
    band: Band | None = None,
    tolerance: float | None = None,
    work: np.dtype | None = None,
    stored: bool = False,
) -> NDArray[Any]:
    """Correlate with ``kernel`` (or, ``flip``, with it flipped and centred as scipy convolves),
    non-finite values handled by ``nan_policy`` (:mod:`convfilt.weighted`); with ``band``,
    only that band's rows (the strategy chosen for the whole image). ``work`` and ``stored``
    as in :func:`filter_stored`."""
    _check_mode_strategy(mode, strategy)
    policy = weighted.check_policy(nan_policy)
    tolerance = check_tolerance(tolerance)
    if not np.isfinite(cval):
        raise UsageError(f"cval must be a finite number, got {cval}", parameters=["cval"])
    x = as_image(image)
    k = _check_kernel(kernel)
    if policy == names.OMIT and x.dtype.kind == "f":
        weighted.check_renormalizable(k)
    road = partial(
        _road, flip=flip, mode=mode, strategy=strategy, on_plan=on_plan, band=band,
        tolerance=tolerance, work=work, stored=stored,
    )  # fmt: skip
    finite, largest = _finite_and_largest(x)
    if finite:
        return road(largest=largest)(x, k, cval, True)
    if policy == names.RAISE:
        weighted.raise_if_not_finite(x, None if band is None else band.held)
    planes = x[..., np.newaxis] if x.ndim == 2 else x
    rows = planes.shape[0] if band is None else band.rows
    out = np.empty((rows, *planes.shape[1:]), dtype=working_dtype(x.dtype))
    each = road()  # one road for every channel: it reports its plan once
    for c in range(planes.shape[2]):
        plane = np.asarray(planes[..., c], dtype=out.dtype)
        if policy == names.OMIT:
            out[..., c] = weighted.normalized(plane, k, cval, each, policy=names.OMIT)
        else:
            out[..., c] = weighted.propagate(plane, k, cval, each)
    return out[..., 0] if x.ndim == 2 else out


def _road(
    *,
    flip: bool,
    mode: str,
    strategy: str,
    on_plan: Callable[[Plan], None] | None,
    band: Band | None,
    tolerance: float | None = None,
    work: np.dtype | None = None,
    stored: bool = False,
    largest: float | None = None,
) -> weighted.Correlate:
    """The engine as :mod:`convfilt.weighted` calls it on finite planes (of ``band``'s rows):
    the image's own correlations take ``strategy`` (the first reports its plan), 0/1 masks
    the planner's road; ``work``, ``stored`` and ``largest`` (max|x|, measured by the
    caller) apply to the image's own. A band given the whole image's road
    (``Band.strategy``, decided once for the image) takes it where ``strategy`` is auto."""
    reported: list[bool] = []
    if band is not None and band.strategy is not None and strategy == names.AUTO:
        strategy = band.strategy

    def correlate_plane(
        plane: NDArray[Any], kernel: NDArray[np.float64], cval: float, main: bool
    ) -> NDArray[np.floating]:
        report = on_plan if main and not reported else None
        if report is not None:
            reported.append(True)
        return _filter_finite(
            plane,
            kernel,
            flip=flip,
            mode=mode,
            cval=cval,
            strategy=strategy if main else names.AUTO,
            on_plan=report,
            band=band,
            tolerance=tolerance if main else None,
            work=work if main else None,
            stored=stored and main,
            largest=largest if main else None,
        )

    return correlate_plane


def _filter_finite(
    x: NDArray[np.generic],
    k: NDArray[np.float64],
    *,
    flip: bool,
    mode: str,
    cval: float,
    strategy: str,
    on_plan: Callable[[Plan], None] | None,
    band: Band | None,
    tolerance: float | None,
    work: np.dtype | None = None,
    stored: bool = False,
    largest: float | None = None,
) -> NDArray[Any]:
    """``_filter`` of a finite image on the road the planner picks (or ``strategy``), among
    those whose error bound is within ``tolerance``; ``largest``: max|x| if known."""
    kh, kw = k.shape
    if flip:
        k = np.ascontiguousarray(k[::-1, ::-1])
        pads = ((kh - 1) // 2, kh // 2), ((kw - 1) // 2, kw // 2)
    else:
        pads = (kh // 2, (kh - 1) // 2), (kw // 2, (kw - 1) // 2)
    channels = x.shape[2] if x.ndim == 3 else 1
    height = x.shape[0] if band is None else band.height
    k, pads = fold_to_image(k, pads, (height, x.shape[1]), mode, cval)
    outside = float(cval) if mode == "constant" else None
    largest = _largest(x) if largest is None else largest
    facts = partial(_problem, cval=outside, largest=largest, work=work, stored=stored)
    problem = facts((height, x.shape[1]), channels, [k], x.dtype)
    # a band is not a call of its own: counting its saving toward the compiled road's
    # one-time cost could switch roads part-way through one image
    chosen, road, constants = _decide(
        problem, strategy, (height, *x.shape[1:]), mode, tolerance, runs=int(band is None)
    )
    if on_plan is not None:
        on_plan(chosen)
    if band is None:
        rows = extension_indices(x.shape[0], *pads[0], mode)
    else:  # the band's rows, run by the strategy chosen for the whole image
        problem = facts((band.rows, x.shape[1]), channels, [k], x.dtype)
        rows = band.extended(*pads[0], mode)
    cols = extension_indices(x.shape[1], *pads[1], mode)
    source = Source(x, rows, cols, pads[1][0], float(cval))
    out = _run(road.prepare(problem, constants), road.interleaved, problem, source)
    if problem.output != cost.dtype_name(problem.dtype) and not road.interleaved:
        return to_output(out, np.dtype(problem.output))  # rounded and clipped
    if problem.exact and out.dtype.kind == "f":
        np.rint(out, out=out)
    return out


# The period of each boundary mode's extension of an axis of n pixels: taps a period apart read
# the same pixel for every output, so they can be summed into one.
_PERIODS: dict[str, Callable[[int], int]] = {
    "wrap": lambda n: n,
    "reflect": lambda n: 2 * n,
    "mirror": lambda n: max(2 * n - 2, 1),
}


def fold_to_image(
    k: NDArray[np.float64],
    pads: tuple[tuple[int, int], tuple[int, int]],
    shape: tuple[int, int],
    mode: str,
    cval: float,
) -> tuple[NDArray[np.float64], tuple[tuple[int, int], tuple[int, int]]]:
    """The kernel (taps at offsets ``-before..after`` per axis) folded onto an image of
    ``shape``, wherever it is longer than the image can use: the same result, exactly, for a
    fraction of the work and memory (a sigma-50 blur of a 1-pixel-wide image reads one column).

    wrap, reflect and mirror extend an axis periodically, so taps a period apart are summed;
    nearest reads the edge pixel for every offset beyond n - 1, so those taps join the tap at
    n - 1; constant (cval 0) never reads the image beyond n - 1, so those taps are dropped.
    The folded kernel is centred again (zeros added), with its new ``pads``.
    """
    for axis in (0, 1):
        n, (before, after) = shape[axis], pads[axis]
        period = _PERIODS.get(mode, lambda n: 0)(n)
        if period:
            half = period // 2
            reach = half
        elif mode == "nearest" or float(cval) == 0.0:
            half, reach = 0, n - 1
        else:
            continue  # constant with a cval: every tap counts
        if before + after + 1 <= 2 * reach + 1 + 2:
            continue  # already within what the image can use
        offsets = np.arange(-before, after + 1)
        if period:
            offsets = (offsets + half) % period - half
        inside = np.abs(offsets) <= reach
        if mode == "nearest":
            offsets, inside = np.clip(offsets, -reach, reach), np.ones_like(inside)
        folded = np.zeros((2 * reach + 1, k.shape[1]) if axis == 0 else (k.shape[0], 2 * reach + 1))
        taps = np.moveaxis(k, axis, 0)[inside]
        np.add.at(np.moveaxis(folded, axis, 0), offsets[inside] + reach, taps)
        k = folded
        pads = ((reach, reach), pads[1]) if axis == 0 else (pads[0], (reach, reach))
    return k, pads


def _run(run: Runner, interleaved: bool, problem: Problem, source: Source) -> NDArray[Any]:
    """Carry out a prepared road on ``source`` (an (H, W) or (H, W, C) image)."""
    x = source.plane
    if interleaved:  # the whole image at once, in its output dtype
        out = np.empty((problem.height, *x.shape[1:]), dtype=problem.output)
        run(source, [out])
        return out
    out = np.empty((problem.height, *x.shape[1:]), dtype=problem.dtype)
    if x.ndim == 2:
        run(source, [out])
        return out
    # the banded products write through BLAS, which needs unit-stride rows
    # (docs/performance.md): each channel goes to a contiguous plane, then into the output
    plane_out = np.empty(out.shape[:2], dtype=problem.dtype)
    for c in range(x.shape[2]):
        run(replace(source, plane=x[..., c]), [plane_out])
        out[..., c] = plane_out
    return out


def filter_stored(
    image: ArrayLike,
    kernel: ArrayLike,
    *,
    flip: bool = False,
    mode: str = names.REFLECT,
    cval: float = 0.0,
    strategy: str = names.AUTO,
    on_plan: Callable[[Plan], None] | None = None,
    band: Band | None = None,
    nan_policy: str = names.PROPAGATE,
    work: np.dtype | type | str = np.float64,
) -> NDArray[Any]:
    """Correlate (``flip``: convolve) an image and return it in its own dtype.

    Parameters
    ----------
    image, kernel, mode, cval, strategy, on_plan, band, nan_policy
        As in :func:`correlate`.
    flip : bool, optional
        Convolve (the kernel flipped) rather than correlate.
    work : dtype, optional
        The working dtype, float32 or float64.

    Returns
    -------
    ndarray
        Float images in ``work``; integer images in their own dtype, rounded half-to-even
        and clipped: on the compiled road band by band in the same pass (no full-size
        float copy), on the others after. For ``filters``, which filters 8- and 16-bit
        images in float32.

    Examples
    --------
    >>> import numpy as np
    >>> filter_stored(np.full((4, 4), 7, np.uint8), np.full((3, 3), 1 / 9)).dtype
    dtype('uint8')
    """
    dt = np.dtype(work)
    if dt not in (np.dtype(np.float32), np.dtype(np.float64)):
        raise UsageError(f"work must be float32 or float64, not {dt}", parameters=["work"])
    return _filter(
        image, kernel, flip=flip, mode=mode, cval=cval, strategy=strategy, on_plan=on_plan,
        band=band, nan_policy=nan_policy, work=dt, stored=True,
    )  # fmt: skip


_FILTER_DOC = """{summary}

    Parameters
    ----------
    image : array_like
        (H, W) or (H, W, C), channels last, real numbers (integers, floats, bool).
    kernel : array_like
        The 2-D kernel (kh, kw), real and finite; its origin is at index (kh // 2, kw // 2).
    mode : str, optional
        Boundary mode with ``scipy.ndimage``'s names and meaning: ``reflect`` (default),
        ``mirror``, ``nearest``, ``wrap``, ``constant``.
    cval : float, optional
        The value outside the image in ``constant`` mode.
    strategy : str, optional
        The road: ``auto`` (the planner's cheapest estimate), ``direct``, ``separable`` (a
        rank-one kernel), ``fft`` or ``overlap-add``. Every road gives the same result
        within 1e-5 (float32) or 1e-10 (float64) of the data's range.
    output : array or dtype, optional
        As in ``scipy.ndimage``: an array of the image's shape to write into, or the dtype
        of the returned array. Integer outputs are rounded half-to-even and clipped to
        their range (scipy truncates and wraps around).
    nan_policy : {{'propagate', 'omit', 'raise'}}, optional
        What NaN and inf do (:mod:`convfilt.weighted`): ``propagate`` (default) gives
        ``scipy.ndimage``'s result, each spreading over its kernel's footprint; ``omit``
        leaves NaN out and renormalizes the kernel over the valid pixels (normalized
        convolution, as ``astropy.convolution.convolve`` with ``nan_treatment='interpolate'``,
        ``normalize_kernel=False``): NaN only where no valid pixel is in reach; ``raise``
        refuses them. Every road gives the same answer. A no-op on integer images.
    tolerance : float, optional
        The largest error accepted, as a fraction of max|image|: the planner skips the roads
        whose error bound (``plan(...).error_bounds``, :func:`convfilt.cost.error_bound`)
        exceeds it. None (default): every road, each within the float tolerance.
    on_plan : callable, optional
        Called once with the :class:`Plan` carried out (the command line can print it).
    band : Band, optional
        ``image`` holds only some rows of a larger image; the result is that band's rows,
        computed by the strategy chosen for the whole image (:mod:`convfilt.tiles`).
    method : str, optional
        Deprecated spelling of ``strategy`` (a DeprecationWarning).

    Returns
    -------
    ndarray
        The image's shape. Without ``output``: float32 for float32 (and float16) images,
        float64 for every other dtype, integers included -- with an integer kernel, an
        integer image's result is rounded to exact integers (unlike scipy, which returns
        the input's dtype, truncated).

    Raises
    ------
    TypeError
        ``image`` or ``output`` is not made of real numbers (None, strings, objects).
    UsageError
        A bad shape, kernel, mode, strategy, ``nan_policy``, ``tolerance`` or ``cval``; no
        road (or the forced one) within ``tolerance``; NaN or inf under
        ``nan_policy='raise'``; a kernel summing to ~0 under ``'omit'`` (a ``ValueError``).

    Notes
    -----
    {notes} Cost: ``direct`` ~ kh·kw·H·W·C multiply-adds (as banded matrix
    products), ``separable`` ~ (kh + kw)·H·W·C, ``fft`` ~ P·log2 P·C for P padded transform
    points; ``plan`` shows the estimates.

    Examples
    --------
    >>> import numpy as np
    >>> from scipy import ndimage
    >>> from convfilt import {name}
    >>> image = np.arange(30.0).reshape(5, 6)
    >>> kernel = np.array([[1.0, 2.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, -1.0]])
    >>> bool(np.allclose({name}(image, kernel), ndimage.{name}(image, kernel)))
    True
    >>> bool(np.allclose({name}(image, kernel, strategy="fft"), {name}(image, kernel)))
    True
    >>> {name}(np.full((3, 3), 10, np.uint8), np.ones((3, 3)) / 9, output=np.uint8)[1, 1]
    np.uint8(10)
    """


@dask_aware(given_kernel, working_dtype, plan)
def correlate(
    image: ArrayLike,
    kernel: ArrayLike,
    *,
    mode: str = names.REFLECT,
    cval: float = 0.0,
    strategy: str = names.AUTO,
    nan_policy: str = names.PROPAGATE,
    tolerance: float | None = None,
    output: Output = None,
    on_plan: Callable[[Plan], None] | None = None,
    band: Band | None = None,
    method: str | None = None,
) -> NDArray[Any]:
    strategy = strategy_keyword(strategy, method)
    result = _filter(
        image, kernel, flip=False, mode=mode, cval=cval, strategy=strategy,
        nan_policy=nan_policy, on_plan=on_plan, band=band, tolerance=tolerance,
    )  # fmt: skip
    return to_output(result, output)


@dask_aware(given_kernel, working_dtype, plan)
def convolve(
    image: ArrayLike,
    kernel: ArrayLike,
    *,
    mode: str = names.REFLECT,
    cval: float = 0.0,
    strategy: str = names.AUTO,
    nan_policy: str = names.PROPAGATE,
    tolerance: float | None = None,
    output: Output = None,
    on_plan: Callable[[Plan], None] | None = None,
    band: Band | None = None,
    method: str | None = None,
) -> NDArray[Any]:
    strategy = strategy_keyword(strategy, method)
    result = _filter(
        image, kernel, flip=True, mode=mode, cval=cval, strategy=strategy,
        nan_policy=nan_policy, on_plan=on_plan, band=band, tolerance=tolerance,
    )  # fmt: skip
    return to_output(result, output)


correlate.__doc__ = _FILTER_DOC.format(
    name="correlate",
    summary="Correlate an image with a 2-D kernel as it is, channel by channel.",
    notes="Correlation slides the kernel as written: "
    "``out[y, x] = sum k[i, j] image[y + i - ci, x + j - cj]``; it equals "
    "``scipy.ndimage.correlate`` per channel for every mode.",
)
convolve.__doc__ = _FILTER_DOC.format(
    name="convolve",
    summary="Convolve an image with a 2-D kernel (flipped in both axes), channel by channel.",
    notes="Convolution slides the kernel flipped: "
    "``out[y, x] = sum k[i, j] image[y - i + ci, x - j + cj]``, i.e. ``correlate`` with "
    "``kernel[::-1, ::-1]`` (for even sizes, the centre moves by one pixel, as in "
    "``scipy.ndimage.convolve``).",
)


def weighted_filter(
    image: ArrayLike,
    kernel: ArrayLike,
    weights: weighted.Weights,
    *,
    flip: bool = False,
    mode: str = names.REFLECT,
    cval: float = 0.0,
    strategy: str = names.AUTO,
    nan_policy: str = names.PROPAGATE,
    on_plan: Callable[[Plan], None] | None = None,
    band: Band | None = None,
) -> NDArray[np.floating]:
    """The weighted mean ``(K*(w·x)) / (K*w) · Σk`` of a 2-D plane, e.g. colour under alpha.

    The same path as ``nan_policy="omit"`` (:func:`convfilt.weighted.normalized`), with the
    caller's ``weights``; ``cval`` is the value beyond the border, ``weights.outside`` its
    weight. Correlation, or convolution with ``flip``; ``band`` as in :func:`correlate`.
    """
    _check_mode_strategy(mode, strategy)
    policy = weighted.check_policy(nan_policy)
    x = np.asarray(image)
    if x.ndim != 2 or x.shape != np.shape(weights.values):
        raise UsageError(
            f"image and weights must be one 2-D shape, got {x.shape}", parameters=["weights"]
        )
    k = _check_kernel(kernel)
    if policy == names.RAISE:
        weighted.raise_if_not_finite(x, None if band is None else band.held)
        policy = names.PROPAGATE
    road = _road(flip=flip, mode=mode, strategy=strategy, on_plan=on_plan, band=band)
    plane = np.asarray(x, dtype=working_dtype(x.dtype))
    return weighted.normalized(plane, k, cval, road, policy=policy, weights=weights)


def correlate_valid(
    image: ArrayLike,
    kernels: Sequence[ArrayLike],
    *,
    strategy: str = names.AUTO,
    on_plan: Callable[[Plan], None] | None = None,
    dtype: np.dtype | type | str = np.float64,
    largest: float | None = None,
    method: str | None = None,
    beside: pools.SideWork | None = None,
) -> list[NDArray[np.floating]]:
    """Valid-mode correlation of one 2-D image with several kernels of one shape.

    Output shape (H - kh + 1, W - kw + 1); entry (y, x) is ``sum(k * image[y:y+kh, x:x+kw])``.
    The planner prices all kernels together; through the FFT the image's transform is
    computed once and shared by all kernels. ``dtype`` is the working and output dtype:
    float64 (default) or float32, which halves the transforms' cost for callers that accept
    float32 rounding (about 1e-7 of ``max|x|·Σ|k|``), such as matching a float32 scene.
    ``largest``: max|image|, from a caller that has measured it (and so knows the image
    finite); it spares the engine its own passes over the image. ``beside``: the caller's
    work for a second core, started before the correlation runs; the FFT road makes its
    kernel spectra on that thread first, while the caller's thread transforms the image
    (matching's window energies: docs/performance.md, §14). ``method`` is the deprecated
    spelling of ``strategy``.

    Examples
    --------
    >>> import numpy as np
    >>> image = np.arange(12.0).reshape(3, 4)
    >>> [out.tolist() for out in correlate_valid(image, [np.ones((2, 2))])]
    [[[10.0, 14.0, 18.0], [26.0, 30.0, 34.0]]]
    """
    strategy = strategy_keyword(strategy, method)
    _check_mode_strategy("constant", strategy)
    work = np.dtype(dtype)
    if work not in (np.dtype(np.float32), np.dtype(np.float64)):
        raise UsageError(
            f"correlate_valid computes in float32 or float64, not {work}", parameters=["dtype"]
        )
    x = as_image(image, ndims=(2,))
    if not kernels:
        raise UsageError("correlate_valid needs at least one kernel", parameters=["kernels"])
    ks = [_check_kernel(k, f"kernel {i}") for i, k in enumerate(kernels)]
    kh, kw = ks[0].shape
    if any(k.shape != (kh, kw) for k in ks):
        raise UsageError("correlate_valid: all kernels must have one shape")
    h, w = x.shape[0] - kh + 1, x.shape[1] - kw + 1
    if h < 1 or w < 1:
        raise UsageError(f"kernel {kh}x{kw} is larger than the image {x.shape[0]}x{x.shape[1]}")
    if largest is None:
        if not _all_finite(x):
            raise UsageError("correlate_valid: the image holds NaN or inf", parameters=["image"])
        largest = _largest(x)
    elif not np.isfinite(largest):
        raise UsageError(f"largest must be a finite max|image|, got {largest}")
    problem = _problem((h, w), 1, ks, work, largest=largest)
    chosen, road, constants = _decide(problem, strategy, x.shape, "valid", runs=1)
    if on_plan is not None:
        on_plan(chosen)
    outs = [np.empty((h, w), dtype=work) for _ in ks]
    every_row = np.arange(x.shape[0], dtype=np.intp)
    every_col = np.arange(x.shape[1], dtype=np.intp)
    token = _side_work.set(beside)
    try:
        run = road.prepare(problem, constants)
    finally:
        _side_work.reset(token)
    if beside is not None:
        beside.start()  # where the road has not started it behind its spectra
    run(Source(x, every_row, every_col, 0, 0.0), outs)
    return outs
