"""Matching a scene by tiles (convfilt.scan) gives the whole scene's matches."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from convfilt.cli import app
from convfilt.matching import Match, UnscoredError, find_matches, match_template
from convfilt.scan import scan_matches, tiling


def pasted(seed: int, shape: tuple[int, ...] = (300, 260)) -> tuple[np.ndarray, np.ndarray]:
    """A noisy scene holding several copies of a probe, some across the tiles' seams."""
    rng = np.random.default_rng(seed)
    scene = rng.random(shape)
    probe = rng.random((20, 17, *shape[2:]))
    for y, x in ((0, 0), (54, 60), (120, 90), (127, 190), (250, 240), (280, 10)):
        scene[y : y + 20, x : x + 17] = probe + 0.05 * rng.random(probe.shape)
    return scene, probe


def assert_same(tiled: list[Match], whole: list[Match], tol: float = 1e-9) -> None:
    """The same matches: positions exact, scores and subpixel corners within ``tol`` (each
    tile's sums round differently, being centred on the tile's own mean)."""
    assert [(m.x, m.y, m.width, m.height) for m in tiled] == [
        (m.x, m.y, m.width, m.height) for m in whole
    ]
    for a, b in zip(tiled, whole, strict=True):
        assert (a.score, a.x_subpixel, a.y_subpixel) == (
            pytest.approx(b.score, abs=tol),
            pytest.approx(b.x_subpixel, abs=tol * 1e3),
            pytest.approx(b.y_subpixel, abs=tol * 1e3),
        )


@pytest.mark.parametrize("budget", [2**20, 2**22, 2**30])
@pytest.mark.parametrize("channels", [(), (3,)])
def test_tiles_give_the_whole_scenes_matches(budget: int, channels: tuple[int, ...]) -> None:
    scene, probe = pasted(1, (300, 260, *channels))
    whole = find_matches(match_template(scene, probe), probe_shape=probe.shape, top=50)
    budget *= 3 if channels else 1
    tiled = scan_matches(scene, probe, budget=budget, top=50)
    assert_same(tiled, whole)
    assert tiling(scene.shape, probe.shape, 8, budget).rows < 256 or budget >= 2**30


def test_min_score_min_distance_and_sqdiff_across_seams() -> None:
    scene, probe = pasted(2)
    cases: list[dict[str, Any]] = [
        {"top": 10, "min_score": 0.5},
        {"top": 30, "min_distance": 3},
        {"top": 5, "method": "sqdiff"},
    ]
    for options in cases:
        scores = match_template(scene, probe, method=str(options.get("method", "ncc")))
        whole = find_matches(scores, probe_shape=probe.shape, **options)
        assert_same(scan_matches(scene, probe, budget=2**19, **options), whole)


def test_uint8_scene_by_tiles_finds_the_pasted_copies() -> None:
    scene, probe = pasted(3)
    scene8, probe8 = (np.rint(a * 255).astype(np.uint8) for a in (scene, probe))
    whole = find_matches(match_template(scene8, probe8), probe_shape=probe.shape, top=6)
    tiled = scan_matches(scene8, probe8, budget=2**19, top=6)
    assert [(m.x, m.y) for m in tiled] == [(m.x, m.y) for m in whole]
    np.testing.assert_allclose([m.score for m in tiled], [m.score for m in whole], atol=1e-6)


@pytest.mark.parametrize("method", ["ncc", "sqdiff", "ccorr"])
def test_unknown_pixels_and_whole_unknown_tiles(method: str) -> None:
    scene, probe = pasted(4)
    scene[:, 100:200] = np.nan  # whole tiles without a known pixel
    scene[60:64, 62:66] = np.nan  # a hole in a pasted copy
    scores = match_template(scene, probe, method=method)
    whole = find_matches(scores, probe_shape=probe.shape, top=20, method=method)
    assert_same(scan_matches(scene, probe, budget=2**19, top=20, method=method), whole)
    with pytest.raises(UnscoredError, match="overlaps"):
        scan_matches(np.full((200, 200), np.nan), probe, budget=2**19)


def test_dask_scene() -> None:
    import dask.array as da

    scene, probe = pasted(5)
    lazy = da.from_array(scene, chunks=(64, 64))
    whole = find_matches(match_template(scene, probe), probe_shape=probe.shape, top=8)
    assert_same(scan_matches(lazy, probe, budget=2**19, top=8), whole)


# ------------------------------------------------------------------------------------------
# the command line: a TIFF scene over the --memory budget


