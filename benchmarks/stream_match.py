"""``convfilt match`` on a scene too big for its memory budget: peak RSS and time.

Run ``.venv/bin/python -m benchmarks.stream_match`` (writes a 12288² RGB tiled TIFF, 432 MiB,
to a temporary folder; a few minutes) or ``--quick`` (4096²). The scene is smooth noise with
a 64² probe pasted in; the TIFF is written tile by tile (tifffile), so this script never holds
the scene either. Then ``convfilt match SCENE PROBE --memory 256M --json`` runs in a child
process, and its peak RSS (``ru_maxrss`` of the child) and wall time are printed with the
match it found. Issue target: peak RSS <= 500 MB, the planted match found.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

TILE = 256
PLANT = (7000, 5000)  # (x, y) of the probe's top-left corner in the full-size scene


def tiles(size: int, probe: np.ndarray, at: tuple[int, int]) -> Iterator[np.ndarray]:
    """The scene's tiles, row by row: noise with the probe pasted at ``at`` (x, y)."""
    rng = np.random.default_rng(1)
    x0, y0 = at
    for top in range(0, size, TILE):
        for left in range(0, size, TILE):
            tile = rng.integers(0, 256, (TILE, TILE, 3), dtype=np.uint8)
            ys = slice(max(top, y0), min(top + TILE, y0 + probe.shape[0]))
            xs = slice(max(left, x0), min(left + TILE, x0 + probe.shape[1]))
            if ys.start < ys.stop and xs.start < xs.stop:
                tile[ys.start - top : ys.stop - top, xs.start - left : xs.stop - left] = probe[
                    ys.start - y0 : ys.stop - y0, xs.start - x0 : xs.stop - x0
                ]
            yield tile


def main(argv: list[str] | None = None) -> None:
    import tifffile
    from PIL import Image

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a 4096² scene")
    parser.add_argument("--memory", default="256M", help="the --memory budget")
    args = parser.parse_args(argv)
    size = 4096 if args.quick else 12288
    at = (PLANT[0] * size // 12288, PLANT[1] * size // 12288)
    probe = np.random.default_rng(2).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    with tempfile.TemporaryDirectory(dir=".") as folder:
        scene_path, probe_path = Path(folder, "scene.tif"), Path(folder, "probe.png")
        tifffile.imwrite(
            scene_path,
            tiles(size, probe, at),
            shape=(size, size, 3),
            dtype=np.uint8,
            tile=(TILE, TILE),
            photometric="rgb",
            bigtiff=True,
        )
        Image.fromarray(probe).save(probe_path)
        command = [sys.executable, "-m", "convfilt", "match", str(scene_path), str(probe_path)]
        command += ["--memory", args.memory, "--json"]
        start = time.perf_counter()
        proc = subprocess.run(command, capture_output=True, text=True, check=False)
        elapsed = time.perf_counter() - start
        peak_mib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    if proc.returncode != 0:
        print(proc.stderr, file=sys.stderr)
        raise SystemExit(proc.returncode)
    best = json.loads(proc.stdout)["matches"][0]
    print(f"scene {size}² RGB uint8 tiled TIFF, probe 64² planted at {at}, --memory {args.memory}")
    print(f"peak RSS {peak_mib:.0f} MiB (target <= 477 MiB = 500 MB), wall {elapsed:.1f} s")
    place = (best["x"], best["y"])
    print(f"found {place} score {best['score']:.6f}: {place == at}")


if __name__ == "__main__":
    main()
