"""The cost model: what each strategy should cost, given the constants (pure: no files).

The model (seconds) for an output of HxW with C channels, m kernels of khxkw:

- direct:      c_direct · C·m·H·W · kw·(R + kh - 1) + p_direct · C·m·H·W·kw + fixed,
               R = ``band_rows(kh)``
- separable:   c_sep · C·m·H · ((Rv + kh - 1)·(W + kw - 1) + (B + kw - 1)·W)
               + p_sep · C·m·H·(2W + kw - 1) + fixed
- fft:         (c_fft · P·log2 P / w + s_fft · P·log2 P · (1 - 1/w)) · (C + C·m + m) + fixed,
               P = padded transform size, w = the threads a transform of P points runs on
               (``fft_workers``)
- overlap-add: per block of L = Lh·Lw: the same transform price for L · C·(1 + m)
               + c_block · C, plus the kernels' transforms once, + the fft fixed cost.

The engine computes ``direct`` and ``separable`` as products of banded Toeplitz matrices with
row bands of R rows (and column blocks of B), so the work they do is not kh·kw per pixel but
kw·(R + kh - 1): a zero-padded band. The model counts that work, not the ideal kh·kw of
DESIGN.md, because that is what the clock sees. The second term of each (``p_*``, seconds per
output pixel and pass) prices what does not scale with the band's depth: every banded product
writes its output once, and direct adds each of its kw column products into the result. Without
it one rate cannot fit both a 3-tap pass (R = 8: small, BLAS-inefficient products, dominated by
the writes) and a 257-tap pass (R = 64: efficient products); a single rate fitted to both
priced large blurs several times too high (the measurements: docs/performance.md, §5). The FFT
term counts one forward transform per channel, one inverse per channel and kernel, and one per
kernel. Its second term (``s_fft``, the "serial" share) prices what w threads do not divide:
two threads do not run twice as fast as one, and dividing all the work by w priced large
transforms too low (§5 again). With w = 1 the term vanishes, so the fit separates the two from
transforms on either side of ``PARALLEL_FFT_SIZE``.

Where it is wrong (as scipy's ``choose_conv_method`` admits of its own):
- an FFT's copies (padding, products, crop) scale with P, not P·log P; a third term for
  them was tried, but over 32²..2048² it is too collinear with P·log P to fit stably;
- BLAS speed is not one number: small bands (R = 8) and narrow images run below the fitted
  rate, so direct is optimistic for tiny images and pessimistic for large ones;
- ``next_fast_len`` sizes with a factor 7 or 11 are slower per P·log P than powers of 2;
- nothing models cache misses of transforms that overflow L2/L3 (large P), nor other processes
  sharing the cores — calibration on a busy machine fits the busy machine;
- copies (boundary extension, crop) are folded into the rates, not modelled apart.

The constants are per dtype (float32 and float64 differ by ~2x in BLAS and FFT). Where they
come from (shipped defaults, or the ones ``convfilt calibrate`` measured and stored) is
``calibration``'s business; ``bench.calibrate`` measures them.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import asdict, dataclass, fields
from functools import cache, lru_cache

import numpy as np

from . import names

DTYPES = names.FLOAT_DTYPES

# --- tiling and threads (shared by the engine's strategies and the estimates below) ----------

PARALLEL_FFT_SIZE = 2**19  # transforms of fewer points run on one thread (docs/performance.md, §5)
# From this many points up to PARALLEL_FFT_SIZE, the kernels' transforms run on a second core
# beside the image's (``concurrent_spectra``); below it handing them over (~20 µs) costs about
# what it hides (a 256² transform takes ~140 µs; at 200² it was 10% slower).
CONCURRENT_SPECTRA_SIZE = 2**16


def available_cores() -> int:
    """The cores this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def fft_workers(points: int) -> int:
    """``scipy.fft``'s ``workers=`` for a transform over ``points`` values: one below
    ``PARALLEL_FFT_SIZE``, where starting threads costs more than they save (docs/performance.md,
    §5), else every available core, at most the ``transform_threads`` cap.

    The estimates use the same number: the work they divide among the threads, and the
    serial share they do not (``Constants.transform_seconds``).
    """
    return 1 if points < PARALLEL_FFT_SIZE else min(available_cores(), _thread_cap.get().now())


