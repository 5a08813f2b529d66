"""deconvolve: the mathematics (against the forward model and scipy), the defaults' promises
(no ringing, no clipping, no NaN, dtype kept) and the bad inputs."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from convfilt import deconvolution, kernels
from convfilt.deconvolution import deconvolve
from convfilt.errors import UsageError


def _scene(shape: tuple[int, int] = (64, 80), seed: int = 0) -> np.ndarray:
    """A smooth random scene in [0.1, 0.9]: a few blurred blobs and a bar (not white noise)."""
    rng = np.random.default_rng(seed)
    x = ndimage.gaussian_filter(rng.random(shape), 2.0)
    x = (x - x.min()) / (x.max() - x.min())
    x[10:20, 5:60] = 1.0
    return 0.1 + 0.8 * x


def _psnr(a: np.ndarray, b: np.ndarray, peak: float = 1.0) -> float:
    return float(10 * np.log10(peak**2 / np.mean((a - b) ** 2)))


PSFS = ["gaussian:1.5", "disk:2", "motion:7:30", "box:1"]


@pytest.mark.parametrize("spec", PSFS)
@pytest.mark.parametrize("method", ["wiener", "richardson-lucy"])
def test_restores_better_than_the_blur_everywhere_including_the_border(spec, method):
    sharp = _scene()
    psf = kernels.load_psf(spec)
    rng = np.random.default_rng(1)
    blurred = ndimage.convolve(sharp, psf / psf.sum(), mode="reflect")
    noisy = blurred + rng.normal(0, 0.003, sharp.shape)
    restored = deconvolve(noisy, psf, method=method)
    assert restored.dtype == np.float64 and restored.shape == sharp.shape
    assert _psnr(restored, sharp) > _psnr(noisy, sharp) + 1.0
    border = np.ones(sharp.shape, bool)
    border[6:-6, 6:-6] = False
    assert _psnr(restored[border], sharp[border]) > _psnr(noisy[border], sharp[border])


def test_noiseless_wiener_inverts_a_gaussian_blur():
    sharp = _scene()
    psf = kernels.load_psf("gaussian:1")
    blurred = ndimage.convolve(sharp, psf, mode="reflect")
    restored = deconvolve(blurred, psf)
    assert np.abs(restored - sharp).mean() < 0.4 * np.abs(blurred - sharp).mean()


def test_wrap_mode_is_the_circular_model_exactly():
    """With a periodic image, ``wrap`` and a tiny balance is plain division by H."""
    sharp = _scene((32, 40))
    psf = kernels.load_psf("gaussian:0.8")
    blurred = ndimage.convolve(sharp, psf, mode="wrap")
    restored = deconvolve(blurred, psf, mode="wrap", balance=1e-12)
    np.testing.assert_allclose(restored, sharp, atol=1e-6)


def test_given_balance_is_scikit_image_wiener_on_a_periodic_image():
    skimage = pytest.importorskip("skimage.restoration")
    sharp = _scene((32, 40))
    psf = kernels.load_psf("gaussian:1.2")
    blurred = ndimage.convolve(sharp, psf, mode="wrap")
    ours = deconvolve(blurred, psf, mode="wrap", balance=0.05)
    theirs = skimage.wiener(blurred, psf, 0.05, clip=False)
    np.testing.assert_allclose(ours, theirs, atol=1e-9)


@pytest.mark.parametrize("strategy", ["fft", "direct", "separable", "compiled"])
def test_blur_operator_roads_agree_and_the_adjoint_is_the_transpose(strategy):
    rng = np.random.default_rng(2)
    separable = strategy in ("separable", "compiled")
    psf = kernels.load_psf("gaussian:1.5") if separable else rng.random((4, 5))
    psf = psf / psf.sum()
    grid = deconvolution.make_grid((30, 36), psf, "reflect", np.dtype(np.float64), (8, 10))
    reference = deconvolution.Blur(grid, psf, "fft")
    blur = deconvolution.Blur(grid, psf, strategy)
    x, z = rng.random(grid.shape), rng.random(grid.shape)
    np.testing.assert_allclose(blur.apply(x), ndimage.convolve(x, psf, mode="wrap"), atol=1e-12)
    np.testing.assert_allclose(blur.adjoint(z), reference.adjoint(z), atol=1e-12)
    assert np.isclose(np.sum(blur.apply(x) * z), np.sum(x * blur.adjoint(z)), rtol=1e-12)


def test_richardson_lucy_fixed_count_matches_the_textbook_iteration_on_a_periodic_image():
    """mode wrap: no padding, so the update is the plain RL of Richardson (1972)."""
    sharp = _scene((24, 30))
    psf = kernels.load_psf("gaussian:1")
    blurred = ndimage.convolve(sharp, psf, mode="wrap")
    x = blurred.copy()
    for _ in range(5):
        ratio = blurred / ndimage.convolve(x, psf, mode="wrap")
        x *= ndimage.correlate(ratio, psf, mode="wrap")
    ours = deconvolve(blurred, psf, method="richardson-lucy", iterations=5, mode="wrap")
    np.testing.assert_allclose(ours, x, rtol=1e-10)


def test_integer_images_keep_their_depth_and_are_not_clipped_to_8_bits():
    sharp = (_scene() * 60000).astype(np.uint16)
    psf = kernels.load_psf("gaussian:1.5")
    blurred = np.rint(ndimage.convolve(sharp.astype(float), psf)).astype(np.uint16)
    for method in ("wiener", "richardson-lucy"):
        out = deconvolve(blurred, psf, method=method)
        assert out.dtype == np.uint16
        assert out.max() > 255 * 4
        assert _psnr(out.astype(float), sharp.astype(float), 65535) > _psnr(
            blurred.astype(float), sharp.astype(float), 65535
        )


def test_floats_keep_their_range_and_zero_pixels_give_no_nan():
    sharp = _scene() * 1000.0 - 200.0  # negative and large: nothing clipped to [0, 1]
    sharp[30:40, 30:40] = 0.0
    psf = kernels.load_psf("disk:2")
    blurred = ndimage.convolve(sharp, psf)
    wiener = deconvolve(blurred, psf)
    assert wiener.min() < -90 and wiener.max() > 650
    iterated = deconvolve(blurred, psf, method="richardson-lucy")  # shifted up, and back
    assert np.all(np.isfinite(iterated))
    assert iterated.min() < -50 and iterated.max() > 650
    zeros = np.zeros((20, 20))
    zeros[5, 5] = 1.0
    out = deconvolve(zeros, psf, method="richardson-lucy")
    assert np.all(np.isfinite(out)) and out.min() >= 0
    assert np.all(deconvolve(np.zeros((16, 16)), psf, method="richardson-lucy") == 0)


def test_alpha_and_channels_as_in_blur():
    rgba = np.zeros((40, 40, 4), np.uint8)
    rgba[..., :3] = (_scene((40, 40))[..., None] * 255).astype(np.uint8)
    rgba[..., 3] = 255
    out = deconvolve(rgba, kernels.load_psf("gaussian:1"), has_alpha=True)
    assert out.dtype == np.uint8 and out.shape == rgba.shape
    assert np.all(out[..., 3] == 255)


def test_the_report_says_what_ran():
    seen: list[deconvolution.Report] = []
    image = _scene() + np.random.default_rng(3).normal(0, 0.01, (64, 80))
    deconvolve(
        image, kernels.load_psf("gaussian:1"), method="richardson-lucy", on_report=seen.append
    )
    assert len(seen) == 1 and seen[0].iterations is not None and seen[0].iterations >= 1
    assert abs(seen[0].noise - 0.01) < 0.002
    assert "discrepancy" in seen[0].stopped_by or "stalled" in seen[0].stopped_by


def test_noise_estimate_reads_gaussian_noise_on_8_bit_levels():
    rng = np.random.default_rng(4)
    flat = np.rint(128 + rng.normal(0, 2.5, (256, 256)))
    assert deconvolution.estimate_noise(flat) == pytest.approx(2.5, rel=0.05)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"iterations": 0, "method": "richardson-lucy"}, "iterations must be"),
        ({"balance": -0.1}, "balance must be"),
        ({"method": "inverse"}, "method must be one of"),
        ({"iterations": 3}, "iterations is for"),
        ({"balance": 0.1, "method": "richardson-lucy"}, "balance is for"),
    ],
)
def test_bad_parameters(kwargs, message):
    with pytest.raises(UsageError, match=message):
        deconvolve(np.ones((16, 16)), np.ones((3, 3)), **kwargs)


@pytest.mark.parametrize(
    ("psf", "message"),
    [
        (np.ones((20, 3)), "larger than the image"),
        (np.array([[1.0, -1.0]]), "sum to more than 0"),
        (-np.ones((3, 3)), "sum to more than 0"),
        (np.array([[np.nan]]), "NaN"),
        (np.ones(3), "2-D"),
    ],
)
def test_bad_psfs(psf, message):
    with pytest.raises(UsageError, match=message):
        deconvolve(np.ones((16, 16)), psf)


def test_psf_specs():
    np.testing.assert_array_equal(kernels.load_psf("box:1"), np.full((3, 3), 1 / 9))
    np.testing.assert_allclose(kernels.load_psf("motion:9:0"), np.full((1, 9), 1 / 9))
    vertical = kernels.load_psf("motion:5:90")
    assert vertical.shape == (5, 1)
    assert kernels.load_psf("disk:3").shape == (7, 7)
    assert kernels.load_psf("disk:3").sum() == pytest.approx(1.0)
    with pytest.raises(UsageError, match="neither a PSF spec"):
        kernels.load_psf("airy:3")
    with pytest.raises(UsageError, match="must be"):
        kernels.load_psf("motion:-3:10")
