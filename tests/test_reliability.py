"""What a hostile user tries: full disks, closed streams, signals, long names (issue 15).

Each test runs convfilt as a real process. A full disk is made without root: the child runs
with a file size limit (RLIMIT_FSIZE) and SIGXFSZ ignored, so a write past the limit fails with
EFBIG, or writes part of its bytes, exactly as on a file system that fills up; /dev/full (ENOSPC
at once) stands in for a full disk under stdout.
"""

from __future__ import annotations

import os
import resource
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from convfilt import images

from .processes import FULL_DISK

RNG = np.random.default_rng(15)


def run(
    *args: object,
    cwd: Path,
    file_limit: int | None = None,
    stdout: Path | None = None,
    extra: dict[str, int] | None = None,
) -> subprocess.CompletedProcess[str]:
    """``python -m convfilt ARGS`` in ``cwd``; ``file_limit`` bytes per written file (a full
    disk), stdout into a file when ``stdout`` is a path, ``extra`` fds closed ({"stdin": 0})."""

    def limit() -> None:
        if file_limit is not None:
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
            resource.setrlimit(resource.RLIMIT_FSIZE, (file_limit, file_limit))
        for fd in (extra or {}).values():
            os.close(fd)

    out = open(stdout, "wb") if stdout is not None else None  # noqa: SIM115
    try:
        return subprocess.run(
            [sys.executable, "-m", "convfilt", *map(str, args)],
            cwd=cwd,
            stdout=out if out is not None else subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            timeout=120,
            check=False,
            preexec_fn=limit,
        )
    finally:
        if out is not None:
            out.close()


def script(cwd: Path, code: str, *args: str) -> subprocess.CompletedProcess[str]:
    """``python -c CODE ARGS`` in ``cwd`` (a script that drives convfilt's own entry)."""
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def noisy(path: Path, shape: tuple[int, ...] = (96, 96, 3), dtype: type = np.uint8) -> Path:
    """Random pixels (they compress badly, so every format writes well over a few KB)."""
    info = np.iinfo(dtype)
    pixels = RNG.integers(info.min, info.max, shape, dtype=dtype, endpoint=True)
    images.save(images.Picture(pixels, False, str(path)), path, force=True)
    return path


def one_error_line(done: subprocess.CompletedProcess[str], *words: str) -> None:
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("convfilt: error:"), done.stderr
    for word in words:
        assert word in lines[0], done.stderr


# ---------------------------------------------------------------------------------------------
# A full disk: every encoder's bytes are verified before the rename (A1), stdout too (A2)

FULL_DISK_CASES = [
    ("rgb.png", "x.jpg"),
    ("rgb.png", "x.png"),
    ("rgb.png", "x.tif"),
    ("rgb.png", "x.webp"),
    ("rgb.png", "x.bmp"),
    ("rgb.png", "x.ppm"),
    ("grey.png", "x.gif"),
    ("deep.png", "x.tif"),
]


@pytest.mark.parametrize(("source", "output"), FULL_DISK_CASES)
@pytest.mark.parametrize("force", [False, True])
def test_a_full_disk_fails_every_format_and_keeps_the_old_file(
    tmp_path: Path, source: str, output: str, force: bool
) -> None:
    noisy(tmp_path / "rgb.png")
    noisy(tmp_path / "grey.png", (96, 96))
    noisy(tmp_path / "deep.png", dtype=np.uint16)
    old = b"the only good copy"
    if force:
        (tmp_path / output).write_bytes(old)
    args = ["blur", source, "-o", output, *(["--force"] if force else [])]
    done = run(*args, cwd=tmp_path, file_limit=3000)
    assert done.returncode == 1, done.stderr
    one_error_line(done, output)
    assert "wrote" not in done.stderr
    left = sorted(p.name for p in tmp_path.iterdir())
    assert left == sorted({"rgb.png", "grey.png", "deep.png", *([output] if force else [])})
    if force:
        assert (tmp_path / output).read_bytes() == old


