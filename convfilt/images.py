"""Pillow in and out: modes, bit depth, alpha, EXIF orientation, ICC, atomic save.

Three readers/writers, each where it is the one that loses nothing:

- Pillow for reading everything 8-bit and for writing every format but PNG and deep TIFF;
- imagecodecs (libpng) for reading every 16-bit PNG, because Pillow reduces 16-bit colour PNG to
  8 bits, and for writing every PNG (one writer for 8 and 16 bits, and a faster one);
- tifffile for every TIFF deeper than 8 bits (16-bit, int32, float), colour or grey, with or
  without alpha, because Pillow cannot read or write most of them.

Loaded pixels are upright (EXIF/TIFF orientation applied) and read-only; the kept EXIF carries
no orientation tag. Saving writes the pixels' own depth or refuses with advice, never converts
silently, and is atomic: a temporary file in the target folder, fsync, then a rename.
"""

from __future__ import annotations

import contextlib
import errno
import io
import os
import stat
import struct
import sys
import tempfile
import warnings
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, BinaryIO

import imagecodecs
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import ConvfiltError, UsageError

STDIO = "-"  # as INPUT reads stdin, as OUT writes stdout
TEMP_PREFIX = ".cf"  # temporary output files: .cfXXXXXXXX.tmp in the target folder

ORIENTATION_TAG = 0x0112
ICC_TIFF_TAG = 34675
EXIF_PREFIX = b"Exif\x00\x00"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
TIFF_SIGNATURES = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")
DEFAULT_QUALITY = 95  # JPEG without a quality (WebP without one is lossless)

# Failures a decoder may raise on a truncated or corrupt file (Pillow, libpng, tifffile).
DECODE_ERRORS = (
    OSError,
    SyntaxError,
    ValueError,
    EOFError,
    IndexError,
    KeyError,
    TypeError,
    RuntimeError,
    struct.error,
    zlib.error,
)
# Failures an encoder may raise (disk full, codec errors); not TypeError/KeyError/IndexError,
# which on writing would be our own bug and must not pass for an I/O message.
ENCODE_ERRORS = (OSError, ValueError, RuntimeError, struct.error, zlib.error)


@dataclass(frozen=True)
class Picture:
    """An image as loaded: pixels plus what is needed to write it back without loss.

    pixels: (H, W) or (H, W, C), channels last, alpha (if any) the last channel. dtype is the
        file's own depth: uint8, uint16, int32 (Pillow mode I, or 8/16-bit signed TIFF widened)
        or float32 (mode F, float TIFF; float64 TIFF stays float64). Palette images arrive as
        RGB/RGBA, CMYK/YCbCr/LAB/HSV as RGB, bilevel ("1") as 0/255 uint8 grey.
        EXIF orientation is already applied (pixels are upright). Loaded pixels are read-only;
        copy them before changing them in place.
    has_alpha: whether the last channel is alpha.
    source: the path it came from ("-" for stdin), for messages.
    format: the source format as Pillow names it ("PNG", "JPEG", "TIFF", ...), or None.
    icc_profile, exif: bytes to write back where the output format can hold them; the EXIF
        carries no orientation tag (or orientation 1).
    dpi: the resolution (x, y) in dots per inch, if the file states one (pixels upright).
    """

    pixels: np.ndarray
    has_alpha: bool
    source: str
    format: str | None = None
    icc_profile: bytes | None = None
    exif: bytes | None = None
    dpi: tuple[float, float] | None = None

    def with_pixels(self, pixels: np.ndarray) -> Picture:
        """The same picture (metadata, alpha flag) with new pixels, e.g. a filter's result."""
        return replace(self, pixels=pixels)


# ---------------------------------------------------------------------------------------------
# Reading


def load(path: str | Path, *, max_pixels: int | None = None) -> Picture:
    """Read an image file ("-" for stdin); failures raise ConvfiltError with one line.

    ``max_pixels`` is the decompression-bomb limit (default: Pillow's ``MAX_IMAGE_PIXELS``,
    read and never changed, so loads in several threads do not race); an image with more
    pixels is refused from its header, before its pixels are decoded, whichever reader
    handles it. 16-bit PNG goes through imagecodecs, TIFF deeper than 8 bits through tifffile,
    everything else through Pillow.
    """
    name = str(path)
    limit = Image.MAX_IMAGE_PIXELS if max_pixels is None else max_pixels
    if limit is not None and limit <= 0:
        raise UsageError(f"max_pixels must be positive, got {limit}", parameters=["max_pixels"])
    data = _read_bytes(name, limit)
    reader = _pick_reader(data, name)
    try:
        picture = reader(data, name, limit)
    except ConvfiltError:
        raise
    except UnidentifiedImageError:
        raise ConvfiltError(f"{name}: not an image (or a format Pillow cannot read)") from None
    except MemoryError:
        raise
    except DECODE_ERRORS as exc:
        raise ConvfiltError(f"{name}: truncated or corrupt image ({_one_line(exc)})") from None
    picture.pixels.flags.writeable = False
    return picture


def _read_bytes(name: str, limit: int | None = None) -> bytes:
    """The whole file (or stdin) as bytes, with a one-line error for each way it can fail.

    A stream (stdin, a pipe, a device such as /dev/zero) may never end: it is read up to
    ``STREAM_BYTES_PER_PIXEL`` bytes per pixel of the ``limit`` (plus 1 MiB), and refused
    beyond, instead of filling the memory.
    """
    cap = None if limit is None else limit * STREAM_BYTES_PER_PIXEL + 2**20
    if name == STDIO:
        if sys.stdin is None:
            raise ConvfiltError("-: stdin is closed, expected image bytes")
        data = _read_capped(sys.stdin.buffer, name, cap)
        if not data:
            raise ConvfiltError("-: stdin is empty, expected image bytes")
        return data
    try:
        with open(name, "rb") as file:
            regular = stat.S_ISREG(os.fstat(file.fileno()).st_mode)
            data = file.read() if regular else _read_capped(file, name, cap)
    except FileNotFoundError:
        raise ConvfiltError(f"{name}: no such file") from None
    except IsADirectoryError:
        raise ConvfiltError(f"{name}: is a folder, not an image file") from None
    except PermissionError:
        raise ConvfiltError(f"{name}: permission denied") from None
    except OSError as exc:
        raise ConvfiltError(f"{name}: cannot read ({exc.strerror or exc})") from None
    if not data:
        raise ConvfiltError(f"{name}: empty file")
    return data


