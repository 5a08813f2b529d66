"""Every name a caller can choose, spelled once: boundary modes, strategies, match methods.

Plain strings and no imports, so that the command line builds its choices (and its help)
from here without loading numpy. The modules that implement each name key their tables by
these constants; ``tests/test_layers.py`` checks that the tables and these lists agree.

Vocabulary: a **strategy** is the road a filter takes to its result (``direct``, ``fft``,
...), which never changes the answer beyond rounding; a **method** is what is computed
(``ncc``, ``sqdiff``), which does.
"""

from __future__ import annotations

# Boundary modes, with scipy.ndimage's names and meanings.
REFLECT = "reflect"
MODES = (REFLECT, "mirror", "nearest", "wrap", "constant")

# Strategies (roads): the planner's choice among them is AUTO.
AUTO = "auto"
DIRECT = "direct"
SEPARABLE = "separable"
FFT = "fft"
OVERLAP_ADD = "overlap-add"
COMPILED = "compiled"  # direct or separable in one compiled pass (numba): small kernels
STRATEGIES = (DIRECT, SEPARABLE, FFT, OVERLAP_ADD, COMPILED)
BANDED = (DIRECT, SEPARABLE, COMPILED)  # sum each output from its own window, by bands of rows
TRANSFORMS = (FFT, OVERLAP_ADD)  # through the FFT
STRATEGY_CHOICES = (AUTO, *STRATEGIES)

# Template-matching scores.
NCC = "ncc"
SQDIFF = "sqdiff"
CCORR = "ccorr"
MATCH_METHODS = (NCC, SQDIFF, CCORR)

# Blur kernels of ``convfilt blur``.
GAUSSIAN = "gaussian"
BLUR_KINDS = (GAUSSIAN, "box")

# Float types the cost model and the benchmark know.
FLOAT_DTYPES = ("float32", "float64")

# What ``deconvolve`` computes (``method=``); the first is the default.
WIENER = "wiener"
RICHARDSON_LUCY = "richardson-lucy"
DECONVOLUTION_METHODS = (WIENER, RICHARDSON_LUCY)

# What a filter does with non-finite values (NaN, inf) in a float image; the first is the default.
PROPAGATE = "propagate"  # scipy.ndimage's result: each spreads over its kernel's footprint
OMIT = "omit"  # normalized convolution: NaN pixels left out, the weights renormalized
RAISE = "raise"  # a ValueError naming how many and where the first is
NAN_POLICIES = (PROPAGATE, OMIT, RAISE)
