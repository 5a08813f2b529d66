"""Pictures of results: score-map heatmaps and matches drawn on the scene.

The numeric modules return arrays and records; this one turns them into 8-bit RGB images for
people to look at (the heatmap and annotated scene of ``convfilt match``); ``images`` writes
them.
Pillow draws; numpy interpolates the colour ramp. (The benchmark's figure is matplotlib's,
drawn in ``report``.) ``kernel_figure`` draws a kernel, its flip and its frequency response
with matplotlib (the kernel command's figure).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray
from PIL import Image, ImageDraw

from . import matching
from .matching import FloatArray, Match

if TYPE_CHECKING:
    from .kernels import KernelFacts

NO_SCORE_GREY = 128  # heatmap pixels of windows without a score


def heatmap(
    scores: FloatArray, *, scene_shape: Sequence[int], probe_shape: Sequence[int], method: str
) -> NDArray[np.uint8]:
    """The score map as an 8-bit RGB image the size of the scene, best scores brightest.

    Score (y, x) is drawn at its window's centre (y + h // 2, x + w // 2); pixels no window
    is centred on stay black. Colours run from dark blue through teal and green to yellow
    (a viridis-like ramp interpolated in numpy) over the map's own range; windows without a
    score (NaN: too little known overlap in a masked scene) are mid grey.
    """
    sign = 1.0 if matching.higher_is_better(method) else -1.0
    oriented = sign * np.asarray(scores, dtype=np.float64)
    scored = ~np.isnan(oriented)
    low, high = (
        (float(oriented[scored].min()), float(oriented[scored].max())) if scored.any() else (0, 0)
    )
    level = (oriented - low) / (high - low) if high > low else np.full_like(oriented, 0.5)
    ramp = np.array([[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]])
    stops = np.linspace(0.0, 1.0, len(ramp))
    colours = np.stack([np.interp(level, stops, ramp[:, c]) for c in range(3)], axis=-1)
    colours[~scored] = NO_SCORE_GREY
    image = np.zeros((*scene_shape[:2], 3), dtype=np.uint8)
    top, left = probe_shape[0] // 2, probe_shape[1] // 2
    image[top : top + level.shape[0], left : left + level.shape[1]] = np.rint(colours)
    return image


def display_rgb(pixels: np.ndarray, has_alpha: bool) -> NDArray[np.uint8]:
    """An 8-bit RGB view of a picture for drawing on: alpha dropped, depth reduced.

    8-bit stays; other integer types are scaled by their range; floats are stretched from
    their minimum to their maximum.
    """
    colour, _ = matching.split_alpha(pixels, has_alpha)
    if colour.dtype == np.uint8:
        eight = colour
    elif np.issubdtype(colour.dtype, np.integer) and colour.min() >= 0:
        eight = np.rint(matching.unit_weights(colour) * 255.0).astype(np.uint8)
    else:
        values = colour.astype(np.float64)
        span = float(values.max() - values.min()) or 1.0
        eight = np.rint((values - values.min()) / span * 255.0).astype(np.uint8)
    return np.repeat(eight[..., np.newaxis], 3, axis=2) if eight.ndim == 2 else eight


def draw_matches(
    rgb: NDArray[np.uint8],
    matches: Sequence[Match],
    outlines: Sequence[Sequence[tuple[float, float]]] | None = None,
) -> NDArray[np.uint8]:
    """A copy of ``rgb`` with a box and the score drawn for each match (best in red); a
    match's ``outlines`` entry, if given, is drawn instead of its box: the (x, y) corners of
    a turned probe."""
    canvas = Image.fromarray(np.ascontiguousarray(rgb))
    draw = ImageDraw.Draw(canvas)
    for rank, match in enumerate(matches):
        colour = (255, 0, 0) if rank == 0 else (255, 200, 0)
        if outlines is None:
            box = (match.x, match.y, match.x + match.width - 1, match.y + match.height - 1)
            draw.rectangle(box, outline=colour, width=2)
        else:
            draw.polygon(list(outlines[rank]), outline=colour, width=2)
        label = f"{match.score:.3f}"
        text_y = match.y - 12 if match.y >= 12 else match.y + match.height + 2
        draw.rectangle(draw.textbbox((match.x, text_y), label), fill=(0, 0, 0))
        draw.text((match.x, text_y), label, fill=colour)
    return np.asarray(canvas)


def _kernel_panel(figure: Any, axes: Any, values: NDArray[np.float64], title: str) -> None:
    """One kernel as a diverging image (0 white), each weight written in its cell if small,
    the centre (the origin, index n // 2) outlined."""
    reach = float(np.abs(values).max()) or 1.0
    shown = axes.imshow(values, cmap="RdBu_r", vmin=-reach, vmax=reach, interpolation="nearest")
    if max(values.shape) <= 9:
        for (y, x), value in np.ndenumerate(values):
            axes.text(x, y, f"{value:.3g}", ha="center", va="center", fontsize=8)
    from matplotlib.patches import Rectangle

    origin = (values.shape[1] // 2 - 0.5, values.shape[0] // 2 - 0.5)  # the centre, n // 2
    axes.add_patch(Rectangle(origin, 1, 1, fill=False, edgecolor="black", linewidth=2))
    axes.set_title(title, fontsize=10)
    axes.set_xticks([])
    axes.set_yticks([])
    figure.colorbar(shown, ax=axes, shrink=0.8)


def kernel_figure(spec: str, facts: KernelFacts, path: Path, *, force: bool) -> None:
    """Save a PNG with the kernel, its flip and ``|H|`` side by side, written atomically."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    from .images import write_atomically

    figure = Figure(figsize=(13, 4.2), dpi=100, layout="constrained")
    left, middle, right = figure.subplots(1, 3)
    _kernel_panel(figure, left, facts.kernel, "k: correlate slides this")
    _kernel_panel(figure, middle, facts.flipped, "k[::-1, ::-1]: convolve slides this")
    size = facts.response.shape[0]
    half = size // 2
    extent = (-half - 0.5, size - half - 0.5, size - half - 0.5, -half - 0.5)
    shown = right.imshow(facts.response, cmap="magma", extent=extent, interpolation="nearest")
    right.set_title(f"|H| on {size}x{size}, zero frequency at the centre", fontsize=10)
    right.set_xlabel(f"frequency x (cycles per {size} pixels)")
    right.set_ylabel("frequency y")
    figure.colorbar(shown, ax=right, shrink=0.8)
    same = "convolve == correlate" if facts.same_result else "convolve != correlate"
    figure.suptitle(
        f"kernel {spec}: {'symmetric' if facts.symmetric else 'not symmetric'}, {same}, "
        f"rank {facts.rank}, sum {facts.sum:.4g}, DC gain {facts.dc_gain:.4g}"
    )
    write_atomically(Path(path), lambda file: figure.savefig(file, format="png"), force)
