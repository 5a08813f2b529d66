"""Template matching: score maps (NCC, masked NCC, SQDIFF, CCORR), peaks, NMS and subpixel.

A score map holds one number per placement of the probe inside the scene ("valid" placements
only), entry ``(y, x)`` scoring the window whose top-left corner is ``(x, y)``. Every method is
built from the same few window terms: one cross-correlation of the scene with the (weighted,
offset) probe, computed by the engine, and the scene's window sums of values and squares, from
running sums (unmasked) or from correlations with the mask (masked). Which terms a method needs,
how it offsets the probe and how it combines them is one row of the ``_METHODS`` table. A
scene with unknown pixels (NaN, a scene mask) is scored over each window's known overlap
(:func:`masked_scores`); how each method combines its sums there is one row of ``_MASKED``.

References
----------
.. [1] J. P. Lewis, "Fast Normalized Cross-Correlation", Vision Interface, 1995.
.. [2] D. Padfield, "Masked object registration in the Fourier domain", IEEE Transactions on
       Image Processing 21(5), 2012.
"""

from __future__ import annotations

import math
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field, replace
from typing import Any, Literal, cast

import numpy as np
from numpy.typing import ArrayLike, NDArray

from . import compiled, cost, engine, names, pools, tiles
from .errors import ConvfiltError, UsageError

FloatArray = NDArray[np.float64]

# A window (or the probe) is "flat", its NCC undefined and scored 0, when its energy about its
# own mean, E = S2 - S1²/n, is within the rounding error of computing it: E <= 4·n·eps·S2, with
# S2 the window's own sum of squared (scene-mean-centred) values and n the terms summed. Any
# summation order that adds only the window's own values (``_block_sums`` and
# ``_sliding_sums`` of ``_WindowEnergy``, BLAS products, numpy's sums) makes n - 1 adds at
# most along any path: S2 is off by at most n·eps·S2 (squares included), S1 by (n - 1)·eps·
# sum|d|, so S1²/n by 2(n - 1)·eps·S2 + 3·eps·S2 (|S1|·sum|d| <= n·S2), and the subtraction
# adds eps·S2: (3n + 2)·eps·S2 <= 4·n·eps·S2 for n >= 2 (n = 1 gives exactly 0). Measured on
# pedestals, outliers and flat patches: below 0.4·n·eps·S2. So the test is local: an outlier
# elsewhere in the scene changes nothing. Correlations through a transform round relative to
# the whole input, so there S2 is replaced by weight·max(d²) (``_zero_flat``).
_FLAT_ULPS = 4.0
_EPS = float(np.finfo(np.float64).eps)
_FLAT_FLOOR = float(np.finfo(np.float64).tiny)  # exactly flat windows: E = S2 = 0

# Unmasked ncc of a float32 scene and probe computes its cross term in float32 (half the
# transform cost); window sums stay float64. The cross term's error is about eps32 of
# max|d|·sum|probe - mean| whatever the window (measured: below a quarter of that), so a
# window's score is off by up to that over sqrt(E·Ep): ~1e-7 in well-textured windows, but
# 1e-3 and more where the scene has little contrast (a texture of amplitude 2e-5 on [0, 1]).
# Each window's bound (the measured error times _CROSS_ERROR_ULPS) sizes the re-check: every
# placement whose score plus its bound reaches the best score minus the best's bound is
# recomputed in float64, so the best match (and an exact crop's 1.0) is float64-exact. When
# more than _REFINE_LIMIT placements qualify, the whole map is recomputed in float64 instead.
_CROSS_ERROR_ULPS = 4.0
_REFINE_LIMIT = 256
# ... unless the float32 cross term could overflow: its values reach max|d|·sum|probe - mean|,
# which is cross_error / eps32. Within 1/16 of float32's largest value, float64 throughout.
_FLOAT32_CROSS_LIMIT = float(np.finfo(np.float32).eps * np.finfo(np.float32).max) / 16

# Rec. 601 luma weights (as Pillow's "L" conversion and OpenCV's RGB2GRAY use).
REC601 = (0.299, 0.587, 0.114)


class UnscoredError(ConvfiltError):
    """No window of the scene has a score: every pixel unknown, or none overlapping known
    pixels by ``min_overlap`` of the probe (exit 1)."""


@dataclass(frozen=True)
class Match:
    """One match: the window's top-left corner (x, y), its size, its score, a subpixel corner."""

    x: int
    y: int
    width: int
    height: int
    score: float
    x_subpixel: float
    y_subpixel: float


# ------------------------------------------------------------------------------------------
# score maps


@dataclass(frozen=True)
class _Terms:
    """Window terms of one scene/probe pair, summed over channels.

    ``cross``: sum of w * (probe - offset) * (scene - scene_mean) per window.
    ``energy``: per window, sum of w * (scene - scene_mean)^2, minus (sum of w * (scene -
    scene_mean))^2 / weight when the method wants the window's own mean removed; None when the
    method needs no energy. ``probe_energy``: sum of w * (probe - offset)^2; ``probe_dot_mean``:
    sum over channels of scene_mean * sum of w * (probe - offset). ``weight``: sum of w.
    For ncc, a flat window's energy (and a flat probe's) is already exactly 0 (``_zero_flat``).
    ``scene_means``, ``probe_offsets``: per channel, what was subtracted
    from the scene and the probe. The arrays belong to the terms: ``combine`` reuses them.
    """

    cross: NDArray[np.floating]  # float32 on the fast path, else float64
    energy: NDArray[np.floating] | None
    probe_energy: float
    probe_dot_mean: float
    weight: float
    scene_means: tuple[float, ...] = ()
    probe_offsets: tuple[float, ...] = ()
    cross_error: float = 0.0  # eps(work)·sum over channels of max|d|·sum|w·(probe - offset)|


@dataclass(frozen=True)
class _Method:
    """One scoring method: how to offset the probe, which energy it needs, how to combine."""

    probe_offset: Callable[[FloatArray, FloatArray, float], float]  # (probe_c, w, scene_mean_c)
    energy: Literal["none", "raw", "centred"]
    combine: Callable[[_Terms], FloatArray]
    higher_is_better: bool
    scale_free: bool = False  # scores unchanged when either image is scaled (ncc)


def _weighted_mean(probe_c: FloatArray, weights: FloatArray, _scene_mean: float) -> float:
    return float(np.sum(weights * probe_c) / np.sum(weights))


def _scene_mean(_probe_c: FloatArray, _weights: FloatArray, scene_mean: float) -> float:
    return scene_mean


def _no_offset(_probe_c: FloatArray, _weights: FloatArray, _scene_mean: float) -> float:
    return 0.0


def _ncc_scores(terms: _Terms) -> FloatArray:
    """Zero-mean NCC: cross / sqrt(window variance * probe variance), flat windows 0."""
    return _ncc_map(terms)[0]


def _sqdiff_scores(terms: _Terms) -> FloatArray:
    """Sum of squared differences: window energy - 2 cross + probe energy, never below 0."""
    assert terms.energy is not None
    scores = terms.energy
    scores -= 2.0 * terms.cross
    scores += terms.probe_energy
    return np.maximum(scores, 0.0, out=scores)


def _ccorr_scores(terms: _Terms) -> FloatArray:
    """Plain correlation: the centred-scene cross term plus the scene mean's share."""
    scores = terms.cross.astype(np.float64, copy=False)  # float64 here: no copy
    scores += terms.probe_dot_mean
    return scores


_METHODS: dict[str, _Method] = {
    # Lewis [1]: the probe's own mean removed, so the window mean drops out of the numerator.
    names.NCC: _Method(
        _weighted_mean, "centred", _ncc_scores, higher_is_better=True, scale_free=True
    ),
    # sum w (s - t)^2 with both shifted by the scene's mean: same value, smaller magnitudes.
    names.SQDIFF: _Method(_scene_mean, "raw", _sqdiff_scores, higher_is_better=False),
    names.CCORR: _Method(_no_offset, "none", _ccorr_scores, higher_is_better=True),
}
METHODS = tuple(_METHODS)


def higher_is_better(method: str) -> bool:
    """Whether a larger score is a better match for ``method`` (False for ``sqdiff``)."""
    return _method(method).higher_is_better


