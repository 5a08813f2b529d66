"""The engine against scipy.ndimage and the definitions, on every strategy and boundary mode."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import pytest
import scipy.ndimage as ndi
import scipy.signal
from hypothesis import given, settings
from hypothesis import strategies as st

from convfilt import compiled, cost, engine, pools
from convfilt.errors import UsageError
from convfilt.kernels import gaussian_1d, separate

TOLERANCE = {np.dtype(np.float32): 2e-5, np.dtype(np.float64): 1e-10}


@pytest.fixture(autouse=True, scope="module")
def shipped_constants(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Plan with the shipped constants, whatever the user has calibrated."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CONVFILT_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))
        yield


@contextmanager
def small_tiles() -> Iterator[None]:
    """Tiny bands and tiles, so that small images cross many band and tile edges."""
    cost._estimate.cache_clear()  # memoised estimates would keep the other tiles' prices
    try:
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(engine, "BAND_BYTES", 64)
            patch.setattr(compiled, "BAND_BYTES", 64)
            patch.setattr(cost, "TILE_CANDIDATES", (5, 16))
            yield
    finally:
        cost._estimate.cache_clear()


def reference(x: np.ndarray, k: np.ndarray, mode: str, cval: float, flip: bool) -> np.ndarray:
    """scipy.ndimage per channel, in float64."""
    function = ndi.convolve if flip else ndi.correlate
    x64 = x.astype(np.float64)
    if x.ndim == 2:
        return function(x64, k, mode=mode, cval=cval)
    planes = [function(x64[..., c], k, mode=mode, cval=cval) for c in range(x.shape[2])]
    return np.stack(planes, axis=-1)


def assert_close(
    out: np.ndarray, expected: np.ndarray, x: np.ndarray, k: np.ndarray, cval: float = 0.0
) -> None:
    """The issue's tolerance: 2e-5 (float32) or 1e-10 (float64) of max|x|·Σ|k|.

    In ``constant`` mode the data the kernel sees includes ``cval``, so |cval| counts in max|x|.
    """
    largest = max(float(np.abs(x).max()), abs(cval))
    scale = max(largest * float(np.abs(k).sum()), 1e-300)
    error = float(np.abs(out.astype(np.float64) - expected).max()) / scale
    assert error <= TOLERANCE[out.dtype], f"relative error {error:.3g}"


@st.composite
def problems(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray, str, float, str]:
    """An image (2-D or with channels), a kernel (odd, even, 1xn, larger than the image),
    a mode, cval and a strategy that applies to the kernel."""
    h, w = draw(st.integers(1, 23)), draw(st.integers(1, 23))
    channels = draw(st.sampled_from([None, 1, 3]))
    kh, kw = draw(st.integers(1, 9)), draw(st.integers(1, 9))
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    method = draw(st.sampled_from(engine.STRATEGIES))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    shape = (h, w) if channels is None else (h, w, channels)
    x = rng.standard_normal(shape).astype(dtype)
    # rank one for separable, and half the time for compiled (its separable form)
    if method == "separable" or (method == "compiled" and draw(st.booleans())):
        k = np.outer(rng.standard_normal(kh), rng.standard_normal(kw))
    else:
        k = rng.standard_normal((kh, kw))
    mode = draw(st.sampled_from(engine.MODES))
    cval = draw(st.sampled_from([0.0, 1.5, -2.0]))
    return x, k, mode, cval, method


@settings(max_examples=400, deadline=None)
@given(problems(), st.booleans())
def test_every_strategy_matches_scipy(
    problem: tuple[np.ndarray, np.ndarray, str, float, str], flip: bool
) -> None:
    x, k, mode, cval, method = problem
    function = engine.convolve if flip else engine.correlate
    with small_tiles():
        out = function(x, k, mode=mode, cval=cval, strategy=method)
    assert out.shape == x.shape
    assert out.dtype == x.dtype
    assert_close(out, reference(x, k, mode, cval, flip), x, k, cval if mode == "constant" else 0)


@pytest.mark.parametrize("method", engine.STRATEGIES)
@pytest.mark.parametrize("mode", engine.MODES)
def test_default_tiling_on_a_larger_image(method: str, mode: str) -> None:
    rng = np.random.default_rng(5)
    x = rng.random((301, 263, 2), dtype=np.float32)
    k = np.outer(rng.random(7), rng.random(6)) if method == "separable" else rng.random((7, 6))
    out = engine.convolve(x, k, mode=mode, cval=0.25, strategy=method)
    assert_close(out, reference(x, k, mode, 0.25, flip=True), x, k, 0.25)


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 4), st.integers(1, 4), st.integers(0, 2**32 - 1))
def test_convolve_is_correlate_with_the_flipped_kernel_for_odd_sizes(
    half_h: int, half_w: int, seed: int
) -> None:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((20, 17))
    k = rng.standard_normal((2 * half_h - 1, 2 * half_w - 1))
    for method in ("direct", "fft"):
        flipped = engine.correlate(x, k[::-1, ::-1], strategy=method, mode="mirror")
        np.testing.assert_allclose(
            engine.convolve(x, k, strategy=method, mode="mirror"), flipped, rtol=0, atol=1e-12
        )


@pytest.mark.parametrize("method", ["direct", "fft", "overlap-add"])
def test_convolution_is_associative_on_full_support(method: str) -> None:
    """(x*a)*b == x*(a*b), with zeros around x wide enough that nothing reaches a border."""
    rng = np.random.default_rng(3)
    a, b = rng.standard_normal((5, 3)), rng.standard_normal((3, 7))
    x = np.zeros((40, 44))
    x[8:-8, 8:-8] = rng.standard_normal((24, 28))
    ab = scipy.signal.convolve(a, b, mode="full")  # 7x9, still odd: same centre
    twice = engine.convolve(
        engine.convolve(x, a, mode="constant", strategy=method), b, mode="constant", strategy=method
    )
    once = engine.convolve(x, ab, mode="constant", strategy=method)
    np.testing.assert_allclose(twice, once, rtol=0, atol=1e-11)


def test_fft_equals_direct() -> None:
    rng = np.random.default_rng(4)
    x = rng.random((157, 203), dtype=np.float32)
    k = rng.standard_normal((17, 12)).astype(np.float32)
    direct = engine.correlate(x, k, strategy="direct", mode="wrap")
    for method in ("fft", "overlap-add"):
        assert_close(
            engine.correlate(x, k, strategy=method, mode="wrap"), direct.astype(np.float64), x, k
        )


# --- dtypes, exact integers, non-finite input ---------------------------------------------------


@pytest.mark.parametrize(
    ("dtype", "expected"),
    [
        (np.float32, np.float32),
        (np.float64, np.float64),
        (np.float16, np.float32),
        (np.uint8, np.float64),
        (np.int32, np.float64),
        (np.bool_, np.float64),
    ],
)
def test_output_dtype(dtype: type, expected: type) -> None:
    x: np.ndarray = (np.arange(30).reshape(5, 6) % 2).astype(dtype)
    assert engine.correlate(x, np.ones((3, 3))).dtype == expected


@pytest.mark.parametrize("method", engine.STRATEGIES)
@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.int16])
def test_integer_image_and_kernel_give_exact_integers(method: str, dtype: type) -> None:
    rng = np.random.default_rng(6)
    info = np.iinfo(dtype)
    x: np.ndarray = rng.integers(info.min, info.max, (45, 38), endpoint=True).astype(dtype)
    k = np.outer([1, 2, 1], [1, 0, -1]) if method == "separable" else rng.integers(-9, 10, (5, 4))
    out = engine.convolve(x, k, strategy=method, mode="nearest")
    expected = ndi.convolve(x.astype(np.int64), k.astype(np.int64), mode="nearest")
    assert np.array_equal(out, expected.astype(np.float64))


@pytest.mark.parametrize("method", engine.STRATEGIES)
@pytest.mark.parametrize("mode", engine.MODES)
@pytest.mark.parametrize("cval", [0.0, 3.0, -7.0, 0.5])
def test_integer_exactness_in_every_mode_and_cval(method: str, mode: str, cval: float) -> None:
    """Integer image and kernel: exact integers in every mode (constant mode with an integer
    cval); a fractional cval in constant mode is not rounded away (scipy: 6.5, not 6)."""
    rng = np.random.default_rng(16)
    x: np.ndarray = rng.integers(0, 256, (23, 19)).astype(np.uint8)
    k = np.outer([1, 2, 1], [1, 0, -1]) if method == "separable" else rng.integers(-5, 6, (4, 5))
    out = engine.correlate(x, k, strategy=method, mode=mode, cval=cval)
    expected = ndi.correlate(x.astype(np.float64), k.astype(np.float64), mode=mode, cval=cval)
    if mode == "constant" and not cval.is_integer():
        assert not np.array_equal(out, np.rint(out))
        np.testing.assert_allclose(out, expected, rtol=0, atol=1e-9)
    else:
        assert np.array_equal(out, np.rint(expected))


def test_fractional_cval_on_an_integer_image_is_not_rounded() -> None:
    x = np.ones((3, 3), np.uint8)
    out = engine.correlate(x, np.ones((3, 3)), mode="constant", cval=0.5)
    assert out[0, 0] == 6.5
    assert out[1, 1] == 9.0


@pytest.mark.parametrize("cval", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_cval_is_a_usage_error(cval: float) -> None:
    with pytest.raises(UsageError, match="cval"):
        engine.correlate(np.ones((8, 8)), np.ones((3, 3)), mode="constant", cval=cval)


def test_huge_float32_values_keep_off_the_transforms() -> None:
    """The DC term of a float32 transform of 1e36-sized data overflows: only the banded
    roads apply, and their result is finite and right."""
    rng = np.random.default_rng(17)
    x = (rng.random((120, 130)) * 1e36).astype(np.float32)
    k = rng.random((9, 9))
    plans: list[engine.Plan] = []
    out = engine.correlate(x, k, on_plan=plans.append)
    assert set(plans[0].estimates) == {"direct", "compiled"}
    assert any("float32" in note and "fft" in note for note in plans[0].notes)
    assert np.isfinite(out).all()
    assert_close(out, reference(x, k, "reflect", 0.0, flip=False), x, k)
    with pytest.raises(UsageError, match="float32"):
        engine.correlate(x, k, strategy="fft")
    # ordinary float32 data still may take the transforms
    assert "fft" in engine.plan((120, 130), k, dtype=np.float32).estimates


def test_forced_separable_on_a_nan_image_names_the_real_reason() -> None:
    x = np.ones((20, 20))
    x[3, 3] = np.nan
    with pytest.raises(UsageError, match="not rank one"):
        engine.correlate(x, np.eye(3), strategy="separable")


def test_complex_kernels_are_usage_errors() -> None:
    with pytest.raises(UsageError, match="complex"):
        engine.correlate(np.ones((8, 8)), np.ones((3, 3)) * (1 + 1j))


def test_huge_integers_leave_only_direct() -> None:
    p = engine.plan((64, 64), np.ones((3, 3), dtype=np.int64), dtype=np.int64)
    assert set(p.estimates) == {"direct"}
    assert not any("exact integers" in note for note in p.notes)  # beyond 2**53: not exact
    assert any("nearest float64" in note for note in p.notes)
    small = engine.plan((64, 64), np.ones((3, 3)), dtype=np.uint16)
    assert any("exact integers" in note for note in small.notes)
    assert small.dtype == "float64"  # the working dtype
    with pytest.raises(UsageError, match="fft"):
        engine.plan((64, 64), np.ones((3, 3)), dtype=np.int64, strategy="fft")


def test_non_finite_input_stays_local_as_in_scipy() -> None:
    rng = np.random.default_rng(7)
    x: np.ndarray = rng.standard_normal((30, 40))
    x[10, 12], x[25, 3] = np.nan, np.inf
    k = rng.standard_normal((5, 3))
    plans: list[engine.Plan] = []
    out = engine.correlate(x, k, on_plan=plans.append)
    assert len(plans) == 1  # the image's own road, not the footprints' masks
    expected = ndi.correlate(x, k)
    assert np.array_equal(np.isnan(out), np.isnan(expected))
    assert np.isnan(out).sum() <= 2 * k.size
    np.testing.assert_allclose(out, expected, rtol=0, atol=1e-12)


def test_non_finite_kernel_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="NaN"):
        engine.correlate(np.ones((8, 8)), np.array([[1.0, np.nan]]))


# --- the planner ---------------------------------------------------------------------------------


def test_planner_clear_cases() -> None:
    rng = np.random.default_rng(8)
    small = engine.plan((64, 64), rng.random((3, 3)))
    assert small.strategy in ("direct", "compiled")  # compiled once this process loaded it
    large = engine.plan((2048, 2048), rng.random((65, 65)))
    assert large.strategy != "direct"
    assert large.estimates["direct"] > large.estimates[large.strategy]
    g = gaussian_1d(3.0)
    for dtype in (np.float32, np.float64, np.uint8):
        chosen = engine.plan((512, 512, 3), np.outer(g, g), dtype=dtype).strategy
        assert chosen in ("separable", "compiled")


def test_auto_prefers_a_banded_road_on_a_near_tie(monkeypatch: pytest.MonkeyPatch) -> None:
    """Within BANDED_PREFERENCE of a transform's estimate, auto takes direct and says why;
    beyond it, the cheaper transform."""
    kernel = np.random.default_rng(3).random((9, 9))
    prices = {"direct": 1.0, "fft": 2.0, "overlap-add": 1.0, "compiled": 5.0}

    def estimate(strategy: str, *_: object) -> float:
        return prices[strategy]

    monkeypatch.setattr(cost, "estimate", estimate)
    for transform, expected in ((0.97, "direct"), (0.9, "overlap-add")):
        prices["overlap-add"] = transform
        chosen = engine.plan((512, 512), kernel)
        assert chosen.strategy == expected
        assert ("within 5% of overlap-add" in chosen.reason) == (expected == "direct")


def test_plan_reports_every_applicable_estimate_and_a_reason() -> None:
    p = engine.plan((128, 96), np.ones((5, 5)), mode="wrap")
    assert set(p.estimates) == set(engine.STRATEGIES)
    assert all(seconds > 0 for seconds in p.estimates.values())
    assert p.strategy in p.reason
    assert "\n" not in p.reason
    assert (p.image_shape, p.kernel_shape, p.dtype, p.mode) == (
        (128, 96),
        (5, 5),
        "float32",
        "wrap",
    )
    rank_two = engine.plan((128, 96), np.eye(5))
    assert "separable" not in rank_two.estimates
    assert any("not rank one" in note for note in rank_two.notes)


def test_forced_method_is_carried_out_and_reported() -> None:
    plans: list[engine.Plan] = []
    engine.correlate(np.ones((16, 16)), np.ones((3, 3)), strategy="fft", on_plan=plans.append)
    assert [p.strategy for p in plans] == ["fft"]
    assert "forced" in plans[0].reason


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"method": "separable"}, "not rank one"),
        ({"method": "winograd"}, "unknown strategy"),
        ({"mode": "grid-wrap"}, "unknown mode"),
    ],
)
def test_invalid_requests_are_usage_errors(kwargs: dict[str, str], message: str) -> None:
    k = np.array([[1.0, 2.0], [3.0, 4.0]])
    options = {"mode": "reflect", "method": "auto", **kwargs}
    with pytest.raises(UsageError, match=message):
        engine.plan((32, 32), k, mode=options["mode"], strategy=options["method"])
    with pytest.raises(UsageError, match=message):
        engine.convolve(np.ones((32, 32)), k, mode=options["mode"], strategy=options["method"])


@pytest.mark.parametrize(
    ("image", "kernel"),
    [
        (np.ones((4, 4, 3, 2)), np.ones((3, 3))),
        (np.ones((4, 4)), np.ones(3)),
        (np.ones((4, 4)), []),
    ],
)
def test_bad_shapes_are_usage_errors(image: np.ndarray, kernel: object) -> None:
    with pytest.raises(UsageError):
        engine.correlate(image, kernel)  # type: ignore[arg-type]


# --- separability ---------------------------------------------------------------------------------


@settings(max_examples=30, deadline=None)
@given(st.floats(0.3, 12.0), st.floats(0.3, 12.0))
def test_gaussians_are_always_separable(sigma_y: float, sigma_x: float) -> None:
    k = np.outer(gaussian_1d(sigma_y), gaussian_1d(sigma_x))
    for dtype in (np.float32, np.float64):
        factors = separate(k, dtype)
        assert factors is not None
        np.testing.assert_allclose(np.outer(*factors), k, rtol=0, atol=1e-15)


def test_rank_two_kernels_are_not_separable() -> None:
    assert separate(np.array([[1.0, 0.0], [0.0, 1.0]])) is None
    assert separate(np.outer([1, 2], [3, 4]) + 1e-6 * np.eye(2), np.float64) is None
    assert separate(np.zeros((3, 3))) is None


# --- valid-mode correlation (template matching) ---------------------------------------------


@pytest.mark.parametrize("method", ["auto", "direct", "fft", "overlap-add"])
def test_correlate_valid_matches_the_definition(method: str) -> None:
    rng = np.random.default_rng(9)
    image = rng.random((60, 47)).astype(np.float32)
    kernels = [rng.standard_normal((9, 6)), np.ones((9, 6))]
    outs = engine.correlate_valid(image, kernels, strategy=method)
    windows = np.lib.stride_tricks.sliding_window_view(image.astype(np.float64), (9, 6))
    for k, out in zip(kernels, outs, strict=True):
        assert out.shape == (52, 42)
        assert out.dtype == np.float64
        np.testing.assert_allclose(out, np.einsum("yxij,ij->yx", windows, k), atol=1e-11)


def test_correlate_valid_takes_a_measured_largest() -> None:
    """A caller's max|image| stands in for the engine's own passes: same result; a value
    that is not finite is refused."""
    rng = np.random.default_rng(11)
    image = rng.standard_normal((60, 50)).astype(np.float32)
    kernels = [rng.random((7, 5))]
    own = engine.correlate_valid(image, kernels, dtype=np.float32)[0]
    given = float(np.abs(image).max())
    told = engine.correlate_valid(image, kernels, dtype=np.float32, largest=given)[0]
    np.testing.assert_array_equal(told, own)
    with pytest.raises(UsageError, match="largest"):
        engine.correlate_valid(image, kernels, largest=float("inf"))


def test_correlate_valid_rejects_a_kernel_larger_than_the_image() -> None:
    with pytest.raises(UsageError, match="larger"):
        engine.correlate_valid(np.ones((5, 5)), [np.ones((6, 2))])
    with pytest.raises(UsageError, match="one shape"):
        engine.correlate_valid(np.ones((9, 9)), [np.ones((3, 3)), np.ones((2, 2))])


# --- start-up cost ------------------------------------------------------------------------------


def test_planner_and_banded_roads_import_no_scipy() -> None:
    """A small Gaussian blur plans and runs without importing scipy (~0.1-0.3 s at start-up):
    scipy.fft belongs to the FFT roads."""
    script = (
        "import numpy as np, convfilt\n"
        "x = np.random.default_rng(0).random((40, 50, 3)).astype(np.float32)\n"
        "plans = []\n"
        "convfilt.gaussian_blur(x, 2.0)\n"
        "convfilt.correlate(x[..., 0], np.outer([1, 2, 1], [1, 0, -1]), on_plan=plans.append)\n"
        "print(plans[0].strategy)\n"
    )
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", script],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "CONVFILT_CACHE_DIR": "/nonexistent-convfilt-cache"},
    )
    imported = [line.split("|")[-1].strip() for line in result.stderr.splitlines() if "|" in line]
    assert "numpy" in imported  # the import log is there
    assert not [name for name in imported if name.split(".")[0] == "scipy"]
    assert result.stdout.split() == ["separable"]


# --- scipy.ndimage's conventions: strategy=, output=, TypeErrors --------------------------------


def test_the_old_method_keyword_still_works_and_warns() -> None:
    x, k = np.random.default_rng(0).random((16, 16)), np.ones((3, 3))
    with pytest.warns(DeprecationWarning, match="strategy="):
        old = engine.correlate(x, k, method="fft")
    np.testing.assert_array_equal(old, engine.correlate(x, k, strategy="fft"))
    with pytest.warns(DeprecationWarning), pytest.raises(UsageError, match="disagree"):
        engine.correlate(x, k, strategy="direct", method="fft")


@pytest.mark.parametrize("function", [engine.correlate, engine.convolve])
def test_output_takes_a_dtype_or_an_array_as_scipy_does(function) -> None:
    rng = np.random.default_rng(1)
    x, k = rng.integers(0, 256, (12, 10)).astype(np.uint8), rng.random((3, 3)) - 0.3
    exact = function(x, k)
    assert exact.dtype == np.float64  # integers compute (and by default return) in float64
    as_uint8 = function(x, k, output=np.uint8)
    assert as_uint8.dtype == np.uint8
    np.testing.assert_array_equal(as_uint8, np.clip(np.rint(exact), 0, 255))
    target = np.empty((12, 10), dtype=np.float32)
    assert function(x, k, output=target) is target
    np.testing.assert_allclose(target, exact, rtol=1e-6)
    with pytest.raises(UsageError, match="output"):
        function(x, k, output=np.empty((3, 3)))


@pytest.mark.parametrize("image", [None, "image.png", np.array([object()] * 4).reshape(2, 2)])
def test_an_image_that_is_not_numbers_is_a_type_error(image) -> None:
    with pytest.raises(TypeError, match="image must be an array of real numbers"):
        engine.correlate(image, np.ones((3, 3)))


def test_the_roads_that_round_in_a_pass_of_their_own_are_priced_for_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An 8-bit image's result is rounded back to 8 bits: a pass of its own on every road but
    the compiled one, which rounds as it writes; a float image's result is not rounded."""
    from convfilt import filters

    # what this process has loaded of the compiled road is beside the point here
    monkeypatch.setattr(engine, "_compiled_one_time", lambda problem, constants: 0.0)

    x = np.zeros((300, 200, 3), np.uint8)
    plans: dict[str, list[engine.Plan]] = {"uint8": [], "float32": []}
    filters.gaussian_blur(x, 2.0, on_plan=plans["uint8"].append)
    filters.gaussian_blur(x.astype(np.float32), 2.0, on_plan=plans["float32"].append)
    stored, floating = plans["uint8"][0].estimates, plans["float32"][0].estimates
    shape = engine._problem((300, 200), 3, [np.ones((9, 9))], np.dtype(np.float32)).shape
    for road in ("direct", "separable", "fft"):
        assert stored[road] - floating[road] == pytest.approx(cost.rounding_seconds(shape))
    assert stored["compiled"] == pytest.approx(floating["compiled"])


