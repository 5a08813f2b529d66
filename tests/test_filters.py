"""filters.py and kernel presets/files, against scipy.ndimage and the definitions."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import scipy.ndimage as ndi
from hypothesis import given, settings
from hypothesis import strategies as st

from convfilt import filters, kernels
from convfilt.engine import MODES
from convfilt.errors import UsageError

SETTINGS = settings(max_examples=40, deadline=None)


def tolerance(data: np.ndarray) -> float:
    """DESIGN.md's bound: 1e-5 of the data's range for float32, 1e-10 for float64."""
    scale = max(float(np.ptp(data)), float(np.abs(data).max()), 1e-30)
    return (1e-5 if data.dtype == np.float32 else 1e-10) * scale


@st.composite
def float_images(draw: st.DrawFn) -> np.ndarray:
    h = draw(st.integers(1, 24))
    w = draw(st.integers(1, 24))
    channels = draw(st.sampled_from([None, 1, 3]))
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    seed = draw(st.integers(0, 2**32 - 1))
    shape = (h, w) if channels is None else (h, w, channels)
    offset = draw(st.floats(-10, 10))
    return (np.random.default_rng(seed).random(shape) * 4 + offset).astype(dtype)


def spatial(values: tuple[float, float], image: np.ndarray) -> tuple[float, ...]:
    """Per-axis parameters for scipy: (y, x) on the spatial axes, 0 on channels."""
    return values if image.ndim == 2 else (*values, 0)


# --- Gaussian and box blur against scipy.ndimage -------------------------------------------


@SETTINGS
@given(
    image=float_images(),
    sigma=st.floats(0.3, 4.0),
    sigma_y=st.none() | st.floats(0.3, 4.0),
    truncate=st.floats(1.0, 5.0),
    mode=st.sampled_from(MODES),
)
def test_gaussian_blur_matches_scipy_on_floats(
    image: np.ndarray, sigma: float, sigma_y: float | None, truncate: float, mode: str
) -> None:
    got = filters.gaussian_blur(
        image, sigma, sigma_y=sigma_y, truncate=truncate, mode=mode, has_alpha=False
    )
    sy = sigma if sigma_y is None else sigma_y
    want = ndi.gaussian_filter(image, spatial((sy, sigma), image), mode=mode, truncate=truncate)
    assert got.dtype == image.dtype and got.shape == image.shape
    np.testing.assert_allclose(got, want, rtol=0, atol=tolerance(image))


@SETTINGS
@given(
    seed=st.integers(0, 2**32 - 1),
    dtype=st.sampled_from([np.uint8, np.uint16]),
    channels=st.sampled_from([None, 3]),
    sigma=st.floats(0.3, 3.0),
    mode=st.sampled_from(MODES),
)
def test_gaussian_blur_integer_images_round_within_one_level(
    seed: int, dtype: type, channels: int | None, sigma: float, mode: str
) -> None:
    top = np.iinfo(dtype).max
    shape = (17, 23) if channels is None else (17, 23, channels)
    image: np.ndarray = np.random.default_rng(seed).integers(0, top, shape, endpoint=True)
    image = image.astype(dtype)
    got = filters.gaussian_blur(image, sigma, mode=mode, cval=7, has_alpha=False)
    exact = ndi.gaussian_filter(
        image.astype(np.float64), spatial((sigma, sigma), image), mode=mode, cval=7
    )
    want = np.clip(np.rint(exact), 0, top)
    assert got.dtype == dtype
    assert np.abs(got.astype(np.int64) - want).max() <= 1


@SETTINGS
@given(
    image=float_images(),
    radius=st.integers(0, 5),
    radius_y=st.none() | st.integers(0, 5),
    mode=st.sampled_from(MODES),
)
def test_box_blur_matches_uniform_filter(
    image: np.ndarray, radius: int, radius_y: int | None, mode: str
) -> None:
    got = filters.box_blur(image, radius, radius_y=radius_y, mode=mode, cval=0.5, has_alpha=False)
    ry = radius if radius_y is None else radius_y
    size = spatial((2 * ry + 1, 2 * radius + 1), image)
    want = ndi.uniform_filter(image, [max(int(s), 1) for s in size], mode=mode, cval=0.5)
    np.testing.assert_allclose(got, want, rtol=0, atol=tolerance(image) * 4)


def test_gaussian_taps_match_scipy_at_half_integer_radius() -> None:
    # truncate * sigma = 2.5: scipy rounds half up to radius 3 (Python's round() would give 2)
    impulse = np.zeros(21)
    impulse[10] = 1.0
    for sigma in (0.625, 1.125, 2.0):
        taps = kernels.gaussian_1d(sigma)
        response = ndi.gaussian_filter1d(impulse, sigma)
        np.testing.assert_allclose(response[10 - len(taps) // 2 : 11 + len(taps) // 2], taps)
        assert np.count_nonzero(response) == len(taps)


# --- unsharp mask ----------------------------------------------------------------------------


@SETTINGS
@given(
    image=float_images(),
    sigma=st.floats(0.5, 3.0),
    amount=st.floats(-1.0, 3.0),
    mode=st.sampled_from(MODES),
)
def test_unsharp_mask_is_the_formula(
    image: np.ndarray, sigma: float, amount: float, mode: str
) -> None:
    got = filters.unsharp_mask(image, sigma, amount, mode=mode, has_alpha=False)
    blurred = ndi.gaussian_filter(
        image.astype(np.float64), spatial((sigma, sigma), image), mode=mode
    )
    want = image + amount * (image - blurred)
    assert got.dtype == image.dtype
    np.testing.assert_allclose(got, want, rtol=0, atol=tolerance(image) * (2 + abs(amount)))


def test_unsharp_threshold_spares_small_detail_and_sharpens_edges() -> None:
    rng = np.random.default_rng(1)
    image = np.full((32, 32), 100, np.uint8)
    image[:, 16:] = 200  # an edge
    image = (image + rng.integers(0, 3, image.shape)).astype(np.uint8)  # faint noise
    threshold = 0.05  # 12.75 grey levels
    got = filters.unsharp_mask(image, 1.5, 2.0, threshold)
    blurred = ndi.gaussian_filter(image.astype(np.float64), 1.5)
    detail = image - blurred
    strong = np.abs(detail) > threshold * 255
    assert strong.any() and (~strong).any()
    np.testing.assert_array_equal(got[~strong], image[~strong])
    want = np.clip(np.rint(image + 2.0 * detail), 0, 255)
    assert np.abs(got[strong].astype(int) - want[strong]).max() <= 1
    assert got[:, 15].mean() < image[:, 15].mean() and got[:, 16].mean() > image[:, 16].mean()


def test_unsharp_saturates_integers_instead_of_wrapping() -> None:
    image = np.zeros((9, 9), np.uint8)
    image[4, 4] = 250
    got = filters.unsharp_mask(image, 1.0, 10.0)
    assert got[4, 4] == 255  # clipped, not wrapped around
    assert got.min() == 0  # the dark halo clips at 0


def test_unsharp_threshold_scale_is_one_for_floats() -> None:
    image = np.zeros((9, 9))
    image[4, 4] = 0.5
    assert np.array_equal(filters.unsharp_mask(image, 1.0, 1.0, 0.9), image)
    assert not np.array_equal(filters.unsharp_mask(image, 1.0, 1.0, 0.1), image)


# --- alpha ------------------------------------------------------------------------------------


def red_square_on_transparent() -> np.ndarray:
    image = np.zeros((60, 60, 4), np.uint8)  # transparent black background
    image[20:40, 20:40] = (255, 0, 0, 255)  # opaque red
    return image


def test_premultiplied_alpha_leaves_no_dark_fringe() -> None:
    image = red_square_on_transparent()
    premultiplied = filters.gaussian_blur(image, 3.0, has_alpha=True)
    straight = filters.gaussian_blur(image, 3.0, has_alpha=False)  # every channel on its own
    alpha = premultiplied[..., 3]
    edge = (alpha > 10) & (alpha < 245)
    assert edge.sum() > 100
    # Without premultiplication the transparent black bleeds into the colour: a dark fringe.
    assert straight[..., 0][edge].min() < 150
    # With it the colour stays red wherever it is visible.
    assert premultiplied[..., 0][edge].min() >= 254
    assert premultiplied[..., 1:3][edge].max() == 0
    # Alpha itself is blurred like any channel.
    want_alpha = np.rint(ndi.gaussian_filter(image[..., 3].astype(float), 3.0))
    assert np.abs(alpha.astype(int) - want_alpha).max() <= 1
    # Beyond the kernel's reach (radius 12) the filtered alpha is 0, and so is the colour.
    assert np.all(premultiplied[:8, :8] == 0) and np.all(premultiplied[52:, 52:] == 0)


def test_grey_plus_alpha_is_premultiplied_when_told() -> None:
    image = np.zeros((30, 30, 2), np.float32)
    image[10:20, 10:20] = (0.8, 1.0)
    got = filters.box_blur(image, 2, has_alpha=True)
    visible = got[..., 1] > 0.01
    np.testing.assert_allclose(got[..., 0][visible], 0.8, rtol=1e-5)


def test_four_plain_channels_are_not_taken_for_alpha() -> None:
    rng = np.random.default_rng(6)
    image = rng.random((20, 20, 4)).astype(np.float32)
    got = filters.gaussian_blur(image, 1.2)
    np.testing.assert_allclose(got, ndi.gaussian_filter(image, (1.2, 1.2, 0)), atol=1e-5)


def test_opaque_alpha_changes_nothing_in_colour() -> None:
    rng = np.random.default_rng(3)
    rgb = rng.random((20, 20, 3)).astype(np.float32)
    rgba = np.dstack([rgb, np.ones((20, 20), np.float32)])
    got = filters.gaussian_blur(rgba, 1.2, has_alpha=True)
    np.testing.assert_allclose(got[..., :3], ndi.gaussian_filter(rgb, (1.2, 1.2, 0)), atol=1e-5)
    np.testing.assert_allclose(got[..., 3], 1.0, atol=1e-6)


def test_opaque_rgba_matches_rgb_and_a_transparent_outside_still_counts() -> None:
    rgb = natural_uint8((24, 24, 3))
    rgba = np.dstack([rgb, np.full((24, 24), 255, np.uint8)])
    blurred = filters.gaussian_blur(rgba, 1.5, has_alpha=True)
    np.testing.assert_array_equal(blurred[..., :3], filters.gaussian_blur(rgb, 1.5))
    assert np.all(blurred[..., 3] == 255)
    # mode="constant" with cval 0: the outside is transparent, so the edges lose opacity
    framed = filters.gaussian_blur(rgba, 1.5, mode="constant", has_alpha=True)
    assert framed[0, 0, 3] < 200 and framed[12, 12, 3] == 255
    # ... but not colour: it is an average over the visible pixels only
    assert np.abs(framed[0, :, :3].astype(int) - blurred[0, :, :3]).max() < 40


def natural_uint8(shape: tuple[int, ...]) -> np.ndarray:
    smooth = ndi.gaussian_filter(np.random.default_rng(8).random(shape), (3, 3, 0)[: len(shape)])
    return (255 * (smooth - smooth.min()) / np.ptp(smooth)).astype(np.uint8)


# --- linear light -----------------------------------------------------------------------------


def test_srgb_curve_known_values_and_round_trip() -> None:
    values = np.array([0.0, 0.04045, 0.5, 1.0])
    linear = filters.srgb_to_linear(values.copy())
    np.testing.assert_allclose(linear, [0.0, 0.04045 / 12.92, 0.21404114, 1.0], rtol=1e-6)
    # atol: the standard's two knees (0.04045 and 0.0031308) disagree by about 3e-8
    np.testing.assert_allclose(filters.linear_to_srgb(linear), values, atol=1e-7)
    grid = np.linspace(-0.2, 1.2, 1001)
    round_trip = filters.linear_to_srgb(filters.srgb_to_linear(grid.copy()))
    np.testing.assert_allclose(round_trip, grid, atol=1e-7)


def test_linear_light_with_a_tiny_sigma_is_the_identity() -> None:
    rng = np.random.default_rng(4)
    image = rng.integers(0, 256, (16, 16, 4), dtype=np.uint8)
    image[..., 3] = 255
    assert np.array_equal(filters.gaussian_blur(image, 0.01, linear=True, has_alpha=True), image)
    deep = rng.integers(0, 65536, (16, 16, 3), dtype=np.uint16)
    assert np.array_equal(filters.gaussian_blur(deep, 0.01, linear=True), deep)


def test_linear_light_averages_a_checkerboard_to_the_brighter_grey() -> None:
    # Half black, half white, averaged in linear light: 0.5 linear, i.e. sRGB 0.7354 -> 187.5.
    board = ((np.indices((64, 64)).sum(axis=0) % 2) * 255).astype(np.uint8)
    linear = filters.gaussian_blur(board, 4.0, mode="wrap", linear=True)
    plain = filters.gaussian_blur(board, 4.0, mode="wrap")
    assert set(np.unique(linear)) <= {187, 188}
    assert set(np.unique(plain)) <= {127, 128}


def test_linear_light_leaves_alpha_linear() -> None:
    image = red_square_on_transparent()
    image[10:30, 10:30, 3] = 128
    linear = filters.gaussian_blur(image, 2.0, linear=True, has_alpha=True)
    plain = filters.gaussian_blur(image, 2.0, has_alpha=True)
    np.testing.assert_array_equal(linear[..., 3], plain[..., 3])


# --- convolve / correlate and alpha policy ----------------------------------------------------


@SETTINGS
@given(
    image=float_images(),
    preset=st.sampled_from(["sobel-x", "emboss", "laplacian", "box:4", "motion:5", "sharpen"]),
    correlate=st.booleans(),
    mode=st.sampled_from(MODES),
)
def test_convolve_image_matches_scipy(
    image: np.ndarray, preset: str, correlate: bool, mode: str
) -> None:
    kernel = kernels.load_kernel(preset)
    got = filters.convolve_image(image, kernel, correlate=correlate, mode=mode, has_alpha=False)
    run = ndi.correlate if correlate else ndi.convolve
    planes = image[..., None] if image.ndim == 2 else image
    want = np.stack([run(planes[..., c], kernel, mode=mode) for c in range(planes.shape[2])], -1)
    want = want.reshape(image.shape)
    bound = tolerance(image) * float(np.abs(kernel).sum()) * 2
    np.testing.assert_allclose(got, want, rtol=0, atol=bound)


def test_sobel_x_convolution_is_the_positive_gradient_and_correlation_its_negative() -> None:
    ramp = np.tile(np.arange(10, dtype=np.float64), (6, 1))  # brighter to the right
    sobel = kernels.load_kernel("sobel-x")
    convolved = filters.convolve_image(ramp, sobel)
    correlated = filters.convolve_image(ramp, sobel, correlate=True)
    np.testing.assert_allclose(convolved[:, 3:7], 8.0)
    np.testing.assert_allclose(correlated[:, 3:7], -8.0)
    column = ramp.T.copy()  # brighter downwards
    np.testing.assert_allclose(
        filters.convolve_image(column, kernels.load_kernel("sobel-y"))[3:7], 8.0
    )


def test_edge_kernels_keep_alpha_and_averaging_kernels_premultiply() -> None:
    image = red_square_on_transparent()
    edges = filters.convolve_image(image, kernels.load_kernel("laplacian"), has_alpha=True)
    np.testing.assert_array_equal(edges[..., 3], image[..., 3])
    box = kernels.load_kernel("box:5")
    averaged = filters.convolve_image(image, box, has_alpha=True)
    np.testing.assert_array_equal(averaged, filters.box_blur(image, 2, has_alpha=True))


# --- dtypes, shapes, errors ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "dtype",
    [np.uint8, np.uint16, np.int32, np.uint64, np.int64, np.float16, np.float32, np.float64],
)
def test_dtype_and_shape_are_preserved(dtype: type) -> None:
    image: np.ndarray = (np.random.default_rng(5).random((12, 13, 3)) * 100).astype(dtype)
    for source, out in (
        (image, filters.gaussian_blur(image, 1.0)),
        (image[..., 0], filters.box_blur(image[..., 0], 1)),
        (image, filters.unsharp_mask(image, 1.0, 0.5)),
    ):
        assert out.dtype == image.dtype
        assert out.shape == source.shape


@pytest.mark.parametrize("dtype", [np.uint64, np.int64, np.uint32, np.int32, np.uint16])
def test_white_stays_white_and_black_stays_black(dtype: type) -> None:
    """The clip bounds are inside the dtype's range: 64-bit extremes do not wrap around
    (float(2**64 - 1) is 2**64), they stay within float64's precision of the extreme."""
    info = np.iinfo(dtype)
    for value in (info.max, info.min):
        image: np.ndarray = np.full((5, 6), value, dtype)
        out = filters.gaussian_blur(image, 1.0)
        assert out.dtype == dtype
        error = np.abs(out.astype(object) - int(value))
        assert max(error.ravel()) <= 2 ** max(0, info.bits - 53)


