"""The three performance traps of issue 15, each against an anchor in the same run.

Run ``.venv/bin/python -m benchmarks.traps`` (about a minute) or ``--quick``. Each case runs in
a fresh interpreter, so its peak resident size (``ru_maxrss``) is its own:

- ``top``: ``find_matches(top=10**6, min_distance=1)`` and ``min_distance=3`` on the NCC map of
  a 1024x1024 noise scene (about 10^5 local maxima); anchor: ``np.argsort`` of the same map
  (the sort the peak selection cannot beat).
- ``tall`` / ``wide``: ``gaussian_blur`` at sigma 50 of a 10^6 x 1 and a 1 x 10^6 float32
  image; anchor: ``scipy.ndimage.gaussian_filter1d`` along the long axis (the kernel along the
  short axis reads one pixel, so the blur is this 1-D filter).

Printed: median wall time of ``--repeat`` runs (after a warm-up), the spread (min-max), the
ratio to the anchor's median and the peak memory. Timings on a shared machine are noisy:
compare the ratios within one run.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

CASE = """
import json, resource, statistics, sys, time
import numpy as np
name, repeat = sys.argv[1], int(sys.argv[2])
rng = np.random.default_rng(0)
if name.startswith("top"):
    from convfilt.matching import find_matches, match_template
    scene = rng.random((1024, 1024)).astype(np.float32)
    scores = match_template(scene, scene[100:116, 200:216])
    distance = 1 if name == "top" else 3
    run = lambda: find_matches(scores, probe_shape=(16, 16), top=10**6, min_distance=distance)
    anchor = lambda: np.argsort(-scores, axis=None, kind="stable")
else:
    from scipy import ndimage
    from convfilt import gaussian_blur
    image = rng.random((10**6, 1) if name == "tall" else (1, 10**6)).astype(np.float32)
    axis = 0 if name == "tall" else 1
    run = lambda: gaussian_blur(image, 50.0)
    anchor = lambda: ndimage.gaussian_filter1d(image, 50.0, axis=axis)
def times(call):
    call()
    out = []
    for _ in range(repeat):
        start = time.perf_counter(); call(); out.append(time.perf_counter() - start)
    return out
ours, theirs = times(run), times(anchor)
print(json.dumps({"ours": ours, "anchor": theirs,
                  "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="one timed run per case")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args(argv)
    repeat = 1 if args.quick else args.repeat
    heads = ("case", "median ms", "spread ms", "anchor ms", "ratio", "peak MB")
    print(" ".join(f"{h:>{w}}" for h, w in zip(heads, (6, 10, 18, 10, 7, 8), strict=True)))
    for name in ("top", "top3", "tall", "wide"):
        done = subprocess.run(
            [sys.executable, "-c", CASE, name, str(repeat)],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        result = json.loads(done.stdout)
        ours, anchor = sorted(result["ours"]), sorted(result["anchor"])
        median, reference = ours[len(ours) // 2] * 1e3, anchor[len(anchor) // 2] * 1e3
        spread = f"{ours[0] * 1e3:.1f}-{ours[-1] * 1e3:.1f}"
        print(
            f"{name:<6} {median:>10.1f} {spread:>18} {reference:>10.1f} "
            f"{median / reference:>7.2f} {result['peak_mb']:>8.0f}"
        )


if __name__ == "__main__":
    main()
