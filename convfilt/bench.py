"""Timing the engine here: the runner behind ``convfilt bench`` and ``convfilt calibrate``.

For each image size x kernel size it times each requested strategy of the engine (median of
``repeat`` runs after a warm-up), asks the planner what it would pick, and measures each
strategy's largest absolute error against a float64 reference. From the records it derives the
crossover kernel size (from where an FFT road stays ahead of the direct one), the planner's
accuracy and its regret. This module prints nothing and writes no file; the CLI renders what
it returns. ``calibrate`` times the strategies on a fixed grid and fits the cost model's
constants from the times (``calibration`` stores them).

Range syntax (``sizes``, ``kernels``):

- ``a..b`` for sizes means the powers of two from ``a`` to ``b`` (``64..2048`` → 64, 128, …,
  2048); for kernels it means the odd sizes ``2**k + 1`` (``3..65`` → 3, 5, 9, 17, 33, 65),
  which double the kernel's reach at every step;
- ``64,100,300`` is an explicit list (any positive integers);
- ``256`` is one value.
"""

from __future__ import annotations

import contextlib
import math
import platform
import statistics
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from functools import partial
from itertools import combinations
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

from . import calibration, cost, engine, names
from .errors import UsageError

RangeKind = Literal["sizes", "kernels"]
Progress = Callable[[str, float], None]

FFT_FAMILY = names.TRANSFORMS  # the strategies whose crossover with direct we report
NOT_APPLICABLE = "not applicable"  # why a strategy that cannot take this kernel was not run
AUTO = names.AUTO  # key of the planner's own timing, when its choice was not among the strategies

RANGE_FORMS: dict[RangeKind, str] = {
    "sizes": "64..2048 (the powers of two from 64 to 2048), 64,100,300 (a list) or 256 (one size)",
    "kernels": "3..65 (3, 5, 9, 17, 33, 65: the sizes 2^k+1), 3,7,15 (a list) or 9 (one size)",
}

# ndimage boundary mode -> numpy.pad mode with the same extension (for the references and peers)
PAD_MODES = {
    "reflect": "symmetric",
    "mirror": "reflect",
    "nearest": "edge",
    "wrap": "wrap",
    "constant": "constant",
}

# Beyond this many multiply-adds, scipy.ndimage is too slow to be the reference
# (docs/performance.md, §5).
NDIMAGE_REFERENCE_MAX_MACS = 4e7


# The largest image side and kernel side a benchmark accepts: beyond, a size is a typo, not a
# measurement (and numpy cannot even draw such an image).
RANGE_LIMITS: dict[RangeKind, int] = {"sizes": 2**20, "kernels": 2**20 + 1}


def _range_members(kind: RangeKind, low: int, high: int) -> tuple[int, ...]:
    """The members of ``low..high``: powers of two for sizes, ``2**k + 1`` (k ≥ 1) for kernels."""
    offset = 0 if kind == "sizes" else 1
    first_exponent = 0 if kind == "sizes" else 1
    return tuple(
        2**k + offset
        for k in range(first_exponent, high.bit_length() + 1)
        if low <= 2**k + offset <= high
    )


def parse_range(text: str, kind: RangeKind) -> tuple[int, ...]:
    """Read a ``sizes`` or ``kernels`` range into sorted distinct positive integers.

    Raises
    ------
    UsageError
        On any other syntax, a non-positive value or an empty range; the message names the
        parameter (``kind``) and shows the accepted forms.
    """

    def bad(why: str) -> UsageError:
        return UsageError(f"{kind}: {why}; accepted forms: {RANGE_FORMS[kind]}", parameters=[kind])

    spec = "".join(text.split())
    if not spec:
        raise bad("empty value")
    ranged = ".." in spec
    try:
        if ranged:
            low_text, high_text = spec.split("..")
            low, high = int(low_text), int(high_text)
        else:
            values = tuple(sorted({int(part) for part in spec.split(",")}))
    except ValueError:
        raise bad(f"cannot read '{text}'") from None
    if ranged:
        if low < 1 or low > high:
            raise bad(f"'{text}' is not an increasing range of positive integers")
        if high > RANGE_LIMITS[kind]:
            raise bad(f"'{text}' goes above {RANGE_LIMITS[kind]}")
        values = _range_members(kind, low, high)
        if not values:
            raise bad(f"'{text}' holds no {'power of two' if kind == 'sizes' else '2^k+1'}")
        return values
    if values[0] < 1:
        raise bad(f"'{text}' has a value below 1")
    if values[-1] > RANGE_LIMITS[kind]:
        raise bad(f"'{text}' has a value above {RANGE_LIMITS[kind]}")
    return values


