"""Image-level filters: Gaussian and box blur, unsharp mask, any kernel — arrays in, arrays out.

Every filter here is a correlation carried out by :mod:`convfilt.engine`; this module adds what
an *image* needs around it, in one place (:func:`filter_image`):

- dtypes: float images stay in their float dtype; integer images are filtered in float and
  rounded half-to-even (``np.rint``) back to their own dtype, clipped to its range;
- alpha: with an averaging kernel the colour is premultiplied by alpha before filtering and
  divided by the filtered alpha after, so an opaque shape on a transparent background gets no
  dark fringe; alpha itself is filtered too;
- linear light: optionally, colour (never alpha) goes through the sRGB transfer function
  (IEC 61966-2-1) to linear values before filtering and back after;
- memory: one channel at a time, written into a preallocated output of the input's dtype, so
  at most a few float copies of *one* channel exist at once.

Layout: (H, W) or (H, W, C) with channels last; when alpha is present it is the last channel
(``has_alpha=True``; the default is False, so that on plain arrays every filter equals its
``scipy.ndimage`` counterpart channel by channel, whatever C is).

Non-finite values (NaN, inf) in a float image follow ``nan_policy`` (:mod:`convfilt.weighted`):
``propagate`` (default; each spreads over its kernel's footprint, as in ``scipy.ndimage``),
``omit`` (left out and the kernel renormalized over the valid pixels; a missing pixel gets
the interpolated value) or ``raise``. Alpha is the same weighted mean, with alpha as the
weights (:func:`convfilt.engine.weighted_filter`). On integer images the policy is a no-op.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal, TypeAlias

import numpy as np
from numpy.typing import NDArray

from . import engine, kernels, names, tiles, weighted
from .engine import Plan
from .errors import UsageError
from .weighted import Weights

FloatArray = NDArray[np.floating]
PlanCallback = Callable[[Plan], None] | None
AlphaPolicy = Literal["premultiply", "keep"]

# Below this filtered alpha (opaque = 1) a pixel's colour is set to 0 instead of dividing
# rounding noise by rounding noise; it is far below what 16-bit alpha can represent.
_ALPHA_FLOOR = 1e-7


# --- parameter checks: the library's, which the CLI also calls before reading any file ---------


def _real(value: object, name: str) -> None:
    """TypeError unless ``value`` is a real number (bool excepted)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")


def check_positive(value: float, name: str) -> float:
    """Return ``value`` if it is finite and > 0, else raise UsageError naming ``name``."""
    _real(value, name)
    if not (math.isfinite(value) and value > 0):
        raise UsageError(f"{name} must be a finite number > 0, got {value}", parameters=[name])
    return value


def check_finite(value: float, name: str) -> float:
    """Return ``value`` if it is finite, else raise UsageError naming ``name``."""
    _real(value, name)
    if not math.isfinite(value):
        raise UsageError(f"{name} must be a finite number, got {value}", parameters=[name])
    return value


def check_radius(value: int, name: str) -> int:
    """Return ``value`` if it is an integer >= 0, else raise UsageError naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 0:
        raise UsageError(f"{name} must be an integer >= 0, got {value!r}", parameters=[name])
    return int(value)


def check_threshold(value: float, name: str) -> float:
    """Return ``value`` if it lies in [0, 1) (a fraction of full scale), else raise."""
    _real(value, name)
    if not (math.isfinite(value) and 0.0 <= value < 1.0):
        raise UsageError(
            f"{name} must be in [0, 1) (a fraction of full scale), got {value}",
            parameters=[name],
        )
    return value


def check_mode(mode: str, name: str = "mode") -> str:
    """Return ``mode`` if it is one of scipy.ndimage's boundary modes, else raise."""
    if mode not in names.MODES:
        raise UsageError(
            f"{name} must be one of {', '.join(names.MODES)}; got {mode!r}", parameters=[name]
        )
    return mode


# --- sRGB transfer function (IEC 61966-2-1) ---------------------------------------------------


def srgb_to_linear(values: FloatArray) -> FloatArray:
    """Decode sRGB-encoded values in [0, 1] to linear light (in place; returns ``values``).

    Values outside [0, 1] are extended by odd symmetry, as extended-range sRGB does. One
    temporary of the input's size (plus a mask), so a 4096² channel costs no more.
    """
    magnitude = np.absolute(values, out=np.empty_like(values))  # an array even when 0-d
    on_line = magnitude <= 0.04045
    line = magnitude[on_line] / 12.92
    magnitude += 0.055
    magnitude /= 1.055
    np.power(magnitude, 2.4, out=magnitude)
    magnitude[on_line] = line
    return np.copysign(magnitude, values, out=values)


