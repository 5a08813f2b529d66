"""Accuracy of the scale x rotation search's sub-step scale, angle and centre (not a timing).

Run ``.venv/bin/python -m benchmarks.search_accuracy`` (about three minutes) or ``--quick``
(one seed). For each of three ways of making the scene, 4 seeds x scales 0.8, 1.0, 1.17,
1.31 x angles 0 and 17 degrees: a 40 x 48 smooth-noise probe, its centre at (120.3, 100.6)
of a 220 x 240 scene, searched with ``scales="0.7..1.4", angles="-30..30"`` (default steps:
2.26% in scale). The scenes:

- ``paste-black``: the probe warped by OpenCV (bicubic) into an unrelated background, pixels
  outside it black to the warp (the copy's edge blends with black), pasted where its cover
  is complete (as ``tests/test_search.py`` plants probes);
- ``paste-reflect``: the same with the probe's edge reflected by the warp;
- ``continuous``: a larger smooth-noise image warped about the probe's centre, the probe a
  crop of the unwarped image (the object continues beyond the probe, as in a photograph).

Printed: per scene, the scale error (found / true - 1) mean, spread, min and max, the angle
error's mean and spread (degrees), and the centre's RMS error (pixels).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from functools import partial

import numpy as np
from scipy import ndimage

from convfilt.search import search_template

CENTRE = (120.3, 100.6)  # (x, y)
SCALES = (0.8, 1.0, 1.17, 1.31)
ANGLES = (0.0, 17.0)


def smooth(shape: tuple[int, int], seed: int) -> np.ndarray:
    return ndimage.gaussian_filter(np.random.default_rng(seed).random(shape), 1.5)


def warp_matrix(pivot: tuple[float, float], scale: float, angle: float) -> np.ndarray:
    """OpenCV's matrix turning and scaling about ``pivot`` (x, y), moved onto CENTRE."""
    import cv2

    matrix = cv2.getRotationMatrix2D(pivot, angle, scale)
    matrix[:, 2] += np.array(CENTRE) - np.array(pivot)
    return matrix


def pasted(seed: int, scale: float, angle: float, border: int) -> tuple[np.ndarray, np.ndarray]:
    import cv2

    probe, scene = smooth((40, 48), 10 + seed), smooth((220, 240), 20 + seed)
    matrix = warp_matrix((23.5, 19.5), scale, angle)
    size = (scene.shape[1], scene.shape[0])
    turned = cv2.warpAffine(
        probe.astype(np.float32), matrix, size, flags=cv2.INTER_CUBIC, borderMode=border
    )
    cover = cv2.warpAffine(np.ones((40, 48), np.float32), matrix, size, flags=cv2.INTER_LINEAR)
    return np.where(cover > 0.999, turned, scene), probe


def continuous(seed: int, scale: float, angle: float) -> tuple[np.ndarray, np.ndarray]:
    import cv2

    big = smooth((220, 240), 20 + seed).astype(np.float32)
    probe = big[80:120, 96:144].astype(np.float64)  # its centre: (119.5, 99.5)
    matrix = warp_matrix((119.5, 99.5), scale, angle)
    scene = cv2.warpAffine(
        big, matrix, (240, 220), flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT
    )
    return scene.astype(np.float64), probe


Maker = Callable[[int, float, float], tuple[np.ndarray, np.ndarray]]


def scenes() -> dict[str, Maker]:
    import cv2

    return {
        "paste-black": partial(pasted, border=cv2.BORDER_CONSTANT),
        "paste-reflect": partial(pasted, border=cv2.BORDER_REFLECT),
        "continuous": continuous,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="one seed")
    seeds = range(1 if parser.parse_args(argv).quick else 4)
    for name, make in scenes().items():
        errors = []
        for seed in seeds:
            for scale in SCALES:
                for angle in ANGLES:
                    scene, probe = make(seed, scale, angle)
                    best = search_template(scene, probe, scales="0.7..1.4", angles="-30..30")[0]
                    errors.append(
                        (
                            best.scale / scale - 1.0,
                            best.angle - angle,
                            best.center_x - CENTRE[0],
                            best.center_y - CENTRE[1],
                        )
                    )
        e = np.array(errors)
        print(
            f"{name:13s} {len(e)} cases: scale error mean {e[:, 0].mean():+.2%} "
            f"sd {e[:, 0].std():.2%} [{e[:, 0].min():+.2%}, {e[:, 0].max():+.2%}]; "
            f"angle error mean {e[:, 1].mean():+.3f} sd {e[:, 1].std():.3f} deg; "
            f"centre RMS {np.sqrt((e[:, 2] ** 2 + e[:, 3] ** 2).mean()):.3f} px",
            flush=True,
        )


if __name__ == "__main__":
    main()