@dataclass(frozen=True)
class _Cap:
    """A ``transform_threads`` block's cap: ``limit`` threads, or once ``until()`` is true,
    ``after`` (the cap of the enclosing block)."""

    limit: int
    until: Callable[[], bool] | None = None
    after: int = 1 << 30

    def now(self) -> int:
        return self.after if self.until is not None and self.until() else self.limit


_UNCAPPED = _Cap(1 << 30)
_thread_cap: ContextVar[_Cap] = ContextVar("thread_cap", default=_UNCAPPED)


_spectra_beside: ContextVar[bool] = ContextVar("spectra_beside", default=True)


@contextmanager
def spectra_on_the_callers_thread() -> Iterator[None]:
    """Within the block (and this thread or task), the FFT road makes its kernels' spectra on
    the caller's thread: ``calibrate`` times the road as the estimates price it (without
    :func:`concurrent_spectra`'s saving)."""
    token = _spectra_beside.set(False)
    try:
        yield
    finally:
        _spectra_beside.reset(token)


def concurrent_spectra(points: int) -> bool:
    """Whether the whole-image FFT transforms its kernels on a second thread while the
    caller's thread transforms the image: where each transform runs on one thread (below
    ``PARALLEL_FFT_SIZE``), is large enough to pay for the handover
    (``CONCURRENT_SPECTRA_SIZE``), a second core is free (``transform_threads``), and the
    caller has not asked otherwise (:func:`spectra_on_the_callers_thread`).

    The estimates do not count the saving (5-10% of the road's time in most cells measured):
    they already put the road at 0.70-0.95 of its measured time in this range, and taking a
    whole transform off (a third) sent a fresh grid's cells to the FFT where the compiled
    road was 1.5-1.8x faster (docs/performance.md, §12)."""
    free = min(available_cores(), _thread_cap.get().now())
    wanted = _spectra_beside.get()
    return wanted and CONCURRENT_SPECTRA_SIZE <= points < PARALLEL_FFT_SIZE and free >= 2


@contextmanager
def transform_threads(cap: int, until: Callable[[], bool] | None = None) -> Iterator[None]:
    """Within the block (and this thread or task), transforms use at most ``cap`` threads;
    with ``until``, only until it returns true (then as many as outside the block).

    For a caller that keeps the other cores busy itself: ``match_template`` sums its windows
    on one core while the engine transforms on another, and hands that core back to the
    transforms once its sums are done (``until``). The estimates see the cap in force when
    they are made.
    """
    token = _thread_cap.set(_Cap(max(1, cap), until, _thread_cap.get().now()))
    try:
        yield
    finally:
        _thread_cap.reset(token)


def band_rows(kh: int) -> int:
    """Rows per banded-Toeplitz product for a kernel of ``kh`` rows.

    The band costs (R + kh - 1)/kh times the ideal work; BLAS wants R large. The thresholds
    are where each R measured best (docs/performance.md, §5).
    """
    if kh <= 12:
        return 8
    if kh <= 24:
        return 16
    if kh <= 96:
        return 32
    return 64


COLUMN_BLOCK = 64  # columns per banded-Toeplitz product of the separable row pass: best for
# short and long rows alike, so it does not depend on the kernel (docs/performance.md, §5)


