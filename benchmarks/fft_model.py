"""How well the cost model prices the FFT road: measured against estimated, by image size.

Run ``.venv/bin/python -m benchmarks.fft_model`` (about half a minute; ``--quick``: up to
1024²). For square images of
256² to 4096² in float32 and float64, ``engine.correlate`` with a 9x9 kernel and
``strategy="fft"`` (median of 5 calls after a warm-up, 3 at 4096²) against
``cost.estimate("fft", ...)`` with the constants in use. A ratio above 1 means the model is
optimistic.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from convfilt import calibration, cost, engine

SIZES = (256, 512, 768, 1024, 1536, 2048, 3072, 4096)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="sizes up to 1024 only")
    sizes = [n for n in SIZES if n <= 1024] if parser.parse_args(argv).quick else SIZES
    constants = calibration.load_constants()
    rng = np.random.default_rng(0)
    kernel = rng.random((9, 9))
    print(f"constants: {constants.source}")
    print(f"{'dtype':>8} {'N':>5} {'transform':>11} {'measured':>9} {'estimate':>9} {'ratio':>6}")
    for dtype in cost.DTYPES:
        for size in sizes:
            image = rng.random((size, size)).astype(dtype)
            engine.correlate(image, kernel, strategy="fft")
            times = []
            for _ in range(3 if size >= 4096 else 5):
                start = time.perf_counter()
                engine.correlate(image, kernel, strategy="fft")
                times.append(time.perf_counter() - start)
            measured = statistics.median(times)
            shape = cost.Shape(size, size, 1, 1, 9, 9)
            estimate = cost.estimate("fft", shape, dtype, constants)
            transform = "x".join(map(str, cost.fft_size(shape)))
            print(
                f"{dtype:>8} {size:>5} {transform:>11} {measured * 1e3:>9.1f}"
                f" {estimate * 1e3:>9.1f} {measured / estimate:>6.2f}"
            )


if __name__ == "__main__":
    main()
