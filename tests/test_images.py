"""Image I/O: every mode in, the file's own depth out, metadata kept, atomic and careful writes."""

from __future__ import annotations

import io
import os
import stat
import struct
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import ClassVar

import imagecodecs
import numpy as np
import pytest
import tifffile
from PIL import Image, ImageCms

from convfilt import images
from convfilt.errors import ConvfiltError, UsageError
from convfilt.images import Picture

RNG = np.random.default_rng(20240601)
SRGB_ICC = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
ORIENTATION = 0x0112
MAKE = 0x010F


def random_pixels(dtype: type, channels: int, shape: tuple[int, int] = (9, 13)) -> np.ndarray:
    """Random pixels over the dtype's full range (floats: negative and beyond 1 too)."""
    full = shape if channels == 1 else (*shape, channels)
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        return RNG.integers(info.min, info.max, full, dtype=dtype, endpoint=True)
    return (RNG.standard_normal(full) * 1000).astype(dtype)


def exif_bytes(**tags: object) -> bytes:
    exif = Image.Exif()
    exif[MAKE] = "convfilt-test"
    for key, value in tags.items():
        exif[{"orientation": ORIENTATION}[key]] = value
    return exif.tobytes()


def png_chunk_types(data: bytes) -> list[bytes]:
    return [kind for kind, _ in images._png_chunks(data)]


def one_line_naming(exc: pytest.ExceptionInfo[ConvfiltError], name: str | Path) -> str:
    message = str(exc.value)
    assert "\n" not in message
    assert str(name) in message
    return message


# ---------------------------------------------------------------------------------------------
# Reading every mode


@pytest.mark.parametrize(("mode", "channels"), [("L", 1), ("LA", 2), ("RGB", 3), ("RGBA", 4)])
@pytest.mark.parametrize("ext", [".png", ".tif", ".webp"])
def test_8bit_modes_round_trip_exactly(tmp_path, mode, channels, ext):
    pixels = random_pixels(np.uint8, channels)
    source = tmp_path / f"in{ext}"
    Image.fromarray(pixels).save(source, lossless=True, exact=True)
    picture = images.load(source)
    expected = pixels
    if ext == ".webp" and channels < 3:  # WebP has no grey modes: grey arrives as RGB(A)
        grey = pixels if channels == 1 else pixels[..., 0]
        expected = np.dstack([grey] * 3 + ([pixels[..., 1]] if channels == 2 else []))
    np.testing.assert_array_equal(picture.pixels, expected)
    assert picture.pixels.dtype == np.uint8
    assert picture.has_alpha == (channels in (2, 4))
    assert picture.source == str(source)
    written = images.save(picture, tmp_path / f"out{ext}")
    assert written is not None
    np.testing.assert_array_equal(images.load(written).pixels, expected)


def test_bilevel_becomes_0_255_grey(tmp_path):
    bits = RNG.integers(0, 2, (8, 11)).astype(bool)
    Image.fromarray(bits).convert("1").save(tmp_path / "bits.png")
    picture = images.load(tmp_path / "bits.png")
    assert picture.pixels.dtype == np.uint8
    np.testing.assert_array_equal(picture.pixels, np.where(bits, 255, 0))


def test_palette_without_transparency_becomes_rgb(tmp_path):
    image = Image.fromarray(random_pixels(np.uint8, 3)).quantize(16)
    image.save(tmp_path / "p.png")
    picture = images.load(tmp_path / "p.png")
    assert not picture.has_alpha
    np.testing.assert_array_equal(picture.pixels, np.asarray(image.convert("RGB")))


@pytest.mark.parametrize("ext", [".png", ".gif"])
def test_palette_with_transparency_becomes_rgba(tmp_path, ext):
    indices = RNG.integers(0, 4, (10, 12)).astype(np.uint8)
    image = Image.fromarray(indices, mode="L").convert("P")
    image.putpalette([255, 0, 0, 0, 255, 0, 0, 0, 255, 9, 9, 9])
    image.info["transparency"] = 2
    image.save(tmp_path / f"p{ext}", transparency=2)
    picture = images.load(tmp_path / f"p{ext}")
    assert picture.has_alpha and picture.pixels.shape == (10, 12, 4)
    np.testing.assert_array_equal(picture.pixels[..., 3], np.where(indices == 2, 0, 255))
    opaque = indices == 0
    np.testing.assert_array_equal(picture.pixels[opaque][:, :3], [[255, 0, 0]] * opaque.sum())


def test_palette_with_alpha_mode_pa_becomes_rgba(tmp_path):
    image = Image.new("PA", (3, 2))
    image.putpalette([10, 20, 30, 40, 50, 60])
    image.putpixel((1, 0), (1, 128))
    image.save(tmp_path / "pa.tif")
    picture = images.load(tmp_path / "pa.tif")
    assert picture.has_alpha
    np.testing.assert_array_equal(picture.pixels[0, 1], [40, 50, 60, 128])
    np.testing.assert_array_equal(picture.pixels[0, 0], [10, 20, 30, 0])


