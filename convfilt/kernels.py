"""Kernel construction (Gaussian, box, presets, files) and separability (SVD rank)."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from .errors import UsageError

# The largest kernel built or read, along one axis and in all (2 GiB of float64). Beyond them
# a kernel cannot be held, and has no use on an image that fits in memory: the request is
# refused by name before anything is allocated, not left to fail as "out of memory".
MAX_TAPS = 2**20 + 1
MAX_ELEMENTS = 2**28


def check_taps(taps: float, what: str, parameters: tuple[str, ...]) -> None:
    """UsageError unless a kernel axis of ``taps`` taps can be built; ``what`` says which
    parameters made it, e.g. ``"sigma 1e+09 with truncate 4"``."""
    if not taps <= MAX_TAPS:  # also NaN and inf
        raise UsageError(
            f"{what} makes a kernel of {taps:.4g} taps along an axis; at most {MAX_TAPS} "
            "are supported (a reach of 524288 pixels)",
            parameters=parameters,
        )


def outer(along_y: NDArray[np.float64], along_x: NDArray[np.float64]) -> NDArray[np.float64]:
    """The 2-D kernel ``along_y ⊗ along_x``, refused by size (UsageError) before allocation."""
    if along_y.size * along_x.size > MAX_ELEMENTS:
        raise UsageError(
            f"a {along_y.size}x{along_x.size} kernel ({along_y.size * along_x.size:.4g} taps) "
            f"is over the {MAX_ELEMENTS} supported; use a smaller radius or sigma",
            parameters=("radius", "sigma"),
        )
    return np.outer(along_y, along_x)


def gaussian_1d(sigma: float, truncate: float = 4.0, *, name: str = "sigma") -> NDArray[np.float64]:
    """Sampled Gaussian of radius ``round(truncate * sigma)``, normalised to sum 1.

    The same taps as ``scipy.ndimage.gaussian_filter1d`` (order 0). ``name`` is the parameter
    that gave ``sigma``, for the message when the kernel would be too large.
    """
    what = name if ":" in name else f"{name} {sigma:g}"  # a preset names its sigma itself
    check_taps(2 * truncate * sigma + 1, f"{what} with truncate {truncate:g}", (name, "truncate"))
    radius = int(truncate * sigma + 0.5)  # half up, as scipy (Python's round() goes to even)
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    w = np.exp(-0.5 * (x / sigma) ** 2)
    return w / w.sum()


def box_1d(radius: int) -> NDArray[np.float64]:
    """A box of ``2 * radius + 1`` equal taps summing to 1."""
    n = 2 * radius + 1
    check_taps(n, f"radius {radius}", ("radius",))
    return np.full(n, 1.0 / n)


# --- separability (the engine's ``separable`` strategy) ----------------------------------------

# Largest Σ|k - column ⊗ row| / Σ|k| accepted as rank one, per working dtype. The engine's
# accuracy target is 2e-5 (float32) and 1e-10 (float64) of max|x|·Σ|k|; dropping the residual
# costs at most residual·max|x|, so these leave a factor of 20-100 for rounding.
SEPARABLE_TOLERANCE = {np.dtype(np.float32): 1e-6, np.dtype(np.float64): 1e-12}


def separate(
    kernel: NDArray[np.floating], dtype: np.dtype | type | str = np.float64
) -> tuple[NDArray[np.float64], NDArray[np.float64]] | None:
    """Split a rank-one 2-D kernel into ``(column, row)`` with ``outer(column, row) ≈ kernel``.

    A pair is accepted when its residual's absolute sum is within the dtype's tolerance
    (``SEPARABLE_TOLERANCE``, float32 for any working dtype other than float64) of the
    kernel's, else None. Two candidates, cheapest first:

    1. the cross through the largest entry ``k[i, j]``: ``outer(k[:, j], k[i, :] / k[i, j])``,
       O(kh·kw), exact for a sampled outer product such as a Gaussian;
    2. the SVD's leading singular pair (the best rank-one fit), but only when the cross's
       largest error does not already prove the kernel far from rank one: for the largest
       entry (the maximal-volume 1x1 submatrix) the cross's Chebyshev error is at most
       2·σ₂ (Goreinov & Tyrtyshnikov, 2011), and the SVD's absolute residual sum is at least
       σ₂, so a cross error above 2·tolerance·Σ|k| rejects without the SVD. That keeps large
       non-separable kernels (256x256 matching probes) from paying ~0.1 s of SVD.

    The cross keeps the kernel's own entries in the column and divides only the row (so a
    1x2 kernel of halves stays exactly halves); the SVD pair shares the singular value
    equally. Either way neither factor is tiny when the other is huge, and the row sums
    positive.
    """
    k = np.asarray(kernel, dtype=np.float64)
    if k.ndim != 2 or k.size == 0:
        return None
    scale = float(np.abs(k).sum())
    if scale == 0.0 or not np.isfinite(scale):
        return None
    limit = scale * SEPARABLE_TOLERANCE.get(
        np.dtype(dtype), SEPARABLE_TOLERANCE[np.dtype(np.float32)]
    )
    i, j = np.unravel_index(int(np.argmax(np.abs(k))), k.shape)
    column, row = k[:, j].copy(), k[i, :] / k[i, j]  # exact entries in the column, |row| <= 1
    error = np.abs(k - np.outer(column, row))
    if float(error.sum()) > limit:
        if float(error.max()) > 2.0 * limit:
            return None
        u, s, vt = np.linalg.svd(k, full_matrices=False)
        column, row = u[:, 0] * np.sqrt(s[0]), vt[0] * np.sqrt(s[0])
        if float(np.abs(k - np.outer(column, row)).sum()) > limit:
            return None
    if row.sum() < 0:  # the sign is arbitrary; prefer a row that sums positive
        column, row = -column, -row
    return column, row


# --- presets and kernel files (``load_kernel``: a PRESET or a FILE) ---------------------------
# The derivative presets follow the textbook convention for *convolution*: `convolve` with
# sobel-x gives +gradient where brightness grows to the right (sobel-y: downwards); with
# correlation (no flip) the sign is reversed. That difference is the point of the flip.


def _preset_size(arg: str | None, default: int, spec: str) -> int:
    """Parse the integer size after ``name:`` (``box:5``), or give ``default``."""
    if arg is None:
        return default
    try:
        size = int(arg)
    except ValueError:
        size = 0
    if size < 1:
        raise UsageError(
            f"kernel {spec}: the size must be an integer >= 1, got {arg!r}", parameters=["kernel"]
        )
    return size


def _preset_sigma(arg: str | None, default: float, spec: str) -> float:
    """Parse the sigma after ``gaussian:`` (``gaussian:2.0``), or give ``default``."""
    if arg is None:
        return default
    try:
        sigma = float(arg)
    except ValueError:
        sigma = float("nan")
    if not (np.isfinite(sigma) and sigma > 0):
        raise UsageError(
            f"kernel {spec}: sigma must be a finite number > 0, got {arg!r}", parameters=["kernel"]
        )
    return sigma


def _fixed(rows: list[list[float]]) -> Callable[[str | None, str], NDArray[np.float64]]:
    """A preset that takes no argument."""

    def build(arg: str | None, spec: str) -> NDArray[np.float64]:
        if arg is not None:
            raise UsageError(
                f"kernel {spec}: this preset takes no ':' argument", parameters=["kernel"]
            )
        return np.array(rows, dtype=np.float64)

    return build


def _box(arg: str | None, spec: str) -> NDArray[np.float64]:
    size = _preset_size(arg, 3, spec)
    return np.full((size, size), 1.0 / size**2)


def _gaussian(arg: str | None, spec: str) -> NDArray[np.float64]:
    taps = gaussian_1d(_preset_sigma(arg, 1.0, spec), name=spec)
    return outer(taps, taps)


def disk(radius: float) -> NDArray[np.float64]:
    """A uniform disk of ``radius`` pixels (a defocus PSF), each pixel weighted by the share
    of it the disk covers (8x8 samples per pixel), normalised to sum 1."""
    reach = math.ceil(radius - 0.5) if radius >= 0.5 else 0
    offsets = (np.arange(8) + 0.5) / 8 - 0.5
    axis = (np.arange(-reach, reach + 1)[:, None] + offsets[None, :]).ravel()
    inside = (axis[:, None] ** 2 + axis[None, :] ** 2 <= radius**2).astype(np.float64)
    n = 2 * reach + 1
    cover = inside.reshape(n, 8, n, 8).sum(axis=(1, 3))
    return cover / cover.sum()


def motion(length: float, angle: float = 0.0) -> NDArray[np.float64]:
    """A straight streak of ``length`` pixels at ``angle`` degrees (anticlockwise from +x, y
    up), centred: 8 samples per pixel along it, each on its nearest pixel, normalised to sum
    1. ``motion(n)`` is a 1 x n row of equal weights for an integer n."""
    samples = max(1, round(8 * length))
    along = -length / 2 + (np.arange(samples) + 0.5) * (length / samples)
    theta = math.radians(angle)
    cols = np.rint(along * math.cos(theta) + 0.0).astype(np.intp)
    rows = np.rint(-along * math.sin(theta) + 0.0).astype(np.intp)
    reach_y, reach_x = int(np.abs(rows).max()), int(np.abs(cols).max())
    kernel = np.zeros((2 * reach_y + 1, 2 * reach_x + 1))
    np.add.at(kernel, (rows + reach_y, cols + reach_x), 1.0)
    return kernel / kernel.sum()


def _preset_number(arg: str, what: str, spec: str, low: float) -> float:
    """Parse one number of a preset's arguments: finite and > ``low`` (or >= 0 for angles)."""
    try:
        value = float(arg)
    except ValueError:
        value = float("nan")
    if not (np.isfinite(value) and value > low):
        raise UsageError(f"kernel {spec}: {what} must be a finite number > {low:g}, got {arg!r}")
    return value