@pytest.mark.parametrize(
    "args",
    [
        ("blur", "rgb.png", "-o", "-"),
        ("blur", "rgb.png", "-o", "-", "--format", "jpeg"),
        ("match", "rgb.png", "rgb.png", "--json"),
        ("match", "rgb.png", "rgb.png"),
        ("bench", "--sizes", "32", "--kernels", "3", "--repeat", "1"),
    ],
)
def test_a_full_disk_under_stdout_fails(tmp_path: Path, args: tuple[str, ...]) -> None:
    noisy(tmp_path / "rgb.png")
    done = run(*args, cwd=tmp_path, file_limit=100, stdout=tmp_path / "stdout.bin")
    assert done.returncode == 1, done.stderr
    one_error_line(done, "<stdout>")


def test_dev_full_under_stdout_fails_for_every_image_format(tmp_path: Path) -> None:
    if not FULL_DISK.exists():
        pytest.skip("no /dev/full here")
    noisy(tmp_path / "rgb.png")
    for fmt in ("png", "jpeg", "tiff", "webp", "bmp"):
        done = run("blur", "rgb.png", "-o", "-", "--format", fmt, cwd=tmp_path, stdout=FULL_DISK)
        assert done.returncode == 1, (fmt, done.stderr)
        one_error_line(done, "<stdout>")


@pytest.mark.parametrize("args", [("--help",), ("--version",), ("blur", "--help")])
def test_help_and_version_onto_a_full_disk_are_one_line_exit_1(
    tmp_path: Path, args: tuple[str, ...]
) -> None:
    if not FULL_DISK.exists():
        pytest.skip("no /dev/full here")
    done = run(*args, cwd=tmp_path, stdout=FULL_DISK)
    assert done.returncode == 1, done.stderr
    one_error_line(done, "<stdout>", "No space left")


def test_the_written_file_is_complete_when_there_is_room(tmp_path: Path) -> None:
    noisy(tmp_path / "rgb.png")
    done = run("blur", "rgb.png", "-o", "x.jpg", cwd=tmp_path, file_limit=10_000_000)
    assert done.returncode == 0, done.stderr
    with Image.open(tmp_path / "x.jpg") as image:
        image.load()  # a truncated JPEG raises here
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rgb.png", "x.jpg"]


# ---------------------------------------------------------------------------------------------
# Signals, long names, closed streams (items 17, 20, 22)

# Runs convfilt's own entry point, and sends the signal to itself at the moment the temporary
# file exists (while its bytes are being written): a real signal at the worst time.
SIGNAL_MIDWAY = """
import os, signal, sys
from convfilt import cli, images
real = images.write_all
def write_all(fd, data):
    if len(data) > 1000:  # the image, not a message
        os.kill(os.getpid(), signal.{name})
    real(fd, data)
images.write_all = write_all
sys.argv = ["convfilt", *sys.argv[1:]]
cli.main()
"""


BLUR_INTO_OUT = ("blur", "rgb.png", "-o", "out.png", "--force")


@pytest.mark.parametrize("name", ["SIGTERM", "SIGHUP", "SIGINT"])
def test_a_signal_while_writing_leaves_no_temporary_file(tmp_path: Path, name: str) -> None:
    noisy(tmp_path / "rgb.png")
    (tmp_path / "out.png").write_bytes(b"the only good copy")
    done = script(tmp_path, SIGNAL_MIDWAY.format(name=name), *BLUR_INTO_OUT)
    number = getattr(signal, name)
    assert done.returncode == 128 + number, done.stderr
    one_error_line(done)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.png", "rgb.png"]
    assert (tmp_path / "out.png").read_bytes() == b"the only good copy"


# The same, while a streamed TIFF is written band by band (its second band being queued).
SIGNAL_MIDSTREAM = """
import os, signal, sys
from convfilt import cli, streams
real = streams.TiffSink.write
bands = []
def write(self, start, rows):
    bands.append(start)
    if len(bands) == 2:
        os.kill(os.getpid(), signal.{name})
    real(self, start, rows)
streams.TiffSink.write = write
sys.argv = ["convfilt", *sys.argv[1:]]
cli.run()
"""


