"""What the simulated sensor sees: vignetting, dust shadows and PRNU (the flat-field response), and a star field.

Fixed per (geometry, seed). Constants (assumptions):
    VIGNETTING_SIGMA = 0.9   Gaussian fall-off, σ in units of the effective area's half-diagonal (≈ 22 % darker
                             corners), separable in x and y so it costs two 1-D profiles.
    PRNU_SIGMA = 0.008       0.8 % pixel response non-uniformity.
    DUST 3–8 out-of-focus "donuts", radius 2–5 % of the width, 1–6 % deep.
    STAR_DENSITY_PER_PX = 1/2000, Gaussian PSF σ = 1.3 px, peak up to 200 e⁻/s (power-law: many faint, few bright).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from drivers.sim.physics import SensorGeometry

VIGNETTING_SIGMA = 0.9
PRNU_SIGMA = 0.008
STAR_DENSITY_PER_PX = 1.0 / 2000.0
STAR_PSF_SIGMA_PX = 1.3
STAR_PEAK_E_PER_S_MAX = 200.0


def vignetting_profiles(g: SensorGeometry) -> tuple[np.ndarray, np.ndarray]:
    """(x profile over full_width, y profile over full_height), float32; their outer product is the vignetting."""
    x = np.arange(g.full_width, dtype=np.float32)
    y = np.arange(g.full_height, dtype=np.float32)
    s = VIGNETTING_SIGMA * 0.5 * math.hypot(g.effective_width, g.effective_height)
    cx, cy = (g.effective_width - 1) / 2.0, g.ob_rows + (g.effective_height - 1) / 2.0
    vig_x = np.exp(-((x - cx) ** 2) / (2 * s * s)).astype(np.float32)
    vig_y = np.exp(-((y - cy) ** 2) / (2 * s * s)).astype(np.float32)
    return vig_x, vig_y


def flat_response(g: SensorGeometry, vig_x: np.ndarray, vig_y: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Relative response of each pixel to light: PRNU × vignetting × dust; 0 in the shielded OB rows and overscan."""
    resp = rng.standard_normal((g.full_height, g.full_width), dtype=np.float32)
    resp *= np.float32(PRNU_SIGMA)
    resp += np.float32(1.0)
    resp *= vig_y[:, None]
    resp *= vig_x[None, :]
    for _ in range(int(rng.integers(3, 9))):
        r_px = float(rng.uniform(0.02, 0.05)) * g.effective_width
        cx = float(rng.uniform(0.1, 0.9)) * g.effective_width
        cy = g.ob_rows + float(rng.uniform(0.1, 0.9)) * g.effective_height
        depth = float(rng.uniform(0.01, 0.06))
        y0, y1 = max(0, int(cy - 1.5 * r_px)), min(g.full_height, int(cy + 1.5 * r_px) + 1)
        x0, x1 = max(0, int(cx - 1.5 * r_px)), min(g.effective_width, int(cx + 1.5 * r_px) + 1)
        yy, xx = np.mgrid[y0:y1, x0:x1]
        r = np.hypot(xx - cx, yy - cy) / r_px
        ring = np.exp(-((r - 0.7) ** 2) / 0.08) + 0.6 * (r < 0.7)  # out-of-focus dust shadow
        resp[y0:y1, x0:x1] *= (1.0 - depth * np.clip(ring, 0, 1)).astype(np.float32)
    resp[: g.ob_rows, :] = 0.0
    resp[:, g.effective_width:] = 0.0
    return resp


def star_field(g: SensorGeometry, rng: np.random.Generator) -> np.ndarray:
    """Star signal rate in e⁻/s per pixel (before vignetting), Gaussian PSFs on the effective area."""
    stars = np.zeros((g.full_height, g.full_width), dtype=np.float32)
    n = max(5, round(STAR_DENSITY_PER_PX * g.effective_width * g.effective_height))
    xs = rng.uniform(4, g.effective_width - 5, n)
    ys = rng.uniform(g.ob_rows + 4, g.full_height - 5, n)
    peaks = STAR_PEAK_E_PER_S_MAX * rng.power(0.3, n)
    r = 4
    dy, dx = np.mgrid[-r:r + 1, -r:r + 1]
    for x, y, peak in zip(xs, ys, peaks, strict=True):
        ix, iy = int(x), int(y)
        psf = peak * np.exp(-((dx + ix - x) ** 2 + (dy + iy - y) ** 2) / (2 * STAR_PSF_SIGMA_PX**2))
        stars[iy - r:iy + r + 1, ix - r:ix + r + 1] += psf.astype(np.float32)
    return stars