@pytest.mark.parametrize("method", ["direct", "fft", "overlap-add"])
def test_integer_kernel_on_uint16_is_exact_on_every_road(method: str) -> None:
    """A non-averaging integer kernel: the exact integer result (clipped), not float32's
    rounding of it through a transform."""
    rng = np.random.default_rng(2)
    image = rng.integers(0, 65536, (90, 80)).astype(np.uint16)
    kernel = rng.integers(-9, 10, (15, 15)).astype(float)
    kernel[7, 7] -= kernel.sum() - 1
    want = ndi.convolve(image.astype(np.int64), kernel.astype(np.int64), mode="reflect")
    got = filters.convolve_image(image, kernel, strategy=method)
    np.testing.assert_array_equal(got, np.clip(want, 0, 65535))


def test_integer_results_are_rounded_half_to_even() -> None:
    # A 1x2 mean of 0 and 1 is 0.5 everywhere: half-to-even rounds it to 0, of 2 and 3 to 2.
    image = np.array([[0, 1, 0, 1, 2, 3, 2, 3]], np.uint8)
    got = filters.convolve_image(image, np.array([[0.5, 0.5]]), correlate=True, mode="wrap")
    exact = ndi.correlate(image.astype(float), np.array([[0.5, 0.5]]), mode="wrap")
    np.testing.assert_array_equal(got, np.rint(exact))
    assert np.any(exact % 1 == 0.5)