@pytest.mark.parametrize("name", ["SIGTERM", "SIGINT"])
def test_a_signal_while_streaming_leaves_the_old_output_and_no_temporary(
    tmp_path: Path, name: str
) -> None:
    import tifffile

    pixels = RNG.integers(0, 255, (2000, 1500, 3), dtype=np.uint8, endpoint=True)
    tifffile.imwrite(tmp_path / "big.tif", pixels, tile=(64, 64), photometric="rgb")
    (tmp_path / "out.tif").write_bytes(b"the only good copy")
    args = ["blur", "big.tif", "-o", "out.tif", "--force", "--memory", "56M"]
    args += ["--strategy", "separable"]
    done = script(tmp_path, SIGNAL_MIDSTREAM.format(name=name), *args)
    assert done.returncode == 128 + getattr(signal, name), done.stderr
    one_error_line(done)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["big.tif", "out.tif"]
    assert (tmp_path / "out.tif").read_bytes() == b"the only good copy"


def test_an_ignored_sighup_stays_ignored(tmp_path: Path) -> None:
    """Under ``nohup`` (SIGHUP ignored) a hang-up must not stop the work."""
    noisy(tmp_path / "rgb.png")
    ignoring = "import signal; signal.signal(signal.SIGHUP, signal.SIG_IGN)\n" + SIGNAL_MIDWAY
    done = script(tmp_path, ignoring.format(name="SIGHUP"), "blur", "rgb.png", "-o", "o.png")
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o.png", "rgb.png"]


