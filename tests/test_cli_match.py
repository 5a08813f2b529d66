"""``convfilt match``: the command line over convfilt.matching (CliRunner and a real process)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner, Result

from convfilt.cli import app

from .processes import convfilt_onto_full_disk

ROOT = Path(__file__).resolve().parents[1]
FACE = ROOT / "samples" / "face.png"
PATCH = ROOT / "samples" / "patch-probe.png"
MATCH_KEYS = ["x", "y", "width", "height", "score", "x_subpixel", "y_subpixel"]


def run(*args: object, input: bytes | None = None) -> Result:
    """Invoke ``convfilt match ARGS`` in-process."""
    return CliRunner().invoke(app, ["match", *map(str, args)], input=input)


def save(path: Path, pixels: np.ndarray) -> Path:
    Image.fromarray(pixels).save(path)
    return path


def texture(shape: tuple[int, ...], seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    noise = rng.random(shape)
    smooth = (noise + np.roll(noise, 1, axis=0) + np.roll(noise, 1, axis=1)) / 3.0
    return np.rint(smooth * 255).astype(np.uint8)


@pytest.fixture
def pasted(tmp_path: Path) -> tuple[Path, Path, list[tuple[int, int]]]:
    """A noisy grey scene with three copies of a probe pasted in, and the probe."""
    rng = np.random.default_rng(1)
    scene = rng.integers(0, 60, (120, 160)).astype(np.uint8)
    probe = texture((12, 14), 2)
    places = [(5, 10), (60, 20), (100, 90)]
    for x, y in places:
        scene[y : y + 12, x : x + 14] = probe
    return save(tmp_path / "scene.png", scene), save(tmp_path / "probe.png", probe), places


@pytest.fixture
def sticker(tmp_path: Path) -> tuple[Path, Path, Path, tuple[int, int]]:
    """An RGBA probe (a textured disc on a transparent green background), a scene with the
    disc on a busy background, and the disc's mask as a grey image."""
    size = 21
    yy, xx = np.mgrid[:size, :size] - size // 2
    disc = xx**2 + yy**2 <= 8**2
    obj = texture((size, size, 3), 3)
    rgba = np.zeros((size, size, 4), np.uint8)
    rgba[..., 1] = 255
    rgba[disc, :3] = obj[disc]
    rgba[..., 3] = np.where(disc, 255, 0)
    scene = np.random.default_rng(4).integers(0, 256, (90, 110, 3)).astype(np.uint8)
    x0, y0 = 47, 31
    scene[y0 : y0 + size, x0 : x0 + size][disc] = obj[disc]
    return (
        save(tmp_path / "busy.png", scene),
        save(tmp_path / "sticker.png", rgba),
        save(tmp_path / "disc-mask.png", np.where(disc, 255, 0).astype(np.uint8)),
        (x0, y0),
    )


def test_face_patch_json() -> None:
    result = run(FACE, PATCH, "--json")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert list(doc) == ["scene", "probe", "method", "matches", "elapsed_ms"]
    assert doc["scene"] == str(FACE) and doc["probe"] == str(PATCH) and doc["method"] == "ncc"
    (found,) = doc["matches"]
    assert list(found) == MATCH_KEYS
    assert (found["x"], found["y"], found["width"], found["height"]) == (132, 345, 80, 80)
    assert found["score"] == pytest.approx(1.0, abs=1e-6)
    assert abs(found["x_subpixel"] - 132) <= 0.5 and abs(found["y_subpixel"] - 345) <= 0.5
    assert doc["elapsed_ms"] > 0


def test_face_patch_real_process() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "convfilt", "match", str(FACE), str(PATCH), "--json"],
        capture_output=True,
        text=True,
        check=False,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr
    found = json.loads(proc.stdout)["matches"][0]
    assert (found["x"], found["y"]) == (132, 345)
    assert found["score"] == pytest.approx(1.0, abs=1e-6)


def test_default_output_is_a_table_on_stdout() -> None:
    result = run(FACE, PATCH, "--gray")
    assert result.exit_code == 0, result.output
    assert "132" in result.stdout and "345" in result.stdout and "score" in result.stdout
    assert result.stderr == ""