@pytest.mark.parametrize(("mode", "ext"), [("CMYK", ".jpg"), ("CMYK", ".tif"), ("LAB", ".tif")])
def test_other_colour_spaces_become_rgb(tmp_path, mode, ext):
    image = Image.fromarray(random_pixels(np.uint8, 3)).convert(mode)
    image.save(tmp_path / f"c{ext}")
    picture = images.load(tmp_path / f"c{ext}")
    assert picture.pixels.shape == (9, 13, 3) and picture.pixels.dtype == np.uint8
    with Image.open(tmp_path / f"c{ext}") as reread:
        np.testing.assert_array_equal(picture.pixels, np.asarray(reread.convert("RGB")))


def test_ycbcr_tiff_becomes_rgb(tmp_path):
    rgb = random_pixels(np.uint8, 3)
    Image.fromarray(rgb).convert("YCbCr").save(tmp_path / "y.tif")
    picture = images.load(tmp_path / "y.tif")
    assert picture.pixels.shape == (9, 13, 3)
    assert np.abs(picture.pixels.astype(int) - rgb).max() <= 3  # YCbCr's own rounding


@pytest.mark.parametrize(
    ("dtype", "mode", "ext"),
    [(np.uint16, "I;16", ".png"), (np.uint16, "I;16", ".tif"), (np.int32, "I", ".tif"),
     (np.float32, "F", ".tif")],
)  # fmt: skip
def test_single_channel_deep_modes_keep_their_depth(tmp_path, dtype, mode, ext):
    pixels = random_pixels(dtype, 1)
    Image.fromarray(pixels).save(tmp_path / f"deep{ext}")
    with Image.open(tmp_path / f"deep{ext}") as check:
        assert check.mode == mode
    picture = images.load(tmp_path / f"deep{ext}")
    assert picture.pixels.dtype == dtype
    np.testing.assert_array_equal(picture.pixels, pixels)


def test_big_endian_16bit_grey_tiff_is_native_uint16(tmp_path):
    pixels = random_pixels(np.uint16, 1)
    tifffile.imwrite(tmp_path / "be.tif", pixels.astype(">u2"), byteorder=">")
    picture = images.load(tmp_path / "be.tif")
    assert picture.pixels.dtype == np.dtype(np.uint16)
    np.testing.assert_array_equal(picture.pixels, pixels)


def test_16bit_grey_pgm_round_trips_as_uint16(tmp_path):
    pixels = random_pixels(np.uint16, 1)
    images.save(Picture(pixels, False, "x"), tmp_path / "g.pgm")
    picture = images.load(tmp_path / "g.pgm")
    assert picture.pixels.dtype == np.uint16
    np.testing.assert_array_equal(picture.pixels, pixels)


@pytest.mark.parametrize(
    ("name", "mode"), [("anim.gif", "L"), ("anim.png", "RGB"), ("anim.webp", "RGB")]
)
def test_an_animation_is_refused_not_cut_to_its_first_frame(tmp_path, name, mode):
    frames = [Image.new(mode, (4, 4), (value,) * len(mode)) for value in (10, 200)]
    frames[0].save(tmp_path / name, save_all=True, append_images=frames[1:])
    with pytest.raises(ConvfiltError, match="2 frames") as caught:
        images.load(tmp_path / name)
    one_line_naming(caught, tmp_path / name)


# ---------------------------------------------------------------------------------------------
# 16-bit colour and float: beyond what Pillow keeps


@pytest.mark.parametrize("channels", [2, 3, 4])
def test_16bit_colour_png_is_read_exactly_where_pillow_reduces_it(tmp_path, channels):
    pixels = random_pixels(np.uint16, channels)
    (tmp_path / "c16.png").write_bytes(imagecodecs.png_encode(pixels))
    with Image.open(tmp_path / "c16.png") as pillow:  # the loss this module exists to avoid
        assert np.asarray(pillow).dtype == np.uint8
    picture = images.load(tmp_path / "c16.png")
    assert picture.pixels.dtype == np.uint16
    assert picture.has_alpha == (channels in (2, 4))
    np.testing.assert_array_equal(picture.pixels, pixels)


@pytest.mark.parametrize("channels", [1, 2, 3, 4])
def test_16bit_png_written_exactly_and_readable_by_others(tmp_path, channels):
    pixels = random_pixels(np.uint16, channels)
    images.save(Picture(pixels, channels in (2, 4), "x"), tmp_path / "o.png")
    np.testing.assert_array_equal(imagecodecs.png_decode((tmp_path / "o.png").read_bytes()), pixels)
    np.testing.assert_array_equal(images.load(tmp_path / "o.png").pixels, pixels)


def test_16bit_png_colour_key_becomes_alpha(tmp_path):
    pixels = random_pixels(np.uint16, 3, (4, 5))
    pixels[1, 2] = [1, 2, 3]
    encoded = imagecodecs.png_encode(pixels)
    keyed = encoded[:33] + images._png_chunk(b"tRNS", struct.pack(">3H", 1, 2, 3)) + encoded[33:]
    (tmp_path / "key.png").write_bytes(keyed)
    picture = images.load(tmp_path / "key.png")
    assert picture.has_alpha
    expected_alpha = np.full((4, 5), 65535)
    expected_alpha[np.all(pixels == [1, 2, 3], axis=-1)] = 0
    np.testing.assert_array_equal(picture.pixels[..., 3], expected_alpha)


