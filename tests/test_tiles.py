"""tiles.py: every filter run band by band equals the whole-image run (bit for bit on the
banded roads, within the float tolerance through the FFT), halos from the global rule."""

from __future__ import annotations

from functools import partial
from typing import Any

import numpy as np
import pytest
import scipy.ndimage as ndi
from hypothesis import given, settings
from hypothesis import strategies as st
from threadpoolctl import threadpool_limits

from convfilt import engine, filters, kernels, tiles
from convfilt.errors import UsageError

SETTINGS = settings(max_examples=30, deadline=None)
BANDED = ("direct", "separable", "compiled")


def tolerance(data: np.ndarray) -> float:
    """DESIGN.md's bound: 1e-5 of the data's range for float32, 1e-10 for float64; integer
    results rounded from floats within one level."""
    if data.dtype.kind in "iu":
        return 1.0
    scale = max(float(np.ptp(data)), float(np.abs(data).max()), 1e-30)
    return (1e-5 if data.dtype == np.float32 else 1e-10) * scale


@st.composite
def images(draw: st.DrawFn) -> tuple[np.ndarray, bool]:
    """(image, has_alpha): integer or float, grey, RGB or RGBA, 1..300 rows."""
    h = draw(st.integers(1, 300))
    w = draw(st.integers(1, 40))
    channels = draw(st.sampled_from([None, 1, 3, 4]))
    dtype = np.dtype(draw(st.sampled_from(["uint8", "uint16", "float32", "float64"])))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    shape = (h, w) if channels is None else (h, w, channels)
    scale = 65535.0 if dtype == np.uint16 else 255.0 if dtype == np.uint8 else 1.0
    image = (rng.random(shape) * scale).astype(dtype)
    alpha = channels == 4 and draw(st.booleans())
    if alpha and draw(st.booleans()):  # mostly opaque: some bands opaque, the image not
        image[..., -1] = scale
        image[: min(h, 3), :2, -1] = 0
    return image, alpha


@st.composite
def filter_calls(draw: st.DrawFn, has_alpha: bool) -> tuple[tiles.BandFilter, int, str, str]:
    """(filter, reach, mode, strategy) for one of the public filters, any mode and road."""
    mode = draw(st.sampled_from(engine.MODES))
    kind = draw(st.sampled_from(["gaussian", "box", "unsharp", "kernel"]))
    roads = ["auto", "direct", "fft", "overlap-add", "compiled"]
    strategy = draw(st.sampled_from([*roads, "separable"] if kind != "kernel" else roads))
    common: dict[str, Any] = {"mode": mode, "strategy": strategy, "has_alpha": has_alpha}
    if kind in ("gaussian", "unsharp"):
        sigma = draw(st.floats(0.3, 20))  # up to a 161-row kernel: larger than a band
        reach = len(kernels.gaussian_1d(sigma, 4.0)) // 2
        if kind == "gaussian":
            func = partial(filters.gaussian_blur, sigma=sigma, cval=0.25, **common)
        else:
            func = partial(filters.unsharp_mask, sigma=sigma, amount=1.5, **common)
    elif kind == "box":
        reach = draw(st.integers(0, 70))
        func = partial(filters.box_blur, radius=draw(st.integers(0, 5)), radius_y=reach, **common)
    else:
        kh, kw = draw(st.integers(1, 140)), draw(st.integers(1, 9))
        weights = np.random.default_rng(kh * 31 + kw).standard_normal((kh, kw))
        flip = draw(st.booleans())
        func = partial(filters.convolve_image, kernel=weights, correlate=not flip, **common)
        reach = kh // 2
    return func, reach, mode, strategy


@SETTINGS
@given(data=st.data(), picture=images(), rows=st.sampled_from([64, 128]))
def test_bands_equal_the_whole_image(data: st.DataObject, picture, rows: int) -> None:
    image, alpha = picture
    func, reach, mode, strategy = data.draw(filter_calls(alpha))
    # BLAS on one thread, as the bands run it (and as the command line sets it): OpenBLAS's
    # threaded products round some shapes differently (63x34, a sigma-12 Gaussian: 1 ulp)
    with threadpool_limits(1, user_api="blas"):
        whole = func(image)
    banded = tiles.apply(image, func, reach=reach, mode=mode, rows=rows)
    assert banded.dtype == whole.dtype and banded.shape == whole.shape
    if strategy in BANDED:
        np.testing.assert_array_equal(banded, whole)
    elif alpha and whole.dtype.kind == "f":
        # straight colour is premultiplied colour / alpha: where a sharpened alpha nears 0
        # the division magnifies any rounding, so compare what is seen, colour x alpha
        seen = [x[..., :-1] * x[..., -1:] for x in (banded, whole)]
        np.testing.assert_allclose(seen[0], seen[1], rtol=0, atol=tolerance(seen[1]))
        np.testing.assert_allclose(banded[..., -1], whole[..., -1], atol=tolerance(whole))
    else:
        np.testing.assert_allclose(banded, whole, rtol=0, atol=tolerance(whole))


