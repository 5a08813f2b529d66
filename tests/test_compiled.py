"""The compiled road (numba): integer depths rounded in the same pass, both forms, the
planner's one-time costs, and numba's cache where the package folder is not writable.

Its agreement with scipy.ndimage in every mode, with even kernels and channels, is tested
with the other strategies in test_engine.py (``engine.STRATEGIES`` includes it).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
import scipy.ndimage as ndi
from hypothesis import given, settings
from hypothesis import strategies as st

from convfilt import calibration, compiled, cost, engine, filters
from convfilt.deconvolution import deconvolve
from convfilt.errors import UsageError
from convfilt.kernels import gaussian_1d


@settings(max_examples=60, deadline=None)
@given(
    st.sampled_from([np.uint8, np.uint16]),
    st.sampled_from(engine.MODES),
    st.sampled_from([None, 3]),
    st.integers(0, 2**32 - 1),
)
def test_integer_images_are_rounded_half_to_even_and_clipped_in_the_pass(
    dtype: type, mode: str, channels: int | None, seed: int
) -> None:
    """Weights of halves and quarters keep every sum exact in float32, so the rounding is
    tested exactly: ties go to even (2.5 -> 2, 3.5 -> 4), negatives clip to 0, overflows
    to the dtype's largest value."""
    rng = np.random.default_rng(seed)
    top = np.iinfo(dtype).max
    shape = (13, 11) if channels is None else (13, 11, channels)
    x: np.ndarray = rng.integers(0, top, shape, endpoint=True).astype(dtype)
    k = rng.integers(-4, 9, (3, 2)) / 4.0
    out = engine.filter_stored(x, k, mode=mode, cval=2.0, strategy="compiled", work=np.float32)
    assert out.dtype == x.dtype
    planes = x[..., np.newaxis] if channels is None else x
    ref = [ndi.correlate(planes[..., c].astype(np.float64), k, mode=mode, cval=2.0) for c in
           range(planes.shape[2])]  # fmt: skip
    expected = np.clip(np.rint(np.stack(ref, axis=-1)), 0, top).reshape(x.shape)
    assert np.array_equal(out, expected)


def test_ties_round_to_even() -> None:
    x = np.array([[1, 2, 3, 4, 5]], dtype=np.uint8)
    out = engine.filter_stored(x, [[0.5, 0.5]], mode="nearest", strategy="compiled")
    # pairs (x[i-1], x[i]) averaged: 1, 1.5, 2.5, 3.5, 4.5 -> 1, 2, 2, 4, 4
    assert out.tolist() == [[1, 2, 2, 4, 4]]


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32])
def test_gaussian_blur_takes_the_same_values_on_every_road(dtype: type) -> None:
    """uint8/uint16 RGB through gaussian_blur: compiled equals scipy.ndimage within one level
    (float32 sums in another order may round a tie the other way), floats within 1e-6."""
    rng = np.random.default_rng(2)
    top = 1.0 if dtype == np.float32 else float(np.iinfo(dtype).max)
    x: np.ndarray = (rng.random((40, 33, 3)) * top).astype(dtype)
    plans: list[engine.Plan] = []
    out = filters.gaussian_blur(x, 1.5, strategy="compiled", on_plan=plans.append)
    assert plans[0].strategy == "compiled" and out.dtype == x.dtype
    ref = ndi.gaussian_filter(x.astype(np.float64), (1.5, 1.5, 0))
    if dtype == np.float32:
        np.testing.assert_allclose(out, ref, rtol=0, atol=1e-6)
    else:
        assert np.abs(out.astype(np.float64) - np.rint(ref)).max() <= 1


def test_separable_form_matches_the_whole_kernel() -> None:
    """A rank-one kernel runs as two passes; the same kernel as taps gives the same result."""
    rng = np.random.default_rng(4)
    x = rng.random((50, 61, 2), dtype=np.float32)
    g = gaussian_1d(1.2)
    k = np.outer(g, g[::-1] * 2)
    assert cost.compiled_form(cost.Shape(50, 61, 2, 1, *k.shape, rank_one=True), True) == (
        "separable"
    )
    half = len(g) // 2
    rows = engine.extension_indices(50, half, half, "wrap")
    cols = engine.extension_indices(61, half, half, "wrap")
    two_pass, taps = np.empty_like(x), np.empty_like(x)
    factors = (g.astype(np.float32), (g[::-1] * 2).astype(np.float32))
    compiled.correlate(x, rows, cols, half, 0.0, factors, two_pass)
    compiled.correlate(x, rows, cols, half, 0.0, k.astype(np.float32), taps)
    with pytest.raises(ValueError, match="C-contiguous"):
        compiled.correlate(x, rows[1:], cols, half, 0.0, factors, taps)
    np.testing.assert_allclose(two_pass, taps, rtol=0, atol=1e-6)
    expected = ndi.correlate(x, k[..., np.newaxis].astype(np.float32), mode="wrap")
    np.testing.assert_allclose(two_pass, expected, rtol=0, atol=1e-6)


