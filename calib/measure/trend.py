"""Trends of a camera's quantities over time: a least-squares line with the standard error of its slope, and the
significance of the latest value against the earlier ones.

Line (times ``t`` in days, values ``y``, optional 1σ uncertainties ``u``):
    weights w = 1/u² (all 1 without uncertainties), S = Σw, Sₜ = Σw·t, Sₜₜ = Σw·t², S_y = Σw·y, Sₜ_y = Σw·t·y,
    Δ = S·Sₜₜ − Sₜ², slope b = (S·Sₜ_y − Sₜ·S_y)/Δ, intercept a = (Sₜₜ·S_y − Sₜ·Sₜ_y)/Δ.
    With uncertainties: σ_b = √(S/Δ), inflated by √(χ²/(n − 2)) when the scatter exceeds them (χ² = Σw·(y − a − b·t)²,
    n > 2) — the weighted fit of :mod:`calib.measure.dark_current`. Without: σ_b = √(χ²/(n − 2) · S/Δ) (ordinary
    least squares; needs n > 2, else σ_b is infinite).
Step of the latest value x_n against the earlier ones: reference r = weighted mean of x_1..x_(n−1), its uncertainty
    σ_r = √(1/Σw) inflated by the earlier values' scatter (√(χ²/(n − 2)) when larger than 1), and
    z = (x_n − r)/√(u_n² + σ_r²). "Moved more than kσ" means |z| > k.
Relative change over a window: (x_last − x_ref)/x_ref, x_ref the earliest value within ``window_days`` before the last.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Trend:
    """A fitted line ``y = intercept + slope·t`` (t in days from ``t0_days``) with the 1σ error of its slope."""

    n: int
    slope_per_day: float
    slope_uncertainty_per_day: float
    intercept: float
    t0_days: float
    reduced_chi2: float | None

    @property
    def significance(self) -> float:
        """|slope|/σ_slope (0 when the slope is unknown)."""
        if not math.isfinite(self.slope_uncertainty_per_day) or self.slope_uncertainty_per_day <= 0:
            return 0.0
        return abs(self.slope_per_day) / self.slope_uncertainty_per_day

    def change_over(self, days: float) -> tuple[float, float]:
        """The change the line predicts over ``days`` and its 1σ uncertainty."""
        return self.slope_per_day * days, self.slope_uncertainty_per_day * abs(days)


def _arrays(t_days: Sequence[float], values: Sequence[float],
            uncertainties: Sequence[float | None] | None) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    t = np.asarray(t_days, dtype=np.float64)
    y = np.asarray(values, dtype=np.float64)
    if t.shape != y.shape or t.ndim != 1:
        raise ValueError(f"times and values must be 1-D of equal length, got {t.shape} and {y.shape}")
    if not (np.isfinite(t).all() and np.isfinite(y).all()):
        raise ValueError("times and values must be finite")
    u = None
    if uncertainties is not None and all(v is not None and math.isfinite(v) and v > 0 for v in uncertainties):
        u = np.asarray(uncertainties, dtype=np.float64)
        if u.shape != y.shape:
            raise ValueError(f"uncertainties must match the values, got {u.shape} and {y.shape}")
    return t, y, u


def linear_trend(t_days: Sequence[float], values: Sequence[float],
                 uncertainties: Sequence[float | None] | None = None) -> Trend:
    """Least-squares line through ``(t_days, values)`` (see the module docstring). ``uncertainties`` are used as
    weights only when every one is a positive finite number. Needs ≥ 2 distinct times."""
    t, y, u = _arrays(t_days, values, uncertainties)
    n = t.size
    if n < 2 or float(np.ptp(t)) <= 0:
        raise ValueError("a trend needs at least two values at different times")
    t0 = float(t[0])
    tt = t - t0
    w = np.ones(n) if u is None else 1.0 / u**2
    s, st, stt = w.sum(), (w * tt).sum(), (w * tt * tt).sum()
    sy, sty = (w * y).sum(), (w * tt * y).sum()
    delta = s * stt - st**2
    slope = float((s * sty - st * sy) / delta)
    intercept = float((stt * sy - st * sty) / delta)
    chi2 = float(np.sum(w * (y - intercept - slope * tt) ** 2))
    red = chi2 / (n - 2) if n > 2 else None
    if u is not None:
        sigma = math.sqrt(s / delta) * (math.sqrt(red) if red is not None and red > 1.0 else 1.0)
    else:
        sigma = math.sqrt(red * s / delta) if red is not None else math.inf
    return Trend(n=n, slope_per_day=slope, slope_uncertainty_per_day=float(sigma), intercept=intercept, t0_days=t0,
                 reduced_chi2=red)


@dataclass(frozen=True)
class Step:
    """The latest value against the weighted mean of the earlier ones (see the module docstring)."""

    latest: float
    reference: float
    difference: float
    sigma: float
    z: float


def latest_step(values: Sequence[float], uncertainties: Sequence[float | None] | None = None) -> Step:
    """z-score of the last of ``values`` (time order) against the earlier ones; needs ≥ 2 values.

    Without positive uncertainties for every value, σ comes from the earlier values' scatter alone (n ≥ 3; with two
    values and no uncertainties σ is infinite and z = 0)."""
    y = np.asarray(values, dtype=np.float64)
    if y.ndim != 1 or y.size < 2 or not np.isfinite(y).all():
        raise ValueError("a step needs at least two finite values")
    _, _, u = _arrays(list(range(y.size)), y.tolist(), uncertainties)
    earlier = y[:-1]
    if u is not None:
        w = 1.0 / u[:-1] ** 2
        ref = float((w * earlier).sum() / w.sum())
        var_ref = 1.0 / float(w.sum())
        if earlier.size > 1:
            red = float(np.sum(w * (earlier - ref) ** 2)) / (earlier.size - 1)
            var_ref *= max(red, 1.0)
        var = float(u[-1]) ** 2 + var_ref
    else:
        ref = float(earlier.mean())
        var = float(earlier.var(ddof=1)) * (1.0 + 1.0 / earlier.size) if earlier.size > 1 else math.inf
    sigma = math.sqrt(var)
    diff = float(y[-1]) - ref
    z = diff / sigma if math.isfinite(sigma) and sigma > 0 else 0.0
    return Step(latest=float(y[-1]), reference=ref, difference=diff, sigma=sigma, z=z)


def window_change(t_days: Sequence[float], values: Sequence[float], window_days: float) -> tuple[float, float] | None:
    """``(x_ref, x_last)``: the earliest value within ``window_days`` before the last one, and the last (time order);
    ``None`` when no earlier value lies in the window."""
    t, y, _ = _arrays(t_days, values, None)
    if t.size < 2:
        return None
    inside = np.nonzero((t >= t[-1] - window_days) & (np.arange(t.size) < t.size - 1))[0]
    if inside.size == 0:
        return None
    return float(y[inside[0]]), float(y[-1])
