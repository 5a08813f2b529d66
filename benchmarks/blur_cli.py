"""End-to-end blur benchmark: ``convfilt blur`` against ImageMagick and libvips, in one run.

Run ``.venv/bin/python -m benchmarks.blur_cli`` (``--repeat N``, ``--size N`` for the large
image, ``--quick`` for a smoke run). For samples/face.png (512x512 RGB) and a generated
4096x4096 RGB PNG (a smooth random field plus noise, made once in a temp folder) it times,
as separate processes, with the median of ``--repeat`` runs each:

- ``convfilt blur IN --sigma 2 -o OUT``
- ``convert IN -blur 0x2 OUT`` (ImageMagick 6; radius 0 lets it choose the reach, where the
  Gaussian falls below one quantum level: about 4.7 sigma at Q16, close to our 4 sigma)
- ``vips gaussblur IN OUT 2`` (libvips defaults: the kernel stops where it falls to 0.2 of
  its peak, ~1.8 sigma, and uses integer weights for 8-bit images: faster, less exact)

It prints each tool's peak RSS (GNU ``/usr/bin/time -f %M``), ``convfilt --help`` wall time,
the ratios, how far each tool's output is from convfilt's (same sigma, interior pixels only,
since the edge rules differ: ImageMagick repeats the edge pixel, we reflect), and where
convfilt's own time goes on the large image (decode, filter, encode; and PNG encode time at a
few zlib levels). Timings on a shared machine are noisy: compare within one run.
"""

from __future__ import annotations

import argparse
import compileall
import io
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

import convfilt

SAMPLE = Path(__file__).resolve().parent.parent / "samples" / "face.png"
SIGMA = 2.0
TIME = "/usr/bin/time"  # GNU time, for the peak RSS of each run
# Debian's ImageMagick by its full path: a `convert` earlier on PATH may be a wrapper script
# (this workplace has one), whose start-up would be charged to ImageMagick.
CONVERT = "/usr/bin/convert" if Path("/usr/bin/convert").exists() else "convert"
BORDER = 16  # pixels left out of output comparisons: every tool has its own edge rule


@dataclass
class Timing:
    """The runs of one command: wall seconds and peak RSS (KiB) per run."""

    seconds: list[float]
    peak_kib: list[int]

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)


def run_once(command: Sequence[str]) -> tuple[float, int]:
    """Run ``command`` (output discarded); return its wall seconds and peak RSS in KiB.

    The RSS comes from ``/usr/bin/time -f %M``: a child forked from this (large) Python
    process would count the parent's pages in its own maximum before it execs.
    """
    with tempfile.NamedTemporaryFile("r", suffix=".rss") as report:
        start = time.perf_counter()
        done = subprocess.run(
            [TIME, "-f", "%M", "-o", report.name, *command],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            check=False,
        )
        elapsed = time.perf_counter() - start
        if done.returncode != 0:
            error = done.stderr.decode(errors="replace").strip()
            raise SystemExit(f"{' '.join(command)} failed ({done.returncode}): {error}")
        return elapsed, int(report.read().split()[-1])


def time_command(command: Sequence[str], repeat: int) -> Timing:
    """``repeat`` runs of ``command`` after one untimed warm-up (disk cache, page cache)."""
    run_once(command)
    runs = [run_once(command) for _ in range(repeat)]
    return Timing([s for s, _ in runs], [kib for _, kib in runs])


