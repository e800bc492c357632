"""Compiled per-pixel kernels (numba) for :mod:`calib.rejection`.

Imported only when numba is available and ``DARKD_NO_NUMBA`` is not set (:func:`calib.rejection.numba_available`);
the NumPy code in :mod:`calib.rejection` is the reference, and these kernels give the same rejections except where
float rounding puts a value exactly at a threshold (the tests allow 1 pixel in 10⁴). Machine code is cached on disk
(``cache=True``: in ``__pycache__`` next to this file, or the user's cache directory / ``NUMBA_CACHE_DIR``); ``make
venv`` also builds them ahead of time for the host CPU (:mod:`calib.aot`), and that module is used when present.

Winsorized sigma clipping, per pixel on its ``n`` values sorted ascending ``v[0] ≤ … ≤ v[n−1]``, the kept values
``v[lo:hi]`` (``m = hi − lo``) — the algorithm of :mod:`calib.rejection`'s docstring:

* start: ``c`` = median, ``σ`` = IQR/1.349 (the standard deviation when the IQR is 0);
* Winsorization, iterated on the half-width ``h = 1.5σ``: with ``A`` values below ``c − h`` and ``B`` above
  ``c + h`` (found by moving the previous iteration's bounds), ``S₁ = Σ v[a:b]``, ``S₂ = Σ v[a:b]²`` from prefix sums,

      mean(clamped)   = α·c + β·h + S₁/m,          α = (A + B)/m,  β = (B − A)/m
      mean(clamped²)  = α·(c² + h²) + 2β·c·h + S₂/m
      h'              = sqrt(K²·(mean(clamped²) − mean(clamped)²)),   K = 1.5 × 1.134

  (the new ``c`` is ``mean(clamped)``) until ``h`` changes by less than ``5e-4`` relative or returns to within that
  of its value two iterations before — the same test on ``σ = h/1.5``;
* reject ``v < c − k_low·σ`` and ``v > c + k_high·σ`` (a collapsed ``σ``: the values different from the median);
  repeat while something is rejected and ``m ≥ 3``.

Up to :data:`VECTOR_MAX_N` frames (:func:`_vector_block`), the first pass — where every pixel keeps all its values,
so the median and quartiles sit at the same rows for all — runs for the 64 pixels of a block at once: each step is
a clamped sum over the ``n`` values (``O(n)``, but SIMD across the pixels: ≈ 3 ns per pixel and step at ``n = 16``
against ≈ 13 ns for an ``O(1)`` step of the closed form above), until at most 16 pixels are still moving; those
are moved to the first 16 lanes and go on there (one SIMD vector per row instead of four) until at most 2 are.
Those 2, and the few pixels that reject something (≈ 6 % at ``n = 16``; whether a pixel does is read from the two
ends of its sorted values), go on one by one. With more frames, and for those pixels, each pixel is iterated on its
own with the closed form, two pixels side by side so the CPU overlaps their independent chains of dependent
operations (about 40 cycles per step). Each block of 64 pixels is copied into a small buffer that stays in the L1
cache and sorted there by a comparator network (SIMD min/max across the 64 pixels), and its prefix sums are
taken across the 64 pixels at once.
"""

from __future__ import annotations

import numba
import numpy as np

from calib.rejection import SINGLE_PASS_METHODS, WINSOR_CLAMP, WINSOR_COLLAPSE, WINSOR_GAIN, WINSOR_TOLERANCE

BLOCK = 64  # pixels sorted together: n × 64 × 4 B stays in L1 for n ≤ 128
VECTOR_MAX_N = 64  # up to this many frames, the first pass of a block's pixels runs in SIMD lanes (_vector_block)
_NARROW = 16  # when at most this many pixels of a block are still moving, they go on in the first 16 lanes alone
_STRAGGLERS = 2  # pixels of a block left to Winsorize one by one when the others have converged
# Rows of the per-block lane arrays of _vector_block, one column per pixel (2-D indexing, not a view per row: each
# view of an array is reference-counted, an atomic operation, per block). lanes, float64: centre, half-width, the
# half-width one step earlier, the two clip thresholds, the median the steps work from; state, float32: centre,
# half-width, half-width one step earlier (the rows of lanes) and the collapse floor; sums, float32: the two clamp
# bounds and the two clamped sums.
_C, _H, _H_BEFORE, _T_LOW, _T_HIGH, _ORIGIN = range(6)
_FLOOR = 3
_B_LOW, _B_HIGH, _S1, _S2 = range(4)
_K2 = (WINSOR_CLAMP * WINSOR_GAIN) ** 2
_H_COLLAPSE = WINSOR_CLAMP * WINSOR_COLLAPSE  # the collapse floor of σ (calib.rejection), as a half-width
_MINMAX = SINGLE_PASS_METHODS.index("minmax")
_PERCENTILE = SINGLE_PASS_METHODS.index("percentile")

