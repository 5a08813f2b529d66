"""The cost model: what each strategy should cost, the constants, and their calibration.

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
the writes) and a 257-tap pass (R = 64: efficient products): measured on 2048² float32 the cost
per multiply-add of separable fell from 0.020 to 0.011 ns between those two, and a single rate
fitted to both priced sigma-32 blurs 3x too high. The FFT term counts one forward transform per
channel, one inverse per channel and kernel, and one per kernel. Its second term (``s_fft``,
the "serial" share) prices what w threads do not divide. Measured in seconds per
P·log2 P / w (float32, 2 cores): 0.11-0.15 ns with w = 1, 0.17-0.20 ns with w = 2, so two
threads ran ~1.4x as fast as one, not 2x; dividing all the work by w priced 2048²
transforms 1.5-1.7x too low, and ``auto`` took the FFT where direct was twice as fast. With
w = 1 the term vanishes, so the fit separates the two from transforms on either side of
``PARALLEL_FFT_SIZE``.

Where it is wrong (as scipy's ``choose_conv_method`` admits of its own):
- an FFT's copies (padding, products, crop) scale with P, not P·log P; a third term for
  them was tried, but over 32²..2048² it is too collinear with P·log P to fit stably;
- BLAS speed is not one number: small bands (R = 8) and narrow images run below the fitted
  rate, so direct is optimistic for tiny images and pessimistic for large ones;
- ``next_fast_len`` sizes with a factor 7 or 11 are slower per P·log P than powers of 2;
- nothing models cache misses of transforms that overflow L2/L3 (large P), nor other processes
  sharing the cores — calibration on a busy machine fits the busy machine;
- copies (boundary extension, crop) are folded into the rates, not modelled apart.

The constants are per dtype (float32 and float64 differ by ~2x in BLAS and FFT). Shipped
defaults live in ``cost_defaults.json`` (produced by ``convfilt calibrate`` on the reference
machine, then copied there; see that file's ``source``). ``convfilt calibrate`` fits new ones and
stores them in the user's cache folder, which later runs load instead.
"""

from __future__ import annotations

import json
import math
import os
import platform
import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import asdict, dataclass, fields, replace
from datetime import UTC, datetime
from functools import cache, lru_cache, partial
from itertools import combinations
from pathlib import Path

import numpy as np

DTYPES = ("float32", "float64")
DEFAULTS_FILE = "cost_defaults.json"
CONSTANTS_FILE = "constants.json"

# --- tiling and threads (shared by the engine's strategies and the estimates below) ----------

PARALLEL_FFT_SIZE = 2**19  # transforms of fewer points run on one thread (measured faster)