def test_the_planner_prices_the_one_time_costs(monkeypatch: pytest.MonkeyPatch) -> None:
    """Unpaid, the one-time cost is in compiled's estimate and keeps a single small image off
    the road; the savings of the calls that forgo it add up until they pay for it."""
    constants = calibration.default_constants()
    price = cost.compiled_one_time(constants, imported=False, cached=True)
    assert price == constants.compiled_import + constants.compiled_load
    assert cost.compiled_one_time(constants, imported=True, cached=False) == (
        constants.compiled_jit
    )
    monkeypatch.setattr(engine, "_compiled_one_time", lambda problem, constants: price)
    monkeypatch.setattr(engine, "_forgone", [0.0])
    kernel = np.random.default_rng(0).random((5, 5))
    small = engine.plan((512, 512), kernel)
    assert small.strategy != "compiled"
    assert small.estimates["compiled"] > price
    assert "one-time" in small.reason
    x = np.zeros((512, 512), np.float32)
    chosen = []
    for _ in range(100):
        plans: list[engine.Plan] = []
        engine.correlate(x[:64, :64], kernel, on_plan=plans.append)  # cheap: saves little
        chosen.append(plans[0].strategy)
        if chosen[-1] == "compiled":
            break
    # a 64² call saves well under 1 ms: 100 of them cannot pay ~0.7 s
    assert "compiled" not in chosen
    assert 0 < engine._forgone[0] < price
    engine._forgone[0] = price  # as if enough calls had forgone it
    assert engine.plan((512, 512), kernel).strategy == "compiled"  # what a call would take,
    assert engine._forgone[0] == price  # but plan() only looks
    plans = []
    engine.correlate(x, kernel, on_plan=plans.append)
    assert plans[0].strategy == "compiled" and "paid now" in plans[0].reason
    assert engine._forgone[0] == 0.0


def test_a_plan_run_many_times_weighs_the_one_time_cost_over_its_runs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``plan(runs=R)`` (an iterative deconvolution): the saving of R runs is weighed against
    the one-time cost, and counted toward it; ``runs=0`` only looks."""
    kernel = np.random.default_rng(0).random((5, 5))
    monkeypatch.setattr(engine, "_forgone", [0.0])
    monkeypatch.setattr(engine, "_compiled_one_time", lambda problem, constants: 0.0)
    steady = engine.plan((1024, 1024), kernel, dtype=np.float64).estimates["compiled"]
    monkeypatch.setattr(engine, "_compiled_one_time", lambda problem, constants: 1.0)
    single = engine.plan((1024, 1024), kernel, dtype=np.float64)
    saving = single.estimates[single.strategy] - steady
    assert single.strategy != "compiled" and saving > 0
    too_few = int(1.0 / saving) // 2
    assert engine.plan((1024, 1024), kernel, dtype=np.float64, runs=too_few).strategy != (
        "compiled"
    )
    assert engine._forgone[0] == pytest.approx(too_few * saving)
    enough = engine.plan((1024, 1024), kernel, dtype=np.float64, runs=too_few + 2)
    assert enough.strategy == "compiled" and "paid now" in enough.reason
    assert engine._forgone[0] == 0.0
    engine.plan((1024, 1024), kernel, dtype=np.float64)
    assert engine._forgone[0] == 0.0
    for wrong in (-1, None, 2.5, True):
        with pytest.raises(UsageError, match="runs"):
            engine.plan((8, 8), kernel, runs=wrong)  # type: ignore[arg-type]


def test_richardson_lucy_tells_the_planner_of_its_iterations(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Each iteration runs the blur twice: the planner is told 2 x iterations."""
    asked: list[int] = []
    real = engine.plan

    def spy(*args: object, **kwargs: object) -> engine.Plan:
        asked.append(int(kwargs.get("runs", 0)))  # type: ignore[call-overload]
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(engine, "plan", spy)
    image = np.random.default_rng(3).random((48, 40))
    deconvolve(image, np.ones((3, 3)) / 9, method="richardson-lucy", iterations=7)
    assert asked == [14]


def test_help_and_small_images_do_not_import_numba() -> None:
    script = (
        "import sys, numpy as np\n"
        "from convfilt import filters\n"
        "filters.gaussian_blur(np.zeros((512, 512, 3), np.uint8), 2)\n"
        "assert 'numba' not in sys.modules, 'numba imported'\n"
    )
    subprocess.run([sys.executable, "-c", script], check=True, timeout=120)