def test_cli_streams_a_tiff_scene_and_finds_the_same_matches(tmp_path: Path) -> None:
    import tifffile
    from PIL import Image

    scene, probe = pasted(6, (700, 600, 3))
    scene8, probe8 = (np.rint(a * 255).astype(np.uint8) for a in (scene, probe))
    tifffile.imwrite(tmp_path / "scene.tif", scene8, tile=(128, 128), photometric="rgb")
    Image.fromarray(probe8).save(tmp_path / "probe.png")
    args = ["match", str(tmp_path / "scene.tif"), str(tmp_path / "probe.png"), "--top", "6"]
    in_memory = CliRunner().invoke(app, [*args, "--json", "--memory", "2G"])
    assert in_memory.exit_code == 0, in_memory.output
    proc = subprocess.run(
        [sys.executable, "-m", "convfilt", *args, "--json", "--memory", "6M"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    whole, tiled = (json.loads(text)["matches"] for text in (in_memory.stdout, proc.stdout))
    assert [(m["x"], m["y"]) for m in tiled] == [(m["x"], m["y"]) for m in whole]
    np.testing.assert_allclose([m["score"] for m in tiled], [m["score"] for m in whole], atol=1e-6)
    refused = CliRunner().invoke(
        app, [*args, "--memory", "6M", "--heatmap", str(tmp_path / "h.png")]
    )
    assert refused.exit_code == 2 and "--heatmap" in refused.output
    assert not (tmp_path / "h.png").exists()


def _crowded_scene() -> tuple[np.ndarray, np.ndarray]:
    """A noise scene with a small patch of period-3 texture around the probe's own place: the
    probe scores a local maximum every 3 entries there, about 170 of them within reach of
    the best match, all better than the second-best match, a weaker copy in the same tile."""
    rng = np.random.default_rng(31)
    scene = rng.random((400, 400)).astype(np.float32)
    yy, xx = np.mgrid[0:78, 0:78]
    texture = np.sin(2 * np.pi * yy / 3) * np.cos(2 * np.pi * xx / 3)
    scene[81:159, 81:159] = (0.5 + 0.4 * texture + 0.02 * rng.random((78, 78))).astype(np.float32)
    probe = scene[100:140, 100:140].copy()
    scene[100:140, 180:220] = 0.5 * probe + 0.5 * rng.random((40, 40)).astype(np.float32)
    return scene, probe


@pytest.mark.parametrize("top", [1, 2, 3, 5])
def test_a_tile_crowded_with_peaks_keeps_the_whole_maps_matches(top: int) -> None:
    scene, probe = _crowded_scene()
    whole = find_matches(match_template(scene, probe), probe_shape=probe.shape, top=top)
    for budget in (2**20, 2**21, 2**22, 2**23):
        tiled = scan_matches(scene, probe, budget=budget, top=top)
        assert_same(tiled, whole, tol=1e-6)  # float32 maps: matches past the best unchecked


def test_cli_match_memory_is_checked_and_reported_for_every_scene(tmp_path: Path) -> None:
    import tifffile
    from PIL import Image

    scene, probe = pasted(7, (300, 280, 3))
    scene8, probe8 = (np.rint(a * 255).astype(np.uint8) for a in (scene, probe))
    Image.fromarray(scene8).save(tmp_path / "scene.png")
    tifffile.imwrite(tmp_path / "scene.tif", scene8, tile=(64, 64), photometric="rgb")
    Image.fromarray(probe8).save(tmp_path / "probe.png")
    png, tif, probe_file = (str(tmp_path / n) for n in ("scene.png", "scene.tif", "probe.png"))

    def run(*args: str) -> Any:
        return CliRunner().invoke(app, ["match", *args])

    malformed = run(png, probe_file, "--memory", "12Q")
    assert malformed.exit_code == 2 and "--memory" in malformed.output
    whole = run(png, probe_file, "--memory", "6M")  # a PNG is decoded whole: refused up front
    assert whole.exit_code == 1 and ".tif, .zarr" in whole.output and "300x280" in whole.output
    assert whole.output.count("\n") == 1
    small = run(tif, probe_file, "--memory", "100K")
    assert small.exit_code == 2 and "needs at least" in small.output
    tiled = run(tif, probe_file, "--memory", "6M", "--explain")
    assert tiled.exit_code == 0, tiled.output
    assert "streamed: scored by tiles of" in tiled.output
    kept = run(png, probe_file, "--memory", "1G", "--explain")
    assert kept.exit_code == 0 and "in memory: ~" in kept.output


def test_progress_is_told_after_every_band_of_tiles_up_to_the_whole_map() -> None:
    scene, probe = pasted(8, (300, 260))
    told: list[float] = []
    scan_matches(scene, probe, budget=2**20, progress=told.append)
    assert len(told) > 1 and told == sorted(told) and told[-1] == 1.0 and told[0] > 0
