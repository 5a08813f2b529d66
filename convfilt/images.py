"""Pillow in and out: modes, bit depth, alpha, EXIF orientation, ICC, atomic save.

SKELETON — the images helper owns this file and implements the bodies. The names, fields and
signatures below are a contract the filters/CLI and matching code build against.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

STDIO = "-"  # as INPUT reads stdin, as OUT writes stdout


@dataclass(frozen=True)
class Picture:
    """An image as loaded: pixels plus what is needed to write it back without loss.

    pixels: (H, W) or (H, W, C), channels last, alpha (if any) the last channel. dtype is the
        file's own depth: uint8, uint16, int32 (Pillow mode I) or float32 (mode F, float TIFF).
        Palette images arrive as RGB/RGBA, CMYK as RGB, bilevel ("1") as 0/255 uint8 grey.
        EXIF orientation is already applied (pixels are upright).
    has_alpha: whether the last channel is alpha.
    source: the path it came from ("-" for stdin), for messages.
    format: the source format as Pillow names it ("PNG", "JPEG", "TIFF", ...), or None.
    icc_profile, exif: bytes to write back where the output format can hold them; the EXIF
        carries no orientation tag (or orientation 1).
    """

    pixels: np.ndarray
    has_alpha: bool
    source: str
    format: str | None = None
    icc_profile: bytes | None = None
    exif: bytes | None = None


def load(path: str | Path, *, max_pixels: int | None = None) -> Picture:
    """Read an image file ("-" for stdin); failures raise ConvfiltError with one line."""
    raise NotImplementedError("images helper implements")


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
    dtype decides the bit depth written. Refuses to overwrite an existing file unless
    ``force``. Returns the path written (None for stdout).
    """
    raise NotImplementedError("images helper implements")


def resolve_output(
    source: str | Path,
    command: str,
    *,
    out: str | Path | None = None,
    out_dir: str | Path | None = None,
    force: bool = False,
) -> str | Path:
    """Where a command writes its result for ``source``.

    ``-o OUT`` wins; else ``out_dir/<stem>-<command><suffix>``; else the same next to the
    input. Raises UsageError when the result would overwrite the input without ``force``,
    or an existing file without ``force``, or lies under a path that is a file.
    """
    raise NotImplementedError("images helper implements")
