"""Per-pixel pixel rejection for image integration, vectorised over a whole band of the stack.

A *stack band* has shape ``(n_frames, rows, cols)`` (any unit, normally ADU). Every algorithm works per pixel on the
``n`` values of that pixel and only ever rejects values from the *ends* of the sorted values, so the internal
representation is the stack sorted along the frame axis plus two integer maps ``lo``/``hi``: the values kept for a
pixel are ``sorted[lo:hi]``. NaN values (missing data) sort to the end and start out excluded. All loops run over
iterations or frames, never over pixels.

Algorithms (``m`` = number of values still kept for a pixel, ``c`` = centre, ``σ`` = scale):

* ``none`` — keep everything.
* ``minmax`` — reject the ``n_low`` lowest and ``n_high`` highest values (never leaving fewer than one).
* ``percentile`` — single pass: with ``c`` = median, reject ``x`` when ``(c − x)/c > pct_low`` or
  ``(x − c)/c > pct_high`` (PixInsight percentile clipping; for ``c ≤ 0`` nothing is rejected).
* ``sigma`` — iterate: ``c`` = median, ``σ`` = standard deviation (ddof=0) of the kept values; reject
  ``x < c − sigma_low·σ`` and ``x > c + sigma_high·σ``; repeat until nothing more is rejected, fewer than 3 values
  remain or ``max_iterations`` passes were made (this is astropy/ccdproc's sigma clipping with median/std).
* ``winsorized`` — PixInsight's Winsorized sigma clipping. Outer loop: start from ``c`` = median and the robust
  ``σ`` = IQR/1.349 (the standard deviation when the IQR is 0). Inner loop: clamp a copy of the kept values to
  ``[c − 1.5σ, c + 1.5σ]``, set ``σ ← 1.134·std(clamped)`` and ``c ← mean(clamped)`` until ``σ`` changes by less than
  ``5e-4`` relative (or returns to within ``5e-4`` of its value two iterations before: on quantised ADU values the
  clamped σ can alternate between two values forever; at most 100 iterations). Then reject ``x < c − sigma_low·σ``
  and ``x > c + sigma_high·σ``. Repeat the outer loop until nothing more is rejected or fewer than 3 values remain.
  When the Winsorized ``σ`` collapses (``σ ≤ 1e-6·max(|c|, 1)``: more than about two thirds of the kept values are
  equal, and each step shrinks ``σ`` towards 0), the inner loop stops there and the values different from the median
  are rejected (``c`` = median, ``σ`` = 0): a lone cosmic ray on a pixel whose other values agree is rejected
  whatever the rounding of the last steps.
* ``linear-fit`` — fit a least-squares line ``a + b·i`` to the kept sorted values ``y_i`` (``i`` = rank);
  ``σ`` = mean absolute residual; the lowest value is rejected when its residual is below ``−sigma_low·σ``, the highest
  when above ``+sigma_high·σ`` (one value per end per iteration); iterate until no change or fewer than 3 values.
* ``esd`` — generalized extreme Studentized deviate test (Rosner 1983) with significance ``esd_alpha`` for up to
  ``esd_max_fraction·m`` outliers: repeatedly remove the value farthest from the mean,
  ``R_i = max|x − mean|/std`` (ddof=1), critical ``λ_i = (m−i)·t / sqrt((m−i−1+t²)(m−i+1))`` with ``t`` the
  Student-t quantile at ``1 − α/(2(m−i+1))`` for ``m−i−1`` degrees of freedom; the number of outliers is the largest
  ``i`` with ``R_i > λ_i``.
"""

from __future__ import annotations

import contextlib
import functools
import math
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

METHODS = ("none", "minmax", "percentile", "sigma", "winsorized", "linear-fit", "esd")
SINGLE_PASS_METHODS = ("none", "minmax", "percentile")  # one pass, no iteration (the compiled single-pass kernel)
WINSOR_CLAMP = 1.5
WINSOR_GAIN = 1.134
WINSOR_TOLERANCE = 5e-4
WINSOR_COLLAPSE = 1e-6  # σ ≤ this × max(|c|, 1): collapsed (see the module docstring)
_WINSOR_MAX_INNER = 100
_MAX_OUTER = 100

# One iteration of a clipping method: (sorted band, kept-range starts, kept-range ends) -> new (starts, ends).
Step = Callable[[np.ndarray, np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]
# What the compiled kernels fill in place (see _outputs).
Outputs = tuple[np.ndarray, np.ndarray, np.ndarray]  # combined float32, rejected low int32, rejected high int32


@dataclass(frozen=True)
class RejectionParams:
    """Rejection settings. ``sigma_low``/``sigma_high`` are in units of σ; ``pct_*`` are fractions of the median."""

    method: str = "winsorized"
    sigma_low: float = 4.0
    sigma_high: float = 3.0
    n_low: int = 1
    n_high: int = 1
    pct_low: float = 0.2
    pct_high: float = 0.1
    esd_alpha: float = 0.05
    esd_max_fraction: float = 0.3
    max_iterations: int | None = None

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"unknown rejection {self.method!r}; choose one of {', '.join(METHODS)}")
        if self.sigma_low <= 0 or self.sigma_high <= 0:
            raise ValueError("sigma_low and sigma_high must be > 0")
        if self.n_low < 0 or self.n_high < 0:
            raise ValueError("n_low and n_high must be >= 0")
        if self.max_iterations is not None and self.max_iterations < 1:
            raise ValueError("max_iterations must be >= 1 (or None for 'until convergence')")