# Bytes per pixel a stream may bring: 16-bit RGBA, uncompressed (deeper files come from disk).
STREAM_BYTES_PER_PIXEL = 8


def _read_capped(stream: BinaryIO, name: str, cap: int | None) -> bytes:
    """All of ``stream``, or ConvfiltError once it brings more than ``cap`` bytes."""
    if cap is None:
        return stream.read()
    data = stream.read(cap + 1)
    if len(data) > cap:
        raise ConvfiltError(
            f"{name}: a stream of more than {cap} bytes without an image's end (a device "
            "such as /dev/zero?); raise max_pixels if it is an image that large",
            parameters=["max_pixels"],
        )
    return data


Reader = Callable[[bytes, str, "int | None"], Picture]


def _pick_reader(data: bytes, name: str) -> Reader:
    """Choose the reader that keeps the file's full depth (see the module docstring)."""
    if data.startswith(PNG_SIGNATURE) and len(data) >= 33 and data[12:16] == b"IHDR":
        bit_depth = data[24]
        if bit_depth == 16:
            return _read_png16
    if data.startswith(TIFF_SIGNATURES) and _tiff_needs_tifffile(data, name):
        return _read_tiff_deep
    return _read_pillow


@contextlib.contextmanager
def c_warnings(library: str) -> Iterator[None]:
    """Turn what C code (libpng, libtiff, libjpeg) prints on file descriptor 2 meanwhile into
    Python warnings, one per line, so that the command line shows them in its one-line form and
    a program can filter them; nothing is lost. With fd 2 closed there is nothing to catch.
    """
    try:
        saved = os.dup(2)
    except OSError:
        yield
        return
    with tempfile.TemporaryFile() as capture:
        os.dup2(capture.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            text = capture.read().decode("utf-8", errors="replace")
    for line in text.splitlines():
        if line.strip():
            warnings.warn(f"{library}: {line.strip()}", RuntimeWarning, stacklevel=3)


def _check_pixels(name: str, width: int, height: int, limit: int | None) -> None:
    """Refuse an image larger than the decompression-bomb limit, naming its size."""
    if limit is not None and width * height > limit:
        raise _too_many_pixels(name, width, height, limit)


def _too_many_pixels(name: str, width: int, height: int, limit: int | None) -> ConvfiltError:
    return ConvfiltError(
        f"{name}: {width}x{height} = {width * height} pixels exceeds the limit of {limit} "
        "(decompression-bomb guard); raise it with max_pixels if you trust this file",
        parameters=["max_pixels"],
    )


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text or type(exc).__name__


# Pillow modes and what they become: None keeps the mode as is.
PILLOW_MODES: dict[str, str | None] = {
    "1": "L",
    "L": None,
    "LA": None,
    "P": "RGB",  # RGBA instead when the palette carries transparency
    "PA": "RGBA",
    "RGB": None,
    "RGBA": None,
    "RGBa": "RGBA",
    "RGBX": "RGB",
    "CMYK": "RGB",
    "YCbCr": "RGB",
    "LAB": "RGB",
    "HSV": "RGB",
    "I;16": None,
    "I;16L": None,
    "I;16B": None,
    "I;16N": None,
    "I": None,
    "F": None,
}
# Modes whose conversion to RGB leaves the source's colour space (and so its ICC profile).
SPACE_CHANGING_MODES = frozenset({"CMYK", "YCbCr", "LAB", "HSV"})
# numpy dtypes Pillow hands out for the kept modes, mapped to the native dtype we return.
NATIVE_DTYPES = {"u1": np.uint8, "u2": np.uint16, "i4": np.int32, "f4": np.float32}


def _read_pillow(data: bytes, name: str, limit: int | None) -> Picture:
    """Pillow's reader, with the bomb guard at ``limit`` and EXIF orientation applied."""
    image = _open_unchecked(data)
    _check_pixels(name, *image.size, limit)  # from the header, before any pixel is decoded
    try:
        with c_warnings("Pillow"):
            image.load()
    except Image.DecompressionBombError:  # a plugin's own check (GIF frames, TIFF tiles, ...)
        width, height = image.size
        raise ConvfiltError(
            f"{name}: {width}x{height}: a part of it exceeds Pillow's own limit "
            f"(PIL.Image.MAX_IMAGE_PIXELS = {Image.MAX_IMAGE_PIXELS}); raise that to read it"
        ) from None
    source_format = image.format
    _refuse_frames(image, name)
    icc = image.info.get("icc_profile") or None
    had_exif = bool(image.info.get("exif"))
    turned = image.getexif().get(ORIENTATION_TAG, 1) in TURNS
    dpi = _dpi(image.info.get("dpi"), turned)
    ImageOps.exif_transpose(image, in_place=True)
    exif = _exif_without_orientation(image.getexif()) if had_exif else None
    if source_format == "TIFF":
        exif = _tiff_exif(data)
    if image.mode in SPACE_CHANGING_MODES or image.mode not in PILLOW_MODES:
        icc = None  # a CMYK/Lab/... profile does not describe the RGB pixels we hand out
    pixels, has_alpha = _pillow_pixels(image)
    if source_format == "PPM" and pixels.dtype == np.int32:  # 16-bit PGM: maxval <= 65535
        pixels = pixels.astype(np.uint16)
    icc = _usable_icc(icc, name)
    return Picture(pixels, has_alpha, name, source_format, icc, exif, dpi)


# Formats whose frames are judged elsewhere: MPO's extra frames are the main picture's
# previews; TIFF pages are counted by _refuse_stacks, which lets reduced-resolution previews by.
FRAMES_NOT_PICTURES = frozenset({"MPO", "TIFF"})


def _refuse_frames(image: Image.Image, name: str) -> None:
    """ConvfiltError for an animation or a stack (GIF, APNG, WebP, TIFF pages, ...): only the
    first frame would be filtered, and the others lost without a word."""
    frames = getattr(image, "n_frames", 1)
    if frames > 1 and image.format not in FRAMES_NOT_PICTURES:
        raise ConvfiltError(
            f"{name}: {image.format} of {frames} frames (an animation or a stack); convfilt "
            "filters one image per file: extract the frames first"
        )


def _pillow_pixels(image: Image.Image) -> tuple[np.ndarray, bool]:
    """The pixels of a Pillow image in one of our layouts (see PILLOW_MODES), and has_alpha.

    A tRNS colour key (8-bit grey or RGB PNG) becomes an alpha channel, as libpng makes it
    for 16-bit PNG, so both depths agree."""
    mode = image.mode
    if mode in ("P", "PA"):
        target: str | None = "RGBA" if image.has_transparency_data else "RGB"
    elif mode in ("L", "RGB") and "transparency" in image.info:
        target = mode.replace("L", "LA") if mode == "L" else "RGBA"
    elif mode in PILLOW_MODES:
        target = PILLOW_MODES[mode]
    else:  # any other mode Pillow may add: colour, with alpha if it has an alpha band
        target = "RGBA" if "A" in image.getbands() else "RGB"
    if target is not None:
        image = image.convert(target)
    pixels = np.asarray(image)
    pixels = pixels.astype(NATIVE_DTYPES[pixels.dtype.str[1:]], copy=False)
    return pixels, image.mode in ("LA", "RGBA")


def _open_unchecked(data: bytes) -> Image.Image:
    """``Image.open`` without Pillow's decompression-bomb check: the file identified, its
    header read, no pixel decoded.

    Pillow checks the size against the process-wide ``Image.MAX_IMAGE_PIXELS`` (and warns
    through the process-wide warning filters), so a per-call limit would mean changing that
    global around each load, which races with every other thread using Pillow. Instead the
    caller checks the header's size against its own limit (``_check_pixels``) and leaves
    Pillow's globals as they are. This walks Pillow's registry of formats as ``Image.open``
    does: the common plugins first (``preinit``), then all of them (``init``).
    """
    prefix = data[:16]
    for load_plugins in (Image.preinit, Image.init):
        load_plugins()
        for format_id in list(Image.ID):
            factory, accept = Image.OPEN[format_id]
            accepted = accept is None or accept(prefix)
            if isinstance(accepted, str) or not accepted:
                continue
            try:
                return factory(io.BytesIO(data), "")
            except (SyntaxError, IndexError, TypeError, struct.error):
                continue  # as Image.open: not this format after all
    raise UnidentifiedImageError("cannot identify image file")


def _exif_without_orientation(exif: Image.Exif) -> bytes | None:
    """EXIF bytes with the orientation tag removed (pixels are already upright)."""
    exif.pop(ORIENTATION_TAG, None)
    return exif.tobytes() if len(exif) else None


def _orientation_of(exif_bytes: bytes | None) -> tuple[int, bytes | None]:
    """The orientation tag of raw EXIF bytes, and the EXIF without it."""
    if not exif_bytes:
        return 1, None
    exif = Image.Exif()
    exif.load(exif_bytes)
    orientation = int(exif.get(ORIENTATION_TAG, 1))
    return orientation, _exif_without_orientation(exif)


# EXIF orientation (1..8) -> the array operation that makes the pixels upright, as Pillow's
# ImageOps.exif_transpose does for the images it reads (tests check the two agree).
ORIENTATIONS: dict[int, Callable[[np.ndarray], np.ndarray]] = {
    1: lambda a: a,
    2: lambda a: a[:, ::-1],
    3: lambda a: a[::-1, ::-1],
    4: lambda a: a[::-1],
    5: lambda a: a.swapaxes(0, 1),
    6: lambda a: np.rot90(a, -1),
    7: lambda a: np.rot90(a, 2).swapaxes(0, 1),
    8: lambda a: np.rot90(a, 1),
}


def _upright(pixels: np.ndarray, orientation: int) -> np.ndarray:
    return np.ascontiguousarray(ORIENTATIONS.get(orientation, ORIENTATIONS[1])(pixels))


def _png_chunks(data: bytes) -> Iterator[tuple[bytes, bytes]]:
    """(type, payload) of each chunk of a PNG file, in order (CRCs are libpng's business)."""
    offset = len(PNG_SIGNATURE)
    while offset + 8 <= len(data):
        (length,) = struct.unpack(">I", data[offset : offset + 4])
        kind = data[offset + 4 : offset + 8]
        yield kind, data[offset + 8 : offset + 8 + length]
        offset += 12 + length


def _read_png16(data: bytes, name: str, limit: int | None) -> Picture:
    """16-bit PNG through libpng (imagecodecs), which keeps every bit; ICC/EXIF from chunks."""
    width, height = struct.unpack(">II", data[16:24])
    _check_pixels(name, width, height, limit)
    icc = exif_bytes = None
    dpi: tuple[float, float] | None = None
    for kind, payload in _png_chunks(data):
        if kind == b"pHYs" and len(payload) == 9 and payload[8] == 1:  # pixels per metre
            per_metre = struct.unpack(">II", payload[:8])
            dpi = (per_metre[0] * INCH, per_metre[1] * INCH)
        if kind == b"iCCP":
            compressed = payload[payload.index(b"\x00") + 2 :]  # name, NUL, method byte
            icc = _inflate_capped(compressed, name, "iCCP profile")
        elif kind == b"eXIf":
            exif_bytes = payload
    with c_warnings("libpng"):
        pixels = imagecodecs.png_decode(data)  # a tRNS colour key arrives as an alpha channel
    orientation, exif = _orientation_of(exif_bytes)
    pixels = _upright(pixels, orientation)
    has_alpha = pixels.ndim == 3 and pixels.shape[2] in (2, 4)
    dpi = _dpi(dpi, orientation in TURNS)
    return Picture(pixels, has_alpha, name, "PNG", _usable_icc(icc, name), exif, dpi)


INCH = 0.0254  # metres
TURNS = frozenset({5, 6, 7, 8})  # orientations that swap the axes (and so the resolutions)


def _dpi(value: object, turned: bool) -> tuple[float, float] | None:
    """A stated (x, y) resolution as two positive floats, swapped if the picture was turned."""
    try:
        x, y = (float(v) for v in value)  # type: ignore[attr-defined]
    except (TypeError, ValueError):
        return None
    if not (x > 0 and y > 0 and np.isfinite(x) and np.isfinite(y)):
        return None
    return (y, x) if turned else (x, y)


def _tiff_dpi(tags: Any, turned: bool) -> tuple[float, float] | None:
    """A TIFF's XResolution/YResolution in dots per inch (unit inch, or cm converted)."""
    x, y, unit = (tags.get(code) for code in (282, 283, 296))
    if x is None or y is None:
        return None
    per_inch = {2: 1.0, 3: 2.54}.get(int(unit.value) if unit is not None else 2)
    if per_inch is None:
        return None  # no absolute unit: an aspect ratio only

    def value(tag: Any) -> float:
        number = tag.value
        return number[0] / number[1] if isinstance(number, tuple) else float(number)

    try:
        return _dpi((value(x) * per_inch, value(y) * per_inch), turned)
    except ZeroDivisionError:
        return None


def _usable_icc(icc: bytes | None, name: str) -> bytes | None:
    """``icc`` if it looks like an ICC profile (a 128-byte header with the 'acsp' signature
    and its own length), else None with a warning: a garbage profile copied into the output
    would make viewers show wrong colours."""
    if icc is None:
        return None
    if len(icc) >= 128 and icc[36:40] == b"acsp" and int.from_bytes(icc[:4], "big") <= len(icc):
        return icc
    warnings.warn(f"{name}: its ICC profile is malformed; not copied", UserWarning, stacklevel=3)
    return None


def _inflate_capped(compressed: bytes, name: str, what: str) -> bytes:
    """zlib data inflated up to Pillow's cap for PNG text and profiles (``MAX_TEXT_CHUNK``,
    1 MiB), so that 8-bit and 16-bit PNG refuse the same bombs; ConvfiltError beyond it."""
    from PIL import PngImagePlugin

    limit = PngImagePlugin.MAX_TEXT_CHUNK
    inflater = zlib.decompressobj()
    data = inflater.decompress(compressed, limit)
    if inflater.unconsumed_tail:
        raise ConvfiltError(f"{name}: its {what} inflates beyond {limit} bytes (a zip bomb?)")
    return data


# Sample types tifffile reads for us, each kept as it is (8-bit goes to Pillow unless it needs
# tifffile's care below). Other types (64-bit integers, complex) are refused by name.
TIFF_DTYPES = frozenset(
    {"int8", "uint16", "int16", "uint32", "int32", "float16", "float32", "float64"}
)
# Photometric interpretations whose deep samples tifffile reads for us, and the conversion to
# our layouts: MINISWHITE is inverted (0 is white there), CMYK becomes RGB at its own depth.
TIFF_PHOTOMETRICS = frozenset({"MINISBLACK", "RGB", "MINISWHITE", "SEPARATED"})
ASSOCIATED_ALPHA = 1  # ExtraSamples value: colour premultiplied by alpha


def _tiff_needs_tifffile(data: bytes, name: str) -> bool:
    """Whether tifffile must read this TIFF: deeper than 8 bits (Pillow would reduce it or
    cannot read it). Refuses, in one line, what would otherwise lose data silently: several
    pages (a stack), a volume, more than 4 samples, sample types we cannot hold."""
    import tifffile  # only for TIFF files: it costs start-up time to every other command

    try:
        with tifffile.TiffFile(io.BytesIO(data)) as tif:
            page = tif.pages.first
            _refuse_stacks(tif, name)
            dtype = str(page.dtype)
            if dtype in ("uint64", "int64", "complex64", "complex128"):
                raise ConvfiltError(f"{name}: {dtype} TIFF samples unsupported")
            return dtype in TIFF_DTYPES and _photometric(page) in TIFF_PHOTOMETRICS
    except ConvfiltError:
        raise
    except (*DECODE_ERRORS, AttributeError):
        return False  # let Pillow try, and report, in its own words


def _photometric(page: Any) -> str:
    """A TIFF page's photometric interpretation by name ("RGB"); a number if unknown."""
    return str(getattr(page.photometric, "name", page.photometric))


def _refuse_stacks(tif: Any, name: str) -> None:
    """ConvfiltError for a TIFF that holds more than one image: pages (reduced-resolution
    previews aside), a volume (ImageDepth), or more than 4 samples per pixel."""
    page = tif.pages.first
    pages = 0
    for each in tif.pages:  # stops at the second full-size page
        pages += not getattr(each, "is_reduced", False)
        if pages > 1:
            raise ConvfiltError(
                f"{name}: a TIFF of {len(tif.pages)} pages (a stack); convfilt filters one "
                "image per file: split the pages first (e.g. tiffsplit)"
            )
    if page.imagedepth > 1:
        raise ConvfiltError(
            f"{name}: a volume of {page.imagedepth} slices of {page.imagewidth}x"
            f"{page.imagelength}; convfilt filters 2-D images: save the slices as files"
        )
    if page.samplesperpixel > 4:
        raise ConvfiltError(
            f"{name}: {page.samplesperpixel} samples per pixel (a volume or a multi-channel "
            "image); convfilt reads grey, grey+alpha, RGB or RGBA"
        )


def _read_tiff_deep(data: bytes, name: str, limit: int | None) -> Picture:
    """A TIFF beyond Pillow's reach (16-bit colour, float, int) through tifffile."""
    import tifffile

    with tifffile.TiffFile(io.BytesIO(data)) as tif:
        page = tif.pages.first
        _check_pixels(name, page.imagewidth, page.imagelength, limit)
        pixels = page.asarray()
        tags = page.tags
        icc_tag = tags.get(ICC_TIFF_TAG)
        orientation_tag = tags.get(274)
        icc = bytes(icc_tag.value) if icc_tag is not None else None
        orientation = int(orientation_tag.value) if orientation_tag is not None else 1
        if page.planarconfig == tifffile.PLANARCONFIG.SEPARATE and page.samplesperpixel > 1:
            pixels = np.moveaxis(pixels, 0, -1)
        photometric = _photometric(page)
        associated = tuple(page.extrasamples)[:1] == (ASSOCIATED_ALPHA,)
        dpi = _tiff_dpi(tags, orientation in TURNS)
    pixels = TIFF_CONVERSIONS.get(photometric, _as_is)(pixels, name)
    if photometric == "SEPARATED":
        icc = None  # a CMYK profile does not describe the RGB pixels we hand out
    has_alpha = pixels.ndim == 3 and pixels.shape[2] in (2, 4)
    if associated and has_alpha:
        pixels = _unpremultiply(pixels)
    pixels = _upright(pixels, orientation)
    icc = _usable_icc(icc, name)
    return Picture(pixels, has_alpha, name, "TIFF", icc, _tiff_exif(data), dpi)


def _as_is(pixels: np.ndarray, _name: str) -> np.ndarray:
    return pixels


def _white_is_zero(pixels: np.ndarray, name: str) -> np.ndarray:
    """MINISWHITE samples as MINISBLACK ones: the integer range reversed (~x is max - x for
    unsigned types and maps min <-> max for signed ones), as Pillow does at 8 bits."""
    if not np.issubdtype(pixels.dtype, np.integer):
        raise ConvfiltError(f"{name}: {pixels.dtype} MINISWHITE TIFF unsupported")
    return np.invert(pixels)


def _cmyk_to_rgb(pixels: np.ndarray, name: str) -> np.ndarray:
    """CMYK (ink) samples to RGB at their own depth: (max - C)(max - K)/max, rounded, the
    formula Pillow uses at 8 bits (no colour management)."""
    if pixels.ndim != 3 or pixels.shape[2] != 4 or pixels.dtype.kind != "u":
        raise ConvfiltError(f"{name}: only unsigned 4-ink CMYK TIFF is supported")
    top = float(np.iinfo(pixels.dtype).max)
    ink = pixels.astype(np.float64)
    rgb = np.rint((top - ink[..., :3]) * (top - ink[..., 3:]) / top)
    return rgb.astype(pixels.dtype)


TIFF_CONVERSIONS: dict[str, Callable[[np.ndarray, str], np.ndarray]] = {
    "MINISWHITE": _white_is_zero,
    "SEPARATED": _cmyk_to_rgb,
}


def _unpremultiply(pixels: np.ndarray) -> np.ndarray:
    """Associated (premultiplied) colour to straight colour, as Pillow's RGBa -> RGBA does at
    8 bits: colour * full / alpha, rounded and clipped; colour 0 where alpha is 0."""
    full = np.iinfo(pixels.dtype).max if pixels.dtype.kind in "ui" else 1.0
    colour = pixels[..., :-1].astype(np.float64)
    alpha = pixels[..., -1:].astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        straight = np.where(alpha > 0, colour * full / alpha, 0.0)
    if pixels.dtype.kind in "ui":
        info = np.iinfo(pixels.dtype)
        straight = np.clip(np.rint(straight), info.min, info.max)
    result = np.array(pixels)
    result[..., :-1] = straight
    return result


# IFD0 tags that describe the picture, not its layout: kept as EXIF from a TIFF.
TIFF_EXIF_TAGS = (0x010E, 0x010F, 0x0110, 0x0131, 0x0132, 0x013B, 0x013C, 0x8298)
EXIF_IFD, GPS_IFD = 0x8769, 0x8825
# ImageDescription values that describe tifffile's or ImageJ's array layout, not the picture.
LAYOUT_DESCRIPTIONS = ('{"shape":', "ImageJ=")


def _tiff_exif(data: bytes) -> bytes | None:
    """The EXIF of a TIFF (its descriptive IFD0 tags, its Exif and GPS IFDs) as EXIF bytes,
    without orientation (the pixels are upright) and without the tags of its layout."""
    source = Image.Exif()
    try:
        source.load(data)
        kept = Image.Exif()
        for tag in TIFF_EXIF_TAGS:
            if tag in source and not str(source[tag]).startswith(LAYOUT_DESCRIPTIONS):
                kept[tag] = source[tag]
        for ifd in (EXIF_IFD, GPS_IFD):
            if entries := source.get_ifd(ifd):
                kept.get_ifd(ifd).update(entries)
        return kept.tobytes() if len(kept) or kept.get_ifd(EXIF_IFD) else None
    except DECODE_ERRORS:
        return None  # EXIF is a courtesy: a malformed IFD never costs the pixels


# ---------------------------------------------------------------------------------------------
# Writing

ALL_CHANNELS = frozenset({1, 2, 3, 4})
# What each output format holds: pixel dtype -> channel counts. Anything else is refused with
# advice naming the formats that can hold it; nothing is converted silently.
FORMAT_HOLDS: dict[str, dict[str, frozenset[int]]] = {
    "PNG": {"uint8": ALL_CHANNELS, "uint16": ALL_CHANNELS},
    "TIFF": {dtype: ALL_CHANNELS for dtype in ("uint8", *sorted(TIFF_DTYPES))},
    "JPEG": {"uint8": frozenset({1, 3})},
    "WEBP": {"uint8": ALL_CHANNELS},
    "BMP": {"uint8": frozenset({1, 3})},  # 32-bit BMP alpha is not read back reliably
    "GIF": {"uint8": frozenset({1})},  # colour GIF would need a lossy 256-colour quantisation
    "PPM": {"uint8": frozenset({1, 3}), "uint16": frozenset({1})},
}
# Output extensions (lower case) and the format they mean.
EXTENSIONS = {
    ".png": "PNG",
    ".jpg": "JPEG",
    ".jpeg": "JPEG",
    ".jpe": "JPEG",
    ".tif": "TIFF",
    ".tiff": "TIFF",
    ".webp": "WEBP",
    ".bmp": "BMP",
    ".gif": "GIF",
    ".ppm": "PPM",
    ".pgm": "PPM",
    ".pnm": "PPM",
}
FORMAT_ALIASES = {"JPG": "JPEG", "TIF": "TIFF", "PGM": "PPM", "PNM": "PPM"}
# The extension a default output name gets for each format (a format and no output name).
FORMAT_EXTENSIONS = {
    "PNG": ".png",
    "TIFF": ".tif",
    "JPEG": ".jpg",
    "WEBP": ".webp",
    "BMP": ".bmp",
    "GIF": ".gif",
    "PPM": ".ppm",
}
METADATA_FORMATS = frozenset({"JPEG", "TIFF", "WEBP"})
DPI_FORMATS = frozenset(
    {"JPEG", "TIFF", "BMP"}
)  # Pillow writes the resolution into these  # Pillow writes ICC and EXIF into these
# PNG: zlib level 2 with the Paeth filter: much faster than Pillow's defaults (level 6, adaptive
# filters) for somewhat larger files (docs/performance.md, §5).
PNG_LEVEL = 2
DEPTH_NAMES = {
    "uint8": "8-bit",
    "int8": "8-bit signed",
    "uint16": "16-bit",
    "int16": "16-bit signed",
    "uint32": "32-bit unsigned",
    "int32": "32-bit integer",
    "float16": "float16",
    "float32": "float32",
    "float64": "float64",
}
CHANNEL_NAMES = {1: "grey", 2: "grey+alpha", 3: "RGB", 4: "RGBA"}


@dataclass(frozen=True)
class _Encoding:
    """Everything a writer needs besides the pixels and the file."""

    format: str
    quality: int | None
    icc_profile: bytes | None
    exif: bytes | None
    dpi: tuple[float, float] | None = None


def save(
    picture: Picture,
    path: str | Path,
    *,
    format: str | None = None,
    quality: int | None = None,
    force: bool = False,
) -> Path | None:
    """Write atomically (temp file in the target folder, then rename); "-" writes stdout.

    The format comes from ``format`` or the path's extension (PNG for stdout). The pixels'
    dtype decides the bit depth written (uint8, uint16, int32, float32/float64) and the
    channel count the layout (1 grey, 2 grey+alpha, 3 RGB, 4 RGBA); a combination the format
    cannot hold is a UsageError naming formats that can. ``quality`` (1..100) applies to JPEG
    (default 95) and WebP (lossless unless a quality is given); other formats are lossless and
    ignore it. ICC and EXIF are written where the format holds them (not into TIFF deeper than
    8 bits, where only the ICC profile is kept). Refuses to overwrite an existing file unless
    ``force``. Returns the path written (None for stdout).
    """
    name = str(path)
    fmt = output_format(name, format)
    if quality is not None and not (isinstance(quality, int) and 1 <= quality <= 100):
        raise UsageError(
            f"quality must be an integer from 1 to 100, got {quality!r}", parameters=["quality"]
        )
    pixels = np.asarray(picture.pixels)
    writer = _pick_writer(pixels, fmt, name)
    encoding = _Encoding(fmt, quality, picture.icc_profile, picture.exif, picture.dpi)
    if name == STDIO:
        buffer = io.BytesIO()
        _encode(writer, pixels, buffer, encoding, name)
        write_stdout(buffer.getvalue())
        return None
    target = Path(name)
    write_atomically(target, lambda file: _encode(writer, pixels, file, encoding, name), force)
    return target


def check_can_hold(pixels: np.ndarray, name: str, format: str | None = None) -> None:
    """UsageError unless the output ``name`` (or ``format``) can hold pixels like these.

    A filter keeps dtype and channels, so a command calls this right after loading, before
    the filtering work, and a wrong output format fails at once.
    """
    _pick_writer(pixels, output_format(name, format), name)


def output_format(name: str, format: str | None = None) -> str:
    """The output format for ``name`` from ``format=`` or the extension (case-insensitive).

    "-" (stdout) defaults to PNG. An unknown format or extension, or a ``format`` that
    contradicts a known extension, is a UsageError naming it, so a command can check every
    output before it does any work.
    """
    known = ", ".join(sorted(FORMAT_HOLDS)).lower()
    suffix = "" if name == STDIO else Path(name).suffix.lower()
    if format is not None:
        fmt = format.strip().lstrip(".").upper()
        fmt = FORMAT_ALIASES.get(fmt, fmt)
        if fmt not in FORMAT_HOLDS:
            raise UsageError(
                f"format: unknown output format {format!r} (known: {known})",
                parameters=["format"],
            )
        if suffix in EXTENSIONS and EXTENSIONS[suffix] != fmt:
            raise UsageError(
                f"{name}: format {format} contradicts its extension {suffix} "
                f"({EXTENSIONS[suffix]}); drop one of them",
                parameters=["format"],
            )
        return fmt
    if name == STDIO:
        return "PNG"
    if suffix not in EXTENSIONS:
        shown = suffix or "(no extension)"
        raise UsageError(
            f"{name}: unknown output format {shown}; use one of "
            f"{', '.join(EXTENSIONS)} or format ({known})",
            parameters=["format"],
        )
    return EXTENSIONS[suffix]


def _layout(pixels: np.ndarray) -> tuple[str, int]:
    """(dtype name, channel count) of an (H, W) or (H, W, C) array."""
    channels = 1 if pixels.ndim == 2 else pixels.shape[2] if pixels.ndim == 3 else 0
    return pixels.dtype.name, channels


Writer = Callable[[np.ndarray, BinaryIO, _Encoding], None]


def _pick_writer(pixels: np.ndarray, fmt: str, name: str) -> Writer:
    """The writer for these pixels in ``fmt``, or a UsageError that says what to do."""
    dtype, channels = _layout(pixels)
    if channels not in ALL_CHANNELS or pixels.shape[0] == 0 or pixels.shape[1] == 0:
        raise UsageError(f"{name}: cannot write an array of shape {pixels.shape} as an image")
    if dtype not in DEPTH_NAMES:
        raise UsageError(
            f"{name}: cannot write {dtype} pixels; convert them to one of "
            f"{', '.join(DEPTH_NAMES)} first"
        )
    if channels not in FORMAT_HOLDS[fmt].get(dtype, frozenset()):
        able = [f for f, holds in FORMAT_HOLDS.items() if channels in holds.get(dtype, ())]
        what = f"{DEPTH_NAMES[dtype]} {CHANNEL_NAMES[channels]}"
        raise UsageError(
            f"{name}: {fmt} cannot hold {what} pixels; write {' or '.join(able)} instead"
        )
    if fmt == "PNG":
        return _write_png
    if fmt == "TIFF" and dtype != "uint8":
        return _write_tiff_deep
    return _write_pillow


def _encode(
    writer: Writer, pixels: np.ndarray, file: BinaryIO, encoding: _Encoding, name: str
) -> None:
    """Run a writer, turning encoder failures into a one-line ConvfiltError."""
    try:
        writer(pixels, file, encoding)
    except ConvfiltError:
        raise
    except MemoryError:
        raise
    except ENCODE_ERRORS as exc:
        raise ConvfiltError(f"{name}: cannot write {encoding.format} ({_one_line(exc)})") from None


def _write_pillow(pixels: np.ndarray, file: BinaryIO, encoding: _Encoding) -> None:
    """8-bit JPEG/TIFF/WebP/BMP/GIF/PPM and 16-bit PPM through Pillow, ICC/EXIF where they fit."""
    image = Image.fromarray(np.ascontiguousarray(pixels))
    options: dict[str, object] = {}
    if encoding.format in METADATA_FORMATS:
        if encoding.icc_profile:
            options["icc_profile"] = encoding.icc_profile
        if encoding.exif:
            options["exif"] = encoding.exif
    if encoding.dpi and encoding.format in DPI_FORMATS:
        options["dpi"] = encoding.dpi
    if encoding.format == "JPEG":
        options["quality"] = encoding.quality or DEFAULT_QUALITY
    elif encoding.format == "WEBP":
        if encoding.quality is None:  # lossless, colour under transparent pixels kept too
            options["lossless"] = True
            options["exact"] = True
        else:
            options["quality"] = encoding.quality
    elif encoding.format == "TIFF":
        options["compression"] = "tiff_adobe_deflate"
    with c_warnings("Pillow"):
        image.save(file, format=encoding.format, **options)


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    """One PNG chunk: length, type, payload, CRC over type and payload."""
    crc = zlib.crc32(kind + payload) & 0xFFFFFFFF
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", crc)


def _write_png(pixels: np.ndarray, file: BinaryIO, encoding: _Encoding) -> None:
    """PNG (8 or 16 bits) through libpng (imagecodecs); ICC (iCCP) and EXIF (eXIf) added."""
    with c_warnings("libpng"):
        encoded = imagecodecs.png_encode(
            np.ascontiguousarray(pixels), level=PNG_LEVEL, filter=imagecodecs.PNG.FILTER.PAETH
        )
    extra = b""
    if encoding.icc_profile:
        extra += _png_chunk(b"iCCP", b"ICC profile\x00\x00" + zlib.compress(encoding.icc_profile))
    if encoding.exif:
        extra += _png_chunk(b"eXIf", encoding.exif.removeprefix(EXIF_PREFIX))
    if encoding.dpi:
        per_metre = (min(round(d / INCH), 2**31 - 1) for d in encoding.dpi)
        extra += _png_chunk(b"pHYs", struct.pack(">IIB", *per_metre, 1))
    ihdr_end = len(PNG_SIGNATURE) + 12 + 13  # the IHDR chunk always comes first, 13 bytes long
    file.write(encoded[:ihdr_end] + extra + encoded[ihdr_end:])


def _write_tiff_deep(pixels: np.ndarray, file: BinaryIO, encoding: _Encoding) -> None:
    """TIFF deeper than 8 bits through tifffile, deflate-compressed, ICC in tag 34675."""
    import tifffile

    channels = _layout(pixels)[1]
    extratags = []
    if encoding.icc_profile:
        icc = encoding.icc_profile
        extratags.append((ICC_TIFF_TAG, "B", len(icc), icc, True))
    encoded = io.BytesIO()  # tifffile wants a named file or a memory buffer, not an fd
    tifffile.imwrite(
        encoded,
        pixels,
        photometric="rgb" if channels >= 3 else "minisblack",
        planarconfig="contig",
        extrasamples=("unassalpha",) if channels in (2, 4) else None,
        compression="zlib",
        extratags=extratags,
        resolution=encoding.dpi,
        resolutionunit="INCH" if encoding.dpi else None,
    )
    file.write(encoded.getbuffer())


def write_stdout(data: bytes) -> None:
    """Write ``data`` to stdout, every byte checked; a failed write (a full disk) is a
    ConvfiltError.

    Text already printed is flushed first. The bytes go to the file descriptor directly, each
    write's count checked (a buffered stream may let a short write pass); a regular file under
    stdout is also fsynced. A closed pipe is left to propagate: the CLI then exits quietly, as
    ``| head`` expects.
    """
    if sys.stdout is None:
        raise ConvfiltError("<stdout>: closed; nowhere to write the result")
    try:
        sys.stdout.flush()
        try:
            fd: int | None = sys.stdout.fileno()
        except (OSError, ValueError):  # a stream without a descriptor (a test's capture)
            fd = None
        if fd is None:
            sys.stdout.buffer.write(data)
            sys.stdout.buffer.flush()
        else:
            write_all(fd, data)
            if stat.S_ISREG(os.fstat(fd).st_mode):
                os.fsync(fd)
    except BrokenPipeError:
        raise
    except OSError as exc:
        raise ConvfiltError(f"<stdout>: cannot write ({exc.strerror or exc})") from None


def write_all(fd: int, data: bytes | memoryview) -> None:
    """Write every byte of ``data`` to ``fd``; OSError (ENOSPC) if the system takes none.

    ``os.write`` may write fewer bytes than asked (a file size limit, a nearly full disk); the
    rest is written again, and a write that makes no progress is a full disk.
    """
    view = memoryview(data).cast("B")
    while view:
        written = os.write(fd, view)
        if written <= 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        view = view[written:]


def write_atomically(target: Path, write: Callable[[BinaryIO], None], force: bool) -> None:
    """Write via a temp file in the target's folder, verified, then rename (or link) into place.

    ``write`` encodes into memory first; the bytes then reach the temp file through
    :func:`write_all`, and the file is fsynced, its size compared with the bytes and closed,
    each step checked, before the rename. So an encoder that ignores a short write (Pillow's
    JPEG does) cannot put a truncated file in place. Without ``force`` the temp file is
    hard-linked to the target, which fails if the target appeared meanwhile, so an existing file
    is never replaced; on any failure (or SIGINT, SIGTERM, SIGHUP) the temp file is removed and
    an existing target is untouched. The temp name is short (``.cf`` + 8 characters + ``.tmp``),
    so any output name the file system accepts works.
    """
    check_writable(target, force=force)
    buffer = io.BytesIO()
    write(buffer)
    data = buffer.getbuffer()
    try:
        fd, temp_name = tempfile.mkstemp(dir=target.parent, prefix=TEMP_PREFIX, suffix=".tmp")
    except OSError as exc:
        raise ConvfiltError(f"{target}: cannot write ({exc.strerror or exc})") from None
    try:
        _write_verified(fd, data, _new_file_mode(target))
        _move_into_place(temp_name, target, force)
    except OSError as exc:
        raise ConvfiltError(f"{target}: cannot write ({exc.strerror or exc})") from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp_name)


