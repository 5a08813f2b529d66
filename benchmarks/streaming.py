"""Huge images in bounded memory, and Dask: the targets of issue 9, measured in one run.

Run ``.venv/bin/python -m benchmarks.streaming`` (``--repeat N``, ``--size N`` for the tiled
TIFF, ``--huge`` to add the 40000x40000 RGB TIFF, ``--quick`` for a smoke run):

- a SIZE x SIZE RGB 8-bit tiled TIFF (default 12288, made once in a temp folder, tiles of
  256): ``convfilt blur IN --sigma 2 --memory 256M -o OUT.tif`` against
  ``vips gaussblur IN OUT.tif 2`` (libvips is skipped, with a message, when absent). Each is
  a separate process, timed on the wall clock; its peak RSS is the kernel's ``ru_maxrss`` of
  that child (``os.wait4``). Targets: peak RSS <= 400 MB, wall time <= 2x vips.
- ``--huge``: the same blur on a 40000x40000 RGB TIFF (4.8 GB); target peak RSS < 1 GB.
- Dask: ``gaussian_blur`` (sigma 2) of a 4096x4096 float32 array on a
  ``distributed.LocalCluster`` of two single-threaded worker processes against the
  in-process call, and whether the results are identical. Target: <= 2x in-process.

The machine is shared (2 cores): medians over ``--repeat`` runs, with min-max spreads.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

TILE = 256


@dataclass
class Runs:
    """Wall seconds and peak RSS (MiB) of repeated runs of one command."""

    seconds: list[float]
    peak_mib: list[float]

    def line(self, name: str) -> str:
        s, m = self.seconds, self.peak_mib
        return (
            f"{name:<34} {statistics.median(s):8.2f} s  [{min(s):.2f}-{max(s):.2f}]"
            f"   peak {statistics.median(m):7.0f} MiB  [{min(m):.0f}-{max(m):.0f}]"
        )


def run_child(command: list[str]) -> tuple[float, float]:
    """Wall seconds and peak RSS (MiB) of one child process; raises if it fails."""
    start = time.perf_counter()
    child = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(child.pid, 0)
    seconds = time.perf_counter() - start
    child.returncode = os.waitstatus_to_exitcode(status)
    error = child.stderr.read().decode() if child.stderr else ""
    if child.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed: {error.strip()[-500:]}")
    return seconds, usage.ru_maxrss / 1024  # KiB on Linux


def repeat(command: list[str], times: int) -> Runs:
    runs = Runs([], [])
    for _ in range(times):
        seconds, peak = run_child(command)
        runs.seconds.append(seconds)
        runs.peak_mib.append(peak)
    return runs


def _tiles(size: int, seed: int) -> Iterator[np.ndarray]:
    """A smooth random field plus noise, RGB uint8, tile by tile (never the whole image)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:TILE, 0:TILE]
    for r0 in range(0, size, TILE):
        for c0 in range(0, size, TILE):
            base = (
                128
                + 60 * np.sin((yy + r0) / 97.0)[..., None] * np.cos((xx + c0) / 131.0)[..., None]
            )
            noise = rng.normal(0, 20, (TILE, TILE, 3))
            yield np.clip(base + noise, 0, 255).astype(np.uint8)


def make_tiff(path: Path, size: int) -> None:
    """A size x size RGB 8-bit tiled (Big)TIFF, uncompressed, written tile by tile."""
    import tifffile

    with tifffile.TiffWriter(path, bigtiff=size * size * 3 > 2**32 - 2**26) as tif:
        tif.write(
            _tiles(size, seed=size),
            shape=(size, size, 3),
            dtype=np.uint8,
            tile=(TILE, TILE),
            photometric="rgb",
            metadata=None,
        )


