"""The blur, sharpen and convolve commands, end to end through CliRunner (and once for real)."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner, Result

from convfilt import filters, images, kernels
from convfilt.cli import _PRESET_HELP, app

from .processes import convfilt, convfilt_onto_full_disk

runner = CliRunner()


def run(*args: str, stdin: bytes | None = None) -> Result:
    return runner.invoke(app, list(args), input=stdin)


def natural_rgb(h: int = 48, w: int = 64, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    smooth = 120 + 80 * np.sin(x / 7.0)[..., None] * np.cos(y / 5.0)[..., None]
    return np.clip(smooth + rng.normal(0, 12, (h, w, 3)), 0, 255).astype(np.uint8)


@pytest.fixture
def folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    Image.fromarray(natural_rgb()).save(tmp_path / "a.png")
    Image.fromarray(natural_rgb(seed=1)).save(tmp_path / "b.png")
    return tmp_path


def pixels(path: str | Path) -> np.ndarray:
    return np.asarray(images.load(path).pixels)


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def listing(path: Path) -> set[str]:
    return {p.name for p in path.rglob("*")}


# --- results equal the library's -----------------------------------------------------------


def test_blur_defaults_write_next_to_the_input(folder: Path) -> None:
    result = run("blur", "a.png")
    assert result.exit_code == 0, result.stderr
    assert result.stdout == ""
    assert result.stderr.strip() == "wrote a-blur.png"
    want = filters.gaussian_blur(pixels("a.png"), 2.0)
    np.testing.assert_array_equal(pixels("a-blur.png"), want)


@pytest.mark.parametrize(
    ("options", "library"),
    [
        (
            ["--sigma", "1.5", "--sigma-y", "3", "--truncate", "2", "--mode", "wrap"],
            lambda x: filters.gaussian_blur(x, 1.5, sigma_y=3.0, truncate=2.0, mode="wrap"),
        ),
        (
            ["--sigma", "2.5", "--linear", "--mode", "constant", "--strategy", "auto"],
            lambda x: filters.gaussian_blur(x, 2.5, linear=True, mode="constant"),
        ),
        (
            ["--kind", "box", "--radius", "3", "--mode", "MIRROR"],
            lambda x: filters.box_blur(x, 3, mode="mirror"),
        ),
        (["--kind", "box"], lambda x: filters.box_blur(x, 2)),
    ],
)
def test_blur_options_reach_the_library(folder: Path, options: list[str], library: object) -> None:
    result = run("blur", "a.png", "-o", "out.png", *options)
    assert result.exit_code == 0, result.stderr
    np.testing.assert_array_equal(pixels("out.png"), library(pixels("a.png")))  # type: ignore[operator]


@pytest.mark.parametrize("method", ["direct", "separable", "fft", "overlap-add"])
def test_every_method_gives_the_same_blur(folder: Path, method: str) -> None:
    result = run("blur", "a.png", "-o", f"{method}.png", "--strategy", method, "--sigma", "1.5")
    assert result.exit_code == 0, result.stderr
    want = filters.gaussian_blur(pixels("a.png"), 1.5)
    assert np.abs(pixels(f"{method}.png").astype(int) - want).max() <= 1


def test_the_old_method_flag_still_chooses_the_strategy_with_a_note(folder: Path) -> None:
    old = run("blur", "a.png", "-o", "old.png", "--method", "fft", "--explain")
    assert old.exit_code == 0, old.output
    assert "--method is deprecated here; use --strategy" in old.stderr
    assert "fft: forced" in old.stderr
    new = run("blur", "a.png", "-o", "new.png", "--strategy", "fft")
    assert "deprecated" not in new.stderr
    assert (folder / "old.png").read_bytes() == (folder / "new.png").read_bytes()
    both = run("blur", "a.png", "-o", "both.png", "--strategy", "direct", "--method", "fft")
    assert both.exit_code == 2 and "disagree" in both.stderr


def test_sharpen_options_reach_the_library(folder: Path) -> None:
    args = ["--sigma", "1.5", "--amount", "2", "--threshold", "0.02", "--mode", "nearest"]
    result = run("sharpen", "a.png", *args)
    assert result.exit_code == 0, result.stderr
    want = filters.unsharp_mask(pixels("a.png"), 1.5, 2.0, 0.02, mode="nearest")
    np.testing.assert_array_equal(pixels("a-sharpen.png"), want)
    assert not np.array_equal(want, pixels("a.png"))


@pytest.mark.parametrize(
    ("command", "options", "library"),
    [
        (
            "sharpen",
            ["--linear", "--truncate", "3", "--strategy", "fft", "--explain"],
            lambda x: filters.unsharp_mask(x, linear=True, truncate=3.0),
        ),
        (
            "sharpen",
            ["--sigma", "2", "--amount", "0.5", "--mode", "wrap", "--json"],
            lambda x: filters.unsharp_mask(x, 2.0, 0.5, mode="wrap"),
        ),
        (
            "convolve",
            ["-k", "motion:5", "--linear", "--mode", "constant", "--strategy", "direct"],
            lambda x: filters.convolve_image(
                x, kernels.load_kernel("motion:5"), linear=True, mode="constant"
            ),
        ),
    ],
)
def test_more_options_reach_the_library(
    folder: Path, command: str, options: list[str], library: object
) -> None:
    result = run(command, "a.png", "-o", "out.png", *options)
    assert result.exit_code == 0, result.stderr
    got = pixels("out.png").astype(int)
    assert np.abs(got - library(pixels("a.png"))).max() <= 1  # type: ignore[operator]
    if "--json" in options:
        assert json.loads(result.stdout) == {"outputs": [{"input": "a.png", "output": "out.png"}]}
    if "--explain" in options:
        assert "(chosen)" in result.stderr


def test_convolve_flips_and_correlate_does_not(folder: Path) -> None:
    assert run("convolve", "a.png", "-k", "sobel-x", "-o", "conv.png").exit_code == 0
    assert run("convolve", "a.png", "-k", "sobel-x", "--correlate", "-o", "corr.png").exit_code == 0
    source = pixels("a.png")
    sobel = kernels.load_kernel("sobel-x")
    np.testing.assert_array_equal(pixels("conv.png"), filters.convolve_image(source, sobel))
    np.testing.assert_array_equal(
        pixels("corr.png"), filters.convolve_image(source, sobel, correlate=True)
    )
    assert not np.array_equal(pixels("conv.png"), pixels("corr.png"))
    # a symmetric kernel gives the same either way
    assert run("convolve", "a.png", "-k", "gaussian:1.5", "-o", "g1.png").exit_code == 0
    assert (
        run("convolve", "a.png", "-k", "gaussian:1.5", "--correlate", "-o", "g2.png").exit_code == 0
    )
    np.testing.assert_array_equal(pixels("g1.png"), pixels("g2.png"))


def test_convolve_kernel_file_and_normalize(folder: Path) -> None:
    Path("k.csv").write_text("1, 2, 1\n2, 4, 2\n1, 2, 1\n")
    result = run("convolve", "a.png", "--kernel", "k.csv", "--normalize", "--mode", "nearest")
    assert result.exit_code == 0, result.stderr
    want = filters.convolve_image(
        pixels("a.png"), np.array([[1, 2, 1], [2, 4, 2], [1, 2, 1]]) / 16, mode="nearest"
    )
    np.testing.assert_array_equal(pixels("a-convolve.png"), want)


def test_convolve_explain_says_which_operation(folder: Path) -> None:
    flipped = run("convolve", "a.png", "-k", "emboss", "--explain", "-o", "e1.png")
    as_is = run("convolve", "a.png", "-k", "emboss", "--explain", "--correlate", "-o", "e2.png")
    assert "convolving (kernel flipped)" in flipped.stderr
    assert "correlating (kernel as is)" in as_is.stderr


def test_explain_prints_the_plan(folder: Path) -> None:
    result = run("blur", "a.png", "--explain")
    assert result.exit_code == 0, result.stderr
    assert "plan:" in result.stderr and "(chosen)" in result.stderr
    assert result.stdout == ""


def test_help_lists_every_preset() -> None:
    for name in kernels.PRESETS:
        assert name in _PRESET_HELP
    result = run("convolve", "--help")
    assert result.exit_code == 0
    assert "flipped" in result.stdout and "--correlate" in result.stdout


# --- several inputs, JSON, formats, stdin/stdout, alpha, depth -------------------------------


def test_several_inputs_with_out_dir_and_json(folder: Path) -> None:
    result = run("blur", "a.png", "b.png", "--out-dir", "out", "--json", "--sigma", "1")
    assert result.exit_code == 0, result.stderr
    document = json.loads(result.stdout)
    assert document == {
        "outputs": [
            {"input": "a.png", "output": str(Path("out") / "a-blur.png")},
            {"input": "b.png", "output": str(Path("out") / "b-blur.png")},
        ]
    }
    for name in ("a", "b"):
        want = filters.gaussian_blur(pixels(f"{name}.png"), 1.0)
        np.testing.assert_array_equal(pixels(f"out/{name}-blur.png"), want)


def test_several_inputs_report_one_line_each(folder: Path) -> None:
    out = Path("a-folder-name-long-enough-that-a-wrapping-console-would-break-the-line") / "out"
    result = run("sharpen", "a.png", "b.png", "--out-dir", str(out))
    assert result.exit_code == 0, result.stderr
    assert result.stderr.splitlines() == [
        f"wrote {out / 'a-sharpen.png'}",
        f"wrote {out / 'b-sharpen.png'}",
    ]


def test_format_and_quality(folder: Path) -> None:
    result = run("blur", "a.png", "-o", "small.jpg", "--quality", "40")
    assert result.exit_code == 0, result.stderr
    assert run("blur", "a.png", "-o", "big.jpg", "--quality", "98").exit_code == 0
    assert Image.open("small.jpg").format == "JPEG"
    assert Path("small.jpg").stat().st_size < Path("big.jpg").stat().st_size
    assert run("blur", "a.png", "-o", "x.img", "--format", "tiff").exit_code == 0
    assert Image.open("x.img").format == "TIFF"


def test_stdin_to_stdout(folder: Path) -> None:
    result = run("blur", "-", "-o", "-", stdin=Path("a.png").read_bytes())
    assert result.exit_code == 0, result.stderr
    Path("piped.png").write_bytes(result.stdout_bytes)
    np.testing.assert_array_equal(pixels("piped.png"), filters.gaussian_blur(pixels("a.png"), 2.0))


def test_alpha_and_sixteen_bits_survive(folder: Path) -> None:
    rgba = np.zeros((40, 40, 4), np.uint8)
    rgba[10:30, 10:30] = (255, 40, 0, 255)
    Image.fromarray(rgba).save("rgba.png")
    assert run("blur", "rgba.png", "--sigma", "3").exit_code == 0
    blurred = pixels("rgba-blur.png")
    assert blurred.shape == (40, 40, 4)
    np.testing.assert_array_equal(blurred, filters.gaussian_blur(rgba, 3.0, has_alpha=True))
    deep = (natural_rgb().astype(np.uint16) * 257).astype(np.uint16)
    images.save(images.Picture(deep, False, "deep"), "deep.png")
    assert run("sharpen", "deep.png").exit_code == 0
    sharpened = pixels("deep-sharpen.png")
    assert sharpened.dtype == np.uint16
    np.testing.assert_array_equal(sharpened, filters.unsharp_mask(deep))


# --- bad input: exit code, one line naming the culprit, nothing written, input untouched -----


def write_bad_files(folder: Path) -> None:
    Path("empty.png").write_bytes(b"")
    Path("text.png").write_text("not an image\n")
    Path("cut.png").write_bytes(Path("a.png").read_bytes()[:300])
    Path("sub").mkdir()
    Path("a-blur.png").write_bytes(b"already here")
    if not Path("fifo.png").exists():
        os.mkfifo("fifo.png")


BAD_INPUTS = [
    (["blur", "missing.png"], 1, "missing.png"),
    (["blur", "sub"], 1, "sub"),
    (["blur", "cut.png"], 1, "cut.png"),
    (["blur", "text.png"], 1, "text.png"),
    (["blur", "empty.png"], 1, "empty.png"),
    (["blur", "a.png", "-o", "x.png", "--sigma", "0"], 2, "--sigma"),
    (["blur", "a.png", "-o", "x.png", "--sigma", "-1"], 2, "--sigma"),
    (["blur", "a.png", "-o", "x.png", "--sigma", "nan"], 2, "--sigma"),
    (["blur", "a.png", "-o", "x.png", "--sigma-y", "inf"], 2, "--sigma-y"),
    (["blur", "a.png", "-o", "x.png", "--truncate", "0"], 2, "--truncate"),
    (["blur", "a.png", "-o", "x.png", "--kind", "box", "--radius", "-1"], 2, "--radius"),
    (["blur", "a.png", "-o", "x.png", "--radius", "2"], 2, "--radius"),
    (["blur", "a.png", "-o", "x.png", "--kind", "box", "--sigma", "2"], 2, "--sigma"),
    (["sharpen", "a.png", "-o", "x.png", "--threshold", "1"], 2, "--threshold"),
    (["sharpen", "a.png", "-o", "x.png", "--amount", "nan"], 2, "--amount"),
    (["blur", "a.png", "-o", "a.png/x.png"], 2, "a.png"),
    (["blur", "a.png", "-o", "a.png"], 2, "a.png"),
    (["blur", "a.png", "-o", "./a.png", "--sigma", "3"], 2, "a.png"),
    (["blur", "a.png"], 2, "a-blur.png"),
    (["blur", "a.png", "-o", "x.xyz"], 2, "x.xyz"),
    (["blur", "a.png", "-o", "x.png", "--format", "nope"], 2, "--format"),
    (["blur", "a.png", "-o", "x.png", "--max-pixels", "100"], 1, "--max-pixels"),
    (["blur", "a.png", "b.png", "-o", "x.png"], 2, "--out-dir"),
    (["blur", "a.png", "a.png", "--out-dir", "o"], 2, "same output"),
    (["blur", "a.png", "-o", "-", "--json"], 2, "--json"),
    (["convolve", "a.png", "-k", "nofile.txt", "-o", "x.png"], 2, "nofile.txt"),
    (["convolve", "a.png", "-k", "text.png", "-o", "x.png"], 2, "text.png"),
    (["convolve", "a.png", "-k", "box:0", "-o", "x.png"], 2, "--kernel"),
    (["convolve", "a.png", "-k", "laplacian", "--strategy", "separable", "-o", "x.png"], 2, "rank"),
    (["convolve", "a.png", "-k", "sobel-y", "--normalize", "-o", "x.png"], 2, "--normalize"),
    (["blur", "b.png", "a-blur.png", "a.png", "--force"], 2, "would overwrite the input"),
    (["blur", "a.png", "-o", "x.png", "--format", "jpeg"], 2, "--format"),
    (["blur", "a.png", "-o", "fifo.png", "--force"], 2, "regular file"),
    (["blur", "a.png", "--out-dir", "a.png"], 2, "--out-dir"),
    (["blur", "a.png", "b.png", "--out-dir", "new/o", "--format", "gif"], 2, "GIF"),
]


@pytest.mark.parametrize(("args", "code", "named"), BAD_INPUTS)
def test_bad_input(folder: Path, args: list[str], code: int, named: str) -> None:
    write_bad_files(folder)
    before = listing(folder)
    source = digest(folder / "a.png")
    result = run(*args)
    assert result.exit_code == code, result.stderr
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("convfilt: error:"), result.stderr
    assert named in lines[0]
    assert "Traceback" not in result.stderr
    assert listing(folder) == before  # not even the --out-dir folder is made
    assert digest(folder / "a.png") == source
    assert (folder / "a-blur.png").read_bytes() == b"already here"


def test_a_failure_midway_keeps_earlier_outputs_and_writes_no_partial_file(folder: Path) -> None:
    Path("bad.png").write_text("nope")
    result = run("blur", "a.png", "bad.png", "--out-dir", "out")
    assert result.exit_code == 1
    assert "bad.png" in result.stderr.splitlines()[-1]
    assert sorted(p.name for p in Path("out").iterdir()) == ["a-blur.png"]


def test_the_output_format_is_checked_before_the_filter_runs(
    folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def must_not_run(*args: object, **kwargs: object) -> None:
        raise AssertionError("the filter ran before the output was known to be writable")

    monkeypatch.setattr(filters, "gaussian_blur", must_not_run)
    images.save(images.Picture(np.zeros((8, 8), np.float32), False, "f"), "float.tif")
    result = run("blur", "float.tif", "-o", "x.png")
    assert result.exit_code == 2
    assert "PNG cannot hold float32" in result.stderr
    assert not Path("x.png").exists()


def test_format_without_o_names_the_output_by_the_format(folder: Path) -> None:
    result = run("blur", "a.png", "--format", "tiff")
    assert result.exit_code == 0, result.stderr
    assert result.stderr.strip() == "wrote a-blur.tif"
    assert Image.open("a-blur.tif").format == "TIFF"
    assert run("blur", "-", "--out-dir", "o", "--format", "jpeg", stdin=Path("a.png").read_bytes())
    assert Image.open("o/stdin-blur.jpg").format == "JPEG"


def test_a_full_disk_under_stdout_is_one_line_exit_1(folder: Path) -> None:
    done = convfilt_onto_full_disk("blur", "a.png", "-o", "-")
    assert done.returncode == 1
    assert done.stderr.splitlines() == [
        "convfilt: error: <stdout>: cannot write (No space left on device)"
    ]


def test_force_overwrites(folder: Path) -> None:
    Path("a-blur.png").write_bytes(b"old")
    assert run("blur", "a.png", "--force").exit_code == 0
    np.testing.assert_array_equal(pixels("a-blur.png"), filters.gaussian_blur(pixels("a.png"), 2))


# --- a real process ----------------------------------------------------------------------------


def test_python_dash_m_convfilt_blur(folder: Path) -> None:
    done = convfilt("blur", "a.png", "--sigma", "1.2", "-o", "real.png")
    assert done.returncode == 0, done.stderr
    assert done.stdout == ""
    assert "wrote real.png" in done.stderr
    np.testing.assert_array_equal(pixels("real.png"), filters.gaussian_blur(pixels("a.png"), 1.2))
    failed = convfilt("blur", "a.png", "--sigma", "nan", "-o", "x.png")
    assert failed.returncode == 2
    assert failed.stderr.strip().splitlines() == [
        "convfilt: error: --sigma must be a finite number > 0, got nan"
    ]


def test_sharpen_rgba_is_gegl_premultiplied_unsharp(folder: Path) -> None:
    from .test_filters import alpha_ramp_image, gegl_unsharp

    rgba = np.rint(alpha_ramp_image(40) * 255).astype(np.uint8)
    Image.fromarray(rgba).save("ramp.png")
    result = run("sharpen", "ramp.png", "--sigma", "1.5", "--amount", "0.6")
    assert result.exit_code == 0, result.stderr
    want = np.clip(np.rint(gegl_unsharp(rgba / 255.0, 1.5, 0.6) * 255), 0, 255)
    assert np.abs(pixels("ramp-sharpen.png").astype(int) - want).max() <= 1
