"""Files too big for memory: TIFF/BigTIFF and Zarr read by rows and written by tiles.

- :class:`TiffRows` reads any band of rows of a TIFF or BigTIFF (striped or tiled, any
  compression tifffile decodes; 8/16-bit integers or float32; grey, RGB, with or without
  alpha) by decoding only the strips or tiles that band touches, with tifffile's own decoder,
  and keeps the last row of segments decoded (consecutive bands share their halo).
- :class:`TiffSink` writes a tiled (Big)TIFF from bands of rows, as they come, carrying the
  source's resolution, ICC profile, description and the other tags tifffile can write.
- :class:`ZarrRows` / :class:`ZarrSink`: Zarr v3 arrays (``.zarr`` folders), so a pipeline can
  stay chunked end to end (needs the ``zarr`` package: ``pip install convfilt[dask]``).

Outputs are atomic: a temporary file (or folder) in the target's folder, renamed into place
only when complete; a failure, a full disk or Ctrl-C removes it and leaves any existing target
untouched.
"""

from __future__ import annotations

import contextlib
import os
import queue
import shutil
import tempfile
import threading
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from . import names, tiles
from .errors import ConvfiltError, UsageError

TILE = 256  # output TIFF tiles (rows and columns)
ZARR_CHUNK = 256
STREAM_SUFFIXES = (".tif", ".tiff", ".zarr")
DTYPES = ("uint8", "uint16", "float32")
# compressions written as they were read; any other (JPEG, ...) is written as deflate
KEPT_COMPRESSIONS = ("NONE", "ADOBE_DEFLATE", "DEFLATE", "LZW", "ZSTD", "PACKBITS", "LZMA")
# tags carried from the source, as they are, beyond resolution, ICC and description: names,
# dates, XMP, GeoTIFF georeferencing (scale, tie points, transformation, keys and their double
# and ASCII parameters) and GDAL's metadata and nodata value
CARRIED_TAGS = {
    269: "DocumentName",
    271: "Make",
    272: "Model",
    285: "PageName",
    306: "DateTime",
    315: "Artist",
    316: "HostComputer",
    700: "XMP",
    33432: "Copyright",
    33550: "ModelPixelScaleTag",
    33922: "ModelTiepointTag",
    34264: "ModelTransformationTag",
    34735: "GeoKeyDirectoryTag",
    34736: "GeoDoubleParamsTag",
    34737: "GeoAsciiParamsTag",
    42112: "GDAL_METADATA",
    42113: "GDAL_NODATA",
}
BIGTIFF_ABOVE = 2**32 - 2**25  # bytes: classic TIFF offsets are 32-bit


@dataclass(frozen=True)
class Meta:
    """What a written TIFF carries over from its source."""

    photometric: str = "minisblack"
    extrasamples: tuple[str, ...] = ()
    compression: str = "NONE"
    predictor: int = 1
    resolution: tuple[Any, Any] | None = None
    resolutionunit: int | None = None
    iccprofile: bytes | None = None
    description: str | None = None
    extratags: tuple[tuple[int, str, int, Any, bool], ...] = field(default=())
    bigtiff: bool = False


def is_stream_path(name: str | Path) -> bool:
    """Whether ``name`` is a format that streams (TIFF, Zarr), by its extension."""
    return Path(name).suffix.lower() in STREAM_SUFFIXES