@pytest.mark.parametrize(
    "call",
    [
        lambda x: filters.gaussian_blur(x, 0.0),
        lambda x: filters.gaussian_blur(x, float("nan")),
        lambda x: filters.gaussian_blur(x, -1.0),
        lambda x: filters.gaussian_blur(x, 1.0, sigma_y=float("inf")),
        lambda x: filters.gaussian_blur(x, 1.0, truncate=0.0),
        lambda x: filters.gaussian_blur(x, 1.0, mode="bogus"),
        lambda x: filters.box_blur(x, -1),
        lambda x: filters.box_blur(x, 1.5),  # type: ignore[arg-type]
        lambda x: filters.box_blur(x, 1, radius_y=0.5),  # type: ignore[arg-type]
        lambda x: filters.unsharp_mask(x, 1.0, float("nan")),
        lambda x: filters.unsharp_mask(x, 1.0, 1.0, 1.0),
        lambda x: filters.unsharp_mask(x, 1.0, 1.0, -0.1),
        lambda x: filters.gaussian_blur(x[0, 0], 1.0),
        lambda x: filters.gaussian_blur(x.astype(bool), 1.0),
    ],
)
def test_bad_arguments_are_usage_errors(call: object) -> None:
    image = np.zeros((5, 5, 3), np.uint8)
    with pytest.raises(UsageError):
        call(image)  # type: ignore[operator]


