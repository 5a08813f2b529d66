"""The compiled road's per-call rates, fitted on a grid of images and kernels (issue 14).

Run ``.venv/bin/python -m benchmarks.compiled_rates [--dtype float32] [--seed S]``: times
``engine.convolve(strategy="compiled")`` (the best of ``--repeat`` calls after a warm-up, where
``calibrate`` takes medians: on a quiet machine the two give the same rates within the
run-to-run spread) on grey images of sides 128-2048 with random kernels of sides 3-33 (every
tap: the direct form) and Gaussians of sigma 1, 3 and 6 (9, 25 and 49 taps, two passes: the
separable form), then fits ``seconds ≈ rate · multiply-adds + pass · values moved + fixed``
(``cost.compiled_work``, ``cost.compiled_passes``; the same non-negative fit as
``calibrate``, relative residuals). Prints each cell's time and the fit's estimate, and the
three constants as JSON (``compiled_{dtype}``, ``compiled_pass_{dtype}``, ``compiled_fixed``
of ``cost_defaults.json``; the fixed term is one constant for both dtypes). The machine is
shared: run it twice and compare.
"""

from __future__ import annotations

import argparse
import json
from functools import partial

import numpy as np

from benchmarks.engine import best_time
from convfilt import cost, engine, kernels, names
from convfilt.bench import fit_terms

SIDES = (128, 256, 512, 1024, 2048)
KERNELS = (3, 5, 9, 13, 17, 25, 33)


def cells(rng: np.random.Generator) -> list[tuple[int, np.ndarray]]:
    """(image side, kernel) pairs: a random kernel of each size, and a Gaussian of three."""
    out = [(side, rng.standard_normal((n, n))) for side in SIDES for n in KERNELS]
    for side in SIDES:
        for sigma in (1.0, 3.0, 6.0):
            g = kernels.gaussian_1d(sigma)
            out.append((side, np.outer(g, g)))
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dtype", default="float32", choices=("float32", "float64"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args(argv)
    rng = np.random.default_rng(args.seed)
    dtype = np.dtype(args.dtype)
    engine.convolve(np.ones((64, 64), dtype), np.ones((3, 3)), strategy=names.COMPILED)
    work, passes, seconds, labels = [], [], [], []
    for side, kernel in cells(rng):
        image = rng.random((side, side)).astype(dtype)
        problem = engine._problem((side, side), 1, [kernel[::-1, ::-1]], dtype)
        shape = problem.shape
        run = partial(engine.convolve, image, kernel, strategy=names.COMPILED)
        seconds.append(best_time(run, args.repeat))
        work.append(cost.compiled_work(shape))
        passes.append(cost.compiled_passes(shape))
        labels.append(f"{side:5d} {kernel.shape[0]:3d} {cost.compiled_form(shape, shape.rank_one)}")
    rate, pass_rate, fixed = fit_terms([work, passes, [1.0] * len(work)], seconds)
    print("    N   n form          ms   fit ms  fit/ms")
    for label, w, p, t in zip(labels, work, passes, seconds, strict=True):
        fit = rate * w + pass_rate * p + fixed
        print(f"{label:20s} {t * 1e3:8.3f} {fit * 1e3:8.3f} {fit / t:7.2f}")
    constants = {
        f"compiled_{dtype.name}": rate,
        f"compiled_pass_{dtype.name}": pass_rate,
        "compiled_fixed": fixed,
    }
    print(json.dumps(constants, indent=1))


if __name__ == "__main__":
    main()