def match_template(
    scene: ArrayLike,
    probe: ArrayLike,
    *,
    method: str = names.NCC,
    mask: ArrayLike | None = None,
    scene_mask: ArrayLike | None = None,
    min_overlap: float = 0.5,
    strategy: str = names.AUTO,
    on_plan: Callable[[engine.Plan], None] | None = None,
) -> FloatArray:
    """Score every placement of ``probe`` inside ``scene``.

    Parameters
    ----------
    scene, probe : array_like
        (H, W) or (H, W, C) images with the same number of channels; any real dtype (integers
        are taken at face value, which leaves NCC unchanged). No alpha channel: pass the
        probe's alpha as ``mask``. ``scene`` may be a dask array: the map is then a lazy dask
        array, block by block (blocks overlapping by the probe's size - 1), equal to the
        in-memory map within rounding; ``on_plan`` is not called.
    method : {"ncc", "sqdiff", "ccorr"}
        ``ncc``: zero-mean normalised cross-correlation (OpenCV's TM_CCOEFF_NORMED) in [-1, 1],
        flat windows 0. ``sqdiff``: sum of squared differences, lower is better. ``ccorr``:
        plain correlation sum(probe * window). Colour images are scored over all channels at
        once: the numerator and both energies are sums over channels, as OpenCV does.
    mask : array_like, optional
        (h, w) weights (or booleans) over the probe's pixels, e.g. its alpha: only weighted
        pixels count, each as much as its weight (ncc becomes the weighted Pearson correlation;
        for a 0/1 mask, Padfield's masked NCC [2]).
    scene_mask : array_like, optional
        (H, W) weights over the scene's pixels (e.g. its alpha); 0 marks a pixel unknown.
        NaN pixels of a float scene are unknown too (in any channel: the whole pixel). With
        unknown pixels every window is scored over its known overlap with the probe, each
        pixel weighted by ``W = scene_mask · mask``: ncc is masked NCC with both masks [2];
        sqdiff is ``sum W·(window - probe)²`` and ccorr ``sum W·window·probe``, each times
        ``sum(mask) / sum W`` (the probe's whole weight over the overlap's), i.e. a mean
        over the known pixels in the units of a whole probe: windows with different
        overlaps compare fairly, and a fully known window scores as without ``scene_mask``.
    min_overlap : float
        With unknown scene pixels: the share of the probe's weight a window's known overlap
        must reach (default half); windows below it score NaN (no score, never a match).
    strategy : str
        The engine's strategy for the correlations ("auto" lets its planner choose).
    on_plan : callable, optional
        Called with each Plan the engine carries out (the command line's explanation).

    Returns
    -------
    scores : ndarray of float64, shape (H - h + 1, W - w + 1)
        ``scores[y, x]`` scores the window whose top-left corner is ``(x, y)``; NaN only
        where a scene with unknown pixels leaves too little overlap. A dask array for a
        dask scene (its errors about values, and a map without any score, come when it is
        computed; a block without any score is NaN there, not an error).

    Raises
    ------
    UsageError
        Shapes that do not fit (a probe larger than the scene, different channel counts, a
        mask not the probe's size), negative or non-finite weights, an unknown method or
        strategy, an image not made of real numbers.
    ConvfiltError
        Infinite values (or NaN in the probe), every probe or scene pixel masked, or no
        window reaching ``min_overlap`` (:class:`UnscoredError`).

    Notes
    -----
    Both images are shifted by the scene's per-channel mean before anything is correlated,
    and the probe by its own (weighted) mean for ncc, so a texture riding on a large pedestal
    (16-bit values near 60000) keeps its precision. The cross term is one engine correlation
    per channel (and per extra mask kernel, sharing the scene's transform). Without a mask the
    window sums come from running sums in float64 along each axis in turn, as in Lewis [1];
    with a mask they are correlations of the scene and its square with the mask, as in
    Padfield [2]. Windows whose variance is within the rounding error of their own sum of
    squares are flat and score 0 under ncc, never NaN (a decision local to each window: an
    outlier elsewhere in the scene does not change it). For float32 inputs (unmasked ncc) the
    cross term is computed in float32 (scores off by up to ~1e-3 in low-contrast windows) and
    every placement that can be the best within that error is recomputed in float64.

    References
    ----------
    .. [1] J. P. Lewis, "Fast Normalized Cross-Correlation", Vision Interface, 1995.
    .. [2] D. Padfield, "Masked object registration in the Fourier domain", IEEE TIP, 2012.

    Examples
    --------
    >>> import numpy as np
    >>> from convfilt import match_template
    >>> scene = np.random.default_rng(0).random((40, 50))
    >>> scores = match_template(scene, scene[10:20, 30:45])
    >>> scores.shape
    (31, 36)
    >>> [int(i) for i in np.unravel_index(np.argmax(scores), scores.shape)]
    [10, 30]
    """
    spec = _method(method)
    if not 0.0 < min_overlap <= 1.0:
        raise UsageError(
            f"min_overlap must be in (0, 1], got {min_overlap}", parameters=["min_overlap"]
        )
    if tiles.is_dask(scene):
        options = {"method": method, "mask": mask, "min_overlap": min_overlap}
        return _match_on_dask(scene, probe, scene_mask, {**options, "strategy": strategy})
    scene_f, scene_weights = _scene_and_weights(scene, scene_mask)
    if scene_weights is not None:
        probe_f = _as_channels(probe, "probe")
        _check_shapes(scene_f, probe_f)
        scene_f, probe_f = _in_range(scene_f, probe_f, spec)
        probe_w = _as_weights(mask, probe_f.shape[:2])
        probe_w = np.ones(probe_f.shape[:2]) if probe_w is None else probe_w
        scores = masked_scores(
            scene_f,
            scene_weights,
            [(probe_f, probe_w)],
            method=method,
            min_overlap=min_overlap,
            strategy=strategy,
            on_plan=on_plan,
        )[0]
        if np.isnan(scores).all():
            raise UnscoredError(
                f"no window overlaps the known scene by min_overlap {min_overlap:g} of the probe",
                parameters=["min_overlap"],
            )
        return scores
    single = all(np.asarray(a).dtype == np.float32 for a in (scene, probe))
    fast = single and mask is None and method == names.NCC
    work = np.dtype(np.float32 if fast else np.float64)
    scene_f = _as_channels(scene_f, "scene", work)
    probe_f = _as_channels(probe, "probe")
    _check_shapes(scene_f, probe_f)
    scene_f, probe_f = _in_range(scene_f, probe_f, spec)
    weights = _as_weights(mask, probe_f.shape[:2])
    with np.errstate(over="ignore", invalid="ignore") if fast else nullcontext():
        # a float32 cross term that could overflow is thrown away below, warnings and all
        terms = _terms(scene_f, probe_f, weights, spec, strategy, on_plan, work)
    if not fast:
        return spec.combine(terms)
    if terms.cross_error < _FLOAT32_CROSS_LIMIT:
        scores, candidates = _ncc_map(terms, cross_error=_CROSS_ERROR_ULPS * terms.cross_error)
        if candidates.size <= _REFINE_LIMIT:
            _refine(scores, candidates, scene_f, probe_f, spec, terms)
            return scores
    float64 = np.dtype(np.float64)
    return spec.combine(_terms(scene_f, probe_f, None, spec, strategy, on_plan, float64))


def _match_on_dask(
    scene: Any, probe: ArrayLike, scene_mask: ArrayLike | None, options: dict[str, Any]
) -> Any:
    """:func:`match_template` of a dask scene: a lazy dask map, one task per block of scores.

    The block of scores ``[r0, r1) x [c0, c1)`` is the in-memory map of the scene's rows
    ``r0 .. r1 + h - 1`` and columns ``c0 .. c1 + w - 1`` (blocks overlap by the probe's
    size - 1; a valid map reads no pixel outside the scene, so no boundary rule applies).
    Blocks follow the scene's chunks; chunks smaller than the probe are rechunked (to twice
    its size at least), the channels into one chunk. A block without any scored window
    (every pixel unknown) is NaN, as the whole map would hold there.
    """
    import dask
    import dask.array as da

    if scene.ndim not in (2, 3) or 0 in scene.shape:
        raise UsageError(f"scene must be a non-empty (H, W) or (H, W, C) image, got {scene.shape}")
    if not np.issubdtype(scene.dtype, np.number) or np.issubdtype(scene.dtype, np.complexfloating):
        raise UsageError(f"scene must hold real numbers, got {scene.dtype}")
    values = scene if scene.ndim == 3 else scene[..., np.newaxis]
    # a float32 scene and probe take the in-memory float32 road in every block
    single = scene.dtype == np.float32 and np.asarray(probe).dtype == np.float32
    probe_f = _as_channels(probe, "probe", np.dtype(np.float32 if single else np.float64))
    _check_shapes(values, probe_f)
    _as_weights(options["mask"], probe_f.shape[:2])  # a mask that does not fit: now
    (height, width), (probe_h, probe_w) = values.shape[:2], probe_f.shape[:2]
    if max(values.chunks[0]) < probe_h or max(values.chunks[1]) < probe_w:
        # blocks of at least twice the probe: each reads at most 1.5x its size per axis
        # (a last, smaller chunk needs nothing: a block's rows are read across chunks)
        rows, cols = max(2 * probe_h, *values.chunks[0]), max(2 * probe_w, *values.chunks[1])
        values = values.rechunk((rows, cols, -1))
    values = values.rechunk({2: -1})
    known = None
    if scene_mask is not None:
        if tuple(np.shape(scene_mask)) != (height, width):
            raise UsageError(
                f"scene_mask of shape {np.shape(scene_mask)} does not fit the scene "
                f"({width}x{height})",
                parameters=["scene_mask"],
            )
        known = da.asarray(scene_mask).rechunk(values.chunks[:2])
    spans = [
        _spans(values.chunks[axis], n)
        for axis, n in ((0, height - probe_h + 1), (1, width - probe_w + 1))
    ]
    shared = dask.delayed(probe_f, pure=True), dask.delayed(options, pure=True)
    block = dask.delayed(_block_scores, pure=True)
    parts = [
        [
            da.from_delayed(
                block(
                    values[r0 : r1 + probe_h - 1, c0 : c1 + probe_w - 1],
                    None if known is None else known[r0 : r1 + probe_h - 1, c0 : c1 + probe_w - 1],
                    *shared,
                ),
                shape=(r1 - r0, c1 - c0),
                dtype=np.float64,
            )
            for c0, c1 in spans[1]
        ]
        for r0, r1 in spans[0]
    ]
    return da.block(parts)


def _spans(chunks: tuple[int, ...], count: int) -> list[tuple[int, int]]:
    """The chunks' [start, stop) ranges clipped to the first ``count`` entries, none empty."""
    stops = np.minimum(np.cumsum(chunks), count)
    starts = np.concatenate(([0], stops[:-1]))
    return [(int(a), int(b)) for a, b in zip(starts, stops, strict=True) if b > a]