def test_on_plan_is_reported_once_per_image() -> None:
    plans: list[object] = []
    filters.gaussian_blur(np.zeros((8, 8, 4), np.uint8), 1.0, on_plan=plans.append)
    assert len(plans) == 1


# --- kernel presets and files -------------------------------------------------------------------


def test_presets() -> None:
    assert kernels.load_kernel("box:5").shape == (5, 5)
    assert kernels.load_kernel("BOX").shape == (3, 3)
    np.testing.assert_allclose(kernels.load_kernel("box:4").sum(), 1.0)
    np.testing.assert_allclose(
        kernels.load_kernel("gaussian:2.0"),
        np.outer(kernels.gaussian_1d(2.0), kernels.gaussian_1d(2.0)),
    )
    assert kernels.load_kernel("motion:7").shape == (1, 7)
    assert kernels.load_kernel("motion").shape == (1, 9)
    np.testing.assert_array_equal(kernels.load_kernel("sobel-y"), kernels.load_kernel("sobel-x").T)
    for name in ("sharpen", "emboss"):
        assert kernels.load_kernel(name).sum() == 1
    assert kernels.load_kernel("laplacian").sum() == 0
    assert set(kernels.PRESETS) == {
        "box", "gaussian", "sharpen", "laplacian", "sobel-x", "sobel-y", "emboss", "motion",
        "disk",
    }  # fmt: skip