def linear_to_srgb(values: FloatArray) -> FloatArray:
    """Encode linear-light values in [0, 1] with the sRGB curve (in place; returns ``values``)."""
    magnitude = np.absolute(values, out=np.empty_like(values))  # an array even when 0-d
    on_line = magnitude <= 0.0031308
    line = magnitude[on_line] * 12.92
    np.power(magnitude, 1 / 2.4, out=magnitude)
    magnitude *= 1.055
    magnitude -= 0.055
    magnitude[on_line] = line
    return np.copysign(magnitude, values, out=values)


# --- dtype handling ---------------------------------------------------------------------------


@dataclass(frozen=True)
class _Depth:
    """How an image's stored values map to the float values the filters compute with."""

    dtype: np.dtype
    work: type[np.floating]  # float32 unless the input needs float64's precision
    full_scale: float  # the stored value of full intensity: 255, 65535, ..., 1.0 for floats
    bounds: tuple[float, float] | None  # clip range for integers, None for floats

    @classmethod
    def of(cls, dtype: np.dtype, *, exact: bool = False) -> _Depth:
        """Describe ``dtype``; bool and complex images are refused.

        8- and 16-bit integers are filtered in float32 (within one level of the exact
        result for averaging kernels, at half the memory of float64) unless ``exact``: a
        kernel that is not averaging (integer taps, edge detectors) can need every digit of
        a float64 (float32 through an FFT is off by a few levels of 65535·Σ|k|). The clip
        bounds are the float64 values inside the dtype's range nearest its ends: for 64-bit
        integers ``float(max)`` rounds up to 2**64 (or 2**63), which would overflow the cast.
        """
        if np.issubdtype(dtype, np.floating):
            work = np.float32 if dtype.itemsize <= 4 else np.float64
            return cls(dtype, work, 1.0, None)
        if np.issubdtype(dtype, np.integer) and dtype != np.bool_:
            info = np.iinfo(dtype)
            work = np.float32 if dtype.itemsize <= 2 and not exact else np.float64
            high = float(info.max)
            if int(high) > int(info.max):
                high = float(np.nextafter(high, -np.inf))
            low = float(info.min)  # 0 or -2**(bits-1): a power of two, always exact
            return cls(dtype, work, float(info.max), (low, high))
        raise UsageError(f"unsupported image dtype {dtype}; expected integers or floats")

    def store(self, out: NDArray, index: tuple, values: FloatArray) -> None:
        """Write float ``values`` (stored units) into ``out[index]``, rounding and clipping ints."""
        if self.bounds is not None:
            np.rint(values, out=values)
            np.clip(values, *self.bounds, out=values)
        out[index] = values


# --- the one place where images meet the engine -----------------------------------------------

Smooth = Callable[[FloatArray, float, "Weights | None"], FloatArray]


@dataclass(frozen=True)
class AlphaPlanes:
    """The alpha channel of a premultiplied filter, in [0, 1]: as stored, filtered by the
    kernel (the weights' sum), and as the output will store it (blurred, or sharpened)."""

    original: FloatArray
    blurred: FloatArray
    result: FloatArray
    outside: float  # alpha beyond the border (mode="constant"), 1.0 otherwise


Finish = Callable[[FloatArray, FloatArray, float, AlphaPlanes | None], FloatArray]


def _blurred(
    original: FloatArray, smoothed: FloatArray, full_scale: float, alpha: AlphaPlanes | None
) -> FloatArray:
    """The ``finish`` step of a plain filter: the filtered (straight) channel itself."""
    return smoothed


def _once(callback: PlanCallback) -> PlanCallback:
    """Wrap ``callback`` so it sees only the first plan (one per image, not per channel)."""
    if callback is None:
        return None
    seen: list[Plan] = []

    def first_only(plan: Plan) -> None:
        if not seen:
            seen.append(plan)
            callback(plan)

    return first_only


@dataclass(frozen=True)
class _Work:
    """How one image's channels enter and leave the float working units."""

    depth: _Depth
    linear: bool

    @property
    def colour_scale(self) -> float:
        """Colour is worked on in [0, 1] where the sRGB curve needs it, else in stored units."""
        return self.depth.full_scale if self.linear else 1.0

    def load(self, channel: NDArray, scale: float, decode: bool) -> FloatArray:
        """A float copy of ``channel`` divided by ``scale``, sRGB-decoded if ``decode``."""
        values = np.array(channel, dtype=self.depth.work, copy=True)
        if scale != 1.0:
            values /= scale
        return srgb_to_linear(values) if decode else values

    def unload(self, values: FloatArray, scale: float, encode: bool) -> FloatArray:
        """The inverse of :meth:`load`, in place."""
        if encode:
            linear_to_srgb(values)
        if scale != 1.0:
            values *= scale
        return values