@dataclass(frozen=True)
class BenchConfig:
    """What to measure.

    ``cap_s``: a strategy whose estimate (or whose time at a smaller kernel of the same image
    size) exceeds this many seconds is skipped, not run. ``budget_s``: after the warm-up, a
    strategy gets at most ``repeat`` timed runs and about this many seconds per cell; a warm-up
    slower than that is itself the one measurement.
    """

    sizes: tuple[int, ...] = (64, 128, 256, 512, 1024, 2048)
    kernels: tuple[int, ...] = (3, 5, 9, 17, 33, 65)
    dtype: str = "float32"
    repeat: int = 3
    methods: tuple[str, ...] = names.STRATEGIES
    compare: tuple[str, ...] = ()
    mode: str = names.REFLECT
    seed: int = 0
    cap_s: float = 2.0
    budget_s: float = 0.3

    def __post_init__(self) -> None:
        unknown = [m for m in self.methods if m not in names.STRATEGIES]
        if unknown or not self.methods:
            raise UsageError(
                f"methods: unknown strategy {', '.join(unknown) or '(none)'}; "
                f"choose from {', '.join(names.STRATEGIES)}",
                parameters=["methods"],
            )
        unknown = [c for c in self.compare if c not in COMPARATORS]
        if unknown:
            raise UsageError(
                f"compare: unknown peer {', '.join(unknown)}; choose from {', '.join(COMPARATORS)}",
                parameters=["compare"],
            )
        if self.dtype not in names.FLOAT_DTYPES:
            raise UsageError(
                f"dtype: {self.dtype!r} is not float32 or float64", parameters=["dtype"]
            )
        if self.repeat < 1:
            raise UsageError("repeat: must be at least 1", parameters=["repeat"])
        if self.mode not in PAD_MODES:
            raise UsageError(
                f"mode: {self.mode!r} is not one of {', '.join(PAD_MODES)}", parameters=["mode"]
            )


def _finite_or_none(value: float | None) -> float | None:
    """JSON has no NaN or infinity: such values become null."""
    return value if value is not None and math.isfinite(value) else None


@dataclass
class CellRecord:
    """The measurements for one image size x kernel size.

    times_ms: median wall time per strategy, per peer (``"scipy"``) and, when the planner's
        choice was not among the strategies run, for ``"auto"``.
    repeats: how many timed runs each median is of.
    chosen: the planner's pick; fastest: the fastest measured strategy (peers excluded);
        regret: time of the pick / time of the fastest (1.0 when the planner was right).
    predicted_ms: the planner's estimate for every strategy that applies.
    error: largest absolute difference from the float64 ``reference``
        (``"ndimage-float64"`` or, for large cells, ``"fft-float64"``).
    relative_error: ``error / max|image|``, the measure the planner's bounds use.
    error_bound: the planner's bound on ``relative_error`` for every strategy that applies
        (``Plan.error_bounds``, :func:`convfilt.cost.error_bound`).
    skipped: strategy -> why it was not run ("not applicable", "estimate … > cap", …).
    """

    size: int
    kernel: int
    dtype: str
    times_ms: dict[str, float]
    repeats: dict[str, int]
    chosen: str
    fastest: str | None
    regret: float | None
    predicted_ms: dict[str, float]
    error: dict[str, float]
    reference: str
    skipped: dict[str, str] = field(default_factory=dict)
    relative_error: dict[str, float] = field(default_factory=dict)
    error_bound: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """The record as JSON-ready data (milliseconds; null for anything not finite)."""
        return {
            "size": self.size,
            "kernel": self.kernel,
            "dtype": self.dtype,
            "times_ms": {k: _finite_or_none(v) for k, v in self.times_ms.items()},
            "repeats": dict(self.repeats),
            "chosen": self.chosen,
            "fastest": self.fastest,
            "regret": _finite_or_none(self.regret),
            "predicted": {k: _finite_or_none(v) for k, v in self.predicted_ms.items()},
            "error": {k: _finite_or_none(v) for k, v in self.error.items()},
            "relative_error": {k: _finite_or_none(v) for k, v in self.relative_error.items()},
            "error_bound": {k: _finite_or_none(v) for k, v in self.error_bound.items()},
            "reference": self.reference,
            "skipped": sorted(self.skipped),
            "skip_reasons": dict(self.skipped),
        }

    def effective_ms(self, name: str) -> float | None:
        """Time of ``name`` for comparisons: measured, +inf if skipped as too slow, else None."""
        if name in self.times_ms:
            return self.times_ms[name]
        if name in self.skipped and self.skipped[name] != NOT_APPLICABLE:
            return math.inf
        return None