def _block_scores(
    scene: np.ndarray, scene_mask: np.ndarray | None, probe: FloatArray, options: dict[str, Any]
) -> FloatArray:
    """One block of a dask scene's map (:func:`_match_on_dask`); NaN where nothing is known."""
    try:
        return match_template(scene, probe, scene_mask=scene_mask, **options)
    except UnscoredError:
        shape = (scene.shape[0] - probe.shape[0] + 1, scene.shape[1] - probe.shape[1] + 1)
        return np.full(shape, np.nan)


def _method(name: str) -> _Method:
    try:
        return _METHODS[name]
    except KeyError:
        raise UsageError(
            f"unknown match method {name!r}; choose one of {', '.join(METHODS)}"
        ) from None


def _as_channels(image: ArrayLike, name: str, dtype: np.dtype = np.dtype(np.float64)) -> FloatArray:
    """``image`` as (H, W, C) in ``dtype`` (float64, or float32 for a float32 image on the
    fast path); a clear error for bad shapes and non-finite values."""
    array = np.asarray(image)
    if array.ndim not in (2, 3) or array.size == 0:
        raise UsageError(f"{name} must be a non-empty (H, W) or (H, W, C) image, got {array.shape}")
    if not (np.issubdtype(array.dtype, np.number) or array.dtype == np.bool_) or np.iscomplexobj(
        array
    ):
        raise UsageError(f"{name} must hold real numbers, got {array.dtype}")
    values = array.astype(dtype if array.dtype == dtype else np.float64, copy=False)
    # a finite sum proves every value finite (an inf or NaN anywhere makes it inf or NaN),
    # in one pass without a temporary; only a sum that overflowed needs the full check
    if not np.isfinite(values.sum()) and not np.isfinite(values).all():
        raise ConvfiltError(f"{name} holds NaN or infinite values")
    return values[..., np.newaxis] if values.ndim == 2 else values


def _in_range(scene: FloatArray, probe: FloatArray, spec: _Method) -> tuple[FloatArray, FloatArray]:
    """Scene and probe with magnitudes whose window sums of squares fit in float64.

    Beyond ~1e150 the squares overflow (every window then looks flat: a false exact match at
    (0, 0)). ncc is unchanged by scaling either image, so each is scaled by a power of two
    (exact) to magnitudes below 1; sqdiff and ccorr scores are in the data's own units, which
    float64 cannot hold then, so they are refused in one line.
    """
    count = probe.shape[0] * probe.shape[1] * probe.shape[2]
    high = np.sqrt(np.finfo(np.float64).max / count) / 64  # 2x for the mean shift, and margin
    result = []
    for name, image in (("scene", scene), ("probe", probe)):
        largest = float(np.abs(image).max())
        if largest <= high:
            result.append(image)
        elif spec.scale_free:
            result.append(np.ldexp(image, -int(np.frexp(largest)[1])).astype(image.dtype))
        else:
            raise ConvfiltError(
                f"{name} values reach {largest:.3g}: the window sums of squares overflow "
                f"float64 beyond {high:.0e}; scale the images, or use method ncc (scale-free)",
                parameters=["method"],
            )
    return result[0], result[1]


def _scene_and_weights(
    scene: ArrayLike, scene_mask: ArrayLike | None
) -> tuple[np.ndarray, FloatArray | None]:
    """The scene and the weights of its known pixels (None when every pixel is fully known).

    NaN in any channel of a float scene makes the pixel unknown (weight 0, value 0 here);
    ``scene_mask`` multiplies in. Infinite values stay an error (``_as_channels``).
    """
    array = np.asarray(scene)
    floating = np.issubdtype(array.dtype, np.floating)
    unknown = None
    if floating and array.ndim in (2, 3) and not np.isfinite(array.sum()):
        unknown = np.isnan(array)
        if array.ndim == 3:
            unknown = unknown.any(axis=2)
        if not unknown.any():
            unknown = None
    if unknown is None and scene_mask is None:
        return array, None
    weights = np.ones(array.shape[:2]) if scene_mask is None else _unit_mask(scene_mask, array)
    if unknown is not None:
        weights[unknown] = 0.0
        array = np.where(unknown[..., np.newaxis] if array.ndim == 3 else unknown, 0.0, array)
    values = _as_channels(array, "scene")
    if not weights.any():
        raise UnscoredError("scene: every pixel is unknown (NaN or masked)")
    return values, None if (weights == 1.0).all() else weights


def _unit_mask(scene_mask: ArrayLike, scene: np.ndarray) -> FloatArray:
    """``scene_mask`` as float64 weights the scene's (H, W) size (a copy)."""
    weights = np.array(scene_mask, dtype=np.float64)
    if weights.shape != scene.shape[:2]:
        shape = "x".join(map(str, weights.shape[::-1]))
        raise UsageError(
            f"scene_mask of size {shape} does not fit the scene "
            f"({scene.shape[1]}x{scene.shape[0]})",
            parameters=["scene_mask"],
        )
    if not np.isfinite(weights).all() or (weights < 0).any():
        raise UsageError(
            "scene_mask weights must be finite and not negative", parameters=["scene_mask"]
        )
    return weights


def masked_ncc(
    scene: FloatArray,
    scene_weights: FloatArray | None,
    probes: Sequence[tuple[FloatArray, FloatArray]],
    *,
    min_overlap: float = 0.5,
    strategy: str = "auto",
    on_plan: Callable[[engine.Plan], None] | None = None,
    dtype: np.dtype | type = np.float64,
) -> list[FloatArray]:
    """Masked NCC maps of several probes of one shape over one scene, weights on both sides
    (:func:`masked_scores` with method ``ncc``; the searches' scorer)."""
    return masked_scores(
        scene,
        scene_weights,
        probes,
        method=names.NCC,
        min_overlap=min_overlap,
        strategy=strategy,
        on_plan=on_plan,
        dtype=dtype,
    )


def masked_scores(
    scene: FloatArray,
    scene_weights: FloatArray | None,
    probes: Sequence[tuple[FloatArray, FloatArray]],
    *,
    method: str = names.NCC,
    min_overlap: float = 0.5,
    strategy: str = "auto",
    on_plan: Callable[[engine.Plan], None] | None = None,
    dtype: np.dtype | type = np.float64,
) -> list[FloatArray]:
    """Masked score maps of several probes of one shape over one scene, weights on both sides.

    ``scene`` is (H, W, C) with finite values, ``scene_weights`` (H, W) or None (all 1);
    each probe is ((h, w, C) values, (h, w) weights). Each window is scored over its overlap
    with weights ``W = scene_weights · probe weights`` (see :data:`_MASKED`): ncc is the
    weighted Pearson correlation over all channels (Padfield [2]); sqdiff and ccorr are the
    weighted sums of (scene - probe)² and scene · probe, times ``total / overlap`` (the
    probe's whole weight over the window's ``sum W``), so that a window with unknown pixels
    is compared with the others as a mean over what is known, and a fully known window
    scores what the unmasked method gives. Every sum is an ``engine.correlate_valid``
    (each scene image's transform shared by every probe). Windows whose overlap is below
    ``min_overlap`` of the probe's weight score NaN. ``dtype`` float32 halves the
    transforms' cost (coarse searches).
    """
    spec, accumulate = _method(method), _MASKED[method]
    if not 0.0 < min_overlap <= 1.0:
        raise UsageError(
            f"min_overlap must be in (0, 1], got {min_overlap}", parameters=["min_overlap"]
        )
    weights = [w for _, w in probes]
    totals = [float(w.sum()) for w in weights]
    if min(totals) <= 0.0:
        raise ConvfiltError("mask excludes every probe pixel")
    roads: list[str] = []

    def correlate(image: FloatArray, kernels: list[FloatArray]) -> list[FloatArray]:
        def seen(plan: engine.Plan) -> None:
            roads.append(plan.strategy)
            if on_plan is not None:
                on_plan(plan)

        if not kernels:
            return []
        # float32 (coarse searches) stays float32 through the sums too
        out = engine.correlate_valid(image, kernels, strategy=strategy, on_plan=seen, dtype=dtype)
        return cast(list[FloatArray], out)

    overlap = None if scene_weights is None else correlate(scene_weights, weights)
    sums = accumulate(totals, overlap, float(np.finfo(dtype).eps))
    for c in range(scene.shape[2]):
        plane = _masked_plane(scene[..., c], scene_weights)
        channel = [(v[..., c], w) for v, w in probes]
        for i, sums_i in enumerate(
            _channel_sums(plane, scene_weights, channel, spec, sums.needs, correlate)
        ):
            sums.add(i, sums_i)
    return sums.scores(min_overlap, probes[0][1].size, any(r in _TRANSFORMS for r in roads))


