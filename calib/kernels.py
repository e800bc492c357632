"""Compiled per-pixel kernels (numba) for :mod:`calib.rejection`.

Imported only when numba is available and ``DARKD_NO_NUMBA`` is not set (:func:`calib.rejection.numba_available`);
the NumPy code in :mod:`calib.rejection` is the reference, and these kernels give the same rejections except where
float rounding puts a value exactly at a threshold (the tests allow 1 pixel in 10⁴). Machine code is cached on disk
(``cache=True``: in ``__pycache__`` next to this file, or the user's cache directory / ``NUMBA_CACHE_DIR``).

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
* reject ``v < c − k_low·σ`` and ``v > c + k_high·σ``; repeat while something is rejected and ``m ≥ 3``.

The iteration is a chain of dependent floating-point operations (about 40 cycles each, ~8 iterations per pixel), so
two pixels are iterated side by side: the CPU overlaps their independent chains. Each block of 64 pixels is copied
into a small buffer that stays in the L1 cache and sorted there by a comparator network (SIMD min/max across the 64
pixels), and its prefix sums are taken across the 64 pixels at once.
"""

from __future__ import annotations

import numba
import numpy as np

from calib.rejection import SINGLE_PASS_METHODS, WINSOR_CLAMP, WINSOR_GAIN, WINSOR_TOLERANCE

BLOCK = 64  # pixels sorted together: n × 64 × 4 B stays in L1 for n ≤ 128
_K2 = (WINSOR_CLAMP * WINSOR_GAIN) ** 2
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
    for i in range(n):
        for j in range(w):
            buf[i, j] = stack[i, b0 + j]
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
    done = (abs(new_h - h) < tol) | (abs(new_h - h_before) < tol) | (new_h <= 0)
    return a, b, mean, new_h, done


@_inline
def _clip(col: np.ndarray, j: int, lo: int, hi: int, c: float, h: float, k_low: float,
          k_high: float) -> tuple[int, int]:
    """The kept range after rejecting ``v < c − k_low·σ`` and ``v > c + k_high·σ`` (``σ = h/1.5``)."""
    sigma = h / WINSOR_CLAMP
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


@_kernel
def winsorized_kernel(stack: np.ndarray, pair_a: np.ndarray, pair_b: np.ndarray, out: np.ndarray, low: np.ndarray,
                      high: np.ndarray, k_low: float, k_high: float, median: bool, max_outer: int,
                      max_inner: int) -> None:  # pragma: no cover - compiled by numba
    """Winsorized clipping + combination of every column of ``stack`` (n, P) float32 (finite values): ``out[p]``
    the mean (or median) of the kept values, ``low[p]``/``high[p]`` the numbers rejected at each end. Sorts each
    column first (see :func:`_load_block`). Pixels ``j`` and ``j + 32`` of a block are iterated side by side."""
    n, ncols = stack.shape
    half = BLOCK // 2
    buf = np.empty((n, BLOCK), dtype=np.float32)
    col = np.empty((n, BLOCK), dtype=np.float64)
    p1 = np.empty((n + 1, BLOCK), dtype=np.float64)
    p2 = np.empty((n + 1, BLOCK), dtype=np.float64)
    for b0 in range(0, ncols, BLOCK):
        w = min(BLOCK, ncols - b0)
        _load_block(stack, b0, w, pair_a, pair_b, buf)
        _prefix_sums(buf, w, col, p1, p2)
        for j0 in range(min(half, w)):
            j1 = j0 + half
            lo0, hi0, lo1, hi1 = 0, n, 0, n
            on0 = True  # the pixel's outer loop goes on
            on1 = j1 < w
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
                a0, b0_, a1, b1 = lo0, hi0, lo1, hi1
                before0 = before1 = np.inf
                for _inner in range(max_inner):
                    if not (live0 or live1):
                        break
                    if live0:
                        a0, b0_, c0, h_new, done = _winsor_step(col, p1, p2, j0, lo0, hi0, inv_m0, a0, b0_, c0, h0,
                                                                before0)
                        before0, h0, live0 = h0, h_new, not done
                    if live1:
                        a1, b1, c1, h_new, done = _winsor_step(col, p1, p2, j1, lo1, hi1, inv_m1, a1, b1, c1, h1,
                                                               before1)
                        before1, h1, live1 = h1, h_new, not done
                if on0:
                    nlo, nhi = _clip(col, j0, lo0, hi0, c0, h0, k_low, k_high) if h0 > 0 else (lo0, hi0)
                    on0 = nlo < nhi and (nlo != lo0 or nhi != hi0)
                    if on0:
                        lo0, hi0 = nlo, nhi
                if on1:
                    nlo, nhi = _clip(col, j1, lo1, hi1, c1, h1, k_low, k_high) if h1 > 0 else (lo1, hi1)
                    on1 = nlo < nhi and (nlo != lo1 or nhi != hi1)
                    if on1:
                        lo1, hi1 = nlo, nhi
            out[b0 + j0] = _combined(col, p1, j0, lo0, hi0, median)
            low[b0 + j0] = lo0
            high[b0 + j0] = n - hi0
            if j1 < w:
                out[b0 + j1] = _combined(col, p1, j1, lo1, hi1, median)
                low[b0 + j1] = lo1
                high[b0 + j1] = n - hi1


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