@pytest.mark.parametrize("dtype", [np.uint16, np.int32, np.float32, np.float64])
@pytest.mark.parametrize("channels", [1, 2, 3, 4])
def test_deep_tiff_round_trips_exactly(tmp_path, dtype, channels):
    pixels = random_pixels(dtype, channels)
    images.save(Picture(pixels, channels in (2, 4), "x"), tmp_path / "deep.tiff")
    picture = images.load(tmp_path / "deep.tiff")
    assert picture.pixels.dtype == dtype
    assert picture.has_alpha == (channels in (2, 4))
    np.testing.assert_array_equal(picture.pixels, pixels)
    with tifffile.TiffFile(tmp_path / "deep.tiff") as tif:  # a TIFF others read the same way
        np.testing.assert_array_equal(tif.pages.first.asarray(), pixels)


@pytest.mark.parametrize("dtype", [np.uint16, np.float32])
def test_tiff_written_by_tifffile_is_read_exactly(tmp_path, dtype):
    pixels = random_pixels(dtype, 3)
    tifffile.imwrite(tmp_path / "rgb.tif", pixels, photometric="rgb")
    picture = images.load(tmp_path / "rgb.tif")
    assert picture.pixels.dtype == dtype
    np.testing.assert_array_equal(picture.pixels, pixels)


def test_planar_tiff_is_read_channels_last(tmp_path):
    pixels = random_pixels(np.uint16, 3)
    tifffile.imwrite(
        tmp_path / "planar.tif",
        np.moveaxis(pixels, -1, 0),
        photometric="rgb",
        planarconfig="separate",
    )
    np.testing.assert_array_equal(images.load(tmp_path / "planar.tif").pixels, pixels)


@pytest.mark.parametrize("dtype", [np.int8, np.int16, np.uint32, np.float16])
@pytest.mark.parametrize("channels", [1, 3])
def test_every_tiff_depth_round_trips_at_its_own_depth(tmp_path, dtype, channels):
    pixels = random_pixels(dtype, channels)
    if dtype == np.uint32:  # the top of the range, where int32 would wrap negative
        pixels.flat[:3] = [2**31, 2**32 - 1, 0]
    tifffile.imwrite(tmp_path / "s.tif", pixels, photometric="rgb" if channels == 3 else None)
    picture = images.load(tmp_path / "s.tif")
    assert picture.pixels.dtype == dtype
    np.testing.assert_array_equal(picture.pixels, pixels)
    images.save(picture, tmp_path / "again.tif")
    assert tifffile.imread(tmp_path / "again.tif").dtype == dtype
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "again.tif"), pixels)


# ---------------------------------------------------------------------------------------------
# Orientation


def quadrant_image() -> np.ndarray:
    """48x32 RGB: flat blocks, so JPEG keeps them recognisable; top-left white."""
    pixels = np.zeros((32, 48, 3), np.uint8)
    pixels[:16, :24] = 255
    pixels[16:, 24:] = [0, 0, 255]
    return pixels


def test_jpeg_exif_orientation_6_is_applied_and_not_written_again(tmp_path):
    pixels = quadrant_image()
    Image.fromarray(pixels).save(tmp_path / "rot.jpg", exif=exif_bytes(orientation=6), quality=95)
    picture = images.load(tmp_path / "rot.jpg")
    upright = np.rot90(pixels, -1)  # orientation 6: displayed turned 90 degrees clockwise
    assert picture.pixels.shape == upright.shape == (48, 32, 3)
    assert np.abs(picture.pixels.astype(int) - upright).mean() < 3
    assert picture.exif is not None
    kept = Image.Exif()
    kept.load(picture.exif)
    assert kept.get(ORIENTATION, 1) == 1 and kept[MAKE] == "convfilt-test"

    for ext in (".jpg", ".png"):
        images.save(picture, tmp_path / f"out{ext}")
        with Image.open(tmp_path / f"out{ext}") as written:
            assert written.getexif().get(ORIENTATION, 1) == 1
            assert written.getexif()[MAKE] == "convfilt-test"
            assert written.size == (32, 48)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_orientation_table_agrees_with_pillow(tmp_path, orientation):
    pattern = RNG.integers(0, 256, (5, 7, 3), dtype=np.uint8)
    exif = exif_bytes(orientation=orientation)
    Image.fromarray(pattern).save(tmp_path / "8.png", exif=exif)  # Pillow's exif_transpose
    deep = pattern.astype(np.uint16) * 257
    images.save(Picture(deep, False, "x", exif=exif), tmp_path / "16.png")  # our table
    tifffile.imwrite(
        tmp_path / "16.tif", deep, photometric="rgb", extratags=[(274, "H", 1, orientation, True)]
    )
    by_pillow = images.load(tmp_path / "8.png").pixels
    np.testing.assert_array_equal(
        images.load(tmp_path / "16.png").pixels, by_pillow.astype(np.uint16) * 257
    )
    np.testing.assert_array_equal(
        images.load(tmp_path / "16.tif").pixels, by_pillow.astype(np.uint16) * 257
    )
    for deep_file in ("16.png", "8.png"):
        picture = images.load(tmp_path / deep_file)
        assert picture.pixels.flags.c_contiguous
        kept = Image.Exif()
        kept.load(picture.exif or b"")
        assert kept.get(ORIENTATION, 1) == 1 and kept[MAKE] == "convfilt-test"