def _channel_sums(
    plane: tuple[FloatArray, FloatArray, float],
    scene_weights: FloatArray | None,
    probes: list[tuple[FloatArray, FloatArray]],
    spec: _Method,
    need: frozenset[str],
    correlate: Callable[[FloatArray, list[FloatArray]], list[FloatArray]],
) -> list[_ChannelSums]:
    """One channel's window sums for each probe (``plane`` from :func:`_masked_plane`,
    each probe a (values, weights) plane): only the sums ``need`` names, beyond the cross
    term, each scene image correlated once with every probe's kernel."""
    deviation, first, scene_mean = plane
    weights = [w for _, w in probes]
    shifted = [v - spec.probe_offset(v, w, scene_mean) for v, w in probes]
    kernels = [b * w for b, w in zip(shifted, weights, strict=True)]
    seconds = [k * b for k, b in zip(kernels, shifted, strict=True)]
    scene_side = correlate(first, kernels + (weights if "scene_sum" in need else []))
    probe_side = (kernels if "probe_sum" in need else []) + (
        seconds if "probe_squares" in need else []
    )
    if scene_weights is None:  # every window holds the whole probe
        probe_side = [np.array(float(k.sum())) for k in probe_side]
    else:
        probe_side = correlate(scene_weights, probe_side)
    squares = correlate(first * deviation, weights) if "squares" in need else []
    largest = float(np.max(np.abs(deviation))) ** 2
    count = len(probes)
    return [
        _ChannelSums(
            cross=scene_side[i],
            scene_mean=scene_mean,
            scene_sum=_nth(scene_side[count:], i),
            squares=_nth(squares, i),
            probe_sum=_nth(probe_side[:count], i) if "probe_sum" in need else None,
            probe_squares=_nth(probe_side[-count:], i) if "probe_squares" in need else None,
            full_squares=float(seconds[i].sum()),
            largest=largest,
        )
        for i in range(count)
    ]


def _nth(values: list[FloatArray], i: int) -> FloatArray | None:
    return values[i] if values else None


def _masked_plane(
    plane: FloatArray, scene_weights: FloatArray | None
) -> tuple[FloatArray, FloatArray, float]:
    """``plane`` less its (weighted) mean, unknown pixels 0; that times the weights; the mean."""
    if scene_weights is None:
        mean = float(plane.mean())
        deviation = plane - mean
        return deviation, deviation, mean
    mean = float(np.sum(plane * scene_weights) / scene_weights.sum())
    deviation = plane - mean
    deviation *= scene_weights > 0
    return deviation, deviation * scene_weights, mean


@dataclass(frozen=True)
class _ChannelSums:
    """One channel's window sums for one probe, with ``W`` the window's weights, ``a`` the
    scene less its mean (``scene_mean``) and ``b`` the probe less the method's offset:
    ``cross`` = sum W·a·b, ``scene_sum`` = sum W·a, ``squares`` = sum W·a², ``probe_sum`` =
    sum W·b, ``probe_squares`` = sum W·b², each an array over the windows (0-d: the whole
    probe, when every scene pixel is known), None when the method needs none. What their
    rounding is relative to: ``full_squares`` = the probe's sum w·b², ``largest`` = max a²."""

    cross: FloatArray
    scene_mean: float
    scene_sum: FloatArray | None
    squares: FloatArray | None
    probe_sum: FloatArray | None
    probe_squares: FloatArray | None
    full_squares: float
    largest: float


class _MaskedSums(ABC):
    """A masked method's window sums of each probe, accumulated over channels: ``needs``
    names the :class:`_ChannelSums` fields it reads (beyond ``cross``), ``add`` takes one
    channel, ``scores`` combines them; windows below the overlap score NaN."""

    needs: frozenset[str] = frozenset()

    def __init__(self, totals: list[float], overlap: list[FloatArray] | None, eps: float):
        self.totals, self.overlap, self.eps = totals, overlap, eps
        self.sums: list[FloatArray] = [np.zeros(())] * len(totals)

    @abstractmethod
    def add(self, i: int, channel: _ChannelSums) -> None:
        """Add probe ``i``'s sums of one channel."""

    @abstractmethod
    def combine(self, i: int, total: float, terms: int, transforms: bool) -> FloatArray:
        """Probe ``i``'s scores from its sums (``terms``: the probe's pixel count;
        ``transforms``: whether any sum went through a transform)."""

    def scores(self, min_overlap: float, terms: int, transforms: bool) -> list[FloatArray]:
        """Each probe's map, NaN where the known overlap is below ``min_overlap``."""
        out = []
        for i, total in enumerate(self.totals):
            with np.errstate(divide="ignore", invalid="ignore"):  # no overlap: NaN below
                score = np.array(self.combine(i, total, terms, transforms), dtype=np.float64)
            score = np.broadcast_to(score, self.sums[i].shape).copy()
            if self.overlap is not None:
                # the overlap is summed through the engine: allow its rounding
                low = self.overlap[i] < min_overlap * total - 64 * self.eps * total
                score[low | (self.overlap[i] <= 0.0)] = np.nan
            out.append(score)
        return out

    def _per_total(self, i: int, total: float) -> FloatArray | float:
        """total / overlap: sums over the known overlap scaled to the probe's whole weight."""
        return 1.0 if self.overlap is None else total / self.overlap[i]


class _MaskedNcc(_MaskedSums):
    """ncc: cov / sqrt(var·var) per window, flat windows (or a flat overlap of the probe) 0
    within the rounding of their sums (``_FLAT_ULPS``), clipped to [-1, 1]."""

    needs = frozenset({"scene_sum", "squares", "probe_sum", "probe_squares"})

    def __init__(self, totals: list[float], overlap: list[FloatArray] | None, eps: float):
        super().__init__(totals, overlap, eps)
        count = len(totals)
        self.var_scene: list[FloatArray] = [np.zeros(())] * count
        self.var_probe: list[FloatArray] = [np.zeros(())] * count
        self.raw_scene: list[FloatArray] = [np.zeros(())] * count
        self.raw_probe: list[FloatArray] = [np.zeros(())] * count
        self.full_probe = [0.0] * count
        self.largest = [0.0] * count

    def add(self, i: int, channel: _ChannelSums) -> None:
        assert channel.scene_sum is not None and channel.squares is not None
        assert channel.probe_sum is not None and channel.probe_squares is not None
        weight = self.totals[i] if self.overlap is None else self.overlap[i]
        with np.errstate(divide="ignore", invalid="ignore"):  # no overlap: NaN, dropped later
            scene_mean = channel.scene_sum / weight
            probe_sum = channel.probe_sum
            self.sums[i] = self.sums[i] + (channel.cross - scene_mean * probe_sum)
            self.var_scene[i] = self.var_scene[i] + (
                channel.squares - channel.scene_sum * scene_mean
            )
            self.var_probe[i] = self.var_probe[i] + (
                channel.probe_squares - probe_sum * probe_sum / weight
            )
        self.raw_scene[i] = self.raw_scene[i] + channel.squares
        self.raw_probe[i] = self.raw_probe[i] + channel.probe_squares
        self.full_probe[i] += channel.full_squares
        self.largest[i] += channel.largest

    def combine(self, i: int, total: float, terms: int, transforms: bool) -> FloatArray:
        var_scene, var_probe = self.var_scene[i], self.var_probe[i]
        raw_scene, raw_probe = self.raw_scene[i], self.raw_probe[i]
        if transforms:  # a transform rounds relative to its whole input
            raw_scene = np.maximum(raw_scene, total * self.largest[i])
            raw_probe = np.maximum(raw_probe, self.full_probe[i])
        bound = _FLAT_ULPS * terms * self.eps
        flat = (var_scene <= bound * raw_scene) | (var_probe <= bound * raw_probe)
        score = self.sums[i] / (np.sqrt(np.abs(var_scene)) * np.sqrt(np.abs(var_probe)))
        score = np.where(flat, 0.0, score)
        return np.clip(score, -1.0, 1.0)


class _MaskedSqdiff(_MaskedSums):
    """sqdiff: sum W·(a - b)² = sum W·a² - 2·sum W·a·b + sum W·b² (the probe offset by the
    scene's mean, as the scene), never below 0, times total / overlap."""

    needs = frozenset({"squares", "probe_squares"})

    def add(self, i: int, channel: _ChannelSums) -> None:
        assert channel.squares is not None and channel.probe_squares is not None
        self.sums[i] = self.sums[i] + (
            channel.squares - 2.0 * channel.cross + channel.probe_squares
        )

    def combine(self, i: int, total: float, terms: int, transforms: bool) -> FloatArray:
        return np.maximum(self.sums[i], 0.0) * self._per_total(i, total)


class _MaskedCcorr(_MaskedSums):
    """ccorr: sum W·scene·probe = sum W·a·probe + scene_mean·sum W·probe (the probe as it
    is), times total / overlap."""

    needs = frozenset({"probe_sum"})

    def add(self, i: int, channel: _ChannelSums) -> None:
        assert channel.probe_sum is not None
        self.sums[i] = self.sums[i] + (channel.cross + channel.scene_mean * channel.probe_sum)

    def combine(self, i: int, total: float, terms: int, transforms: bool) -> FloatArray:
        return self.sums[i] * self._per_total(i, total)


# How each method scores a window over its known overlap (``masked_scores``).
_MASKED: dict[str, type[_MaskedSums]] = {
    names.NCC: _MaskedNcc,
    names.SQDIFF: _MaskedSqdiff,
    names.CCORR: _MaskedCcorr,
}


def _check_shapes(scene: FloatArray, probe: FloatArray) -> None:
    if scene.shape[2] != probe.shape[2]:
        raise UsageError(
            f"scene has {scene.shape[2]} channel(s) but probe has {probe.shape[2]}; "
            "convert both to grey (luminance) or to the same colour mode",
            parameters=["luminance"],
        )
    (height, width), (probe_h, probe_w) = scene.shape[:2], probe.shape[:2]
    if probe_h > height or probe_w > width:
        raise UsageError(f"probe ({probe_w}x{probe_h}) is larger than the scene ({width}x{height})")


def _as_weights(mask: ArrayLike | None, probe_hw: tuple[int, ...]) -> FloatArray | None:
    """The mask as float64 weights, or None when every weight is 1 (the unmasked case)."""
    if mask is None:
        return None
    weights = np.asarray(mask)
    if weights.shape != probe_hw:
        shape = "x".join(map(str, weights.shape[::-1]))
        raise UsageError(
            f"mask of size {shape} does not fit the probe ({probe_hw[1]}x{probe_hw[0]})"
        )
    weights = weights.astype(np.float64)
    if not np.isfinite(weights).all() or (weights < 0).any():
        raise UsageError("mask weights must be finite and not negative")
    if not weights.any():
        raise ConvfiltError("mask excludes every probe pixel")
    return None if (weights == 1.0).all() else weights