@dataclass
class Summary:
    """What the records add up to.

    crossover: per image size, the smallest kernel from which on an FFT strategy (fft or
        overlap-add) beats direct at every larger kernel measured — a strategy skipped as too
        slow counts as slower than any that ran — or None if direct still wins at the largest.
        A lone FFT win among direct wins (noise, at tiny sizes) is not a crossover.
    planner_accuracy: share of cells where the planner picked the fastest strategy.
    within_15pct: share of cells where the pick was at most 1.15x the fastest.
    mean_regret, max_regret: over the cells where the pick was timed.
    """

    crossover: dict[int, int | None]
    planner_accuracy: float | None
    within_15pct: float | None
    mean_regret: float | None
    max_regret: float | None

    def to_json(self) -> dict[str, Any]:
        """JSON-ready (object keys are strings, so the crossover's sizes are too)."""
        data = asdict(self)
        data["crossover"] = {str(size): kernel for size, kernel in self.crossover.items()}
        return {k: _finite_or_none(v) if isinstance(v, float) else v for k, v in data.items()}


@dataclass
class BenchResult:
    """A whole run: the machine, the configuration, one record per cell, the summary.

    ``constants``: the cost-model constants the planner used (calibrated or shipped).
    """

    machine: dict[str, Any]
    config: BenchConfig
    records: list[CellRecord]
    summary: Summary
    constants: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """The JSON document of a run (``convfilt bench`` prints it)."""
        config = asdict(self.config)
        return {
            "machine": self.machine,
            "config": {k: list(v) if isinstance(v, tuple) else v for k, v in config.items()},
            "constants": self.constants,
            "records": [r.to_json() for r in self.records],
            "summary": self.summary.to_json(),
        }

    def columns(self) -> list[str]:
        """Every timed column in a stable order: the strategies, then auto, then the peers."""
        order = [*self.config.methods, AUTO, *self.config.compare]
        present = {name for r in self.records for name in (*r.times_ms, *r.skipped)}
        return [name for name in order if name in present]

    def csv_rows(self) -> list[dict[str, Any]]:
        """One row per cell x column, for a CSV file (empty strings for what is missing)."""
        rows = []
        for r in self.records:
            for name in self.columns():
                if name not in r.times_ms and name not in r.skipped:
                    continue
                predicted = r.predicted_ms.get(name)
                rows.append(
                    {
                        "size": r.size,
                        "kernel": r.kernel,
                        "dtype": r.dtype,
                        "strategy": name,
                        "time_ms": _csv_number(r.times_ms.get(name)),
                        "repeats": r.repeats.get(name, ""),
                        "predicted_ms": _csv_number(predicted),
                        "error": _csv_number(r.error.get(name)),
                        "relative_error": _csv_number(r.relative_error.get(name)),
                        "error_bound": _csv_number(r.error_bound.get(name)),
                        "reference": r.reference,
                        "chosen": name == r.chosen,
                        "fastest": name == r.fastest,
                        "skipped": r.skipped.get(name, ""),
                    }
                )
        return rows