def filter_image(
    image: NDArray,
    smooth: Smooth,
    *,
    finish: Finish = _blurred,
    has_alpha: bool = False,
    alpha_policy: AlphaPolicy = "premultiply",
    linear: bool = False,
    cval: float | None = None,
    exact: bool = False,
    band: engine.Band | None = None,
    fill_missing: bool = False,
) -> NDArray:
    """Apply a per-channel filter to an image, handling dtype, alpha and linear light.

    Parameters
    ----------
    image : (H, W) or (H, W, C) array, integer or float.
    smooth : ``smooth(channel, cval, weights) -> filtered`` on one float (H, W) channel, in
        the units given to it (``cval`` already converted to them); with ``weights`` (alpha)
        the weighted mean (:func:`convfilt.engine.weighted_filter`).
    finish : ``finish(original, smoothed, full_scale, alpha) -> result`` on one straight
        channel, e.g. the unsharp-mask formula; ``full_scale`` is what a threshold is a
        fraction of (0 for alpha itself, which no threshold spares); ``alpha`` is given
        (``AlphaPlanes``) when the colour was filtered premultiplied. The default returns
        ``smoothed``.
    has_alpha : whether the last channel is alpha (premultiplied while filtering).
    alpha_policy : ``"premultiply"`` (averaging kernels: weight colour by alpha, filter alpha
        too) or ``"keep"`` (other kernels, e.g. edge detectors: filter colour as it is and pass
        alpha through unchanged, since a derivative of alpha is not an opacity).
    linear : filter colour in linear light (sRGB decoded, then encoded again).
    cval : the outside value for ``mode="constant"``, in the image's stored units, for every
        channel (the outside is treated as a constant image of that value); None when the
        boundary mode extends the image itself (then a fully opaque alpha stays opaque, and
        premultiplying is skipped as it would change nothing).
    exact : filter 8/16-bit integer images in float64 rather than float32 (see ``_Depth.of``):
        for kernels that are not averaging, whose results float32 cannot round exactly.
    band : ``image`` holds some rows of a larger image (:class:`engine.Band`, made by
        :mod:`convfilt.tiles`): ``smooth`` returns the band's output rows, and so does this.
    fill_missing : replace each NaN of a colour channel by its filtered value before
        ``finish`` (``nan_policy="omit"``: a missing pixel gets the interpolated value).

    Returns
    -------
    An array of the input's shape and dtype (with ``band``, of the band's rows).
    """
    pixels = np.asarray(image)
    if pixels.ndim not in (2, 3):
        raise UsageError(f"image must be (H, W) or (H, W, C), got shape {pixels.shape}")
    work = _Work(_Depth.of(pixels.dtype, exact=exact), linear)
    plain = not has_alpha and not linear and finish is _blurred
    small = pixels.dtype.kind == "f" or pixels.dtype.itemsize <= 4  # int64: float64 bounds
    if plain and isinstance(smooth, Correlator) and small:
        # every channel through the engine at once, rounded back to the dtype there
        result = smooth.whole(pixels, 0.0 if cval is None else cval, work.depth.work)
        return result.astype(pixels.dtype, copy=False)
    planes = pixels[..., np.newaxis] if pixels.ndim == 2 else pixels
    n_channels = planes.shape[2]
    if has_alpha and n_channels < 2:
        raise UsageError("an image with alpha needs at least two channels")
    inner = slice(None) if band is None else band.inner  # the output rows among the input's
    out = np.empty_like(planes[inner])
    outside = 0.0 if cval is None else cval
    opaque = None if band is None else band.opaque  # a band decides as its whole image does
    if opaque is None and has_alpha:
        opaque = bool(np.all(planes[..., -1] == work.depth.full_scale))
    if has_alpha and cval is None and opaque:
        alpha_policy = "keep"  # opaque inside and out: premultiplying would only cost time
    alpha = None
    if has_alpha and alpha_policy == "premultiply":
        alpha = _filter_alpha(planes[..., -1], work, smooth, finish, outside, out, inner)
    elif has_alpha:
        out[..., -1] = planes[inner, :, -1]
    colour_cval = float(work.load(np.array(outside), work.colour_scale, linear))
    for c in range(n_channels - 1 if has_alpha else n_channels):
        original = work.load(planes[..., c], work.colour_scale, linear)
        result = _filter_colour(
            original, smooth, finish, colour_cval, work, alpha, inner, fill_missing
        )
        del original
        work.depth.store(out, (..., c), work.unload(result, work.colour_scale, linear))
        del result
    return out[..., 0] if pixels.ndim == 2 else out


def _filter_alpha(
    stored: NDArray,
    work: _Work,
    smooth: Smooth,
    finish: Finish,
    outside: float,
    out: NDArray,
    inner: slice,
) -> AlphaPlanes:
    """Filter the alpha channel (in [0, 1], outside ``outside`` in stored units) into the last
    channel of ``out`` (the rows ``inner`` of the input's); return its planes for the
    premultiplied colour."""
    full_scale = work.depth.full_scale
    original = work.load(stored, full_scale, False)
    blurred = smooth(original, outside / full_scale, None)
    result = finish(original[inner], blurred.copy(), 0.0, None)  # no threshold on alpha
    np.clip(result, 0.0, 1.0, out=result)
    work.depth.store(out, (..., out.shape[2] - 1), result * full_scale)
    return AlphaPlanes(original, blurred, result, outside / full_scale)


