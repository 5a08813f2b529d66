"""``make bench``: every benchmark, one after another, each against its anchor in the same run.

- ``blur_cli``: ``convfilt blur`` end to end vs ImageMagick and libvips (needs the Debian
  packages imagemagick, libvips-tools and time; skipped with a message when they are missing);
- ``engine``: every strategy and ``auto`` vs scipy.signal/scipy.ndimage and OpenCV, and the
  Gaussian blur vs scipy.ndimage, Pillow and OpenCV;
- ``fft_model``: the cost model's FFT estimates against measured transforms, by size;
- ``match``: template matching vs scikit-image and OpenCV;
- ``traps``: issue 15's three performance traps (peak selection, 10^6 x 1 and 1 x 10^6 blurs);
- ``opencv``: the compiled road vs ``cv2.filter2D`` and ``cv2.GaussianBlur`` (float32 and
  uint8 end to end), ratios of medians over alternating rounds;
- ``planner``: ``auto`` on a fresh random grid of image and kernel sizes (a new seed each
  run): share of cells within 1.15x of the best road, worst ratio, speed-up over scipy;
- ``streaming``: a 12288² RGB tiled TIFF blurred with ``--memory 256M`` (peak RSS, time) vs
  ``vips gaussblur`` (said and skipped when vips is absent), and Dask on a 2-worker
  LocalCluster vs in-process (``python -m benchmarks.streaming --huge`` adds 40000²);
- ``nan``: nan_policy omit vs astropy and propagate vs scipy.ndimage on an image with 1% NaN;
- ``deblur``: deconvolution's PSNR (default, no flags) vs scikit-image's best setting, and
  Richardson-Lucy's speed vs scikit-image's;
- ``search``: the scale x rotation search vs OpenCV brute force and one single-scale match;
- ``search_accuracy``: the search's sub-step scale, angle and centre errors on planted probes
  (accuracy, not time);
- ``stream_match``: ``match`` on a 12288² RGB tiled TIFF with ``--memory 256M`` (peak RSS);
- ``convfilt bench``: the CLI's own crossover table on this machine.

Each report is printed and kept in ``out/bench/<name>.txt``. ``--quick`` passes ``--quick``
to each (a smoke run). Timings on a shared machine are noisy: quote ratios within one run.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

OUT = Path("out/bench")
TOOLS = ("/usr/bin/time", "vips")


def _commands(quick: bool) -> dict[str, list[str]]:
    python = sys.executable
    flag = ["--quick"] if quick else []
    bench_grid = ["--sizes", "64..256", "--kernels", "3..17"] if quick else []
    return {
        "blur_cli": [python, "-m", "benchmarks.blur_cli", *flag],
        "engine": [python, "-m", "benchmarks.engine", *flag],
        "fft_model": [python, "-m", "benchmarks.fft_model", *flag],
        "match": [python, "-m", "benchmarks.match", *flag],
        "traps": [python, "-m", "benchmarks.traps", *flag],
        "opencv": [python, "-m", "benchmarks.opencv", *flag],
        "planner": [python, "-m", "benchmarks.planner", *flag],
        "streaming": [python, "-m", "benchmarks.streaming", *flag],
        "nan": [python, "-m", "benchmarks.nan", *flag],
        "deblur": [python, "-m", "benchmarks.deblur", *flag],
        "search": [python, "-m", "benchmarks.search", *flag],
        "search_accuracy": [python, "-m", "benchmarks.search_accuracy", *flag],
        "stream_match": [python, "-m", "benchmarks.stream_match", *flag],
        "convfilt-bench": [python, "-m", "convfilt", "bench", *bench_grid],
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run of each benchmark")
    parser.add_argument("--only", action="append", help="run only this benchmark (repeatable)")
    args = parser.parse_args(argv)
    OUT.mkdir(parents=True, exist_ok=True)
    failed = []
    for name, command in _commands(args.quick).items():
        if args.only and name not in args.only:
            continue
        if name == "blur_cli" and not all(shutil.which(tool) for tool in TOOLS):
            print(f"== {name}: skipped (apt-get install imagemagick libvips-tools time)")
            continue
        print(f"== {name}: {' '.join(command[1:])}", flush=True)
        proc = subprocess.run(command, capture_output=True, text=True, check=False)
        print(proc.stdout, end="")
        (OUT / f"{name}.txt").write_text(proc.stdout)
        if proc.returncode != 0:
            failed.append(name)
            print(proc.stderr[-2000:], file=sys.stderr)
    if failed:
        raise SystemExit(f"failed: {', '.join(failed)}")


if __name__ == "__main__":
    main()