class TiffRows:
    """A TIFF's first image, read band by band (a :class:`convfilt.tiles.RowSource`).

    Parameters
    ----------
    path : a TIFF or BigTIFF file.

    Raises
    ------
    ConvfiltError
        If the file is not a TIFF, or its layout does not stream (planar-separate samples, a
        palette, CMYK, a dtype other than uint8/uint16/float32, an orientation).
    """

    def __init__(self, path: str | Path) -> None:
        import tifffile

        self.name = str(path)
        try:
            self._tif = tifffile.TiffFile(self.name)
            page = self._tif.pages.first
        except (OSError, ValueError, IndexError, tifffile.TiffFileError) as exc:
            raise ConvfiltError(f"{self.name}: cannot read as TIFF ({exc})") from None
        self._page = page
        samples = int(page.samplesperpixel)
        why = _unstreamable(page, samples)
        if why:
            self._tif.close()
            raise ConvfiltError(f"{self.name}: {why}; it cannot be streamed")
        height, width = int(page.imagelength), int(page.imagewidth)
        self.shape: tuple[int, ...] = (height, width, samples) if samples > 1 else (height, width)
        self.dtype = np.dtype(page.dtype)
        self.has_alpha = samples in (2, 4) and bool(page.extrasamples)
        self.meta = _meta_of(page, self._tif.is_bigtiff)
        self._segment = page.chunks[:2]  # rows and columns of one strip or tile
        self._grid = page.chunked[:2]  # strips or tiles down and across
        self._cached: tuple[int, NDArray[Any]] | None = None  # last row of segments decoded

    def __getitem__(self, rows: slice) -> NDArray[Any]:
        start, stop, _ = rows.indices(self.shape[0])
        seg_rows = self._segment[0]
        out = np.empty((stop - start, *self.shape[1:]), dtype=self.dtype)
        for index in range(start // seg_rows, -(-stop // seg_rows)):
            first = index * seg_rows
            block = self._segment_row(index)
            lo, hi = max(start, first), min(stop, first + seg_rows)
            out[lo - start : hi - start] = block[lo - first : hi - first]
        return out

    def _segment_row(self, index: int) -> NDArray[Any]:
        """One row of strips or tiles, decoded, as (rows, width[, samples])."""
        if self._cached is not None and self._cached[0] == index:
            return self._cached[1]
        page, handle = self._page, self._tif.filehandle
        seg_rows, seg_cols = self._segment
        rows = min(seg_rows, self.shape[0] - index * seg_rows)
        block = np.empty((rows, *self.shape[1:]), dtype=self.dtype)
        across = self._grid[1]
        for k in range(index * across, (index + 1) * across):
            handle.seek(page.dataoffsets[k])
            data = handle.read(page.databytecounts[k])
            segment, where, _ = page.decode(data, k, jpegtables=page.jpegtables)
            if segment is None:
                raise ConvfiltError(f"{self.name}: strip or tile {k} is missing")
            c0 = int(where[3])
            cols = min(seg_cols, self.shape[1] - c0)
            piece = segment.reshape(segment.shape[1:])[:rows, :cols]
            block[:, c0 : c0 + cols] = piece.reshape(rows, cols, *self.shape[2:])
        self._cached = (index, block)
        return block

    def close(self) -> None:
        """Close the file."""
        self._tif.close()


def _unstreamable(page: Any, samples: int) -> str | None:
    """Why a TIFF page cannot be read band by band here, or None."""
    photometric = page.photometric.name if page.photometric is not None else "NONE"
    if page.dtype is None or np.dtype(page.dtype).name not in DTYPES:
        return f"{page.dtype} samples (streaming reads {', '.join(DTYPES)})"
    if samples > 1 and page.planarconfig != 1:
        return "planar-separate samples"
    if photometric not in ("MINISBLACK", "RGB") or samples not in (1, 2, 3, 4):
        return f"{photometric.lower()} with {samples} samples (grey or RGB, with alpha or not)"
    if page.is_volumetric or page.imagedepth > 1:
        return "a volume"
    orientation = page.tags.valueof(274, 1)
    if orientation not in (1, None):
        return f"orientation {orientation}"
    return None


def _meta_of(page: Any, bigtiff: bool) -> Meta:
    """The tags a TIFF written from ``page`` carries over."""
    tags = page.tags
    compression = page.compression.name
    kept = compression if compression in KEPT_COMPRESSIONS else "ADOBE_DEFLATE"
    extras = [_carried(tags[code]) for code in CARRIED_TAGS if code in tags]
    resolution = None
    if 282 in tags and 283 in tags:
        resolution = (tags[282].value, tags[283].value)
    return Meta(
        photometric="rgb" if page.photometric.name == "RGB" else "minisblack",
        extrasamples=tuple("unassalpha" for _ in page.extrasamples),
        compression=kept,
        predictor=int(page.predictor) if kept in ("ADOBE_DEFLATE", "DEFLATE", "LZW") else 1,
        resolution=resolution,
        resolutionunit=int(tags.valueof(296, 2)) if resolution else None,
        iccprofile=tags.valueof(34675),
        description=tags.valueof(270),
        extratags=tuple(extras),
        bigtiff=bigtiff,
    )


def _carried(tag: Any) -> tuple[int, Any, int, Any, bool]:
    """A source tag as tifffile's ``extratags`` entry: text as text (tifffile counts it; as
    UTF-8 bytes where it is not ASCII, which tifffile refuses as text: a GDAL ``°C``),
    anything else with its own type and count."""
    if isinstance(tag.value, str):
        text = tag.value if tag.value.isascii() else tag.value.encode("utf-8")
        return (tag.code, "s", 0, text, True)
    return (tag.code, int(tag.dtype), tag.count, tag.value, True)


class ZarrRows:
    """A Zarr array (H, W[, C]) read by rows (a :class:`convfilt.tiles.RowSource`)."""

    def __init__(self, path: str | Path) -> None:
        zarr = _zarr()
        self.name = str(path)
        try:
            self._array = zarr.open_array(self.name, mode="r")
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ConvfiltError(f"{self.name}: cannot open as a Zarr array ({exc})") from None
        self.shape = tuple(int(n) for n in self._array.shape)
        self.dtype = np.dtype(self._array.dtype)
        if len(self.shape) not in (2, 3):
            raise ConvfiltError(f"{self.name}: a Zarr array of shape {self.shape}, not an image")
        channels = self.shape[2] if len(self.shape) == 3 else 1
        self.has_alpha = bool(self._array.attrs.get("has_alpha", channels in (2, 4)))
        self.meta = Meta(
            photometric="rgb" if channels >= 3 else "minisblack",
            extrasamples=("unassalpha",) if self.has_alpha else (),
        )

    def __getitem__(self, rows: slice) -> NDArray[Any]:
        return np.asarray(self._array[rows])

    def close(self) -> None:
        """Nothing to close (kept for symmetry with :class:`TiffRows`)."""


Reader = TiffRows | ZarrRows


def open_rows(path: str | Path) -> Reader:
    """A reader for a TIFF file or a ``.zarr`` folder."""
    if Path(path).suffix.lower() == ".zarr" or Path(path, "zarr.json").exists():
        return ZarrRows(path)
    return TiffRows(path)


def _zarr() -> Any:
    try:
        import zarr
    except ImportError:
        raise ConvfiltError("Zarr needs the zarr package: pip install 'convfilt[dask]'") from None
    return zarr


# --- writing --------------------------------------------------------------------------------------


class _Atomic:
    """A temporary path next to ``target``, moved into place by :meth:`commit`, else removed."""

    def __init__(self, target: Path, force: bool, folder: bool) -> None:
        from . import images

        self.target, self.force, self.folder = target, force, folder
        if folder:
            images.check_writable(target, force=force)  # a Zarr array's folder, or nothing
            self.temp = Path(tempfile.mkdtemp(dir=target.parent, prefix=".cf", suffix=".tmp"))
        else:
            images.check_writable(target, force=force)
            fd, name = tempfile.mkstemp(dir=target.parent, prefix=".cf", suffix=".tmp")
            os.close(fd)
            self.temp = Path(name)

    def commit(self) -> None:
        """Move the finished temporary into place (replacing the target only with force)."""
        if self.folder:
            try:
                self._swap_folder()
            except BaseException:
                self.discard()
                raise
            return
        from . import images

        try:
            images._move_into_place(str(self.temp), self.target, self.force)
        finally:  # linked into place (no force) leaves the temporary's name behind
            self.discard()

    def _swap_folder(self) -> None:
        """Rename the finished folder into place. An old one (replaced only with force) is
        first moved aside, and moved back if the rename fails, so one of them always stands
        at the target; it is removed once the new one is in place."""
        from . import images

        images.check_writable(self.target, force=self.force)  # one may have appeared since
        aside = None
        if self.target.exists():
            aside = Path(tempfile.mkdtemp(dir=self.target.parent, prefix=".cf", suffix=".old"))
            os.rename(self.target, aside / "old")
        try:
            os.rename(self.temp, self.target)
        except OSError:
            if aside is not None:
                os.rename(aside / "old", self.target)
            raise
        finally:
            if aside is not None:
                shutil.rmtree(aside, ignore_errors=True)

    def discard(self) -> None:
        """Remove the temporary (after a failure or an interrupt)."""
        with contextlib.suppress(FileNotFoundError):
            if self.folder:
                shutil.rmtree(self.temp)
            else:
                self.temp.unlink()


def _take_rows(pieces: deque[NDArray[Any]], count: int) -> NDArray[Any]:
    """The first ``count`` rows held in ``pieces`` (arrays of rows, in order), removed from
    them: a view when one piece holds them all."""
    taken = []
    while count:
        first = pieces[0]
        if len(first) <= count:
            taken.append(pieces.popleft())
            count -= len(first)
        else:
            taken.append(first[:count])
            pieces[0] = first[count:]
            count = 0
    return taken[0] if len(taken) == 1 else np.concatenate(taken)


class TiffSink:
    """Write a tiled (Big)TIFF from bands of rows given in order (``write(start, rows)``).

    tifffile encodes in a thread of its own, pulling tiles as the bands arrive; use as a
    context manager: the file is renamed into place on a clean exit and removed otherwise.
    """

    def __init__(
        self, target: str | Path, shape: tuple[int, ...], dtype: np.dtype, meta: Meta, force: bool
    ) -> None:
        self.target = Path(target)
        self.shape, self.dtype, self.meta = shape, np.dtype(dtype), meta
        self._atomic = _Atomic(self.target, force, folder=False)
        self._rows: queue.Queue[NDArray[Any] | None] = queue.Queue(maxsize=2)
        self._failure: BaseException | None = None
        self._thread = threading.Thread(target=self._encode, name="convfilt-tiff", daemon=True)
        self._thread.start()

    def write(self, start: int, rows: NDArray[Any]) -> None:
        """Queue the next band (its rows must follow the last band's)."""
        while self._thread.is_alive():
            try:
                self._rows.put(rows, timeout=0.2)
                return
            except queue.Full:
                continue
        self._raise("the TIFF writer stopped")

    def _raise(self, fallback: str) -> None:
        failure = self._failure
        if isinstance(failure, OSError):
            raise ConvfiltError(f"{self.target}: cannot write ({failure.strerror or failure})")
        if failure is not None:
            raise ConvfiltError(f"{self.target}: cannot write ({failure})") from failure
        raise ConvfiltError(f"{self.target}: {fallback}")

    def _tiles(self) -> Iterator[NDArray[Any]]:
        """The output's tiles in row-major order, cut from the bands as they arrive: each row
        of tiles copied once from the bands' rows it spans (no growing buffer), and only the
        edge tiles padded."""
        height, width = self.shape[:2]
        tail = self.shape[2:]
        pieces: deque[NDArray[Any]] = deque()
        held = done = 0
        while done < height:
            need = min(TILE, height - done)
            while held < need:
                rows = self._rows.get()
                if rows is None:
                    return
                pieces.append(rows.reshape(-1, width, *tail))
                held += len(pieces[-1])
            band = _take_rows(pieces, need)
            held -= need
            for c0 in range(0, width, TILE):
                piece = band[:, c0 : c0 + TILE]
                if piece.shape[:2] == (TILE, TILE):
                    yield np.ascontiguousarray(piece)
                    continue
                tile = np.zeros((TILE, TILE, *tail), dtype=self.dtype)
                tile[: piece.shape[0], : piece.shape[1]] = piece
                yield tile
            done += need

    def _encode(self) -> None:
        import tifffile

        meta = self.meta
        size = int(np.prod(self.shape)) * self.dtype.itemsize
        try:
            with tifffile.TiffWriter(
                self._atomic.temp, bigtiff=meta.bigtiff or size > BIGTIFF_ABOVE
            ) as tif:
                tif.write(
                    self._tiles(),
                    shape=self.shape,
                    dtype=self.dtype,
                    tile=(TILE, TILE),
                    photometric=meta.photometric,
                    planarconfig="contig" if len(self.shape) == 3 else None,
                    extrasamples=meta.extrasamples or None,
                    compression=meta.compression,
                    predictor=meta.predictor if meta.predictor > 1 else None,
                    resolution=meta.resolution,
                    resolutionunit=meta.resolutionunit,
                    iccprofile=meta.iccprofile,
                    description=meta.description,
                    extratags=list(meta.extratags),
                    metadata=None,
                    maxworkers=1,
                )
        except BaseException as exc:  # reported by write() / __exit__ in the caller's thread
            self._failure = exc

    def __enter__(self) -> TiffSink:
        return self

    def __exit__(self, kind: type[BaseException] | None, *rest: object) -> None:
        if kind is not None:
            self._stop()
            self._atomic.discard()
            return
        self._rows.put(None)
        self._thread.join()
        if self._failure is not None:
            self._atomic.discard()
            self._raise("")
        try:
            with open(self._atomic.temp, "rb+") as done:
                os.fsync(done.fileno())
            self._atomic.commit()
        except OSError as exc:
            self._atomic.discard()
            raise ConvfiltError(f"{self.target}: cannot write ({exc.strerror or exc})") from None

    def _stop(self) -> None:
        """Unblock and end the encoder thread after a failure elsewhere."""
        while self._thread.is_alive():
            with contextlib.suppress(queue.Full):
                self._rows.put_nowait(None)
            self._thread.join(timeout=0.1)


class ZarrSink:
    """Write a Zarr v3 array folder from bands of rows (``write(start, rows)``), atomically."""

    def __init__(
        self, target: str | Path, shape: tuple[int, ...], dtype: np.dtype, meta: Meta, force: bool
    ) -> None:
        zarr = _zarr()
        self.target = Path(target)
        self._atomic = _Atomic(self.target, force, folder=True)
        chunks = (ZARR_CHUNK, ZARR_CHUNK, *shape[2:])
        self._array = zarr.create_array(
            store=str(self._atomic.temp),
            shape=shape,
            chunks=chunks,
            dtype=dtype,
            zarr_format=3,
            overwrite=True,
        )
        self._array.attrs["has_alpha"] = bool(meta.extrasamples)

    def write(self, start: int, rows: NDArray[Any]) -> None:
        """Store rows ``start:start + len(rows)``."""
        try:
            self._array[start : start + len(rows)] = rows
        except OSError as exc:
            raise ConvfiltError(f"{self.target}: cannot write ({exc.strerror or exc})") from None

    def __enter__(self) -> ZarrSink:
        return self

    def __exit__(self, kind: type[BaseException] | None, *rest: object) -> None:
        if kind is not None:
            self._atomic.discard()
            return
        try:
            self._atomic.commit()
        except OSError as exc:
            self._atomic.discard()
            raise ConvfiltError(f"{self.target}: cannot write ({exc.strerror or exc})") from None


Sink = TiffSink | ZarrSink


def open_sink(
    target: str | Path, shape: tuple[int, ...], dtype: np.dtype, meta: Meta, *, force: bool
) -> Sink:
    """A TIFF or Zarr writer for ``target`` (by its extension)."""
    if Path(target).suffix.lower() == ".zarr":
        return ZarrSink(target, shape, dtype, meta, force)
    if Path(target).suffix.lower() in (".tif", ".tiff"):
        return TiffSink(target, shape, dtype, meta, force)
    raise UsageError(
        f"{target}: this image is too large to hold in memory, and only TIFF and Zarr are "
        "written by tiles; name a .tif or .zarr output"
    )


# --- one file through a filter: in memory or by bands ---------------------------------------------


@dataclass
class Route:
    """How one input runs: in memory (``reader`` None), or streamed band by band."""

    need: int  # bytes the whole image would take in memory
    budget: int
    reader: Reader | None = None
    layout: tiles.Layout | None = None
    plan: Any = None  # streamed: the whole image's plan (engine.Plan), every band's road

    def describe(self) -> str:
        """One line for ``explain``."""
        if self.layout is None:
            return (
                f"in memory: ~{tiles.format_size(self.need)} within the budget "
                f"{tiles.format_size(self.budget)}"
            )
        return f"streamed: {self.layout.describe()}, budget {tiles.format_size(self.budget)}"


def route(
    source: str, target: str, kernel: NDArray[Any], *, mode: str, strategy: str, budget: int
) -> Route:
    """Decide how ``source`` is filtered with ``kernel`` within ``budget`` bytes.

    In memory when the whole image's working set fits (nothing changes for such images);
    else TIFF and Zarr inputs stream, by bands sized from the budget and the road the planner
    takes for the whole image (decided once: every band takes it), to a TIFF or Zarr output;
    other formats (PNG, JPEG, ...) are decoded whole, so one that does not fit is refused up
    front.

    Raises
    ------
    ConvfiltError
        A PNG/JPEG/... input too large for the budget (naming its size and the formats that
        stream); a TIFF that cannot stream and does not fit.
    UsageError
        A streamed image to an output that cannot be written by tiles; a budget too small for
        one band.
    """
    from . import engine

    zarr_io = Path(source).suffix.lower() == ".zarr" or Path(target).suffix.lower() == ".zarr"
    shape, dtype = _header(source)
    work = np.float64 if dtype == np.float64 else np.float32
    road = engine.plan(
        shape, kernel, dtype=dtype, work=work, stored=True, mode=mode, strategy=strategy
    ).strategy
    need = tiles.whole_image_bytes(shape, dtype, strategy=road, reach=kernel.shape[0] // 2)
    if need <= budget and not zarr_io:
        return Route(need, budget)
    if not (_is_tiff(source) or Path(source).suffix.lower() == ".zarr"):
        if need <= budget:  # it fits: only its Zarr output asked for bands
            raise UsageError(
                f"{target}: a Zarr output is written band by band, from a TIFF or Zarr input; "
                f"{source} is decoded whole - write it to an image file, or convert it to .tif"
            )
        raise tiles.over_budget(
            source, "a {} image", shape, need, budget,
            "this format is decoded whole - convert it to a TIFF or Zarr (.tif, .zarr), "
            "which stream",
        )  # fmt: skip
    if not is_stream_path(target):
        raise UsageError(
            f"{target}: {source} streams (too large for the memory budget), and only TIFF and "
            "Zarr are written by tiles; name a .tif or .zarr output"
        )
    reader = open_rows(source)
    # the bands' own problem: the stored pixels, the working dtype, results rounded back
    planner = partial(
        engine.plan, reader.shape, kernel, dtype=reader.dtype, work=work, stored=True, mode=mode
    )
    reach = kernel.shape[0] // 2
    least = partial(tiles.least_budget, reader.shape, reader.dtype, reach=reach)
    fitting = partial(_fitting_plan, planner, least, budget, strategy)
    plan = fitting(runs=1)
    if plan.strategy in names.TRANSFORMS and reader.dtype == np.float32:
        plan = fitting(largest=_largest(reader))  # whether a float32 transform can overflow
    layout = tiles.layout(
        reader.shape, reader.dtype, reach=reach, budget=budget, strategy=plan.strategy
    )
    return Route(need, budget, reader, layout, plan)


def _fitting_plan(
    planner: Callable[..., Any],
    least: Callable[..., int],
    budget: int,
    strategy: str,
    **facts: Any,
) -> Any:
    """``planner``'s plan (an ``engine.Plan``) for ``strategy``; on auto, if the budget
    cannot hold a band of the chosen road (the compiled road's resident code), the cheapest
    road that fits, or where none fits, the one that needs least (its layout says how much).
    ``least(strategy=)`` is that road's smallest budget (``tiles.least_budget``)."""
    plan = planner(strategy=strategy, **facts)
    if strategy != names.AUTO or least(strategy=plan.strategy) <= budget:
        return plan
    roads = sorted(plan.estimates, key=plan.estimates.__getitem__)
    room = [road for road in roads if least(strategy=road) <= budget]
    road = room[0] if room else min(roads, key=lambda r: least(strategy=r))
    why = (
        f"{road}: the cheapest road whose bands fit the memory budget ({plan.strategy}'s "
        "resident code does not)"
    )
    return replace(planner(strategy=road, **facts), reason=why)


def _is_tiff(source: str) -> bool:
    if source == "-" or not Path(source).is_file():
        return False
    with open(source, "rb") as file:
        return file.read(4) in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")


def _header(source: str) -> tuple[tuple[int, ...], np.dtype]:
    """Shape and dtype from the file's header, without decoding pixels ((0, 0) for stdin)."""
    if source == "-":
        return (1, 1), np.dtype(np.uint8)
    if Path(source).suffix.lower() == ".zarr" or _is_tiff(source):
        with contextlib.suppress(ConvfiltError):
            reader = open_rows(source)
            reader.close()
            return reader.shape, reader.dtype
        if Path(source).suffix.lower() == ".zarr":
            open_rows(source)  # raises its one-line error
    from PIL import Image

    try:
        with Image.open(source) as image:
            bands = len(image.getbands())
            deep = image.mode.startswith(("I;16", "I", "F"))
            shape = (image.height, image.width, bands) if bands > 1 else image.size[::-1]
            return tuple(shape), np.dtype(np.uint16 if deep else np.uint8)
    except (OSError, ValueError, SyntaxError):
        return (1, 1), np.dtype(np.uint8)  # the whole-image reader says what is wrong


def filter_file(
    route: Route,
    target: str | Path,
    func: tiles.BandFilter,
    *,
    mode: str,
    force: bool,
    progress: Any = None,
    lanes: int = tiles.LANES,
) -> None:
    """Run ``func`` over a streamed route's bands into ``target`` (TIFF or Zarr), atomically,
    ``lanes`` bands at once (:func:`convfilt.tiles.run`)."""
    reader, layout = route.reader, route.layout
    assert reader is not None and layout is not None
    try:
        opaque = _opaque(reader, layout.rows) if reader.has_alpha else None
        with open_sink(target, reader.shape, reader.dtype, reader.meta, force=force) as sink:
            tiles.run(
                reader, func, layout, mode, sink.write,
                opaque=opaque, progress=progress, lanes=lanes,
            )  # fmt: skip
    finally:
        reader.close()


def _largest(reader: Reader, rows: int = 256) -> float:
    """max|x| over a float image's finite values (one pass, band by band)."""
    largest = 0.0
    for start in range(0, reader.shape[0], rows):
        values = np.abs(reader[start : start + rows])
        finite = values[np.isfinite(values)]
        largest = max(largest, float(finite.max()) if finite.size else 0.0)
    return largest


def _opaque(reader: Reader, rows: int) -> bool:
    """Whether the image's alpha is fully opaque (one pass over it, band by band)."""
    full = float(np.iinfo(reader.dtype).max) if reader.dtype.kind in "iu" else 1.0
    return all(
        bool(np.all(reader[start : start + rows][..., -1] == full))
        for start in range(0, reader.shape[0], rows)
    )
