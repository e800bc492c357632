"""Compare a new master with the previous one of the same key: did the sensor (or the build) change?

Pure NumPy. With ``d = new − previous`` over finite pixels:

* ``mean_shift_adu = mean(new) − mean(previous)``;
* ``sigma_adu`` = the robust scatter of ``d``: ``1.4826 × median(|d − median(d)|)`` (MAD; estimated on at most
  ``sample_px`` evenly strided pixels), or a caller-supplied noise of the difference;
* a pixel *moved* when ``|d − median(d)| > k_sigma × sigma_adu``; ``moved_fraction`` is their share.

The new master is flagged for **review** (not silently used in place of the previous one) when ``moved_fraction >
max_moved_fraction`` (default 0.1 %: with Gaussian noise only ~6×10⁻⁷ of pixels pass 5σ, so this means new hot
pixels, glow or structure) or ``|mean_shift_adu| > max_mean_shift_adu`` (default: one ``sigma_adu``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

MAD_TO_SIGMA = 1.4826


@dataclass(frozen=True)
class MasterComparison:
    """Result of :func:`compare_masters` (ADU; fractions in 0..1)."""

    n_pixels: int
    moved_pixels: int
    moved_fraction: float
    mean_shift_adu: float
    median_shift_adu: float
    sigma_adu: float
    k_sigma: float
    max_moved_fraction: float
    max_mean_shift_adu: float
    review: bool
    reasons: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def robust_sigma(values: np.ndarray, sample_px: int = 1_000_000) -> tuple[float, float]:
    """(median, 1.4826 × MAD) of ``values`` (1-D, finite), estimated on an evenly strided sample."""
    step = max(1, values.size // sample_px)
    sample = values[::step].astype(np.float64)
    centre = float(np.median(sample))
    return centre, MAD_TO_SIGMA * float(np.median(np.abs(sample - centre)))


def compare_masters(new: np.ndarray, previous: np.ndarray, *, k_sigma: float = 5.0,
                    max_moved_fraction: float = 1e-3, max_mean_shift_adu: float | None = None,
                    sigma_adu: float | None = None, sample_px: int = 1_000_000) -> MasterComparison:
    """Compare two masters of the same key (see the module docstring for the formulas and defaults)."""
    a = np.asarray(new)
    b = np.asarray(previous)
    if a.shape != b.shape:
        raise ValueError(f"masters differ in shape: new {a.shape}, previous {b.shape}")
    if k_sigma <= 0 or max_moved_fraction < 0:
        raise ValueError("k_sigma must be > 0 and max_moved_fraction >= 0")
    diff = a.astype(np.float32) - b.astype(np.float32)
    finite = np.isfinite(diff)
    values = diff[finite] if not finite.all() else diff.ravel()
    if values.size == 0:
        raise ValueError("no finite pixels to compare")
    centre, sigma_mad = robust_sigma(values, sample_px)
    sigma = float(sigma_adu) if sigma_adu is not None else sigma_mad
    if sigma <= 0:  # identical or quantised-flat masters: fall back to the standard deviation, then to 1 ADU
        sigma = float(np.std(values)) or 1.0
    moved = int(np.count_nonzero(np.abs(values - centre) > k_sigma * sigma))
    fraction = moved / values.size
    mean_shift = float(np.mean(a[finite], dtype=np.float64) - np.mean(b[finite], dtype=np.float64))
    limit_shift = sigma if max_mean_shift_adu is None else float(max_mean_shift_adu)
    reasons = []
    if fraction > max_moved_fraction:
        reasons.append(f"{fraction:.3%} of pixels moved beyond {k_sigma:g}σ (σ = {sigma:.3g} ADU; "
                       f"limit {max_moved_fraction:.3%})")
    if abs(mean_shift) > limit_shift:
        reasons.append(f"mean shifted by {mean_shift:+.3g} ADU (limit ±{limit_shift:.3g} ADU)")
    return MasterComparison(n_pixels=int(values.size), moved_pixels=moved, moved_fraction=fraction,
                            mean_shift_adu=mean_shift, median_shift_adu=centre, sigma_adu=sigma, k_sigma=k_sigma,
                            max_moved_fraction=max_moved_fraction, max_mean_shift_adu=limit_shift,
                            review=bool(reasons), reasons=reasons)