def test_a_colour_image_with_nan_reports_its_plan_once() -> None:
    """``on_plan`` is called once per call, however many channels go the NaN path."""
    x = np.random.default_rng(4).random((30, 40, 3))
    x[5, 6, :] = np.nan
    for policy in ("propagate", "omit"):
        plans: list[engine.Plan] = []
        engine.correlate(x, np.ones((3, 3)), nan_policy=policy, on_plan=plans.append)
        assert len(plans) == 1, policy


# --- the kernels' transforms on a second thread (cost.concurrent_spectra) ------------------------


def _concurrent_case(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """An image and kernel whose whole-image transform is in the concurrent range."""
    x = rng.random((300, 280), dtype=np.float32)
    k = rng.standard_normal((25, 18)).astype(np.float32)
    points = np.prod(cost.fft_size(cost.Shape(300, 280, 1, 1, 25, 18)))
    if not cost.concurrent_spectra(int(points)):
        pytest.skip("one core here: the kernels' transforms stay on the caller's thread")
    return x, k


@pytest.mark.parametrize("mode", ["reflect", "wrap", "constant", "nearest"])
def test_kernel_spectra_beside_the_image_change_no_bit(
    monkeypatch: pytest.MonkeyPatch, mode: str
) -> None:
    x, k = _concurrent_case(np.random.default_rng(21))
    rgb = np.stack([x, x[::-1], x[:, ::-1]], axis=-1)
    made_on: list[str] = []
    spectra = engine._kernel_spectra

    def spy(*args: object) -> object:
        made_on.append(threading.current_thread().name)
        return spectra(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(engine, "_kernel_spectra", spy)
    beside = [engine.correlate(img, k, strategy="fft", mode=mode) for img in (x, rgb)]
    assert made_on and all(name.startswith("convfilt-spectra") for name in made_on)
    valid = engine.correlate_valid(x, [k, k[::-1]], strategy="fft", dtype=np.float32)
    monkeypatch.setattr(cost, "CONCURRENT_SPECTRA_SIZE", 2**62)
    alone = [engine.correlate(img, k, strategy="fft", mode=mode) for img in (x, rgb)]
    for a, b in zip(beside, alone, strict=True):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(
        valid,
        engine.correlate_valid(x, [k, k[::-1]], strategy="fft", dtype=np.float32),
        strict=True,
    ):
        np.testing.assert_array_equal(a, b)
    truth = ndi.correlate(x.astype(np.float64), k.astype(np.float64), mode=mode)
    assert_close(beside[0], truth, x, k)


@pytest.mark.parametrize("strategy", ["fft", "direct"])
def test_a_callers_side_work_runs_behind_the_kernel_spectra_on_its_thread(
    monkeypatch: pytest.MonkeyPatch, strategy: str
) -> None:
    """``beside``: the FFT road makes its kernel spectra on the side work's pool thread,
    ahead of that work; any other road starts the work as it begins. No bit changes."""
    if cost.available_cores() < 2:
        pytest.skip("one core here: the spectra stay on the caller's thread")
    rng = np.random.default_rng(23)
    x = rng.random((200, 190), dtype=np.float32)
    kernels = [rng.standard_normal((31, 26)).astype(np.float32) for _ in range(2)]
    alone = engine.correlate_valid(x, kernels, strategy=strategy, dtype=np.float32)
    events: list[tuple[str, str]] = []
    spectra, image_spectrum = engine._kernel_spectra, engine._image_spectrum
    begun = threading.Event()

    def spy(*args: object) -> object:
        events.append(("spectra", threading.current_thread().name))
        begun.set()
        return spectra(*args)  # type: ignore[arg-type]

    def image_spectrum_once_begun(*args: object) -> object:
        # the caller's own transform waits until the pool thread has begun the spectra, so
        # the caller never takes them back (as it does when the thread is slow to wake)
        assert begun.wait(timeout=10)
        return image_spectrum(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(engine, "_kernel_spectra", spy)
    monkeypatch.setattr(engine, "_image_spectrum", image_spectrum_once_begun)
    pool = pools.LazyPool("convfilt-side", lambda: 1)
    side = pools.SideWork(lambda: events.append(("work", threading.current_thread().name)), pool)
    beside = engine.correlate_valid(x, kernels, strategy=strategy, dtype=np.float32, beside=side)
    side.wait()
    for a, b in zip(beside, alone, strict=True):
        np.testing.assert_array_equal(a, b)
    expected = ["spectra", "work"] if strategy == "fft" else ["work"]
    assert [what for what, _ in events] == expected
    assert all(name.startswith("convfilt-side") for _, name in events)


def _fft_in_child(x: np.ndarray, k: np.ndarray, queue: object) -> None:
    queue.put(engine.correlate(x, k, strategy="fft"))  # type: ignore[attr-defined]


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork here")
def test_a_forked_child_transforms_with_threads_of_its_own() -> None:
    import multiprocessing

    x, k = _concurrent_case(np.random.default_rng(22))
    parent = engine.correlate(x, k, strategy="fft")  # the parent's pool exists now
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    child = context.Process(target=_fft_in_child, args=(x, k, queue), daemon=True)
    child.start()
    try:
        result = queue.get(timeout=60)  # the parent's pool threads are not in the child
    finally:
        child.join(timeout=60)
        if child.is_alive():  # hung on a pool without threads: fail, do not hang pytest
            child.kill()
    assert child.exitcode == 0
    np.testing.assert_array_equal(result, parent)


LATE_THREAD = """
import threading, time
import numpy as np
from convfilt import engine, matching
x = np.random.default_rng(0).random((300, 280), dtype=np.float32)
k = np.random.default_rng(1).random((25, 18)).astype(np.float32)
early = engine.correlate(x, k, strategy="fft")
def late():  # still running once the main thread has returned: pools take no more work
    time.sleep(0.5)
    assert np.array_equal(engine.correlate(x, k, strategy="fft"), early)
    matching.match_template(x, x[40:90, 60:120].copy())
    print("late call ok", flush=True)
threading.Thread(target=late).start()
"""


def test_a_thread_still_filtering_at_interpreter_shutdown_is_served() -> None:
    done = subprocess.run(
        [sys.executable, "-c", LATE_THREAD], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert "late call ok" in done.stdout


@settings(max_examples=120, deadline=None)
@given(
    st.integers(1, 30),
    st.integers(1, 12),
    st.integers(0, 40),
    st.integers(0, 40),
    st.sampled_from(engine.MODES),
    st.data(),
)
def test_source_fill_is_the_extension_by_definition(
    height: int, width: int, before: int, after: int, mode: str, data: st.DataObject
) -> None:
    """``Source.fill`` (slices for runs of rows, one gather for the rest) writes each extended
    row and column exactly where the boundary rule says, cval where it says -1, for any band
    of the extended rows: halos longer than the image, single rows, wrap's jumps."""
    plane = np.arange(height * width, dtype=np.float64).reshape(height, width) + 1.0
    rows = engine.extension_indices(height, before, after, mode)
    left = data.draw(st.integers(0, 5))
    cols = engine.extension_indices(width, left, data.draw(st.integers(0, 5)), mode)
    start = data.draw(st.integers(0, len(rows) - 1))
    stop = data.draw(st.integers(start + 1, len(rows)))
    source = engine.Source(plane, rows, cols, left, -7.0)
    out = np.full((stop - start + 2, len(cols) + 3), np.nan)
    filled = source.fill(start, stop, out)
    padded = np.vstack([plane, np.full((1, width), -7.0)])  # index -1: the cval row
    expected = padded[rows[start:stop]]
    expected = np.hstack([expected, np.full((len(expected), 1), -7.0)])[:, cols]
    assert np.array_equal(filled, expected)
    assert np.isnan(out[stop - start :]).all() and np.isnan(out[:, len(cols) :]).all()


def test_extension_indices_hands_out_copies() -> None:
    """The boundary tables are remembered; a caller that writes into one it was given
    changes no later call's table."""
    first = engine.extension_indices(9, 3, 2, "reflect")
    first[:] = 0
    again = engine.extension_indices(9, 3, 2, "reflect")
    assert again.tolist() == [2, 1, 0, *range(9), 8, 7]


def test_tall_boundary_tables_are_not_kept() -> None:
    """A tall streamed image's table is built for its call and held by no cache."""
    from convfilt import tiles

    tiles._remembered_extension.cache_clear()
    tall = tiles.REMEMBERED_TABLE
    table = engine.extension_indices(tall, 2, 2, "mirror")
    assert table.tolist() == [2, 1, *range(tall), tall - 2, tall - 3]
    assert tiles._remembered_extension.cache_info().currsize == 0
    engine.extension_indices(100, 2, 2, "mirror")
    assert tiles._remembered_extension.cache_info().currsize == 1


LAPLACIAN = [[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]]


@pytest.mark.parametrize(
    "kernel",
    [
        np.outer([1.0, -2.0, 3.0, 0.0, 1.0], [2.0, 1.0, -1.0]),  # integer, rank one
        np.outer(gaussian_1d(1.3), gaussian_1d(0.7)),  # rank one, not integer
        np.array(LAPLACIAN),  # integer, not rank one
        np.random.default_rng(5).standard_normal((5, 7)),  # neither
    ],
    ids=["integer-rank-one", "gaussian", "laplacian", "random"],
)
def test_kernel_facts_by_definition(kernel: np.ndarray) -> None:
    """The remembered kernel facts are the definitions' answers: integer taps whatever the
    rank, the norms, and factors whose product is the kernel (read-only: they are shared)."""
    facts = engine._kernel_facts(kernel, np.dtype(np.float64))
    assert facts.integer == bool((kernel == np.round(kernel)).all())
    assert facts.norms.l1 == pytest.approx(np.abs(kernel).sum())
    assert (facts.factors is None) == (separate(kernel, np.float64) is None)
    if facts.factors is None:
        assert facts.norms.factored == facts.norms.residual == 0.0
        return
    c, r = facts.factors
    np.testing.assert_allclose(np.outer(c, r), kernel, atol=1e-12)
    assert facts.norms.factored == pytest.approx(np.abs(c).sum() * np.abs(r).sum())
    assert facts.norms.residual == pytest.approx(np.abs(kernel - np.outer(c, r)).sum())
    assert not c.flags.writeable and not r.flags.writeable


@pytest.mark.parametrize("first", ["float32", "float64"])
def test_kernel_facts_are_kept_per_dtype_and_shape(first: str) -> None:
    """A kernel that is rank one within float32's tolerance but not float64's is separated
    for each dtype on its own, in either order; the same bytes in another shape are another
    kernel."""
    rng = np.random.default_rng(8)
    kernel = np.outer(rng.standard_normal(6), rng.standard_normal(4))
    kernel += 1e-7 * rng.standard_normal(kernel.shape)
    engine._facts_of.cache_clear()
    order = [first, "float64" if first == "float32" else "float32"]
    facts = {name: engine._kernel_facts(kernel, np.dtype(name)) for name in order}
    assert facts["float32"].factors is not None
    assert facts["float64"].factors is None
    other = engine._kernel_facts(kernel.reshape(4, 6), np.dtype(np.float64))
    assert other.norms.l1 == pytest.approx(facts["float64"].norms.l1)
    assert separate(kernel.reshape(4, 6), np.float64) is None and other.factors is None
    wide = engine._kernel_facts(np.ones((1, 6)), np.dtype(np.float64))
    tall = engine._kernel_facts(np.ones((6, 1)), np.dtype(np.float64))
    assert wide.factors is not None and tall.factors is not None
    assert wide.factors[0].shape == (1,) and tall.factors[0].shape == (6,)


def test_problem_norms_take_the_largest_term_over_the_kernels() -> None:
    """With several kernels (``correlate_valid``), each norm is the largest over the kernels
    (the largest l1 not in the first kernel, the only residual not in the largest); one
    kernel that is not rank one drops the factored terms."""
    rng = np.random.default_rng(9)
    noisy = np.outer(rng.standard_normal(3), rng.standard_normal(3))
    noisy += 1e-6 * rng.standard_normal((3, 3))  # rank one within float32's tolerance
    kernels = [
        noisy,
        np.outer([1.0, 1.0, 1.0], [3.0, 3.0, 3.0]),
        np.outer([4.0, -4.0, 0.5], [0.3, 0.9, -0.2]),
    ]
    problem = engine._problem((30, 30), 1, kernels, np.dtype(np.float32))
    each = [engine._kernel_facts(k, np.dtype(np.float32)) for k in kernels]
    assert all(f.factors is not None for f in each)
    assert problem.norms.l1 == max(np.abs(k).sum() for k in kernels) == 27.0
    assert problem.norms.factored == max(f.norms.factored for f in each)
    assert problem.norms.residual == each[0].norms.residual > 0
    mixed = engine._problem((30, 30), 1, [*kernels[:2], np.array(LAPLACIAN)], np.dtype(np.float32))
    assert mixed.factors is None and mixed.norms == cost.KernelNorms(27.0)


def test_serial_band_rows_are_sized_for_one_core() -> None:
    """The serial kernel's bands: the rows wanted, at most a quarter of the image (one core)."""
    wanted = compiled._rows_wanted(64, 4, 3)
    assert compiled.band_rows(64, 4, 400, 3, 1) == min(wanted, 100)
    assert compiled.band_rows(64, 4, 40, 3, 1) == 10
