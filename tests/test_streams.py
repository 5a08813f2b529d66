"""streams.py and the CLI's --memory: TIFF/Zarr read by rows, written by tiles, atomically;
streamed results equal the in-memory ones; one-line refusals."""

from __future__ import annotations

import subprocess
import sys
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tifffile
from PIL import Image
from typer.testing import CliRunner

from convfilt import filters, streams, tiles
from convfilt.cli import app
from convfilt.errors import ConvfiltError, UsageError

ICC = b"\x00\x00\x02\x0c" + b"fake icc profile for the test" * 4
LAYOUTS = [
    pytest.param({"tile": (64, 48)}, id="tiled"),
    pytest.param({"rowsperstrip": 7}, id="striped"),
    pytest.param({"tile": (32, 32), "compression": "zlib"}, id="tiled-deflate"),
    pytest.param({"rowsperstrip": 16, "compression": "lzw", "bigtiff": True}, id="bigtiff-lzw"),
]
PIXELS = [
    pytest.param("uint8", 3, id="rgb8"),
    pytest.param("uint16", 1, id="grey16"),
    pytest.param("float32", 4, id="rgba-float"),
    pytest.param("uint8", 2, id="grey-alpha8"),
]


def make_tiff(
    path: Path, dtype: str, channels: int, layout: dict, height: int = 203, width: int = 150
) -> np.ndarray:
    rng = np.random.default_rng(channels)
    shape = (height, width, channels) if channels > 1 else (height, width)
    scale = {"uint8": 255, "uint16": 65535, "float32": 1}[dtype]
    pixels = (rng.random(shape) * scale).astype(dtype)
    options = dict(layout)
    bigtiff = options.pop("bigtiff", False)
    extras: dict[str, Any] = {"extrasamples": ["unassalpha"]} if channels in (2, 4) else {}
    with tifffile.TiffWriter(path, bigtiff=bigtiff) as tif:
        tif.write(
            pixels,
            photometric="rgb" if channels >= 3 else "minisblack",
            resolution=(300, 300),
            resolutionunit="INCH",
            iccprofile=ICC,
            extratags=[(315, "s", 0, "the artist", True)],
            metadata=None,
            **extras,
            **options,
        )
    return pixels


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize(("dtype", "channels"), PIXELS)
def test_tiff_rows_read_any_band(tmp_path: Path, layout: dict, dtype: str, channels: int):
    path = tmp_path / "in.tif"
    pixels = make_tiff(path, dtype, channels, layout)
    reader = streams.TiffRows(path)
    try:
        assert reader.shape == pixels.shape and reader.dtype == pixels.dtype
        assert reader.has_alpha == (channels in (2, 4))
        for rows in (slice(0, 203), slice(5, 6), slice(63, 130), slice(190, 203)):
            np.testing.assert_array_equal(reader[rows], pixels[rows])
    finally:
        reader.close()


@pytest.mark.parametrize("layout", LAYOUTS[:2])
@pytest.mark.parametrize(("dtype", "channels"), PIXELS)
def test_streamed_file_equals_the_in_memory_filter(
    tmp_path: Path, layout: dict, dtype: str, channels: int
):
    source, target = tmp_path / "in.tif", tmp_path / "out.tif"
    pixels = make_tiff(source, dtype, channels, layout)
    blur = partial(filters.gaussian_blur, sigma=3.0, mode="wrap", has_alpha=channels in (2, 4))
    reader = streams.TiffRows(source)
    route = streams.Route(0, 0, reader, tiles.Layout(203, 150, 64, 12, "separable"))
    streams.filter_file(route, target, blur, mode="wrap", force=False)
    with tifffile.TiffFile(target) as tif:
        page = tif.pages.first
        assert page.is_tiled
        np.testing.assert_array_equal(page.asarray(), blur(pixels, strategy="separable"))
        assert page.tags["XResolution"].value == (300, 1)
        assert page.tags["ResolutionUnit"].value == 2
        assert page.tags["InterColorProfile"].value == ICC
        assert page.tags["Artist"].value == "the artist"
        assert len(page.extrasamples) == (1 if channels in (2, 4) else 0)