@dataclass
class _Sums:
    """The window terms of one method, summed over the channels as they come (``_terms``)."""

    weights: FloatArray
    uniform: bool  # no mask: every weight is 1
    spec: _Method
    strategy: str
    work: np.dtype
    on_plan: Callable[[engine.Plan], None] | None
    cross: NDArray[np.floating] | None = None
    energy: NDArray[np.floating] | None = None
    probe_energy: float = 0.0
    probe_dot_mean: float = 0.0
    cross_error: float = 0.0
    means: list[float] = field(default_factory=list)
    offsets: list[float] = field(default_factory=list)
    roads: list[str] = field(default_factory=list)

    @property
    def weight(self) -> float:
        return float(self.weights.sum())

    def seen(self, plan: engine.Plan) -> None:
        """Note each road the engine takes (and pass the plan on)."""
        self.roads.append(plan.strategy)
        if self.on_plan is not None:
            self.on_plan(plan)

    def add_channel(self, plane: FloatArray, probe: FloatArray) -> None:
        """Add one channel's cross term, probe energy and window energy."""
        spec, w, work = self.spec, self.weights, self.work
        probe_h, probe_w = probe.shape
        scene_mean = _centre(plane)
        centred = np.subtract(plane, scene_mean, dtype=work)
        offset = spec.probe_offset(probe, w, scene_mean)
        shifted = probe - offset
        if spec.energy == "centred":
            # ncc's cross term relies on sum(w·shifted) = 0, but a mean on a pedestal rounds
            # (60000.499... is not a float): the sum is off by n·ulp(mean)/2, multiplied by
            # each window's sum of deviations. A second pass on the small values removes it.
            shifted -= float(np.sum(w * shifted)) / self.weight
        masked_mean = spec.energy == "centred" and not self.uniform
        kernels = [w * shifted, w] if masked_mean else [w * shifted]
        running, side = None, None
        transforms: AbstractContextManager[None] = nullcontext()
        if self.uniform and spec.energy != "none":
            # the window sums run on one core (after the probe's spectrum, which the engine
            # puts ahead of them there) while the transforms run on the others, and on all
            # once the sums are done; the caller then helps with any bands of the sums left
            own_mean = spec.energy == "centred"
            running = _WindowEnergy(plane, scene_mean, probe_h, probe_w, own_mean=own_mean)
            side = pools.SideWork(running.work, _pool)
            cap = cost.available_cores() - 1
            transforms = cost.transform_threads(cap, until=side.finished)
        largest = max(float(np.max(centred)), -float(np.min(centred)))
        known = largest if np.isfinite(largest) else None  # inf: float32 overflowed, see above
        with transforms:
            correlations = engine.correlate_valid(
                centred, kernels, strategy=self.strategy, on_plan=self.seen, dtype=work,
                largest=known, beside=side,
            )  # fmt: skip
        self.means.append(scene_mean)
        self.offsets.append(offset)
        self.cross = _accumulate(self.cross, correlations[0])
        own_energy = np.array(float(np.sum(w * shifted**2)))
        if spec.energy == "centred":
            _zero_flat(own_energy, np.array(float(np.sum(w * probe**2))), probe_h * probe_w)
        self.probe_energy += float(own_energy)
        self.probe_dot_mean += scene_mean * float(np.sum(w * shifted))
        self.cross_error += float(np.finfo(work).eps) * largest * float(np.sum(np.abs(w * shifted)))
        if spec.energy == "none":
            return
        window: NDArray[np.floating]
        if running is not None:
            window = running.result(side)
        else:
            sum1 = correlations[1] if masked_mean else None
            window = self._window(centred, sum1)
        self.energy = _accumulate(self.energy, window)

    def _window(
        self, centred: NDArray[np.floating], sum1: NDArray[np.floating] | None
    ) -> NDArray[np.floating]:
        """Each window's weighted energy through the engine (a mask: minus its mean's share)."""
        w, weight, terms = self.weights, self.weight, self.weights.size
        window = engine.correlate_valid(centred**2, [w], strategy=self.strategy, on_plan=self.seen)[
            0
        ]
        if sum1 is None:
            return window
        np.square(sum1, out=sum1)
        sum1 /= weight
        raw, window = window, np.subtract(window, sum1, out=sum1)
        if any(road in _TRANSFORMS for road in self.roads):
            # a transform rounds relative to its whole input, not to each window
            raw = np.maximum(raw, weight * float(np.max(centred**2)))
        _zero_flat(window, raw, terms)
        return window


def _terms(
    scene: FloatArray,
    probe: FloatArray,
    weights: FloatArray | None,
    spec: _Method,
    strategy: str,
    on_plan: Callable[[engine.Plan], None] | None,
    work: np.dtype,
) -> _Terms:
    """The window terms of ``spec`` summed over channels (see :class:`_Terms`)."""
    w = np.ones(probe.shape[:2]) if weights is None else weights
    sums = _Sums(w, weights is None, spec, strategy, work, on_plan)
    for c in range(scene.shape[2]):
        sums.add_channel(scene[..., c], probe[..., c])
    assert sums.cross is not None
    return _Terms(
        cross=sums.cross,
        energy=sums.energy,
        probe_energy=sums.probe_energy,
        probe_dot_mean=sums.probe_dot_mean,
        weight=sums.weight,
        scene_means=tuple(sums.means),
        probe_offsets=tuple(sums.offsets),
        cross_error=sums.cross_error,
    )


def _centre(plane: NDArray[np.floating]) -> float:
    """The plane's mean, the value both images are shifted by: any value near the data keeps
    the precision, so a float32 plane's mean is summed in float32 (float64 only if that
    overflows), and is itself a float32, so ``plane - centre`` is exact near it."""
    mean = plane.mean()
    return float(mean) if np.isfinite(mean) else float(plane.mean(dtype=np.float64))


_SCORE_BAND = 2**17  # map entries per band of ``_ncc_map``: 1 MB of float64, in L2 (smaller
# bands mean more calls, each holding the GIL a while: docs/performance.md, §5)
_SURE = 2.0**-12  # windows whose score may be off by more than this are "unsure" (_ncc_map)


@dataclass(frozen=True)
class _Band:
    """What ``_ncc_map`` learns of one band: its best score less that window's error bound,
    its best score, and whether any window's error bound exceeds ``_SURE``."""

    lower: float
    best: float
    unsure: bool


