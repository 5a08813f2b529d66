"""Template matching under scale and rotation: coarse to fine over a scale x angle grid.

The scene holds the probe turned by ``angle`` (degrees, counter-clockwise as seen on screen,
where y runs down) and scaled by ``scale``. Each (scale, angle) is scored with masked NCC
(:func:`convfilt.matching.masked_ncc`): the turned probe's corners are masked, never filled.
Scoring the whole grid at full resolution would cost one masked match per grid point, so the
search goes coarse to fine:

1. a pyramid of 2x2 block means of the scene (and of its known-pixel weights) and the probe,
   down to the level where the smallest probe is still about 8 pixels across;
2. at that level, every ``stride``-th scale and angle of the grid scored over the whole scene
   (float32), the best score per placement kept, and the best placements taken as candidates;
3. each candidate refined level by level: its 3 x 3 neighbours in (scale, angle) at half the
   previous stride, scored on a small crop around its position; at full resolution, stride 1,
   until the best is the centre of its neighbourhood;
4. sub-step scale and angle from parabolas through the neighbours' scores, subpixel position
   from the score map; one non-maximum suppression over all candidates.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

from . import matching
from .errors import ConvfiltError, UsageError

FloatArray = NDArray[np.float64]

MIN_PROBE = 4  # pixels: scales that leave the probe smaller than this are skipped
_COARSE_PROBE = 8  # the coarsest level keeps the smallest probe at least this wide
_COARSE_MOTION = 3.0  # coarse grid: neighbouring steps move the probe's edge by this (pixels)
_RADIUS = 3  # refinement: placements within this many pixels of a candidate (each level)
_PRUNE = 0.2  # candidates this far below the best after one refinement step are dropped
_CLIMBS = 4  # full-resolution hill-climbing steps at stride 1, at most
_BATCH = 24  # probes scored together over the coarse scene (their maps held at once)

_NUMBER = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"
_RANGE = re.compile(rf"^\s*({_NUMBER})\s*\.\.\s*({_NUMBER})\s*(?::\s*({_NUMBER}))?\s*$")
_FORMS = {
    "scales": "A..B (default steps), A..B:N (N geometric steps) or a list A,B,C, e.g. 0.5..2:9",
    "angles": "A..B (default step), A..B:STEP (degrees) or a list A,B,C, e.g. 0,90,180,270",
}


@dataclass(frozen=True)
class TurnedMatch(matching.Match):
    """A match of a scaled, turned probe: the axis-aligned box (x, y, width, height, and
    its subpixel corner), the sub-step ``scale`` and ``angle`` (degrees, counter-clockwise
    on screen), and the probe centre's subpixel position (pixel (0, 0)'s centre is 0.0)."""

    scale: float = 1.0
    angle: float = 0.0
    center_x: float = 0.0
    center_y: float = 0.0


# ------------------------------------------------------------------------------------------
# the grid


def scale_steps(text: str, probe_shape: Sequence[int]) -> FloatArray:
    """The scales named by ``text``: ``A..B`` (steps that move the probe's edge by about one
    pixel), ``A..B:N`` (N geometric steps), or a list ``A,B,C``; ascending, unique.

    Raises UsageError (showing the accepted forms) for anything else or scales <= 0.
    """
    low, high, steps, listed = _parse(text, "scales")
    if listed is not None:
        values = listed
    elif low <= 0 or high <= 0:
        raise UsageError(f"scales must be positive, got {text!r}", parameters=["scales"])
    else:
        if steps is None:
            ratio = 1.0 + 1.0 / (_half_diagonal(probe_shape) * max(low, high))
            steps = math.ceil(math.log(max(low, high) / min(low, high)) / math.log(ratio)) + 1
        if steps != int(steps) or steps < 1:
            raise UsageError(
                f"scales: N must be a whole number >= 1, got {steps:g}", parameters=["scales"]
            )
        values = np.geomspace(low, high, int(steps))
    if (values <= 0).any():
        raise UsageError(f"scales must be positive, got {text!r}", parameters=["scales"])
    return np.unique(values)


def angle_steps(text: str, probe_shape: Sequence[int], largest_scale: float = 1.0) -> FloatArray:
    """The angles (degrees) named by ``text``: ``A..B`` (steps that move the probe's corner
    by about one pixel at ``largest_scale``), ``A..B:STEP`` or a list ``A,B,C``.

    Raises UsageError (showing the accepted forms) for anything else or a step <= 0.
    """
    low, high, step, listed = _parse(text, "angles")
    if listed is not None:
        return np.unique(listed)
    if step is None:
        step = math.degrees(1.0 / (_half_diagonal(probe_shape) * largest_scale))
    if step <= 0:
        raise UsageError(f"angles: STEP must be positive, got {step:g}", parameters=["angles"])
    count = max(1, math.ceil(abs(high - low) / step - 1e-9)) + 1
    return np.unique(np.linspace(min(low, high), max(low, high), count if high != low else 1))


def _parse(text: str, name: str) -> tuple[float, float, float | None, FloatArray | None]:
    """(low, high, third, None) for a range, (nan, nan, None, values) for a list."""
    found = _RANGE.match(text)
    if found:
        low, high = float(found[1]), float(found[2])
        return low, high, None if found[3] is None else float(found[3]), None
    try:
        values = np.array([float(part) for part in text.split(",")])
    except ValueError:
        raise UsageError(
            f"{name}: cannot read {text!r}; use {_FORMS[name]}", parameters=[name]
        ) from None
    if not np.isfinite(values).all():
        raise UsageError(f"{name}: cannot read {text!r}; use {_FORMS[name]}", parameters=[name])
    return math.nan, math.nan, None, values


def _half_diagonal(probe_shape: Sequence[int]) -> float:
    return max(1.0, math.hypot(probe_shape[0], probe_shape[1]) / 2.0)


def _usable_scales(
    scales: FloatArray, probe_shape: Sequence[int], scene_shape: Sequence[int]
) -> FloatArray:
    """The scales at which the probe is at least MIN_PROBE pixels and fits in the scene."""
    small = min(probe_shape[:2]) * scales >= MIN_PROBE
    fits = (probe_shape[0] * scales <= scene_shape[0]) & (probe_shape[1] * scales <= scene_shape[1])
    usable = scales[small & fits]
    if usable.size == 0:
        raise UsageError(
            f"scales: no scale in {scales.min():g}..{scales.max():g} keeps the probe "
            f"({probe_shape[1]}x{probe_shape[0]}) at least {MIN_PROBE} px and inside the "
            f"scene ({scene_shape[1]}x{scene_shape[0]})",
            parameters=["scales"],
        )
    return usable


# ------------------------------------------------------------------------------------------
# turned probes and pyramids


def _box(shape: Sequence[int], scale: float, angle: float) -> tuple[float, float]:
    """(height, width) of the axis-aligned box around the probe scaled and turned."""
    cos, sin = abs(math.cos(math.radians(angle))), abs(math.sin(math.radians(angle)))
    height, width = shape[0] * scale, shape[1] * scale
    return height * cos + width * sin, width * cos + height * sin


def _turn(
    values: FloatArray,
    weights: FloatArray,
    scale: float,
    angle: float,
    size: tuple[int, int],
    shift: tuple[float, float] = (0.0, 0.0),
) -> tuple[FloatArray, FloatArray]:
    """The probe scaled and turned counter-clockwise (on screen) by ``angle`` degrees, its
    centre at the centre of a ``size`` box moved by ``shift`` (rows, columns; subpixel);
    weights 0 outside it (the corners are masked, never filled)."""
    from scipy import ndimage

    theta = math.radians(angle)
    cos, sin = math.cos(theta), math.sin(theta)
    # output (row, col) -> input: the inverse of rows' = s(cos·r - sin·c), cols' = s(sin·r + cos·c)
    matrix = np.array([[cos, sin], [-sin, cos]]) / scale
    source = (np.array(values.shape[:2]) - 1) / 2.0
    target = (np.array(size) - 1) / 2.0 + np.array(shift)
    offset = source - matrix @ target
    turned_weights = ndimage.affine_transform(
        _tapered(weights), matrix, offset, output_shape=size, order=1, mode="constant"
    )
    turned_weights[turned_weights < 1e-3] = 0.0
    turned = np.stack(
        [
            ndimage.affine_transform(
                values[..., c], matrix, offset, output_shape=size, order=1, mode="nearest"
            )
            for c in range(values.shape[2])
        ],
        axis=-1,
    )
    return turned, turned_weights


_TAPER_FROM = 8  # px each way: a smaller probe keeps its hard footprint (see ``_tapered``)


def _tapered(weights: FloatArray) -> FloatArray:
    """The probe's weights with its outermost pixels' set to 0 (when it is ``_TAPER_FROM`` px
    or more each way), so that, interpolated, they fall to 0 at the outermost pixel centres.

    The turned probe's footprint, and so its score, is then a continuous function of scale
    and angle. A hard footprint (every pixel whose centre maps inside the probe, in full)
    gains or loses a whole ring of pixels at some scales: the score jumps there, which threw
    the sub-step parabolas off (scale ~0.7% low on planted probes) and, when the last step's
    best moved to a neighbour, left no parabola at all (the grid's own scale came back). A
    small probe would lose too much of itself (a 4x4 keeps its inner 2x2, and a review found
    a 4x4 copy at scale 1 reported a pixel off, a 5x5 missed in 3 of 12 searches).
    """
    if min(weights.shape) < _TAPER_FROM:
        return weights
    tapered = np.zeros_like(weights)
    tapered[1:-1, 1:-1] = weights[1:-1, 1:-1]
    return tapered


def _halve(values: FloatArray, weights: FloatArray | None) -> tuple[FloatArray, FloatArray | None]:
    """2x2 block means (weighted by ``weights``, whose block means come too)."""
    height, width = values.shape[0] // 2 * 2, values.shape[1] // 2 * 2

    def blocks(array: FloatArray) -> FloatArray:
        cut = array[:height, :width]
        return cut.reshape(height // 2, 2, width // 2, 2, *array.shape[2:]).mean(axis=(1, 3))

    if weights is None:
        return blocks(values), None
    mean_weight = blocks(weights)
    with np.errstate(invalid="ignore", divide="ignore"):
        means = blocks(values * weights[..., np.newaxis]) / mean_weight[..., np.newaxis]
    return np.nan_to_num(means), mean_weight


@dataclass
class _Level:
    """One pyramid level: the scene and its known weights (None: all known), the probe."""

    factor: int
    scene: FloatArray
    scene_weights: FloatArray | None
    probe: FloatArray
    probe_weights: FloatArray


def _pyramid(
    scene: FloatArray,
    scene_weights: FloatArray | None,
    probe: FloatArray,
    probe_weights: FloatArray,
    levels: int,
) -> list[_Level]:
    out = [_Level(1, scene, scene_weights, probe, probe_weights)]
    for _ in range(levels):
        last = out[-1]
        smaller, smaller_weights = _halve(last.scene, last.scene_weights)
        probe_half, probe_weights_half = _halve(last.probe, last.probe_weights)
        assert probe_weights_half is not None
        out.append(
            _Level(last.factor * 2, smaller, smaller_weights, probe_half, probe_weights_half)
        )
    return out


# ------------------------------------------------------------------------------------------
# the search


@dataclass
class _Candidate:
    """A position (full-resolution centre) and grid indices, with its score."""

    center_y: float
    center_x: float
    scale_index: int
    angle_index: int
    score: float = -math.inf


def search_template(
    scene: ArrayLike,
    probe: ArrayLike,
    *,
    scales: str | ArrayLike = "1",
    angles: str | ArrayLike = "0",
    mask: ArrayLike | None = None,
    scene_mask: ArrayLike | None = None,
    min_overlap: float = 0.5,
    top: int = 1,
    min_score: float | None = None,
    min_distance: int | None = None,
) -> list[TurnedMatch]:
    """Find ``probe`` in ``scene`` scaled and turned: the best matches over a scale x angle grid.

    Parameters
    ----------
    scene, probe : array_like
        (H, W) or (H, W, C) images with the same number of channels. NaN pixels of a float
        scene are unknown (left out of every window, as in :func:`match_template`).
    scales : str or sequence of float
        Scale factors (the scene holds the probe this many times larger): a sequence, or
        ``"A..B"`` (geometric steps that move the probe's edge by about one pixel),
        ``"A..B:N"`` (N geometric steps) or ``"A,B,C"``.
    angles : str or sequence of float
        Angles in degrees, counter-clockwise as seen on screen: a sequence, or ``"A..B"``
        (steps that move the probe's corner by about one pixel at the largest scale),
        ``"A..B:STEP"`` or ``"A,B,C"``.
    mask : array_like, optional
        (h, w) weights over the probe's pixels (e.g. its alpha).
    scene_mask : array_like, optional
        (H, W) weights over the scene's pixels; 0 marks a pixel unknown.
    min_overlap : float
        The share of the turned probe's weight a window's known overlap must reach.
    top : int
        At most this many matches, best first.
    min_score : float, optional
        The NCC score a match must reach.
    min_distance : int, optional
        Centres closer than this (in x and in y) to a better match are dropped; default half
        the smallest turned probe's box.

    Returns
    -------
    list of TurnedMatch
        Best first: the score of the best grid point (zero-mean NCC over the turned probe's
        pixels, corners masked), the sub-step scale and angle, the probe's subpixel centre,
        and the axis-aligned box of the turned probe.

    Raises
    ------
    UsageError
        Unreadable ranges, or no scale that keeps the probe at least 4 px and inside the scene.
    ConvfiltError
        Non-finite values, or every probe or scene pixel masked.

    Notes
    -----
    Coarse to fine (see the module's notes): the cost is that of a few matches over a scene
    reduced 2**L times, plus a few small crops per candidate, not the grid's size. A match
    is found when its NCC peak at the coarse level is among the best placements there, which
    holds for textured probes of 16 px or more; a probe that only matches in fine detail may
    be missed (give a narrower range).

    Examples
    --------
    >>> import numpy as np
    >>> from convfilt.search import search_template
    >>> rng = np.random.default_rng(0)
    >>> scene = rng.random((96, 96))
    >>> probe = np.rot90(scene[30:62, 40:72])  # turned by 90 degrees
    >>> best = search_template(scene, probe, angles="0,90,180,270")[0]
    >>> best.angle, round(best.center_x, 1), round(best.center_y, 1), round(best.score, 3)
    (270.0, 55.5, 45.5, 1.0)
    """
    matching.check_peak_options(top=top, min_distance=min_distance)
    values, scene_weights = _scene(scene, scene_mask)
    probe_values = np.atleast_3d(np.asarray(probe, dtype=np.float64))
    if not np.isfinite(probe_values).all():
        raise ConvfiltError("probe holds NaN or infinite values")
    if probe_values.shape[2] != values.shape[2]:
        raise UsageError(
            f"scene has {values.shape[2]} channel(s) but probe has {probe_values.shape[2]}"
        )
    probe_weights = _probe_weights(mask, probe_values.shape[:2])
    grid = _Grid.of(scales, angles, probe_values.shape, values.shape)
    levels = _pyramid(values, scene_weights, probe_values, probe_weights, grid.levels)
    candidates = _coarse(levels[-1], grid, top, min_overlap)
    first = _first_step(levels, grid, candidates, top, min_overlap)
    refined = [_refine(levels, grid, step, min_overlap) for step in first]
    return _select(refined, grid, top, min_score, min_distance)


def _scene(scene: ArrayLike, scene_mask: ArrayLike | None) -> tuple[FloatArray, FloatArray | None]:
    """The scene as float64 (H, W, C) and its known weights (None: every pixel known)."""
    values, weights = matching._scene_and_weights(scene, scene_mask)
    channels = matching._as_channels(values, "scene")
    return channels.astype(np.float64, copy=False), weights


def _probe_weights(mask: ArrayLike | None, shape: tuple[int, ...]) -> FloatArray:
    weights = matching._as_weights(mask, shape)
    return np.ones(shape) if weights is None else weights


@dataclass(frozen=True)
class _Grid:
    """The usable scales and angles, the pyramid's depth and the coarse level's strides."""

    scales: FloatArray
    angles: FloatArray
    levels: int
    scale_stride: int
    angle_stride: int
    probe_shape: tuple[int, ...]

    @classmethod
    def of(
        cls,
        scales: str | ArrayLike,
        angles: str | ArrayLike,
        probe_shape: tuple[int, ...],
        scene_shape: tuple[int, ...],
    ) -> _Grid:
        scale_values = (
            scale_steps(scales, probe_shape)
            if isinstance(scales, str)
            else np.unique(np.asarray(scales, dtype=np.float64))
        )
        if scale_values.size == 0 or not (np.isfinite(scale_values) & (scale_values > 0)).all():
            raise UsageError(
                f"scales must be positive and finite, got {scales!r}", parameters=["scales"]
            )
        usable = _usable_scales(scale_values, probe_shape, scene_shape)
        largest = float(usable.max())
        angle_values = (
            angle_steps(angles, probe_shape, largest)
            if isinstance(angles, str)
            else np.unique(np.asarray(angles, dtype=np.float64))
        )
        if angle_values.size == 0 or not np.isfinite(angle_values).all():
            raise UsageError(f"angles must be finite, got {angles!r}", parameters=["angles"])
        smallest = min(probe_shape[:2]) * float(usable.min())
        levels = 0
        while smallest / 2 ** (levels + 1) >= _COARSE_PROBE and levels < 5:
            levels += 1
        radius = _half_diagonal(probe_shape) * largest
        reach = _COARSE_MOTION * 2**levels
        scale_motion = radius * _mean_step(np.log(usable))  # edge motion per step, pixels
        angle_motion = radius * math.radians(_mean_step(angle_values))
        return cls(
            usable,
            angle_values,
            levels,
            _stride(reach, scale_motion),
            _stride(reach, angle_motion),
            probe_shape,
        )

    def coarse(self) -> list[tuple[int, int]]:
        """Every stride-th (scale, angle) index pair, the last index of each axis included."""
        return [
            (i, j)
            for i in _every(len(self.scales), self.scale_stride)
            for j in _every(len(self.angles), self.angle_stride)
        ]

    def near(
        self, found: _Candidate, scale_stride: int, angle_stride: int
    ) -> list[tuple[int, int]]:
        """The 3 x 3 neighbourhood of ``found`` at the given strides, inside the grid."""
        scales = {
            min(max(found.scale_index + d * scale_stride, 0), len(self.scales) - 1)
            for d in (-1, 0, 1)
        }
        angles = {
            min(max(found.angle_index + d * angle_stride, 0), len(self.angles) - 1)
            for d in (-1, 0, 1)
        }
        return [(i, j) for i in sorted(scales) for j in sorted(angles)]


def _mean_step(values: FloatArray) -> float:
    return float(np.mean(np.diff(values))) if values.size > 1 else math.inf


def _stride(reach: float, motion: float) -> int:
    return max(1, int(reach / motion)) if math.isfinite(motion) and motion > 0 else 1


def _every(count: int, stride: int) -> list[int]:
    indices = list(range(0, count, stride))
    if indices[-1] != count - 1:
        indices.append(count - 1)
    return indices


def _common_box(level: _Level, grid: _Grid, points: list[tuple[int, int]]) -> tuple[int, int]:
    """A box that holds every point's turned probe at this level (a pixel of fringe), each
    side as odd or even as the probe's: an upright probe's centre keeps its own phase."""
    boxes = [_box(level.probe.shape, grid.scales[i], grid.angles[j]) for i, j in points]
    sides = []
    for axis in (0, 1):
        side = math.ceil(max(b[axis] for b in boxes)) + 1
        sides.append(side + (side - level.probe.shape[axis]) % 2)
    return sides[0], sides[1]


def _crop(
    level: _Level, top: int, left: int, rows: int, cols: int, *, reflect: bool
) -> tuple[FloatArray, FloatArray | None]:
    """Rows top..top+rows, columns left..left+cols of the level's scene and weights; what
    lies outside the scene is its mirror image (``reflect``, coarse candidates only) or
    unknown (weight 0)."""
    height, width = level.scene.shape[:2]
    inside = top >= 0 and left >= 0 and top + rows <= height and left + cols <= width
    if inside:
        weights = level.scene_weights
        cut = (slice(top, top + rows), slice(left, left + cols))
        return level.scene[cut], None if weights is None else weights[cut]
    before = (max(0, -top), max(0, -left))
    after = (max(0, top + rows - height), max(0, left + cols - width))
    cut = (
        slice(max(0, top), min(height, top + rows)),
        slice(max(0, left), min(width, left + cols)),
    )
    pad = ((before[0], after[0]), (before[1], after[1]))
    values = level.scene[cut]
    if reflect and level.scene_weights is None and min(values.shape[:2]) > max(max(pad)):
        return np.pad(values, (*pad, (0, 0)), mode="reflect"), None
    known = np.ones(values.shape[:2]) if level.scene_weights is None else level.scene_weights[cut]
    return np.pad(values, (*pad, (0, 0))), np.pad(known, pad)


def _score(
    level: _Level,
    grid: _Grid,
    points: list[tuple[int, int]],
    min_overlap: float,
    corner: tuple[int, int, int, int],
    *,
    coarse: bool = False,
    phase: tuple[float, float] | None = None,
) -> tuple[list[FloatArray], tuple[float, float]]:
    """Masked NCC maps of each grid point's turned probe over the level's scene, for the
    ``rows`` x ``cols`` placements whose box's top-left corner is at (top, left) and beyond
    (``corner`` = (top, left, rows, cols) before the box's centring, see below); NaN and
    unscored windows -inf. Returns the maps and the probe centre of placement (0, 0), in
    the level's pixels. ``coarse``: float32, and the scene mirrored beyond its border.
    ``phase``: a centre (row, column) whose subpixel part every placement's probe centre
    takes (the probes are turned about a centre moved by up to half a pixel).
    """
    size = _common_box(level, grid, points)
    top, left, rows, cols = corner
    top -= (size[0] - 1) // 2
    left -= (size[1] - 1) // 2
    origin = (top + (size[0] - 1) / 2, left + (size[1] - 1) / 2)
    shift = (0.0, 0.0)
    if phase is not None:
        shift = (_wrap(phase[0] - origin[0]), _wrap(phase[1] - origin[1]))
    crop, weights = _crop(level, top, left, rows + size[0] - 1, cols + size[1] - 1, reflect=coarse)
    maps: list[FloatArray] = []
    for start in range(0, len(points), _BATCH):
        probes = [
            _turn(level.probe, level.probe_weights, grid.scales[i], grid.angles[j], size, shift)
            for i, j in points[start : start + _BATCH]
        ]
        # coarse: float32 through the planner's choice; refinement: a few placements of
        # large kernels, where the transform beats the direct road's set-up
        scored = matching.masked_ncc(
            crop,
            weights,
            probes,
            min_overlap=min_overlap,
            dtype=np.float32 if coarse else np.float64,
            strategy="auto" if coarse else "fft",
        )
        maps.extend(np.nan_to_num(m, nan=-np.inf) for m in scored)
    return maps, (origin[0] + shift[0], origin[1] + shift[1])


def _wrap(offset: float) -> float:
    """``offset`` less its nearest whole number: in [-0.5, 0.5]."""
    return offset - round(offset)


def _coarse(level: _Level, grid: _Grid, top: int, min_overlap: float) -> list[_Candidate]:
    """The best placements over the coarse level, every stride-th grid point scored."""
    points = grid.coarse()
    height, width = level.scene.shape[:2]
    best = np.full((height, width), -np.inf)
    which = np.zeros((height, width), dtype=np.intp)
    origin = (0.0, 0.0)
    for start in range(0, len(points), _BATCH):
        batch = points[start : start + _BATCH]
        maps, origin = _score(level, grid, batch, min_overlap, (0, 0, height, width), coarse=True)
        for k, score_map in enumerate(maps):
            better = score_map > best
            best[better] = score_map[better]
            which[better] = start + k
    smallest = min(level.probe.shape[:2]) * float(grid.scales.min())
    reach = max(1, int(smallest // 2))
    peaks = matching.find_matches(
        np.where(np.isfinite(best), best, np.nan),
        probe_shape=(reach, reach),
        top=4 * top + 4,
        min_distance=reach,
    )
    factor = level.factor
    return [
        _Candidate(
            (origin[0] + peak.y) * factor + (factor - 1) / 2,
            (origin[1] + peak.x) * factor + (factor - 1) / 2,
            *points[int(which[peak.y, peak.x])],
            peak.score,
        )
        for peak in peaks
    ]


@dataclass
class _Step:
    """One refinement step's outcome: the candidate moved to its best neighbour, each scored
    neighbour's best score, and the best neighbour's map (for the subpixel fit)."""

    found: _Candidate
    scores: dict[tuple[int, int], float]
    score_map: FloatArray
    peak: tuple[int, int]
    factor: int

    def peak_inside(self) -> bool:
        """Whether the best placement is not on the searched area's edge."""
        rows, cols = self.score_map.shape
        return 0 < self.peak[0] < rows - 1 and 0 < self.peak[1] < cols - 1


def _step(
    level: _Level,
    grid: _Grid,
    found: _Candidate,
    strides: tuple[int, int],
    min_overlap: float,
    *,
    aligned: bool = False,
) -> _Step:
    """Score ``found``'s 3 x 3 grid neighbours near its position at this level; ``aligned``
    (full resolution): with the probes' centres at ``found``'s subpixel phase."""
    factor = level.factor
    row = (found.center_y - (factor - 1) / 2) / factor
    col = (found.center_x - (factor - 1) / 2) / factor
    span = 2 * _RADIUS + 1
    corner = (round(row) - _RADIUS, round(col) - _RADIUS, span, span)
    points = grid.near(found, *strides)
    phase = (found.center_y, found.center_x) if aligned else None
    maps, origin = _score(level, grid, points, min_overlap, corner, phase=phase)
    bests = [float(m.max()) for m in maps]
    k = int(np.argmax(bests))
    peak = np.unravel_index(int(np.argmax(maps[k])), maps[k].shape)
    y, x = int(peak[0]), int(peak[1])
    moved = _Candidate(
        (origin[0] + y) * factor + (factor - 1) / 2,
        (origin[1] + x) * factor + (factor - 1) / 2,
        *points[k],
        bests[k],
    )
    return _Step(moved, dict(zip(points, bests, strict=True)), maps[k], (y, x), factor)


def _first_step(
    levels: list[_Level], grid: _Grid, candidates: list[_Candidate], top: int, min_overlap: float
) -> list[_Step]:
    """Every coarse candidate's first refinement step; those clearly worse than the best
    (by more than ``_PRUNE``, beyond the ``2·top + 2`` best) go no further."""
    depth = max(0, len(levels) - 2)
    strides = _halved((grid.scale_stride, grid.angle_stride))
    steps = [_step(levels[depth], grid, found, strides, min_overlap) for found in candidates]
    steps.sort(key=lambda step: -step.found.score)
    best = steps[0].found.score if steps else -math.inf
    return [
        step
        for rank, step in enumerate(steps)
        if rank < top or (rank < 2 * top + 2 and step.found.score >= best - _PRUNE)
    ]


def _halved(strides: tuple[int, int]) -> tuple[int, int]:
    return max(1, strides[0] // 2), max(1, strides[1] // 2)


def _refine(levels: list[_Level], grid: _Grid, step: _Step, min_overlap: float) -> _Step:
    """A candidate after its first step refined level by level, strides halved each time,
    then at full resolution and stride 1 until it is the centre of its neighbourhood (at
    most ``_CLIMBS`` more steps), then once with the probes at its subpixel phase."""
    depth = max(0, len(levels) - 2)
    strides = _halved((grid.scale_stride, grid.angle_stride))
    found = step.found
    while depth > 0 or strides != (1, 1):
        strides = _halved(strides)
        depth = max(0, depth - 1)
        step = _step(levels[depth], grid, found, strides, min_overlap)
        found = step.found
    for _ in range(_CLIMBS):
        centred = all(p in step.scores for p in grid.near(found, 1, 1))
        if centred and step.peak_inside():
            break
        step = _step(levels[0], grid, found, (1, 1), min_overlap)
        found = step.found
    # once more with the probes turned about the subpixel centre, so that the neighbours'
    # scores (the sub-step fit) compare probes aligned with the match, not half a pixel off
    y, x = step.peak
    found.center_y += matching._parabola_offset(step.score_map[:, x], y)
    found.center_x += matching._parabola_offset(step.score_map[y, :], x)
    aligned = _step(levels[0], grid, found, (1, 1), min_overlap, aligned=True)
    return aligned if aligned.found.score >= step.found.score else step


def _substep(grid: _Grid, step: _Step) -> tuple[float, float]:
    """Scale and angle between grid steps: the vertex of a parabola through the best point's
    scores and its neighbours' along each axis (log scale), when the grid is fine enough
    (a step moves the probe's edge by at most ``_COARSE_MOTION`` pixels) to be smooth."""
    i, j = step.found.scale_index, step.found.angle_index
    scale, angle = float(grid.scales[i]), float(grid.angles[j])
    radius = _half_diagonal(grid.probe_shape) * float(grid.scales.max())
    if 0 < i < len(grid.scales) - 1 and {(i - 1, j), (i + 1, j)} <= step.scores.keys():
        logs = np.log(grid.scales[i - 1 : i + 2])
        if radius * (logs[2] - logs[0]) / 2 <= _COARSE_MOTION:
            line = np.array([step.scores[(i + d, j)] for d in (-1, 0, 1)])
            offset = matching._parabola_offset(line, 1)
            scale = float(np.exp(logs[1] + offset * (logs[2] - logs[0]) / 2))
    if 0 < j < len(grid.angles) - 1 and {(i, j - 1), (i, j + 1)} <= step.scores.keys():
        spacing = float(grid.angles[j + 1] - grid.angles[j - 1]) / 2
        if radius * math.radians(spacing) <= _COARSE_MOTION:
            line = np.array([step.scores[(i, j + d)] for d in (-1, 0, 1)])
            angle += matching._parabola_offset(line, 1) * spacing
    return scale, angle


def _as_match(grid: _Grid, step: _Step) -> TurnedMatch:
    """The refined candidate as a match: sub-step scale and angle, subpixel centre, box."""
    scale, angle = _substep(grid, step)
    y, x = step.peak
    score_map = step.score_map
    centre_y = step.found.center_y + matching._parabola_offset(score_map[:, x], y)
    centre_x = step.found.center_x + matching._parabola_offset(score_map[y, :], x)
    height, width = _box(grid.probe_shape, scale, angle)
    corner_y, corner_x = centre_y - (height - 1) / 2, centre_x - (width - 1) / 2
    return TurnedMatch(
        x=round(corner_x),
        y=round(corner_y),
        width=round(width),
        height=round(height),
        score=step.found.score,
        x_subpixel=corner_x,
        y_subpixel=corner_y,
        scale=scale,
        angle=angle,
        center_x=centre_x,
        center_y=centre_y,
    )


def _select(
    steps: list[_Step],
    grid: _Grid,
    top: int,
    min_score: float | None,
    min_distance: int | None,
) -> list[TurnedMatch]:
    """Best first, one per object: centres closer than ``min_distance`` (in x and in y) to a
    better match's are dropped (default half the smallest turned probe), then ``min_score``."""
    smallest = min(grid.probe_shape[:2]) * float(grid.scales.min())
    reach = min_distance if min_distance is not None else max(1, math.ceil(smallest / 2))
    ordered = sorted(
        (_as_match(grid, step) for step in steps if math.isfinite(step.found.score)),
        key=lambda m: -m.score,
    )
    kept: list[TurnedMatch] = []
    for candidate in ordered:
        if min_score is not None and candidate.score < min_score:
            break
        if all(
            abs(candidate.center_x - other.center_x) >= reach
            or abs(candidate.center_y - other.center_y) >= reach
            for other in kept
        ):
            kept.append(candidate)
        if len(kept) == top:
            break
    return kept


def corners(match: TurnedMatch, probe_shape: Sequence[int]) -> list[tuple[float, float]]:
    """The (x, y) scene positions of the turned, scaled probe's four corners (its outline),
    clockwise on screen from the probe's top-left."""
    angle = math.radians(match.angle)
    cos, sin = math.cos(angle), math.sin(angle)
    height, width = probe_shape[0] * match.scale, probe_shape[1] * match.scale
    out = []
    for dy, dx in ((-1, -1), (-1, 1), (1, 1), (1, -1)):
        y, x = dy * height / 2, dx * width / 2
        out.append((match.center_x + sin * y + cos * x, match.center_y + cos * y - sin * x))
    return out


def score_map(
    scene: ArrayLike,
    probe: ArrayLike,
    *,
    scale: float,
    angle: float,
    mask: ArrayLike | None = None,
    scene_mask: ArrayLike | None = None,
    min_overlap: float = 0.5,
) -> tuple[FloatArray, tuple[int, int]]:
    """The masked NCC map of ``probe`` scaled and turned by one ``scale`` and ``angle`` over
    the whole scene, and the turned probe's box (height, width): entry (y, x) scores the box
    whose top-left corner is (x, y). For heatmaps of a search's best match."""
    values, scene_weights = _scene(scene, scene_mask)
    probe_values = np.atleast_3d(np.asarray(probe, dtype=np.float64))
    weights = _probe_weights(mask, probe_values.shape[:2])
    height, width = _box(probe_values.shape, scale, angle)
    size = (math.ceil(height) + 1, math.ceil(width) + 1)
    if size[0] > values.shape[0] or size[1] > values.shape[1]:
        raise UsageError(
            f"the probe at scale {scale:g} is larger than the scene", parameters=["scale"]
        )
    turned = _turn(probe_values, weights, scale, angle, size)
    scores = matching.masked_ncc(values, scene_weights, [turned], min_overlap=min_overlap)[0]
    return scores, size
