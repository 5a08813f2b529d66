"""Missing data and weights: non-finite values, ``nan_policy`` and weighted (normalized) filters.

Every road of the engine (direct, separable, FFT, overlap-add) computes plain correlations of
*finite* planes. This module turns the rest into such correlations, so that every road, every
boundary mode and every tile of an image gives the same answer:

- ``propagate`` (scipy.ndimage's result): the plane is correlated with its non-finite values
  zeroed, then each non-finite value's footprint is marked. scipy.ndimage skips weights with
  ``|w| <= DBL_EPSILON`` and sums ``x·w`` in order, so an output is NaN when a NaN falls on a
  weight of its footprint, or when both +inf and -inf terms do (``inf·w`` takes the sign of
  ``w``); else +inf or -inf when such terms do; else the finite sum. The footprints come from
  correlations of 0/1 masks with 0/1 kernels, whose counts no road can round across 0.5.
- ``omit`` (normalized convolution, astropy's ``nan_treatment='interpolate'`` with
  ``normalize_kernel=False``): NaN pixels get weight 0, ``result = (K*(w·x)) / (K*w) · Σk``;
  NaN only where the footprint holds no valid pixel. ±inf are data, not holes (as in
  astropy): they spread over their footprint as under ``propagate``.
- ``raise``: a UsageError (a ValueError) with the count and the first position.

Alpha is the same mechanism with alpha as the weights: premultiply, filter, divide by the
filtered weights (:func:`normalized`). Without weights (plain ``omit``) they are the 0/1
validity of each pixel.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from .errors import UsageError
from .names import NAN_POLICIES, OMIT

FloatArray = NDArray[np.floating]
# correlate(plane, kernel, cval, exact_road) -> the engine's correlation of a finite 2-D
# plane (in its working dtype); exact_road False lets the planner pick for 0/1 masks.
Correlate = Callable[[NDArray[Any], NDArray[np.float64], float, bool], FloatArray]

DBL_EPSILON = float(np.finfo(np.float64).eps)  # scipy.ndimage skips smaller weights
ZERO_SUM = 1e-6  # |Σk| <= ZERO_SUM·Σ|k|: a kernel omit cannot renormalize (Sobel, Laplacian)


def check_policy(policy: str) -> str:
    """Return ``policy`` if it is one of ``NAN_POLICIES``, else raise UsageError listing them."""
    if policy not in NAN_POLICIES:
        raise UsageError(
            f"unknown nan_policy {policy!r}; choose one of {', '.join(NAN_POLICIES)}",
            parameters=["nan_policy"],
        )
    return policy


def check_renormalizable(kernel: NDArray[np.float64]) -> None:
    """Refuse a kernel whose sum is ~0 for ``omit``: there is no sum to renormalize to."""
    total, size = float(kernel.sum()), float(np.abs(kernel).sum())
    if abs(total) <= ZERO_SUM * size:
        raise UsageError(
            f"nan_policy 'omit' renormalizes the kernel over the valid pixels, but this kernel "
            f"sums to ~0 ({total:.3g}, an edge or difference kernel), so there is no sum to "
            "renormalize to; use 'propagate', or fill the NaN first",
            parameters=["nan_policy"],
        )


def raise_if_not_finite(image: NDArray, rows: NDArray[np.intp] | None = None) -> None:
    """UsageError naming how many values of ``image`` are NaN or inf, and where the first is
    (``rows``: the image row of each row given, for a band of a larger image)."""
    bad = ~np.isfinite(image)
    count = int(bad.sum())
    if count == 0:
        return
    first = tuple(int(i) for i in np.unravel_index(int(np.argmax(bad)), image.shape))
    row = first[0] if rows is None else int(rows[first[0]])
    where = f"row {row}, column {first[1]}" + (f", channel {first[2]}" if len(first) > 2 else "")
    raise UsageError(
        f"the image holds {count} non-finite value{'s' * (count != 1)} (NaN or inf), the first "
        f"at {where} ({image[first]}); nan_policy is 'raise'",
        parameters=["nan_policy"],
    )


def support(kernel: NDArray[np.float64], sign: int = 0) -> NDArray[np.float64]:
    """The 0/1 taps scipy.ndimage uses: ``|k| > DBL_EPSILON`` (``sign`` ±1: of that sign)."""
    if sign > 0:
        return (kernel > DBL_EPSILON).astype(np.float64)
    if sign < 0:
        return (kernel < -DBL_EPSILON).astype(np.float64)
    return (np.abs(kernel) > DBL_EPSILON).astype(np.float64)


def _reach(
    mask: NDArray[np.bool_], taps: NDArray[np.float64], correlate: Correlate
) -> NDArray[np.bool_] | None:
    """Outputs whose footprint (``taps``) covers a True of ``mask``; None if none can."""
    if not mask.any() or not taps.any():
        return None
    return correlate(mask.astype(np.float32), taps, 0.0, False) > 0.5


def mark(
    out: FloatArray, plane: FloatArray, kernel: NDArray[np.float64], correlate: Correlate
) -> None:
    """Write scipy.ndimage's NaN/±inf into ``out`` over each non-finite value's footprint."""
    positive, negative = support(kernel, 1), support(kernel, -1)
    up_hits = [
        _reach(np.isposinf(plane), positive, correlate),
        _reach(np.isneginf(plane), negative, correlate),
    ]
    down_hits = [
        _reach(np.isneginf(plane), positive, correlate),
        _reach(np.isposinf(plane), negative, correlate),
    ]
    up = _any(up_hits, out.shape)
    down = _any(down_hits, out.shape)
    out[up] = np.inf
    out[down] = -np.inf
    out[up & down] = np.nan
    nan = _reach(np.isnan(plane), support(kernel), correlate)
    if nan is not None:
        out[nan] = np.nan


def _any(hits: list[NDArray[np.bool_] | None], shape: tuple[int, ...]) -> NDArray[np.bool_]:
    found = [h for h in hits if h is not None]
    if not found:
        return np.zeros(shape, dtype=bool)
    return np.logical_or.reduce(found) if len(found) > 1 else found[0]


def zeroed(plane: FloatArray, finite: NDArray[np.bool_]) -> FloatArray:
    """A copy of ``plane`` with its non-finite values replaced by 0."""
    return np.where(finite, plane, plane.dtype.type(0))


def propagate(
    plane: FloatArray, kernel: NDArray[np.float64], cval: float, correlate: Correlate
) -> FloatArray:
    """scipy.ndimage's correlation of a plane holding NaN/inf, on the engine's fast roads."""
    out = correlate(zeroed(plane, np.isfinite(plane)), kernel, cval, True)
    mark(out, plane, kernel, correlate)
    return out


@dataclass(frozen=True)
class Weights:
    """Per-pixel weights of a normalized filter (alpha, in [0, 1]).

    ``values``: the weight of each pixel; ``outside``: the weight beyond the border (read in
    ``mode="constant"``); ``filtered``: ``K*values`` if the caller has it (alpha's own
    filtered channel), spared when no pixel is missing; ``floor``: below this filtered weight
    a pixel is invisible and gets 0 rather than rounding noise over rounding noise.
    """

    values: FloatArray
    outside: float = 1.0
    filtered: FloatArray | None = None
    floor: float = 0.0


def normalized(
    plane: FloatArray,
    kernel: NDArray[np.float64],
    cval: float,
    correlate: Correlate,
    *,
    policy: str,
    weights: Weights | None = None,
) -> FloatArray:
    """``(K*(w·x)) / (K*w) · Σk``: the weighted mean of each footprint, scaled by the sum.

    ``w`` is ``weights.values`` (1 without weights) times, under ``omit``, the validity of
    each pixel (a NaN value or weight gets weight 0). Under ``propagate`` the NaN and ±inf of
    the weighted values ``w·x`` spread over their footprints (:func:`propagate`). Where the
    filtered weight is at most ``weights.floor`` the pixel is invisible: 0. Under ``omit``
    an output whose footprint holds no valid pixel is NaN.
    """
    values, w, holes = _weighted_values(plane, weights, policy)
    outside = 1.0 if weights is None else weights.outside
    if np.isfinite(values).all():
        numerator = correlate(values, kernel, cval * outside, True)
    else:
        numerator = propagate(values, kernel, cval * outside, correlate)
    del values
    scale = float(kernel.sum())  # divides the weights' kernel: (K*w)/Σk in one pass
    if weights is not None and weights.filtered is not None and holes is None:
        denominator = weights.filtered if scale == 1.0 else weights.filtered / scale
    else:
        denominator = correlate(w, kernel if scale == 1.0 else kernel / scale, outside, True)
    del w
    floor = 0.0 if weights is None else weights.floor / abs(scale)
    divide(numerator, denominator, floor)
    if holes is not None:
        _empty_footprints(numerator, denominator * scale, holes, kernel, correlate)
    return numerator


def divide(numerator: FloatArray, denominator: FloatArray, floor: float) -> FloatArray:
    """``numerator / denominator`` in place (un-premultiply); where ``|denominator| <= floor``
    (> 0: an invisible pixel) the result is 0, unless the numerator is already NaN."""
    with np.errstate(divide="ignore", invalid="ignore"):
        if floor <= 0:
            return np.divide(numerator, denominator, out=numerator)
        visible = np.abs(denominator) > floor
        np.divide(numerator, denominator, out=numerator, where=visible)
    numerator[~visible & ~np.isnan(numerator)] = 0.0
    return numerator


def _weighted_values(
    plane: FloatArray, weights: Weights | None, policy: str
) -> tuple[FloatArray, FloatArray, NDArray[np.bool_] | None]:
    """``(w·x, w, holes)``: the weighted values with holes zeroed, the finite weights, and
    the holes (NaN values or weights under ``omit``), None when there are none."""
    if weights is None:  # omit's own weights: 1 where valid
        holes = np.isnan(plane)
        return np.where(holes, plane.dtype.type(0), plane), (~holes).astype(plane.dtype), holes
    base = weights.values
    bad = ~np.isfinite(base)
    holes = np.isnan(plane) | bad if policy == OMIT else np.zeros(plane.shape, dtype=bool)
    if not holes.any():
        finite = base if not bad.any() else zeroed(base, ~bad)
        return plane * base, finite, None
    w = np.where(holes, base.dtype.type(0), base)
    return np.where(holes, plane.dtype.type(0), plane) * w, w, holes


def _empty_footprints(
    out: FloatArray,
    denominator: FloatArray,
    holes: NDArray[np.bool_],
    kernel: NDArray[np.float64],
    correlate: Correlate,
) -> None:
    """NaN where no valid pixel falls in the footprint. Such a filtered weight is 0 but for
    rounding, so only outputs below a noise floor (any road: far above float32 transforms'
    ~1e-6·Σ|k|) are checked, exactly, by counting valid pixels."""
    floor = (1e-4 if denominator.dtype == np.float32 else 1e-10) * float(np.abs(kernel).sum())
    if float(denominator.min()) > floor or float(denominator.max()) < -floor:
        return  # one pass each, instead of |d| <= floor over the whole plane
    candidates = np.abs(denominator) <= floor
    if not candidates.any():
        return
    valid = _reach(~holes, support(kernel), correlate)
    if valid is None:
        out[candidates] = np.nan
        return
    out[candidates & ~valid] = np.nan
    out[candidates & valid & (denominator == 0)] = 0.0  # cancelling signed taps: no mean