def _filter_colour(
    original: FloatArray,
    smooth: Smooth,
    finish: Finish,
    cval: float,
    work: _Work,
    alpha: AlphaPlanes | None,
    inner: slice,
    fill_missing: bool,
) -> FloatArray:
    """Filter one straight colour channel; with ``alpha``, as the mean weighted by alpha
    (premultiplied, filtered, divided by the filtered alpha). ``finish`` then makes the
    result from the straight original and filtered values (of the output rows ``inner``);
    with ``fill_missing`` (omit) a NaN of the original is first replaced by its filtered
    value, the interpolated one."""
    weights = None
    if alpha is not None:
        weights = Weights(alpha.original, alpha.outside, alpha.blurred, _ALPHA_FLOOR)
    smoothed = smooth(original, cval, weights)
    rows = original[inner]
    if fill_missing:
        missing = np.isnan(rows)
        rows[missing] = smoothed[missing]
    planes = None if alpha is None else replace(alpha, original=alpha.original[inner])
    return finish(rows, smoothed, work.depth.full_scale / work.colour_scale, planes)


def premultiplying(smooth: Callable[[FloatArray, float], FloatArray]) -> Smooth:
    """A ``smooth`` step from a filter that is not the engine's (deconvolution): with weights
    (alpha) the channel is premultiplied, filtered, and divided by the filtered weights, by
    the same division as the engine's weighted path (:func:`convfilt.weighted.divide`)."""

    def weighted_smooth(channel: FloatArray, cval: float, weights: Weights | None) -> FloatArray:
        if weights is None:
            return smooth(channel, cval)
        filtered = smooth(channel * weights.values, cval * weights.outside)
        assert weights.filtered is not None  # filter_image passes alpha's filtered channel
        return weighted.divide(filtered, weights.filtered, weights.floor)

    return weighted_smooth


@dataclass(frozen=True)
class Correlator:
    """A ``smooth`` step that runs the engine with ``kernel`` (``flip``: convolution) on one
    float channel; ``whole`` runs it on every channel at once, in stored units and dtype."""

    kernel: NDArray
    flip: bool
    mode: str
    strategy: str
    nan_policy: str
    on_plan: PlanCallback
    band: engine.Band | None

    def __call__(self, channel: FloatArray, cval: float, weights: Weights | None) -> FloatArray:
        options: dict[str, Any] = {
            "mode": self.mode, "cval": cval, "strategy": self.strategy,
            "nan_policy": self.nan_policy, "on_plan": self.on_plan, "band": self.band,
        }  # fmt: skip
        if weights is None:
            run = engine.convolve if self.flip else engine.correlate
            result = run(channel, self.kernel, **options)
        else:
            result = engine.weighted_filter(
                channel, self.kernel, weights=weights, flip=self.flip, **options
            )
        return np.asarray(result, dtype=channel.dtype)

    def whole(self, image: NDArray, cval: float, work: type[np.floating]) -> NDArray:
        """The filtered image in its own dtype (``engine.filter_stored``): no float copy of
        a channel outside the engine, whose compiled road converts band by band."""
        return engine.filter_stored(
            image, self.kernel, flip=self.flip, mode=self.mode, cval=cval,
            strategy=self.strategy, on_plan=self.on_plan, band=self.band,
            nan_policy=self.nan_policy, work=work,
        )  # fmt: skip


def _correlator(
    kernel: NDArray,
    *,
    flip: bool,
    mode: str,
    strategy: str,
    nan_policy: str,
    on_plan: PlanCallback,
    band: engine.Band | None = None,
) -> Correlator:
    """The ``smooth`` step that runs the engine with ``kernel`` (flipped: convolution)."""
    check_mode(mode)
    weighted.check_policy(nan_policy)
    return Correlator(kernel, flip, mode, strategy, nan_policy, _once(on_plan), band)


def _policy(image: NDArray, nan_policy: str) -> str:
    """``nan_policy`` for a float image; an integer one holds no NaN, so any policy is a no-op
    (and ``omit`` needs no renormalizable kernel): the engine sees ``propagate``."""
    weighted.check_policy(nan_policy)
    return nan_policy if np.asarray(image).dtype.kind == "f" else names.PROPAGATE


def _outside(mode: str, cval: float) -> float | None:
    """``cval`` where it matters (``mode="constant"``), else None (see :func:`filter_image`)."""
    return cval if mode == "constant" else None


# --- scipy.ndimage's conventions: per-axis parameters, channel_axis, output ----------------------


Pair: TypeAlias = float | Sequence[float]