GEOTIFF_TAGS: list[tuple[int, int | str, int, Any]] = [
    (33550, 12, 3, (0.5, 0.5, 0.0)),  # ModelPixelScale
    (33922, 12, 6, (0.0, 0.0, 0.0, 500000.0, 4100000.0, 0.0)),  # ModelTiepoint
    (34735, 3, 16, (1, 1, 0, 3, 1024, 0, 1, 1, 1025, 0, 1, 1, 3072, 0, 1, 32633)),  # GeoKeys
    (34737, "s", 0, "WGS 84 / UTM zone 33N|"),  # GeoAsciiParams
    (42112, "s", 0, "<GDALMetadata>°C</GDALMetadata>".encode()),  # GDAL_METADATA, not ASCII
    (42113, "s", 0, "0"),  # GDAL_NODATA
    (306, "s", 0, "2026:11:29 12:00:00"),  # DateTime
    (700, 1, 11, b"<x:xmpmeta/"),  # XMP
]


def test_a_streamed_geotiff_keeps_its_georeferencing_and_metadata(tmp_path: Path) -> None:
    source, target = tmp_path / "in.tif", tmp_path / "out.tif"
    pixels = (np.random.default_rng(3).random((203, 150, 3)) * 255).astype(np.uint8)
    tags = [(*tag, True) for tag in GEOTIFF_TAGS]
    tifffile.imwrite(source, pixels, tile=(64, 64), photometric="rgb", extratags=tags)
    reader = streams.TiffRows(source)
    route = streams.Route(0, 0, reader, tiles.Layout(203, 150, 64, 12, "separable"))
    blur = partial(filters.gaussian_blur, sigma=3.0)
    streams.filter_file(route, target, blur, mode="reflect", force=False)
    with tifffile.TiffFile(source) as before, tifffile.TiffFile(target) as after:
        for code, *_ in GEOTIFF_TAGS:
            was, now = before.pages.first.tags[code].value, after.pages.first.tags[code].value
            assert (now if isinstance(now, str | bytes) else tuple(now)) == (
                was if isinstance(was, str | bytes) else tuple(was)
            ), code
        keys = after.pages.first.geotiff_tags
        assert keys is not None and keys["ProjectedCSTypeGeoKey"] == 32633


def test_bigtiff_input_stays_bigtiff(tmp_path: Path) -> None:
    source, target = tmp_path / "in.tif", tmp_path / "out.tif"
    make_tiff(source, "uint8", 3, {"tile": (32, 32), "bigtiff": True})
    route = streams.Route(0, 0, streams.TiffRows(source), tiles.Layout(203, 150, 64, 2, "direct"))
    streams.filter_file(
        route, target, partial(filters.box_blur, radius=2), mode="reflect", force=False
    )
    with tifffile.TiffFile(target) as tif:
        assert tif.is_bigtiff


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(".cf"))


@pytest.mark.parametrize("suffix", [".tif", ".zarr"])
def test_a_failure_leaves_no_output(tmp_path: Path, suffix: str) -> None:
    source, target = tmp_path / "in.tif", tmp_path / f"out{suffix}"
    make_tiff(source, "uint8", 3, {"tile": (64, 64)})

    def fails_late(pixels: np.ndarray, *, band=None) -> np.ndarray:
        if band is not None and band.start >= 128:
            raise KeyboardInterrupt  # Ctrl-C in the middle of the run
        return filters.box_blur(pixels, 1, band=band)

    route = streams.Route(0, 0, streams.TiffRows(source), tiles.Layout(203, 150, 64, 1, "direct"))
    with pytest.raises(KeyboardInterrupt):
        streams.filter_file(route, target, fails_late, mode="reflect", force=False)
    assert not target.exists() and leftovers(tmp_path) == []


def test_existing_output_kept_on_failure(tmp_path: Path) -> None:
    source, target = tmp_path / "in.tif", tmp_path / "out.tif"
    make_tiff(source, "uint8", 1, {"tile": (64, 64)})
    target.write_bytes(b"precious")

    def broken(pixels: np.ndarray, *, band=None) -> np.ndarray:
        raise RuntimeError("broken filter")

    route = streams.Route(0, 0, streams.TiffRows(source), tiles.Layout(203, 150, 64, 1, "direct"))
    with pytest.raises(RuntimeError):
        streams.filter_file(route, target, broken, mode="reflect", force=True)
    assert target.read_bytes() == b"precious" and leftovers(tmp_path) == []


