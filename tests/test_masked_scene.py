"""Scenes with unknown pixels (NaN, alpha, a scene mask): masked NCC against its definition."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tifffile
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image
from typer.testing import CliRunner

from convfilt.cli import app
from convfilt.errors import ConvfiltError, UsageError
from convfilt.matching import find_matches, match_template
from convfilt.render import heatmap


def definition(
    scene: np.ndarray,
    scene_w: np.ndarray,
    probe: np.ndarray,
    probe_w: np.ndarray,
    min_overlap: float = 0.5,
) -> np.ndarray:
    """Weighted Pearson correlation of every window, weights scene_w · probe_w, float64 loops;
    NaN where the overlap's weight is below min_overlap of the probe's, 0 where flat."""
    s, t = np.atleast_3d(scene).astype(np.float64), np.atleast_3d(probe).astype(np.float64)
    h, w = probe_w.shape
    out = np.full((s.shape[0] - h + 1, s.shape[1] - w + 1), np.nan)
    for y in range(out.shape[0]):
        for x in range(out.shape[1]):
            weights = (scene_w[y : y + h, x : x + w] * probe_w)[..., None]
            total = weights.sum()
            if total < min_overlap * probe_w.sum() or total == 0:
                continue
            window = np.where(weights > 0, s[y : y + h, x : x + w], 0.0)
            a = np.where(weights > 0, window - (weights * window).sum((0, 1)) / total, 0.0)
            b = np.where(weights > 0, t - (weights * t).sum((0, 1)) / total, 0.0)
            den = np.sqrt((weights * a * a).sum()) * np.sqrt((weights * b * b).sum())
            out[y, x] = 0.0 if den < 1e-9 * total else (weights * a * b).sum() / den
    return out


def assert_maps_equal(got: np.ndarray, want: np.ndarray, tol: float = 1e-9) -> None:
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    np.testing.assert_allclose(got[~np.isnan(want)], want[~np.isnan(want)], atol=tol)


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 2**31),
    channels=st.sampled_from([1, 3]),
    strategy=st.sampled_from(["direct", "fft", "auto"]),
    binary=st.booleans(),
)
def test_masked_ncc_equals_the_definition(
    seed: int, channels: int, strategy: str, binary: bool
) -> None:
    rng = np.random.default_rng(seed)
    scene = rng.random((23, 27, channels))
    probe = scene[4:11, 6:15].copy() + 0.1 * rng.random((7, 9, channels))
    scene_w = rng.random((23, 27)) if not binary else (rng.random((23, 27)) > 0.3) * 1.0
    probe_w = (rng.random((7, 9)) > 0.2) * 1.0 if binary else rng.random((7, 9))
    probe_w[3, 4] = 1.0
    got = match_template(scene, probe, mask=probe_w, scene_mask=scene_w, strategy=strategy)
    assert_maps_equal(got, definition(scene, scene_w, probe, probe_w))
    scored = got[~np.isnan(got)]
    assert scored.min() >= -1.0 and scored.max() <= 1.0


def sums_definition(
    scene: np.ndarray,
    scene_w: np.ndarray,
    probe: np.ndarray,
    probe_w: np.ndarray,
    method: str,
    min_overlap: float = 0.5,
) -> np.ndarray:
    """sqdiff = sum W·(s - p)², ccorr = sum W·s·p over each window, W = scene_w · probe_w,
    times sum(probe_w) / sum W; NaN below min_overlap of the probe's weight (float64 loops)."""
    s, t = np.atleast_3d(scene).astype(np.float64), np.atleast_3d(probe).astype(np.float64)
    h, w = probe_w.shape
    total = probe_w.sum()
    out = np.full((s.shape[0] - h + 1, s.shape[1] - w + 1), np.nan)
    for y in range(out.shape[0]):
        for x in range(out.shape[1]):
            weights = scene_w[y : y + h, x : x + w] * probe_w
            overlap = weights.sum()
            if overlap < min_overlap * total or overlap == 0:
                continue
            window = s[y : y + h, x : x + w]
            terms = (window - t) ** 2 if method == "sqdiff" else window * t
            out[y, x] = (weights[..., None] * terms).sum() * total / overlap
    return out