def _write_verified(fd: int, data: memoryview, mode: int) -> None:
    """Write, fsync, check the size on disk, set the mode and close ``fd``; OSError if any
    step fails (the descriptor is closed either way)."""
    try:
        write_all(fd, data)
        os.fsync(fd)
        size = os.fstat(fd).st_size
        if size != data.nbytes:
            raise OSError(errno.EIO, f"{size} bytes on disk, {data.nbytes} written")
        os.fchmod(fd, mode)
    except BaseException:
        os.close(fd)
        raise
    os.close(fd)  # a deferred write error (NFS) surfaces here


def _move_into_place(temp_name: str, target: Path, force: bool) -> None:
    if force:
        os.replace(temp_name, target)
        return
    try:
        os.link(temp_name, target)  # atomic "create if absent"
    except FileExistsError:
        raise _exists(target) from None
    except OSError:  # a file system without hard links: check, then rename
        if target.exists():
            raise _exists(target) from None
        os.replace(temp_name, target)


def _exists(where: object, *parameters: str) -> UsageError:
    return UsageError(
        f"{where}: exists; use force=True to overwrite", parameters=[*parameters, "force"]
    )


def _new_file_mode(target: Path) -> int:
    """The existing file's permissions, else what open() would give (0o666 minus umask)."""
    try:
        return target.stat().st_mode & 0o7777
    except OSError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


