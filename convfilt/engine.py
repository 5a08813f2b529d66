"""convolve / correlate on arrays: the strategies, and the planner that picks one.

SKELETON — the engine helper owns this file and replaces the TEMPORARY bodies below.
The public signatures and the Plan fields are a contract other modules build against.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import ArrayLike, NDArray

MODES = ("reflect", "mirror", "nearest", "wrap", "constant")
STRATEGIES = ("direct", "separable", "fft", "overlap-add")


@dataclass(frozen=True)
class Plan:
    """The planner's decision for one image shape and kernel.

    ``estimates`` maps every strategy that can apply to its predicted time in seconds;
    ``reason`` is one human-readable line.
    """

    strategy: str
    estimates: dict[str, float]
    reason: str
    image_shape: tuple[int, ...]
    kernel_shape: tuple[int, int]
    dtype: str
    mode: str
    notes: tuple[str, ...] = field(default=())


def plan(
    image_shape: Sequence[int],
    kernel: ArrayLike,
    *,
    dtype: np.dtype | type | str = np.float32,
    mode: str = "reflect",
    method: str = "auto",
) -> Plan:
    """Choose a strategy for correlating an image of ``image_shape`` with ``kernel``."""
    raise NotImplementedError("TEMPORARY: engine helper implements")


def correlate(
    image: ArrayLike,
    kernel: ArrayLike,
    *,
    mode: str = "reflect",
    cval: float = 0.0,
    method: str = "auto",
    on_plan: Callable[[Plan], None] | None = None,
) -> NDArray[np.floating]:
    """Correlate (kernel as is) an (H, W) or (H, W, C) image with a 2-D kernel, per channel.

    ``on_plan``, if given, is called once with the Plan that was carried out (``--explain``).
    """
    import scipy.ndimage as ndi  # TEMPORARY

    x = np.asarray(image)
    dt = x.dtype if x.dtype in (np.float32, np.float64) else np.float64
    x = x.astype(dt, copy=False)
    k = np.asarray(kernel, dtype=dt)
    if x.ndim == 2:
        return ndi.correlate(x, k, mode=mode, cval=cval)
    return np.stack(
        [ndi.correlate(x[..., c], k, mode=mode, cval=cval) for c in range(x.shape[2])], axis=-1
    )


def convolve(
    image: ArrayLike,
    kernel: ArrayLike,
    *,
    mode: str = "reflect",
    cval: float = 0.0,
    method: str = "auto",
    on_plan: Callable[[Plan], None] | None = None,
) -> NDArray[np.floating]:
    """Convolve (kernel flipped) an (H, W) or (H, W, C) image with a 2-D kernel, per channel."""
    import scipy.ndimage as ndi  # TEMPORARY

    x = np.asarray(image)
    dt = x.dtype if x.dtype in (np.float32, np.float64) else np.float64
    x = x.astype(dt, copy=False)
    k = np.asarray(kernel, dtype=dt)
    if x.ndim == 2:
        return ndi.convolve(x, k, mode=mode, cval=cval)
    return np.stack(
        [ndi.convolve(x[..., c], k, mode=mode, cval=cval) for c in range(x.shape[2])], axis=-1
    )


def correlate_valid(
    image: ArrayLike, kernels: Sequence[ArrayLike], *, method: str = "auto"
) -> list[NDArray[np.float64]]:
    """Valid-mode correlation of one 2-D image with several kernels of one shape, in float64.

    Output shape (H - kh + 1, W - kw + 1); entry (y, x) is ``sum(k * image[y:y+kh, x:x+kw])``.
    Through the FFT the image's transform is computed once and shared by all kernels.
    """
    import scipy.fft as sfft  # TEMPORARY: engine helper folds this into the strategy table

    x = np.asarray(image, dtype=np.float64)
    ks = [np.asarray(k, dtype=np.float64) for k in kernels]
    kh, kw = ks[0].shape
    h, w = x.shape
    shape = (sfft.next_fast_len(h, real=True), sfft.next_fast_len(w, real=True))
    fx = sfft.rfft2(x, shape, workers=-1)
    out = []
    for k in ks:
        fk = sfft.rfft2(k[::-1, ::-1], shape, workers=-1)
        full = sfft.irfft2(fx * fk, shape, workers=-1)
        out.append(full[kh - 1 : h, kw - 1 : w].copy())
    return out