def test_zarr_round_trip(tmp_path: Path) -> None:
    zarr = pytest.importorskip("zarr")
    pixels = (np.random.default_rng(0).random((150, 90, 3)) * 65535).astype(np.uint16)
    source = tmp_path / "in.zarr"
    zarr.create_array(store=str(source), shape=pixels.shape, chunks=(40, 40, 3), dtype="uint16")[
        :
    ] = pixels
    reader = streams.open_rows(source)
    assert isinstance(reader, streams.ZarrRows) and not reader.has_alpha
    blur = partial(filters.gaussian_blur, sigma=2.0, mode="mirror")
    route = streams.Route(0, 0, reader, tiles.Layout(150, 90, 64, 8, "separable"))
    streams.filter_file(route, tmp_path / "out.zarr", blur, mode="mirror", force=False)
    written = zarr.open_array(str(tmp_path / "out.zarr"), mode="r")
    assert written.metadata.zarr_format == 3
    np.testing.assert_array_equal(written[:], blur(pixels, strategy="separable"))
    assert leftovers(tmp_path) == []


def test_unstreamable_tiff_named(tmp_path: Path) -> None:
    path = tmp_path / "planar.tif"
    tifffile.imwrite(
        path, np.zeros((3, 20, 20), np.uint8), photometric="rgb", planarconfig="separate"
    )
    with pytest.raises(ConvfiltError, match=r"planar-separate.*cannot be streamed"):
        streams.TiffRows(path)


# --- the command line ----------------------------------------------------------------------------

runner = CliRunner()
BIG = {"height": 2000, "width": 600}  # ~80 MB in memory: streams under a 60M budget


@pytest.fixture(scope="module")
def big_rgb(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray]:
    source = tmp_path_factory.mktemp("big") / "in.tif"
    return source, make_tiff(source, "uint8", 3, {"tile": (64, 64)}, **BIG)


def test_cli_streams_and_matches_the_in_memory_run(tmp_path: Path, big_rgb) -> None:
    """The same road streamed and in memory: the same bytes. (On auto the two may take
    different roads, each within tolerance: the compiled road's resident code does not fit a
    60M budget, and a process that has loaded it takes it in memory.)"""
    source, pixels = big_rgb
    road = ["--strategy", "separable", "--explain"]
    streamed = runner.invoke(
        app, ["blur", str(source), "-o", str(tmp_path / "s.tif"), "--memory", "60M", *road]
    )
    assert streamed.exit_code == 0, streamed.output
    assert "streamed: 6 bands of 384x600" in streamed.output
    whole = runner.invoke(app, ["blur", str(source), "-o", str(tmp_path / "m.tif"), *road])
    assert whole.exit_code == 0 and "in memory" in whole.output
    a, b = tifffile.imread(tmp_path / "s.tif"), tifffile.imread(tmp_path / "m.tif")
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(a, filters.gaussian_blur(pixels, 2.0, strategy="separable"))
    assert not list(tmp_path.glob(".cf*"))  # no temporary left beside the outputs


def test_cli_writes_and_reads_zarr_arrays(tmp_path: Path, big_rgb) -> None:
    pytest.importorskip("zarr")
    source, pixels = big_rgb
    road = ["--strategy", "separable"]
    out = tmp_path / "out.zarr"
    done = runner.invoke(app, ["blur", str(source), "-o", str(out), *road])
    assert done.exit_code == 0, done.output
    expected = filters.gaussian_blur(pixels, 2.0, strategy="separable")
    reader = streams.open_rows(out)
    try:
        np.testing.assert_array_equal(reader[0 : pixels.shape[0]], expected)
    finally:
        reader.close()
    again = runner.invoke(app, ["blur", str(out), "--sigma", "1", *road])  # out-blur.zarr
    assert again.exit_code == 0, again.output
    assert (tmp_path / "out-blur.zarr").is_dir()
    refused = runner.invoke(app, ["blur", str(source), "-o", str(out), *road])
    assert refused.exit_code == 2 and "exists" in refused.output
    forced = runner.invoke(app, ["blur", str(source), "-o", str(out), "--force", "--sigma", "3"])
    assert forced.exit_code == 0, forced.output
    reader = streams.open_rows(out)
    try:
        assert not np.array_equal(reader[0 : pixels.shape[0]], expected)  # the new blur
    finally:
        reader.close()
    contradicted = runner.invoke(app, ["blur", str(source), "-o", "x.zarr", "--format", "png"])
    assert contradicted.exit_code == 2 and "contradicts" in contradicted.output
    (tmp_path / "plain.zarr").mkdir()  # a folder named .zarr that holds no Zarr array
    (tmp_path / "plain.zarr" / "keep.txt").write_text("mine")
    kept = runner.invoke(app, ["blur", str(source), "-o", str(tmp_path / "plain.zarr"), "-f"])
    assert kept.exit_code == 2 and "is a folder" in kept.output
    assert (tmp_path / "plain.zarr" / "keep.txt").read_text() == "mine"
    Image.fromarray(pixels[:50, :60]).save(tmp_path / "small.png")
    whole = runner.invoke(
        app, ["blur", str(tmp_path / "small.png"), "-o", str(tmp_path / "p.zarr")]
    )
    assert whole.exit_code == 2 and "decoded whole" in whole.output
    assert not (tmp_path / "p.zarr").exists()
    assert not list(tmp_path.glob(".cf*"))