@pytest.mark.parametrize("spec", ["box:0", "box:x", "gaussian:0", "gaussian:nan", "sobel-x:3"])
def test_bad_preset_arguments(spec: str) -> None:
    with pytest.raises(UsageError, match=r"^kernel "):
        kernels.load_kernel(spec)


def test_text_kernel_files(tmp_path: Path) -> None:
    path = tmp_path / "k.txt"
    path.write_text("# a 2x3 kernel\n1, 2 3  # first row\n\n4\t5,6\n")
    np.testing.assert_array_equal(kernels.load_kernel(str(path)), [[1, 2, 3], [4, 5, 6]])
    np.testing.assert_allclose(
        kernels.load_kernel(str(path), normalize=True), np.array([[1, 2, 3], [4, 5, 6]]) / 21
    )


def test_npy_kernel_files(tmp_path: Path) -> None:
    path = tmp_path / "k.npy"
    np.save(path, np.arange(6, dtype=np.int16).reshape(2, 3))
    got = kernels.load_kernel(str(path))
    assert got.dtype == np.float64
    np.testing.assert_array_equal(got, np.arange(6).reshape(2, 3))


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("ragged.txt", "1 2 3\n4 5\n", "ragged"),
        ("empty.txt", "# nothing\n\n", "empty"),
        ("word.txt", "1 two 3\n", "not a number"),
        ("nan.txt", "1 nan 3\n", "NaN"),
        ("inf.csv", "1,inf\n", "NaN or infinity"),
        ("binary.txt", b"\xff\xfe\x00\x81", "not a text file"),
        ("flat.npy", np.ones(3), "2-D"),
        ("cube.npy", np.ones((2, 2, 2)), "2-D"),
        ("empty.npy", np.ones((0, 3)), "empty"),
        ("text.npy", np.array([["a"]]), "not real numbers"),
        ("broken.npy", b"not an npy file", "not a readable"),
    ],
)
def test_bad_kernel_files_name_the_file(
    tmp_path: Path, name: str, content: object, message: str
) -> None:
    path = tmp_path / name
    if isinstance(content, np.ndarray):
        np.save(path, content)
    elif isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(str(content))
    with pytest.raises(UsageError, match=message) as info:
        kernels.load_kernel(str(path))
    assert str(path) in str(info.value)