def per_axis(value: Pair, name: str, check: Callable[[float, str], float]) -> tuple[float, float]:
    """``(row, col)`` values from a scalar (both axes) or a (row, col) pair, each checked.

    Examples
    --------
    >>> per_axis(2.0, "sigma", check_positive)
    (2.0, 2.0)
    >>> per_axis((1, 3), "sigma", check_positive)
    (1, 3)
    """
    if isinstance(value, str | bytes) or value is None:
        raise TypeError(f"{name} must be a number or a (row, col) pair, got {value!r}")
    if np.ndim(value) == 0:
        one = check(value, name)  # type: ignore[arg-type]
        return one, one
    pair = tuple(value)  # type: ignore[arg-type]
    if len(pair) != 2:
        raise UsageError(
            f"{name} must be a number or a (row, col) pair, got {len(pair)} values",
            parameters=[name],
        )
    return check(pair[0], name), check(pair[1], name)


def _with_y(value: Pair, y: float | None, name: str, check: Callable[..., float]) -> Pair:
    """``value`` as (row, col) when the older ``{name}_y`` spelling gives the row value."""
    if y is None:
        return value
    if np.ndim(value) != 0:
        raise UsageError(
            f"{name} is a (row, col) pair: give {name}_y only with a scalar {name}",
            parameters=[f"{name}_y"],
        )
    return check(y, f"{name}_y"), value  # type: ignore[return-value]


def channels_last(
    image: NDArray, channel_axis: int | None
) -> tuple[NDArray, Callable[[NDArray], NDArray]]:
    """The image with its channels on the last axis, and the function that puts a result back.

    ``channel_axis=None`` takes a 3-D array's last axis as its channels (as skimage's
    default), but refuses a shape that reads as channels-first -- a first axis of at most 4
    and a last one longer than 4, such as (3, 32, 40) -- rather than guess.
    """
    pixels = engine.as_image(image)
    shape = pixels.shape
    if channel_axis is None:
        if pixels.ndim == 3 and shape[0] <= 4 < shape[2]:
            raise UsageError(
                f"image of shape {shape} looks channels-first; pass channel_axis=0, or "
                f"channel_axis=-1 if its {shape[2]} last entries are channels",
                parameters=["channel_axis"],
            )
        return pixels, lambda result: result
    axis = int(channel_axis) if isinstance(channel_axis, numbers.Integral) else None
    if axis is None:
        raise TypeError(f"channel_axis must be an integer, got {type(channel_axis).__name__}")
    if pixels.ndim != 3 or not -3 <= axis < 3:
        raise UsageError(
            f"channel_axis {axis} does not fit an image of shape {shape}: a (H, W) image has "
            "no channel axis, an image with channels has three axes",
            parameters=["channel_axis"],
        )
    return np.moveaxis(pixels, axis, -1), lambda result: np.moveaxis(result, -1, axis)


# --- public filters ----------------------------------------------------------------------------

_COMMON_PARAMETERS = """mode : str, optional
        Boundary mode, ``scipy.ndimage``'s names: ``reflect`` (default), ``mirror``,
        ``nearest``, ``wrap``, ``constant``.
    cval : float, optional
        The value outside the image in ``constant`` mode, in the image's stored units.
    strategy : str, optional
        The engine's road: ``auto`` (the planner's choice), ``direct``, ``separable``,
        ``fft`` or ``overlap-add``; the result is the same within rounding.
    nan_policy : {'propagate', 'omit', 'raise'}, optional
        NaN/inf in a float image: ``propagate`` (default) spreads each over its kernel's
        footprint, as ``scipy.ndimage``; ``omit`` leaves them out and renormalizes the
        kernel over the valid pixels (a missing pixel gets the interpolated value; NaN
        only where none is in reach); ``raise`` refuses them. A no-op on integer images.
    linear : bool, optional
        Filter colour in linear light (sRGB decoded, filtered, encoded again).
    has_alpha : bool, optional
        The last channel is alpha: colour is weighted by it (premultiplied) while filtering.
    channel_axis : int, optional
        The axis of a 3-D image that holds its channels. By default the last, but a shape
        that reads as channels-first, such as (3, 32, 40), is refused rather than guessed.
    output : array or dtype, optional
        As in ``scipy.ndimage``: an array to write the result into, or the returned dtype.
        The result is computed in the image's dtype (integers rounded half-to-even and
        clipped), then converted.
    on_plan : callable, optional
        Called once per image with the engine's :class:`~convfilt.engine.Plan`.
    band : Band, optional
        ``image`` holds only some rows of a larger image; the result is that band's rows
        (:mod:`convfilt.tiles`).
    method : str, optional
        Deprecated spelling of ``strategy`` (a DeprecationWarning)."""

_COMMON_RAISES = """TypeError
        A parameter or image of the wrong type (None, a string for a number).
    UsageError
        A value out of range, an unknown mode, strategy or ``nan_policy``, an ambiguous
        channel layout, NaN/inf under ``nan_policy='raise'``, a kernel summing to ~0 under
        ``'omit'`` (a ``ValueError``)."""


def _apply(
    image: NDArray,
    smooth: Smooth,
    *,
    channel_axis: int | None,
    output: engine.Output,
    **options: object,
) -> NDArray:
    """``filter_image`` on the image with its channels last, put back, then as ``output``."""
    pixels, restore = channels_last(image, channel_axis)
    return engine.to_output(restore(filter_image(pixels, smooth, **options)), output)  # type: ignore[arg-type]


