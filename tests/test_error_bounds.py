"""Plan.error_bounds: each road's bound on max|result - exact| / max|image| holds on
adversarial inputs and stays informative on ordinary ones; tolerance= honours it."""

from __future__ import annotations

import numpy as np
import pytest
from numpy.lib.stride_tricks import sliding_window_view
from typer.testing import CliRunner

from convfilt import engine, kernels
from convfilt.cli import app
from convfilt.engine import STRATEGIES

PAD = {"reflect": "symmetric", "wrap": "wrap", "constant": "constant", "nearest": "edge"}


def exact(image: np.ndarray, kernel: np.ndarray, mode: str) -> np.ndarray:
    """The correlation in extended precision (long double: 11 more bits than float64 on x86,
    so that float64's own rounding is measured, not the reference's)."""
    kh, kw = kernel.shape
    pad = ((kh // 2, (kh - 1) // 2), (kw // 2, (kw - 1) // 2))
    wide = np.pad(image.astype(np.longdouble), pad, mode=PAD[mode])  # type: ignore[call-overload]
    windows = sliding_window_view(wide, kernel.shape)
    total = np.zeros(image.shape, dtype=np.longdouble)
    for (i, j), tap in np.ndenumerate(kernel.astype(np.longdouble)):
        total += tap * windows[..., i, j]
    return total


def relative_errors(image: np.ndarray, kernel: np.ndarray, mode: str) -> dict[str, float]:
    """Each applicable road's max|result - exact| / max|image|, beside its bound."""
    want = exact(image, kernel, mode)
    scale = float(np.abs(image).max())
    found = {}
    for road in engine.plan(image.shape, kernel, dtype=image.dtype, mode=mode).estimates:
        got = engine.correlate(image, kernel, mode=mode, strategy=road).astype(np.longdouble)
        found[road] = float(np.abs(got - want).max()) / scale
    return found


def adversarial_images(dtype: type, size: int = 72) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(3)
    big = float(np.finfo(dtype).max) ** 0.25  # large, but no product or sum overflows
    checker = np.indices((size, size)).sum(axis=0) % 2 * 2.0 - 1.0
    spikes = np.full((size, size), 1e-6)
    spikes[rng.integers(0, size, 20), rng.integers(0, size, 20)] = 1.0
    return {
        "constant at max": np.full((size, size), big, dtype),
        "+-max checkerboard": (checker * big).astype(dtype),
        "random signs": (rng.choice([-1.0, 1.0], (size, size)) * big).astype(dtype),
        "spikes on a floor": spikes.astype(dtype),
        "near-cancelling": (1.0 + rng.random((size, size)) * 1e-3).astype(dtype),
        "uniform": rng.random((size, size)).astype(dtype),
    }


def adversarial_kernels() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(4)
    return {
        "box 9": np.ones((9, 9)) / 81,
        "signed 7x11": rng.standard_normal((7, 11)),
        "sobel": kernels.load_kernel("sobel-x"),
        "rank one 15": np.outer(rng.random(15), rng.random(15)),
    }


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("mode", ["reflect", "constant", "wrap"])
def test_bounds_hold_on_adversarial_inputs(dtype: type, mode: str) -> None:
    for kernel_name, kernel in adversarial_kernels().items():
        bounds = engine.plan((72, 72), kernel, dtype=dtype, mode=mode).error_bounds
        assert set(bounds) >= {"direct", "fft", "overlap-add"}
        for image_name, image in adversarial_images(dtype).items():
            for road, error in relative_errors(image, kernel, mode).items():
                assert error <= bounds[road], (kernel_name, image_name, road, error, bounds[road])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_bounds_are_informative_on_ordinary_images(dtype: type) -> None:
    """Within a couple of orders of magnitude of the error measured on ordinary data
    (never 10^4 above it): the bounds say something, they are not just safe."""
    rng = np.random.default_rng(5)
    for size, n in ((96, 5), (160, 15)):
        image: np.ndarray = rng.random((size, size)).astype(dtype)
        kernel = rng.random((n, n)) + 0.05
        kernel /= kernel.sum()
        bounds = engine.plan(image.shape, kernel, dtype=dtype).error_bounds
        for road, error in relative_errors(image, kernel, "reflect").items():
            assert 0 < error <= bounds[road]
            assert bounds[road] / error < 1e3, (road, error, bounds[road])


def test_separable_bound_counts_the_factorization() -> None:
    rng = np.random.default_rng(6)
    kernel = np.outer(rng.random(9), rng.random(9))
    bounds = engine.plan((64, 64), kernel, dtype=np.float64).error_bounds
    assert bounds["separable"] > 0
    nearly = kernel + 1e-9 * rng.standard_normal(kernel.shape)  # rank one within float32
    loose = engine.plan((64, 64), nearly, dtype=np.float32).error_bounds
    if "separable" in loose:
        assert loose["separable"] >= np.abs(nearly - kernel).sum() * 0.1


# --- tolerance= ---------------------------------------------------------------------------------


def test_tolerance_skips_roads_whose_bound_exceeds_it() -> None:
    kernel = np.random.default_rng(7).random((31, 31))
    kernel /= kernel.sum()
    loose = engine.plan((2048, 2048), kernel, dtype=np.float32)
    assert loose.strategy in ("fft", "overlap-add")  # the cheapest at this size
    tight = loose.error_bounds["direct"] * 1.01
    planned = engine.plan((2048, 2048), kernel, dtype=np.float32, tolerance=tight)
    assert planned.strategy == "direct"
    assert any("error bound" in note and "tolerance" in note for note in planned.notes)
    image = np.random.default_rng(8).random((300, 300)).astype(np.float32)
    plans: list[engine.Plan] = []
    engine.convolve(image, kernel, tolerance=tight, on_plan=plans.append)
    assert plans[0].error_bounds[plans[0].strategy] <= tight


def test_tolerance_refuses_a_forced_road_or_an_impossible_one() -> None:
    kernel = np.ones((9, 9)) / 81
    image = np.ones((64, 64), np.float32)
    fft_bound = engine.plan(image.shape, kernel).error_bounds["fft"]
    with pytest.raises(ValueError, match="cannot meet tolerance"):
        engine.correlate(image, kernel, strategy="fft", tolerance=fft_bound / 2)
    with pytest.raises(ValueError, match="no strategy meets tolerance"):
        engine.correlate(image, kernel, tolerance=1e-12)
    # float64 meets what float32 cannot
    assert engine.correlate(image.astype(np.float64), kernel, tolerance=1e-12).dtype == np.float64


@pytest.mark.parametrize("bad", [0.0, -1e-6, float("nan")])
def test_bad_tolerance_is_a_value_error(bad: float) -> None:
    with pytest.raises(ValueError, match="tolerance"):
        engine.convolve(np.ones((8, 8)), np.ones((3, 3)), tolerance=bad)
    with pytest.raises(ValueError, match="tolerance"):
        engine.plan((8, 8), np.ones((3, 3)), tolerance=bad)


def test_tolerance_of_the_wrong_type_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="tolerance"):
        engine.correlate(np.ones((8, 8)), np.ones((3, 3)), tolerance="1e-6")  # type: ignore[arg-type]


def test_every_strategy_has_a_bound() -> None:
    bounds = engine.plan((128, 128), np.ones((5, 5)) / 25).error_bounds
    assert set(bounds) == set(STRATEGIES)
    assert bounds["direct"] < bounds["fft"]  # per-window sums beat whole-image transforms


def test_explain_prints_the_bound_beside_the_estimate(tmp_path, monkeypatch) -> None:
    from PIL import Image

    monkeypatch.chdir(tmp_path)
    Image.fromarray(np.zeros((40, 40), np.uint8)).save("a.png")
    result = CliRunner().invoke(app, ["blur", "a.png", "--explain", "-o", "b.png"])
    assert result.exit_code == 0, result.stderr
    assert "error bound" in result.stderr
    assert "e-" in result.stderr.split("error bound", 1)[1]