@cache
def fast_len(n: int, real: bool = False) -> int:
    """The smallest 5-smooth (``real``) or 11-smooth length at or above ``n``.

    These are the lengths ``scipy.fft.next_fast_len`` returns (pocketfft's real transforms
    have fast radices 2, 3, 5; its complex ones 2, 3, 5, 7, 11; ``tests/test_cost.py`` checks
    the two agree). Computed here in a few lines because importing ``scipy.fft`` costs ~0.1 s,
    which the planner must not pay when it picks a road without a transform; the FFT roads
    themselves size their transforms with ``scipy.fft.next_fast_len`` (``fft_size(length=)``).
    """
    if n <= 1:
        return 1
    best = 1 << (n - 1).bit_length()  # a power of two always qualifies
    odd_factors = [1]
    for prime in (3, 5) if real else (3, 5, 7, 11):
        odd_factors = [f * prime**e for f in odd_factors for e in range(best.bit_length())]
        odd_factors = [f for f in odd_factors if f < 2 * best]
    for odd in odd_factors:
        # the smallest odd * 2**k at or above n
        shift = max(0, (-(-n // odd) - 1).bit_length())
        best = min(best, odd << shift)
    return best


# --- constants ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Constants:
    """Seconds per unit of work and of each strategy's second term (output passes; the
    transforms' serial share), per dtype; fixed seconds per call."""

    direct_float32: float
    direct_float64: float
    separable_float32: float
    separable_float64: float
    fft_float32: float
    fft_float64: float
    fft_serial_float32: float
    fft_serial_float64: float
    direct_pass_float32: float
    direct_pass_float64: float
    separable_pass_float32: float
    separable_pass_float64: float
    direct_fixed: float
    separable_fixed: float
    fft_fixed: float
    block_fixed: float
    compiled_float32: float
    compiled_float64: float
    compiled_pass_float32: float
    compiled_pass_float64: float
    compiled_fixed: float
    compiled_import: float  # one-time costs of the compiled road (``compiled_one_time``)
    compiled_load: float
    compiled_jit: float
    source: str = "default"

    def rate(self, strategy: str, dtype: np.dtype | type | str) -> float:
        """The per-unit rate of ``strategy`` ('direct', 'separable', 'fft') for ``dtype``."""
        return float(getattr(self, f"{strategy}_{_rate_dtype(dtype)}"))

    def transform_seconds(self, dtype: np.dtype | type | str, points: int, workers: int) -> float:
        """One transform of ``points`` values on ``workers`` threads: the shared work divided
        among them, the serial share not."""
        shared = self.rate(names.FFT, dtype) * _divided(points, workers)
        return shared + self.rate("fft_serial", dtype) * _undivided(points, workers)

    def to_json(self) -> dict[str, float | str]:
        """A plain dict for ``json.dumps``."""
        return asdict(self)

    @classmethod
    def from_json(cls, data: object) -> Constants:
        """Rebuild from ``to_json`` output; ValueError if a field is missing, negative or not
        finite (0 is allowed: a fitted term may vanish)."""
        if not isinstance(data, dict):
            raise ValueError("constants must be a JSON object")
        values: dict[str, float | str] = {}
        for f in fields(cls):
            if f.name == "source":
                values["source"] = str(data.get("source", "unknown"))
                continue
            value = data.get(f.name)
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ValueError(f"constant {f.name!r} missing or not a number")
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"constant {f.name!r} must be finite and >= 0")
            values[f.name] = float(value)
        return cls(**values)  # type: ignore[arg-type]


# --- estimates ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Shape:
    """The sizes a cost depends on: output HxW, C channels, m kernels of khxkw."""

    height: int
    width: int
    channels: int
    kernels: int
    kh: int
    kw: int
    rank_one: bool = False


def direct_work(s: Shape) -> float:
    """Multiply-adds the banded direct strategy performs."""
    return s.channels * s.kernels * s.height * s.width * s.kw * (band_rows(s.kh) + s.kh - 1)


def separable_work(s: Shape) -> float:
    """Multiply-adds of the two banded 1-D passes."""
    vertical = (band_rows(s.kh) + s.kh - 1) * (s.width + s.kw - 1)
    horizontal = (COLUMN_BLOCK + s.kw - 1) * s.width
    return s.channels * s.kernels * s.height * (vertical + horizontal)


def fft_size(s: Shape, length: Callable[..., int] = fast_len) -> tuple[int, int]:
    """The whole-image transform shape: the extended image at fast lengths.

    ``length(n, real=...)`` picks them: ``fast_len`` for the estimates, and
    ``scipy.fft.next_fast_len`` (equal, tested) where the engine really transforms.
    """
    return length(s.height + s.kh - 1), length(s.width + s.kw - 1, real=True)


def _plogp(p: int) -> float:
    return p * math.log2(max(p, 2))


def _divided(points: int, workers: int) -> float:
    """One transform's P·log2 P share per thread: the work its ``workers`` threads divide."""
    return _plogp(points) / workers


def _undivided(points: int, workers: int) -> float:
    """The same transform's P·log2 P·(1 - 1/w): the serial share the threads do not divide."""
    return _plogp(points) * (1 - 1 / workers)


def _fft_transforms(s: Shape) -> tuple[int, int, int]:
    """(points per transform, threads per transform, transforms) of the whole-image FFT."""
    ph, pw = fft_size(s)
    points = ph * pw
    return points, fft_workers(points), s.channels * (1 + s.kernels) + s.kernels


def fft_work(s: Shape) -> float:
    """P·log2 P per worker, summed over the transforms of the whole-image FFT strategy."""
    points, workers, transforms = _fft_transforms(s)
    return _divided(points, workers) * transforms


def fft_serial(s: Shape) -> float:
    """P·log2 P·(1 - 1/w) summed over the transforms: the share w threads do not divide."""
    points, workers, transforms = _fft_transforms(s)
    return _undivided(points, workers) * transforms


TILE_CANDIDATES = (64, 128, 256, 512, 1024)


def overlap_cost(s: Shape, c: Constants, dtype: np.dtype | type | str, th: int, tw: int) -> float:
    """Estimated seconds of overlap-add with output tiles of ``th``x``tw``."""
    lh, lw = fast_len(th + s.kh - 1), fast_len(tw + s.kw - 1, real=True)
    batch = math.ceil(s.width / tw) * lh * lw  # a row of tiles goes through one transform call
    transform = c.transform_seconds(dtype, lh * lw, fft_workers(batch))
    blocks = math.ceil(s.height / th) * math.ceil(s.width / tw)
    per_block = s.channels * (transform * (1 + s.kernels) + c.block_fixed)
    return blocks * per_block + transform * s.kernels + c.fft_fixed


def overlap_tile(s: Shape, c: Constants, dtype: np.dtype | type | str) -> tuple[int, int, float]:
    """The cheapest output tile ``(th, tw)`` for overlap-add and its estimated seconds
    (remembered per job and thread cap: a plan asks for it twice, estimate and bound)."""
    return _overlap_tile(s, c, _rate_dtype(dtype), _thread_cap.get().now())


@lru_cache(maxsize=64)
def _overlap_tile(s: Shape, c: Constants, dtype: str, cap: int) -> tuple[int, int, float]:
    with transform_threads(cap):  # priced under the cap it is remembered for
        return _cheapest_tile(s, c, dtype)


def _cheapest_tile(s: Shape, c: Constants, dtype: str) -> tuple[int, int, float]:
    options = {(min(t, s.height), min(t, s.width)) for t in TILE_CANDIDATES}
    costs = [(th, tw, overlap_cost(s, c, dtype, th, tw)) for th, tw in sorted(options)]
    return min(costs, key=lambda option: option[2])


def estimate(strategy: str, s: Shape, dtype: np.dtype | type | str, c: Constants) -> float:
    """Predicted seconds of ``strategy`` for ``s`` in ``dtype`` (under the current
    ``transform_threads`` cap)."""
    return _estimate(strategy, s, dtype, c, _thread_cap.get().now())


@lru_cache(maxsize=1024)
def _estimate(
    strategy: str, s: Shape, dtype: np.dtype | type | str, c: Constants, cap: int
) -> float:
    """``estimate``, a pure function of its (hashable) arguments, memoised: planning the same
    shapes again (channels, batches of images, benchmarks) costs a lookup, not a computation.
    ``cap`` (the thread cap, read by ``fft_workers``) is part of the key, and the estimate is
    made under it (a cap lifted by ``until`` meanwhile does not leak into the cache)."""
    with transform_threads(cap):
        return _priced(strategy, s, dtype, c)


def _priced(strategy: str, s: Shape, dtype: np.dtype | type | str, c: Constants) -> float:
    """``_estimate``'s computation, under the thread cap in force."""
    if strategy == names.OVERLAP_ADD:
        return overlap_tile(s, c, dtype)[2]
    model = ESTIMATORS[strategy]
    seconds = c.rate(strategy, dtype) * model.work(s) + float(getattr(c, model.fixed))
    if model.second is not None:
        seconds += c.rate(f"{strategy}_{model.second_key}", dtype) * model.second(s)
    return seconds


def direct_passes(s: Shape) -> float:
    """Output pixels written by direct: each of the kw column products is added in."""
    return s.channels * s.kernels * s.height * s.width * s.kw


def compiled_form(s: Shape, rank_one: bool) -> str:
    """The compiled road's form: two 1-D passes for a rank-one kernel where they take fewer
    taps than the whole kernel, else every tap ("direct")."""
    return names.SEPARABLE if rank_one and s.kh + s.kw < s.kh * s.kw else names.DIRECT


def compiled_work(s: Shape) -> float:
    """Multiply-adds of the compiled road: every tap per output, or for the separable form
    a column pass over the extended width and a row pass."""
    if compiled_form(s, s.rank_one) == names.SEPARABLE:
        per_row = s.kh * (s.width + s.kw - 1) + s.kw * s.width
    else:
        per_row = s.kh * s.kw * s.width
    return s.channels * s.kernels * s.height * per_row


def compiled_passes(s: Shape) -> float:
    """Values the compiled road moves besides its sums: each extended row filled (converted)
    once and each output stored."""
    return s.channels * s.kernels * s.height * (2 * s.width + s.kw - 1)


# Seconds per output value of rounding a float road's result to an integer image's dtype (a
# pass the compiled road does within its own: docs/performance.md, §11). Not calibrated by
# ``calibrate``: measured once, it is a memory pass, not arithmetic.
ROUNDING_SECONDS = 4.7e-10


def rounding_seconds(s: Shape) -> float:
    """The pass that rounds a float road's output to an integer dtype and clips it."""
    return ROUNDING_SECONDS * s.channels * s.kernels * s.height * s.width


def compiled_one_time(c: Constants, *, imported: bool, cached: bool) -> float:
    """Seconds the compiled road's first call in a process pays before its work: numba's
    import (unless ``imported``), then loading its cached machine code, or compiling it
    when the cache is cold."""
    code = c.compiled_load if cached else c.compiled_jit
    return code + (0.0 if imported else c.compiled_import)


def separable_passes(s: Shape) -> float:
    """Output pixels written by the two 1-D passes (the first on the widened rows)."""
    return s.channels * s.kernels * s.height * (2 * s.width + s.kw - 1)


@dataclass(frozen=True)
class Estimator:
    """One strategy's terms: its work (multiply-adds, or P·log2 P per thread), a second term
    whose rate is the constant ``{strategy}_{second_key}_{dtype}``, its fixed constant."""

    work: Callable[[Shape], float]
    second: Callable[[Shape], float] | None
    second_key: str
    fixed: str


# strategy -> its cost terms; overlap-add is priced by blocks.
ESTIMATORS: dict[str, Estimator] = {
    names.DIRECT: Estimator(direct_work, direct_passes, "pass", "direct_fixed"),
    names.SEPARABLE: Estimator(separable_work, separable_passes, "pass", "separable_fixed"),
    names.FFT: Estimator(fft_work, fft_serial, "serial", "fft_fixed"),
    names.COMPILED: Estimator(compiled_work, compiled_passes, "pass", "compiled_fixed"),
}


# --- error bounds ------------------------------------------------------------------------------
#
# A bound on max|result - exact| / M per strategy, M = max|image| (and |cval| in constant
# mode), "exact" being the correlation in exact arithmetic of the image with the float64
# kernel. u is the working dtype's unit roundoff, gamma_n = n·u / (1 - n·u) (Higham,
# Accuracy and Stability of Numerical Algorithms, 2nd ed., §3.1):
#
# - every road first rounds the kernel to the working dtype: u·Σ|k|;
# - direct: each output is a dot product whose terms pass through at most kh (a column of the
#   banded Toeplitz product; its zero entries add nothing) plus kw (the columns' sum)
#   roundings: gamma_(kh+kw)·Σ|k| (Higham §3.1, any summation order);
# - separable: the column pass then the row pass, (gamma_kh + gamma_kw + gamma_kh·gamma_kw)
#   ·Σ|c|·Σ|r| for the factors (c, r), plus the factorization's residual Σ|k - c·rᵀ|;
# - fft: Higham's Theorem 24.2 bounds a radix-2 FFT's error by log2(P)·eta·‖y‖ with
#   eta = mu + gamma_4·(sqrt(2) + mu) ≈ 6.7·u (mu: the twiddles' error, ~u), per transform;
#   the convolution takes three (image, kernel, inverse), and |kernel spectrum| <= Σ|k|, so
#   FFT_ERROR_CONSTANT = 20 in 20·u·log2(P)·Σ|k|. That analysis is in the 2-norm, i.e. per
#   point on average; a strict max-norm bound carries another sqrt(P) (2048² images: 2000x),
#   which no input comes near (the DC term of a constant image, the worst case for the
#   transforms' sums, reaches ~u·log2 P), so the per-point form is the one reported, and the
#   tests hold it against adversarial inputs (constants, spikes, ±max checkerboards);
# - overlap-add: the same with the tile's transform size; this engine's tiles read their
#   halo (overlap-save), so no sums of overlapping pieces add a term.

UNIT_ROUNDOFF = {"float32": 2.0**-24, "float64": 2.0**-53}
FFT_ERROR_CONSTANT = 20.0


@dataclass(frozen=True)
class KernelNorms:
    """What the error bounds need of a kernel: ``l1`` = Σ|k|; for a separable kernel,
    ``factored`` = Σ|c|·Σ|r| of its factors and ``residual`` = Σ|k - c·rᵀ| (0 otherwise)."""

    l1: float
    factored: float = 0.0
    residual: float = 0.0


@cache
def dtype_name(dtype: np.dtype | type | str) -> str:
    """``np.dtype(dtype).name``, remembered: numpy builds the name in Python on every
    access, several times a plan (docs/performance.md, §13)."""
    return np.dtype(dtype).name


@cache
def _rate_dtype(dtype: np.dtype | type | str) -> str:
    """The dtype whose constants price ``dtype``: itself if calibrated, else float64."""
    name = np.dtype(dtype).name
    return name if name in DTYPES else "float64"


@cache
def unit_roundoff(dtype: np.dtype | type | str) -> float:
    """u of the working dtype (float32's for float32 and narrower, float64's otherwise)."""
    return UNIT_ROUNDOFF.get(np.dtype(dtype).name, UNIT_ROUNDOFF["float64"])


def gamma(n: int, u: float) -> float:
    """Higham's gamma_n = n·u / (1 - n·u): the relative error of n roundings in a row."""
    return n * u / (1.0 - n * u) if n * u < 1.0 else math.inf


def error_bound(
    strategy: str, s: Shape, dtype: np.dtype | type | str, norms: KernelNorms, c: Constants
) -> float:
    """Bound on ``max|result - exact| / max|image|`` for ``strategy`` (see the notes above).

    Examples
    --------
    >>> norms = KernelNorms(l1=1.0, factored=1.0)
    >>> s = Shape(512, 512, 1, 1, 9, 9)
    >>> c = Constants(*([1e-9] * 24))
    >>> f"{error_bound('direct', s, 'float32', norms, c):.2g}"
    '1.1e-06'
    >>> f"{error_bound('fft', s, 'float32', norms, c):.2g}"
    '2.2e-05'
    """
    u = unit_roundoff(dtype)
    stored = u * norms.l1  # the kernel rounded to the working dtype
    if strategy == names.COMPILED and compiled_form(s, s.rank_one) == names.DIRECT:
        return gamma(s.kh * s.kw, u) * norms.l1 + stored  # every tap summed in one chain
    if strategy == names.DIRECT:
        return gamma(s.kh + s.kw, u) * norms.l1 + stored
    if strategy in (names.SEPARABLE, names.COMPILED):  # compiled: its separable form
        g_col, g_row = gamma(s.kh, u), gamma(s.kw, u)
        return (g_col + g_row + g_col * g_row + 2 * u) * norms.factored + norms.residual
    if strategy == names.FFT:
        rows, cols = fft_size(s)
    else:
        th, tw, _ = overlap_tile(s, c, dtype)
        rows, cols = fast_len(th + s.kh - 1), fast_len(tw + s.kw - 1, real=True)
    return FFT_ERROR_CONSTANT * u * math.log2(max(rows * cols, 2)) * norms.l1 + stored