@dataclass
class RejectionResult:
    """``mask[k, y, x]`` is True when frame ``k``'s value was rejected; ``low``/``high`` count rejections per pixel."""

    mask: np.ndarray
    low: np.ndarray
    high: np.ndarray


# ---------------------------------------------------------------------------------------------------------------
# helpers on sorted data: s has shape (n, P), lo/hi have shape (P,)


def _rank(n: int) -> np.ndarray:
    return np.arange(n, dtype=np.int32)[:, None]


def _valid(s: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    r = _rank(s.shape[0])
    return (r >= lo) & (r < hi)


@functools.lru_cache(maxsize=8)
def _columns(ncols: int) -> np.ndarray:
    cols = np.arange(ncols, dtype=np.intp)
    cols.flags.writeable = False
    return cols


def _at(s: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """``s[idx[p], p]`` for every column ``p`` (indices clipped into range); a row view when ``idx`` is constant."""
    n, ncols = s.shape
    row: np.ndarray
    if ncols == 0:
        row = s[0] if n else np.empty(0, dtype=s.dtype)
        return row
    idx = np.clip(idx, 0, n - 1)
    first = int(idx[0])
    if (idx == first).all():
        row = s[first]
        return row
    if s.flags.c_contiguous:
        row = np.take(s.reshape(-1), idx.astype(np.intp) * ncols + _columns(ncols))
        return row
    row = np.take_along_axis(s, idx[None, :].astype(np.intp), axis=0)[0]
    return row


def _quantile(s: np.ndarray, lo: np.ndarray, hi: np.ndarray, q: float) -> np.ndarray:
    """Linear-interpolated quantile ``q`` of the kept values (numpy's default 'linear' definition)."""
    pos = lo + q * np.maximum(hi - lo - 1, 0)
    i0 = np.floor(pos).astype(np.int64)
    frac = (pos - i0).astype(np.float32)
    v0 = _at(s, i0)
    v1 = _at(s, np.minimum(i0 + 1, np.maximum(hi - 1, 0)))
    value: np.ndarray = v0 + frac * (v1 - v0)
    return value


def _median(s: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    m = hi - lo
    a = _at(s, lo + (m - 1) // 2)
    b = _at(s, lo + m // 2)
    median: np.ndarray = 0.5 * (a + b)
    return median


def _mean_std(s: np.ndarray, lo: np.ndarray, hi: np.ndarray, ddof: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Mean and standard deviation of the kept values (two-pass, float64 accumulation of deviations)."""
    valid = _valid(s, lo, hi)
    m = np.maximum(hi - lo, 1)
    full = bool(valid.all())
    total = s.sum(axis=0, dtype=np.float64) if full else np.where(valid, s, 0).sum(axis=0, dtype=np.float64)
    mean = total / m
    dev = s - mean.astype(np.float32)
    if not full:
        dev = np.where(valid, dev, 0)
    var = np.einsum("ij,ij->j", dev, dev, dtype=np.float64) / np.maximum(m - ddof, 1)
    return mean, np.sqrt(var)


def _apply_thresholds(s: np.ndarray, lo: np.ndarray, hi: np.ndarray, t_low: np.ndarray,
                      t_high: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Shrink ``[lo, hi)`` to the values inside ``[t_low, t_high]``; never leave a pixel with no value.

    The values are sorted, so counting stops at the first row (from the bottom, resp. the top) where no pixel is
    beyond its threshold; NaNs (sorted last) count as above.
    """
    n = s.shape[0]
    t_lo32, t_hi32 = t_low.astype(s.dtype), t_high.astype(s.dtype)
    below = np.zeros(s.shape[1], dtype=np.int32)
    for r in range(n):
        hit = s[r] < t_lo32
        if not hit.any():
            break
        below += hit
    above = np.zeros(s.shape[1], dtype=np.int32)
    for r in range(n - 1, -1, -1):
        hit = ~(s[r] <= t_hi32)
        if not hit.any():
            break
        above += hit
    new_lo = np.maximum(lo, below)
    new_hi = np.minimum(hi, n - above)
    empty = new_hi <= new_lo
    if empty.any():
        new_lo = np.where(empty, lo, new_lo)
        new_hi = np.where(empty, hi, new_hi)
    return new_lo.astype(lo.dtype), new_hi.astype(hi.dtype)


@functools.lru_cache(maxsize=32)
def batcher_network(n: int) -> tuple[tuple[int, int], ...]:
    """Comparators ``(a, b)`` (a < b) of Batcher's odd-even merge sort for ``n`` values (padded to a power of two,
    comparators touching the padding dropped, which is valid because padding would be +inf)."""
    p2 = 1
    while p2 < n:
        p2 *= 2
    pairs = []
    p = 1
    while p < p2:
        k = p
        while k >= 1:
            for j in range(k % p, p2 - k, 2 * k):
                for i in range(min(k, p2 - j - k)):
                    if (i + j) // (2 * p) == (i + j + k) // (2 * p) and i + j + k < n:
                        pairs.append((i + j, i + j + k))
            k //= 2
        p *= 2
    return tuple(pairs)


SORT_CHUNK = 32768
_NETWORK_MAX_N = 128


def sort_frames_inplace(flat: np.ndarray) -> None:
    """Sort ``flat`` (n, P) float32 along the frame axis in place. No NaN allowed (use :func:`sort_stack` then).

    With numba (and ``DARKD_NO_NUMBA`` unset), up to 256 frames, the same Batcher network runs compiled on blocks of
    64 columns held in the L1 cache (:func:`_block_sort`). Otherwise, up to 128 frames, the network of
    ``np.minimum``/``np.maximum`` runs on cache-sized column chunks (about 4x faster than ``np.sort`` along a strided
    axis); larger stacks use ``np.sort``. Every path gives the same sorted values.
    """
    n, ncols = flat.shape
    if 2 <= n <= _KERNEL_NETWORK_MAX_N and flat.flags.c_contiguous and numba_available():
        pair_a, pair_b = _kernel_network(n)
        _compiled().block_sort(flat, pair_a, pair_b)
        return
    if n > _NETWORK_MAX_N or n < 2:
        flat.sort(axis=0)
        return
    pairs = batcher_network(n)
    tmp = np.empty(min(SORT_CHUNK, ncols), dtype=flat.dtype)
    for j0 in range(0, ncols, SORT_CHUNK):
        chunk = flat[:, j0:j0 + SORT_CHUNK]
        t = tmp[:chunk.shape[1]]
        for a, b in pairs:
            np.minimum(chunk[a], chunk[b], out=t)
            np.maximum(chunk[a], chunk[b], out=chunk[b])
            chunk[a] = t


def sort_stack(stack: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sort a stack ``(n, ...)`` along the frame axis into shape ``(n, P)``; return ``(sorted, lo, hi)``.

    NaNs sort last and are excluded (``hi`` = number of finite values).
    """
    n = stack.shape[0]
    s = np.sort(stack.reshape(n, -1), axis=0)
    lo = np.zeros(s.shape[1], dtype=np.int32)
    nan_count = np.count_nonzero(np.isnan(s[-1:]), axis=0)
    if nan_count.any():
        hi = np.count_nonzero(~np.isnan(s), axis=0).astype(np.int32)
    else:
        hi = np.full(s.shape[1], n, dtype=np.int32)
    return s, lo, hi


def _iterate(s: np.ndarray, lo: np.ndarray, hi: np.ndarray, step: Step, max_iterations: int | None) -> None:
    """Apply ``step(sub, lo, hi) -> (lo, hi)`` repeatedly, in place, to the pixels that still change.

    A pixel leaves the loop when a step rejects nothing or fewer than 3 of its values remain.
    """
    act = np.flatnonzero(hi - lo >= 3)
    sub = s if act.size == s.shape[1] else s[:, act]
    limit = _MAX_OUTER if max_iterations is None else min(max_iterations, _MAX_OUTER)
    for _ in range(limit):
        if act.size == 0:
            break
        sl, sh = lo[act], hi[act]
        nl, nh = step(sub, sl, sh)
        lo[act], hi[act] = nl, nh
        keep = ((nl != sl) | (nh != sh)) & (nh - nl >= 3)
        if not keep.all():
            act, sub = act[keep], sub[:, keep]


_COMPACT_BELOW = 0.7  # drop converged pixels from the working copy once fewer than this fraction are still moving
_CHUNK = 32768  # columns per cache-sized chunk (16 frames × 16384 × 4 B = 1 MiB) in the first Winsorization phase
_BULK_ITERATIONS = 8


def _winsor_step(sub: np.ndarray, c: np.ndarray, sg: np.ndarray, prev: np.ndarray, inv_m: np.ndarray,
                 d: np.ndarray, invalid: np.ndarray | None, live: np.ndarray) -> None:
    """One Winsorization iteration, in place: update ``c``/``sg`` (and ``prev``, the σ before) where ``live``, then
    clear ``live`` where σ changed by less than the tolerance — or came back to within the tolerance of the σ two
    iterations ago: on quantised data (ADU steps) the clamped σ can alternate between two values forever."""
    half = sg * np.float32(WINSOR_CLAMP)
    np.subtract(sub, c, out=d)  # clamped deviations from the current centre
    np.maximum(d, -half, out=d)
    np.minimum(d, half, out=d)
    if invalid is not None:
        np.copyto(d, 0.0, where=invalid)  # also clears NaN
    s1 = d.sum(axis=0)
    s1 *= inv_m
    s2 = np.einsum("ij,ij->j", d, d)
    s2 *= inv_m
    s2 -= s1 * s1
    np.maximum(s2, 0, out=s2)
    new_sigma = np.sqrt(s2)
    new_sigma *= np.float32(WINSOR_GAIN)
    tol = np.float32(WINSOR_TOLERANCE) * sg
    moving = np.abs(new_sigma - sg) >= tol
    moving &= np.abs(new_sigma - prev) >= tol
    moving &= new_sigma > _collapse_floor(c)
    s1 += c
    np.copyto(c, s1, where=live)
    np.copyto(prev, sg, where=live)
    np.copyto(sg, new_sigma, where=live)
    live &= moving


def _winsorize(s: np.ndarray, lo: np.ndarray, hi: np.ndarray, centre: np.ndarray,
               sigma: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """PixInsight's inner Winsorization loop; returns the converged ``(centre, σ)`` (float64).

    Works in float32 (the clamped deviations are bounded by ±1.5σ and the tolerance is 5e-4, far above float32
    resolution). Phase 1 runs the first iterations chunk by chunk of columns so the data stay in the CPU cache;
    phase 2 iterates the pixels still moving, dropping converged ones from the working copy when fewer than 70 % of
    it are still moving (preallocated ping-pong buffers).
    """
    centre = centre.astype(np.float64)
    sigma = sigma.astype(np.float64)
    act = np.flatnonzero(sigma > 0)
    if act.size == 0:
        return centre, sigma
    n = s.shape[0]
    sub = s if act.size == s.shape[1] else np.take(s, act, axis=1)
    inv_m = (1.0 / (hi - lo)[act]).astype(np.float32)
    invalid = None if bool(((lo == 0) & (hi == n)).all()) else ~_valid(sub, lo[act], hi[act])
    c = centre[act].astype(np.float32)
    sg = sigma[act].astype(np.float32)
    prev = np.full(act.size, np.inf, dtype=np.float32)
    live = np.ones(act.size, dtype=bool)
    if invalid is None and act.size > 2 * _CHUNK:
        dchunk = np.empty((n, _CHUNK), dtype=np.float32)
        for j0 in range(0, act.size, _CHUNK):
            j1 = min(j0 + _CHUNK, act.size)
            cols = slice(j0, j1)
            for _ in range(_BULK_ITERATIONS):
                _winsor_step(sub[:, cols], c[cols], sg[cols], prev[cols], inv_m[cols], dchunk[:, :j1 - j0], None,
                             live[cols])
                if not live[cols].any():
                    break
        keep = np.flatnonzero(live)
        centre[act], sigma[act] = c, sg
        if keep.size == 0:
            return centre, sigma
        sub, act, inv_m, c, sg = np.take(sub, keep, axis=1), act[keep], inv_m[keep], c[keep], sg[keep]
        prev = prev[keep]
        live = np.ones(keep.size, dtype=bool)
    dbuf = np.empty(n * act.size, dtype=np.float32)
    spare: list[np.ndarray] = []
    for _ in range(_WINSOR_MAX_INNER):
        d = dbuf[:n * act.size].reshape(n, act.size)
        _winsor_step(sub, c, sg, prev, inv_m, d, invalid, live)
        n_live = int(np.count_nonzero(live))
        if n_live == 0:
            break
        if n_live < _COMPACT_BELOW * act.size:
            centre[act], sigma[act] = c, sg
            keep = np.flatnonzero(live)
            if not spare:
                spare = [np.empty(n * n_live, dtype=np.float32) for _ in range(2)]
            out = spare[0][:n * n_live].reshape(n, n_live)
            np.take(sub, keep, axis=1, out=out)
            spare.reverse()
            sub, act, inv_m, c, sg, prev = out, act[keep], inv_m[keep], c[keep], sg[keep], prev[keep]
            live = np.ones(n_live, dtype=bool)
            if invalid is not None:
                invalid = np.take(invalid, keep, axis=1)
    centre[act], sigma[act] = c, sg
    return centre, sigma


def _collapse_floor(centre: np.ndarray) -> np.ndarray:
    """The Winsorized σ at or below which a pixel's σ has collapsed: ``WINSOR_COLLAPSE × max(|c|, 1)``."""
    floor: np.ndarray = WINSOR_COLLAPSE * np.maximum(np.abs(centre), 1.0)
    return floor


def _thresholds(centre: np.ndarray, sigma: np.ndarray, k_low: float, k_high: float) -> tuple[np.ndarray, np.ndarray]:
    ok = sigma > 0
    t_low = np.where(ok, centre - k_low * sigma, -np.inf)
    t_high = np.where(ok, centre + k_high * sigma, np.inf)
    return t_low, t_high


def _robust_sigma(s: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """IQR/1.349 of the kept values, falling back to the standard deviation where the IQR is 0."""
    sigma: np.ndarray = (_quantile(s, lo, hi, 0.75) - _quantile(s, lo, hi, 0.25)).astype(np.float64) / 1.349
    zero = sigma <= 0
    if zero.any():
        idx = np.flatnonzero(zero)
        _, std = _mean_std(s[:, idx], lo[idx], hi[idx])
        sigma[idx] = std
    return sigma


def _winsorized_step(p: RejectionParams) -> Step:
    def step(s: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        median = _median(s, lo, hi).astype(np.float64)
        centre, sigma = _winsorize(s, lo, hi, median, _robust_sigma(s, lo, hi))
        collapsed = sigma <= _collapse_floor(centre)
        centre = np.where(collapsed, median, centre)
        sigma = np.where(collapsed, 0.0, sigma)
        return _apply_thresholds(s, lo, hi, centre - p.sigma_low * sigma, centre + p.sigma_high * sigma)
    return step


def _sigma_step(p: RejectionParams) -> Step:
    def step(s: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        _, std = _mean_std(s, lo, hi, ddof=0)
        return _apply_thresholds(s, lo, hi, *_thresholds(_median(s, lo, hi).astype(np.float64), std,
                                                         p.sigma_low, p.sigma_high))
    return step


def _linear_fit_step(p: RejectionParams) -> Step:
    def step(s: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        valid = _valid(s, lo, hi)
        m = (hi - lo).astype(np.float64)
        x = np.where(valid, (_rank(s.shape[0]) - lo).astype(np.float64), 0.0)
        y = np.where(valid, s.astype(np.float64), 0.0)
        sx, sy = x.sum(axis=0), y.sum(axis=0)
        sxx, sxy = (x * x).sum(axis=0), (x * y).sum(axis=0)
        den = m * sxx - sx * sx
        b = np.divide(m * sxy - sx * sy, den, out=np.zeros_like(den), where=den != 0)
        a = (sy - b * sx) / m
        resid = np.where(valid, y - (a + b * x), 0.0)
        sigma = np.abs(resid).sum(axis=0) / m
        r_low = _at(s, lo).astype(np.float64) - a
        r_high = _at(s, hi - 1).astype(np.float64) - (a + b * (m - 1))
        drop_low = (sigma > 0) & (r_low < -p.sigma_low * sigma)
        drop_high = (sigma > 0) & (r_high > p.sigma_high * sigma)
        return lo + drop_low.astype(lo.dtype), hi - drop_high.astype(hi.dtype)
    return step


def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction for the regularized incomplete beta function (modified Lentz)."""
    tiny = 1e-300
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for k in range(1, 400):
        m2 = 2 * k
        for aa in (k * (b - k) * x / ((qam + m2) * (a + m2)), -(a + k) * (qab + k) * x / ((a + m2) * (qap + m2))):
            d = 1.0 + aa * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + aa / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < 1e-15:
            break
    return h


def _betainc(a: float, b: float, x: float) -> float:
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    ln_front = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(ln_front) * _betacf(a, b, x) / a
    return 1.0 - math.exp(ln_front) * _betacf(b, a, 1.0 - x) / b


def student_t_ppf(p: float, df: float) -> float:
    """Quantile of Student's t distribution for ``0.5 <= p < 1`` (bisection on the incomplete-beta CDF)."""
    if not 0.5 <= p < 1.0 or df <= 0:
        raise ValueError("student_t_ppf needs 0.5 <= p < 1 and df > 0")
    lo_t, hi_t = 0.0, 1.0
    while 1.0 - 0.5 * _betainc(df / 2.0, 0.5, df / (df + hi_t * hi_t)) < p:
        hi_t *= 2.0
    for _ in range(200):
        mid = 0.5 * (lo_t + hi_t)
        if 1.0 - 0.5 * _betainc(df / 2.0, 0.5, df / (df + mid * mid)) < p:
            lo_t = mid
        else:
            hi_t = mid
        if hi_t - lo_t < 1e-12 * max(1.0, hi_t):
            break
    return 0.5 * (lo_t + hi_t)


def esd_critical(m: int, i: int, alpha: float) -> float:
    """Rosner's critical value ``λ_i`` for sample size ``m`` and the ``i``-th removal (1-based)."""
    dof = m - i - 1
    if dof < 1:
        return math.inf
    t = student_t_ppf(1.0 - alpha / (2.0 * (m - i + 1)), dof)
    return (m - i) * t / math.sqrt((dof + t * t) * (m - i + 1))


def _esd(s: np.ndarray, lo: np.ndarray, hi: np.ndarray, p: RejectionParams) -> None:
    m0 = hi - lo
    r_max = np.floor(p.esd_max_fraction * m0).astype(np.int32)
    steps = int(r_max.max(initial=0))
    if steps == 0:
        return
    crit = {int(m): [esd_critical(int(m), i, p.esd_alpha) for i in range(1, steps + 1)] for m in np.unique(m0)}
    cur_lo, cur_hi = lo.copy(), hi.copy()
    n_out = np.zeros_like(lo)
    took_high = np.zeros((steps, s.shape[1]), dtype=bool)
    for i in range(1, steps + 1):
        active = (i <= r_max) & (cur_hi - cur_lo >= 3)
        if not active.any():
            break
        mean, std = _mean_std(s, cur_lo, cur_hi, ddof=1)
        d_low = mean - _at(s, cur_lo)
        d_high = _at(s, cur_hi - 1) - mean
        high = d_high >= d_low
        r_stat = np.divide(np.maximum(d_low, d_high), std, out=np.zeros_like(std), where=std > 0)
        lam = np.zeros_like(std)
        for m, values in crit.items():
            lam[m0 == m] = values[i - 1]
        n_out = np.where(active & (r_stat > lam), i, n_out)
        took_high[i - 1] = high
        cur_lo = np.where(active & ~high, cur_lo + 1, cur_lo)
        cur_hi = np.where(active & high, cur_hi - 1, cur_hi)
    order = np.arange(1, steps + 1)[:, None]
    counted = order <= n_out[None, :]
    n_high = np.count_nonzero(counted & took_high, axis=0)
    lo += (n_out - n_high).astype(lo.dtype)
    hi -= n_high.astype(hi.dtype)


def reject_sorted(s: np.ndarray, lo: np.ndarray, hi: np.ndarray,
                  params: RejectionParams) -> tuple[np.ndarray, np.ndarray]:
    """Run the rejection on sorted values ``s`` (n, P); returns new ``(lo, hi)`` (the inputs are not modified)."""
    lo, hi = lo.copy(), hi.copy()
    method = params.method
    if method == "none":
        pass
    elif method == "minmax":
        ok = (hi - lo) - params.n_low - params.n_high >= 1
        lo += np.where(ok, params.n_low, 0).astype(lo.dtype)
        hi -= np.where(ok, params.n_high, 0).astype(hi.dtype)
    elif method == "percentile":
        c = _median(s, lo, hi).astype(np.float64)
        ok = c > 0
        t_low = np.where(ok, c * (1.0 - params.pct_low), -np.inf)
        t_high = np.where(ok, c * (1.0 + params.pct_high), np.inf)
        lo, hi = _apply_thresholds(s, lo, hi, t_low, t_high)
    elif method == "esd":
        _esd(s, lo, hi, params)
    else:
        step = {"sigma": _sigma_step, "winsorized": _winsorized_step, "linear-fit": _linear_fit_step}[method](params)
        _iterate(s, lo, hi, step, params.max_iterations)
    return lo, hi


def reject(stack: np.ndarray, params: RejectionParams | None = None, **kwargs: Any) -> RejectionResult:
    """Reject outliers in ``stack`` (n_frames, rows, cols); keyword arguments build :class:`RejectionParams`.

    Returns the rejection mask in the stack's own frame order and the per-pixel low/high counts (uint16).
    NaN inputs are neither kept nor counted as rejected.
    """
    params = params or RejectionParams(**kwargs)
    stack = np.asarray(stack, dtype=np.float32)
    if stack.ndim != 3:
        raise ValueError(f"a stack band must be 3-D (n_frames, rows, cols), got shape {stack.shape}")
    n = stack.shape[0]
    flat = stack.reshape(n, -1)
    order = np.argsort(flat, axis=0, kind="stable")
    s = np.take_along_axis(flat, order, axis=0)
    lo0 = np.zeros(s.shape[1], dtype=np.int32)
    hi0 = np.count_nonzero(~np.isnan(s), axis=0).astype(np.int32)
    lo, hi = reject_sorted(s, lo0, hi0, params)
    rank = _rank(n)
    rejected_sorted = ((rank < lo) | (rank >= hi)) & (rank < hi0)
    mask = np.empty_like(rejected_sorted)
    np.put_along_axis(mask, order, rejected_sorted, axis=0)
    shape = stack.shape[1:]
    return RejectionResult(mask.reshape(stack.shape), (lo - lo0).astype(np.uint16).reshape(shape),
                           (hi0 - hi).astype(np.uint16).reshape(shape))


def kept_mean(s: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Mean (float64) of the kept values ``s[lo:hi]`` per column.

    ``Σ_{lo ≤ r < hi} s[r] = Σ_r s[r] − Σ_{r < lo} s[r] − Σ_{r ≥ hi} s[r]``: the values are sorted, so only the rows
    below ``max(lo)`` and from ``min(hi)`` up can hold rejected values, and only those rows are visited again.
    """
    n = s.shape[0]
    total = s.sum(axis=0, dtype=np.float64)
    for r in range(int(lo.max(initial=0))):
        total -= np.where(r < lo, s[r], np.float32(0))
    for r in range(int(hi.min(initial=n)), n):
        total -= np.where(r >= hi, s[r], np.float32(0))
    bad = np.flatnonzero(~np.isfinite(total))  # NaN/inf among the excluded values: sum the kept ones directly
    if bad.size:
        sub = s[:, bad]
        total[bad] = np.where(_valid(sub, lo[bad], hi[bad]), sub, 0).sum(axis=0, dtype=np.float64)
    mean: np.ndarray = total / np.maximum(hi - lo, 1)
    return mean


def kept_median(s: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Median of the kept values ``s[lo:hi]`` per column (mean of the two central values for an even count)."""
    return _median(s, lo, hi)


# ---------------------------------------------------------------------------------------------------------------
# Optional compiled kernel (numba): the same Winsorized algorithm per pixel, one pass over memory. Used by
# calib.integration when numba is importable and DARKD_NO_NUMBA is not set; results agree with the NumPy path
# (which is the reference) except for float32-vs-float64 rounding at a threshold.

@functools.cache
def _compiled() -> Any:  # pragma: no cover - exercised only where numba is installed
    """The module holding the compiled kernels: the one built ahead of time for today's sources and this CPU
    (:mod:`calib.aot`: loading it is a ``dlopen``, numba is not imported) when there is one, else
    :mod:`calib.kernels` (numba's just-in-time kernels, machine code cached on disk). Same functions, same
    results."""
    from calib import aot

    prebuilt = aot.load()
    if prebuilt is not None:
        return prebuilt
    from calib import kernels

    return kernels


def numba_available() -> bool:
    """True when numba can be imported and ``DARKD_NO_NUMBA`` is not set."""
    import importlib.util
    import os

    return not os.environ.get("DARKD_NO_NUMBA") and importlib.util.find_spec("numba") is not None


_LOAD_LOCK = threading.Lock()  # one thread at a time loads numba and the kernels (see load_compiled)


@contextlib.contextmanager
def _scipy_hidden() -> Iterator[None]:
    """While numba loads, make ``import scipy`` fail unless SciPy is already imported.

    numba imports SciPy twice when it is installed: for a version check (``import numba``) and, when its CPU target
    is first set up (the first kernel loaded), ``scipy.linalg.cython_blas`` to know whether ``np.dot``/``np.linalg``
    may be compiled — ≈ 0.15 s of start-up, more than loading our kernels. None of the kernels here uses linear
    algebra (numba then compiles ``np.convolve``/``np.correlate`` with its own inner product; ``np.dot``/``np.linalg``
    still import SciPy when a kernel using them is compiled). SciPy stays importable afterwards: the block is removed
    when numba is loaded, and not set again once numba's CPU target is set up (a process that integrates again never
    blocks SciPy for another thread)."""
    if "scipy" in sys.modules or "numba.np.arraymath" in sys.modules:  # SciPy loaded, or numba's target set up
        yield
        return
    sys.modules["scipy"] = None  # type: ignore[assignment]  # the import system's "not importable" marker
    try:
        yield
    finally:
        if sys.modules.get("scipy", False) is None:
            del sys.modules["scipy"]


def load_compiled(n_frames: int, *, winsorized: bool = False, sigma: bool = False, sort: bool = False,
                  single_pass: bool = False) -> None:
    """Load the compiled kernels that integrating ``n_frames`` frames will call — the fused Winsorized kernel, the
    sigma kernel, the block sort, the one-pass rejections' kernel — by running each one through its own wrapper on a
    one-pixel stack of ``n_frames`` frames. With the prebuilt module (:func:`_compiled`, :mod:`calib.aot`) that is a
    ``dlopen``; otherwise numba is imported without SciPy (:func:`_scipy_hidden`) and the machine code is loaded from
    its disk cache (or compiled) for the exact argument types of the real calls, ≈ 0.25–0.4 s holding the GIL.
    :mod:`calib.integration` starts this in a thread while it opens the frames; the bands wait for it before they
    read. Raises ``ImportError`` without numba."""
    one_pixel = np.zeros((n_frames, 1), dtype=np.float32)
    with _LOAD_LOCK, _scipy_hidden():
        if winsorized:
            winsorized_combine_numba(one_pixel, 4.0, 3.0, presorted=False)
        if sort:
            sort_frames_inplace(one_pixel)
        if sigma:
            sigma_combine_numba(one_pixel, 4.0, 3.0)
        if single_pass:
            single_pass_combine_numba(one_pixel, RejectionParams(method="percentile"))


def _outputs(ncols: int, out: Outputs | None) -> Outputs:
    """The compiled kernels' output arrays for ``ncols`` pixels: ``out`` (checked: C-contiguous float32, int32,
    int32 of length ``ncols``, e.g. views into the caller's result and reused buffers) or new ones."""
    if out is None:
        return np.empty(ncols, dtype=np.float32), np.empty(ncols, dtype=np.int32), np.empty(ncols, dtype=np.int32)
    for array, dtype in zip(out, (np.float32, np.int32, np.int32), strict=True):
        if array.shape != (ncols,) or array.dtype != dtype or not array.flags.c_contiguous:
            raise ValueError(f"kernel output must be a C-contiguous {np.dtype(dtype)} array of {ncols} values, "
                             f"not {array.dtype} {array.shape}")
    return out


def winsorized_combine_numba(sorted_stack: np.ndarray, sigma_low: float, sigma_high: float,
                             median: bool = False, *, presorted: bool = True,
                             out: Outputs | None = None) -> Outputs:
    """Winsorized sigma clipping + combination of ``sorted_stack`` (n, P) float32 with the compiled kernel
    (single-threaded, releases the GIL: callers run bands in threads).

    With ``presorted=False`` the stack (finite values only) is sorted inside the kernel, fused with the clipping: the
    columns are taken in blocks of 64 pixels, copied into a small buffer that stays in the L1 cache and sorted there
    by the same Batcher network as :func:`sort_frames_inplace` (the comparator loop over the 64 pixels compiles to
    SIMD min/max); more than 256 frames are sorted per pixel instead. The stack is not modified in that case.
    Up to 64 frames the first outer pass runs for 64 pixels at once in SIMD lanes; the other passes, and every pass
    above 64 frames, take the clamped moments from prefix sums of the sorted values, O(1) per step plus the moves of
    the clamp bounds; formulas and the two paths in :mod:`calib.kernels`.
    Returns ``(combined float32, rejected_low int32, rejected_high int32)``, in ``out`` when given
    (:func:`_outputs`). Raises ``ImportError`` without numba.
    """
    stack = sorted_stack
    n, ncols = stack.shape
    combined, low, high = out = _outputs(ncols, out)
    pair_a, pair_b = _kernel_network(0 if presorted else n)
    _compiled().winsorized_kernel(np.ascontiguousarray(stack), pair_a, pair_b, combined, low, high, float(sigma_low),
                                  float(sigma_high), bool(median), _MAX_OUTER, _WINSOR_MAX_INNER)
    return out


_KERNEL_NETWORK_MAX_N = 256


@functools.lru_cache(maxsize=16)
def _kernel_network(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Comparator arrays for the kernel: Batcher's network for ``n`` values; empty when ``n`` is 0 (presorted); one
    ``(-1, -1)`` pair when ``n`` exceeds 256 (the kernel then sorts each pixel's values on their own)."""
    if n > _KERNEL_NETWORK_MAX_N:
        a = b = np.full(1, -1, dtype=np.int64)
    else:
        pairs = np.array(batcher_network(n) if n >= 2 else (), dtype=np.int64).reshape(-1, 2)
        a, b = np.ascontiguousarray(pairs[:, 0]), np.ascontiguousarray(pairs[:, 1])
    a.flags.writeable = False
    b.flags.writeable = False
    return a, b


def sigma_combine_numba(sorted_stack: np.ndarray, sigma_low: float, sigma_high: float, median: bool = False,
                        max_iterations: int | None = None, *, out: Outputs | None = None) -> Outputs:
    """Sigma clipping (method ``sigma``: centre = median, σ = standard deviation, ddof = 0) + combination of
    ``sorted_stack`` (n, P) float32 sorted along the frame axis, finite values only, with a compiled per-pixel loop
    (releases the GIL). Same arithmetic as :func:`reject_sorted` (float32 median and deviations from the float32
    mean, float64 sums, thresholds compared in float32); only the order of the float64 sums differs.
    Returns ``(combined float32, rejected_low int32, rejected_high int32)``, in ``out`` when given
    (:func:`_outputs`). Raises ``ImportError`` without numba.
    """
    combined, low, high = out = _outputs(sorted_stack.shape[1], out)
    limit = _MAX_OUTER if max_iterations is None else min(max_iterations, _MAX_OUTER)
    _compiled().sigma_kernel(np.ascontiguousarray(sorted_stack), combined, low, high, float(sigma_low),
                             float(sigma_high), bool(median), limit)
    return out


def single_pass_combine_numba(stack: np.ndarray, params: RejectionParams, median: bool = False, *,
                              out: Outputs | None = None) -> Outputs:
    """The one-pass rejections ``none``, ``minmax`` and ``percentile`` + combination of ``stack`` (n, P) float32
    (finite values, any order: each block of 64 columns is sorted in the L1 cache, the stack is not modified) with
    the compiled :func:`calib.kernels.single_pass_kernel`, the arithmetic of :func:`reject_sorted` and
    :func:`kept_mean` (the float64 sum of the kept values, where that sums all and subtracts the rejected ones).
    Returns ``(combined float32, rejected_low int32, rejected_high int32)``, in ``out`` when given
    (:func:`_outputs`). Raises ``ImportError`` without numba."""
    n, ncols = stack.shape
    combined, low, high = out = _outputs(ncols, out)
    p_low, p_high = ((params.n_low, params.n_high) if params.method == "minmax" else (params.pct_low, params.pct_high))
    pair_a, pair_b = _kernel_network(n)
    _compiled().single_pass_kernel(np.ascontiguousarray(stack), pair_a, pair_b, combined, low, high,
                                   SINGLE_PASS_METHODS.index(params.method), float(p_low), float(p_high), bool(median))
    return out