def available_cores() -> int:
    """The cores this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def fft_workers(points: int) -> int:
    """``scipy.fft``'s ``workers=`` for a transform over ``points`` values: one below
    ``PARALLEL_FFT_SIZE``, where starting threads costs more than they save (a 280x288 rfft2:
    0.15 ms on one thread, 0.18 ms on two), else every available core, at most the
    ``transform_threads`` cap.

    The estimates use the same number: the work they divide among the threads, and the
    serial share they do not (``Constants.transform_seconds``).
    """
    return 1 if points < PARALLEL_FFT_SIZE else min(available_cores(), _thread_cap.get())


_thread_cap: ContextVar[int] = ContextVar("thread_cap", default=1 << 30)


@contextmanager
def transform_threads(cap: int) -> Iterator[None]:
    """Within the block (and this thread or task), transforms use at most ``cap`` threads.

    For a caller that keeps the other cores busy itself: ``match_template`` sums its windows
    on one core while the engine transforms on another. The estimates see the cap too.
    """
    token = _thread_cap.set(max(1, cap))
    try:
        yield
    finally:
        _thread_cap.reset(token)


def band_rows(kh: int) -> int:
    """Rows per banded-Toeplitz product for a kernel of ``kh`` rows.

    The band costs (R + kh - 1)/kh times the ideal work; BLAS wants R large. Measured on
    2048² and 4096² float32 (2 cores): R = 8 best to kh ≈ 9, 16 to ≈ 25, 32 to ≈ 97.
    """
    if kh <= 12:
        return 8
    if kh <= 24:
        return 16
    if kh <= 96:
        return 32
    return 64


COLUMN_BLOCK = 64  # columns per banded-Toeplitz product of the separable row pass: measured
# best on 2048² float32 for 3- to 257-tap rows alike, so it does not depend on the kernel


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
    source: str = "default"

    def rate(self, strategy: str, dtype: np.dtype | type | str) -> float:
        """The per-unit rate of ``strategy`` ('direct', 'separable', 'fft') for ``dtype``."""
        name = np.dtype(dtype).name
        return float(getattr(self, f"{strategy}_{name if name in DTYPES else 'float64'}"))

    def transform_seconds(self, dtype: np.dtype | type | str, points: int, workers: int) -> float:
        """One transform of ``points`` values on ``workers`` threads: the shared work divided
        among them, the serial share not."""
        shared = self.rate("fft", dtype) * _divided(points, workers)
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


def default_constants() -> Constants:
    """The constants shipped with convfilt (``cost_defaults.json``)."""
    # beside this module (importlib.resources would add ~3 ms of imports to every start-up)
    text = Path(__file__).with_name(DEFAULTS_FILE).read_text(encoding="utf-8")
    return Constants.from_json(json.loads(text))


def constants_path() -> Path:
    """Where calibrated constants live: ``$CONVFILT_CACHE_DIR``, ``$XDG_CACHE_HOME/convfilt``
    or ``~/.cache/convfilt``, then ``constants.json``."""
    environ = os.environ
    return _constants_path(
        environ.get("CONVFILT_CACHE_DIR"), environ.get("XDG_CACHE_HOME"), environ.get("HOME")
    )


@lru_cache(maxsize=8)
def _constants_path(folder: str | None, xdg: str | None, _home: str | None) -> Path:
    """``constants_path`` for these variables (memoised: every plan asks, and building the
    path costs more than the planner's estimates)."""
    if folder:
        return Path(folder) / CONSTANTS_FILE
    base = Path(xdg) if xdg else Path.home() / ".cache"
    return base / "convfilt" / CONSTANTS_FILE


_loaded: dict[tuple[str, int, int], Constants] = {}


def load_constants() -> Constants:
    """Stored constants if the file exists and is valid, else the defaults."""
    return stored_constants() or _default_cached()


def stored_constants() -> Constants | None:
    """The constants stored at ``constants_path()``, or None if there is no file or it is not
    valid (damaged, or written by an older model that lacks a constant: ``calibrate`` again).

    Cached per (path, modification time, size), so the planner can call it on every plan.
    """
    path = constants_path()
    try:
        stat = path.stat()
        key = (str(path), stat.st_mtime_ns, stat.st_size)
    except OSError:
        return None
    if key not in _loaded:
        try:
            _loaded[key] = Constants.from_json(json.loads(path.read_text(encoding="utf-8")))
        except (OSError, ValueError):
            return None
    return _loaded[key]


_defaults: list[Constants] = []


def _default_cached() -> Constants:
    if not _defaults:
        _defaults.append(default_constants())
    return _defaults[0]


def save_constants(constants: Constants) -> Path:
    """Write ``constants`` to ``constants_path()`` atomically; return the path."""
    path = constants_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(f".tmp{os.getpid()}")
    temporary.write_text(json.dumps(constants.to_json(), indent=2) + "\n", encoding="utf-8")
    temporary.replace(path)
    return path


def reset_constants() -> bool:
    """Delete stored constants (back to the defaults); True if there was a file."""
    try:
        constants_path().unlink()
    except FileNotFoundError:
        return False
    return True


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
    """The cheapest output tile ``(th, tw)`` for overlap-add and its estimated seconds."""
    options = {(min(t, s.height), min(t, s.width)) for t in TILE_CANDIDATES}
    costs = [(th, tw, overlap_cost(s, c, dtype, th, tw)) for th, tw in sorted(options)]
    return min(costs, key=lambda option: option[2])


def estimate(strategy: str, s: Shape, dtype: np.dtype | type | str, c: Constants) -> float:
    """Predicted seconds of ``strategy`` for ``s`` in ``dtype`` (under the current
    ``transform_threads`` cap)."""
    return _estimate(strategy, s, dtype, c, _thread_cap.get())


@lru_cache(maxsize=1024)
def _estimate(
    strategy: str, s: Shape, dtype: np.dtype | type | str, c: Constants, _cap: int
) -> float:
    """``estimate``, a pure function of its (hashable) arguments, memoised: planning the same
    shapes again (channels, batches of images, benchmarks) costs a lookup instead of ~0.1 ms.
    ``_cap`` (the thread cap, read by ``fft_workers``) is part of the key."""
    if strategy == "overlap-add":
        return overlap_tile(s, c, dtype)[2]
    model = ESTIMATORS[strategy]
    seconds = c.rate(strategy, dtype) * model.work(s) + float(getattr(c, model.fixed))
    if model.second is not None:
        seconds += c.rate(f"{strategy}_{model.second_key}", dtype) * model.second(s)
    return seconds


def direct_passes(s: Shape) -> float:
    """Output pixels written by direct: each of the kw column products is added in."""
    return s.channels * s.kernels * s.height * s.width * s.kw


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
    "direct": Estimator(direct_work, direct_passes, "pass", "direct_fixed"),
    "separable": Estimator(separable_work, separable_passes, "pass", "separable_fixed"),
    "fft": Estimator(fft_work, fft_serial, "serial", "fft_fixed"),
}