# ---------------------------------------------------------------------------------------------
# ICC and EXIF


@pytest.mark.parametrize(
    ("dtype", "ext"), [(np.uint8, ".png"), (np.uint8, ".jpg"), (np.uint8, ".webp"),
                       (np.uint8, ".tif"), (np.uint16, ".png"), (np.uint16, ".tif"),
                       (np.float32, ".tif")],
)  # fmt: skip
def test_icc_profile_is_kept(tmp_path, dtype, ext):
    pixels = random_pixels(dtype, 3)
    images.save(Picture(pixels, False, "x", icc_profile=SRGB_ICC), tmp_path / f"a{ext}")
    picture = images.load(tmp_path / f"a{ext}")
    assert picture.icc_profile == SRGB_ICC
    images.save(picture, tmp_path / f"b{ext}")
    assert images.load(tmp_path / f"b{ext}").icc_profile == SRGB_ICC


def test_16bit_png_metadata_chunks_are_valid_for_pillow(tmp_path):
    pixels = random_pixels(np.uint16, 4)
    picture = Picture(pixels, True, "x", icc_profile=SRGB_ICC, exif=exif_bytes())
    images.save(picture, tmp_path / "m.png")
    assert png_chunk_types((tmp_path / "m.png").read_bytes())[:3] == [b"IHDR", b"iCCP", b"eXIf"]
    with Image.open(tmp_path / "m.png") as reread:  # Pillow checks the CRCs and the zlib data
        reread.load()
        assert reread.info["icc_profile"] == SRGB_ICC
        assert reread.getexif()[MAKE] == "convfilt-test"
    reloaded = images.load(tmp_path / "m.png")
    assert reloaded.exif is not None and b"convfilt-test" in reloaded.exif


def test_an_icc_profile_of_another_colour_space_is_dropped(tmp_path):
    # A CMYK JPEG's profile describes CMYK; the RGB pixels convfilt hands out need another.
    cmyk = Image.fromarray(random_pixels(np.uint8, 3)).convert("CMYK")
    cmyk.save(tmp_path / "c.jpg", icc_profile=b"a CMYK profile")
    assert Image.open(tmp_path / "c.jpg").info["icc_profile"] == b"a CMYK profile"
    picture = images.load(tmp_path / "c.jpg")
    assert picture.pixels.shape[2] == 3 and picture.icc_profile is None


def test_icc_profile_from_pillow_read_png_is_kept(tmp_path):
    Image.fromarray(random_pixels(np.uint8, 3)).save(tmp_path / "p.png", icc_profile=SRGB_ICC)
    assert images.load(tmp_path / "p.png").icc_profile == SRGB_ICC


# ---------------------------------------------------------------------------------------------
# Saving: formats, refusals, quality


@pytest.mark.parametrize(
    ("name", "format", "magic"),
    [("a.PNG", None, b"\x89PNG"), ("a.JpG", None, b"\xff\xd8"), ("a.Tiff", None, b"II*\x00"),
     ("a.bin", "png", b"\x89PNG"), ("a.jpg", "jpeg", b"\xff\xd8"), ("a.x", "TIF", b"II*\x00"),
     ("a.bmp", None, b"BM"), ("a.gif", None, b"GIF8"), ("a.webp", None, b"RIFF")],
)  # fmt: skip
def test_format_from_extension_or_option(tmp_path, name, format, magic):
    pixels = random_pixels(np.uint8, 1)
    written = images.save(Picture(pixels, False, "x"), tmp_path / name, format=format)
    assert written == tmp_path / name
    assert written is not None and written.read_bytes().startswith(magic)


def test_a_format_contradicting_a_known_extension_is_refused(tmp_path):
    picture = Picture(random_pixels(np.uint8, 3), False, "x")
    with pytest.raises(UsageError, match=r"format jpg contradicts its extension \.png"):
        images.save(picture, tmp_path / "a.png", format="jpg")
    assert not (tmp_path / "a.png").exists()


def test_unknown_format_is_a_usage_error_naming_it(tmp_path):
    picture = Picture(random_pixels(np.uint8, 3), False, "x")
    with pytest.raises(UsageError, match=r"\.xyz"):
        images.save(picture, tmp_path / "a.xyz")
    with pytest.raises(UsageError, match="'heic'"):
        images.save(picture, tmp_path / "a.png", format="heic")
    with pytest.raises(UsageError, match="no extension"):
        images.save(picture, tmp_path / "noext")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("dtype", "channels", "ext", "advice"),
    [(np.uint8, 4, ".jpg", "PNG"), (np.uint8, 2, ".jpg", "PNG"), (np.uint16, 3, ".jpg", "PNG"),
     (np.float32, 1, ".png", "TIFF"), (np.int32, 3, ".png", "TIFF"), (np.uint16, 3, ".webp", "PNG"),
     (np.uint8, 3, ".gif", "PNG"), (np.uint8, 4, ".bmp", "PNG")],
)  # fmt: skip
def test_what_a_format_cannot_hold_is_refused_with_advice(tmp_path, dtype, channels, ext, advice):
    picture = Picture(random_pixels(dtype, channels), channels in (2, 4), "x")
    with pytest.raises(UsageError) as caught:
        images.save(picture, tmp_path / f"out{ext}")
    message = one_line_naming(caught, tmp_path / f"out{ext}")
    assert advice in message and "cannot hold" in message
    assert list(tmp_path.iterdir()) == []