def make_large_png(path: Path, size: int) -> None:
    """A natural-ish RGB image: a smooth random field (bicubic zoom) plus sensor-like noise."""
    import scipy.ndimage as ndi
    from PIL import Image

    rng = np.random.default_rng(2024)
    cells = max(size // 64, 2)
    field = np.stack(
        [ndi.zoom(rng.random((cells, cells)), size / cells, order=3) for _ in range(3)], axis=-1
    )[:size, :size]
    field = (field - field.min()) / np.ptp(field) * 200 + 20
    pixels = np.clip(field + rng.normal(0, 8, field.shape), 0, 255).astype(np.uint8)
    Image.fromarray(pixels).save(path)


def commands(source: Path, out: Path) -> dict[str, list[str]]:
    """The three contenders on one input, each writing PNG to ``out`` with its own suffix."""
    sigma = f"{SIGMA:g}"
    return {
        "convfilt": [
            sys.executable, "-m", "convfilt", "blur", str(source), "--sigma", sigma,
            "-o", str(out.with_name("convfilt.png")), "--force",
        ],
        "imagemagick": [
            CONVERT, str(source), "-blur", f"0x{sigma}", str(out.with_name("im.png")),
        ],
        "vips": ["vips", "gaussblur", str(source), str(out.with_name("vips.png")), sigma],
    }  # fmt: skip


def interior_difference(a: Path, b: Path) -> tuple[float, int]:
    """Mean and max absolute difference (grey levels) of two 8-bit images, away from edges."""
    from PIL import Image

    x = np.asarray(Image.open(a).convert("RGB"), dtype=np.int16)[BORDER:-BORDER, BORDER:-BORDER]
    y = np.asarray(Image.open(b).convert("RGB"), dtype=np.int16)[BORDER:-BORDER, BORDER:-BORDER]
    diff = np.abs(x - y)
    return float(diff.mean()), int(diff.max())


def comparability(source: Path, work: Path) -> list[str]:
    """How close each tool's blur is to convfilt's at the same sigma (interior pixels)."""
    reference = work / "convfilt.png"
    matched_vips = work / "vips-matched.png"
    subprocess.run(
        ["vips", "gaussblur", str(source), str(matched_vips), f"{SIGMA:g}",
         "--min-ampl", "0.001", "--precision", "float"],
        check=True,
    )  # fmt: skip
    rows = []
    for label, path in (
        ("imagemagick -blur 0x2", work / "im.png"),
        ("vips gaussblur 2 (defaults)", work / "vips.png"),
        ("vips gaussblur 2 --min-ampl 0.001 --precision float", matched_vips),
    ):
        mean, worst = interior_difference(reference, path)
        rows.append(f"  {label:<54} mean |diff| {mean:5.2f}  max {worst:3d} grey levels")
    return rows


def where_time_goes(source: Path, work: Path, repeat: int) -> list[str]:
    """convfilt's own stages in one process (median of ``repeat``), and PNG zlib levels."""
    from PIL import Image

    from convfilt import filters, images

    def median_of(step: object) -> float:
        times = []
        for _ in range(repeat):
            start = time.perf_counter()
            step()  # type: ignore[operator]
            times.append(time.perf_counter() - start)
        return statistics.median(times)

    picture = images.load(source)
    blurred = filters.gaussian_blur(picture.pixels, SIGMA, has_alpha=picture.has_alpha)
    result = replace(picture, pixels=blurred)
    target = work / "stages.png"
    stages = {
        "decode (images.load)": median_of(lambda: images.load(source)),
        "filter (filters.gaussian_blur)": median_of(
            lambda: filters.gaussian_blur(picture.pixels, SIGMA, has_alpha=picture.has_alpha)
        ),
        "encode + write (images.save)": median_of(lambda: images.save(result, target, force=True)),
    }
    rows = [f"  {name:<34} {seconds:7.3f} s" for name, seconds in stages.items()]
    encoded = Image.fromarray(np.ascontiguousarray(blurred))
    for level in (1, 3, 6):
        seconds = median_of(
            lambda level=level: encoded.save(io.BytesIO(), "PNG", compress_level=level)
        )
        buffer = io.BytesIO()
        encoded.save(buffer, "PNG", compress_level=level)
        rows.append(
            f"  Pillow PNG encode, compress_level={level}  {seconds:7.3f} s  "
            f"{len(buffer.getvalue()) / 2**20:6.1f} MiB"
        )
    return rows


def table(name: str, timings: dict[str, Timing]) -> list[str]:
    base = timings["convfilt"].median
    rows = [
        f"{name}",
        f"  {'tool':<12} {'median s':>9} {'runs':>5} {'peak RSS':>10} {'x convfilt':>11}",
    ]
    for tool, timing in timings.items():
        ratio = timing.median / base
        rows.append(
            f"  {tool:<12} {timing.median:9.3f} {len(timing.seconds):5d} "
            f"{max(timing.peak_kib) / 1024:8.0f} MB {ratio:10.2f}x"
        )
    im = timings["imagemagick"].median
    rows.append(f"  convfilt is {im / base:.2f}x as fast as ImageMagick (>1 = faster)")
    return rows


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=5, help="timed runs per command (>= 5)")
    parser.add_argument("--size", type=int, default=4096, help="side of the generated image")
    parser.add_argument("--quick", action="store_true", help="smoke run: 2 repeats, 1024 px")
    args = parser.parse_args(argv)
    repeat, size = (2, 1024) if args.quick else (args.repeat, args.size)
    for tool in (CONVERT, "vips", TIME):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} not found (apt packages imagemagick, libvips-tools, time)")
    versions = [
        subprocess.run(command, capture_output=True, text=True, check=True).stdout.split("\n")[0]
        for command in ([CONVERT, "-version"], ["vips", "--version"])
    ]
    lines = [f"peers: {versions[0]}; {versions[1]}", f"repeat {repeat}, sigma {SIGMA:g}"]

    # time convfilt as an installed package starts: with its bytecode, which pip compiles at
    # install but not for an editable install; under PYTHONDONTWRITEBYTECODE=1 (set on the
    # build machine) every start would otherwise compile every module, ~30 ms
    compileall.compile_dir(Path(convfilt.__file__).parent, quiet=1)
    with tempfile.TemporaryDirectory(prefix="convfilt-bench-") as folder:
        work = Path(folder)
        large = work / f"large-{size}.png"
        make_large_png(large, size)
        help_timing = time_command([sys.executable, "-m", "convfilt", "--help"], repeat)
        lines.append(f"convfilt --help: median {help_timing.median:.3f} s")
        for label, source in ((f"{SAMPLE.name} (512x512 RGB)", SAMPLE),
                              (f"generated {size}x{size} RGB PNG", large)):  # fmt: skip
            runs = {
                tool: time_command(command, repeat)
                for tool, command in commands(source, work / "out.png").items()
            }
            lines += ["", *table(label, runs), "  output vs convfilt (interior):"]
            lines += comparability(source, work)
        lines += ["", f"where convfilt's time goes on {size}x{size} (in-process, median):"]
        lines += where_time_goes(large, work, repeat)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