def gaussian_kernel(sigma: Pair, truncate: float = 4.0) -> NDArray:
    """The 2-D Gaussian kernel of ``sigma`` (scalar or (row, col)), weights summing to 1.

    Each axis reaches ``round(truncate * sigma)`` pixels, as in
    ``scipy.ndimage.gaussian_filter``.

    Examples
    --------
    >>> gaussian_kernel((1.0, 2.0)).shape
    (9, 17)
    """
    rows, cols = per_axis(sigma, "sigma", check_positive)
    check_positive(truncate, "truncate")
    along_x = kernels.gaussian_1d(cols, truncate)
    along_y = along_x if rows == cols else kernels.gaussian_1d(rows, truncate, name="sigma_y")
    return kernels.outer(along_y, along_x)


def _gaussian_of(
    sigma: Pair, sigma_y: float | None = None, truncate: float = 4.0, **_: Any
) -> NDArray:
    """The Gaussian kernel of :func:`gaussian_blur`'s parameters (also for tiles and Dask)."""
    return gaussian_kernel(_with_y(sigma, sigma_y, "sigma", check_positive), truncate)


def _box_of(radius: Pair, radius_y: int | None = None, **_: Any) -> NDArray:
    """The box kernel of :func:`box_blur`'s parameters."""
    both = _with_y(radius, radius_y, "radius", check_radius)
    rows, cols = per_axis(both, "radius", check_radius)  # type: ignore[arg-type]
    along_x = kernels.box_1d(int(cols))
    along_y = along_x if rows == cols else kernels.box_1d(int(rows))
    return kernels.outer(along_y, along_x)


def _unsharp_of(sigma: Pair = 1.0, *_: Any, truncate: float = 4.0, **__: Any) -> NDArray:
    """The blur kernel of :func:`unsharp_mask`'s parameters."""
    return gaussian_kernel(sigma, truncate)


def _plan(
    image_shape: tuple[int, ...], kernel: NDArray, *, dtype: np.dtype, **options: Any
) -> engine.Plan:
    """The whole image's plan, for a dask image (tiles.whole_road): in the working dtype
    these filters compute in, an integer image's result rounded back to its dtype."""
    work = _Depth.of(np.dtype(dtype)).work
    return engine.plan(image_shape, kernel, dtype=dtype, work=work, stored=True, **options)


@tiles.dask_aware(_gaussian_of, plan=_plan)
def gaussian_blur(
    image: NDArray,
    sigma: Pair,
    *,
    sigma_y: float | None = None,
    truncate: float = 4.0,
    mode: str = names.REFLECT,
    cval: float = 0.0,
    strategy: str = names.AUTO,
    nan_policy: str = names.PROPAGATE,
    linear: bool = False,
    has_alpha: bool = False,
    channel_axis: int | None = None,
    output: engine.Output = None,
    on_plan: PlanCallback = None,
    band: engine.Band | None = None,
    method: str | None = None,
) -> NDArray:
    """Gaussian blur over the spatial axes, as ``scipy.ndimage.gaussian_filter`` computes it.

    Parameters
    ----------
    image : array_like
        (H, W) or (H, W, C), integers or floats.
    sigma : float or (float, float)
        Standard deviation in pixels: one for both axes, or (row, col).
    sigma_y : float, optional
        With a scalar ``sigma``, the row (y) value, ``sigma`` then being the column's.
    truncate : float, optional
        The kernel reaches ``round(truncate * sigma)`` pixels along each axis.
    {common}

    Returns
    -------
    ndarray
        The image's shape and dtype (or ``output``'s).

    Raises
    ------
    {raises}

    Notes
    -----
    The kernel is rank one, so the planner usually takes the separable road: two banded 1-D
    passes, ~ (kh + kw)·H·W·C multiply-adds. Integer images are filtered in float and
    rounded back (within one level of scipy's); alpha and linear light as in
    :func:`filter_image`; NaN/inf follow ``nan_policy``.

    Examples
    --------
    >>> import numpy as np
    >>> from scipy import ndimage
    >>> from convfilt import gaussian_blur
    >>> image = np.random.default_rng(0).random((32, 40, 3))
    >>> ours = gaussian_blur(image, (1.0, 3.0))
    >>> bool(np.allclose(ours, ndimage.gaussian_filter(image, (1.0, 3.0, 0))))
    True
    >>> gaussian_blur(np.zeros((3, 32, 40)), 2.0)
    Traceback (most recent call last):
    ...
    convfilt.errors.UsageError: image of shape (3, 32, 40) looks channels-first; ...
    >>> gaussian_blur(np.zeros((3, 32, 40)), 2.0, channel_axis=0).shape
    (3, 32, 40)
    """
    strategy = engine.strategy_keyword(strategy, method)
    kernel = _gaussian_of(sigma, sigma_y, truncate)
    smooth = _correlator(
        kernel, flip=False, mode=mode, strategy=strategy,
        nan_policy=_policy(image, nan_policy), on_plan=on_plan, band=band,
    )  # fmt: skip
    return _apply(
        image, smooth, channel_axis=channel_axis, output=output, band=band, has_alpha=has_alpha,
        linear=linear, cval=_outside(mode, cval),
        fill_missing=nan_policy == names.OMIT,
    )  # fmt: skip


