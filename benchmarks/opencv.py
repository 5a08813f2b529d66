"""convfilt's compiled road against OpenCV, in one process (issue 14's targets).

Run ``.venv/bin/python -m benchmarks.opencv`` (``--quick`` for a smoke run). Three parts:

1. ``engine.convolve`` (``auto``) of NxN float32 images with random nxn kernels, n ∈ {3, 5, 7,
   9}, N ∈ {1024, 2048, 4096}, against ``cv2.filter2D`` with the flipped kernel (target:
   within 1.5x);
2. ``gaussian_blur`` at sigma 1 and 2 of a 4096²x3 float32 image against ``cv2.GaussianBlur``
   (target: within 1.5x);
3. the same blur at sigma 2 of a 4096²x3 uint8 image end to end (float work, rounding back to
   uint8 included) against ``cv2.GaussianBlur`` on the uint8 image, which sums in 16-bit fixed
   point (target: within 2x).

Both sides use the boundary ``mirror`` (OpenCV's default ``BORDER_REFLECT_101``) and kernels
of the same size (OpenCV's sigma-derived size for float images is 2·round(4sigma)+1, as ours).
OpenCV runs on its own threads: ``cv2.setNumThreads`` is left at its default (printed).
convfilt's one-time costs (numba's import, loading the machine code) are paid by one forced
call before timing, as a process pays them once; ``auto``'s pick is printed per cell.

The machine is shared: each contender runs ``--rounds`` times, alternating within a round, and
the report gives the ratio of medians and the range of the per-round ratios.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from convfilt import engine, filters


def _timed(run: Callable[[], object]) -> float:
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


def compare(ours: Callable[[], object], theirs: Callable[[], object], rounds: int) -> str:
    """Time both ``rounds`` times (alternating, after one warm-up each): medians and ratios."""
    ours()
    theirs()
    a, b = [], []
    for _ in range(rounds):
        a.append(_timed(ours))
        b.append(_timed(theirs))
    ratios = sorted(x / y for x, y in zip(a, b, strict=True))
    median_a, median_b = statistics.median(a), statistics.median(b)
    return (
        f"{median_a * 1e3:9.1f} {median_b * 1e3:9.1f} {median_a / median_b:7.2f}x"
        f"   ({ratios[0]:.2f}-{ratios[-1]:.2f})"
    )


def _picked(image: np.ndarray, kernel: np.ndarray) -> str:
    plans: list[engine.Plan] = []
    engine.convolve(image, kernel, mode="mirror", on_plan=plans.append)
    return plans[0].strategy


def convolve_part(cv2: Any, sizes: tuple[int, ...], rounds: int) -> None:
    rng = np.random.default_rng(14)
    print("1. convolve float32, random kernels: convfilt auto vs cv2.filter2D (ms)")
    print("    N  n   convfilt       cv2   ratio   (per-round range)  auto picks")
    for size in sizes:
        image = rng.random((size, size), dtype=np.float32)
        for n in (3, 5, 7, 9):
            kernel = rng.random((n, n)).astype(np.float32)
            engine.convolve(image, kernel, mode="mirror", strategy="compiled")  # one-time costs
            flipped = np.ascontiguousarray(kernel[::-1, ::-1])
            line = compare(
                lambda: engine.convolve(image, kernel, mode="mirror"),  # noqa: B023
                lambda: cv2.filter2D(image, -1, flipped, borderType=cv2.BORDER_REFLECT_101),  # noqa: B023
                rounds,
            )
            print(f"{size:5d} {n:2d} {line}  {_picked(image, kernel)}", flush=True)


def gaussian_part(cv2: Any, size: int, rounds: int) -> None:
    rng = np.random.default_rng(15)
    print(f"2./3. gaussian_blur of {size}x{size}x3 vs cv2.GaussianBlur (ms)")
    print("  dtype   sigma   convfilt       cv2   ratio   (per-round range)")
    for dtype, sigma in (("float32", 1.0), ("float32", 2.0), ("uint8", 2.0)):
        image: np.ndarray
        if dtype == "uint8":
            image = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
        else:
            image = rng.random((size, size, 3), dtype=np.float32)
        filters.gaussian_blur(image, sigma, mode="mirror", strategy="compiled")
        line = compare(
            lambda: filters.gaussian_blur(image, sigma, mode="mirror"),  # noqa: B023
            lambda: cv2.GaussianBlur(image, (0, 0), sigma),  # noqa: B023
            rounds,
        )
        plans: list[engine.Plan] = []
        filters.gaussian_blur(image, sigma, mode="mirror", on_plan=plans.append)
        print(f"  {dtype:7s} {sigma:3.0f} {line}  {plans[0].strategy}", flush=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small images, few rounds")
    parser.add_argument("--rounds", type=int, default=9)
    args = parser.parse_args(argv)
    try:
        import cv2
    except ImportError:
        print("opencv-python-headless is not installed (pip install -e '.[bench]'): skipped")
        return
    rounds = 3 if args.quick else args.rounds
    print(
        f"OpenCV {cv2.__version__}, cv2.getNumThreads() = {cv2.getNumThreads()} (default), "
        f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores, {rounds} rounds"
    )
    convolve_part(cv2, (256, 512) if args.quick else (1024, 2048, 4096), rounds)
    gaussian_part(cv2, 512 if args.quick else 4096, rounds)


if __name__ == "__main__":
    main()
