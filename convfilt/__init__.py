"""convfilt: image filtering by the cheapest exact road (direct, separable or FFT convolution).

The public API is imported lazily, so that ``import convfilt`` (and so the command line's
help) does not pay for numpy, scipy or Pillow until a function is used.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# public name -> module that defines it
_API = {
    "ConvfiltError": "errors",
    "UsageError": "errors",
    "retain_freed_blocks": "memory",
    "convolve": "engine",
    "correlate": "engine",
    "plan": "engine",
    "Plan": "engine",
    "gaussian_blur": "filters",
    "box_blur": "filters",
    "unsharp_mask": "filters",
    "deconvolve": "deconvolution",
    "match_template": "matching",
    "find_matches": "matching",
    "Match": "matching",
}

__all__ = [
    "ConvfiltError",
    "Match",
    "Plan",
    "UsageError",
    "__version__",
    "box_blur",
    "convolve",
    "correlate",
    "deconvolve",
    "find_matches",
    "gaussian_blur",
    "match_template",
    "plan",
    "retain_freed_blocks",
    "unsharp_mask",
]

if TYPE_CHECKING:
    from .deconvolution import deconvolve
    from .engine import Plan, convolve, correlate, plan
    from .errors import ConvfiltError, UsageError
    from .filters import box_blur, gaussian_blur, unsharp_mask
    from .matching import Match, find_matches, match_template
    from .memory import retain_freed_blocks


def __getattr__(name: str) -> Any:
    module = _API.get(name)
    if module is None:
        raise AttributeError(f"module 'convfilt' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value