# ---------------------------------------------------------------------------------------------
# Where outputs go


def resolve_output(
    source: str | Path,
    command: str,
    *,
    out: str | Path | None = None,
    out_dir: str | Path | None = None,
    force: bool = False,
    format: str | None = None,
) -> str | Path:
    """Where a command writes its result for ``source``.

    ``-o OUT`` wins ("-" means stdout); else ``out_dir/<stem>-<command><suffix>``; else the
    same next to the input. The suffix is ``format``'s (``format="tiff"`` gives ``.tif``),
    else the input's, else ``.png``. Source "-" (stdin) goes to stdout, or to
    ``out_dir/stdin-<command><suffix>`` when ``out_dir`` is given. A missing ``out_dir`` is
    accepted here and created by :func:`make_folder` once every check has passed; a missing
    folder of ``-o OUT`` is not (UsageError). Raises UsageError when the result would
    overwrite the input (allowed only when ``force`` and ``out`` names it), an existing file
    without ``force``, a folder or special file, or lies under a path that is a file.
    """
    if out is not None and str(out) == STDIO:
        return STDIO
    is_stdin = str(source) == STDIO
    if out is not None:
        target = Path(out)
    elif out_dir is not None:
        _check_folder(Path(out_dir))
        target = Path(out_dir) / _default_name(source, command, format)
    elif is_stdin:
        return STDIO
    else:
        target = Path(source).with_name(_default_name(source, command, format))
    _check_under_folders(target)
    if not is_stdin and same_file(Path(source), target) and not (force and out is not None):
        raise UsageError(
            f"{target}: would overwrite the input; name another output "
            "(to replace the input, name it as the output and add force=True)",
            parameters=["force"],
        )
    if out is None and out_dir is not None and not Path(out_dir).exists():
        return target  # an out_dir still to be made: nothing can be in the way yet
    return check_writable(target, force=force)