ARGS = ["--memory", "50M", "--amount", "2", "--explain"]


def test_cli_subprocess_sharpen_streams(tmp_path: Path) -> None:
    source = tmp_path / "in.tif"
    pixels = make_tiff(source, "uint16", 1, {"rowsperstrip": 10}, **BIG)
    target = tmp_path / "out.tif"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "convfilt",
            "sharpen",
            str(source),
            "-o",
            str(target),
            "--memory",
            "50M",
            "--amount",
            "2",
            "--explain",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "streamed: 32 bands of 64x600" in done.stderr
    expected = filters.unsharp_mask(pixels, 1.0, 2.0)
    # this process may take the compiled road (loaded by earlier tests), the fresh one the
    # BLAS roads: float32 sums in another order can round a tie to the other level
    difference = np.abs(tifffile.imread(target).astype(np.int64) - expected)
    assert difference.max() <= 1 and np.mean(difference) < 0.01


@pytest.mark.parametrize("memory", ["lots", "12Q", "-3M", "0"])
def test_cli_malformed_memory(tmp_path: Path, memory: str) -> None:
    source = tmp_path / "in.tif"
    make_tiff(source, "uint8", 1, {"tile": (64, 64)})
    result = runner.invoke(
        app, ["blur", str(source), "-o", str(tmp_path / "o.tif"), "--memory", memory]
    )
    assert result.exit_code == 2
    assert "--memory must be a size" in result.output and len(result.output.splitlines()) == 1


def test_cli_budget_too_small_names_the_minimum(tmp_path: Path) -> None:
    source = tmp_path / "in.tif"
    make_tiff(source, "uint8", 1, {"tile": (64, 64)})
    result = runner.invoke(
        app, ["blur", str(source), "-o", str(tmp_path / "o.tif"), "--memory", "1M"]
    )
    assert result.exit_code == 2 and "at least" in result.output
    assert not (tmp_path / "o.tif").exists()


def test_cli_huge_png_refused_up_front(tmp_path: Path) -> None:
    source = tmp_path / "big.png"
    Image.new("RGB", (1500, 1500)).save(source)
    result = runner.invoke(
        app, ["blur", str(source), "-o", str(tmp_path / "o.tif"), "--memory", "55M"]
    )
    assert result.exit_code == 1
    line = result.output.strip()
    assert "1500x1500" in line and ".tif, .zarr" in line and "--memory" in line
    assert len(line.splitlines()) == 1


def test_cli_streamed_image_to_png_suggests_tiff(tmp_path: Path, big_rgb) -> None:
    source, _ = big_rgb
    result = runner.invoke(
        app, ["blur", str(source), "-o", str(tmp_path / "o.png"), "--memory", "60M"]
    )
    assert result.exit_code == 2 and ".tif or .zarr" in result.output
    assert not (tmp_path / "o.png").exists()


def test_route_errors_are_library_errors(tmp_path: Path, big_rgb) -> None:
    source, _ = big_rgb
    kernel = np.ones((5, 5)) / 25
    with pytest.raises(UsageError):
        streams.route(
            str(source),
            str(tmp_path / "o.jpg"),
            kernel,
            mode="reflect",
            strategy="auto",
            budget=60 * 2**20,
        )
    fits = streams.route(
        str(source), str(tmp_path / "o.jpg"), kernel, mode="reflect", strategy="auto", budget=2**30
    )
    assert fits.layout is None and "in memory" in fits.describe()