@SETTINGS
@given(
    height=st.integers(1, 200),
    start=st.integers(0, 199),
    reach=st.integers(0, 500),
    mode=st.sampled_from(engine.MODES),
)
def test_band_rows_are_the_global_extension(height: int, start: int, reach: int, mode: str):
    """The halo is what numpy's padding of the whole image reads (scipy's modes by their
    numpy names), wrap included."""
    start = min(start, height - 1)
    stop = min(height, start + 64)
    held = tiles.band_rows(height, start, stop, reach, mode)
    numpy_mode = {"reflect": "symmetric", "mirror": "reflect", "nearest": "edge"}.get(mode, mode)
    index = np.arange(height)
    options = {"constant_values": -1} if mode == "constant" else {}
    padded = np.pad(index, reach, mode=numpy_mode, **options)  # type: ignore[call-overload]
    window = padded[start : stop + 2 * reach]
    np.testing.assert_array_equal(held, np.unique(window[window >= 0]))


def test_wrap_band_reads_the_bottom_rows() -> None:
    held = tiles.band_rows(1000, 0, 64, 3, "wrap")
    assert held.tolist() == [*range(0, 67), 997, 998, 999]


@pytest.mark.parametrize("mode", engine.MODES)
def test_engine_band_equals_scipy(mode: str) -> None:
    """A band through the engine against scipy.ndimage on the whole image."""
    rng = np.random.default_rng(1)
    image = rng.random((150, 33))
    kernel = rng.random((41, 5))
    band = engine.Band(tiles.band_rows(150, 64, 128, 20, mode), 150, 64, 128)
    out = engine.convolve(image[band.held], kernel, mode=mode, cval=0.5, band=band)
    expected = ndi.convolve(image, kernel, mode=mode, cval=0.5)[64:128]
    np.testing.assert_allclose(out, expected, rtol=0, atol=1e-10)


def test_band_missing_rows_is_refused() -> None:
    band = engine.Band(np.arange(10, 20), 100, 12, 14)
    with pytest.raises(ValueError, match="does not hold"):
        engine.correlate(np.zeros((10, 5)), np.ones((9, 1)), band=band)


def test_layout_from_the_budget() -> None:
    shape = (12288, 12288, 3)
    small = tiles.layout(shape, np.dtype(np.uint8), reach=8, budget=256 * 2**20)
    large = tiles.layout(shape, np.dtype(np.uint8), reach=8, budget=1024 * 2**20)
    assert small.rows % tiles.ALIGN == 0 and large.rows > small.rows
    fft = tiles.layout(shape, np.dtype(np.uint8), reach=60, budget=1024 * 2**20, strategy="fft")
    assert fft.rows >= 8 * 60
    whole = tiles.layout((100, 50), np.dtype(np.uint8), reach=2, budget=2**30)
    assert whole.count == 1


def test_layout_too_small_names_the_minimum() -> None:
    with pytest.raises(UsageError, match=r"too small .* at least \d"):
        tiles.layout((40000, 40000, 3), np.dtype(np.uint8), reach=8, budget=16 * 2**20)


def test_bands_must_be_aligned() -> None:
    with pytest.raises(UsageError, match="multiple of 64"):
        list(tiles.bands(1000, 100, 2, "reflect"))


@pytest.mark.parametrize(
    ("text", "size"),
    [("256M", 256 * 2**20), ("2G", 2 * 2**30), ("1.5GiB", int(1.5 * 2**30)), ("4096", 4096)],
)
def test_parse_size(text: str, size: int) -> None:
    assert tiles.parse_size(text) == size


@pytest.mark.parametrize("text", ["", "M", "-5M", "abc", "12X", "nanG", "0"])
def test_parse_size_refuses(text: str) -> None:
    with pytest.raises(UsageError, match="memory must be a size"):
        tiles.parse_size(text)


def test_a_failing_band_stops_the_pipeline() -> None:
    seen: list[int] = []

    def broken(pixels: np.ndarray, *, band: engine.Band | None = None) -> np.ndarray:
        assert band is not None
        if band.start >= 128:
            raise RuntimeError("boom")
        return pixels[band.inner]

    layout = tiles.Layout(1000, 4, 64, 0, "direct")
    with pytest.raises(RuntimeError, match="boom"):
        tiles.run(np.zeros((1000, 4)), broken, layout, "reflect", lambda s, r: seen.append(s))
    assert seen == [0, 64][: len(seen)]  # nothing from the failing band on


def test_a_shape_that_blas_threads_round_differently_is_identical_by_bands() -> None:
    """The case hypothesis found: with BLAS on one thread, as the bands run, a 63x34 image
    blurred with sigma 12 (a kernel taller than a band of 64 rows) is bit-identical."""
    image = np.random.default_rng(0).random((63, 34))
    func = partial(filters.gaussian_blur, sigma=12.0, mode="reflect", strategy="separable")
    with threadpool_limits(1, user_api="blas"):
        whole = func(image)
    banded = tiles.apply(image, func, reach=48, mode="reflect", rows=64)
    np.testing.assert_array_equal(banded, whole)