def test_the_longest_name_the_file_system_takes_can_be_written(tmp_path: Path) -> None:
    noisy(tmp_path / "rgb.png")
    longest = os.pathconf(tmp_path, "PC_NAME_MAX")
    name = "n" * (longest - 4) + ".png"
    done = run("blur", "rgb.png", "-o", name, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([name, "rgb.png"])


def test_with_stderr_closed_no_error_text_reaches_stdout(tmp_path: Path) -> None:
    done = run("blur", "missing.png", "-o", "-", cwd=tmp_path, extra={"stderr": 2})
    assert done.returncode == 1
    assert done.stdout == ""


@pytest.mark.parametrize(
    ("args", "closed"),
    [
        (("blur", "-", "-o", "out.png"), {"stdin": 0}),
        (("blur", "rgb.png", "-o", "-"), {"stdout": 1}),
        (("match", "rgb.png", "rgb.png"), {"stdout": 1}),
        (("match", "rgb.png", "rgb.png", "--json"), {"stdout": 1}),
    ],
)
def test_a_closed_stdin_or_stdout_is_one_line_exit_1(
    tmp_path: Path, args: tuple[str, ...], closed: dict[str, int]
) -> None:
    noisy(tmp_path / "rgb.png")
    done = run(*args, cwd=tmp_path, extra=closed)
    assert done.returncode == 1, done.stderr
    one_error_line(done, "stdin" if "stdin" in closed else "<stdout>")


# ---------------------------------------------------------------------------------------------
# Files that hold more, or other, than one plain picture (items 3-11)


def write_tiff(path: Path, pixels: np.ndarray, **options: object) -> Path:
    import tifffile

    tifffile.imwrite(path, pixels, **options)  # type: ignore[arg-type]
    return path


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_a_multi_page_tiff_is_refused_in_one_line(tmp_path: Path, dtype: type) -> None:
    stack: np.ndarray = RNG.integers(0, 200, (3, 16, 20)).astype(dtype)
    write_tiff(tmp_path / "stack.tif", stack, photometric="minisblack")
    done = run("blur", "stack.tif", "-o", "out.tif", cwd=tmp_path)
    assert done.returncode == 1, done.stderr
    one_error_line(done, "stack.tif", "3 pages")
    assert not (tmp_path / "out.tif").exists()


def test_a_reduced_resolution_preview_is_not_a_page(tmp_path: Path) -> None:
    import tifffile

    pixels = RNG.integers(0, 255, (32, 40), dtype=np.uint8)
    with tifffile.TiffWriter(tmp_path / "preview.tif") as tif:
        tif.write(pixels, photometric="minisblack")
        tif.write(pixels[::4, ::4], photometric="minisblack", subfiletype=1)
    np.testing.assert_array_equal(images.load(tmp_path / "preview.tif").pixels, pixels)


@pytest.mark.parametrize(
    "options",
    [
        {"volumetric": True, "tile": (16, 16)},  # ImageDepth: one page, 5 slices
        {"planarconfig": "separate"},  # 5 samples per pixel
    ],
)
def test_a_volume_tiff_is_refused_naming_the_input(tmp_path: Path, options: dict) -> None:
    volume = RNG.integers(0, 255, (5, 16, 16), dtype=np.uint8)
    write_tiff(tmp_path / "volume.tif", volume, photometric="minisblack", **options)
    done = run("blur", "volume.tif", "-o", "out.png", cwd=tmp_path)
    assert done.returncode == 1, done.stderr
    one_error_line(done, "volume.tif")
    assert "out.png" not in done.stderr


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_miniswhite_tiff_is_read_as_a_positive_at_every_depth(tmp_path: Path, dtype) -> None:
    top = np.iinfo(dtype).max
    codes = np.array([[0, top // 4, top]], dtype=dtype).repeat(3, 0)
    write_tiff(tmp_path / "mw.tif", codes, photometric="miniswhite")
    np.testing.assert_array_equal(images.load(tmp_path / "mw.tif").pixels, top - codes)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_cmyk_tiff_becomes_rgb_at_its_own_depth(tmp_path: Path, dtype: type) -> None:
    top = float(np.iinfo(dtype).max)
    ink: np.ndarray = RNG.integers(0, int(top), (8, 9, 4), endpoint=True).astype(dtype)
    write_tiff(tmp_path / "cmyk.tif", ink, photometric="separated")
    picture = images.load(tmp_path / "cmyk.tif")
    c = ink.astype(np.float64)
    expected = np.rint((top - c[..., :3]) * (top - c[..., 3:]) / top)  # Pillow's 8-bit formula
    assert picture.pixels.dtype == dtype
    np.testing.assert_array_equal(picture.pixels, expected)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_associated_alpha_is_unpremultiplied_before_it_is_called_straight(
    tmp_path: Path, dtype: type
) -> None:
    import tifffile

    top = np.iinfo(dtype).max
    alpha: np.ndarray = np.array([[top, top // 2, top // 4, 0]], dtype=dtype)
    straight: np.ndarray = np.array([[top, top, top // 2, 0]], dtype=dtype)
    colour = np.rint(straight.astype(np.float64) * alpha / top).astype(dtype)
    premultiplied = np.dstack([colour] * 3 + [alpha])
    write_tiff(
        tmp_path / "assoc.tif", premultiplied, photometric="rgb", extrasamples=["assocalpha"]
    )
    picture = images.load(tmp_path / "assoc.tif")
    assert picture.has_alpha
    loaded = picture.pixels[..., 0].astype(np.float64)
    np.testing.assert_allclose(loaded, straight, atol=top / (2 * max(top // 4, 1)) + 1)
    again = np.rint(loaded * alpha / top)  # premultiplied again: the file's own codes
    np.testing.assert_array_equal(again, colour)
    images.save(picture, tmp_path / "out.tif")
    with tifffile.TiffFile(tmp_path / "out.tif") as tif:  # labelled straight: it is now
        assert tuple(tif.pages.first.extrasamples) == (2,)


@pytest.mark.parametrize(("mode", "key"), [("RGB", (60, 120, 0)), ("L", 60)])
def test_an_8bit_trns_colour_key_becomes_alpha_as_at_16_bits(
    tmp_path: Path, mode: str, key: object
) -> None:
    codes = RNG.integers(0, 4, (16, 20, 3), dtype=np.uint8) * 60
    codes[0, 0] = (60, 120, 0)
    pixels = codes if mode == "RGB" else codes[..., 0]
    Image.fromarray(pixels).save(tmp_path / "key.png", transparency=key)
    picture = images.load(tmp_path / "key.png")
    assert picture.has_alpha
    keyed = np.all(pixels == np.array(key), axis=-1) if mode == "RGB" else pixels == key
    np.testing.assert_array_equal(picture.pixels[..., -1], np.where(keyed, 0, 255))
    np.testing.assert_array_equal(picture.pixels[..., :-1].squeeze(), pixels)


@pytest.mark.parametrize("output", ["out.jpg", "out.png", "out.webp", "out.tif"])
def test_exif_of_an_8bit_tiff_reaches_every_output_that_holds_exif(
    tmp_path: Path, output: str
) -> None:
    exif = Image.Exif()
    exif[0x010F], exif[0x0110], exif[0x8298] = "Maker", "Model 7", "(c) archivist"
    pixels = RNG.integers(0, 255, (16, 20, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(tmp_path / "in.tif", exif=exif)
    done = run("blur", "in.tif", "-o", output, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    with Image.open(tmp_path / output) as image:
        kept = image.getexif()
    assert (kept.get(0x010F), kept.get(0x0110), kept.get(0x8298)) == (
        "Maker",
        "Model 7",
        "(c) archivist",
    )


# ---------------------------------------------------------------------------------------------
# Matching at the edges of float64, and the peak selection (items 12, 18, 24, the --top trap)


def scene_and_probe() -> tuple[np.ndarray, np.ndarray]:
    scene = RNG.random((40, 50))
    return scene, scene[12:20, 30:41].copy()


@pytest.mark.parametrize("magnitude", [1e154, 1e200, 1e300])
def test_ncc_of_huge_values_is_the_ncc_of_the_same_values_scaled(magnitude: float) -> None:
    from convfilt import matching

    scene, probe = scene_and_probe()
    want = matching.match_template(scene, probe)
    got = matching.match_template(scene * magnitude, probe * magnitude)
    np.testing.assert_allclose(got, want, atol=1e-12)
    (best,) = matching.find_matches(got, probe_shape=probe.shape)
    assert (best.x, best.y) == (30, 12)


@pytest.mark.parametrize("method", ["sqdiff", "ccorr"])
def test_sqdiff_and_ccorr_of_huge_values_are_refused_in_one_line(
    tmp_path: Path, method: str
) -> None:
    scene, probe = scene_and_probe()
    write_tiff(tmp_path / "scene.tif", scene * 1e200)
    write_tiff(tmp_path / "probe.tif", probe * 1e200)
    done = run("match", "scene.tif", "probe.tif", "--method", method, cwd=tmp_path)
    assert done.returncode == 1, done.stderr
    one_error_line(done, "scene.tif", "--method ncc")


@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
def test_a_min_score_that_is_not_a_number_is_a_usage_error(tmp_path: Path, value: str) -> None:
    noisy(tmp_path / "rgb.png", (32, 32, 3))
    done = run("match", "rgb.png", "rgb.png", "--min-score", value, cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    one_error_line(done, "--min-score")


def greedy_by_definition(scores: np.ndarray, top: int, reach: int) -> list[tuple[int, int]]:
    """The greedy non-maximum suppression as find_matches documents it, in the plainest way:
    the best remaining local maximum (first in row-major order among equals), then drop every
    candidate within ``reach`` in y and x of it, again and again."""
    from convfilt.matching import _local_maxima

    ys, xs = np.nonzero(_local_maxima(scores))
    alive = list(enumerate(zip(ys.tolist(), xs.tolist(), strict=True)))  # row-major order
    kept: list[tuple[int, int]] = []
    while alive and len(kept) < top:
        _, best = max(alive, key=lambda item: (scores[item[1]], -item[0]))
        kept.append(best)
        alive = [
            (i, p) for i, p in alive if abs(p[0] - best[0]) >= reach or abs(p[1] - best[1]) >= reach
        ]
    return kept


@pytest.mark.parametrize("reach", [1, 2, 3, 7])
@pytest.mark.parametrize("levels", [3, 1000])  # few levels: many ties and plateaus
def test_peak_selection_is_the_greedy_definition(reach: int, levels: int) -> None:
    from convfilt import matching

    scores = RNG.integers(0, levels, (30, 40)).astype(np.float64)
    for top in (1, 5, 10_000):
        found = matching.find_matches(scores, probe_shape=(3, 3), top=top, min_distance=reach)
        assert [(m.y, m.x) for m in found] == greedy_by_definition(scores, top, reach)


# ---------------------------------------------------------------------------------------------
# Tracebacks, outputs checked first, bombs and streams, messages (items 15-25)


@pytest.mark.parametrize(
    ("args", "flag"),
    [
        (("blur", "--sigma", "1e300"), "--sigma"),
        (("blur", "--sigma", "1e9"), "--sigma"),
        (("blur", "--sigma-y", "1e308"), "--sigma-y"),
        (("blur", "--truncate", "1e300"), "--truncate"),
        (("sharpen", "--sigma", "1e300"), "--sigma"),
        (("blur", "--kind", "box", "--radius", "100000"), "--radius"),
        (("convolve", "--kernel", "gaussian:1e300"), "gaussian:1e300"),
    ],
)
def test_an_absurd_kernel_is_a_usage_error_naming_its_option(
    tmp_path: Path, args: tuple[str, ...], flag: str
) -> None:
    noisy(tmp_path / "rgb.png", (32, 32, 3))
    command, *options = args
    done = run(command, "rgb.png", *options, "-o", "out.png", cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    one_error_line(done, flag)
    assert "memory" not in done.stderr
    assert not (tmp_path / "out.png").exists()


def test_a_kernel_file_whose_header_claims_too_much_is_a_usage_error(tmp_path: Path) -> None:
    noisy(tmp_path / "rgb.png", (32, 32, 3))
    with open(tmp_path / "huge.npy", "wb") as file:  # a header only: 1e5 x 1e5 float64
        header = {"descr": "<f8", "fortran_order": False, "shape": (100_000, 100_000)}
        np.lib.format.write_array_header_1_0(file, header)
    done = run("convolve", "rgb.png", "-k", "huge.npy", "-o", "out.png", cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    one_error_line(done, "huge.npy", "100000x100000")


def test_a_kernel_file_with_a_byte_order_mark_reads_as_without(tmp_path: Path) -> None:
    noisy(tmp_path / "rgb.png", (32, 32, 3))
    (tmp_path / "plain.txt").write_text("1 2 1\n2 4 2\n1 2 1\n", encoding="utf-8")
    (tmp_path / "bom.txt").write_text("1 2 1\n2 4 2\n1 2 1\n", encoding="utf-8-sig")
    for name in ("plain", "bom"):
        done = run("convolve", "rgb.png", "-k", f"{name}.txt", "-o", f"{name}.png", cwd=tmp_path)
        assert done.returncode == 0, done.stderr
    plain, bom = (images.load(tmp_path / f"{n}.png").pixels for n in ("plain", "bom"))
    np.testing.assert_array_equal(plain, bom)


def test_a_symlink_loop_as_input_is_one_line_exit_1(tmp_path: Path) -> None:
    (tmp_path / "a.png").symlink_to("b.png")
    (tmp_path / "b.png").symlink_to("a.png")
    done = run("blur", "a.png", cwd=tmp_path)
    assert done.returncode == 1, done.stderr
    one_error_line(done, "a.png")


@pytest.mark.parametrize("option", ["--sizes", "--kernels"])
def test_bench_refuses_absurd_sizes_as_usage_errors(tmp_path: Path, option: str) -> None:
    done = run("bench", option, "99999999999999999999", cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    one_error_line(done, option)


def test_match_checks_every_output_before_writing_any(tmp_path: Path) -> None:
    noisy(tmp_path / "rgb.png", (32, 32, 3))
    done = run(
        "match", "rgb.png", "rgb.png", "--annotate", "a.png", "--heatmap", "h.gif", cwd=tmp_path
    )
    assert done.returncode == 2, done.stderr
    one_error_line(done, "--heatmap", "h.gif")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rgb.png"]


def test_an_icc_profile_bomb_in_16bit_png_is_refused_as_at_8_bits(tmp_path: Path) -> None:
    import zlib

    import imagecodecs

    for depth, dtype in ((8, np.uint8), (16, np.uint16)):
        encoded = bytes(imagecodecs.png_encode(np.zeros((8, 8), dtype)))
        bomb = b"icc\x00\x00" + zlib.compress(b"\x00" * 20_000_000, 9)
        chunk = len(bomb).to_bytes(4, "big") + b"iCCP" + bomb
        chunk += zlib.crc32(b"iCCP" + bomb).to_bytes(4, "big")
        (tmp_path / f"bomb{depth}.png").write_bytes(encoded[:33] + chunk + encoded[33:])
        done = run("blur", f"bomb{depth}.png", "-o", f"out{depth}.png", cwd=tmp_path)
        assert done.returncode == 1, (depth, done.stderr)
        one_error_line(done, f"bomb{depth}.png")
        assert not (tmp_path / f"out{depth}.png").exists()


def test_an_endless_stream_is_refused_not_read_into_memory(tmp_path: Path) -> None:
    if not Path("/dev/zero").exists():
        pytest.skip("no /dev/zero here")
    done = run("blur", "/dev/zero", "--max-pixels", "1000", "-o", "out.png", cwd=tmp_path)
    assert done.returncode == 1, done.stderr
    one_error_line(done, "/dev/zero", "--max-pixels")


def test_library_warnings_are_one_line_each_without_source_paths(tmp_path: Path) -> None:
    corrupt_exif = b"Exif\x00\x00II*\x00\x08\x00\x00\x00\x05\x00\x0f\x01\x02\x00\x40\x00\x00\x00"
    Image.new("RGB", (8, 8)).save(tmp_path / "exif.jpg", exif=corrupt_exif)
    done = run("blur", "exif.jpg", "-o", "out.png", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    lines = done.stderr.strip().splitlines()
    assert lines[-1] == "wrote out.png"
    assert len(lines) > 1  # Pillow did complain about this EXIF
    assert all(line.startswith("convfilt: warning: ") for line in lines[:-1]), done.stderr
    assert ".py" not in done.stderr


# ---------------------------------------------------------------------------------------------
# Kernels longer than the image (the 1e6 x 1 and 1 x 1e6 blur traps)


def correlate_by_definition(x: np.ndarray, k: np.ndarray, mode: str, cval: float) -> np.ndarray:
    """out[i, j] = sum k[a, b] * ext(x)[i + a - kh//2, j + b - kw//2], the extension being the
    engine's own boundary rule (tiles.extension_indices), summed tap by tap."""
    from convfilt import tiles

    kh, kw = k.shape
    rows = tiles.extension_indices(x.shape[0], kh // 2, (kh - 1) // 2, mode)
    cols = tiles.extension_indices(x.shape[1], kw // 2, (kw - 1) // 2, mode)
    padded = np.where(
        (rows[:, None] < 0) | (cols[None, :] < 0), cval, x[rows[:, None], cols[None, :]]
    )
    out = np.zeros(x.shape)
    for a in range(kh):
        for b in range(kw):
            out += k[a, b] * padded[a : a + x.shape[0], b : b + x.shape[1]]
    return out


@pytest.mark.parametrize("mode", ["reflect", "mirror", "nearest", "wrap", "constant"])
@pytest.mark.parametrize("image_shape", [(1, 1), (1, 6), (6, 1), (2, 3), (3, 2)])
@pytest.mark.parametrize("kernel_shape", [(1, 13), (13, 1), (15, 17), (4, 12)])
def test_a_kernel_longer_than_the_image_gives_the_definition(
    mode: str, image_shape: tuple[int, int], kernel_shape: tuple[int, int]
) -> None:
    from convfilt import engine

    x = RNG.random(image_shape)
    k = RNG.random(kernel_shape)
    for cval in (0.0, 2.5) if mode == "constant" else (0.0,):
        for strategy in ("direct", "fft"):
            got = engine.correlate(x, k, mode=mode, cval=cval, strategy=strategy)
            want = correlate_by_definition(x, k, mode, cval)
            np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-10)
            flipped = engine.convolve(x, k[::-1, ::-1], mode=mode, cval=cval, strategy=strategy)
            if all(n % 2 for n in kernel_shape):  # convolve == correlate with the flip
                np.testing.assert_allclose(flipped, want, rtol=1e-10, atol=1e-10)


def test_a_line_image_blurs_through_a_folded_kernel() -> None:
    from convfilt import engine, filters

    seen: list[engine.Plan] = []
    line = RNG.random((1, 5000)).astype(np.float32)
    filters.gaussian_blur(line, 50.0, on_plan=seen.append)
    assert seen and seen[0].kernel_shape[0] <= 3  # 401 rows folded onto one image row


def png_with_chunk(kind: bytes, payload: bytes, dtype: type) -> bytes:
    import zlib

    import imagecodecs

    encoded = bytes(imagecodecs.png_encode(np.zeros((8, 8), dtype)))
    chunk = len(payload).to_bytes(4, "big") + kind + payload
    chunk += zlib.crc32(kind + payload).to_bytes(4, "big")
    return encoded[:33] + chunk + encoded[33:]


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_a_malformed_icc_profile_is_not_copied_and_libpng_speaks_in_one_line(
    tmp_path: Path, dtype: type
) -> None:
    import zlib

    payload = b"icc\x00\x00" + zlib.compress(b"garbage profile" * 10)
    (tmp_path / "icc.png").write_bytes(png_with_chunk(b"iCCP", payload, dtype))
    done = run("blur", "icc.png", "-o", "out.png", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    lines = done.stderr.strip().splitlines()
    assert lines[-1] == "wrote out.png"
    assert all(line.startswith("convfilt: warning: ") for line in lines[:-1]), done.stderr
    assert any("ICC profile is malformed" in line for line in lines), done.stderr
    assert images.load(tmp_path / "out.png").icc_profile is None


def test_a_full_disk_fails_the_streamed_tiff_road_too(tmp_path: Path) -> None:
    import tifffile

    pixels = RNG.integers(0, 65535, (2048, 512), dtype=np.uint16)
    tifffile.imwrite(tmp_path / "big.tif", pixels, tile=(256, 256))
    done = run(
        "blur", "big.tif", "-o", "out.tif", "--memory", "60M", cwd=tmp_path, file_limit=200_000
    )
    assert done.returncode == 1, done.stderr
    one_error_line(done, "out.tif")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["big.tif"]


@pytest.mark.parametrize("source", ["in.png", "in.jpg", "in.tif", "in16.png", "in16.tif"])
@pytest.mark.parametrize("output", ["out.png", "out.tif", "out.jpg"])
def test_the_resolution_is_kept_where_the_output_holds_one(
    tmp_path: Path, source: str, output: str
) -> None:
    import tifffile

    deep = "16" in source
    if deep and output == "out.jpg":
        pytest.skip("JPEG cannot hold 16 bits")
    pixels = RNG.integers(0, 65535 if deep else 255, (16, 20)).astype(
        np.uint16 if deep else np.uint8
    )
    if source == "in16.tif":
        tifffile.imwrite(tmp_path / source, pixels, resolution=(300, 150), resolutionunit="INCH")
    elif source == "in16.png":
        images.save(images.Picture(pixels, False, source, dpi=(300.0, 150.0)), tmp_path / source)
    else:
        Image.fromarray(pixels).save(tmp_path / source, dpi=(300, 150))
    images.save(images.load(tmp_path / source), tmp_path / output)  # what blur does around it
    dpi = images.load(tmp_path / output).dpi
    assert dpi is not None
    np.testing.assert_allclose(dpi, (300, 150), atol=0.02)  # PNG stores pixels per metre