NOT_IMAGES = [np.zeros((4, 4), bool), np.zeros((4, 4), np.int64), np.zeros((4, 4, 5), np.uint8),
              np.zeros(4, np.uint8), np.zeros((0, 4), np.uint8)]  # fmt: skip


@pytest.mark.parametrize("pixels", NOT_IMAGES)
def test_arrays_that_are_no_image_are_refused(tmp_path, pixels):
    with pytest.raises(UsageError):
        images.save(Picture(pixels, False, "x"), tmp_path / "o.tif")


@pytest.mark.parametrize("quality", [0, 101, -5, 2.5])
def test_bad_quality_is_a_usage_error(tmp_path, quality):
    with pytest.raises(UsageError, match=r"^quality "):
        images.save(
            Picture(random_pixels(np.uint8, 3), False, "x"), tmp_path / "o.jpg", quality=quality
        )


@pytest.mark.parametrize("ext", [".jpg", ".webp"])
def test_quality_is_applied(tmp_path, ext):
    smooth = np.linspace(0, 255, 64 * 64 * 3).reshape(64, 64, 3).astype(np.uint8)
    noisy = np.clip(smooth + RNG.integers(0, 40, smooth.shape), 0, 255).astype(np.uint8)
    picture = Picture(noisy, False, "x")
    images.save(picture, tmp_path / f"low{ext}", quality=5)
    images.save(picture, tmp_path / f"high{ext}", quality=100)
    assert (tmp_path / f"low{ext}").stat().st_size < (tmp_path / f"high{ext}").stat().st_size


def test_webp_without_quality_is_lossless_even_under_transparency(tmp_path):
    pixels = random_pixels(np.uint8, 4)
    pixels[0, :, 3] = 0
    images.save(Picture(pixels, True, "x"), tmp_path / "l.webp")
    np.testing.assert_array_equal(images.load(tmp_path / "l.webp").pixels, pixels)


def test_loaded_pixels_are_read_only_and_with_pixels_keeps_metadata(tmp_path):
    Image.fromarray(random_pixels(np.uint8, 3)).save(tmp_path / "a.png", icc_profile=SRGB_ICC)
    picture = images.load(tmp_path / "a.png")
    with pytest.raises(ValueError):
        picture.pixels[0, 0, 0] = 1
    changed = picture.with_pixels(np.zeros((2, 2, 3), np.uint8))
    assert changed.icc_profile == SRGB_ICC and changed.source == picture.source
    assert changed.format == "PNG" and not changed.has_alpha


# ---------------------------------------------------------------------------------------------
# Atomic writes and overwriting


def pillow_fails_midway(image: Image.Image, fp: io.BufferedWriter, *args, **kwargs) -> None:
    fp.write(b"partial bytes that must never reach the target")
    raise OSError("encoder exploded")


def libpng_fails(*args, **kwargs) -> bytes:
    raise imagecodecs.PngError("png_encode failed")


def tifffile_fails_midway(file: io.BytesIO, *args, **kwargs) -> None:
    file.write(b"II*\x00 and then nothing")
    raise ValueError("tifffile gave up")


def disk_full(fd: int) -> None:
    raise OSError(28, "No space left on device")


@pytest.mark.parametrize(
    ("dtype", "ext", "target", "name", "failure"),
    [(np.uint8, ".tif", Image.Image, "save", pillow_fails_midway),
     (np.uint8, ".png", imagecodecs, "png_encode", libpng_fails),
     (np.float32, ".tif", tifffile, "imwrite", tifffile_fails_midway),
     (np.uint8, ".jpg", os, "fsync", disk_full)],
)  # fmt: skip
@pytest.mark.parametrize("force", [False, True])
def test_failed_write_leaves_no_temp_and_the_old_file(
    tmp_path, monkeypatch, dtype, ext, target, name, failure, force
):
    existing = tmp_path / f"out{ext}"
    if force:
        existing.write_bytes(b"the old file")
    monkeypatch.setattr(target, name, failure)
    with pytest.raises(ConvfiltError) as caught:
        images.save(Picture(random_pixels(dtype, 3), False, "x"), existing, force=force)
    assert not isinstance(caught.value, UsageError)
    one_line_naming(caught, existing)
    assert sorted(p.name for p in tmp_path.iterdir()) == ([existing.name] if force else [])
    if force:
        assert existing.read_bytes() == b"the old file"


def test_existing_output_needs_force(tmp_path):
    target = tmp_path / "o.png"
    target.write_bytes(b"keep me")
    picture = Picture(random_pixels(np.uint8, 1), False, "x")
    with pytest.raises(UsageError, match="force=True"):
        images.save(picture, target)
    assert target.read_bytes() == b"keep me"
    images.save(picture, target, force=True)
    np.testing.assert_array_equal(images.load(target).pixels, picture.pixels)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o.png"]