def _motion(arg: str | None, spec: str) -> NDArray[np.float64]:
    if arg is None or ":" not in arg:
        size = _preset_size(arg, 9, spec)
        return np.full((1, size), 1.0 / size)
    length, angle = arg.split(":", 1)
    return motion(
        _preset_number(length, "the length", spec, 0.0),
        _preset_number(angle, "the angle", spec, -math.inf),
    )


def _disk(arg: str | None, spec: str) -> NDArray[np.float64]:
    return disk(1.0 if arg is None else _preset_number(arg, "the radius", spec, 0.0))


# name -> (builder(arg, spec), what it is, for the command line's help)
PRESETS: dict[str, tuple[Callable[[str | None, str], NDArray[np.float64]], str]] = {
    "box": (_box, "box:N mean of NxN (default 3)"),
    "gaussian": (_gaussian, "gaussian:S Gaussian of sigma S (default 1.0)"),
    "sharpen": (_fixed([[0, -1, 0], [-1, 5, -1], [0, -1, 0]]), "sharpen 3x3"),
    "laplacian": (_fixed([[0, 1, 0], [1, -4, 1], [0, 1, 0]]), "laplacian 3x3"),
    "sobel-x": (_fixed([[1, 0, -1], [2, 0, -2], [1, 0, -1]]), "sobel-x d/dx"),
    "sobel-y": (_fixed([[1, 2, 1], [0, 0, 0], [-1, -2, -1]]), "sobel-y d/dy"),
    "emboss": (_fixed([[-2, -1, 0], [-1, 1, 1], [0, 1, 2]]), "emboss 3x3"),
    "motion": (_motion, "motion:N horizontal streak of N (default 9); motion:LENGTH:ANGLE"),
    "disk": (_disk, "disk:R uniform disk of radius R (default 1), a defocus"),
}