_inline = numba.njit(inline="always", error_model="numpy")
_kernel = numba.njit(nogil=True, cache=True, error_model="numpy")


@_inline
def _load_block(stack: np.ndarray, b0: int, w: int, pair_a: np.ndarray, pair_b: np.ndarray,
                buf: np.ndarray) -> None:
    """Copy columns ``b0 … b0+w−1`` of ``stack`` into ``buf`` and sort each column by the comparators
    ``(pair_a[k], pair_b[k])``; one pair ``(−1, −1)`` sorts each column on its own (large ``n``), none: presorted."""
    n = stack.shape[0]
    first = np.uint64(b0)  # unsigned column indices: no wraparound of negative indices, so contiguous vector loads
    for i in range(n):
        for j in range(w):
            buf[i, j] = stack[i, first + np.uint64(j)]
    if pair_a.shape[0] == 1 and pair_a[0] < 0:
        v = np.empty(n, dtype=buf.dtype)
        for j in range(w):
            for i in range(n):
                v[i] = buf[i, j]
            v.sort()
            for i in range(n):
                buf[i, j] = v[i]
        return
    for k in range(pair_a.shape[0]):
        ra = pair_a[k]
        rb = pair_b[k]
        for j in range(w):
            x = buf[ra, j]
            y = buf[rb, j]
            buf[ra, j] = x if x < y else y
            buf[rb, j] = y if x < y else x


@_inline
def _prefix_sums(buf: np.ndarray, w: int, col: np.ndarray, p1: np.ndarray, p2: np.ndarray) -> None:
    """``col`` = ``buf`` as float64; ``p1[i, j] = Σ_{k<i} col[k, j]``, ``p2[i, j] = Σ_{k<i} col[k, j]²``."""
    n = buf.shape[0]
    for j in range(w):
        p1[0, j] = 0.0
        p2[0, j] = 0.0
    for i in range(n):
        for j in range(w):
            x = np.float64(buf[i, j])
            col[i, j] = x
            p1[i + 1, j] = p1[i, j] + x
            p2[i + 1, j] = p2[i, j] + x * x