def test_threads_that_first_use_the_road_together_all_get_the_whole_kernels() -> None:
    """Two bands filtered side by side may be a process's first compiled calls: a thread must
    not be handed the kernels module while another thread is still importing it."""
    script = (
        "import threading, numpy as np\n"
        "from convfilt import engine\n"
        "start, errors = threading.Barrier(4), []\n"
        "def band():\n"
        "    start.wait()\n"
        "    try:\n"
        "        engine.correlate(np.ones((64, 64), np.float32), np.ones((3, 3)), "
        "strategy='compiled')\n"
        "    except Exception as exc:\n"
        "        errors.append(repr(exc))\n"
        "threads = [threading.Thread(target=band) for _ in range(4)]\n"
        "[t.start() for t in threads]; [t.join() for t in threads]\n"
        "assert not errors, errors\n"
    )
    subprocess.run([sys.executable, "-c", script], check=True, timeout=300)


def _as_nobody() -> list[str] | None:
    """A prefix that runs a command as an unprivileged user, or None."""
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        return None
    prefix = [setpriv, "--reuid=65534", "--regid=65534", "--clear-groups"]
    # the interpreter (and its site-packages) must be reachable by that user: a venv under a
    # 0700 folder such as /root is not
    runs = subprocess.run([*prefix, sys.executable, "-c", "import numba"], capture_output=True)
    return prefix if runs.returncode == 0 else None