def test_output_appearing_during_the_write_is_not_replaced(tmp_path, monkeypatch):
    target = tmp_path / "race.png"
    real_fsync = os.fsync

    def someone_else_writes(fd: int) -> None:
        real_fsync(fd)
        target.write_bytes(b"theirs")

    monkeypatch.setattr(os, "fsync", someone_else_writes)
    with pytest.raises(UsageError, match="exists"):
        images.save(Picture(random_pixels(np.uint8, 1), False, "x"), target)
    assert target.read_bytes() == b"theirs"
    assert [p.name for p in tmp_path.iterdir()] == ["race.png"]


def test_save_refuses_folders_and_missing_folders(tmp_path):
    picture = Picture(random_pixels(np.uint8, 1), False, "x")
    (tmp_path / "dir.png").mkdir()
    with pytest.raises(UsageError, match="folder"):
        images.save(picture, tmp_path / "dir.png", force=True)
    with pytest.raises(UsageError, match="does not exist"):
        images.save(picture, tmp_path / "missing" / "o.png")


def test_new_file_gets_ordinary_permissions_and_replaced_file_keeps_its_own(tmp_path):
    picture = Picture(random_pixels(np.uint8, 1), False, "x")
    umask = os.umask(0o022)
    try:
        images.save(picture, tmp_path / "new.png")
        assert stat.S_IMODE((tmp_path / "new.png").stat().st_mode) == 0o644
        (tmp_path / "old.png").write_bytes(b"")
        (tmp_path / "old.png").chmod(0o640)
        images.save(picture, tmp_path / "old.png", force=True)
        assert stat.S_IMODE((tmp_path / "old.png").stat().st_mode) == 0o640
    finally:
        os.umask(umask)


# ---------------------------------------------------------------------------------------------
# resolve_output


@pytest.fixture
def source(tmp_path) -> Path:
    path = tmp_path / "photo.jpg"
    path.write_bytes(b"pretend")
    return path


def test_default_output_is_next_to_the_input(source):
    assert images.resolve_output(source, "blur") == source.with_name("photo-blur.jpg")
    assert images.resolve_output(str(source), "sharpen") == source.with_name("photo-sharpen.jpg")


def test_out_wins_and_dash_means_stdout(source, tmp_path):
    assert images.resolve_output(
        source, "blur", out=tmp_path / "x.png", out_dir=tmp_path / "d"
    ) == (tmp_path / "x.png")
    assert images.resolve_output(source, "blur", out="-") == "-"
    assert images.resolve_output("-", "blur") == "-"
    assert not (tmp_path / "d").exists()


def test_out_dir_is_made_only_when_asked(source, tmp_path):
    folder = tmp_path / "out" / "nested"
    assert images.resolve_output(source, "blur", out_dir=folder) == folder / "photo-blur.jpg"
    assert not (tmp_path / "out").exists()  # resolving checks; it leaves nothing behind
    images.make_folder(folder)
    assert folder.is_dir()
    assert images.resolve_output("-", "blur", out_dir=folder) == folder / "stdin-blur.png"


def test_format_names_the_default_output(source, tmp_path):
    assert images.resolve_output(source, "blur", format="tiff") == tmp_path / "photo-blur.tif"
    assert images.resolve_output("-", "sharpen", out_dir=tmp_path, format="webp") == (
        tmp_path / "stdin-sharpen.webp"
    )


def test_special_files_are_never_replaced(source, tmp_path):
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    with pytest.raises(UsageError, match="not a regular file"):
        images.resolve_output(source, "blur", out=fifo, force=True)
    with pytest.raises(UsageError, match="not a regular file"):
        images.save(Picture(random_pixels(np.uint8, 1), False, "x"), fifo, force=True)


def test_source_without_extension_gets_png(tmp_path):
    assert images.resolve_output(tmp_path / "raw", "blur") == tmp_path / "raw-blur.png"


def test_input_is_never_overwritten_unless_named_with_force(source, tmp_path):
    with pytest.raises(UsageError, match="overwrite the input"):
        images.resolve_output(source, "blur", out=source)
    with pytest.raises(UsageError, match="overwrite the input"):
        images.resolve_output(source, "blur", out=tmp_path / "." / "photo.jpg")
    link = tmp_path / "link.jpg"
    link.symlink_to(source)
    with pytest.raises(UsageError, match="overwrite the input"):
        images.resolve_output(source, "blur", out=link)
    assert images.resolve_output(source, "blur", out=source, force=True) == source


def test_input_cannot_be_overwritten_through_out_dir_even_with_force(tmp_path):
    source = tmp_path / "photo-blur.jpg"
    source.write_bytes(b"")
    target = images.resolve_output(source, "blur", out_dir=tmp_path, force=True)
    assert target == tmp_path / "photo-blur-blur.jpg"


def test_existing_output_needs_force_in_resolve(source):
    existing = source.with_name("photo-blur.jpg")
    existing.write_bytes(b"")
    with pytest.raises(UsageError, match="force=True"):
        images.resolve_output(source, "blur")
    assert images.resolve_output(source, "blur", force=True) == existing