def check_writable(target: Path, *, force: bool, option: str | None = None) -> Path:
    """UsageError unless ``target`` may be written: no folder (but a ``.zarr`` array's) or
    special file (device, FIFO) there, nothing there unless ``force``, and its folder exists.
    ``option``, the name of the caller's parameter that holds ``target`` (e.g. "csv"),
    prefixes the message.

    Called before long work, so a bad output fails at once, and again by the writer.
    """
    where = f"{option} {target}" if option else str(target)
    named = [option] if option else []
    array_folder = target.suffix.lower() == ".zarr" and (target / "zarr.json").is_file()
    if target.is_dir() and not array_folder:
        raise UsageError(f"{where}: is a folder; name an output file", parameters=named)
    if target.exists() and not (target.is_file() or array_folder):
        raise UsageError(
            f"{where}: not a regular file; name a file (or '-' for stdout)", parameters=named
        )
    if target.exists() and not force:
        raise _exists(where, *named)
    if not target.parent.is_dir():
        raise UsageError(f"{where}: folder {target.parent} does not exist", parameters=named)
    return target


def _default_name(source: str | Path, command: str, format: str | None) -> str:
    """``<stem>-<command><suffix>``: the suffix of ``format``, else the input's, else .png."""
    stem, suffix = (
        ("stdin", "") if str(source) == STDIO else (Path(source).stem, Path(source).suffix)
    )
    if format is not None:
        suffix = FORMAT_EXTENSIONS[output_format(STDIO, format)]
    return f"{stem}-{command}{suffix or '.png'}"