def test_top_and_min_distance(pasted: tuple[Path, Path, list[tuple[int, int]]]) -> None:
    scene, probe, places = pasted
    result = run(scene, probe, "--top", 3, "--json")
    assert result.exit_code == 0, result.output
    matches = json.loads(result.stdout)["matches"]
    assert sorted((m["x"], m["y"]) for m in matches) == sorted(places)
    assert all(m["score"] == pytest.approx(1.0, abs=1e-6) for m in matches)
    many = json.loads(run(scene, probe, "--top", 20, "--min-distance", 30, "--json").stdout)
    points = [(m["x"], m["y"]) for m in many["matches"]]
    for i, (x, y) in enumerate(points):
        assert all(abs(x - u) >= 30 or abs(y - v) >= 30 for u, v in points[i + 1 :])
    scores = [m["score"] for m in many["matches"]]
    assert scores == sorted(scores, reverse=True)


def test_sqdiff_and_ccorr_methods(pasted: tuple[Path, Path, list[tuple[int, int]]]) -> None:
    scene, probe, places = pasted
    doc = json.loads(run(scene, probe, "--method", "sqdiff", "--top", 3, "--json").stdout)
    assert doc["method"] == "sqdiff"
    assert sorted((m["x"], m["y"]) for m in doc["matches"]) == sorted(places)
    assert all(m["score"] == pytest.approx(0.0, abs=1e-6) for m in doc["matches"])
    assert run(scene, probe, "--method", "ccorr", "--json").exit_code == 0


def test_min_score_not_reached_exits_1_and_writes_nothing(
    pasted: tuple[Path, Path, list[tuple[int, int]]], tmp_path: Path
) -> None:
    scene, probe, _ = pasted
    out = tmp_path / "annotated.png"
    result = run(scene, probe, "--min-score", 1.5, "--annotate", out)
    assert result.exit_code == 1
    assert "--min-score" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert result.stdout == ""
    assert not out.exists()
    assert run(scene, probe, "--min-score", 0.99, "--top", 5, "--json").exit_code == 0


def test_alpha_probe_found_on_another_background(
    sticker: tuple[Path, Path, Path, tuple[int, int]],
) -> None:
    scene, probe, mask, (x0, y0) = sticker
    for options in ([], ["--mask", "auto"], ["--mask", str(mask)]):
        doc = json.loads(run(scene, probe, "--json", *options).stdout)
        found = doc["matches"][0]
        assert (found["x"], found["y"]) == (x0, y0), options
        assert found["score"] == pytest.approx(1.0, abs=1e-6)
    unmasked = json.loads(run(scene, probe, "--mask", "none", "--json").stdout)["matches"][0]
    assert unmasked["score"] < 0.9


def test_annotate_and_heatmap(
    pasted: tuple[Path, Path, list[tuple[int, int]]], tmp_path: Path
) -> None:
    scene, probe, _ = pasted
    annotated, heat = tmp_path / "a.png", tmp_path / "h.png"
    result = run(scene, probe, "--top", 3, "--annotate", annotated, "--heatmap", heat)
    assert result.exit_code == 0, result.output
    assert "wrote" in result.stderr
    with Image.open(annotated) as image:
        assert image.size == (160, 120) and image.mode == "RGB"
        assert image.getpixel((60, 20)) == (255, 0, 0) or image.getpixel((5, 10)) == (255, 0, 0)
    with Image.open(heat) as image:
        assert image.size == (160, 120) and image.mode == "RGB"
    before = annotated.read_bytes()
    refused = run(scene, probe, "--annotate", annotated)
    assert refused.exit_code == 2 and "--force" in refused.stderr
    assert annotated.read_bytes() == before
    assert run(scene, probe, "--annotate", annotated, "--force").exit_code == 0