def preset(spec: str) -> NDArray[np.float64] | None:
    """The kernel a preset spec (``name`` or ``name:arg``) names, or None if it names none."""
    name, colon, arg = spec.partition(":")
    entry = PRESETS.get(name.strip().lower())
    if entry is None:
        return None
    build, _ = entry
    return build(arg.strip() if colon else None, spec)


def _read_text(path: Path) -> NDArray[np.float64]:
    """Rows of numbers separated by whitespace and/or commas; ``#`` starts a comment."""
    try:
        text = path.read_text(encoding="utf-8-sig")  # a byte-order mark is not a number
    except UnicodeDecodeError:
        raise UsageError(f"kernel file {path}: not a text file (or use .npy)") from None
    rows: list[list[float]] = []
    for number, line in enumerate(text.splitlines(), start=1):
        fields = line.split("#", 1)[0].replace(",", " ").split()
        if not fields:
            continue
        try:
            rows.append([float(field) for field in fields])
        except ValueError:
            raise UsageError(
                f"kernel file {path}, line {number}: not a number in {line.strip()!r}"
            ) from None
        if len(rows[-1]) != len(rows[0]):
            raise UsageError(
                f"kernel file {path}, line {number}: ragged rows "
                f"({len(rows[-1])} numbers, the first row has {len(rows[0])})"
            )
    return np.array(rows, dtype=np.float64) if rows else np.empty((0, 0))


