"""Deconvolution: undo a known blur, Wiener or Richardson-Lucy, through the FFT.

Deconvolution divides by the blur in frequency; where the blur keeps almost nothing (the
PSF's spectrum near zero) the division must be regularised, or noise is amplified without
bound. Two methods (``names.DECONVOLUTION_METHODS``), both on one padded grid whose PSF
spectrum is computed once:

- ``wiener``: one division, ``X = conj(H)·Y / (|H|² + λ·|D|^β)``, with ``|D|²`` the symbol
  of the discrete gradient (so ``|D|⁴`` is the Laplacian's, scikit-image's regulariser).
  Given ``balance``, ``λ = balance`` and ``β = 4``: scikit-image's ``wiener`` formula. Without
  it, this is the Wiener filter proper, ``λ·|D|^β = sigma²/S(f)``, from the noise variance sigma²
  (:func:`estimate_noise`) and a power-law signal spectrum ``S = A·|D|^-β`` fitted to the
  observed spectrum where the blur passes it.
- ``richardson-lucy``: the multiplicative iteration for a non-negative object, in its
  boundary-aware form (Bertero & Boccacci, 2005): the object lives on a grid larger than the
  image by the PSF's size, the data constrain only the image's pixels, and the update is
  normalised by the PSF's footprint inside the image. Nothing is assumed about the world
  beyond the edge, so there is no edge ringing. Without ``iterations`` it stops by the
  discrepancy principle: at the first iterate whose residual's mean square reaches sigma².

Boundary: the image is extended by ``mode`` (``reflect`` by default) by twice the PSF's size
and the extension tapered (cosine) to the mean across the transform's wrap-around seam, so
the circular FFT sees a smooth periodic image; ``wrap`` takes the image as periodic, as is.

Values: no clipping to an assumed range (floats keep theirs; integers are rounded back to
their dtype by :mod:`convfilt.filters`); a zero or negative pixel gives no NaN (the
iteration's ratio has a floor, and negative data are shifted up for the iteration and back).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from . import cost, engine, filters, names, tiles
from .errors import UsageError

FloatArray = NDArray[np.floating]

MAX_ITERATIONS = 500  # the discrepancy rule's cap (reached only for a near noiseless image)
_EXPECTED_ITERATIONS = 30  # what the planner is told when the rule decides (docs/performance.md)
SKIMAGE_BETA = 4.0  # a user's ``balance`` weighs |D|^4 = |Laplacian|², as scikit-image does
# Frequencies where the blur passes at least this share of power fit the signal spectrum.
_FIT_PASS = 0.1
_BETA_RANGE = (1.0, 4.0)  # natural images: ~2 (1/f² power); smooth objects: steeper
# E|z| over the smaller half of |z| for z ~ N(0, 1): √(2/π)·(1 - exp(-q²/2)) / ½, q the
# median of |z| (0.67449)
_HALF_MEAN = math.sqrt(2 / math.pi) * (1 - math.exp(-(0.6744897501960817**2) / 2)) / 0.5
_STALLED = 1e-3  # the iteration also stops when an iteration lowers the misfit by less
BOUNDARY_PASSES = 10  # Wiener's re-blurred extension: passes (module notes)
_RATIO_FLOOR = 1e-12  # the iteration's model value floor, relative to the data's maximum


@dataclass(frozen=True)
class Report:
    """What a deconvolution did (one per channel): what ran, with which parameter, and why."""

    method: str
    noise: float  # the noise's standard deviation, in the channel's units (estimated)
    balance: float | None = None  # λ (Wiener)
    beta: float | None = None  # the regulariser's power of |D| (Wiener)
    iterations: int | None = None  # iterations run (Richardson-Lucy)
    stopped_by: str = ""  # why the iteration stopped, or how the balance was chosen
    shape: tuple[int, int] = (0, 0)  # the transform's size


ReportCallback = Callable[[Report], None] | None


# --- parameters ---------------------------------------------------------------------------------


def check_psf(psf: Any, image_shape: tuple[int, ...] | None = None) -> NDArray[np.float64]:
    """The PSF as a finite 2-D float64 array normalised to sum 1; UsageError otherwise.

    A PSF whose sum is not > 0 cannot be normalised (it would flip or annihilate the image);
    one larger than the image along either axis cannot be deconvolved from it.
    """
    kernel = np.asarray(psf, dtype=np.float64)
    if kernel.ndim != 2 or kernel.size == 0:
        raise UsageError(
            f"psf must be a non-empty 2-D array, got shape {kernel.shape}", parameters=["psf"]
        )
    if not np.all(np.isfinite(kernel)):
        raise UsageError("psf holds NaN or infinity", parameters=["psf"])
    total = float(kernel.sum())
    if not total > 0:
        raise UsageError(f"psf must sum to more than 0, got {total:.6g}", parameters=["psf"])
    if image_shape is not None and (
        kernel.shape[0] > image_shape[0] or kernel.shape[1] > image_shape[1]
    ):
        size = "x".join(map(str, kernel.shape))
        image = "x".join(map(str, image_shape[:2]))
        raise UsageError(f"psf ({size}) is larger than the image ({image})", parameters=["psf"])
    return kernel / total


def check_method(method: str, iterations: int | None, balance: float | None) -> str:
    """Check the method and that only its own parameters are given; returns the method."""
    if method not in names.DECONVOLUTION_METHODS:
        choices = ", ".join(names.DECONVOLUTION_METHODS)
        raise UsageError(f"method must be one of {choices}; got {method!r}", parameters=["method"])
    if iterations is not None:
        if isinstance(iterations, bool) or not isinstance(iterations, int | np.integer):
            raise UsageError(
                f"iterations must be an integer >= 1, got {iterations!r}",
                parameters=["iterations"],
            )
        if iterations < 1:
            raise UsageError(
                f"iterations must be an integer >= 1, got {iterations}", parameters=["iterations"]
            )
        if method != names.RICHARDSON_LUCY:
            raise UsageError(
                "iterations is for method richardson-lucy; wiener takes balance",
                parameters=["iterations", "method", "balance"],
            )
    if balance is not None:
        if not (math.isfinite(balance) and balance >= 0):
            raise UsageError(
                f"balance must be a finite number >= 0, got {balance}", parameters=["balance"]
            )
        if method != names.WIENER:
            raise UsageError(
                "balance is for method wiener; richardson-lucy takes iterations",
                parameters=["balance", "method", "iterations"],
            )
    return method


# --- noise ---------------------------------------------------------------------------------------


def estimate_noise(channel: FloatArray) -> float:
    """The standard deviation of white noise in ``channel``, from its finest diagonal detail.

    The Haar diagonal coefficients ``(a - b - c + d) / 2`` of the 2x2 blocks have the noise's
    variance and almost none of a blurred image's signal. The few edges that show there are
    left out by keeping the smaller half of their magnitudes, whose mean is ``_HALF_MEAN·sigma``
    for Gaussian noise: unlike the median (Donoho's MAD rule), a mean is not stuck on the
    discrete levels of 8-bit data (the median under-reads sigma = 2.5 levels by 13%).
    """
    x = np.asarray(channel, dtype=np.float64)
    h, w = (x.shape[0] // 2) * 2, (x.shape[1] // 2) * 2
    if h == 0 or w == 0:
        return 0.0
    blocks = x[:h, :w]
    detail = np.abs(
        blocks[0::2, 0::2] - blocks[0::2, 1::2] - blocks[1::2, 0::2] + blocks[1::2, 1::2]
    ).ravel()
    detail /= 2
    half = detail.size // 2
    if half == 0:
        return float(detail[0])
    smaller = np.partition(detail, half - 1)[:half]
    return float(smaller.mean() / _HALF_MEAN)


# --- the padded grid and the PSF's spectrum -----------------------------------------------------


@dataclass(frozen=True)
class Grid:
    """The transform grid: the image at ``offset`` inside ``shape``, and the PSF's spectrum."""

    shape: tuple[int, int]
    offset: tuple[int, int]
    image: tuple[int, int]
    spectrum: NDArray[np.complexfloating]  # rfft2 of the PSF, its origin moved to (0, 0)
    workers: int
    psf: NDArray[np.float64]
    dtype: np.dtype  # the working float type

    @property
    def window(self) -> tuple[slice, slice]:
        """The image's pixels on the grid."""
        (y, x), (h, w) = self.offset, self.image
        return slice(y, y + h), slice(x, x + w)

    def forward(self, values: FloatArray) -> NDArray[np.complexfloating]:
        import scipy.fft as sfft

        return sfft.rfft2(values, workers=self.workers)

    def inverse(self, spectrum: NDArray[np.complexfloating]) -> FloatArray:
        import scipy.fft as sfft

        return sfft.irfft2(spectrum, s=self.shape, workers=self.workers, overwrite_x=True)


def make_grid(
    image_shape: tuple[int, int],
    psf: NDArray[np.float64],
    mode: str,
    dtype: np.dtype,
    margins: tuple[int, int],
    *,
    transform: bool = True,
) -> Grid:
    """The grid for ``image_shape``: ``margins`` more on each side (none for ``wrap``), and,
    for a ``transform``, sizes FFT-friendly and the PSF's spectrum (else it is left empty)."""
    import scipy.fft as sfft

    if mode == "wrap":
        shape, offset = image_shape, (0, 0)
    else:
        shape = (image_shape[0] + 2 * margins[0], image_shape[1] + 2 * margins[1])
        if transform:
            shape = (
                sfft.next_fast_len(shape[0], real=True),
                sfft.next_fast_len(shape[1], real=True),
            )
        offset = margins
    workers = cost.fft_workers(shape[0] * shape[1])
    grid = Grid(shape, offset, image_shape, np.empty(0, dtype=np.complex128), workers, psf, dtype)
    if not transform:
        return grid
    # the PSF with its origin (n // 2, as scipy.ndimage) at (0, 0): circular convolution
    placed = np.zeros(shape, dtype=dtype)
    kh, kw = psf.shape
    rows = (np.arange(kh) - kh // 2) % shape[0]
    cols = (np.arange(kw) - kw // 2) % shape[1]
    np.add.at(placed, (rows[:, None], cols[None, :]), psf.astype(dtype))
    return Grid(shape, offset, image_shape, grid.forward(placed), workers, psf, dtype)


def _taper(n: int, start: int, stop: int, reach: int) -> NDArray[np.float64]:
    """1 on [start - reach, stop + reach), and on the rest of the circle of n positions (the
    arc through the transform's wrap-around seam) a cos² falling to 0 midway."""
    weights = np.ones(n)
    gap = n - (stop - start) - 2 * reach
    if gap > 0:
        along = (np.arange(n) - (stop + reach)) % n  # position along the arc, from its start
        arc = along < gap
        weights[arc] = np.cos(np.pi * (along[arc] + 0.5) / gap) ** 2
    return weights


def extend(channel: FloatArray, grid: Grid, mode: str, cval: float = 0.0) -> FloatArray:
    """The channel on the grid: extended by ``mode``, tapered to its mean across the seam."""
    if grid.shape == grid.image:
        return np.array(channel, dtype=grid.dtype)
    h, w = grid.image
    (y, x), (n_y, n_x) = grid.offset, grid.shape
    rows = engine.extension_indices(h, y, n_y - y - h, mode)
    cols = engine.extension_indices(w, x, n_x - x - w, mode)
    source = np.asarray(channel, dtype=grid.dtype)
    if mode == "constant":
        padded = np.full(grid.shape, cval, dtype=source.dtype)
        inside_r, inside_c = rows >= 0, cols >= 0
        padded[np.ix_(inside_r, inside_c)] = source[np.ix_(rows[inside_r], cols[inside_c])]
    else:
        padded = source[np.ix_(rows, cols)]
    mean = float(source.mean())
    # keep the extension the PSF's size around the image exact; taper beyond
    reach_y, reach_x = y // 2, x // 2
    weights = np.outer(_taper(n_y, y, y + h, reach_y), _taper(n_x, x, x + w, reach_x))
    padded -= mean
    padded *= weights
    padded += mean
    return padded


def _gradient_power(grid: Grid) -> NDArray[np.float64]:
    """``|D|²``, the discrete gradient's power on the rfft grid: 4 sin²(π fy) + 4 sin²(π fx)."""
    fy = np.fft.fftfreq(grid.shape[0])[:, np.newaxis]
    fx = np.fft.rfftfreq(grid.shape[1])[np.newaxis, :]
    return 4 * np.sin(np.pi * fy) ** 2 + 4 * np.sin(np.pi * fx) ** 2


def _noise_floor(channel: FloatArray, noise: float, quantum: float) -> float:
    """``noise``, but at least ``quantum`` (the rounding noise of integer data, which a
    strong blur hides from the estimate) and √eps of the data's largest magnitude: a
    noiseless float image still needs some regularisation where the PSF's spectrum has
    zeros."""
    eps = float(np.finfo(channel.dtype).eps)
    return max(noise, quantum, math.sqrt(eps) * float(np.max(np.abs(channel), initial=0.0)))


# --- Wiener --------------------------------------------------------------------------------------


def fit_signal_spectrum(
    power: NDArray[np.float64],
    passed: NDArray[np.float64],
    gradient: NDArray[np.float64],
    noise: float,
) -> tuple[float, float]:
    """Fit ``S(f) = A·|D|^-β`` to the signal's spectrum; returns ``(A, β)``.

    ``power`` is the observed periodogram (``|Y|²`` over the number of points), ``passed``
    the PSF's ``|H|²``, ``gradient`` ``|D|²``. Where the blur passes at least ``_FIT_PASS``
    of the power, ``(power - noise²) / |H|²`` estimates S; it is averaged in 24 bands of
    ``log |D|²`` (averages first, so that the exponential scatter of a periodogram does not
    bias the logarithm) and a line fitted through the bands' logarithms. β is kept within
    ``_BETA_RANGE``.
    """
    use = (passed >= _FIT_PASS) & (gradient > 0)
    if not np.any(use):
        return max(float(power.mean()) - noise**2, noise**2), 2.0
    signal = (power[use] - noise**2) / passed[use]
    log_d2 = np.log(gradient[use])
    edges = np.linspace(log_d2.min(), log_d2.max() + 1e-9, 25)
    band = np.digitize(log_d2, edges) - 1
    counts = np.bincount(band, minlength=24)[:24]
    sums = np.bincount(band, weights=signal, minlength=24)[:24]
    centres = np.bincount(band, weights=log_d2, minlength=24)[:24]
    keep = (counts > 0) & (sums > 0)
    if np.count_nonzero(keep) < 2:
        return max(float(signal.mean()), noise**2), 2.0
    x, y = centres[keep] / counts[keep], np.log(sums[keep] / counts[keep])
    slope = float(np.polyfit(x, y, 1, w=np.sqrt(counts[keep]))[0])
    beta = min(max(-2.0 * slope, _BETA_RANGE[0]), _BETA_RANGE[1])
    log_a = float(np.average(y + 0.5 * beta * x, weights=np.sqrt(counts[keep])))
    return math.exp(log_a), beta


def _wiener(
    channel: FloatArray,
    psf: NDArray[np.float64],
    mode: str,
    cval: float,
    balance: float | None,
    quantum: float,
) -> tuple[FloatArray, Report]:
    """One regularised division in frequency (module notes); the image's window of it.

    The margins are twice the PSF's size: one PSF of exact extension, one of taper.
    """
    margins = (2 * psf.shape[0], 2 * psf.shape[1])
    grid = make_grid(channel.shape[:2], psf, mode, channel.dtype, margins)
    data = extend(channel, grid, mode, cval)
    observed = grid.forward(data)
    passed = np.abs(grid.spectrum) ** 2
    gradient = _gradient_power(grid)
    noise = estimate_noise(channel)
    if balance is None:
        amplitude, beta = fit_signal_spectrum(
            np.abs(observed) ** 2 / data.size,
            passed,
            gradient,
            _noise_floor(channel, noise, quantum),
        )
        weight = _noise_floor(channel, noise, quantum) ** 2 / amplitude
        how = f"from the noise and a fitted signal spectrum ~|f|^-{beta:.2f}"
    else:
        weight, beta, how = balance, SKIMAGE_BETA, "given"
    denominator = passed + weight * gradient ** (beta / 2)
    denominator[denominator == 0] = 1.0  # only where H = 0 and no regulariser: 0 / 1 = 0
    restore = np.conjugate(grid.spectrum) / denominator
    if grid.shape != grid.image:
        reblur = passed / denominator
        for _ in range(BOUNDARY_PASSES):
            data = grid.inverse(observed * reblur)
            data[grid.window] = channel
            observed = grid.forward(data)
    result = grid.inverse(observed * restore)[grid.window]
    report = Report("wiener", noise, balance=weight, beta=beta, stopped_by=how, shape=grid.shape)
    return np.asarray(result, dtype=channel.dtype), report


# --- Richardson-Lucy -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Blur:
    """The blur ``A`` on the grid (circular) and its adjoint ``Aᵀ``, by one road.

    A banded road (direct, separable, compiled: a small PSF) runs through the engine; a
    transform runs here, with the PSF's spectrum computed once for every iteration.
    """

    grid: Grid
    psf: NDArray[np.float64]
    strategy: str

    def apply(self, values: FloatArray) -> FloatArray:
        """``A x``: the PSF convolved with ``values`` (circularly, as ``mode="wrap"``)."""
        if self.strategy != "fft":
            return engine.convolve(values, self.psf, mode="wrap", strategy=self.strategy)
        return self.grid.inverse(self.grid.forward(values) * self.grid.spectrum)

    def adjoint(self, values: FloatArray) -> FloatArray:
        """``Aᵀ z``: the PSF correlated with ``values``, the exact transpose of :meth:`apply`."""
        if self.strategy != "fft":
            return engine.correlate(values, self.psf, mode="wrap", strategy=self.strategy)
        spectrum = self.grid.forward(values)
        spectrum *= np.conjugate(self.grid.spectrum)
        return self.grid.inverse(spectrum)


def _iteration_blur(
    channel: FloatArray, psf: NDArray[np.float64], mode: str, iterations: int
) -> Blur:
    """The iteration's blur: the planner, told of the ``2 · iterations`` convolutions to come,
    picks the road for a grid of the image and the PSF's reach around it; a transform's grid
    grows to FFT-friendly sizes and carries the PSF's spectrum."""
    shape = (channel.shape[0], channel.shape[1])
    margins = (psf.shape[0] // 2, psf.shape[1] // 2)
    tight = make_grid(shape, psf, mode, channel.dtype, margins, transform=False)
    runs = 2 * iterations
    chosen = engine.plan(tight.shape, psf, dtype=channel.dtype, mode="wrap", runs=runs).strategy
    if chosen in engine.BANDED:
        return Blur(tight, psf, chosen)
    return Blur(make_grid(shape, psf, mode, channel.dtype, margins), psf, names.FFT)


def _richardson_lucy(
    channel: FloatArray,
    psf: NDArray[np.float64],
    mode: str,
    cval: float,
    iterations: int | None,
    quantum: float,
) -> tuple[FloatArray, Report]:
    """The boundary-aware multiplicative iteration (module notes), from the extended image.

    The object needs only the PSF's reach beyond the image; the planner picks the road for
    a grid that size, and only a transform's grid grows to FFT-friendly sizes.
    """
    limit = MAX_ITERATIONS if iterations is None else iterations
    blur = _iteration_blur(channel, psf, mode, iterations or _EXPECTED_ITERATIONS)
    grid = blur.grid
    noise = estimate_noise(channel)
    shift = max(0.0, -float(np.min(channel, initial=0.0)))  # the iteration needs data >= 0
    data = np.asarray(channel, dtype=grid.dtype) + shift
    floor = _RATIO_FLOOR * float(np.max(data, initial=0.0))
    if floor == 0.0:  # an all-zero image is its own deconvolution
        return np.zeros_like(channel), Report(
            "richardson-lucy", 0.0, iterations=0, shape=grid.shape
        )
    estimate = np.maximum(extend(data, grid, mode, cval + shift), 0.0)
    window = grid.window
    ratio = np.zeros(grid.shape, dtype=data.dtype)
    ratio[window] = 1.0
    footprint = blur.adjoint(ratio)  # Aᵀ1: how much of each point the image sees
    scale = np.zeros_like(footprint)
    np.divide(1.0, footprint, out=scale, where=footprint > 1e-6)
    target = _noise_floor(channel, noise, quantum) ** 2
    done, why, previous = 0, f"{limit} iterations, as asked", math.inf
    while done < limit:
        model = blur.apply(estimate)[window]
        if iterations is None:
            misfit = float(np.mean((data - model) ** 2))
            if misfit <= target:
                why = f"discrepancy: residual {math.sqrt(misfit):.4g} <= noise {noise:.4g}"
                break
            if previous - misfit < _STALLED * misfit:
                why = f"stalled: residual {math.sqrt(misfit):.4g} (noise {noise:.4g})"
                break
            previous = misfit
        np.maximum(model, floor, out=model)
        np.divide(data, model, out=ratio[window])
        correction = blur.adjoint(ratio)
        correction *= scale
        np.maximum(correction, 0.0, out=correction)  # rounding below 0 would flip the sign
        estimate *= correction
        done += 1
    else:
        if iterations is None:
            why = f"cap of {MAX_ITERATIONS} iterations before the residual reached the noise"
    result = estimate[window] - shift
    why += f"; {blur.strategy} road"
    report = Report("richardson-lucy", noise, iterations=done, stopped_by=why, shape=grid.shape)
    return np.asarray(result, dtype=channel.dtype), report


Solver = Callable[..., tuple[FloatArray, Report]]
# method -> solver(channel, psf, mode, cval, its one tuning parameter)
METHOD_TABLE: dict[str, Solver] = {
    names.WIENER: _wiener,
    names.RICHARDSON_LUCY: _richardson_lucy,
}


def deconvolve_channel(
    channel: FloatArray,
    psf: NDArray[np.float64],
    *,
    method: str = names.WIENER,
    iterations: int | None = None,
    balance: float | None = None,
    mode: str = "reflect",
    cval: float = 0.0,
    quantum: float = 0.0,
) -> tuple[FloatArray, Report]:
    """Deconvolve one float (H, W) channel by a normalised PSF; returns it (same dtype) and
    its :class:`Report`. The parameters are :func:`deconvolve`'s, already checked;
    ``quantum`` is the least noise to assume (the rounding of integer data)."""
    tuning = balance if method == names.WIENER else iterations
    return METHOD_TABLE[method](np.asarray(channel), psf, mode, cval, tuning, quantum)


def deconvolve(
    image: NDArray,
    psf: Any,
    *,
    method: str = names.WIENER,
    iterations: int | None = None,
    balance: float | None = None,
    mode: str = "reflect",
    cval: float = 0.0,
    linear: bool = False,
    has_alpha: bool = False,
    on_report: ReportCallback = None,
) -> NDArray:
    """Undo a known blur: deconvolve ``image`` by the point-spread function ``psf``.

    Parameters
    ----------
    image : (H, W) or (H, W, C) array
        Integer images come back in their dtype, rounded (no other clipping than the dtype's
        own range); float images in theirs, with their range (nothing clipped to [0, 1]).
    psf : (h, w) array
        The blur, as ``convolve`` applies it (origin at ``n // 2``); normalised to sum 1.
    method : {"wiener", "richardson-lucy"}
        One regularised division in frequency, or the multiplicative iteration for
        non-negative objects (negative data are shifted up for it and back).
    iterations : int, optional
        Richardson-Lucy's number of iterations. Default: stop by the discrepancy principle,
        at the first iterate that fits the data to within the estimated noise.
    balance : float, optional
        Wiener's regularisation weight on the Laplacian, scikit-image's ``balance``. Default:
        the Wiener filter from the estimated noise and a fitted signal spectrum.
    mode : str
        How the image is assumed to continue beyond its edge (scipy.ndimage's names);
        ``wrap`` means periodic (no padding).
    cval : float
        The outside value for ``mode="constant"``, in the image's units.
    linear : bool
        Deconvolve colour in linear light (sRGB decoded), where optical blur happens.
    has_alpha : bool
        The last channel is alpha: colour is deconvolved premultiplied, as blur filters it.
    on_report : callable, optional
        Called with a :class:`Report` per channel: the noise, the balance or the
        iterations, and why.

    Returns
    -------
    ndarray
        The deconvolved image, in the input's shape and dtype.

    Raises
    ------
    UsageError
        An unknown method, a parameter the method does not take, ``iterations < 1``,
        ``balance < 0``, a PSF that is not 2-D and finite, sums to 0 or less, or is larger
        than the image.

    Notes
    -----
    The boundary, the noise estimate, the fitted spectrum and the stopping rule are
    described in the module's notes (:mod:`convfilt.deconvolution`).

    Examples
    --------
    >>> import numpy as np
    >>> from convfilt import convolve, deconvolve
    >>> from convfilt.kernels import gaussian_1d
    >>> sharp = np.zeros((64, 64))
    >>> sharp[16:40, 20:30] = 1.0
    >>> psf = np.outer(gaussian_1d(1.5), gaussian_1d(1.5))
    >>> blurred = convolve(sharp, psf)
    >>> restored = deconvolve(blurred, psf)
    >>> bool(np.abs(restored - sharp).mean() < np.abs(blurred - sharp).mean() / 4)
    True
    >>> iterated = deconvolve(blurred, psf, method="richardson-lucy", iterations=50)
    >>> bool(np.abs(iterated - sharp).mean() < np.abs(blurred - sharp).mean())
    True
    >>> deconvolve(blurred, psf, balance=-1)
    Traceback (most recent call last):
    ...
    convfilt.errors.UsageError: balance must be a finite number >= 0, got -1
    """
    check_method(method, iterations, balance)
    filters.check_mode(mode)
    filters.check_finite(cval, "cval")
    pixels = np.asarray(image)
    kernel = check_psf(psf, pixels.shape)
    # integers carry rounding noise of 1/√12 of a level (in [0, 1] units in linear light)
    quantum = 0.0
    if np.issubdtype(pixels.dtype, np.integer):
        quantum = 1 / math.sqrt(12) / (float(np.iinfo(pixels.dtype).max) if linear else 1.0)

    def smooth(channel: FloatArray, outside: float) -> FloatArray:
        result, report = deconvolve_channel(
            channel,
            kernel,
            method=method,
            iterations=iterations,
            balance=balance,
            mode=mode,
            cval=outside,
            quantum=quantum,
        )
        if on_report is not None:
            on_report(report)
        return result

    outside = cval if mode == "constant" else None
    return filters.filter_image(
        pixels, filters.premultiplying(smooth), has_alpha=has_alpha, linear=linear, cval=outside
    )


# --- memory ---------------------------------------------------------------------------------------

# Bytes held at once per pixel of one channel's padded grid: the float channel, its extension,
# the spectra and, for Richardson-Lucy, the iteration's planes (the peak RSS of 1024² and 2048²
# RGB runs, rounded up: docs/architecture.md).
GRID_BYTES = {names.WIENER: 104, names.RICHARDSON_LUCY: 64}


def memory_needed(
    shape: tuple[int, ...], dtype: np.dtype, psf_shape: tuple[int, ...], method: str
) -> int:
    """Bytes (roughly) deconvolving a whole image of ``shape`` holds at once: the image and its
    result, and one channel's grid (the image with twice the PSF's size on each side)."""
    rows, cols = shape[0] + 4 * psf_shape[0], shape[1] + 4 * psf_shape[1]
    stored = 2 * int(np.prod(shape)) * np.dtype(dtype).itemsize
    return tiles.FIXED_BYTES + stored + rows * cols * GRID_BYTES[method]


def check_memory(
    name: str,
    shape: tuple[int, ...],
    dtype: np.dtype,
    psf_shape: tuple[int, ...],
    method: str,
    budget: int,
) -> None:
    """Refuse, before reading its pixels, an image whose deconvolution would not fit
    ``budget`` bytes. Deconvolution does not stream by bands: the Wiener division, the noise
    estimate and the discrepancy rule see the whole image at once, so a band with a halo
    would not give the whole image's result.

    Raises
    ------
    ConvfiltError
        Naming the image's size, the memory it needs and the budget.
    """
    need = memory_needed(shape, dtype, psf_shape, method)
    if need > budget:
        raise tiles.over_budget(
            name, "deblurring a {} image", shape, need, budget,
            "deconvolution works on the whole image at once (it does not stream), so it needs "
            "a larger budget",
        )  # fmt: skip