@settings(max_examples=30, deadline=None)
@given(
    seed=st.integers(0, 2**31),
    channels=st.sampled_from([1, 3]),
    method=st.sampled_from(["sqdiff", "ccorr"]),
    strategy=st.sampled_from(["direct", "fft", "overlap-add", "compiled", "auto"]),
    binary=st.booleans(),
    min_overlap=st.sampled_from([0.2, 0.5, 0.7]),
)
def test_masked_sqdiff_and_ccorr_equal_the_definition(
    seed: int, channels: int, method: str, strategy: str, binary: bool, min_overlap: float
) -> None:
    rng = np.random.default_rng(seed)
    scene = 5.0 + rng.random((21, 25, channels))  # off zero: ccorr's mean term matters
    probe = scene[4:11, 6:15].copy() + 0.1 * rng.random((7, 9, channels))
    known = rng.random((21, 25)) > 0.3
    scene_w = known * (1.0 if binary else 0.3 + 0.7 * rng.random((21, 25)))
    probe_w = (rng.random((7, 9)) > 0.2) * 1.0 if binary else rng.random((7, 9))
    probe_w[3, 4] = 1.0
    hidden = np.where(known[..., None], scene, np.nan)  # NaN where unknown: same map
    options: dict[str, Any] = {"method": method, "strategy": strategy, "min_overlap": min_overlap}
    want = sums_definition(scene, scene_w, probe, probe_w, method, min_overlap)
    if np.isnan(want).all():
        with pytest.raises(ConvfiltError, match="no window overlaps"):
            match_template(scene, probe, mask=probe_w, scene_mask=scene_w, **options)
        return
    got = match_template(scene, probe, mask=probe_w, scene_mask=scene_w, **options)
    assert_maps_equal(got, want, tol=1e-12 * float(np.nanmax(np.abs(want))) * 100)
    if binary:
        nan_map = match_template(hidden, probe, mask=probe_w, **options)
        assert_maps_equal(nan_map, want, tol=1e-10 * float(np.nanmax(np.abs(want))))
    if method == "sqdiff":
        assert np.nanmin(got) >= 0.0


