"""nan_policy on every road and mode: propagate against scipy.ndimage, omit against astropy,
raise; and alpha as the same weighted path."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import scipy.ndimage as ndi
import tifffile
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from convfilt import engine, filters, kernels
from convfilt.cli import app
from convfilt.engine import MODES
from convfilt.names import NAN_POLICIES

from .processes import convfilt

# astropy's boundary names for the ndimage modes it has (it has no reflect or mirror)
ASTROPY_BOUNDARY = {"constant": "fill", "wrap": "wrap", "nearest": "extend"}


def astropy_omit(image: np.ndarray, kernel: np.ndarray, mode: str) -> np.ndarray:
    from astropy.convolution import convolve as astropy_convolve

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "NaN values detected post convolution": a hole
        return astropy_convolve(
            image,
            kernel,
            boundary=ASTROPY_BOUNDARY[mode],
            fill_value=0.0,
            nan_treatment="interpolate",
            normalize_kernel=False,
            preserve_nan=False,
        )


def same_non_finite(got: np.ndarray, want: np.ndarray) -> None:
    """NaN, +inf and -inf at exactly the same places."""
    for test in (np.isnan, np.isposinf, np.isneginf):
        np.testing.assert_array_equal(test(got), test(want))


def close_where_finite(got: np.ndarray, want: np.ndarray, data: np.ndarray) -> None:
    finite = np.isfinite(want)
    scale = float(np.abs(data[np.isfinite(data)]).max())
    atol = (2e-5 if got.dtype == np.float32 else 1e-11) * scale * 10
    np.testing.assert_allclose(got[finite], want[finite], rtol=0, atol=atol)


def holey_image(shape: tuple[int, ...], dtype: type, seed: int, infs: bool = True) -> np.ndarray:
    rng = np.random.default_rng(seed)
    image = rng.standard_normal(shape)
    image[rng.random(shape) < 0.03] = np.nan
    if infs:
        image[2, 3] = np.inf
        image[shape[0] - 5, shape[1] // 2] = -np.inf
        image[shape[0] - 4, shape[1] // 2 + 1] = np.inf  # +inf and -inf in one footprint: NaN
    return image.astype(dtype)


def signed_kernel(seed: int, shape: tuple[int, int] = (5, 7)) -> np.ndarray:
    """Mixed signs, a zero tap and one below DBL_EPSILON (scipy.ndimage skips both)."""
    kernel = np.random.default_rng(seed).standard_normal(shape)
    kernel[0, 0] = 1e-17
    kernel[1, 2] = 0.0
    return kernel


def applicable(image: np.ndarray, kernel: np.ndarray) -> list[str]:
    return list(engine.plan(image.shape, kernel, dtype=image.dtype).estimates)


# --- propagate: scipy.ndimage's result, on every road ---------------------------------------


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("flip", [False, True])
def test_propagate_is_scipy_on_every_road(dtype: type, mode: str, flip: bool) -> None:
    image = holey_image((40, 52), dtype, seed=1)
    kernel = signed_kernel(2)
    scipy_filter = ndi.convolve if flip else ndi.correlate
    want = scipy_filter(image, kernel, mode=mode, cval=0.25)
    ours = engine.convolve if flip else engine.correlate
    roads = applicable(image, kernel)
    assert {"direct", "fft", "overlap-add"} <= set(roads)
    for road in roads:
        got = ours(image, kernel, mode=mode, cval=0.25, strategy=road)
        assert got.dtype == dtype
        same_non_finite(got, want)
        close_where_finite(got, want, image)


def test_propagate_on_the_separable_road_and_in_channels() -> None:
    image = holey_image((30, 34, 3), np.float32, seed=3)
    kernel = np.outer([1.0, -2.0, 0.5, 3.0], [0.5, 1.0, 0.0, 2.0, -1.0])  # even rows: a centre
    want = ndi.convolve(image, kernel[..., np.newaxis], mode="mirror")
    for road in ("separable", "direct", "fft"):
        got = engine.convolve(image, kernel, mode="mirror", strategy=road)
        same_non_finite(got, want)
        close_where_finite(got, want, image)


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    kh=st.integers(1, 6),
    kw=st.integers(1, 6),
    mode=st.sampled_from(MODES),
    density=st.floats(0.0, 0.3),
)
def test_propagate_matches_scipy_for_any_holes(
    seed: int, kh: int, kw: int, mode: str, density: float
) -> None:
    rng = np.random.default_rng(seed)
    image = rng.standard_normal((17, 19))
    image[rng.random(image.shape) < density] = np.nan
    image[rng.random(image.shape) < density / 4] = np.inf
    image[rng.random(image.shape) < density / 4] = -np.inf
    kernel = rng.standard_normal((kh, kw)) * (rng.random((kh, kw)) < 0.8)
    want = ndi.correlate(image, kernel, mode=mode)
    for road in applicable(image, kernel):
        got = engine.correlate(image, kernel, mode=mode, strategy=road)
        same_non_finite(got, want)
        close_where_finite(got, want, image)


def test_gaussian_blur_propagates_as_gaussian_filter() -> None:
    image = holey_image((48, 40), np.float32, seed=4, infs=False)
    want = ndi.gaussian_filter(image, 1.5)
    got = filters.gaussian_blur(image, 1.5)
    same_non_finite(got, want)
    close_where_finite(got, want, image)


# --- omit: normalized convolution, as astropy -------------------------------------------------


@pytest.mark.parametrize("mode", sorted(ASTROPY_BOUNDARY))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_omit_is_astropy_interpolate_on_every_road(mode: str, dtype: type) -> None:
    image = holey_image((44, 50), dtype, seed=5, infs=False)
    image[10:22, 30:42] = np.nan  # a hole wider than the kernel: NaN in its middle
    kernel = np.random.default_rng(6).random((5, 7)) + 0.1  # asymmetric: convolve flips it
    want = astropy_omit(image.astype(np.float64), kernel, mode)
    assert np.isnan(want).any() and not np.isnan(want[np.isnan(image)]).all()
    for road in applicable(image, kernel):
        got = engine.convolve(image, kernel, mode=mode, strategy=road, nan_policy="omit")
        np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
        close_where_finite(got, want, image)


def test_omit_fills_a_lone_hole_with_the_weighted_mean_of_its_neighbours() -> None:
    image = np.arange(49.0).reshape(7, 7)
    image[3, 3] = np.nan
    got = engine.correlate(image, np.ones((3, 3)), nan_policy="omit")
    neighbours = [image[y, x] for y in (2, 3, 4) for x in (2, 3, 4) if (y, x) != (3, 3)]
    assert got[3, 3] == pytest.approx(np.mean(neighbours) * 9)  # times the kernel's sum
    assert np.isfinite(got).all()


def test_omit_keeps_inf_as_data_like_astropy() -> None:
    image = holey_image((20, 24), np.float64, seed=7)
    kernel = np.random.default_rng(8).random((3, 5)) + 0.1
    want = astropy_omit(image, kernel, "constant")
    got = engine.convolve(image, kernel, mode="constant", nan_policy="omit")
    same_non_finite(got, want)
    close_where_finite(got, want, image)


@pytest.mark.parametrize("preset", ["sobel-x", "laplacian"])
def test_omit_refuses_a_kernel_that_sums_to_zero(preset: str) -> None:
    image = holey_image((12, 12), np.float32, seed=9)
    with pytest.raises(ValueError, match="sums to ~0"):
        engine.convolve(image, kernels.load_kernel(preset), nan_policy="omit")
    with pytest.raises(ValueError, match="sums to ~0"):
        filters.convolve_image(image, kernels.load_kernel(preset), nan_policy="omit")


def test_unsharp_mask_omit_gives_a_missing_pixel_its_interpolated_value() -> None:
    rng = np.random.default_rng(10)
    image = ndi.gaussian_filter(rng.random((32, 32)), 2)
    holes = rng.random(image.shape) < 0.05
    image[holes] = np.nan
    blurred = filters.gaussian_blur(image, 1.0, nan_policy="omit")
    sharpened = filters.unsharp_mask(image, 1.0, 1.5, nan_policy="omit")
    assert np.isfinite(blurred).all() and np.isfinite(sharpened).all()
    np.testing.assert_allclose(sharpened[holes], blurred[holes], rtol=0, atol=1e-12)
    valid = ~holes
    want = image[valid] + 1.5 * (image[valid] - blurred[valid])
    np.testing.assert_allclose(sharpened[valid], want, rtol=0, atol=1e-12)


# --- alpha: the same weighted path ------------------------------------------------------------


def test_alpha_is_omit_with_weights_alpha() -> None:
    """Binary alpha and NaN holes are one mechanism: premultiplied blur of the visible pixels
    equals omit on the image with NaN where alpha is 0, wherever something is visible."""
    rng = np.random.default_rng(11)
    colour = rng.random((36, 40, 3))
    alpha = (rng.random((36, 40)) < 0.7).astype(np.float64)
    blurred = filters.gaussian_blur(np.dstack([colour, alpha]), 1.3, has_alpha=True)
    holey = np.where(alpha[..., np.newaxis] > 0, colour, np.nan)
    omitted = filters.gaussian_blur(holey, 1.3, nan_policy="omit")
    visible = blurred[..., 3] > 1e-3
    np.testing.assert_allclose(blurred[..., :3][visible], omitted[visible], rtol=0, atol=1e-9)


def test_alpha_with_holes_in_colour_omits_them_too() -> None:
    rng = np.random.default_rng(12)
    colour = rng.random((24, 26, 3))
    alpha = rng.random((24, 26))
    colour[rng.random(colour.shape) < 0.05] = np.nan
    got = filters.gaussian_blur(np.dstack([colour, alpha]), 1.0, has_alpha=True, nan_policy="omit")
    assert np.isfinite(got).all()
    # by the definition: weights alpha·valid, per channel
    for c in range(3):
        w = np.where(np.isnan(colour[..., c]), 0.0, alpha)
        num = ndi.gaussian_filter(np.nan_to_num(colour[..., c]) * w, 1.0)
        want = num / ndi.gaussian_filter(w, 1.0)
        np.testing.assert_allclose(got[..., c], want, rtol=0, atol=1e-9)
    propagated = filters.gaussian_blur(np.dstack([colour, alpha]), 1.0, has_alpha=True)
    assert np.isnan(propagated[..., :3]).any() and np.isfinite(propagated[..., 3]).all()


# --- raise, bad input, integers ---------------------------------------------------------------


def test_raise_names_the_count_and_the_first_position() -> None:
    image = np.zeros((10, 12, 2), np.float32)
    image[4, 7, 1] = np.nan
    image[6, 1, 0] = -np.inf
    with pytest.raises(ValueError, match=r"2 non-finite values .* row 4, column 7, channel 1"):
        engine.correlate(image, np.ones((3, 3)), nan_policy="raise")
    with pytest.raises(ValueError, match="1 non-finite value "):
        filters.gaussian_blur(image[..., 0], 1.0, nan_policy="raise")
    clean = np.ones((5, 5))
    assert np.isfinite(engine.correlate(clean, np.ones((3, 3)), nan_policy="raise")).all()


@pytest.mark.parametrize(
    "call",
    [
        lambda policy: engine.convolve(np.ones((5, 5)), np.ones((3, 3)), nan_policy=policy),
        lambda policy: engine.correlate(np.ones((5, 5)), np.ones((3, 3)), nan_policy=policy),
        lambda policy: filters.gaussian_blur(np.ones((5, 5), np.uint8), 1.0, nan_policy=policy),
        lambda policy: filters.box_blur(np.ones((5, 5)), 1, nan_policy=policy),
        lambda policy: filters.unsharp_mask(np.ones((5, 5)), nan_policy=policy),
    ],
)
def test_unknown_policy_lists_the_three(call: object) -> None:
    with pytest.raises(ValueError, match="propagate, omit, raise"):
        call("ignore")  # type: ignore[operator]


def test_integer_images_are_the_same_under_every_policy() -> None:
    image = np.random.default_rng(13).integers(0, 256, (20, 22, 3), dtype=np.uint8)
    results = [filters.gaussian_blur(image, 1.5, nan_policy=p) for p in NAN_POLICIES]
    for result in results[1:]:
        np.testing.assert_array_equal(result, results[0])
    sobel = kernels.load_kernel("sobel-x")  # sums to 0: still fine, nothing is omitted
    edges = [filters.convolve_image(image, sobel, nan_policy=p) for p in NAN_POLICIES]
    np.testing.assert_array_equal(edges[1], edges[0])


# --- the command line ---------------------------------------------------------------------------


@pytest.fixture
def holey_tiff(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    image = holey_image((30, 32), np.float32, seed=14, infs=False)
    tifffile.imwrite("holes.tif", image)
    return tmp_path / "holes.tif"


def test_cli_nan_policy_reaches_the_filters(holey_tiff: Path) -> None:
    runner = CliRunner()
    image = tifffile.imread(holey_tiff)
    for command, library in (
        (["blur", "--sigma", "1.5"], lambda p: filters.gaussian_blur(image, 1.5, nan_policy=p)),
        (["sharpen"], lambda p: filters.unsharp_mask(image, nan_policy=p)),
        (
            ["convolve", "-k", "box:3"],
            lambda p: filters.convolve_image(image, kernels.load_kernel("box:3"), nan_policy=p),
        ),
    ):
        for policy in ("propagate", "omit"):
            result = runner.invoke(
                app,
                [
                    command[0],
                    "holes.tif",
                    *command[1:],
                    "--nan-policy",
                    policy,
                    "-o",
                    "o.tif",
                    "-f",
                ],
            )
            assert result.exit_code == 0, result.stderr
            got = tifffile.imread("o.tif")
            np.testing.assert_array_equal(got, library(policy))
            assert np.isnan(got).any() == (policy == "propagate")


def test_cli_nan_policy_raise_and_unknown(holey_tiff: Path) -> None:
    failed = convfilt("blur", "holes.tif", "--nan-policy", "raise", "-o", "o.tif")
    assert failed.returncode != 0
    assert "non-finite values" in failed.stderr and "row" in failed.stderr
    assert not Path("o.tif").exists()
    unknown = CliRunner().invoke(app, ["blur", "holes.tif", "--nan-policy", "skip"])
    assert unknown.exit_code == 2
    assert "--nan-policy" in unknown.stderr


# --- tiles: a band computed alone gives the whole image's answer -------------------------------


@pytest.mark.parametrize("policy", ["propagate", "omit"])
@pytest.mark.parametrize("road", ["direct", "fft"])
@pytest.mark.parametrize("mode", ["reflect", "wrap", "constant"])
def test_bands_inherit_the_nan_policy(policy: str, road: str, mode: str) -> None:
    from functools import partial

    from convfilt import tiles

    image = holey_image((150, 30, 2), np.float32, seed=15, infs=policy == "propagate")
    image[60:75, 5:20] = np.nan  # a hole across a band boundary, wider than the kernel
    blur = partial(filters.gaussian_blur, sigma=1.5, mode=mode, strategy=road, nan_policy=policy)
    whole = blur(image)
    banded = tiles.apply(image, blur, reach=6, mode=mode, rows=64)
    same_non_finite(banded, whole)
    if road == "direct":
        np.testing.assert_array_equal(banded, whole)
        return
    # a transform's error is absolute (~1e-6 of the data's scale here); omit divides it by the
    # valid weight K*w, which is small on the rim of a hole larger than the kernel
    valid = ndi.gaussian_filter((~np.isnan(image)).astype(float), (1.5, 1.5, 0), mode=mode)
    finite = np.isfinite(whole)
    allowed = 2e-5 * float(np.nanmax(np.abs(image[np.isfinite(image)]))) / valid[finite]
    assert np.all(np.abs(banded[finite] - whole[finite]) <= allowed)


def test_raise_in_a_band_names_the_whole_image_row() -> None:
    from functools import partial

    from convfilt import tiles

    image = np.zeros((200, 10), np.float32)
    image[150, 3] = np.nan
    blur = partial(filters.gaussian_blur, sigma=1.0, nan_policy="raise")
    with pytest.raises(ValueError, match="row 150, column 3"):
        tiles.apply(image, blur, reach=4, mode="reflect", rows=64)