def _ncc_map(
    terms: _Terms, *, cross_error: float | None = None
) -> tuple[FloatArray, NDArray[np.intp]]:
    """NCC scores (flat windows 0, clipped to [-1, 1]), band by band on every core; and,
    given the bound ``cross_error`` on the cross term's error (the float32 fast path), the
    flat indices of the placements that can be the best within their error.

    A window's score is off by up to ``cross_error / sqrt(E·Ep)``. The candidates are the
    windows whose score plus that bound reaches ``threshold``, the largest over the bands of
    the band's best score less its bound (at most the true largest lower bound, so no
    window that can be the best is missed). A band is visited again to list them only if
    its best score comes within ``_SURE`` of the threshold or some window's bound exceeds
    ``_SURE``: elsewhere no score plus its bound can reach it. Without ``cross_error`` no
    candidates are listed.
    """
    scores = np.empty(terms.cross.shape)
    none = np.empty(0, dtype=np.intp)
    if terms.probe_energy <= _FLAT_FLOOR or scores.size == 0:  # a flat probe: all exactly 0
        scores[...] = 0.0
        return scores, none
    per_row = max(1, scores[:1].size)
    step = max(1, _SCORE_BAND // per_row)
    bands = [slice(start, start + step) for start in range(0, len(scores), step)]
    saving = _COMPILED_SCORE_SAVING * scores.size
    fill = _compiled_band if _rent_scores(terms.cross.dtype, saving) else _numpy_band
    root = float(np.sqrt(terms.probe_energy))

    energies = terms.energy
    assert energies is not None

    def score(rows: slice) -> _Band | None:
        energy, band = energies[rows], scores[rows]
        fill(terms.cross[rows], energy, root, band)
        if cross_error is None:
            return None
        best = int(np.argmax(band))
        best_score = float(band.flat[best])
        lower = best_score - cross_error / _denominator(float(energy.flat[best]), root)
        return _Band(lower, best_score, _least_denominator(energy, root) * _SURE < cross_error)

    seen = _pool.map(score, bands) if len(bands) > 1 else [score(bands[0])]
    found = [band for band in seen if band is not None]
    if cross_error is None:
        return scores, none
    threshold = max(band.lower for band in found)  # finite: float64 energies of a float32
    # scene and a cross term below _FLOAT32_CROSS_LIMIT (match_template checks) stay finite
    candidates = [none]
    for rows, band in zip(bands, found, strict=True):
        if band.unsure or band.best + _SURE >= threshold:
            denominator, _ = _ncc_denominator(energies[rows], root)
            error = np.divide(cross_error, denominator, out=denominator)
            hits = np.flatnonzero(np.add(scores[rows], error, out=error) >= threshold)
            candidates.append(rows.start * per_row + hits)
    return scores, np.concatenate(candidates)


def _numpy_band(
    cross: NDArray[np.floating], energy: NDArray[np.floating], root: float, band: FloatArray
) -> None:
    """NCC scores of one band of windows into ``band`` by numpy passes (see ``_ncc_map``;
    ``root`` = sqrt(Ep))."""
    denominator, flat = _ncc_denominator(energy, root)
    np.divide(cross, denominator, out=band)
    if flat is not None:
        np.putmask(band, flat, 0.0)  # not -0.0
    np.clip(band, -1.0, 1.0, out=band)


def _compiled_band(
    cross: NDArray[np.floating], energy: NDArray[np.floating], root: float, band: FloatArray
) -> None:
    """``_numpy_band`` in one compiled pass: the same bits (``compiled.ncc_band``)."""
    compiled.ncc_band(cross, energy, root, _FLAT_FLOOR, band)


def _rent_scores(cross: np.dtype, saving: float) -> bool:
    """Whether the compiled score pass runs (``engine.rent_compiled_kernel``)."""
    return engine.rent_compiled_kernel(compiled.SCORES, cost.dtype_name(cross), saving)


def _denominator(energy: float, root: float) -> float:
    """One window's sqrt(E)·sqrt(Ep) (``root`` = sqrt(Ep)) as ``_ncc_denominator`` has it:
    +inf for a flat window."""
    return math.inf if energy <= _FLAT_FLOOR else float(np.sqrt(energy) * root)


def _least_denominator(energy: NDArray[np.floating], root: float) -> float:
    """The smallest of ``_ncc_denominator``'s entries, from the energies: the square root and
    the product are monotonic (so are their roundings), so the smallest energy that is not
    flat gives it; +inf if every window is flat, NaN if an energy is."""
    least = float(np.min(energy))
    if least <= _FLAT_FLOOR:
        least = float(np.min(energy, where=energy > _FLAT_FLOOR, initial=math.inf))
    return float(np.sqrt(least) * root)


def _ncc_denominator(
    energy: NDArray[np.floating], root: float
) -> tuple[FloatArray, NDArray[np.bool_] | None]:
    """sqrt(E·Ep) for the windows of ``energy`` (``root`` = sqrt(Ep)), +inf for flat ones (so
    their error bound is 0), and the flat windows' mask (None when there are none)."""
    denominator = np.sqrt(energy)  # sqrt(E)·sqrt(Ep): E·Ep could underflow (values ~1e-100)
    denominator *= root
    # the mask is skipped only when every energy is above the floor (a NaN among them hides
    # any flat window from ``min``: then it is made too)
    flat = None if float(np.min(energy)) > _FLAT_FLOOR else energy <= _FLAT_FLOOR
    if flat is not None:
        np.putmask(denominator, flat, np.inf)
    return denominator, flat


def _refine(
    scores: FloatArray,
    candidates: NDArray[np.intp],
    scene: FloatArray,
    probe: FloatArray,
    spec: _Method,
    terms: _Terms,
) -> None:
    """Recompute in float64, in place, the (unmasked) placements at flat indices
    ``candidates``: each window's cross term and centred energy summed directly, then scored
    by the method's own ``combine``."""
    if candidates.size == 0:
        return
    ys, xs = np.unravel_index(candidates, scores.shape)
    height, width = probe.shape[:2]
    shifted = probe - np.array(terms.probe_offsets)
    cross = np.empty(len(candidates))
    energy = np.empty(len(candidates))
    raw = np.empty(len(candidates))
    for i, (y, x) in enumerate(zip(ys, xs, strict=True)):
        window = scene[y : y + height, x : x + width] - np.array(terms.scene_means)
        sums = window.sum(axis=(0, 1))
        raw[i] = float(np.sum(window * window))
        energy[i] = raw[i] - float(np.sum(sums * sums)) / terms.weight
        cross[i] = float(np.sum(shifted * (window - sums / terms.weight)))
    _zero_flat(energy, raw, height * width)
    scores[ys, xs] = spec.combine(replace(terms, cross=cross, energy=energy))


# Threads for the window sums and the scores, one per core (numpy's loops release the GIL, so
# they run alongside the caller's transforms and each other).
_pool = pools.LazyPool("convfilt", cost.available_cores)


_TRANSFORMS = names.TRANSFORMS


def _flat_share(terms: int) -> float:
    """The share of S2 within which an energy of ``terms`` float64 values is flat (0)."""
    return _FLAT_ULPS * terms * _EPS


def _zero_flat(energy: NDArray[np.floating], raw: NDArray[np.floating], terms: int) -> None:
    """Set to exactly 0, in place, each energy ``E = S2 - S1²/n`` within its rounding error of
    0: ``E <= _FLAT_ULPS·n·eps·S2`` (``raw`` holds S2, ``terms`` is n); see ``_FLAT_ULPS``."""
    flat = np.less_equal(energy, np.multiply(raw, _flat_share(terms)))
    if flat.any():
        np.putmask(energy, flat, 0.0)


def _accumulate(
    total: NDArray[np.floating] | None, term: NDArray[np.floating]
) -> NDArray[np.floating]:
    """``total + term``, reusing ``total``; the first term is kept as it is (its own array)."""
    if total is None:
        return term
    total += term
    return total


_SLIDING_BAND_BYTES = 2**18  # bands of ``_sliding_sums``: about 256 KB, cache-resident
_ENERGY_BAND_BYTES = 2**22  # fewer rows per ``_WindowEnergy`` band when a row band of 64 rows
# would take more bytes per value array than this (never fewer than the window's height)


# Seconds the compiled score pass saves per window over the numpy bands (both on every core):
# what a match offers toward its one-time cost (docs/performance.md, §14; measured 0.6-1.9 ns,
# so a round figure at the low end, as for the energies: the rental should not pay early).
_COMPILED_SCORE_SAVING = 6e-10

# Seconds the compiled window energies save per window and power (sum of d, of d²) over the
# numpy loops: what a call offers toward the compiled road's one-time cost (docs/performance.md,
# §10, §14). A round figure at the low end of the measured range: the rental should not pay early.
_COMPILED_ENERGY_SAVING = 4e-9


class _WindowEnergy:
    """The window energies of one plane (see ``_window_energy``), computed band by band of
    output rows by every thread that calls ``work``: typically a pool worker from the start
    (a ``pools.SideWork`` the engine starts), then the caller too once its own share (the
    transforms) is done, so neither core idles.

    Each band's input rows are converted to float64 in its thread's scratch (in cache):
    ``_block_sums`` down the columns, then ``_sliding_sums`` along the rows. Or, once the
    compiled road's one-time cost is paid in this process (``engine.rent_compiled_kernel``),
    the same sums in the same order by ``compiled.window_energy_band`` (bands of the window's
    height, aligned), so the road taken changes no bit of the result.
    """

    def __init__(
        self, plane: NDArray[np.floating], centre: float, height: int, width: int, *, own_mean: bool
    ) -> None:
        self.plane, self.centre, self.height, self.width = plane, centre, height, width
        self.powers = 2 if own_mean else 1
        rows_in, cols = plane.shape
        out_rows = rows_in - height + 1
        self.energy = np.empty((out_rows, cols - width + 1))
        saving = _COMPILED_ENERGY_SAVING * self.energy.size * self.powers
        self.compiled = engine.rent_compiled_kernel(compiled.ENERGY, plane.dtype.name, saving)
        if self.compiled:
            self.plane = np.ascontiguousarray(plane)  # a channel of a colour scene is strided
            self.band = height
        else:
            # up to 64 output rows per band (fewer for very wide planes), or the window's
            # height: the band's height - 1 extra input rows cost less than a working set out
            # of L2 (docs/performance.md, §5). Whole blocks of the window's height, as the
            # compiled kernel's bands, so both roads add the same values in the same order.
            row_bytes = 8 * self.powers * cols
            rows = min(64, _ENERGY_BAND_BYTES // row_bytes)
            self.band = min(out_rows, max(height, rows // height * height))
        self._starts = iter(range(0, out_rows, self.band))
        self._lock = threading.Lock()

    def result(self, side: pools.SideWork | None = None) -> FloatArray:
        """The energies, once the caller has helped with whatever bands are left (and the
        ``side`` work calling ``work`` on a pool thread, if any, is done)."""
        self.work()
        if side is not None:
            side.wait()
        return self.energy

    def work(self) -> None:
        """Compute bands until none is left."""
        if self.compiled:
            self._work_compiled()
            return
        height, powers = self.height, self.powers
        chunk = np.empty((self.band + height - 1, powers, self.plane.shape[1]))
        prefix, suffix = np.empty_like(chunk), np.empty_like(chunk)
        while (start := self._next_band()) is not None:
            rows = min(self.band, len(self.energy) - start)
            values = chunk[: rows + height - 1]
            inputs = self.plane[start : start + rows + height - 1]
            # in float64 (a float32 plane minus a Python float would round in float32)
            np.subtract(inputs, self.centre, out=values[:, 0], dtype=np.float64)
            np.square(values[:, 0], out=values[:, powers - 1])
            columns = _block_sums(values, height, prefix[: len(values)], suffix[: len(values)])
            sums = _sliding_sums(columns, self.width)
            target = self.energy[start : start + rows]
            if powers == 2:
                np.square(sums[:, 0], out=target)
                target *= -1.0 / (height * self.width)
                target += sums[:, 1]
                _zero_flat(target, sums[:, 1], height * self.width)
            else:
                np.copyto(target, sums[:, 0])

    def _work_compiled(self) -> None:
        """``work`` by the compiled kernel, bands of the window's height."""
        window, own_mean = (self.height, self.width), self.powers == 2
        flat = _flat_share(self.height * self.width)  # as ``_zero_flat``
        while (start := self._next_band()) is not None:
            compiled.window_energy_band(
                self.plane, self.centre, window, own_mean, flat, start, self.energy
            )

    def _next_band(self) -> int | None:
        with self._lock:
            return next(self._starts, None)


def _window_energy(
    plane: NDArray[np.floating], centre: float, height: int, width: int, *, own_mean: bool
) -> FloatArray:
    """Per height x width window of ``d = plane - centre``: sum(d²), or, with ``own_mean``,
    the energy about the window's own mean, sum(d²) - sum(d)²/(h·w), flat windows set to
    exactly 0 (``_zero_flat``); float64, valid placements.

    Both passes (``_block_sums``, ``_sliding_sums``) add only the window's own values, so each
    window's rounding error is relative to that window's own sum of squares, whatever the rest
    of the scene holds (a running sum down a whole column would carry the error of every value
    above the window, such as one hot pixel's).
    """
    return _WindowEnergy(plane, centre, height, width, own_mean=own_mean).result()


def _block_sums(
    values: FloatArray, height: int, prefix: FloatArray, suffix: FloatArray
) -> FloatArray:
    """Sums of every ``height`` consecutive entries along axis 0 (valid placements), in
    ``suffix[: len(values) - height + 1]``; ``prefix`` and ``suffix`` are scratch the shape
    of ``values``.

    Van Herk / Gil-Werman blocks: axis 0 is cut into blocks of ``height``; ``prefix`` runs
    forward from each block's start, ``suffix`` backward from its end, and the window from r
    is ``suffix[r] + prefix[r + height - 1]`` (``suffix[r]`` alone when r starts a block:
    ``prefix`` is zeroed at block ends). Three adds per entry whatever ``height``, each one
    over whole rows; and every partial sum holds only entries of the window it serves, so
    its rounding is relative to them alone (unlike a difference of running totals).
    """
    length = len(values)  # at least height
    whole = length // height * height
    blocks = [(0, whole, height)]
    if whole < length:  # the last, partial block: only its prefix is used
        blocks.append((whole, length, length - whole))
    for start, stop, size in blocks:
        entries = values[start:stop].reshape(-1, size, *values.shape[1:])
        running = prefix[start:stop].reshape(entries.shape)
        np.copyto(running[:, 0], entries[:, 0])
        for k in range(1, size):
            np.add(running[:, k - 1], entries[:, k], out=running[:, k])
    entries = values[:whole].reshape(-1, height, *values.shape[1:])
    running = suffix[:whole].reshape(entries.shape)
    np.copyto(running[:, -1], entries[:, -1])
    for k in range(height - 2, -1, -1):
        np.add(running[:, k + 1], entries[:, k], out=running[:, k])
    prefix[height - 1 : whole : height] = 0.0
    sums = suffix[: length - height + 1]
    sums += prefix[height - 1 :]
    return sums


def _sliding_sums(values: FloatArray, width: int) -> FloatArray:
    """Sums of every ``width`` consecutive entries along the last axis (valid placements).

    By doubling: level k holds sums of 2**k neighbours (one add from level k-1), and a window
    is the sum of the levels of the binary digits of ``width``: about 1.5·log2(width)
    vectorised adds per entry, band by band (of the first axis) in cache. Along the rows
    ``_block_sums``' running sums would step across the contiguous axis, one strided entry
    per block at a time (several times slower, as was a cumulative sum along the row, whose
    adds form one dependency chain: docs/performance.md, §5); and every window is a pairwise sum of
    its own entries, so its rounding is relative to them alone.
    """
    count = values.shape[-1] - width + 1
    out = np.empty((*values.shape[:-1], count))
    band = max(1, _SLIDING_BAND_BYTES // max(1, values[0].nbytes))
    for start in range(0, len(values), band):
        level, target = values[start : start + band], out[start : start + band]
        span, offset, digits = 1, 0, width
        first: FloatArray | None = None  # the first level's piece, added when a second comes
        summed = False
        while True:
            if digits & 1:
                piece = level[..., offset : offset + count]
                if summed:
                    target += piece
                elif first is None:
                    first = piece
                else:
                    np.add(first, piece, out=target, dtype=target.dtype)  # float64
                    summed = True
                offset += span
            digits >>= 1
            if not digits:
                break
            if digits == 1 and first is None:  # the next level is the window: write it there
                np.add(level[..., :-span], level[..., span:], out=target)
                summed = True
                break
            level = level[..., :-span] + level[..., span:]
            span *= 2
        if not summed:  # a single level, held as a view of the input: copied out
            assert first is not None
            np.copyto(target, first)
    return out


# ------------------------------------------------------------------------------------------
# peaks


def find_matches(
    scores: ArrayLike,
    *,
    probe_shape: Sequence[int],
    method: str = names.NCC,
    top: int = 1,
    min_score: float | None = None,
    min_distance: int | None = None,
) -> list[Match]:
    """The best ``top`` matches in a score map, best first, one per object.

    Parameters
    ----------
    scores : array_like
        A score map from :func:`match_template`.
    probe_shape : sequence of int
        The probe's shape, (h, w, ...): the size of every match's window.
    method : str
        The method that made ``scores``; says whether higher or lower is better.
    top : int
        At most this many matches.
    min_score : float, optional
        The score a match must reach: at least this, or at most for lower-is-better methods.
    min_distance : int, optional
        Non-maximum suppression: a peak closer than this (in x and in y) to a better match is
        dropped. Default: half the probe's size on each axis, rounded up ((h + 1) // 2 and
        (w + 1) // 2: 3 for a probe of 5), at least 1. 1 keeps every local peak.

    Returns
    -------
    list of Match
        Best first; empty when no score reaches ``min_score``.

    Raises
    ------
    UsageError
        ``top`` or ``min_distance`` below 1, an unknown method, a map that is not 2-D.

    Notes
    -----
    Candidates are the local maxima (3x3, plateaus included) of the oriented map; the best
    one is taken and its neighbours within the distance suppressed, greedily. The subpixel
    corner comes from a parabola through the peak and its two neighbours along each axis,
    clamped to half a pixel; at the map's border that axis keeps the integer position.

    Examples
    --------
    >>> import numpy as np
    >>> from convfilt import find_matches, match_template
    >>> scene = np.random.default_rng(0).random((40, 50))
    >>> best = find_matches(match_template(scene, scene[10:20, 30:45]), probe_shape=(10, 15))
    >>> best[0].x, best[0].y, best[0].width, best[0].height, round(best[0].score, 6)
    (30, 10, 15, 10, 1.0)
    """
    check_peak_options(top=top, min_distance=min_distance, min_score=min_score)
    sign = 1.0 if _method(method).higher_is_better else -1.0
    if tiles.is_dask(scores):
        spec = (top, min_score, min_distance)
        return _matches_on_dask(scores, tuple(probe_shape), sign, *spec)
    values = np.asarray(scores, dtype=np.float64)
    if values.ndim != 2 or values.size == 0:
        raise UsageError(f"scores must be a non-empty 2-D map, got shape {values.shape}")
    probe_h, probe_w = (int(n) for n in probe_shape[:2])
    reach_y, reach_x = suppression_reach((probe_h, probe_w), min_distance)
    oriented = sign * values
    if not np.isfinite(oriented).all():  # NaN: windows without a score, never a match
        oriented = np.where(np.isnan(oriented), -np.inf, oriented)
    ys, xs = np.nonzero(_local_maxima(oriented) & np.isfinite(oriented))
    candidates = oriented[ys, xs]
    if min_score is not None:
        keep = candidates >= sign * min_score
        ys, xs, candidates = ys[keep], xs[keep], candidates[keep]
    ys, xs = _suppress(ys, xs, candidates, top=top, reach=(reach_y, reach_x))
    x_subpixel = xs + _parabola_offsets(oriented, ys, xs, axis=1)
    y_subpixel = ys + _parabola_offsets(oriented, ys, xs, axis=0)
    return [
        Match(x=x, y=y, width=probe_w, height=probe_h, score=score, x_subpixel=sx, y_subpixel=sy)
        for x, y, score, sx, sy in zip(
            xs.tolist(),
            ys.tolist(),
            values[ys, xs].tolist(),
            x_subpixel.tolist(),
            y_subpixel.tolist(),
            strict=True,
        )
    ]


def suppression_reach(probe_shape: tuple[int, int], min_distance: int | None) -> tuple[int, int]:
    """How near (rows, columns) to a kept match :func:`find_matches` drops other peaks:
    ``min_distance`` both ways, else half the probe's height and width (at least 1)."""
    if min_distance is not None:
        return min_distance, min_distance
    return max(1, (probe_shape[0] + 1) // 2), max(1, (probe_shape[1] + 1) // 2)


def peaks_needed(top: int, reach: tuple[int, int]) -> int:
    """How many of a part's first local maxima, in the greedy suppression's own order (best,
    then row-major), hold every peak that the whole map's suppression keeps
    (:func:`find_matches` with ``top`` and ``reach``): each peak before a kept one is kept or
    within reach of one of the fewer than ``top`` kept before it, and a kept peak's box holds
    ``(2·reach_y - 1) x (2·reach_x - 1)`` places, so at most ``(top - 1)`` boxes' worth come
    first."""
    return (top - 1) * (2 * reach[0] - 1) * (2 * reach[1] - 1) + 1


def best_peaks(values: FloatArray, keep: int) -> NDArray[np.bool_]:
    """Which of ``values`` are among the best ``keep`` (ties with the last one included)."""
    if len(values) <= keep:
        return np.ones(len(values), dtype=bool)
    return values >= np.partition(values, -keep)[-keep]


def _matches_on_dask(
    scores: Any,
    probe_shape: tuple[int, ...],
    sign: float,
    top: int,
    min_score: float | None,
    min_distance: int | None,
) -> list[Match]:
    """:func:`find_matches` on a dask score map: one global suppression across chunk seams.

    Each chunk (with a one-score halo, so local maxima see their neighbours across seams)
    hands in its best :func:`peaks_needed` peaks (and ties), which hold every peak the whole
    map's greedy suppression keeps. So the result is the whole map's, computed chunk by
    chunk. Only the kept peaks' 3x3 neighbourhoods are read
    again, for their subpixel parabolas.
    """
    import dask
    import dask.array as da

    if scores.ndim != 2 or 0 in scores.shape:
        raise UsageError(f"scores must be a non-empty 2-D map, got shape {scores.shape}")
    probe_h, probe_w = (int(n) for n in probe_shape[:2])
    reach = suppression_reach((probe_h, probe_w), min_distance)
    oriented = sign * scores.astype(np.float64)
    haloed = da.overlap.overlap(oriented, depth=1, boundary=-np.inf)
    keep = peaks_needed(top, reach)
    floor = -np.inf if min_score is None else sign * min_score
    starts = [np.cumsum((0, *sizes[:-1])) for sizes in oriented.chunks]
    parts = [
        dask.delayed(_chunk_peaks)(block, starts[0][i], starts[1][j], keep, floor)
        for (i, j), block in np.ndenumerate(haloed.to_delayed())
    ]
    found = dask.compute(*parts)
    ys, xs, candidates = (np.concatenate([part[k] for part in found]) for k in range(3))
    order = np.lexsort((xs, ys))  # row-major, as the whole map's candidates (ties)
    ys, xs = _suppress(ys[order], xs[order], candidates[order], top=top, reach=reach)
    return [
        _dask_match(oriented, sign, y, x, probe_h, probe_w) for y, x in zip(ys, xs, strict=True)
    ]


def _chunk_peaks(
    haloed: FloatArray, y0: int, x0: int, keep: int, floor: float
) -> tuple[NDArray[np.intp], NDArray[np.intp], FloatArray]:
    """One chunk's best ``keep`` local maxima at or above ``floor`` (and ties), in map
    coordinates."""
    ys, xs = np.nonzero(_peaks_inside(haloed))
    values = haloed[ys + 1, xs + 1]
    above = values >= floor
    ys, xs, values = ys[above], xs[above], values[above]
    chosen = best_peaks(values, keep)
    return ys[chosen] + y0, xs[chosen] + x0, values[chosen]


def _dask_match(oriented: Any, sign: float, y: int, x: int, height: int, width: int) -> Match:
    """The match at (y, x) of an oriented dask map, its subpixel corner from its 3x3
    neighbourhood (clipped at the map's border, where the parabola keeps the integer)."""
    top, left = max(0, y - 1), max(0, x - 1)
    patch = np.asarray(oriented[top : y + 2, left : x + 2].compute())
    py, px = np.array([y - top]), np.array([x - left])
    return Match(
        x=int(x),
        y=int(y),
        width=width,
        height=height,
        score=float(sign * patch[py[0], px[0]]),
        x_subpixel=float(x + _parabola_offsets(patch, py, px, axis=1)[0]),
        y_subpixel=float(y + _parabola_offsets(patch, py, px, axis=0)[0]),
    )


def _suppress(
    ys: NDArray[np.intp],
    xs: NDArray[np.intp],
    candidates: FloatArray,
    *,
    top: int,
    reach: tuple[int, int],
) -> tuple[NDArray[np.intp], NDArray[np.intp]]:
    """Greedy non-maximum suppression: the best candidate is kept, every candidate closer than
    ``reach`` (in y and in x) to a kept one dropped, and so on, until ``top`` are kept; their
    rows and columns, best first.

    Candidates are visited best first (ties in row-major order), once each. A kept peak owns
    its cell of a grid of reach-sized cells, and two kept peaks never share one (they would
    be within reach), so a candidate is checked against the 3x3 cells around its own only:
    O(n log n) for n candidates, not O(n x top). With reach 1 nothing is suppressed.
    """
    order = np.argsort(-candidates, kind="stable")
    ys, xs = ys[order], xs[order]
    reach_y, reach_x = reach
    if reach == (1, 1):
        return ys[:top], xs[:top]
    owners: dict[tuple[int, int], tuple[int, int]] = {}
    kept: list[int] = []
    around = [(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1)]
    for index, (y, x) in enumerate(zip(ys.tolist(), xs.tolist(), strict=True)):
        cell_y, cell_x = y // reach_y, x // reach_x
        for dy, dx in around:
            owner = owners.get((cell_y + dy, cell_x + dx))
            if owner is not None and abs(owner[0] - y) < reach_y and abs(owner[1] - x) < reach_x:
                break
        else:
            owners[(cell_y, cell_x)] = (y, x)
            kept.append(index)
            if len(kept) == top:
                break
    return ys[kept], xs[kept]


def check_peak_options(
    *, top: int, min_distance: int | None, min_score: float | None = None
) -> None:
    """UsageError unless ``top`` >= 1, ``min_distance`` is None or >= 1 and ``min_score`` is
    None or a finite number (NaN would let no match through, and say so misleadingly)."""
    if min_score is not None and not np.isfinite(min_score):
        raise UsageError(
            f"min_score must be a finite number, got {min_score}", parameters=["min_score"]
        )
    if top < 1:
        raise UsageError(f"top must be at least 1, got {top}", parameters=["top"])
    if min_distance is not None and min_distance < 1:
        raise UsageError(
            f"min_distance must be at least 1, got {min_distance}", parameters=["min_distance"]
        )


def _local_maxima(values: FloatArray) -> NDArray[np.bool_]:
    """Pixels at least as large as their 8 neighbours (the border counts as -inf)."""
    return _peaks_inside(np.pad(values, 1, constant_values=-np.inf))


def _peaks_inside(padded: FloatArray) -> NDArray[np.bool_]:
    """Which pixels of ``padded[1:-1, 1:-1]`` are at least as large as their 8 neighbours."""
    height, width = padded.shape[0] - 2, padded.shape[1] - 2
    values = padded[1:-1, 1:-1]
    peaks = np.ones(values.shape, dtype=bool)
    for dy in (0, 1, 2):
        for dx in (0, 1, 2):
            if (dy, dx) != (1, 1):
                peaks &= values >= padded[dy : dy + height, dx : dx + width]
    return peaks


def _parabola_offsets(
    values: FloatArray, ys: NDArray[np.intp], xs: NDArray[np.intp], *, axis: int
) -> FloatArray:
    """For each peak (ys, xs): the vertex of the parabola through it and its two neighbours
    along ``axis``, relative to the peak, |.| <= 0.5; 0 at the map's border along that axis
    and where the three values do not curve down (flat, or a saddle)."""
    index = (ys, xs)[axis]
    inside = (index > 0) & (index < values.shape[axis] - 1)
    dy, dx = (1, 0) if axis == 0 else (0, 1)
    y, x = ys[inside], xs[inside]
    before, here, after = values[y - dy, x - dx], values[y, x], values[y + dy, x + dx]
    curvature = before - 2.0 * here + after
    offsets = np.zeros(ys.shape, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        # a neighbour without a score (-inf) makes no parabola either
        down = np.isfinite(curvature) & (curvature < 0.0)
        fitted = np.where(down, 0.5 * (before - after) / curvature, 0.0)
    offsets[inside] = np.clip(fitted, -0.5, 0.5)
    return offsets


def _parabola_offset(line: FloatArray, index: int) -> float:
    """``_parabola_offsets`` of one entry of a line (the searches' and tiles' peaks)."""
    one = np.array([index])
    return float(_parabola_offsets(line[np.newaxis, :], one * 0, one, axis=1)[0])


# ------------------------------------------------------------------------------------------
# inputs: alpha, masks and grey (pictures of the results are ``render``'s)


def split_alpha(pixels: np.ndarray, has_alpha: bool) -> tuple[np.ndarray, FloatArray | None]:
    """The colour channels and, if any, the alpha as weights in [0, 1] (integers by their range)."""
    if not has_alpha:
        return pixels, None
    colour = pixels[..., :-1]
    return (colour[..., 0] if colour.shape[-1] == 1 else colour), unit_weights(pixels[..., -1])


def unit_weights(values: np.ndarray) -> FloatArray:
    """Integer samples scaled by their type's maximum (255, 65535, ...); floats as they are."""
    if np.issubdtype(values.dtype, np.integer):
        return values.astype(np.float64) / float(np.iinfo(values.dtype).max)
    return values.astype(np.float64)


def mask_weights(pixels: np.ndarray, has_alpha: bool, *, name: str) -> FloatArray:
    """A mask image's weights: its alpha if it has one, else its grey levels, in [0, 1]."""
    colour, alpha = split_alpha(pixels, has_alpha)
    if alpha is not None:
        return alpha
    if colour.ndim != 2:
        raise UsageError(
            f"mask {name}: a mask must be a grey image or have an alpha channel",
            parameters=["mask"],
        )
    return unit_weights(colour)


def luminance(pixels: np.ndarray) -> FloatArray:
    """Rec. 601 luma of an RGB image (grey images pass through), in float64."""
    if pixels.ndim == 2 or pixels.shape[2] == 1:
        return pixels.reshape(pixels.shape[:2]).astype(np.float64)
    if pixels.shape[2] != 3:
        raise UsageError(f"cannot take the luminance of a {pixels.shape[2]}-channel image")
    return pixels.astype(np.float64) @ np.array(REC601)