@tiles.dask_aware(_box_of, plan=_plan)
def box_blur(
    image: NDArray,
    radius: int | Sequence[int],
    *,
    radius_y: int | None = None,
    mode: str = names.REFLECT,
    cval: float = 0.0,
    strategy: str = names.AUTO,
    nan_policy: str = names.PROPAGATE,
    linear: bool = False,
    has_alpha: bool = False,
    channel_axis: int | None = None,
    output: engine.Output = None,
    on_plan: PlanCallback = None,
    band: engine.Band | None = None,
    method: str | None = None,
) -> NDArray:
    """Mean over a (2·rows + 1) x (2·cols + 1) window, as ``scipy.ndimage.uniform_filter``.

    Parameters
    ----------
    image : array_like
        (H, W) or (H, W, C), integers or floats.
    radius : int or (int, int)
        Half the window, for both axes or (row, col); 0 leaves an axis alone.
    radius_y : int, optional
        With a scalar ``radius``, the row (y) value, ``radius`` then being the column's.
    {common}

    Returns
    -------
    ndarray
        The image's shape and dtype (or ``output``'s).

    Raises
    ------
    {raises}

    Notes
    -----
    A rank-one kernel: two banded 1-D passes, ~ (kh + kw)·H·W·C multiply-adds.

    Examples
    --------
    >>> import numpy as np
    >>> from scipy import ndimage
    >>> from convfilt import box_blur
    >>> image = np.random.default_rng(0).random((20, 30))
    >>> bool(np.allclose(box_blur(image, (1, 2)), ndimage.uniform_filter(image, (3, 5))))
    True
    """
    strategy = engine.strategy_keyword(strategy, method)
    smooth = _correlator(
        _box_of(radius, radius_y),
        flip=False,
        mode=mode,
        strategy=strategy,
        nan_policy=_policy(image, nan_policy),
        on_plan=on_plan,
        band=band,
    )
    return _apply(
        image, smooth, channel_axis=channel_axis, output=output, band=band, has_alpha=has_alpha,
        linear=linear, cval=_outside(mode, cval),
        fill_missing=nan_policy == names.OMIT,
    )  # fmt: skip


@tiles.dask_aware(_unsharp_of, plan=_plan)
def unsharp_mask(
    image: NDArray,
    sigma: Pair = 1.0,
    amount: float = 1.0,
    threshold: float = 0.0,
    *,
    truncate: float = 4.0,
    mode: str = names.REFLECT,
    cval: float = 0.0,
    strategy: str = names.AUTO,
    nan_policy: str = names.PROPAGATE,
    linear: bool = False,
    has_alpha: bool = False,
    channel_axis: int | None = None,
    output: engine.Output = None,
    on_plan: PlanCallback = None,
    band: engine.Band | None = None,
    method: str | None = None,
) -> NDArray:
    """Sharpen by unsharp masking: ``img + amount · (img - gaussian_blur(img, sigma))``.

    Parameters
    ----------
    image : array_like
        (H, W) or (H, W, C), integers or floats.
    sigma : float or (float, float)
        The blur subtracted, for both axes or (row, col).
    amount : float
        How much of the detail (``img - blur``) to add back; 0 changes nothing.
    threshold : float
        In [0, 1): detail no larger than this fraction of full scale (255 for uint8, 65535
        for uint16, 1.0 for floats) is left alone, which spares flat noise.
    truncate : float, optional
        The blur reaches ``round(truncate * sigma)`` pixels.
    {common}

    Returns
    -------
    ndarray
        The image's shape and dtype (or ``output``'s). Integer results are rounded and
        clipped; float results are not clipped.

    Raises
    ------
    {raises}

    Notes
    -----
    One Gaussian blur (see :func:`gaussian_blur` for its cost) and a few array passes.
    With alpha (``has_alpha``) the image is sharpened premultiplied, as GEGL's unsharp mask
    does: ``P' = P + amount·(P - G*P)`` for the premultiplied colour ``P``, ``a' = a +
    amount·(a - G*a)`` clipped to [0, full scale] for alpha, and the colour stored is
    ``P'/a'`` where ``a' > 0`` (0 where nothing is visible). The threshold compares the
    straight colour with its premultiplied blur ``(G*P)/(G*a)``; it does not apply to alpha.

    Examples
    --------
    >>> import numpy as np
    >>> from convfilt import unsharp_mask
    >>> edge = np.repeat([[0.2, 0.2, 0.2, 0.8, 0.8, 0.8]], 3, axis=0)
    >>> sharpened = unsharp_mask(edge, sigma=1.0, amount=1.0)
    >>> bool(sharpened[1, 2] < 0.2 and sharpened[1, 3] > 0.8)  # overshoot on both sides
    True
    """
    strategy = engine.strategy_keyword(strategy, method)
    check_finite(amount, "amount")
    check_threshold(threshold, "threshold")
    kernel = _unsharp_of(sigma, truncate=truncate)
    smooth = _correlator(
        kernel, flip=False, mode=mode, strategy=strategy,
        nan_policy=_policy(image, nan_policy), on_plan=on_plan, band=band,
    )  # fmt: skip

    def sharpen(
        original: FloatArray, blurred: FloatArray, full_scale: float, alpha: AlphaPlanes | None
    ) -> FloatArray:
        keep = np.abs(original - blurred) <= threshold * full_scale
        if alpha is None:
            result = np.subtract(original, blurred, out=blurred)
            result *= amount
            result += original
        else:  # GEGL's unsharp mask: P' = P + amount·(P - G*P), colour P'/alpha'
            premultiplied = original * alpha.original
            result = np.multiply(blurred, alpha.blurred, out=blurred)  # G*P
            np.subtract(premultiplied, result, out=result)
            result *= amount
            result += premultiplied
            weighted.divide(result, alpha.result, _ALPHA_FLOOR)
        result[keep] = original[keep]
        return result

    return _apply(
        image, smooth, channel_axis=channel_axis, output=output, band=band, finish=sharpen,
        has_alpha=has_alpha, linear=linear, cval=_outside(mode, cval),
        fill_missing=nan_policy == names.OMIT,
    )  # fmt: skip