def test_missing_kernel_file_or_folder(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="no such file"):
        kernels.load_kernel(str(tmp_path / "nope.txt"))
    with pytest.raises(UsageError, match="not a file"):
        kernels.load_kernel(str(tmp_path))


def test_normalize_refuses_a_zero_sum() -> None:
    with pytest.raises(UsageError, match="sums to 0"):
        kernels.load_kernel("laplacian", normalize=True)


def test_nan_stays_inside_its_footprint_as_in_scipy() -> None:
    image = np.random.default_rng(6).random((40, 40)).astype(np.float32)
    image[20, 20] = np.nan
    got = filters.gaussian_blur(image, 1.0)
    want = ndi.gaussian_filter(image, 1.0)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    assert np.isnan(got).sum() == 9 * 9  # radius 4 around the NaN, nothing more
    finite = ~np.isnan(want)
    np.testing.assert_allclose(got[finite], want[finite], atol=1e-5)


# --- sharpen with alpha: GEGL's unsharp mask, in premultiplied space ------------------------


def gegl_unsharp(
    rgba: np.ndarray, sigma: float, amount: float, threshold: float = 0.0
) -> np.ndarray:
    """The definition, from scipy.ndimage alone (float64, alpha last, values in [0, 1]):
    P' = P + amount·(P - G*P), a' = clip(a + amount·(a - G*a)), colour P'/a' where a' > 0;
    colour is kept where |C - (G*P)/(G*a)| <= threshold (straight colour, as for RGB); the
    threshold does not apply to alpha."""
    colour, alpha = rgba[..., :-1], rgba[..., -1]
    premultiplied = colour * alpha[..., np.newaxis]
    blurred = ndi.gaussian_filter(premultiplied, (sigma, sigma, 0))
    blurred_alpha = ndi.gaussian_filter(alpha, sigma)
    sharp = premultiplied + amount * (premultiplied - blurred)
    sharp_alpha = np.clip(alpha + amount * (alpha - blurred_alpha), 0.0, 1.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.where(sharp_alpha[..., np.newaxis] > 0, sharp / sharp_alpha[..., np.newaxis], 0.0)
        straight_blur = blurred / blurred_alpha[..., np.newaxis]
    keep = np.abs(colour - straight_blur) <= threshold
    out[keep] = colour[keep]
    return np.dstack([out, sharp_alpha])


def alpha_ramp_image(size: int = 64) -> np.ndarray:
    """Smooth random colour under a smooth alpha ramp from 0.05 to 1 (float64, RGBA)."""
    rng = np.random.default_rng(21)
    colour = ndi.gaussian_filter(rng.random((size, size, 3)), (2, 2, 0))
    colour = (colour - colour.min()) / np.ptp(colour)
    ramp = np.linspace(0.05, 1.0, size)
    alpha = np.clip(np.add.outer(ramp, ramp) / 2 + 0.1 * rng.standard_normal((size, size)), 0, 1)
    return np.dstack([colour, alpha])


@pytest.mark.parametrize("threshold", [0.0, 0.02])
def test_sharpen_with_alpha_is_gegl_premultiplied_unsharp(threshold: float) -> None:
    image = alpha_ramp_image()
    got = filters.unsharp_mask(image, 1.5, 0.6, threshold, has_alpha=True)
    want = gegl_unsharp(image, 1.5, 0.6, threshold)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-9)