@_inline
def _winsor_start(col: np.ndarray, p1: np.ndarray, j: int, lo: int, hi: int) -> tuple[float, float]:
    """``(c, h)`` to start the Winsorization of ``col[lo:hi, j]``: the median and 1.5 × IQR/1.349 (1.5 × the
    standard deviation when the IQR is 0); linear interpolation between order statistics, as NumPy's quantile."""
    m = hi - lo
    c = 0.5 * (col[lo + (m - 1) // 2, j] + col[lo + m // 2, j])
    pos = lo + 0.25 * (m - 1)
    i0 = int(np.floor(pos))
    q1 = col[i0, j] + (pos - i0) * (col[min(i0 + 1, hi - 1), j] - col[i0, j])
    pos = lo + 0.75 * (m - 1)
    i0 = int(np.floor(pos))
    q3 = col[i0, j] + (pos - i0) * (col[min(i0 + 1, hi - 1), j] - col[i0, j])
    sigma = (q3 - q1) / 1.349
    if sigma <= 0:
        mean = (p1[hi, j] - p1[lo, j]) / m
        var = 0.0
        for i in range(lo, hi):
            var += (col[i, j] - mean) ** 2
        sigma = np.sqrt(var / m)
    return c, WINSOR_CLAMP * sigma


@_inline
def _winsor_step(col: np.ndarray, p1: np.ndarray, p2: np.ndarray, j: int, lo: int, hi: int, inv_m: float, a: int,
                 b: int, c: float, h: float, h_before: float) -> tuple[int, int, float, float, bool]:
    """One Winsorization iteration of ``col[lo:hi, j]`` (formulas in the module docstring): returns the new clamp
    bounds ``(a, b)`` (``col[a:b]`` lie within ``c ± h``), the new ``(c, h)`` and whether it has converged
    (``h_before`` is the half-width of the iteration before this one)."""
    t0 = c - h
    t1 = c + h
    while a > lo and col[a - 1, j] >= t0:
        a -= 1
    while a < hi and col[a, j] < t0:
        a += 1
    if b < a:
        b = a
    while b < hi and col[b, j] <= t1:
        b += 1
    while b > a and col[b - 1, j] > t1:
        b -= 1
    alpha = ((a - lo) + (hi - b)) * inv_m
    beta = ((hi - b) - (a - lo)) * inv_m
    mean1 = (p1[b, j] - p1[a, j]) * inv_m
    mean2 = (p2[b, j] - p2[a, j]) * inv_m
    mean = alpha * c + (beta * h + mean1)
    k_mean = (_K2 * alpha) * c + ((_K2 * beta) * h + _K2 * mean1)
    k_mean2 = (_K2 * alpha) * (c * c + h * h) + ((2.0 * _K2 * beta) * (c * h) + _K2 * mean2)
    new_h = np.sqrt(max(k_mean2 - mean * k_mean, 0.0))
    tol = WINSOR_TOLERANCE * h
    done = (abs(new_h - h) < tol) | (abs(new_h - h_before) < tol) | _collapsed(c, new_h)
    return a, b, mean, new_h, done


@_inline
def _collapsed(c: float, h: float) -> bool:
    """Whether the half-width ``h`` around ``c`` is at or below the collapse floor of :mod:`calib.rejection`."""
    return h <= _H_COLLAPSE * max(abs(c), 1.0)


@_inline
def _clip(col: np.ndarray, j: int, lo: int, hi: int, c: float, h: float, k_low: float,
          k_high: float) -> tuple[int, int]:
    """The kept range after rejecting ``v < c − k_low·σ`` and ``v > c + k_high·σ`` (``σ = h/1.5``); a collapsed
    ``h`` (:func:`_collapsed`) keeps the values equal to the median."""
    sigma = h / WINSOR_CLAMP
    if _collapsed(c, h):
        m = hi - lo
        c = 0.5 * (col[lo + (m - 1) // 2, j] + col[lo + m // 2, j])
        sigma = 0.0
    t_low = c - k_low * sigma
    t_high = c + k_high * sigma
    nlo, nhi = lo, hi
    while nlo < hi and col[nlo, j] < t_low:
        nlo += 1
    while nhi > nlo and col[nhi - 1, j] > t_high:
        nhi -= 1
    return nlo, nhi


@_inline
def _combined(col: np.ndarray, p1: np.ndarray, j: int, lo: int, hi: int, median: bool) -> float:
    m = hi - lo
    if median:
        return float(0.5 * (col[lo + (m - 1) // 2, j] + col[lo + m // 2, j]))
    return float((p1[hi, j] - p1[lo, j]) / m)


@_inline
def _winsor_iterate(col: np.ndarray, p1: np.ndarray, p2: np.ndarray, live: np.ndarray, pixels: np.ndarray,
                    count: int, n: int, lanes: np.ndarray, iterations: int) -> None:
    """For each pixel ``j = pixels[i]`` (``i < count``) where ``live[i]``: up to ``iterations`` Winsorization steps
    (:func:`_winsor_step`) of all ``n`` values ``col[:, j]`` from the centre ``lanes[_C, j]`` and half-width
    ``lanes[_H, j]`` (``lanes[_H_BEFORE, j]``: the half-width one step earlier), which it updates. One call per
    block, not per pixel: the arrays an inlined call takes are reference-counted on entry and exit (two atomic
    operations each), which per pixel cost as much as a few steps."""
    inv_m = 1.0 / n
    for i in range(count):
        if not live[i]:
            continue
        j = pixels[i]
        cj, hj, before = lanes[_C, j], lanes[_H, j], lanes[_H_BEFORE, j]
        a, b = 0, n
        for _inner in range(iterations):
            a, b, cj, h_new, done = _winsor_step(col, p1, p2, j, 0, n, inv_m, a, b, cj, hj, before)
            before, hj = hj, h_new
            if done:
                break
        lanes[_C, j], lanes[_H, j] = cj, hj


@_inline
def _pairs(col: np.ndarray, p1: np.ndarray, p2: np.ndarray, pix: np.ndarray, count: int, kept_lo: np.ndarray,
           kept_hi: np.ndarray, k_low: float, k_high: float, max_outer: int, max_inner: int) -> None:
    """The outer loop, one pixel at a time, for the pixels ``j = pix[i]`` (``i < count``) from their kept rows
    ``kept_lo[j]:kept_hi[j]``, which it narrows: Winsorize (:func:`_winsor_step`), clip (:func:`_clip`), repeat
    while something is rejected and at least 3 values are kept. Pixels ``pix[i]`` and ``pix[i + ⌈count/2⌉]`` are
    iterated side by side, so the CPU overlaps their two chains of dependent operations."""
    half = (count + 1) // 2
    for i in range(half):
        j0 = pix[i]
        j1 = pix[i + half] if i + half < count else j0
        lo0, hi0, lo1, hi1 = kept_lo[j0], kept_hi[j0], kept_lo[j1], kept_hi[j1]
        on0 = True  # the pixel's outer loop goes on
        on1 = i + half < count
        for _outer in range(max_outer):
            on0 = on0 and hi0 - lo0 >= 3
            on1 = on1 and hi1 - lo1 >= 3
            if not (on0 or on1):
                break
            c0 = h0 = c1 = h1 = 0.0
            if on0:
                c0, h0 = _winsor_start(col, p1, j0, lo0, hi0)
                on0 = h0 > 0
            if on1:
                c1, h1 = _winsor_start(col, p1, j1, lo1, hi1)
                on1 = h1 > 0
            live0, live1 = on0, on1
            inv_m0 = 1.0 / (hi0 - lo0)
            inv_m1 = 1.0 / (hi1 - lo1)
            a0, b0, a1, b1 = lo0, hi0, lo1, hi1
            before0 = before1 = np.inf
            for _inner in range(max_inner):
                if not (live0 or live1):
                    break
                if live0:
                    a0, b0, c0, h_new, done = _winsor_step(col, p1, p2, j0, lo0, hi0, inv_m0, a0, b0, c0, h0, before0)
                    before0, h0, live0 = h0, h_new, not done
                if live1:
                    a1, b1, c1, h_new, done = _winsor_step(col, p1, p2, j1, lo1, hi1, inv_m1, a1, b1, c1, h1, before1)
                    before1, h1, live1 = h1, h_new, not done
            if on0:
                nlo, nhi = _clip(col, j0, lo0, hi0, c0, h0, k_low, k_high)
                on0 = nlo < nhi and (nlo != lo0 or nhi != hi0)
                if on0:
                    lo0, hi0 = nlo, nhi
            if on1:
                nlo, nhi = _clip(col, j1, lo1, hi1, c1, h1, k_low, k_high)
                on1 = nlo < nhi and (nlo != lo1 or nhi != hi1)
                if on1:
                    lo1, hi1 = nlo, nhi
        kept_lo[j0], kept_hi[j0] = lo0, hi0
        if i + half < count:
            kept_lo[j1], kept_hi[j1] = lo1, hi1


@_inline
def _vector_block(col: np.ndarray, p1: np.ndarray, p2: np.ndarray, dev: np.ndarray, w: int, kept_lo: np.ndarray,
                  kept_hi: np.ndarray, pix: np.ndarray, lanes: np.ndarray, state: np.ndarray, sums: np.ndarray,
                  live: np.ndarray, k_low: float, k_high: float, max_outer: int, max_inner: int) -> None:
    """The first outer pass of every pixel of a block at once, the pixels in SIMD lanes; the rest one by one.

    In the first pass every pixel keeps all ``n`` values, so its median and quartiles sit at the same rows for
    every pixel and each Winsorization step is a clamped sum over the same ``n`` rows (``O(n)`` per pixel but SIMD
    across the block, instead of :func:`_winsor_step`'s ``O(1)`` chain of dependent operations per pixel). All
    pixels step together until at most :data:`_NARROW` are still moving; those are moved to the first lanes (their
    deviations, state and pixel index ``pix``) and step on there, a quarter of the work per step, until at most
    :data:`_STRAGGLERS` are; those finish one by one from where they are (:func:`_winsor_iterate`). Then only the
    two ends of each sorted column are compared with its clip thresholds; the few pixels that reject something
    count their rejections and go on one by one (:func:`_pairs`).
    ``lanes`` (6, BLOCK) float64 holds per pixel: centre, half-width, the half-width one step earlier, the two
    clip thresholds, the median the steps work from (``origin``); ``state`` (4, BLOCK) float32 the centre,
    half-width, the half-width a step earlier and the collapse floor during the SIMD steps; ``sums`` (4, BLOCK)
    float32 the two clamp bounds and the two clamped sums; ``state``, ``dev`` and ``live`` are per lane, which is
    the pixel's column until the moving pixels are moved. The steps work in float32, on deviations from the
    median, ``dev`` (exact for values on a 0.5 grid below 2²³, as ADU are; the reference also works in float32
    deviations), 8 pixels per 256-bit SIMD operation (16 per 512-bit one in the prebuilt kernels, :mod:`calib.aot`)."""
    n = col.shape[0]
    im0, im1 = (n - 1) // 2, n // 2
    pos = 0.25 * (n - 1)
    i1 = int(np.floor(pos))
    f1, i1b = pos - i1, min(i1 + 1, n - 1)
    pos = 0.75 * (n - 1)
    i3 = int(np.floor(pos))
    f3, i3b = pos - i3, min(i3 + 1, n - 1)
    inv_n = np.float32(1.0 / n)
    n_live = 0
    for j in range(w):  # the start of :func:`_winsor_start`, at the same rows for every pixel
        lanes[_C, j] = 0.5 * (col[im0, j] + col[im1, j])
        q1 = col[i1, j] + f1 * (col[i1b, j] - col[i1, j])
        q3 = col[i3, j] + f3 * (col[i3b, j] - col[i3, j])
        lanes[_H, j] = WINSOR_CLAMP * ((q3 - q1) / 1.349)
        lanes[_H_BEFORE, j] = np.inf
        live[j] = lanes[_H, j] > 0
        n_live += live[j]
    if n_live < w:  # IQR 0: the standard deviation
        for j in range(w):
            if not live[j]:
                lanes[_C, j], lanes[_H, j] = _winsor_start(col, p1, j, 0, n)
                live[j] = lanes[_H, j] > 0
                n_live += live[j]
    for j in range(w):  # the steps work in float32 on deviations from the median (small numbers: little rounding)
        lanes[_ORIGIN, j] = lanes[_C, j]
        state[_C, j] = 0.0
        state[_H, j] = lanes[_H, j]
        state[_H_BEFORE, j] = np.inf
        state[_FLOOR, j] = _H_COLLAPSE * max(abs(lanes[_C, j]), 1.0)
    for k in range(n):
        for j in range(w):
            dev[k, j] = np.float32(col[k, j] - lanes[_ORIGIN, j])
    # The SIMD steps. Written out here, not in helper functions: every array an inlined call takes is
    # reference-counted on entry and exit, an atomic operation each, and per step these cost as much as the sums.
    k2 = np.float32(_K2)
    tolerance = np.float32(WINSOR_TOLERANCE)
    zero = np.float32(0.0)
    steps = 0
    width = np.int64(w)  # the lanes the steps run over: every pixel's, then only those of the pixels still moving
    moved = 0  # how many pixels were moved to the first lanes, pix[:moved] their columns
    while steps < max_inner and n_live > _STRAGGLERS:
        if width > _NARROW and n_live <= _NARROW:
            for j in range(w):  # every pixel's state as it is now; then the moving ones go to the first lanes
                lanes[_C, j] = np.float64(state[_C, j]) + lanes[_ORIGIN, j]
                lanes[_H, j] = state[_H, j]
                lanes[_H_BEFORE, j] = state[_H_BEFORE, j]
            for j in range(w):  # lane moved ≤ j: a lane is overwritten only once its own pixel was saved or moved
                if live[j]:
                    pix[moved] = j
                    for k in range(n):
                        dev[k, moved] = dev[k, j]
                    state[_C, moved] = state[_C, j]
                    state[_H, moved] = state[_H, j]
                    state[_H_BEFORE, moved] = state[_H_BEFORE, j]
                    state[_FLOOR, moved] = state[_FLOOR, j]
                    moved += 1
            for i in range(_NARROW):
                live[i] = i < moved
            width = np.int64(_NARROW)
        steps += 1
        for j in range(width):  # the clamp bounds
            sums[_B_LOW, j] = state[_C, j] - state[_H, j]
            sums[_B_HIGH, j] = state[_C, j] + state[_H, j]
            sums[_S1, j] = 0.0
            sums[_S2, j] = 0.0
        k = 0
        while k + 8 <= n:  # s1 = Σ clamp(dev), s2 = Σ clamp(dev)²: eight rows per pass (then one by one), so
            for j in range(width):  # each partial sum is loaded and stored once per eight values
                lo = sums[_B_LOW, j]
                hi = sums[_B_HIGH, j]
                v0 = min(max(dev[k, j], lo), hi)
                v1 = min(max(dev[k + 1, j], lo), hi)
                v2 = min(max(dev[k + 2, j], lo), hi)
                v3 = min(max(dev[k + 3, j], lo), hi)
                v4 = min(max(dev[k + 4, j], lo), hi)
                v5 = min(max(dev[k + 5, j], lo), hi)
                v6 = min(max(dev[k + 6, j], lo), hi)
                v7 = min(max(dev[k + 7, j], lo), hi)
                sums[_S1, j] += ((v0 + v1) + (v2 + v3)) + ((v4 + v5) + (v6 + v7))
                sums[_S2, j] += (((v0 * v0 + v1 * v1) + (v2 * v2 + v3 * v3))
                                 + ((v4 * v4 + v5 * v5) + (v6 * v6 + v7 * v7)))
            k += 8
        while k < n:
            for j in range(width):
                v = min(max(dev[k, j], sums[_B_LOW, j]), sums[_B_HIGH, j])
                sums[_S1, j] += v
                sums[_S2, j] += v * v
            k += 1
        for j in range(width):  # the new centre and half-width where live; the tests of _winsor_step
            mean = sums[_S1, j] * inv_n
            h_new = np.sqrt(max(k2 * (sums[_S2, j] * inv_n - mean * mean), zero))
            hj = state[_H, j]
            cj = state[_C, j]
            tol = tolerance * hj
            done = (abs(h_new - hj) < tol) | (abs(h_new - state[_H_BEFORE, j]) < tol) | (h_new <= state[_FLOOR, j])
            moving = live[j]
            state[_H_BEFORE, j] = hj if moving else state[_H_BEFORE, j]
            state[_C, j] = mean if moving else cj
            state[_H, j] = h_new if moving else hj
            live[j] = moving and not done
        n_live = 0
        for j in range(width):  # counted apart: a 64-bit count in the loop above would halve its SIMD width
            n_live += live[j]
    if moved == 0:  # never narrowed: lane j is pixel j
        for j in range(w):
            pix[j] = j
        moved = w
    for i in range(moved):
        j = pix[i]
        lanes[_C, j] = np.float64(state[_C, i]) + lanes[_ORIGIN, j]
        lanes[_H, j] = state[_H, i]
        lanes[_H_BEFORE, j] = state[_H_BEFORE, i]
    if n_live > 0:
        _winsor_iterate(col, p1, p2, live, pix, moved, n, lanes, max_inner - steps)
    for j in range(w):  # the thresholds of :func:`_clip`
        centre, sigma = lanes[_C, j], lanes[_H, j] / WINSOR_CLAMP
        if _collapsed(centre, lanes[_H, j]):
            centre, sigma = 0.5 * (col[im0, j] + col[im1, j]), 0.0
        lanes[_T_LOW, j] = centre - k_low * sigma
        lanes[_T_HIGH, j] = centre + k_high * sigma
    for j in range(w):  # whether any value lies beyond a threshold: the two ends of the sorted column (SIMD)
        live[j] = (col[0, j] < lanes[_T_LOW, j]) | (col[n - 1, j] > lanes[_T_HIGH, j])
    count = 0
    for j in range(w):
        kept_lo[j], kept_hi[j] = 0, n
        if not live[j]:
            continue
        nlo = 0
        while nlo < n and col[nlo, j] < lanes[_T_LOW, j]:
            nlo += 1
        nhi = n
        while nhi > nlo and col[nhi - 1, j] > lanes[_T_HIGH, j]:
            nhi -= 1
        if nlo < nhi and (nlo != 0 or nhi != n):
            kept_lo[j], kept_hi[j] = nlo, nhi
            pix[count] = j
            count += 1
    _pairs(col, p1, p2, pix, count, kept_lo, kept_hi, k_low, k_high, max_outer - 1, max_inner)


@_kernel
def winsorized_kernel(stack: np.ndarray, pair_a: np.ndarray, pair_b: np.ndarray, out: np.ndarray, low: np.ndarray,
                      high: np.ndarray, k_low: float, k_high: float, median: bool, max_outer: int,
                      max_inner: int) -> None:  # pragma: no cover - compiled by numba
    """Winsorized clipping + combination of every column of ``stack`` (n, P) float32 (finite values): ``out[p]``
    the mean (or median) of the kept values, ``low[p]``/``high[p]`` the numbers rejected at each end. Sorts each
    column first (see :func:`_load_block`). Up to :data:`VECTOR_MAX_N` frames the pixels of a block go through
    their first pass together (:func:`_vector_block`); above, one by one in pairs (:func:`_pairs`)."""
    n, ncols = stack.shape
    buf = np.empty((n, BLOCK), dtype=np.float32)
    col = np.empty((n, BLOCK), dtype=np.float64)
    p1 = np.empty((n + 1, BLOCK), dtype=np.float64)
    p2 = np.empty((n + 1, BLOCK), dtype=np.float64)
    kept_lo = np.empty(BLOCK, dtype=np.int64)
    kept_hi = np.empty(BLOCK, dtype=np.int64)
    pix = np.empty(BLOCK, dtype=np.int64)
    every = np.arange(BLOCK)
    lanes = np.empty((6, BLOCK), dtype=np.float64)
    state = np.empty((4, BLOCK), dtype=np.float32)
    sums = np.empty((4, BLOCK), dtype=np.float32)
    dev = np.empty((n, BLOCK), dtype=np.float32)
    live = np.empty(BLOCK, dtype=np.bool_)
    for b0 in range(0, ncols, BLOCK):
        w = min(BLOCK, ncols - b0)
        _load_block(stack, b0, w, pair_a, pair_b, buf)
        _prefix_sums(buf, w, col, p1, p2)
        if 3 <= n <= VECTOR_MAX_N:
            _vector_block(col, p1, p2, dev, w, kept_lo, kept_hi, pix, lanes, state, sums, live, k_low, k_high,
                          max_outer, max_inner)
        else:
            for j in range(w):
                kept_lo[j], kept_hi[j] = 0, n
            _pairs(col, p1, p2, every, w, kept_lo, kept_hi, k_low, k_high, max_outer, max_inner)
        for j in range(w):
            lo, hi = kept_lo[j], kept_hi[j]
            out[b0 + j] = _combined(col, p1, j, lo, hi, median)
            low[b0 + j] = lo
            high[b0 + j] = n - hi


@_kernel
def block_sort(stack: np.ndarray, pair_a: np.ndarray, pair_b: np.ndarray) -> None:  # pragma: no cover - numba
    """Sort ``stack`` (n, P) along axis 0 in place by the comparators ``(pair_a[k], pair_b[k])``, 64 columns at a
    time (:func:`_load_block`, then copied back)."""
    n, ncols = stack.shape
    buf = np.empty((n, BLOCK), dtype=stack.dtype)
    for b0 in range(0, ncols, BLOCK):
        w = min(BLOCK, ncols - b0)
        _load_block(stack, b0, w, pair_a, pair_b, buf)
        for i in range(n):
            for j in range(w):
                stack[i, b0 + j] = buf[i, j]


@_kernel
def sigma_kernel(stack: np.ndarray, out: np.ndarray, low: np.ndarray, high: np.ndarray, k_low: float,
                 k_high: float, median: bool, limit: int) -> None:  # pragma: no cover - compiled by numba
    """Per pixel: iterate median/std clipping on the sorted column until nothing changes, < 3 values or ``limit``."""
    n, ncols = stack.shape
    v = np.empty(n, dtype=np.float32)
    for p in range(ncols):
        for i in range(n):
            v[i] = stack[i, p]
        lo, hi = 0, n
        for _it in range(limit):
            m = hi - lo
            if m < 3:
                break
            c = np.float64(np.float32(0.5) * (v[lo + (m - 1) // 2] + v[lo + m // 2]))
            total = 0.0
            for i in range(lo, hi):
                total += v[i]
            mean32 = np.float32(total / m)
            var = 0.0
            for i in range(lo, hi):
                d = np.float64(v[i] - mean32)
                var += d * d
            sd = np.sqrt(var / m)
            if not sd > 0:
                break
            t_low = np.float32(c - k_low * sd)
            t_high = np.float32(c + k_high * sd)
            nlo, nhi = lo, hi
            while nlo < hi and v[nlo] < t_low:
                nlo += 1
            while nhi > nlo and v[nhi - 1] > t_high:
                nhi -= 1
            if nhi <= nlo or (nlo == lo and nhi == hi):
                break
            lo, hi = nlo, nhi
        m = hi - lo
        if median:
            out[p] = np.float32(0.5) * (v[lo + (m - 1) // 2] + v[lo + m // 2])
        else:
            total = 0.0
            for i in range(lo, hi):
                total += v[i]
            out[p] = total / m
        low[p] = lo
        high[p] = n - hi


@_kernel
def single_pass_kernel(stack: np.ndarray, pair_a: np.ndarray, pair_b: np.ndarray, out: np.ndarray, low: np.ndarray,
                       high: np.ndarray, method: int, p_low: float, p_high: float,
                       median: bool) -> None:  # pragma: no cover - compiled by numba
    """The one-pass rejections of :data:`calib.rejection.SINGLE_PASS_METHODS` (``method`` is the index there) +
    combination, per pixel on its sorted values (each
    block of 64 columns sorted in the L1 cache by :func:`_load_block`), with the arithmetic of
    :func:`calib.rejection.reject_sorted`:

    * ``none`` keeps every value;
    * ``minmax`` drops the ``p_low`` lowest and ``p_high`` highest values when at least one value is left;
    * ``percentile``: ``c`` = the float32 median; where ``c > 0``, rejects ``v < float32(c·(1 − p_low))`` and
      ``v > float32(c·(1 + p_high))``, unless that would reject every value.

    ``out[p]`` is the float64 mean (or the float32 median) of the kept values, ``low[p]``/``high[p]`` the numbers
    rejected at each end."""
    n, ncols = stack.shape
    buf = np.empty((n, BLOCK), dtype=np.float32)
    half = np.float32(0.5)
    for b0 in range(0, ncols, BLOCK):
        w = min(BLOCK, ncols - b0)
        _load_block(stack, b0, w, pair_a, pair_b, buf)
        for j in range(w):
            lo, hi = 0, n
            if method == _MINMAX:
                n_low, n_high = int(p_low), int(p_high)
                if n - n_low - n_high >= 1:
                    lo, hi = n_low, n - n_high
            elif method == _PERCENTILE:
                c = np.float64(half * (buf[(n - 1) // 2, j] + buf[n // 2, j]))
                if c > 0:
                    t_low = np.float32(c * (1.0 - p_low))
                    t_high = np.float32(c * (1.0 + p_high))
                    nlo, nhi = 0, n
                    while nlo < n and buf[nlo, j] < t_low:
                        nlo += 1
                    while nhi > 0 and not buf[nhi - 1, j] <= t_high:
                        nhi -= 1
                    if nhi > nlo:
                        lo, hi = nlo, nhi
            m = hi - lo
            if median:
                out[b0 + j] = half * (buf[lo + (m - 1) // 2, j] + buf[lo + m // 2, j])
            else:
                total = 0.0
                for i in range(lo, hi):
                    total += buf[i, j]
                out[b0 + j] = total / m
            low[b0 + j] = lo
            high[b0 + j] = n - hi