def test_sixteen_bit_pedestal(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    deep = (60000 + rng.integers(0, 4, (70, 90))).astype(np.uint16)
    scene = save(tmp_path / "deep.png", deep)
    probe = save(tmp_path / "deep-probe.png", deep[20:40, 30:62].copy())
    result = run(scene, probe, "--json")
    assert result.exit_code == 0, result.output
    found = json.loads(result.stdout)["matches"][0]
    assert (found["x"], found["y"]) == (30, 20)
    assert found["score"] == pytest.approx(1.0, abs=1e-6)


def test_scene_from_stdin() -> None:
    result = run("-", PATCH, "--json", input=FACE.read_bytes())
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["matches"][0]["x"] == 132


def test_explain_prints_plans_on_stderr() -> None:
    result = run(FACE, PATCH, "--json", "--explain", "--gray")
    assert result.exit_code == 0, result.output
    assert "plan" in result.stderr
    json.loads(result.stdout)  # stdout stays clean JSON


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--top", "0"], "--top"),
        (["--min-distance", "0"], "--min-distance"),
        (["--mask", "{tmp}/nothing.png"], "nothing.png"),
        (["--annotate", "-"], "--annotate"),
        (["--annotate", "{tmp}/same.png", "--heatmap", "{tmp}/same.png"], "--heatmap"),
        (["--annotate", "{tmp}/no/such/folder/a.png"], "folder"),
    ],
)
def test_bad_options(args: list[str], needle: str, tmp_path: Path) -> None:
    result = run(FACE, PATCH, *(a.format(tmp=tmp_path) for a in args))
    assert result.exit_code in (1, 2)
    assert result.exit_code == (1 if "nothing" in needle else 2)
    assert needle in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert result.stdout == ""


def test_bad_inputs(tmp_path: Path) -> None:
    grey_scene = save(tmp_path / "grey.png", texture((60, 60), 6))
    small = save(tmp_path / "small.png", texture((10, 10, 3), 7))
    wrong_mask = save(tmp_path / "mask.png", np.full((5, 5), 255, np.uint8))
    rgb_mask = save(tmp_path / "rgb-mask.png", np.full((80, 80, 3), 255, np.uint8))
    cases = [
        ((small, PATCH), 2, f"{small}, {PATCH}: probe"),
        ((grey_scene, small), 2, f"{grey_scene}, {small}: "),
        ((grey_scene, small), 2, "channel"),
        ((FACE, PATCH, "--mask", wrong_mask), 2, f"--mask {wrong_mask}: "),
        ((FACE, PATCH, "--mask", wrong_mask), 2, "fit"),
        ((FACE, PATCH, "--mask", rgb_mask), 2, "alpha"),
        ((tmp_path / "missing.png", PATCH), 1, "missing.png"),
        (("-", "-"), 2, "stdin"),
    ]
    for args, code, needle in cases:
        result = run(*args)
        assert result.exit_code == code, (args, result.output)
        assert needle in result.stderr, (args, result.stderr)
        assert len(result.stderr.strip().splitlines()) == 1
        assert result.stdout == "" and "Traceback" not in result.output
    # --gray makes a grey scene and a colour probe comparable
    assert run(grey_scene, small, "--gray").exit_code == 0


def test_bad_method_is_a_usage_error() -> None:
    assert run(FACE, PATCH, "--method", "tm_ccoeff").exit_code == 2


@pytest.mark.parametrize("strategy", ["direct", "fft", "overlap-add"])
def test_every_forced_strategy_finds_the_patch(strategy: str) -> None:
    result = run(FACE, PATCH, "--json", "--strategy", strategy)
    assert result.exit_code == 0, result.output
    (found,) = json.loads(result.stdout)["matches"]
    assert (found["x"], found["y"]) == (132, 345)
    assert found["score"] == pytest.approx(1.0, abs=1e-6)


def test_a_strategy_that_cannot_apply_is_a_usage_error() -> None:
    result = run(FACE, PATCH, "--strategy", "separable")
    assert result.exit_code == 2
    assert "separable" in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_a_full_disk_under_stdout_is_one_line_exit_1() -> None:
    done = convfilt_onto_full_disk("match", FACE, PATCH, "--json")
    assert done.returncode == 1
    assert done.stderr.splitlines() == [
        "convfilt: error: <stdout>: cannot write (No space left on device)"
    ]