# --- one road for the whole image ----------------------------------------------------------------


def overflowing_bottom() -> tuple[np.ndarray, np.ndarray]:
    """A float32 image whose bottom rows are so large that a float32 transform of them could
    overflow (the top rows not), and a kernel for which the planner otherwise takes the FFT."""
    rng = np.random.default_rng(3)
    pixels = rng.random((700, 300)).astype(np.float32)
    pixels[600:] *= np.float32(1e34)
    return pixels, rng.standard_normal((21, 21))


def test_every_streamed_band_takes_the_road_decided_for_the_whole_image(tmp_path: Path) -> None:
    pixels, kernel = overflowing_bottom()
    source, target = tmp_path / "in.tif", tmp_path / "out.tif"
    tifffile.imwrite(source, pixels, tile=(128, 128))
    plans: list[Any] = []
    func = partial(filters.convolve_image, kernel=kernel, correlate=True, on_plan=plans.append)
    for band in tiles.bands(700, 256, 10, "reflect"):  # each band planning for itself
        func(pixels[band.held], band=band)
    alone = [plan.strategy for plan in plans]
    assert alone[0] == "fft" and alone[-1] not in ("fft", "overlap-add")  # they would differ
    plans.clear()
    budget = tiles.FIXED_BYTES + 4_800_000
    route = streams.route(str(source), str(target), kernel, mode="reflect", strategy="auto",
                          budget=budget)  # fmt: skip
    assert route.layout is not None and route.layout.count == 3
    road = route.plan.strategy  # decided once, with the image's max|x|: no transform
    assert road not in ("fft", "overlap-add") and route.layout.strategy == road
    streams.filter_file(route, target, func, mode="reflect", force=False)
    assert [plan.strategy for plan in plans] == [road] * 3
    np.testing.assert_array_equal(tifffile.imread(target), func(pixels, strategy=road))


def test_streamed_explain_reports_the_one_road(tmp_path: Path) -> None:
    pixels, kernel = overflowing_bottom()
    source, target = tmp_path / "in.tif", tmp_path / "out.tif"
    tifffile.imwrite(source, pixels, tile=(128, 128))
    np.savetxt(tmp_path / "k.txt", kernel)
    args = ["convolve", str(source), "--kernel", str(tmp_path / "k.txt"), "--correlate"]
    result = CliRunner().invoke(app, [*args, "-o", str(target), "--memory", "53M", "--explain"])
    assert result.exit_code == 0, result.output
    road = streams.route(str(source), str(target), kernel, mode="reflect", strategy="auto",
                         budget=53 * 2**20).plan.strategy  # fmt: skip
    assert f"bands of 256x300 (halo 10 rows) through {road}" in result.output
    assert result.output.count("(chosen)") == 1 and "forced by" not in result.output


def test_a_budget_no_road_fits_names_the_least_any_road_needs(
    tmp_path: Path, big_rgb, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The compiled road (its one-time cost paid, so the planner's first pick) keeps ~128 MiB
    of code resident: a budget too small for every road is told the least any road needs,
    not the compiled road's."""
    from convfilt import engine, kernels

    monkeypatch.setattr(engine, "_compiled_one_time", lambda problem, constants: 0.0)
    source, _ = big_rgb
    kernel = np.outer(kernels.gaussian_1d(2.0), kernels.gaussian_1d(2.0))
    header = tifffile.TiffFile(source)
    shape, dtype = header.pages.first.shape, np.dtype(header.pages.first.dtype)
    header.close()
    plan = engine.plan(shape, kernel, dtype=dtype, work=np.float32, stored=True)
    assert plan.strategy == "compiled"
    least = {
        road: tiles.least_budget(shape, dtype, reach=8, strategy=road) for road in plan.estimates
    }
    smallest = min(least.values())
    assert smallest < least["compiled"]
    budget = smallest - 2**20
    with pytest.raises(UsageError, match=f"needs at least {tiles.format_size(smallest)}"):
        streams.route(str(source), str(tmp_path / "o.tif"), kernel, mode="reflect",
                      strategy="auto", budget=budget)  # fmt: skip
    route = streams.route(str(source), str(tmp_path / "o.tif"), kernel, mode="reflect",
                          strategy="auto", budget=least["compiled"] - 2**20)  # fmt: skip
    assert route.plan.strategy != "compiled" and "resident code" in route.plan.reason