@pytest.mark.parametrize("method", ["sqdiff", "ccorr"])
def test_masked_sums_are_scaled_to_the_whole_probe(method: str) -> None:
    """A constant scene and probe: every scored window gets the whole probe's score,
    whatever its overlap (a mean over the known pixels, times the probe's weight), and the
    fully known windows score exactly what the unmasked method gives."""
    rng = np.random.default_rng(11)
    scene = np.full((20, 24), 3.0)
    scene_w = (rng.random((20, 24)) > 0.4) * 1.0
    probe = np.full((5, 6), 1.0)
    got = match_template(scene, probe, method=method, scene_mask=scene_w, min_overlap=0.2)
    expected = {"sqdiff": 4.0 * 30, "ccorr": 3.0 * 30}[method]
    scored = got[~np.isnan(got)]
    assert scored.size > 100
    np.testing.assert_allclose(scored, expected, rtol=1e-12)
    textured = rng.random((20, 24, 3))
    probe3 = rng.random((5, 6, 3))
    known = np.ones((20, 24))
    known[15:, 20:] = 0.0  # windows from row 11 or column 15 on see it; the rest are whole
    masked = match_template(textured, probe3, method=method, scene_mask=known)
    plain = match_template(textured, probe3, method=method)
    np.testing.assert_allclose(masked[:11, :], plain[:11, :], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(masked[:, :15], plain[:, :15], rtol=1e-12, atol=1e-12)


def test_masked_sqdiff_finds_a_partly_hidden_copy_and_never_an_unscored_window() -> None:
    rng = np.random.default_rng(4)
    scene = rng.random((40, 50, 3))
    probe = scene[20:29, 30:41].copy()
    holed = scene.copy()
    holed[:, :12] = np.nan  # windows over it have no score
    holed[22:25, 33:36] = np.nan  # a hole in the planted copy
    for method, score in (("sqdiff", 0.0), ("ccorr", None)):
        got = match_template(holed, probe, method=method, min_overlap=0.6)
        assert np.isnan(got[:, :2]).all()
        found = find_matches(got, probe_shape=probe.shape, method=method, top=400)
        assert all(np.isfinite(m.score) for m in found) and len(found) > 10
        if score is not None:
            assert (found[0].x, found[0].y) == (30, 20)
            assert found[0].score == pytest.approx(score, abs=1e-9)


def test_nan_pixels_are_unknown_and_min_overlap_gives_nan() -> None:
    rng = np.random.default_rng(3)
    scene = rng.random((30, 40))
    probe = scene[12:19, 20:29].copy()
    holed = scene.copy()
    holed[:, 5:12] = np.nan  # a band as wide as the probe: windows over it have no score
    holed[14, 22] = np.nan  # a hole inside the planted copy
    known = (~np.isnan(holed)).astype(float)
    for min_overlap in (0.5, 0.9):
        got = match_template(holed, probe, min_overlap=min_overlap)
        want = definition(np.nan_to_num(holed), known, probe, np.ones(probe.shape), min_overlap)
        assert_maps_equal(got, want)
        assert np.isnan(got[:, 5]).all()
    best = find_matches(got, probe_shape=probe.shape)[0]
    assert (best.x, best.y) == (20, 12) and best.score == pytest.approx(1.0)
    assert all(not np.isnan(m.score) for m in find_matches(got, probe_shape=(7, 9), top=500))


def test_flat_known_part_scores_zero_where_opencv_fails() -> None:
    """On a pedestal of 1e4 with a unit texture, OpenCV's masked TM_CCOEFF_NORMED returns
    inf/NaN and values far from the definition; ours is the definition, in [-1, 1]."""
    import cv2

    rng = np.random.default_rng(0)
    scene = (1e4 + rng.random((60, 60))).astype(np.float32)
    scene[:, :20] = 1e4  # flat windows: 0
    probe = (rng.random((11, 11)) * 255).astype(np.float32)
    mask = (rng.random((11, 11)) > 0.5).astype(np.float32)
    opencv = cv2.matchTemplate(scene, probe, cv2.TM_CCOEFF_NORMED, mask=mask)
    got = match_template(scene, probe, mask=mask)
    want = definition(scene, np.ones(scene.shape), probe, mask)
    assert_maps_equal(got, want, tol=1e-6)
    assert (got[:, :10] == 0.0).all()
    broken = ~np.isfinite(opencv) | (np.abs(opencv - want) > 0.1)
    assert broken.mean() > 0.5  # the peer really fails here, so this case tests something


def test_float32_scene_with_nan_and_flat_known_windows() -> None:
    rng = np.random.default_rng(5)
    scene = rng.random((25, 25)).astype(np.float32)
    scene[:, :10] = 0.25
    scene[3:6, 3:6] = np.nan
    probe = scene[10:17, 12:19].copy()
    got = match_template(scene, probe, min_overlap=0.3)
    known = (~np.isnan(scene)).astype(float)
    assert_maps_equal(got, definition(np.nan_to_num(scene), known, probe, np.ones((7, 7)), 0.3))
    assert (got[~np.isnan(got)][:1] >= -1).all() and got[0, 0] == 0.0


def test_unknown_pixels_bad_inputs() -> None:
    scene, probe = np.random.default_rng(0).random((9, 9)), np.ones((3, 3))
    with pytest.raises(ConvfiltError, match="every pixel is unknown"):
        match_template(np.full((9, 9), np.nan), probe)
    with pytest.raises(ConvfiltError, match="every pixel is unknown"):
        match_template(scene, probe, scene_mask=np.zeros((9, 9)))
    with pytest.raises(ConvfiltError, match="every probe pixel"):
        match_template(scene, scene[:3, :3], mask=np.zeros((3, 3)))
    with pytest.raises(UsageError, match="scene_mask of size 8x9"):
        match_template(scene, probe, scene_mask=np.ones((9, 8)))
    with pytest.raises(UsageError, match="min_overlap"):
        match_template(scene, scene[:3, :3], scene_mask=scene > 0.5, min_overlap=0.0)
    with pytest.raises(ConvfiltError, match="no window overlaps"):
        scene_mask = np.zeros((9, 9))
        scene_mask[0, 0] = 1.0
        match_template(scene, scene[:3, :3], scene_mask=scene_mask)
    with pytest.raises(ConvfiltError, match="infinite"):
        match_template(np.where(scene > 0.5, np.inf, np.nan), probe)


def test_heatmap_draws_unscored_windows_grey() -> None:
    scores = np.array([[0.5, np.nan], [1.0, -1.0]])
    image = heatmap(scores, scene_shape=(4, 4), probe_shape=(3, 3), method="ncc")
    assert tuple(image[1, 2]) == (128, 128, 128)
    assert tuple(image[2, 1]) == (253, 231, 37)


# ------------------------------------------------------------------------------------------
# the command line


def planted_rgb(seed: int = 7) -> tuple[np.ndarray, np.ndarray, tuple[int, int]]:
    rng = np.random.default_rng(seed)
    scene = rng.integers(0, 256, (90, 120, 3)).astype(np.uint8)
    probe = rng.integers(0, 256, (16, 20, 3)).astype(np.uint8)
    scene[40:56, 70:90] = probe
    return scene, probe, (70, 40)


def match_json(*args: object) -> dict[str, Any]:
    result = CliRunner().invoke(app, ["match", *map(str, args), "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_rgba_scene_with_transparent_band_and_rgb_probe(tmp_path: Path) -> None:
    scene, probe, (x, y) = planted_rgb()
    alpha = np.full(scene.shape[:2], 255, np.uint8)
    alpha[:, 30:45] = 0
    rgba = np.dstack([scene, alpha])
    rgba[:, 30:45, :3] = 255  # what hides behind alpha 0 must not count
    rgba[44, 75, 3] = 0  # a transparent pixel inside the planted copy, hiding another colour
    rgba[44, 75, :3] = 255 - rgba[44, 75, :3]
    Image.fromarray(rgba).save(tmp_path / "scene.png")
    Image.fromarray(probe).save(tmp_path / "probe.png")
    found = match_json(
        tmp_path / "scene.png", tmp_path / "probe.png", "--heatmap", tmp_path / "heat.png"
    )["matches"]
    assert (found[0]["x"], found[0]["y"]) == (x, y) and found[0]["score"] == pytest.approx(1.0)
    heat = np.asarray(Image.open(tmp_path / "heat.png"))
    assert (heat[50, 38] == 128).all()  # windows inside the transparent band: no score
    none = match_json(tmp_path / "scene.png", tmp_path / "probe.png", "--scene-mask", "none")
    assert none["matches"][0]["score"] < 0.999  # the hidden colour counts without the mask


def test_nan_float_tiff_scene_and_scene_mask_file(tmp_path: Path) -> None:
    scene, probe, (x, y) = planted_rgb(8)
    grey = scene[..., 0].astype(np.float32)
    grey[10:30, :] = np.nan
    tifffile.imwrite(tmp_path / "scene.tif", grey)
    Image.fromarray(probe[..., 0]).save(tmp_path / "probe.png")
    found = match_json(tmp_path / "scene.tif", tmp_path / "probe.png")["matches"][0]
    assert (found["x"], found["y"]) == (x, y)
    mask = np.full(grey.shape, 255, np.uint8)
    mask[:, 100:] = 0
    Image.fromarray(mask).save(tmp_path / "mask.png")
    masked = match_json(
        tmp_path / "scene.tif",
        tmp_path / "probe.png",
        "--scene-mask",
        tmp_path / "mask.png",
        "--min-overlap",
        "0.9",
        "--top",
        "1000",
    )
    assert all(m["x"] + 0.1 * 20 <= 100 for m in masked["matches"])


def test_cli_masked_sqdiff_and_ccorr(tmp_path: Path) -> None:
    """NaN rows of a float TIFF with sqdiff (CliRunner), a --scene-mask file with ccorr (a
    real process): the library's maps' matches, NaN windows grey in the heatmap."""
    scene, probe, (x, y) = planted_rgb(12)
    grey = scene[..., 1].astype(np.float32)
    grey[5:20, :] = np.nan
    grey[44, 75] = np.nan  # inside the planted copy
    tifffile.imwrite(tmp_path / "scene.tif", grey)
    Image.fromarray(probe[..., 1]).save(tmp_path / "probe.png")
    found = match_json(
        tmp_path / "scene.tif", tmp_path / "probe.png", "--method", "sqdiff", "--top", "3",
        "--heatmap", tmp_path / "heat.png",
    )  # fmt: skip
    assert found["method"] == "sqdiff"
    best = found["matches"][0]
    assert (best["x"], best["y"], best["score"]) == (x, y, pytest.approx(0.0, abs=1e-6))
    scores = match_template(grey, probe[..., 1], method="sqdiff")
    want = find_matches(scores, probe_shape=(16, 20), method="sqdiff", top=3)
    assert [(m["x"], m["y"]) for m in found["matches"]] == [(m.x, m.y) for m in want]
    assert [m["score"] for m in found["matches"]] == pytest.approx([m.score for m in want])
    heat = np.asarray(Image.open(tmp_path / "heat.png"))
    assert (heat[8 + 8, 60] == 128).all()  # a window over the NaN rows: no score
    Image.fromarray(scene).save(tmp_path / "scene.png")
    Image.fromarray(probe).save(tmp_path / "probe-rgb.png")
    known = np.full(scene.shape[:2], 255, np.uint8)
    known[:, :40] = 0
    Image.fromarray(known).save(tmp_path / "known.png")
    command = [
        sys.executable, "-m", "convfilt", "match", str(tmp_path / "scene.png"),
        str(tmp_path / "probe-rgb.png"), "--method", "ccorr", "--scene-mask",
        str(tmp_path / "known.png"), "--min-overlap", "0.75", "--top", "2", "--json",
    ]  # fmt: skip
    proc = subprocess.run(command, capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    scores = match_template(scene, probe, method="ccorr", scene_mask=known / 255.0,
                            min_overlap=0.75)  # fmt: skip
    assert np.isnan(scores[:, :35]).all() and not np.isnan(scores[:, 35:]).any()  # 15 of 20
    want = find_matches(scores, probe_shape=probe.shape, method="ccorr", top=2)
    got = json.loads(proc.stdout)["matches"]
    assert [(m["x"], m["y"]) for m in got] == [(m.x, m.y) for m in want]
    assert all(m["x"] >= 35 for m in got)
    stripe = np.zeros(scene.shape[:2], np.uint8)
    stripe[:, :10] = 255  # half of a probe's width at most: below --min-overlap 0.75
    Image.fromarray(stripe).save(tmp_path / "stripe.png")
    command[command.index(str(tmp_path / "known.png"))] = str(tmp_path / "stripe.png")
    proc = subprocess.run(command, capture_output=True, text=True, check=False)
    assert proc.returncode == 1 and "no window overlaps" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_all_masked_probe_or_scene_exit_1_in_a_real_process(tmp_path: Path) -> None:
    scene, probe, _ = planted_rgb(9)
    Image.fromarray(scene).save(tmp_path / "scene.png")
    Image.fromarray(np.dstack([probe, np.zeros(probe.shape[:2], np.uint8)])).save(
        tmp_path / "clear.png"
    )
    Image.fromarray(np.dstack([scene, np.zeros(scene.shape[:2], np.uint8)])).save(
        tmp_path / "clear-scene.png"
    )
    Image.fromarray(probe).save(tmp_path / "probe.png")
    for scene_path, probe_path, message in (
        ("scene.png", "clear.png", "every probe pixel"),
        ("clear-scene.png", "probe.png", "every pixel is unknown"),
    ):
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "convfilt",
                "match",
                str(tmp_path / scene_path),
                str(tmp_path / probe_path),
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        assert proc.returncode == 1, proc.stderr
        assert message in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    bad = CliRunner().invoke(
        app,
        ["match", str(tmp_path / "scene.png"), str(tmp_path / "probe.png"), "--min-overlap", "2"],
    )
    assert bad.exit_code == 2 and "--min-overlap must be" in bad.output