def _check_folder(folder: Path) -> None:
    """UsageError unless ``folder`` is a folder or can be made one (no file in the way)."""
    if folder.exists() and not folder.is_dir():
        raise UsageError(f"out_dir {folder}: is a file, not a folder", parameters=["out_dir"])
    _check_under_folders(folder)


def make_folder(folder: str | Path) -> None:
    """Create the output folder (and its parents) if missing, after every check has passed."""
    folder = Path(folder)
    _check_folder(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConvfiltError(
            f"out_dir {folder}: cannot create ({exc.strerror or exc})", parameters=["out_dir"]
        ) from None


def _check_under_folders(target: Path) -> None:
    """UsageError when some existing ancestor of ``target`` is a file, not a folder."""
    for ancestor in target.parents:
        if ancestor.exists():
            if not ancestor.is_dir():
                raise UsageError(f"{target}: {ancestor} is a file, not a folder")
            return


def same_file(source: Path, target: Path) -> bool:
    """Whether two paths name one file (through links and ``./``), or would."""
    try:
        return os.path.samefile(source, target)
    except OSError:
        pass
    try:
        return source.resolve() == target.resolve()
    except (OSError, RuntimeError):  # a symlink loop: its reading will fail with a message
        return os.path.abspath(source) == os.path.abspath(target)