def _read_npy(path: Path) -> NDArray[np.float64]:
    """A ``.npy`` array of real numbers (no pickles); its header's shape is checked first, so
    a header claiming more than a kernel can hold is refused before anything is allocated."""
    try:
        with path.open("rb") as file:
            version = np.lib.format.read_magic(file)
            header = np.lib.format.read_array_header_1_0
            if version != (1, 0):
                header = np.lib.format.read_array_header_2_0
            shape = header(file)[0]
        if math.prod(shape) > MAX_ELEMENTS or max(shape, default=0) > MAX_TAPS:
            raise UsageError(
                f"kernel file {path}: its header claims a {'x'.join(map(str, shape))} kernel, "
                f"over the {MAX_ELEMENTS} taps supported"
            )
        array = np.load(path, allow_pickle=False)
    except UsageError:
        raise
    except (ValueError, OSError, EOFError) as exc:
        raise UsageError(f"kernel file {path}: not a readable .npy array ({exc})") from None
    if not (np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.floating)):
        raise UsageError(f"kernel file {path}: holds {array.dtype}, not real numbers")
    return np.asarray(array, dtype=np.float64)


def read_kernel_file(path: str | Path) -> NDArray[np.float64]:
    """Load a 2-D kernel from a text file or ``.npy``; any defect is a UsageError naming it."""
    path = Path(path)
    if not path.exists():
        raise UsageError(
            f"kernel file {path}: no such file, and not a preset ({', '.join(PRESETS)})"
        )
    if not path.is_file():
        raise UsageError(f"kernel file {path}: is not a file")
    try:
        kernel = _read_npy(path) if path.suffix.lower() == ".npy" else _read_text(path)
    except OSError as exc:
        raise UsageError(f"kernel file {path}: cannot read ({exc.strerror})") from None
    if kernel.ndim != 2:
        raise UsageError(f"kernel file {path}: a kernel must be 2-D, got shape {kernel.shape}")
    if kernel.size == 0:
        raise UsageError(f"kernel file {path}: empty kernel")
    if not np.all(np.isfinite(kernel)):
        raise UsageError(f"kernel file {path}: holds NaN or infinity")
    return kernel


def normalized(kernel: NDArray[np.float64], source: str) -> NDArray[np.float64]:
    """``kernel`` divided by its sum; a kernel summing to 0 (an edge detector) cannot be."""
    total = float(kernel.sum())
    if abs(total) <= 1e-12 * float(np.abs(kernel).sum()):
        raise UsageError(
            f"normalize: kernel {source} sums to 0, so it cannot be normalised",
            parameters=["normalize"],
        )
    return kernel / total


def load_kernel(spec: str, *, normalize: bool = False) -> NDArray[np.float64]:
    """The kernel ``spec`` names: a preset (``sobel-x``, ``box:5``) or else a file."""
    kernel = preset(spec)
    if kernel is None:
        kernel = read_kernel_file(spec)
    return normalized(kernel, spec) if normalize else kernel


# --- point-spread functions (``deconvolve``'s ``psf``, ``convfilt deblur --psf SPEC``) ---------

PSF_SPECS = "gaussian:SIGMA, box:R, disk:R, motion:LENGTH:ANGLE, a kernel file or an image"
# an image of a point source (a photographed star or bead) is read as a PSF
IMAGE_SUFFIXES = (".png", ".tif", ".tiff", ".jpg", ".jpeg", ".bmp", ".webp", ".gif", ".pgm")


def _psf_box(arg: str | None, spec: str) -> NDArray[np.float64]:
    """``box:R``: a (2R+1)² mean, R a radius as in box_blur (the preset box:N is N wide)."""
    radius = _preset_size(arg, 1, spec) if arg is not None and arg.strip() != "0" else 0
    return np.full((2 * radius + 1, 2 * radius + 1), 1.0 / (2 * radius + 1) ** 2)


def _read_psf_image(path: Path) -> NDArray[np.float64]:
    """An image of a point source as a PSF: its channels averaged (alpha dropped)."""
    from .images import load

    picture = load(str(path))
    pixels = np.asarray(picture.pixels, dtype=np.float64)
    if pixels.ndim == 3:
        colour = pixels[..., :-1] if picture.has_alpha else pixels
        pixels = colour.mean(axis=2)
    return pixels