def test_sharpen_with_alpha_on_uint8_rounds_the_definition() -> None:
    image = np.rint(alpha_ramp_image(48) * 255).astype(np.uint8)
    got = filters.unsharp_mask(image, 1.2, 1.5, has_alpha=True)
    want = np.clip(np.rint(gegl_unsharp(image / 255.0, 1.2, 1.5) * 255), 0, 255)
    assert np.abs(got.astype(int) - want).max() <= 1


# --- scipy.ndimage / scikit-image conventions ----------------------------------------------------


def test_sigma_per_axis_is_row_col_as_in_scipy() -> None:
    image = np.random.default_rng(3).random((30, 40))
    ours = filters.gaussian_blur(image, (1.0, 3.0))
    np.testing.assert_allclose(ours, ndi.gaussian_filter(image, (1.0, 3.0)), atol=1e-12)
    np.testing.assert_array_equal(ours, filters.gaussian_blur(image, 3.0, sigma_y=1.0))
    sharpened = filters.unsharp_mask(image, (2.0, 0.5), amount=1.0)
    blurred = ndi.gaussian_filter(image, (2.0, 0.5))
    np.testing.assert_allclose(sharpened, 2 * image - blurred, atol=1e-12)
    boxed = filters.box_blur(image, (2, 1))
    np.testing.assert_allclose(boxed, ndi.uniform_filter(image, (5, 3)), atol=1e-12)


