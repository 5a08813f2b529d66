"""Scale x rotation search: convfilt.search.search_template against OpenCV brute force.

Run ``.venv/bin/python -m benchmarks.search`` (about a minute and a half: the brute force
alone takes ~50 s) or ``--quick`` (a 512² scene, a 5 x 7 brute-force grid). A grey float32
scene N x N (smooth noise) holds a 64² probe scaled by 1.23 and turned by 17.3 degrees
(OpenCV's bicubic warp, not convfilt's). Timed in one run:

- search: ``search_template(scene, probe, scales="0.6..1.6", angles="-45..45")`` (median of
  ``--repeat`` runs after a warm-up);
- single: one single-scale ``match_template`` + ``find_matches`` of the same pair (median);
- opencv: what users write today, once: for 21 geometric scales x 31 angles, the probe
  turned with ``cv2.warpAffine`` into its bounding box, its turned outline as the mask, and
  ``cv2.matchTemplate(..., TM_CCOEFF_NORMED, mask=...)`` (non-finite scores skipped, as
  OpenCV's masked NCC returns inf/NaN on flat windows), keeping the best.

Printed: the three times, opencv/search (issue target >= 10) and search/single (<= 20),
and each method's match (centre, scale, angle, score) with whether they agree (centres
within 2 px, scale and angle within one brute-force grid step). Timings are wall times on a
shared machine: compare ratios within one run.
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from benchmarks.match import wall_times
from convfilt.matching import find_matches, match_template
from convfilt.search import search_template

TRUTH = {"scale": 1.23, "angle": 17.3}


def median_s(run: Callable[[], object], repeat: int) -> tuple[float, list[float]]:
    """Median wall time (s) of ``repeat`` calls after one warm-up, and every time."""
    times = wall_times(run, repeat)
    return statistics.median(times), times


def make_pair(size: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, tuple[float, float]]:
    """A smooth-noise scene with the probe planted (scaled, turned), the probe, its centre."""
    import cv2

    rng = np.random.default_rng(seed)
    scene = cv2.GaussianBlur(rng.random((size, size)).astype(np.float32), (0, 0), 1.5)
    probe = cv2.GaussianBlur(rng.random((64, 64)).astype(np.float32), (0, 0), 1.5)
    centre = (size * 0.61 + 0.3, size * 0.37 + 0.6)  # (x, y)
    matrix = cv2.getRotationMatrix2D((31.5, 31.5), TRUTH["angle"], TRUTH["scale"])
    matrix[:, 2] = matrix[:, 2] + np.array(centre) - 31.5
    turned = cv2.warpAffine(probe, matrix, (size, size), flags=cv2.INTER_CUBIC)
    cover = cv2.warpAffine(np.ones((64, 64), np.float32), matrix, (size, size))
    return np.where(cover > 0.999, turned, scene), probe, centre


def opencv_brute_force(
    scene: np.ndarray, probe: np.ndarray, scales: np.ndarray, angles: np.ndarray
) -> dict[str, float]:
    """The best masked TM_CCOEFF_NORMED over every (scale, angle): centre, scale, angle."""
    import cv2

    best = {"score": -math.inf}
    h, w = probe.shape
    for scale in scales:
        for angle in angles:
            cos, sin = abs(math.cos(math.radians(angle))), abs(math.sin(math.radians(angle)))
            bw, bh = math.ceil(scale * (w * cos + h * sin)), math.ceil(scale * (h * cos + w * sin))
            matrix = cv2.getRotationMatrix2D(((w - 1) / 2, (h - 1) / 2), angle, scale)
            shift = np.array([(bw - 1) / 2 - (w - 1) / 2, (bh - 1) / 2 - (h - 1) / 2])
            matrix[:, 2] = matrix[:, 2] + shift
            template = cv2.warpAffine(probe, matrix, (bw, bh), flags=cv2.INTER_LINEAR)
            mask = cv2.warpAffine(np.ones_like(probe), matrix, (bw, bh), flags=cv2.INTER_NEAREST)
            scores = cv2.matchTemplate(scene, template, cv2.TM_CCOEFF_NORMED, mask=mask)
            scores[~np.isfinite(scores) | (np.abs(scores) > 1.0)] = -np.inf
            y, x = np.unravel_index(int(np.argmax(scores)), scores.shape)
            if scores[y, x] > best["score"]:
                best = {
                    "score": float(scores[y, x]),
                    "center_x": x + (bw - 1) / 2,
                    "center_y": y + (bh - 1) / 2,
                    "scale": float(scale),
                    "angle": float(angle),
                }
    return best


def agree(a: dict[str, Any], b: dict[str, Any], steps: tuple[float, float]) -> bool:
    """Centres within 2 px, scale and angle within one brute-force grid step."""
    return (
        abs(a["center_x"] - b["center_x"]) <= 2
        and abs(a["center_y"] - b["center_y"]) <= 2
        and abs(math.log(a["scale"] / b["scale"])) <= steps[0]
        and abs(a["angle"] - b["angle"]) <= steps[1]
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="512² scene, 5 x 7 brute force")
    parser.add_argument("--repeat", type=int, default=3, help="timed runs of search and single")
    args = parser.parse_args(argv)
    size, counts = (512, (5, 7)) if args.quick else (1024, (21, 31))
    scene, probe, centre = make_pair(size)
    scales, angles = np.geomspace(0.6, 1.6, counts[0]), np.linspace(-45, 45, counts[1])
    steps = (math.log(scales[1] / scales[0]), float(angles[1] - angles[0]))

    def search() -> list[Any]:
        return search_template(scene, probe, scales="0.6..1.6", angles="-45..45")

    def single() -> object:
        return find_matches(match_template(scene, probe), probe_shape=probe.shape)

    search_s, search_all = median_s(search, args.repeat)
    single_s, single_all = median_s(single, args.repeat)
    start = time.perf_counter()
    brute = opencv_brute_force(scene, probe, scales, angles)
    opencv_s = time.perf_counter() - start
    found = vars(search()[0])
    truth = {"center_x": centre[0], "center_y": centre[1], **TRUTH}
    print(f"scene {size}² float32, probe 64², planted at scale {TRUTH['scale']}, angle "
          f"{TRUTH['angle']}, centre ({centre[0]:.2f}, {centre[1]:.2f})")  # fmt: skip
    print(f"search  {search_s:8.3f} s  (runs: {', '.join(f'{t:.3f}' for t in search_all)})")
    print(f"single  {single_s:8.3f} s  (runs: {', '.join(f'{t:.3f}' for t in single_all)})")
    print(f"opencv  {opencv_s:8.3f} s  (one run, {counts[0]} x {counts[1]} grid)")
    print(f"opencv/search {opencv_s / search_s:6.1f}x (target >= 10)   "
          f"search/single {search_s / single_s:6.1f}x (target <= 20)")  # fmt: skip
    for name, match in (("search", found), ("opencv", brute)):
        print(
            f"{name:7} centre ({match['center_x']:.2f}, {match['center_y']:.2f}) scale "
            f"{match['scale']:.4f} angle {match['angle']:.2f} score {match['score']:.4f}"
        )
    print(f"same match as opencv: {agree(found, brute, steps)}; "
          f"search vs truth: {agree(found, truth, (0.01, 0.5))}")  # fmt: skip


if __name__ == "__main__":
    main()