def bench_file(folder: Path, size: int, times: int, memory: str) -> list[str]:
    """convfilt blur --memory against vips gaussblur on a size^2 RGB tiled TIFF."""
    source = folder / f"rgb{size}.tif"
    if not source.exists():
        start = time.perf_counter()
        make_tiff(source, size)
        print(f"(made {source.name} in {time.perf_counter() - start:.0f} s)", flush=True)
    out = folder / "out.tif"
    convfilt = [sys.executable, "-m", "convfilt", "blur", str(source), "--sigma", "2"]
    convfilt += ["--memory", memory, "-o", str(out), "--force"]
    lines = [f"{size}x{size} RGB 8-bit tiled TIFF, sigma 2:"]
    ours = repeat(convfilt, times)
    lines.append(ours.line(f"convfilt blur --memory {memory}"))
    if shutil.which("vips"):
        theirs = repeat(["vips", "gaussblur", str(source), str(folder / "vips.tif"), "2"], times)
        lines.append(theirs.line("vips gaussblur"))
        ratio = statistics.median(ours.seconds) / statistics.median(theirs.seconds)
        lines.append(f"convfilt / vips wall time (medians): {ratio:.2f}x (target <= 2x)")
    else:
        lines.append("vips: not installed (apt-get install libvips-tools); no anchor this run")
    peak = max(ours.peak_mib)
    lines.append(f"convfilt peak RSS, largest run: {peak:.0f} MiB")
    out.unlink(missing_ok=True)
    return lines


def bench_dask(size: int, times: int) -> list[str]:
    """gaussian_blur on a 2-worker LocalCluster against in-process."""
    try:
        import dask.array as da
        import distributed
    except ImportError:
        return ["dask: not installed (pip install 'convfilt[dask]'); skipped"]
    from convfilt import filters

    image = np.random.default_rng(0).random((size, size), dtype=np.float32)
    filters.gaussian_blur(image, 2.0)  # warm-up, as the workers' below
    local = []
    for _ in range(times):
        start = time.perf_counter()
        expected = filters.gaussian_blur(image, 2.0)
        local.append(time.perf_counter() - start)
    with (
        distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0"
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        # data at rest on the workers, in and out, as a cluster pipeline keeps it (read from
        # and written to a Zarr store there, say): timed is the filter on the cluster; its
        # result is brought here once, untimed, to compare
        stored = client.persist(da.from_array(image, chunks=(1024, size)))
        distributed.wait(stored)
        remote = []
        for run in range(times + 1):  # the first warms the workers up (imports)
            # a fresh name each run, or Dask would hand back the last run's result
            same_input = stored.map_blocks(np.asarray, name=f"input-{run}")
            start = time.perf_counter()
            done = client.persist(filters.gaussian_blur(same_input, 2.0))
            distributed.wait(done)
            remote.append(time.perf_counter() - start)
        remote.pop(0)
        result = done.compute()
    same = bool(np.array_equal(result, expected))
    ratio = statistics.median(remote) / statistics.median(local)
    return [
        f"Dask: gaussian_blur sigma 2 of {size}x{size} float32:",
        f"{'in process':<34} {statistics.median(local):8.3f} s  "
        f"[{min(local):.3f}-{max(local):.3f}]",
        f"{'LocalCluster, 2 workers x 1 thread':<34} {statistics.median(remote):8.3f} s  "
        f"[{min(remote):.3f}-{max(remote):.3f}]",
        f"cluster / in-process (medians): {ratio:.2f}x (target <= 2x); identical: {same} "
        "(the cluster's input and output stay on its workers)",
    ]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--size", type=int, default=12288)
    parser.add_argument("--memory", default="256M")
    parser.add_argument("--huge", action="store_true", help="add the 40000x40000 RGB TIFF")
    parser.add_argument("--quick", action="store_true", help="a smoke run: small sizes")
    parser.add_argument("--keep", type=Path, help="keep the test images in this folder")
    args = parser.parse_args(argv)
    size, dask_size, times = (1024, 512, 1) if args.quick else (args.size, 4096, args.repeat)
    folder = args.keep or Path(tempfile.mkdtemp(prefix="convfilt-streaming-"))
    folder.mkdir(parents=True, exist_ok=True)
    try:
        for line in bench_file(folder, size, times, args.memory):
            print(line, flush=True)
        if args.huge and not args.quick:
            for line in bench_file(folder, 40000, 1, args.memory):
                print(line, flush=True)
        for line in bench_dask(dask_size, max(times, 3)):
            print(line, flush=True)
    finally:
        if args.keep is None:
            shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