# --- calibration -------------------------------------------------------------------------------

# (strategy, image side, kernel side) timed by ``calibrate``, cheapest first so that a small
# budget still fits every strategy on its first points.
GRID: tuple[tuple[str, int, int], ...] = (
    ("direct", 32, 3),
    ("direct", 128, 3),
    ("direct", 256, 9),
    ("direct", 512, 5),
    ("direct", 512, 15),
    ("direct", 1024, 3),
    ("direct", 1024, 9),
    ("direct", 1024, 25),
    ("direct", 2048, 5),
    ("separable", 32, 3),
    ("separable", 128, 9),
    ("separable", 512, 17),
    ("separable", 512, 65),
    ("separable", 1024, 33),
    ("separable", 2048, 17),
    ("separable", 1024, 3),
    ("separable", 1024, 129),
    ("separable", 2048, 257),
    ("fft", 32, 3),
    ("fft", 128, 15),
    ("fft", 256, 33),
    ("fft", 512, 33),
    ("fft", 768, 17),
    ("fft", 1024, 65),
    ("fft", 2048, 25),
    ("fft", 3072, 9),
    ("overlap-add", 512, 17),
    ("overlap-add", 1024, 33),
    ("overlap-add", 2048, 17),
    ("overlap-add", 2048, 65),
)


MIN_TIMED_S = 0.05  # fast calls are repeated past ``repeat`` until this much time is spent


def _time(run: Callable[[], object], repeat: int) -> float:
    """Median wall time of at least ``repeat`` calls after one warm-up call.

    Sub-millisecond calls vary by up to 2x from call to call (allocation, caches), and they
    are the points that fix the fixed costs, so they are repeated until ``MIN_TIMED_S`` is
    spent (at most 100 calls).
    """
    run()
    samples: list[float] = []
    while len(samples) < repeat or (sum(samples) < MIN_TIMED_S and len(samples) < 100):
        start = time.perf_counter()
        run()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def fit_rate(work: list[float], seconds: list[float]) -> tuple[float, float]:
    """Fit ``seconds ≈ rate·work + fixed`` minimising *relative* residuals.

    Times span three orders of magnitude, so plain least squares would fit only the largest
    points; dividing each equation by its time weighs every point by its relative error, and
    the problem stays linear (unlike a log-space fit of a sum). A negative fixed cost (noise)
    is clamped to 0 and the rate refitted alone.
    """
    w = np.asarray(work, dtype=np.float64)
    t = np.asarray(seconds, dtype=np.float64)
    if len(w) >= 2:
        system = np.stack([w / t, 1.0 / t], axis=1)
        (rate, fixed), *_ = np.linalg.lstsq(system, np.ones_like(t), rcond=None)
        if rate > 0 and fixed >= 0:
            return float(rate), float(fixed)
    rate = float(np.sum(w / t) / np.sum((w / t) ** 2))  # least squares of rate·w/t ≈ 1
    return max(rate, 1e-15), 0.0


def fit_terms(terms: list[list[float]], seconds: list[float]) -> list[float]:
    """Fit ``seconds ≈ Σ coefficient_i · terms[i]`` with coefficients >= 0, relative residuals.

    As ``fit_rate``, each equation is divided by its time. Non-negativity by trying every
    subset of the terms that keeps the first (the work rate, which must stay positive) and
    keeping the best non-negative least-squares fit: exact for the 2-3 terms used here. A
    subset is tried only if there are at least as many points as terms in it, so with fewer
    points than terms only the first few terms are fitted (the others stay 0).
    """
    t = np.asarray(seconds, dtype=np.float64)
    system = np.stack([np.asarray(term, dtype=np.float64) / t for term in terms], axis=1)
    best: tuple[float, list[float]] | None = None
    others = range(1, len(terms))
    subsets = [(0, *rest) for size in range(len(terms)) for rest in combinations(others, size)]
    for subset in subsets:
        if len(subset) > len(t):
            continue
        solution, *_ = np.linalg.lstsq(system[:, subset], np.ones_like(t), rcond=None)
        if solution[0] <= 0 or np.any(solution < 0):
            continue
        residual = float(np.sum((system[:, subset] @ solution - 1.0) ** 2))
        if best is None or residual < best[0]:
            coefficients = [0.0] * len(terms)
            for index, value in zip(subset, solution, strict=True):
                coefficients[index] = float(value)
            best = (residual, coefficients)
    if best is None:
        return [fit_rate(terms[0], seconds)[0]] + [0.0] * (len(terms) - 1)
    return best[1]