def _csv_number(value: float | None) -> str:
    return "" if value is None or not math.isfinite(value) else repr(float(value))


def machine_info() -> dict[str, Any]:
    """The facts a timing depends on: cores, library versions, the BLAS, Python, platform."""
    import scipy

    try:
        blas_info = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
        blas = f"{blas_info.get('name', '?')} {blas_info.get('version', '')}".strip()
    except (KeyError, TypeError, ValueError):
        blas = "unknown"
    return {
        "cpus": cost.available_cores(),
        "numpy": np.__version__,
        "scipy": scipy.__version__,
        "blas": blas,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


# --- the data and the float64 references ----------------------------------------------------


def make_image(size: int, dtype: str, seed: int) -> NDArray[np.floating]:
    """A seeded random sizexsize image, uniform in [0, 1)."""
    return np.random.default_rng([seed, size]).random((size, size)).astype(dtype)


def make_kernel(n: int, dtype: str, seed: int) -> NDArray[np.floating]:
    """A seeded random nxn kernel summing to 1: non-negative, and (almost surely) rank n."""
    weights = np.random.default_rng([seed, n, 1]).random((n, n)) + 0.05
    return (weights / weights.sum()).astype(dtype)


def padded_valid(
    image: NDArray[np.floating],
    kernel: NDArray[np.floating],
    mode: str,
    correlate_valid: Callable[[NDArray[np.floating], NDArray[np.floating]], NDArray[Any]],
) -> NDArray[Any]:
    """Correlate with ndimage's boundary ``mode`` by padding, then a valid-mode correlation.

    The pad puts the kernel's centre at index n//2 on each axis, as scipy.ndimage does.
    """
    kh, kw = kernel.shape
    pad = ((kh // 2, kh - 1 - kh // 2), (kw // 2, kw - 1 - kw // 2))
    return correlate_valid(np.pad(image, pad, mode=PAD_MODES[mode]), kernel)  # type: ignore[call-overload]


def reference(
    image: NDArray[np.floating], kernel: NDArray[np.floating], mode: str
) -> tuple[NDArray[np.float64], str]:
    """The float64 correlation of the same data, and the name of the road that computed it.

    scipy.ndimage's direct sums where that is quick; for large cells the FFT in float64
    (its rounding, ~1e-15 of the data's scale, is far below any float32 error).
    """
    import scipy.ndimage as ndi
    import scipy.signal as sig

    x = image.astype(np.float64)
    k = kernel.astype(np.float64)
    if x.size * k.size <= NDIMAGE_REFERENCE_MAX_MACS:
        return ndi.correlate(x, k, mode=mode), "ndimage-float64"
    flipped_fft = lambda a, b: sig.fftconvolve(a, b[::-1, ::-1], mode="valid")  # noqa: E731
    return padded_valid(x, k, mode, flipped_fft), "fft-float64"


def _scipy_signal(
    image: NDArray[np.floating], kernel: NDArray[np.floating], mode: str
) -> NDArray[Any]:
    """The peer: scipy.signal.correlate(method="auto") on the image padded for ``mode``."""
    import scipy.signal as sig

    return padded_valid(image, kernel, mode, lambda a, b: sig.correlate(a, b, "valid", "auto"))


# peers for ``compare``: name -> correlate(image, kernel, mode) with ndimage's boundary meaning
COMPARATORS: dict[str, Callable[[NDArray[np.floating], NDArray[np.floating], str], NDArray[Any]]]
COMPARATORS = {"scipy": _scipy_signal}


# --- timing ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Timing:
    """One strategy on one cell: median seconds, how many runs, and the warm-up's output."""

    seconds: float
    runs: int
    output: NDArray[Any]


def time_call(run: Callable[[], NDArray[Any]], repeat: int, budget_s: float) -> Timing:
    """Warm up once, then take the median of up to ``repeat`` runs fitting in ``budget_s``.

    A warm-up slower than the budget is itself the measurement: repeating a slow cell costs
    seconds and its first-call overhead is negligible against its run time.
    """
    start = time.perf_counter()
    output = run()
    warm = time.perf_counter() - start
    runs = min(repeat, int(budget_s / warm)) if warm > 0 else repeat
    if runs < 1:
        return Timing(warm, 1, output)
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        run()
        samples.append(time.perf_counter() - start)
    return Timing(statistics.median(samples), runs, output)


def _largest(image: NDArray[Any]) -> float:
    """max|image| (1 for an all-zero image, whose errors are then absolute)."""
    return float(np.abs(image).max()) or 1.0


def _max_abs_error(output: NDArray[Any], ref: NDArray[np.float64]) -> float:
    return float(np.max(np.abs(output.astype(np.float64) - ref)))


def _skip_reason(
    name: str,
    predicted_s: dict[str, float],
    slow_before: dict[str, tuple[int, float]],
    cap_s: float,
) -> str | None:
    """Why ``name`` should not run on this cell, or None if it should."""
    if name in engine.STRATEGIES and name not in predicted_s:
        return NOT_APPLICABLE
    if predicted_s.get(name, 0.0) > cap_s:
        return f"estimate {predicted_s[name]:.1f} s > cap {cap_s:g} s"
    if name in slow_before:
        kernel, seconds = slow_before[name]
        return f"took {seconds:.1f} s at kernel {kernel} > cap {cap_s:g} s"
    return None


def measure_cell(
    size: int,
    kernel_size: int,
    config: BenchConfig,
    slow_before: dict[str, tuple[int, float]] | None = None,
) -> CellRecord:
    """Time, plan and check one image size x kernel size.

    ``slow_before`` maps a column to (kernel, seconds) if it already took longer than the cap
    on a smaller kernel of this image size; it is skipped here (times grow with the kernel).
    """
    slow_before = slow_before or {}
    image = make_image(size, config.dtype, config.seed)
    kernel = make_kernel(kernel_size, config.dtype, config.seed)
    decision = engine.plan(image.shape, kernel, dtype=config.dtype, mode=config.mode)
    predicted_s = dict(decision.estimates)
    ref, ref_name = reference(image, kernel, config.mode)

    run_engine = partial(engine.correlate, image, kernel, mode=config.mode)
    runners: dict[str, Callable[[], NDArray[Any]]] = {
        name: partial(run_engine, strategy=name) for name in config.methods
    }
    if decision.strategy not in config.methods:
        runners[AUTO] = partial(run_engine, strategy=AUTO)
    for peer in config.compare:
        runners[peer] = partial(COMPARATORS[peer], image, kernel, config.mode)

    times: dict[str, float] = {}
    repeats: dict[str, int] = {}
    error: dict[str, float] = {}
    skipped: dict[str, str] = {}
    for name, run in runners.items():
        reason = _skip_reason(name, predicted_s, slow_before, config.cap_s)
        if reason is None:
            try:
                timing = time_call(run, config.repeat, config.budget_s)
            except UsageError as exc:  # the engine declined a forced strategy
                reason = str(exc)
        if reason is not None:
            skipped[name] = reason
            continue
        times[name] = timing.seconds * 1e3
        repeats[name] = timing.runs
        if name != AUTO:
            error[name] = _max_abs_error(timing.output, ref)

    record = CellRecord(
        size=size,
        kernel=kernel_size,
        dtype=config.dtype,
        times_ms=times,
        repeats=repeats,
        chosen=decision.strategy,
        fastest=None,
        regret=None,
        predicted_ms={name: s * 1e3 for name, s in predicted_s.items()},
        error=error,
        reference=ref_name,
        skipped=skipped,
        relative_error={name: value / _largest(image) for name, value in error.items()},
        error_bound=dict(decision.error_bounds),
    )
    record.fastest, record.regret = _fastest_and_regret(record, config.methods)
    return record


def _fastest_and_regret(
    record: CellRecord, methods: Sequence[str]
) -> tuple[str | None, float | None]:
    """The fastest strategy of a cell and the planner's regret (None where not measurable).

    The planner's pick is timed as itself when it was among the strategies, else as ``auto``.
    """
    pick_ms = record.times_ms.get(record.chosen, record.times_ms.get(AUTO))
    contenders = {name: record.effective_ms(name) for name in methods}
    if record.chosen not in methods and pick_ms is not None:
        contenders[record.chosen] = pick_ms
    ran = {name: t for name, t in contenders.items() if t is not None and math.isfinite(t)}
    if not ran:
        return None, None
    fastest = min(ran, key=ran.__getitem__)
    regret = pick_ms / ran[fastest] if pick_ms is not None and ran[fastest] > 0 else None
    return fastest, regret


def _fft_beats_direct(record: CellRecord) -> bool | None:
    """Whether an FFT road was faster than direct in this cell (None: nothing to compare)."""
    direct = record.effective_ms(names.DIRECT)
    ffts = [t for t in map(record.effective_ms, FFT_FAMILY) if t is not None and math.isfinite(t)]
    if direct is None or not ffts:
        return None
    return min(ffts) < direct


def summarize(records: Iterable[CellRecord]) -> Summary:
    """Crossovers, planner accuracy and regret over ``records`` (see :class:`Summary`)."""
    records = sorted(records, key=lambda r: (r.size, r.kernel))
    crossover: dict[int, int | None] = {}
    for r in records:  # by kernel size: a loss after a win starts the search again
        crossover.setdefault(r.size, None)
        fft_wins = _fft_beats_direct(r)
        if fft_wins is None:
            continue
        if not fft_wins:
            crossover[r.size] = None
        elif crossover[r.size] is None:
            crossover[r.size] = r.kernel
    regrets = [r.regret for r in records if r.regret is not None]
    judged = [r for r in records if r.regret is not None and r.fastest is not None]
    return Summary(
        crossover=crossover,
        planner_accuracy=(
            sum(r.chosen == r.fastest for r in judged) / len(judged) if judged else None
        ),
        within_15pct=sum(g <= 1.15 for g in regrets) / len(regrets) if regrets else None,
        mean_regret=statistics.fmean(regrets) if regrets else None,
        max_regret=max(regrets) if regrets else None,
    )


def _warm_up(config: BenchConfig) -> None:
    """Run every strategy once on a tiny image, so first-call costs do not land in a cell."""
    image = make_image(32, config.dtype, config.seed)
    kernel = make_kernel(5, config.dtype, config.seed)
    for name in config.methods:
        with contextlib.suppress(UsageError):  # not applicable: measure_cell says so per cell
            engine.correlate(image, kernel, mode=config.mode, strategy=name)
    for peer in config.compare:
        COMPARATORS[peer](image, kernel, config.mode)


def run(config: BenchConfig, progress: Progress | None = None) -> BenchResult:
    """Measure every cell of ``config`` and summarise, calling ``progress(message, fraction)``."""
    report = progress or (lambda message, fraction: None)
    cells = [(s, k) for s in config.sizes for k in config.kernels]
    report("warming up", 0.0)
    _warm_up(config)
    records: list[CellRecord] = []
    slow: dict[int, dict[str, tuple[int, float]]] = {}
    for done, (size, kernel_size) in enumerate(cells):
        report(f"image {size}², kernel {kernel_size}²", done / len(cells))
        slow_before = slow.setdefault(size, {})
        record = measure_cell(size, kernel_size, config, slow_before)
        for name, ms in record.times_ms.items():
            if ms / 1e3 > config.cap_s:
                slow_before.setdefault(name, (kernel_size, ms / 1e3))
        records.append(record)
    report("done", 1.0)
    constants = calibration.load_constants().to_json()
    return BenchResult(machine_info(), config, records, summarize(records), constants)


# --- calibration: measuring the cost model's constants ---------------------------------------

# (strategy, image side, kernel side) timed by ``calibrate``, cheapest first so that a small
# budget still fits every strategy on its first points.
_GRID_POINTS: dict[str, tuple[tuple[int, int], ...]] = {
    names.DIRECT: (
        (32, 3),
        (128, 3),
        (256, 9),
        (512, 5),
        (512, 15),
        (1024, 3),
        (1024, 9),
        (1024, 25),
        (2048, 5),
    ),
    names.SEPARABLE: (
        (32, 3),
        (128, 9),
        (512, 17),
        (512, 65),
        (1024, 33),
        (2048, 17),
        (1024, 3),
        (1024, 129),
        (2048, 257),
    ),
    names.FFT: (
        (32, 3),
        (128, 15),
        (256, 33),
        (512, 33),
        (768, 17),
        (1024, 65),
        (2048, 25),
        (3072, 9),
    ),
    names.OVERLAP_ADD: ((512, 17), (1024, 33), (2048, 17), (2048, 65)),
    names.COMPILED: (
        (32, 3),
        (128, 5),
        (256, 9),
        (512, 3),
        (1024, 5),
        (1024, 9),
        (2048, 3),
        (2048, 7),
    ),
}
GRID: tuple[tuple[str, int, int], ...] = tuple(
    (strategy, side, n) for strategy, points in _GRID_POINTS.items() for side, n in points
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
) -> cost.Constants:
    """Time each strategy on ``GRID`` for float32 and float64 and fit the constants.

    Stops adding points to a strategy once its share of ``budget_s`` is spent (each strategy
    keeps at least its first point); a strategy whose fixed cost cannot be fitted keeps the
    default's. ``progress(message, fraction_done)`` is called before each point. Does not save.
    """
    base = calibration.default_constants()
    rng = np.random.default_rng(0)
    strategies = names.STRATEGIES
    share = budget_s / (len(strategies) * len(cost.DTYPES))
    cases = [(dt, case) for dt in cost.DTYPES for case in GRID]
    points: dict[tuple[str, str], list[tuple[cost.Shape, float]]] = {}
    spent: dict[tuple[str, str], float] = {}
    for index, (dt, (strategy, side, n)) in enumerate(cases):
        key = (strategy, dt)
        if points.get(key) and spent[key] > share:
            continue
        if progress is not None:
            progress(f"{strategy} {dt} {side}x{side} kernel {n}x{n}", index / len(cases))
        image = rng.random((side, side)).astype(dt)
        if strategy == names.SEPARABLE:
            kernel = np.outer(rng.random(n), rng.random(n))
        else:
            kernel = rng.random((n, n))
        start = time.perf_counter()
        repeat = 1 if budget_s < 5 else 3
        with cost.spectra_on_the_callers_thread():  # the road the estimates price
            seconds = _time(partial(engine.correlate, image, kernel, strategy=strategy), repeat)
        spent[key] = spent.get(key, 0.0) + time.perf_counter() - start
        points.setdefault(key, []).append((cost.Shape(side, side, 1, 1, n, n), seconds))
    if progress is not None:
        progress("fitting", 1.0)
    values = asdict(base)
    for strategy in cost.ESTIMATORS:
        model = cost.ESTIMATORS[strategy]
        fixed_fits = []
        for dt in cost.DTYPES:
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
    values["block_fixed"] = _fit_block_fixed(
        points, cost.Constants(**values), calibration.load_constants()
    )
    values["source"] = (
        f"calibrated {datetime.now(UTC):%Y-%m-%d %H:%M} UTC on {platform.node()} "
        f"({cost.available_cores()} cpus), budget {budget_s:g}s"
    )
    return replace(base, **values)


def _fit_block_fixed(
    points: dict[tuple[str, str], list[tuple[cost.Shape, float]]],
    c: cost.Constants,
    used: cost.Constants,
) -> float:
    """Per-block overhead of overlap-add: what its timings leave after the FFT work.

    ``used`` are the constants the engine chose its tiles with while being timed.
    """
    residuals = []
    for dt in cost.DTYPES:
        for s, seconds in points.get((names.OVERLAP_ADD, dt), []):
            th, tw, _ = cost.overlap_tile(s, used, dt)
            without_blocks = cost.overlap_cost(s, replace(c, block_fixed=0.0), dt, th, tw)
            blocks = math.ceil(s.height / th) * math.ceil(s.width / tw)
            residuals.append(max(seconds - without_blocks, 0.0) / (blocks * s.channels))
    return float(np.median(residuals)) if residuals else c.block_fixed
