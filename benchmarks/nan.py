"""Missing data benchmark: convfilt's nan_policy against the libraries people use for it.

Run ``.venv/bin/python -m benchmarks.nan`` (about a minute; give it a quiet machine) or
``--quick`` for a smoke run. A float32 image N x N (2048) with 1% of its pixels NaN at random,
and 15x15 kernels (a random positive one, rank 15, and a Gaussian, sigma 2: rank one), in
one run, each contender once per round in alternating order (so noise from other processes
falls on both sides of a ratio):

- ``omit``: ``convfilt.convolve(x, k, mode="constant", nan_policy="omit")`` against
  ``astropy.convolution.convolve(x, k, boundary="fill", nan_treatment="interpolate",
  normalize_kernel=False, preserve_nan=False)`` (issue target: >= 8x faster);
- ``propagate``: ``convfilt.convolve(x, k)`` (the default policy) against
  ``scipy.ndimage.convolve(x, k)`` (target: >= 5x faster).

Printed per pair: each side's median over the rounds (ms), the ratio of the medians, the
spread of the per-round ratios (min..max), and the largest difference between the two results
(they compute the same thing: NaN at the same places, the rest within float32 rounding).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import numpy as np
import scipy.ndimage as ndi

from convfilt import engine, kernels

Call = Callable[[], np.ndarray]


def holey_image(size: int, fraction: float = 0.01, seed: int = 0) -> np.ndarray:
    """A float32 size x size image, smooth plus noise, with ``fraction`` of it NaN."""
    rng = np.random.default_rng(seed)
    image = rng.random((size, size)).astype(np.float32)
    image[rng.random(image.shape) < fraction] = np.nan
    return image


def test_kernels(seed: int = 1) -> dict[str, np.ndarray]:
    """The 15x15 kernels: a random positive one (no separable road) and a Gaussian."""
    random = np.random.default_rng(seed).random((15, 15)) + 0.05
    gaussian = kernels.gaussian_1d(2.0, 3.5)  # radius round(3.5·2) = 7: 15 taps
    return {"random 15x15": random / random.sum(), "gaussian 15x15": np.outer(gaussian, gaussian)}


def pairs(image: np.ndarray, kernel: np.ndarray) -> dict[str, tuple[Call, Call]]:
    """policy -> (convfilt's call, the peer's call) computing the same result."""
    from astropy.convolution import convolve as astropy_convolve

    def astropy_omit() -> np.ndarray:
        return astropy_convolve(
            image,
            kernel,
            boundary="fill",
            fill_value=0.0,
            nan_treatment="interpolate",
            normalize_kernel=False,
            preserve_nan=False,
        )

    return {
        "omit vs astropy": (
            lambda: engine.convolve(image, kernel, mode="constant", nan_policy="omit"),
            astropy_omit,
        ),
        "propagate vs scipy.ndimage": (
            lambda: engine.convolve(image, kernel),
            lambda: ndi.convolve(image, kernel),
        ),
    }


def timed(call: Call) -> tuple[float, np.ndarray]:
    start = time.perf_counter()
    result = call()
    return time.perf_counter() - start, result


def difference(ours: np.ndarray, theirs: np.ndarray) -> str:
    """'same NaN, max diff D' or where the NaN differ."""
    if not np.array_equal(np.isnan(ours), np.isnan(theirs)):
        return f"NaN differ at {int((np.isnan(ours) != np.isnan(theirs)).sum())} pixels"
    finite = np.isfinite(theirs)
    return f"same NaN, max diff {float(np.abs(ours[finite] - theirs[finite]).max()):.1e}"


def measure(ours: Call, theirs: Call, rounds: int) -> str:
    """One line: both medians, the ratio of medians, the per-round ratios' spread."""
    _, mine = timed(ours)  # warm-up (and the results compared)
    _, peer = timed(theirs)
    times: dict[str, list[float]] = {"ours": [], "theirs": []}
    for index in range(rounds):
        order = [("ours", ours), ("theirs", theirs)]
        for name, call in order if index % 2 == 0 else order[::-1]:
            times[name].append(timed(call)[0])
    ratios = [t / o for o, t in zip(times["ours"], times["theirs"], strict=True)]
    ours_ms, theirs_ms = (statistics.median(times[n]) * 1e3 for n in ("ours", "theirs"))
    return (
        f"convfilt {ours_ms:8.1f} ms  peer {theirs_ms:8.1f} ms  "
        f"ratio of medians {theirs_ms / ours_ms:5.1f}x  "
        f"per-round {min(ratios):.1f}..{max(ratios):.1f}x  ({difference(mine, peer)})"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a 512² image, 2 rounds")
    parser.add_argument("--rounds", type=int, default=None, help="timed rounds per pair")
    args = parser.parse_args(argv)
    size = 512 if args.quick else 2048
    rounds = args.rounds or (2 if args.quick else 7)
    image = holey_image(size)
    nan_share = float(np.isnan(image).mean())
    print(f"{size}x{size} float32, {nan_share:.2%} NaN, {rounds} rounds; medians and spreads")
    for kernel_name, kernel in test_kernels().items():
        plans: list[engine.Plan] = []
        engine.convolve(image, kernel, on_plan=plans.append)
        print(f"-- {kernel_name} (planner: {plans[0].strategy})")
        for pair, (ours, theirs) in pairs(image, kernel).items():
            print(f"   {pair:28s} {measure(ours, theirs, rounds)}", flush=True)


if __name__ == "__main__":
    main()