@tiles.dask_aware(tiles.given_kernel, plan=_plan)
def convolve_image(
    image: NDArray,
    kernel: NDArray,
    *,
    correlate: bool = False,
    mode: str = names.REFLECT,
    cval: float = 0.0,
    strategy: str = names.AUTO,
    nan_policy: str = names.PROPAGATE,
    linear: bool = False,
    has_alpha: bool = False,
    channel_axis: int | None = None,
    output: engine.Output = None,
    on_plan: PlanCallback = None,
    band: engine.Band | None = None,
    method: str | None = None,
) -> NDArray:
    """Convolve (kernel flipped) or, with ``correlate=True``, correlate an image with ``kernel``.

    Parameters
    ----------
    image : array_like
        (H, W) or (H, W, C), integers or floats.
    kernel : array_like
        The 2-D kernel, real and finite.
    correlate : bool, optional
        Slide the kernel as written (correlation) rather than flipped (convolution).
    {common}

    Returns
    -------
    ndarray
        The image's shape and dtype (or ``output``'s): integer results are rounded and
        clipped to the dtype's range (negative responses become 0), unlike
        :func:`convfilt.convolve`, which returns floats.

    Raises
    ------
    {raises}

    Notes
    -----
    An averaging kernel (no negative weight, sum 1) is applied premultiplied like a blur; any
    other kernel (Sobel, Laplacian, emboss, ...) is applied to the colour as stored and alpha
    is passed through, because a difference of opacities is not an opacity. Cost: the
    engine's, per channel (:func:`convfilt.convolve`). NaN/inf follow ``nan_policy``.

    Examples
    --------
    >>> import numpy as np
    >>> step = np.repeat([[0, 0, 0, 200, 200, 200]], 3, axis=0).astype(np.uint8)
    >>> convolve_image(step, np.array([[1.0, 0.0, -1.0]]))[1].tolist()  # flipped: +d/dx
    [0, 0, 200, 200, 0, 0]
    >>> convolve_image(step, np.array([[1.0, 0.0, -1.0]]), correlate=True)[1].tolist()
    [0, 0, 0, 0, 0, 0]
    """
    strategy = engine.strategy_keyword(strategy, method)
    weights = np.asarray(kernel, dtype=np.float64)
    averaging = bool(np.all(weights >= 0) and math.isclose(weights.sum(), 1.0, rel_tol=1e-9))
    policy: AlphaPolicy = "premultiply" if averaging else "keep"
    smooth = _correlator(
        weights, flip=not correlate, mode=mode, strategy=strategy,
        nan_policy=_policy(image, nan_policy), on_plan=on_plan, band=band,
    )  # fmt: skip
    return _apply(
        image, smooth, channel_axis=channel_axis, output=output, band=band, has_alpha=has_alpha,
        alpha_policy=policy, linear=linear, cval=_outside(mode, cval), exact=not averaging,
        fill_missing=nan_policy == names.OMIT,
    )  # fmt: skip


for _public in (gaussian_blur, box_blur, unsharp_mask, convolve_image):
    _public.__doc__ = (
        (_public.__doc__ or "")
        .replace("{common}", _COMMON_PARAMETERS)
        .replace("{raises}", _COMMON_RAISES)
    )
