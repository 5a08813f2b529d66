"""The numba kernels of the compiled road (see ``compiled``, which imports this module only
when the planner has picked the road, and documents how it runs).

numba caches the machine code it compiles beside this file (``__pycache__``), or where
``NUMBA_CACHE_DIR`` says (``compiled`` sets it before importing this module when that
folder is not writable).
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

GROUP = 4  # taps added per pass over an output row


@njit(cache=True, fastmath=False)
def _fill(src, rows, cols, left, r0, count, cval, ext):  # type: ignore[no-untyped-def]
    """Extended rows ``r0 : r0 + count`` of ``src`` (H, W, C), converted, into ``ext``.

    The image's own columns are copied as one run per row (``cols[left + x] == x``); only
    the ``kw - 1`` extended columns go through the index table.
    """
    width, channels = src.shape[1], src.shape[2]
    run = width * channels
    for i in range(count):
        r = rows[r0 + i]
        line = ext[i]
        if r < 0:
            line[:] = cval
            continue
        pixels = src[r].reshape(run)
        inner = line[left * channels : left * channels + run]
        for x in range(run):
            inner[x] = pixels[x]
        for i in range(cols.shape[0] - width):  # the extended columns only
            x = i if i < left else i + width
            c = cols[x]
            for ch in range(channels):
                line[x * channels + ch] = cval if c < 0 else pixels[c * channels + ch]


@njit(cache=True, fastmath=False)
def _taps(ext, first_row, tap_rows, tap_offsets, weights, acc):  # type: ignore[no-untyped-def]
    """``acc = Σ_t weights[t] · ext[first_row + tap_rows[t], tap_offsets[t]:][:len(acc)]``.

    ``GROUP`` taps per pass over ``acc``. Each tap's source is taken as a slice first:
    indexing a slice from 0 lets LLVM vectorize the loop, where a shifted index into the
    whole row (which could be negative, so is wrapped) does not.
    """
    n = acc.shape[0]
    count = weights.shape[0]
    t = 0
    while t < count:
        g = min(GROUP, count - t)
        # the group's taps t, i1, i2, i3 (a smaller group repeats t where it has none)
        i1 = t + g - 3 if g > 3 else t
        i2 = t + g - 2 if g > 2 else t
        i3 = t + g - 1
        s0 = ext[first_row + tap_rows[t], tap_offsets[t] : tap_offsets[t] + n]
        s1 = ext[first_row + tap_rows[i1], tap_offsets[i1] : tap_offsets[i1] + n]
        s2 = ext[first_row + tap_rows[i2], tap_offsets[i2] : tap_offsets[i2] + n]
        s3 = ext[first_row + tap_rows[i3], tap_offsets[i3] : tap_offsets[i3] + n]
        w0, w1, w2, w3 = weights[t], weights[i1], weights[i2], weights[i3]
        if g == 4:
            if t == 0:
                for x in range(n):
                    acc[x] = w0 * s0[x] + w1 * s1[x] + w2 * s2[x] + w3 * s3[x]
            else:
                for x in range(n):
                    acc[x] += w0 * s0[x] + w1 * s1[x] + w2 * s2[x] + w3 * s3[x]
        elif g == 3:
            if t == 0:
                for x in range(n):
                    acc[x] = w0 * s0[x] + w2 * s2[x] + w3 * s3[x]
            else:
                for x in range(n):
                    acc[x] += w0 * s0[x] + w2 * s2[x] + w3 * s3[x]
        elif g == 2:
            if t == 0:
                for x in range(n):
                    acc[x] = w0 * s0[x] + w3 * s3[x]
            else:
                for x in range(n):
                    acc[x] += w0 * s0[x] + w3 * s3[x]
        elif t == 0:
            for x in range(n):
                acc[x] = w0 * s0[x]
        else:
            for x in range(n):
                acc[x] += w0 * s0[x]
        t += g


@njit(cache=True, fastmath=False)
def _store(acc, out, low, high):  # type: ignore[no-untyped-def]
    """Round ``acc`` half-to-even, clip it to [low, high] and write it into ``out``."""
    for x in range(acc.shape[0]):
        out[x] = min(max(np.rint(acc[x]), low), high)


@njit(cache=True, fastmath=False)
def _direct_band(src, rows, cols, left, cval, taps, out, rounding, band, low, high, b):  # type: ignore[no-untyped-def]
    """Band ``b`` of ``direct``: its extended rows filled, then every tap per output row."""
    height, width, channels = out.shape
    tap_rows, tap_offsets, weights = taps
    kh = tap_rows.max() + 1
    span = width * channels
    r0 = b * band
    count = min(band, height - r0)
    ext = np.empty((count + kh - 1, cols.shape[0] * channels), dtype=weights.dtype)
    _fill(src, rows, cols, left, r0, count + kh - 1, cval, ext)
    if rounding is None:
        for r in range(count):
            _taps(ext, r, tap_rows, tap_offsets, weights, out[r0 + r].reshape(span))
    else:
        acc = np.empty(span, dtype=weights.dtype)
        for r in range(count):
            _taps(ext, r, tap_rows, tap_offsets, weights, acc)
            _store(acc, out[r0 + r].reshape(span), low, high)


@njit(cache=True, fastmath=False)
def _separable_band(src, rows, cols, left, cval, factors, out, rounding, band, low, high, b):  # type: ignore[no-untyped-def]
    """Band ``b`` of ``separable``: per output row, a column pass over the band's extended
    rows, then a row pass."""
    height, width, channels = out.shape
    column, row = factors
    kh, kw = column.shape[0], row.shape[0]
    span, wide = width * channels, cols.shape[0] * channels
    down, still = np.arange(kh), np.zeros(kh, dtype=np.int64)
    level, across = np.zeros(kw, dtype=np.int64), np.arange(kw) * channels
    r0 = b * band
    count = min(band, height - r0)
    ext = np.empty((count + kh - 1, wide), dtype=column.dtype)
    vertical = np.empty((1, wide), dtype=column.dtype)
    acc = np.empty(span, dtype=column.dtype)
    _fill(src, rows, cols, left, r0, count + kh - 1, cval, ext)
    for r in range(count):
        _taps(ext, r, down, still, column, vertical[0])
        if rounding is None:
            _taps(vertical, 0, level, across, row, out[r0 + r].reshape(span))
        else:
            _taps(vertical, 0, level, across, row, acc)
            _store(acc, out[r0 + r].reshape(span), low, high)


@njit(parallel=True, cache=True, fastmath=False, nogil=True)
def direct(src, rows, cols, left, cval, taps, out, rounding, band, low, high):  # type: ignore[no-untyped-def]
    """Correlate ``src`` with a kernel given as taps (rows, column offsets, weights) into
    ``out``, the bands shared by the cores; with ``rounding`` True (None: a float ``out``),
    rounded and clipped to [low, high]."""
    for b in prange((out.shape[0] + band - 1) // band):
        _direct_band(src, rows, cols, left, cval, taps, out, rounding, band, low, high, b)


@njit(cache=True, fastmath=False, nogil=True)
def direct_serial(src, rows, cols, left, cval, taps, out, rounding, band, low, high):  # type: ignore[no-untyped-def]
    """``direct`` on the calling thread alone (small calls: no worker to wait for)."""
    for b in range((out.shape[0] + band - 1) // band):
        _direct_band(src, rows, cols, left, cval, taps, out, rounding, band, low, high, b)


@njit(parallel=True, cache=True, fastmath=False, nogil=True)
def separable(src, rows, cols, left, cval, factors, out, rounding, band, low, high):  # type: ignore[no-untyped-def]
    """Correlate ``src`` with the rank-one kernel ``outer(column, row)``, the bands shared
    by the cores; rounding as ``direct``."""
    for b in prange((out.shape[0] + band - 1) // band):
        _separable_band(src, rows, cols, left, cval, factors, out, rounding, band, low, high, b)


@njit(cache=True, fastmath=False, nogil=True)
def separable_serial(src, rows, cols, left, cval, factors, out, rounding, band, low, high):  # type: ignore[no-untyped-def]
    """``separable`` on the calling thread alone."""
    for b in range((out.shape[0] + band - 1) // band):
        _separable_band(src, rows, cols, left, cval, factors, out, rounding, band, low, high, b)


# --- matching's window energies ------------------------------------------------------------------


@njit(cache=True, fastmath=False)
def _pairs(level, span, length, into):  # type: ignore[no-untyped-def]
    """``into[x] = level[x] + level[x + span]`` for x < length - span (one doubling level).
    Both operands are slices indexed from 0: a shifted index (which numba would check for
    wrap-around) keeps LLVM from vectorizing the loop."""
    near = level[: length - span]
    far = level[span:length]
    for x in range(length - span):
        into[x] = near[x] + far[x]


@njit(cache=True, fastmath=False)
def _along_rows(line, width, one, two, sums):  # type: ignore[no-untyped-def]
    """``sums[x] = line[x] + ... + line[x + width - 1]`` for the valid x, by doubling, as
    ``matching._sliding_sums`` and bit for bit the same: level k holds sums of 2**k
    neighbours, and a window adds the levels of the binary digits of ``width``, lowest
    first. Every window is a pairwise sum of its own entries (its rounding is relative to
    them alone), and every pass is a vectorized loop over the row (a running sum along the
    row would be one chain of dependent adds). ``one`` and ``two`` are scratch rows as
    long as ``line``."""
    count = line.shape[0] - width + 1
    level, length, spare, other = line, line.shape[0], one, two
    span, offset, digits, started = 1, 0, width, False
    while True:
        if digits & 1:
            piece = level[offset : offset + count]
            if started:
                for x in range(count):
                    sums[x] += piece[x]
            else:
                sums[:count] = piece
                started = True
            offset += span
        digits >>= 1
        if not digits:
            return
        if digits == 1 and not started:  # the next level is the window: written there
            _pairs(level, span, span + count, sums)
            return
        _pairs(level, span, length, spare)
        level, length, spare, other = spare, length - span, other, spare
        span *= 2


@njit(cache=True, fastmath=False)
def _add_row(row, centre, own_mean, running):  # type: ignore[no-untyped-def]
    """Add one row's ``d = row - centre`` (float64) into the running column sums: d and d²
    side by side with ``own_mean``, else d² alone."""
    cols = row.shape[0]
    if own_mean:
        ones, squares = running[:cols], running[cols:]
        for x in range(cols):
            d = np.float64(row[x]) - centre
            ones[x] += d
            squares[x] += d * d
    else:
        for x in range(cols):
            d = np.float64(row[x]) - centre
            running[x] += d * d


@njit(cache=True, fastmath=False, nogil=True)
def energy_band(plane, centre, height, width, own_mean, flat, r0, out):  # type: ignore[no-untyped-def]
    """Output rows ``r0 : r0 + height`` (``r0`` a multiple of ``height``) of the window
    energies (``matching._window_energy``): per ``height`` x ``width`` window of
    ``d = plane - centre`` (float64), sum(d²), or with ``own_mean`` sum(d²) - sum(d)²/n, set
    to 0 within ``flat`` x sum(d²) of 0 (``matching._zero_flat``).

    Down the columns, van Herk blocks of ``height`` rows aligned on ``r0``: the suffix sums
    of rows ``r0 : r0 + height`` and the prefix sums of the next block give every window of
    the band, each input row read once; along the rows, ``_along_rows``. The same sums in
    the same order as the numpy loops of ``matching._WindowEnergy`` (whose bands are also
    whole blocks), so both give the same bits. Releases the GIL, so threads run bands side
    by side.
    """
    cols_in = plane.shape[1]
    rows_out, cols_out = out.shape
    count = min(height, rows_out - r0)
    powers = 2 if own_mean else 1
    span = powers * cols_in
    suffix = np.empty((height, span))
    running = np.zeros(span)
    for i in range(height - 1, -1, -1):  # block A, backward: suffix sums
        _add_row(plane[r0 + i], centre, own_mean, running)
        suffix[i] = running
    one, two = np.empty(cols_in), np.empty(cols_in)
    across = np.empty((powers, cols_out))
    scale = -1.0 / (height * width)
    running[:] = 0.0
    for i in range(count):  # block B, forward: prefix sums, each window's column sums
        down = suffix[i]
        if i > 0:
            _add_row(plane[r0 + height + i - 1], centre, own_mean, running)
            for j in range(span):
                down[j] += running[j]
        target = out[r0 + i]
        if not own_mean:
            _along_rows(down, width, one, two, target)
            continue
        ones, squares = across[0], across[1]
        _along_rows(down[:cols_in], width, one, two, ones)
        _along_rows(down[cols_in:], width, one, two, squares)
        for x in range(cols_out):  # as the numpy loops: S1² · (-1/n) + S2, then flat -> 0
            energy = ones[x] * ones[x] * scale + squares[x]
            target[x] = 0.0 if energy <= squares[x] * flat else energy


@njit(cache=True, fastmath=False, nogil=True, error_model="numpy")
def ncc_band(cross, energy, root, floor, out):  # type: ignore[no-untyped-def]
    """Matching's NCC scores of one band, entry by entry: ``cross / (sqrt(energy) · root)``
    clipped to [-1, 1], and 0 where ``energy <= floor`` (a flat window); the same operations
    in the same order as the numpy bands of ``matching._ncc_map``, so the same bits (NaN
    included). numpy's error model: a Python one checks every division for a zero divisor,
    which keeps LLVM from vectorizing the loop (a flat window's quotient is discarded)."""
    for i in range(out.shape[0]):
        e = energy[i]
        score = np.float64(cross[i]) / (np.sqrt(e) * root)
        score = 1.0 if score > 1.0 else score
        score = -1.0 if score < -1.0 else score
        out[i] = 0.0 if e <= floor else score
