"""convfilt deblur end to end: CliRunner for the contract, a real process once."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage
from typer.testing import CliRunner, Result

from convfilt import images, kernels
from convfilt.cli import app
from convfilt.deconvolution import deconvolve

from .processes import convfilt

runner = CliRunner()


def run(*args: str) -> Result:
    return runner.invoke(app, list(args))


def scene(h: int = 48, w: int = 64, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    smooth = ndimage.gaussian_filter(rng.random((h, w, 3)), (2, 2, 0))
    smooth = (smooth - smooth.min()) / (smooth.max() - smooth.min())
    return 20 + 200 * smooth


@pytest.fixture
def folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    psf = kernels.load_psf("gaussian:1.5")
    for name, seed in (("a.png", 0), ("b.png", 1)):
        sharp = scene(seed=seed)
        blurred = np.stack([ndimage.convolve(sharp[..., c], psf) for c in range(3)], -1)
        Image.fromarray(np.rint(blurred).astype(np.uint8)).save(tmp_path / name)
    deep = np.rint(scene()[..., 0] * 250).astype(np.uint16)
    Image.fromarray(deep).save(tmp_path / "deep.png")
    return tmp_path


def test_deblur_writes_what_the_library_computes(folder: Path) -> None:
    result = run("deblur", "a.png", "--psf", "gaussian:1.5", "--explain")
    assert result.exit_code == 0, result.stderr
    written = images.load("a-deblur.png").pixels
    expected = deconvolve(images.load("a.png").pixels, kernels.load_psf("gaussian:1.5"))
    np.testing.assert_array_equal(written, expected)
    assert "wiener" in result.stderr and "noise" in result.stderr


def test_richardson_lucy_batch_json_and_16_bit(folder: Path) -> None:
    result = run(
        "deblur", "a.png", "b.png", "deep.png", "--psf", "disk:2",
        "--method", "richardson-lucy", "--iterations", "5", "--out-dir", "out", "--json",
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    outputs = json.loads(result.stdout)["outputs"]
    assert [o["output"] for o in outputs] == [
        str(Path("out") / n) for n in ("a-deblur.png", "b-deblur.png", "deep-deblur.png")
    ]
    deep = images.load("out/deep-deblur.png").pixels
    assert deep.dtype == np.uint16 and deep.max() > 255


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--psf", "airy:2"], "neither a PSF spec"),
        (["--psf", "box:40"], "larger than the image"),
        (["--psf", "sobel.txt"], "sum to more than 0"),
        (["--psf", "gaussian:1", "--method", "richardson-lucy", "--iterations", "0"], "iterations"),
        (["--psf", "gaussian:1", "--balance", "-1"], "balance"),
    ],
)
def test_bad_input_is_one_line_exit_2_and_no_file(folder: Path, args, message) -> None:
    (folder / "sobel.txt").write_text("1 0 -1\n2 0 -2\n1 0 -1\n")
    before = sorted(p.name for p in folder.iterdir())
    result = run("deblur", "a.png", *args)
    assert result.exit_code == 2, result.stderr
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert sorted(p.name for p in folder.iterdir()) == before


def test_an_image_of_a_point_source_is_a_psf(folder: Path) -> None:
    star = np.zeros((9, 9))
    star[4, 4] = 1.0
    star = ndimage.gaussian_filter(star, 1.5)
    Image.fromarray(np.rint(star / star.max() * 255).astype(np.uint8)).save("star.png")
    result = run("deblur", "a.png", "--psf", "star.png", "-o", "out.png")
    assert result.exit_code == 0, result.stderr
    assert images.load("out.png").pixels.shape == (48, 64, 3)


def test_a_real_process(folder: Path) -> None:
    done = convfilt("deblur", "a.png", "--psf", "motion:5:45", "-o", "m.png")
    assert done.returncode == 0, done.stderr
    assert Path("m.png").exists()
    bad = convfilt("deblur", "a.png", "--psf", "gaussian:1", "--balance", "-2", "-o", "n.png")
    assert bad.returncode == 2 and not Path("n.png").exists()


def test_an_image_over_the_memory_budget_is_refused_before_it_is_read(folder: Path) -> None:
    """Deconvolution does not stream: an image whose deconvolution needs more than --memory
    is refused up front, in one line naming its size, the need and the budget (exit 1)."""
    from convfilt import deconvolution, tiles

    need = deconvolution.memory_needed((48, 64, 3), np.dtype(np.uint8), (13, 13), "wiener")
    assert need > tiles.FIXED_BYTES + 48 * 64 * 96  # the grid is the image and its margins
    budget = f"{need // 2**20 - 1}M"  # short of it
    refused = run("deblur", "a.png", "b.png", "--psf", "gaussian:1.5", "--memory", budget)
    assert refused.exit_code == 1 and refused.stderr.count("\n") == 1
    message = refused.stderr
    assert "a.png: deblurring a 48x64 image needs ~" in message and "--memory budget" in message
    assert "does not stream" in message
    assert not Path("a-deblur.png").exists() and not Path("b-deblur.png").exists()
    enough = run("deblur", "a.png", "--psf", "gaussian:1.5", "--memory", f"{need // 2**20 + 1}M")
    assert enough.exit_code == 0, enough.stderr
    assert Path("a-deblur.png").exists()
    assert run("deblur", "a.png", "--psf", "gaussian:1", "--memory", "lots").exit_code == 2


def test_a_real_process_refuses_an_image_over_the_budget(folder: Path) -> None:
    done = convfilt("deblur", "a.png", "--psf", "gaussian:1.5", "--memory", "40M", "-o", "r.png")
    assert done.returncode == 1 and done.stderr.count("\n") == 1
    assert "over the --memory budget of 40 MiB" in done.stderr and not Path("r.png").exists()