def test_numba_caches_in_convfilts_folder_when_the_package_is_read_only() -> None:
    """A copy of the package that its user cannot write (as an installed one owned by root):
    the compiled road still runs, and numba's cache goes to CONVFILT_CACHE_DIR/numba."""
    prefix = _as_nobody()
    if prefix is None:
        pytest.skip("cannot run this interpreter as an unprivileged user (no setpriv, or private)")
    package = Path(compiled.__file__).parent
    tmp_path = Path(tempfile.mkdtemp(prefix="convfilt-readonly-"))  # reachable by nobody
    tmp_path.chmod(0o777)
    site = tmp_path / "site"
    shutil.copytree(package, site / "convfilt", ignore=shutil.ignore_patterns("__pycache__"))
    cache = tmp_path / "cache"
    cache.mkdir()
    for path in [tmp_path, cache]:
        path.chmod(0o777)
    for path in [site, *site.rglob("*")]:
        path.chmod(0o555 if path.is_dir() else 0o444)
    script = (
        "import numpy as np\n"
        "from convfilt import engine\n"
        "x = np.arange(30.0).reshape(5, 6)\n"
        "out = engine.correlate(x, np.ones((3, 3)), strategy='compiled')\n"
        "print(out[2, 2])\n"
    )
    environ = {k: v for k, v in os.environ.items() if k != "NUMBA_CACHE_DIR"}
    environ |= {"PYTHONPATH": str(site), "CONVFILT_CACHE_DIR": str(cache), "HOME": str(tmp_path)}
    done = subprocess.run(
        [*prefix, sys.executable, "-c", script],
        env=environ, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    for path in [site, *site.rglob("*")]:
        path.chmod(0o755)
    shutil.rmtree(tmp_path, ignore_errors=True) if done.returncode else None
    assert done.returncode == 0, done.stderr[-2000:]
    assert float(done.stdout) == pytest.approx(ndi.correlate(np.arange(30.0).reshape(5, 6),
                                                             np.ones((3, 3)))[2, 2])  # fmt: skip
    assert list((cache / "numba").rglob("compiled_kernels.*.nbi"))
    assert not list(site.rglob("*.nbi"))


def test_the_bands_of_one_image_do_not_pay_toward_the_compiled_road(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Only whole calls count their saving (``engine._amortise``): a band counting its own
    would switch roads part-way through one streamed image."""
    from functools import partial

    from convfilt import tiles

    constants = calibration.load_constants()
    price = cost.compiled_one_time(constants, imported=False, cached=True)
    monkeypatch.setattr(engine, "_compiled_one_time", lambda problem, constants: price)
    monkeypatch.setattr(engine, "_forgone", [0.0])
    kernel = np.random.default_rng(1).random((5, 5))
    image = np.random.default_rng(2).random((640, 96)).astype(np.float32)
    func = partial(engine.correlate, kernel=kernel)
    tiles.apply(image, func, reach=2, mode="reflect", rows=64)
    assert engine._forgone[0] == 0.0
    engine.correlate(image, kernel)
    assert engine._forgone[0] > 0.0


def test_the_energy_kernel_refuses_a_wrong_band_or_output() -> None:
    """The kernel does not check its bounds: its wrapper refuses what would write past them."""
    plane = np.zeros((20, 30), np.float32)
    good = np.empty((13, 26))
    compiled.window_energy_band(plane, 0.0, (8, 5), True, 0.0, 8, good)
    for out, start in ((np.empty((13, 27)), 0), (good, 4), (good, 16), (good[:, ::2], 0)):
        with pytest.raises(ValueError, match="window_energy_band"):
            compiled.window_energy_band(plane, 0.0, (8, 5), True, 0.0, start, out)


def test_the_score_kernel_refuses_arrays_of_other_shapes_or_a_strided_output() -> None:
    """The kernel does not check its bounds: its wrapper refuses what would read past them."""
    cross, energy = np.ones((4, 6), np.float32), np.ones((4, 6))
    good = np.empty((4, 6))
    compiled.ncc_band(cross, energy, 2.0, 0.0, good)
    np.testing.assert_array_equal(good, np.full((4, 6), 0.5))
    for args in ((cross, energy[:, :5], good), (cross, energy, np.empty((4, 12))[:, ::2])):
        with pytest.raises(ValueError, match="ncc_band"):
            compiled.ncc_band(args[0], args[1], 2.0, 0.0, args[2])


def test_wide_rows_get_bands_of_several_rows_within_the_per_core_share() -> None:
    wide = (12288 + 16) * 3  # one extended row: 147 KiB of float32, over BAND_BYTES alone
    assert compiled.band_rows(wide, 4, 10_000, 17) == 16  # kh - 1
    assert compiled.band_rows(wide, 4, 10_000, 3) == compiled.LEAST_BAND_ROWS
    assert compiled.band_rows(64, 4, 10_000, 3) == compiled.BAND_BYTES // (64 * 4)  # narrow
    share = -(-40 // (4 * compiled.threads()))
    assert compiled.band_rows(wide, 4, 40, 41) == share  # a short image: a quarter per core


@pytest.mark.parametrize("form", ["separable", "direct"])
def test_the_band_height_changes_no_value(monkeypatch: pytest.MonkeyPatch, form: str) -> None:
    rng = np.random.default_rng(9)
    x = (rng.random((70, 5000, 3)) * 255).astype(np.uint8)  # rows of 59 KiB as float32
    g = gaussian_1d(2.0)
    kernel = np.outer(g, g) if form == "separable" else rng.random((7, 9))
    default = engine.correlate(x, kernel, strategy="compiled")
    monkeypatch.setattr(compiled, "band_rows", lambda *_: 1)  # the old bands of one row
    np.testing.assert_array_equal(engine.correlate(x, kernel, strategy="compiled"), default)
    reference = ndi.correlate(x.astype(np.float64), kernel[:, :, None], mode="reflect")
    assert np.abs(default.astype(np.float64) - np.rint(reference)).max() <= 1


def test_the_band_buffers_are_counted_in_a_streamed_runs_memory() -> None:
    from convfilt import tiles

    shape = (40_000, 40_000, 3)
    base = tiles.FIXED_BYTES + tiles.RESIDENT_BYTES["compiled"]
    scratch = compiled.scratch_bytes(40_000, 3, 4, 41)
    assert tiles.fixed_bytes("compiled", shape, 20) == base + scratch
    # one buffer of 40 + 40 extended rows of 40040 x 3 float32 per thread: ~38 MB each
    assert scratch == compiled.threads() * 80 * 40_040 * 3 * 4
    assert tiles.fixed_bytes("separable", shape, 20) == tiles.FIXED_BYTES
    wide = tiles.least_budget(shape, np.dtype(np.uint8), reach=20, strategy="compiled")
    narrow = tiles.least_budget(shape, np.dtype(np.uint8), reach=1, strategy="compiled")
    assert wide - narrow >= scratch - compiled.scratch_bytes(40_000, 3, 4, 3)


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 70), st.integers(0, 200), st.integers(0, 2**32 - 1))
def test_row_window_sums_are_numpys_doubling_sums_bit_for_bit(
    width: int, extra: int, seed: int
) -> None:
    """The compiled row sums add the same pairs in the same order as the numpy loops'
    ``_sliding_sums``, and each is within its pairwise-summation bound of the exact sum."""
    import math

    from convfilt.matching import _sliding_sums

    kernels = compiled._kernels()
    line = np.random.default_rng(seed).standard_normal(width + extra) * 1e3
    n, count = len(line), len(line) - width + 1
    sums, one, two = np.full(count, np.nan), np.empty(n), np.empty(n)
    kernels._along_rows(line, width, one, two, sums)
    np.testing.assert_array_equal(sums, _sliding_sums(line[None, :], width)[0])
    windows = np.lib.stride_tricks.sliding_window_view(line, width)
    exact = np.array([math.fsum(window) for window in windows])
    bound = 2 * math.log2(2 * width) * np.finfo(np.float64).eps * np.abs(windows).sum(axis=1)
    assert (np.abs(sums - exact) <= bound).all()