def calibrate(
    progress: Callable[[str, float], None] | None = None, budget_s: float = 20.0
) -> Constants:
    """Time each strategy on ``GRID`` for float32 and float64 and fit the constants.

    Stops adding points to a strategy once its share of ``budget_s`` is spent (each strategy
    keeps at least its first point); a strategy whose fixed cost cannot be fitted keeps the
    default's. ``progress(message, fraction_done)`` is called before each point. Does not save.
    """
    from . import engine

    base = default_constants()
    rng = np.random.default_rng(0)
    strategies = ("direct", "separable", "fft", "overlap-add")
    share = budget_s / (len(strategies) * len(DTYPES))
    cases = [(dt, case) for dt in DTYPES for case in GRID]
    points: dict[tuple[str, str], list[tuple[Shape, float]]] = {}
    spent: dict[tuple[str, str], float] = {}
    for index, (dt, (strategy, side, n)) in enumerate(cases):
        key = (strategy, dt)
        if points.get(key) and spent[key] > share:
            continue
        if progress is not None:
            progress(f"{strategy} {dt} {side}x{side} kernel {n}x{n}", index / len(cases))
        image = rng.random((side, side)).astype(dt)
        if strategy == "separable":
            kernel = np.outer(rng.random(n), rng.random(n))
        else:
            kernel = rng.random((n, n))
        start = time.perf_counter()
        repeat = 1 if budget_s < 5 else 3
        seconds = _time(partial(engine.correlate, image, kernel, method=strategy), repeat)
        spent[key] = spent.get(key, 0.0) + time.perf_counter() - start
        points.setdefault(key, []).append((Shape(side, side, 1, 1, n, n), seconds))
    if progress is not None:
        progress("fitting", 1.0)
    values = asdict(base)
    for strategy in ("direct", "separable", "fft"):
        model = ESTIMATORS[strategy]
        fixed_fits = []
        for dt in DTYPES:
            measured = points.get((strategy, dt), [])
            if not measured:
                continue
            terms = [[model.work(s) for s, _ in measured]]
            if model.second is not None:
                terms.append([model.second(s) for s, _ in measured])
            terms.append([1.0] * len(measured))
            *rates, fixed = fit_terms(terms, [t for _, t in measured])
            values[f"{strategy}_{dt}"] = rates[0]
            if model.second is not None:
                values[f"{strategy}_{model.second_key}_{dt}"] = rates[1]
            if len(measured) >= len(terms):
                fixed_fits.append(fixed)
        if fixed_fits:
            values[model.fixed] = float(np.mean(fixed_fits))
    values["block_fixed"] = _fit_block_fixed(points, Constants(**values), load_constants())
    values["source"] = (
        f"calibrated {datetime.now(UTC):%Y-%m-%d %H:%M} UTC on {platform.node()} "
        f"({available_cores()} cpus), budget {budget_s:g}s"
    )
    return replace(base, **values)


def _fit_block_fixed(
    points: dict[tuple[str, str], list[tuple[Shape, float]]], c: Constants, used: Constants
) -> float:
    """Per-block overhead of overlap-add: what its timings leave after the FFT work.

    ``used`` are the constants the engine chose its tiles with while being timed.
    """
    residuals = []
    for dt in DTYPES:
        for s, seconds in points.get(("overlap-add", dt), []):
            th, tw, _ = overlap_tile(s, used, dt)
            without_blocks = overlap_cost(s, replace(c, block_fixed=0.0), dt, th, tw)
            blocks = math.ceil(s.height / th) * math.ceil(s.width / tw)
            residuals.append(max(seconds - without_blocks, 0.0) / (blocks * s.channels))
    return float(np.median(residuals)) if residuals else c.block_fixed