def test_output_under_a_file_is_a_usage_error(source, tmp_path):
    with pytest.raises(UsageError) as caught:
        images.resolve_output(source, "blur", out=source / "x.png")
    assert "is a file" in one_line_naming(caught, source)
    with pytest.raises(UsageError, match="is a file"):
        images.resolve_output(source, "blur", out_dir=source)
    with pytest.raises(UsageError, match="is a file"):
        images.resolve_output(source, "blur", out_dir=source / "sub")


def test_output_folder_problems(source, tmp_path):
    with pytest.raises(UsageError, match="does not exist"):
        images.resolve_output(source, "blur", out=tmp_path / "missing" / "x.png")
    (tmp_path / "taken.png").mkdir()
    with pytest.raises(UsageError, match="folder"):
        images.resolve_output(source, "blur", out=tmp_path / "taken.png", force=True)


# ---------------------------------------------------------------------------------------------
# stdin and stdout


def png_bytes(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def test_dash_reads_stdin(monkeypatch):
    pixels = random_pixels(np.uint8, 3)
    monkeypatch.setattr(sys, "stdin", SimpleNamespace(buffer=io.BytesIO(png_bytes(pixels))))
    picture = images.load("-")
    assert picture.source == "-"
    np.testing.assert_array_equal(picture.pixels, pixels)


def test_dash_reads_16bit_png_from_stdin(monkeypatch):
    pixels = random_pixels(np.uint16, 3)
    monkeypatch.setattr(
        sys, "stdin", SimpleNamespace(buffer=io.BytesIO(imagecodecs.png_encode(pixels)))
    )
    np.testing.assert_array_equal(images.load("-").pixels, pixels)


def test_empty_stdin_is_an_error(monkeypatch):
    monkeypatch.setattr(sys, "stdin", SimpleNamespace(buffer=io.BytesIO(b"")))
    with pytest.raises(ConvfiltError, match="stdin is empty"):
        images.load("-")


@pytest.mark.parametrize(
    ("format", "magic"), [(None, b"\x89PNG"), ("jpeg", b"\xff\xd8"), ("tiff", b"II*\x00")]
)
def test_dash_writes_stdout(monkeypatch, tmp_path, format, magic):
    out = io.BytesIO()
    monkeypatch.setattr(sys, "stdout", io.TextIOWrapper(out))
    pixels = random_pixels(np.uint8, 3)
    assert images.save(Picture(pixels, False, "x"), "-", format=format) is None
    assert out.getvalue().startswith(magic)
    if format is None:
        (tmp_path / "from-stdout.png").write_bytes(out.getvalue())
        np.testing.assert_array_equal(images.load(tmp_path / "from-stdout.png").pixels, pixels)


def test_stdout_refusal_writes_nothing(monkeypatch):
    out = io.BytesIO()
    monkeypatch.setattr(sys, "stdout", io.TextIOWrapper(out))
    with pytest.raises(UsageError):
        images.save(Picture(random_pixels(np.float32, 3), False, "x"), "-")
    assert out.getvalue() == b""


# ---------------------------------------------------------------------------------------------
# Bad input


def valid_file_bytes(kind: str) -> bytes:
    buffer = io.BytesIO()
    if kind == "png16":
        return bytes(imagecodecs.png_encode(random_pixels(np.uint16, 3, (64, 64))))
    if kind == "tiff-float":
        tifffile.imwrite(buffer, random_pixels(np.float32, 3, (64, 64)), photometric="rgb")
        return buffer.getvalue()
    pixels = random_pixels(np.uint8, 3, (64, 64))
    Image.fromarray(pixels).save(buffer, format=kind)
    return buffer.getvalue()


def test_missing_file(tmp_path):
    with pytest.raises(ConvfiltError) as caught:
        images.load(tmp_path / "nope.png")
    assert "no such file" in one_line_naming(caught, tmp_path / "nope.png")


def test_folder_as_file(tmp_path):
    with pytest.raises(ConvfiltError) as caught:
        images.load(tmp_path)
    assert "folder" in one_line_naming(caught, tmp_path)


def test_empty_file(tmp_path):
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(ConvfiltError) as caught:
        images.load(tmp_path / "empty.png")
    assert "empty" in one_line_naming(caught, tmp_path / "empty.png")


def test_not_an_image(tmp_path):
    (tmp_path / "notes.png").write_text("these are not pixels\n")
    with pytest.raises(ConvfiltError) as caught:
        images.load(tmp_path / "notes.png")
    assert "not an image" in one_line_naming(caught, tmp_path / "notes.png")


@pytest.mark.parametrize("kind", ["PNG", "JPEG", "TIFF", "WEBP", "png16", "tiff-float"])
def test_truncated_file(tmp_path, kind):
    data = valid_file_bytes(kind)
    path = tmp_path / f"cut-{kind}"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ConvfiltError) as caught:
        images.load(path)
    assert not isinstance(caught.value, UsageError)
    assert "truncated or corrupt" in one_line_naming(caught, path)