def load_psf(spec: str) -> NDArray[np.float64]:
    """The PSF ``spec`` names (``PSF_SPECS``), as a float64 array (not yet normalised).

    ``box:R`` is a (2R+1)x(2R+1) box; ``gaussian``, ``disk`` and ``motion`` are the presets;
    anything else is a file: ``.npy``, an image (``IMAGE_SUFFIXES``: channels averaged, alpha
    dropped), or a text kernel.
    """
    name, colon, arg = spec.partition(":")
    if name.strip().lower() == "box":
        return _psf_box(arg.strip() if colon else None, spec)
    if name.strip().lower() in ("gaussian", "disk", "motion"):
        kernel = preset(spec)
        assert kernel is not None
        return kernel
    path = Path(spec)
    if not path.is_file():
        raise UsageError(
            f"psf {spec!r}: neither a PSF spec ({PSF_SPECS}) nor a file", parameters=["psf"]
        )
    if path.suffix.lower() in IMAGE_SUFFIXES:
        return _read_psf_image(path)
    return read_kernel_file(path)


# --- what a kernel does (``convfilt kernel SPEC``) ----------------------------------------------


@dataclass(frozen=True)
class KernelFacts:
    """A kernel, the flip convolution slides, and what follows from them.

    ``symmetric`` is ``k == k[::-1, ::-1]`` exactly; ``convolve`` and ``correlate`` then give
    the same image, except that along an even axis the flipped kernel's centre moves by one
    pixel (``same_result`` says whether they agree to the pixel). ``response`` is ``|H|``,
    the kernel's spectrum zero-padded to ``size`` x ``size``, zero frequency at the centre
    (``size // 2``); the flip has the same ``|H|`` (only the phase changes).
    """

    kernel: NDArray[np.float64]
    flipped: NDArray[np.float64]
    symmetric: bool
    same_result: bool
    separable: bool
    rank: int
    singular_values: NDArray[np.float64]
    sum: float
    dc_gain: float
    response: NDArray[np.float64]

    @property
    def shape(self) -> tuple[int, int]:
        return (int(self.kernel.shape[0]), int(self.kernel.shape[1]))

    def to_json(self) -> dict[str, object]:
        """The facts as JSON types; the response as its size and range, not its values."""
        return {
            "shape": list(self.shape),
            "sum": self.sum,
            "dc_gain": self.dc_gain,
            "symmetric": self.symmetric,
            "convolve_equals_correlate": self.same_result,
            "separable": self.separable,
            "rank": self.rank,
            "singular_values": self.singular_values.tolist(),
            "kernel": self.kernel.tolist(),
            "flipped": self.flipped.tolist(),
            "response_size": int(self.response.shape[0]),
            "response_max": float(self.response.max()),
            "response_min": float(self.response.min()),
        }


def rank(kernel: NDArray[np.float64]) -> tuple[int, NDArray[np.float64]]:
    """The numerical rank of ``kernel`` and its singular values: those above
    ``max(shape) · eps · σ₁`` count (numpy's ``matrix_rank`` rule)."""
    values = np.linalg.svd(np.asarray(kernel, dtype=np.float64), compute_uv=False)
    if values.size == 0 or values[0] == 0:
        return 0, values
    tolerance = max(kernel.shape) * np.finfo(np.float64).eps * values[0]
    return int(np.count_nonzero(values > tolerance)), values


def describe(kernel: NDArray[np.float64], size: int = 64) -> KernelFacts:
    """The facts about ``kernel`` (:class:`KernelFacts`); ``size`` pads its spectrum.

    Examples
    --------
    >>> facts = describe(np.array([[1.0, 0.0, -1.0], [2.0, 0.0, -2.0], [1.0, 0.0, -1.0]]))
    >>> facts.symmetric, facts.separable, facts.rank, facts.sum
    (False, True, 1, 0.0)
    >>> facts.flipped[1].tolist()
    [-2.0, 0.0, 2.0]
    """
    k = np.asarray(kernel, dtype=np.float64)
    if size < max(k.shape):
        raise UsageError(
            f"size {size} is smaller than the kernel {k.shape[0]}x{k.shape[1]}; "
            f"give at least {max(k.shape)}",
            parameters=["size"],
        )
    flipped = k[::-1, ::-1].copy()
    symmetric = bool(np.array_equal(k, flipped))
    found_rank, values = rank(k)
    spectrum = np.fft.fft2(k, s=(size, size))
    response = np.abs(np.fft.fftshift(spectrum))
    return KernelFacts(
        kernel=k,
        flipped=flipped,
        symmetric=symmetric,
        same_result=symmetric and all(n % 2 == 1 for n in k.shape),
        separable=separate(k) is not None,
        rank=found_rank,
        singular_values=values,
        sum=float(k.sum()),
        dc_gain=float(abs(spectrum[0, 0])),
        response=response,
    )