@pytest.mark.parametrize(
    ("sigma", "error", "message"),
    [
        ((1, 2, 3), UsageError, "a number or a \\(row, col\\) pair"),
        ((1, -2), UsageError, "sigma must be a finite number > 0"),
        ("2", TypeError, "sigma must be a number"),
        (None, TypeError, "sigma must be a number"),
        ((1, "x"), TypeError, "sigma must be a real number"),
    ],
)
def test_bad_sigma_is_a_clear_error(sigma, error, message) -> None:
    with pytest.raises(error, match=message):
        filters.gaussian_blur(np.ones((8, 8)), sigma)


def test_a_pair_and_sigma_y_do_not_go_together() -> None:
    with pytest.raises(UsageError, match="sigma_y"):
        filters.gaussian_blur(np.ones((8, 8)), (1.0, 2.0), sigma_y=3.0)


def test_channels_first_is_refused_by_default_and_taken_when_named() -> None:
    image = np.random.default_rng(4).random((3, 32, 40))
    with pytest.raises(UsageError, match="channels-first"):
        filters.gaussian_blur(image, 2.0)
    first = filters.gaussian_blur(image, 2.0, channel_axis=0)
    np.testing.assert_allclose(first, ndi.gaussian_filter(image, (0, 2.0, 2.0)), atol=1e-12)
    last = filters.gaussian_blur(image, 2.0, channel_axis=-1)  # named: 40 channels it is
    np.testing.assert_allclose(last, ndi.gaussian_filter(image, (2.0, 2.0, 0)), atol=1e-12)
    plain = np.random.default_rng(5).random((32, 40, 3))
    np.testing.assert_array_equal(filters.gaussian_blur(plain, 2.0), last_axis(plain))


def last_axis(image: np.ndarray) -> np.ndarray:
    return filters.gaussian_blur(image, 2.0, channel_axis=2)


def test_channel_axis_on_a_plain_image_is_refused() -> None:
    with pytest.raises(UsageError, match="channel_axis"):
        filters.box_blur(np.ones((8, 8)), 1, channel_axis=0)
    with pytest.raises(TypeError, match="channel_axis"):
        filters.box_blur(np.ones((8, 8, 3)), 1, channel_axis=1.5)  # type: ignore[arg-type]


def test_filters_take_output_as_scipy_does() -> None:
    image = (np.random.default_rng(6).random((16, 16)) * 255).astype(np.uint8)
    blurred = filters.gaussian_blur(image, 1.0)
    as_float = filters.gaussian_blur(image, 1.0, output=np.float32)
    assert as_float.dtype == np.float32
    np.testing.assert_array_equal(as_float, blurred.astype(np.float32))
    target = np.empty_like(image)
    assert filters.convolve_image(image, np.ones((3, 3)) / 9, output=target) is target


def test_none_as_the_image_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="image must be an array of real numbers"):
        filters.gaussian_blur(None, 1.0)  # type: ignore[arg-type]


def test_the_old_method_keyword_still_works_in_the_filters() -> None:
    image = np.random.default_rng(7).random((16, 16))
    with pytest.warns(DeprecationWarning):
        old = filters.gaussian_blur(image, 1.0, method="fft")
    np.testing.assert_array_equal(old, filters.gaussian_blur(image, 1.0, strategy="fft"))