def test_permission_denied_message(tmp_path, monkeypatch):
    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(images, "open", refuse, raising=False)
    with pytest.raises(ConvfiltError) as caught:
        images.load(tmp_path / "secret.png")
    assert "permission denied" in one_line_naming(caught, tmp_path / "secret.png")


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their permissions")
def test_permission_denied_for_real(tmp_path):
    path = tmp_path / "secret.png"
    path.write_bytes(valid_file_bytes("PNG"))
    path.chmod(0)
    with pytest.raises(ConvfiltError, match="permission denied"):
        images.load(path)


# ---------------------------------------------------------------------------------------------
# Decompression bombs


@pytest.mark.parametrize("kind", ["PNG", "png16", "tiff-float"])
@pytest.mark.parametrize(
    "limit", [64 * 64 - 1, 3000, 2000, 100]
)  # Pillow warns 1x..2x, fails above
def test_bomb_guard_names_the_size_and_the_option(tmp_path, kind, limit):
    path = tmp_path / f"big-{kind}"
    path.write_bytes(valid_file_bytes(kind))
    before = Image.MAX_IMAGE_PIXELS
    with pytest.raises(ConvfiltError) as caught:
        images.load(path, max_pixels=limit)
    message = one_line_naming(caught, path)
    assert "64x64" in message and "max_pixels" in message and str(limit) in message
    assert before == Image.MAX_IMAGE_PIXELS
    assert images.load(path, max_pixels=64 * 64).pixels.shape == (64, 64, 3)


def test_default_limit_is_pillows(tmp_path, monkeypatch):
    path = tmp_path / "a.png"
    path.write_bytes(valid_file_bytes("PNG"))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    with pytest.raises(ConvfiltError, match="limit of 1000"):
        images.load(path)


class _WatchedModule(type(Image)):  # type: ignore[misc]
    """A module type that records every attribute written to the module."""

    writes: ClassVar[list[str]] = []

    def __setattr__(self, name: str, value: object) -> None:
        _WatchedModule.writes.append(name)
        super().__setattr__(name, value)


@pytest.fixture
def pillow_writes():
    """The names written to ``PIL.Image`` while the test runs (its class swapped, restored)."""
    original = type(Image)
    _WatchedModule.writes = []
    Image.__class__ = _WatchedModule
    try:
        yield _WatchedModule.writes
    finally:
        Image.__class__ = original


@pytest.mark.parametrize("kind", ["PNG", "GIF", "png16"])
def test_loading_never_writes_pillows_global_limit(tmp_path, pillow_writes, kind):
    # changing Image.MAX_IMAGE_PIXELS around a load races with every other thread using Pillow
    path = tmp_path / "a"
    path.write_bytes(valid_file_bytes(kind))
    images.load(path, max_pixels=64 * 64)
    with pytest.raises(ConvfiltError):
        images.load(path, max_pixels=100)
    assert "MAX_IMAGE_PIXELS" not in pillow_writes


def test_a_limit_above_pillows_reads_without_warning(tmp_path, monkeypatch, recwarn):
    path = tmp_path / "a.png"
    path.write_bytes(valid_file_bytes("PNG"))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # Pillow alone would refuse 64x64
    assert images.load(path, max_pixels=64 * 64).pixels.shape == (64, 64, 3)
    assert not [w for w in recwarn if issubclass(w.category, Image.DecompressionBombWarning)]
    assert Image.MAX_IMAGE_PIXELS == 100


def test_loads_in_threads_each_keep_their_own_limit(tmp_path):
    import threading

    path = tmp_path / "a.png"
    path.write_bytes(valid_file_bytes("PNG"))
    before = Image.MAX_IMAGE_PIXELS
    start = threading.Barrier(4)
    wrong: list[str] = []

    def load_many(limit: int) -> None:
        start.wait()
        for _ in range(30):
            try:
                images.load(path, max_pixels=limit)
                refused = False
            except ConvfiltError:
                refused = True
            if refused != (limit < 64 * 64):
                wrong.append(f"limit {limit}: refused={refused}")

    threads = [threading.Thread(target=load_many, args=(n,)) for n in (100, 10**6, 200, 10**7)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert wrong == []
    assert before == Image.MAX_IMAGE_PIXELS


def test_max_pixels_must_be_positive(tmp_path):
    with pytest.raises(UsageError, match=r"^max_pixels "):
        images.load(tmp_path / "a.png", max_pixels=0)


def test_real_pipes_carry_16bit_pixels_through_stdin_and_stdout():
    pixels = random_pixels(np.uint16, 4)
    script = "from convfilt import images; images.save(images.load('-'), '-')"
    done = subprocess.run(
        [sys.executable, "-c", script],
        input=imagecodecs.png_encode(pixels),
        capture_output=True,
        check=True,
        cwd=Path(__file__).resolve().parent.parent,
    )
    assert done.stderr == b""
    np.testing.assert_array_equal(imagecodecs.png_decode(done.stdout), pixels)


@pytest.mark.parametrize(
    ("name", "format", "expected"),
    [
        ("a.JPEG", None, "JPEG"),
        ("-", None, "PNG"),
        ("-", "webp", "WEBP"),
        ("a.bin", ".tif", "TIFF"),
    ],
)
def test_output_format_is_public_for_checking_before_work(name, format, expected):
    assert images.output_format(name, format) == expected
