"""Kernel construction (Gaussian, box, presets, files) and separability (SVD rank)."""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray


def gaussian_1d(sigma: float, truncate: float = 4.0) -> NDArray[np.float64]:
    """Sampled Gaussian of radius ``round(truncate * sigma)``, normalised to sum 1.

    The same taps as ``scipy.ndimage.gaussian_filter1d`` (order 0).
    """
    radius = round(truncate * sigma)
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    w = np.exp(-0.5 * (x / sigma) ** 2)
    return w / w.sum()


def box_1d(radius: int) -> NDArray[np.float64]:
    """A box of ``2 * radius + 1`` equal taps summing to 1."""
    n = 2 * radius + 1
    return np.full(n, 1.0 / n)
