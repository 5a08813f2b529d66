"""Template matching over a scene too large for memory: tiles, then one global selection.

The scene is any row source (:class:`convfilt.tiles.RowSource`: a numpy array or memory map,
a :mod:`convfilt.streams` TIFF/Zarr reader, a dask array). It is read band by band of rows
and each band cut into column tiles; neighbouring tiles' windows overlap by the probe's size
minus one (each tile holds every window whose top-left corner is in its own cell), plus one
more row and column of scores on every side, so that each score's 3 x 3 neighbourhood (the
local-maximum test, the subpixel parabola) is the whole map's. Each tile is scored by
:func:`convfilt.matching.match_template`, its local maxima collected, and one greedy
non-maximum suppression runs over the candidates of all tiles, across the seams: the same
matches as the whole scene in memory gives.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from . import matching, names
from .errors import UsageError
from .matching import Match

_FLOAT_COPIES = 10  # float64 planes per channel of a tile that scoring holds at once


@dataclass(frozen=True)
class Tiling:
    """Output cells of ``rows`` x ``cols`` score-map entries (the last ones smaller)."""

    rows: int
    cols: int


def tiling(
    scene_shape: Sequence[int],
    probe_shape: Sequence[int],
    itemsize: int,
    budget: int,
) -> Tiling:
    """Cells whose tile (the cell plus the probe's overlap and a margin) and band of rows fit
    ``budget`` bytes: a tile costs ~``_FLOAT_COPIES`` float64 planes per channel, a band of
    rows its raw bytes across the whole scene's width."""
    channels = scene_shape[2] if len(scene_shape) == 3 else 1
    height, width = probe_shape[0], probe_shape[1]
    per_pixel = 8 * _FLOAT_COPIES * max(1, channels)
    row_bytes = scene_shape[1] * channels * itemsize
    for side in (4096, 2048, 1024, 512, 256, 128, 64, 32):
        tile = (side + height + 1) * (side + width + 1) * per_pixel
        band = (side + height + 1) * row_bytes  # the band of rows the tiles are cut from
        if tile + band <= budget:
            return Tiling(side, side)
    from .tiles import format_size

    least = (32 + height + 1) * ((32 + width + 1) * per_pixel + row_bytes)
    raise UsageError(
        f"memory budget {format_size(budget)} is too small to match a probe of "
        f"{width}x{height} in tiles: it needs at least {format_size(least)}",
        parameters=["memory"],
    )


def scan_matches(
    scene: Any,
    probe: ArrayLike,
    *,
    budget: int,
    method: str = names.NCC,
    mask: ArrayLike | None = None,
    scene_has_alpha: bool = False,
    top: int = 1,
    min_score: float | None = None,
    min_distance: int | None = None,
    min_overlap: float = 0.5,
    progress: Callable[[float], None] | None = None,
) -> list[Match]:
    """The best matches of ``probe`` in a scene read by rows, within ``budget`` bytes.

    Parameters
    ----------
    scene : row source
        Anything with ``shape``, ``dtype`` and row slicing (``scene[a:b]`` -> array): a
        numpy array or memory map, :func:`convfilt.streams.open_rows`, a dask array.
    probe : array_like
        (h, w) or (h, w, C), as many channels as the scene (less its alpha).
    budget : int
        Bytes for a band of rows and one tile's working set (:func:`tiling`).
    method, mask, top, min_score, min_distance, min_overlap
        As :func:`convfilt.matching.match_template` and :func:`~convfilt.matching.find_matches`.
    scene_has_alpha : bool
        Whether the scene's last channel is alpha (its weights mark unknown pixels).
    progress : callable, optional
        Called with the share of the score map done (0-1] after each band of tiles.

    Returns
    -------
    list of Match
        Best first, as :func:`~convfilt.matching.find_matches` on the whole map gives: a
        peak the whole map's suppression keeps is among its best ``matching.peaks_needed``
        local maxima in the suppression's own order (best, then row-major), so each tile
        hands in its first that many, and no more than that many are held over all tiles.

    Examples
    --------
    >>> import numpy as np
    >>> from convfilt.scan import scan_matches
    >>> scene = np.random.default_rng(0).random((600, 500))
    >>> found = scan_matches(scene, scene[300:340, 120:150], budget=2**23)[0]
    >>> found.x, found.y, round(found.score, 6)
    (120, 300, 1.0)
    """
    matching.check_peak_options(top=top, min_distance=min_distance)
    probe_values = np.asarray(probe)
    height, width = probe_values.shape[:2]
    scene_height, scene_width = int(scene.shape[0]), int(scene.shape[1])
    if height > scene_height or width > scene_width:
        raise UsageError(
            f"probe ({width}x{height}) is larger than the scene ({scene_width}x{scene_height})"
        )
    cells = tiling(scene.shape, probe_values.shape, np.dtype(scene.dtype).itemsize, budget)
    map_rows, map_cols = scene_height - height + 1, scene_width - width + 1
    reach = matching.suppression_reach((height, width), min_distance)
    keep = matching.peaks_needed(top, reach)
    sign = 1.0 if matching.higher_is_better(method) else -1.0
    found: list[_Candidate] = []
    unscored = False
    for top_row in range(0, map_rows, cells.rows):
        first = max(0, top_row - 1)
        last = min(map_rows, top_row + cells.rows + 1)  # score rows first..last (with margin)
        band = np.asarray(scene[first : last + height - 1])
        for left in range(0, map_cols, cells.cols):
            try:
                found.extend(
                    _tile_candidates(
                        band, probe_values, (top_row - first, left), cells, (map_rows, map_cols),
                        (first, method, mask, scene_has_alpha, min_overlap, keep),
                    )
                )  # fmt: skip
                found = _best(found, keep)
            except matching.UnscoredError:  # a tile of unknown pixels: no candidates
                unscored = True
        found = _best(found, keep)  # a kept peak is among the whole map's best `keep` too
        if progress is not None:
            progress(min(1.0, (top_row + cells.rows) / map_rows))
    if not found and unscored:
        raise matching.UnscoredError(
            "no window of the scene overlaps known pixels by min_overlap "
            f"{min_overlap:g} of the probe",
            parameters=["min_overlap"],
        )
    threshold = None if min_score is None else sign * min_score
    return _select(found, (height, width), top, min_distance, threshold)


def _best(found: list[_Candidate], keep: int) -> list[_Candidate]:
    """The first ``keep`` of ``found`` in the suppression's order (best, then row-major): so
    many are held at most, however many tiles the scene has."""
    if len(found) <= keep:
        return found
    return sorted(found, key=lambda c: (-c.oriented, c.y, c.x))[:keep]


@dataclass(frozen=True)
class _Candidate:
    """A local maximum of the whole map: oriented score (higher is better), position, and
    its subpixel offsets (from the tile's map, whose margin holds its neighbours)."""

    oriented: float
    score: float
    y: int
    x: int
    dy: float
    dx: float


def _tile_candidates(
    band: NDArray[Any],
    probe: NDArray[Any],
    at: tuple[int, int],
    cells: Tiling,
    map_shape: tuple[int, int],
    options: tuple[int, str, Any, bool, float, int],
) -> list[_Candidate]:
    """Local maxima of the scores of one tile: its cell at band row ``at[0]`` (score rows of
    the band) and column ``at[1]``, scored with a one-entry margin where the map has one."""
    first, method, mask, has_alpha, min_overlap, keep = options
    row, left = at
    height, width = probe.shape[:2]
    lo_y, lo_x = max(0, row - 1), max(0, left - 1)
    hi_y = min(band.shape[0] - height + 1, row + cells.rows + 1)
    hi_x = min(map_shape[1], left + cells.cols + 1)
    pixels = band[lo_y : hi_y + height - 1, lo_x : hi_x + width - 1]
    colour, alpha = matching.split_alpha(pixels, has_alpha)
    scene, probe_f = _float32_if_exact(colour, probe)
    scores = matching.match_template(
        scene, probe_f, method=method, mask=mask, scene_mask=alpha, min_overlap=min_overlap
    )
    sign = 1.0 if matching.higher_is_better(method) else -1.0
    oriented = np.where(np.isnan(scores), -np.inf, sign * scores)
    peaks = matching._local_maxima(oriented) & np.isfinite(oriented)
    # only the cell's own entries; the margin is there for the neighbourhoods alone, and a
    # margin entry on the whole map's edge (none beyond it) is its own tile's
    cell_y, cell_x = row - lo_y, left - lo_x
    peaks[:cell_y] = False
    peaks[cell_y + cells.rows :] = False
    peaks[:, :cell_x] = False
    peaks[:, cell_x + cells.cols :] = False
    ys, xs = np.nonzero(peaks)  # row-major: the whole map's order within the tile
    if len(ys) > keep:  # the first `keep` in the greedy's own order: best, then row-major
        order = np.lexsort((xs, ys, -oriented[ys, xs]))[:keep]
        ys, xs = ys[order], xs[order]
    dy = matching._parabola_offsets(oriented, ys, xs, axis=0)
    dx = matching._parabola_offsets(oriented, ys, xs, axis=1)
    dy[(first + lo_y + ys == 0) | (first + lo_y + ys == map_shape[0] - 1)] = 0.0
    dx[(lo_x + xs == 0) | (lo_x + xs == map_shape[1] - 1)] = 0.0
    return [
        _Candidate(float(o), float(sc), first + lo_y + int(y), lo_x + int(x), float(a), float(b))
        for o, sc, y, x, a, b in zip(
            oriented[ys, xs].tolist(),
            scores[ys, xs].tolist(),
            ys.tolist(),
            xs.tolist(),
            dy.tolist(),
            dx.tolist(),
            strict=True,
        )
    ]


def _float32_if_exact(
    scene: NDArray[Any], probe: NDArray[Any]
) -> tuple[NDArray[Any], NDArray[Any]]:
    """8- and 16-bit images as float32 (exact), for match_template's float32 road (whose
    best placements are re-checked in float64); other types as they are."""
    small = all(a.dtype in (np.uint8, np.uint16, np.int8, np.int16) for a in (scene, probe))
    if small:
        return scene.astype(np.float32), probe.astype(np.float32)
    return scene, probe


def _select(
    found: list[_Candidate],
    probe_shape: tuple[int, int],
    top: int,
    min_distance: int | None,
    threshold: float | None,
) -> list[Match]:
    """One greedy non-maximum suppression over every tile's candidates at or above the
    oriented ``threshold``: ``find_matches``' own (``matching._suppress``), candidates in
    the whole map's row-major order so that ties break the same way."""
    height, width = probe_shape
    reach = matching.suppression_reach(probe_shape, min_distance)
    kept = sorted(
        (c for c in found if threshold is None or c.oriented >= threshold),
        key=lambda c: (c.y, c.x),
    )
    ys = np.array([c.y for c in kept], dtype=np.intp)
    xs = np.array([c.x for c in kept], dtype=np.intp)
    scores = np.array([c.oriented for c in kept], dtype=np.float64)
    chosen_ys, chosen_xs = matching._suppress(ys, xs, scores, top=top, reach=reach)
    by_place = {(c.y, c.x): c for c in kept}
    out = []
    for y, x in zip(chosen_ys.tolist(), chosen_xs.tolist(), strict=True):
        c = by_place[(y, x)]
        out.append(Match(x, y, width, height, c.score, x + c.dx, y + c.dy))
    return out


def whole_scene_bytes(scene_shape: Sequence[int]) -> int:
    """Bytes matching the whole scene in memory takes (its float working set)."""
    channels = scene_shape[2] if len(scene_shape) == 3 else 1
    return math.prod(scene_shape[:2]) * 8 * _FLOAT_COPIES * max(1, channels)
