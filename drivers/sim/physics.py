"""Pure-NumPy sensor model of the QHY163M (Panasonic MN34230) for the simulated INDI camera.

The model works in electrons, then converts to ADU through a 12-bit ADC whose output is scaled ×16 into 16-bit
values (what the real camera writes into ``BITPIX=16, BZERO=32768`` FITS). No INDI here: tests and benchmarks can
import it directly.

Geometry (IRAF sections, 1-based inclusive, x first; see :class:`SensorGeometry`)
    FULL   4720 × 3540 raw readout: optical-black rows y = 1..18, overscan columns x = 4657..4720,
           effective area [1:4656,19:3540] (4656 × 3522, 3.8 µm pixels — QHY163M datasheet).
    SMALL  496 × 368 with the same structure (OB rows 1..8, overscan 481..496) for fast tests.
    The amplifier sits on the right edge; amp glow is strongest at the top-right and bottom-right corners and the
    optical-black strip (top rows) reaches into the top-right glow.

Constants (source or assumption)
    ADC_BITS = 12, ADC_SCALE = 16            MN34230 12-bit ADC, QHY SDK scales to 16 bit (paper; QHY docs).
    GAIN0_E_PER_ADU12 = 4.9                  e⁻ per 12-bit ADU at GAIN 0 ≈ 20 ke⁻ full well / 4095 (QHY163M curves).
    UNITY_GAIN_SETTING = 118                 GAIN setting where 1 e⁻/ADU(12 bit) (QHY163M published curves, ≈118).
                                             e⁻/ADU12 = 4.9 · 10^(−gain / GAIN_DECADE), GAIN_DECADE = 118/log10(4.9).
    READ_NOISE_FLOOR_E = 1.2, READ_NOISE_SPAN_E = 2.3, READ_NOISE_SCALE = 90
                                             read noise 3.5 e⁻ at GAIN 0 falling to ~1.2 e⁻ at high gain (QHY163M
                                             curves; ≈1.8 e⁻ at the usual GAIN 120) — assumption fitted by eye.
    FULL_WELL_E = 20000                      QHY163M full well (QHY datasheet, ~20 ke⁻).
    PEDESTAL_BASE_ADU12 = 40, PEDESTAL_ADU12_PER_OFFSET = 3
                                             black level = 40 + 3·OFFSET ADU(12 bit) (assumption: OFFSET 30 → 130
                                             ADU12 = 2080 ADU16, enough headroom for clamped long darks).
    DARK_CURRENT_REF_E_PER_S = 0.005 at DARK_CURRENT_REF_C = −20 °C
                                             the paper's pair-method measurement of the QHY163M.
    DOUBLING_C = 6.0                         dark current doubles every 6 °C (typical for CMOS; assumption).
    DSNU_SIGMA = 0.25                        lognormal per-pixel dark non-uniformity (assumption), mean 1.
    HOT_PIXEL_FRACTION = 3e-4, HOT_PIXEL_FACTOR 20..2000 (log-uniform)   assumption. The hot pixels are drawn
                                             from the model's fixed-pattern stream (``SeedSequence([seed, 163])``,
                                             first child): round(3e-4 · full_height · effective_width) draws of a
                                             position in the effective columns of every row (OB rows included), so
                                             SMALL has 53 draws and FULL 4 944 (a repeated draw lands twice: at most
                                             that many distinct pixels). :meth:`SensorModel.hot_pixels` lists them.
    ADDED_HOT_PIXELS (``added_hot_pixels=``, default 0)  an ageing sensor: that many more hot pixels, drawn from
                                             their own stream ``SeedSequence([seed, 163, 1])``, so the original
                                             population and every other fixed pattern stay as they were.
    RTS_PIXEL_FRACTION = 5e-5, RTS amplitude 5..30 e⁻, 50 % high state     random telegraph pixels (assumption).
    COSMIC_RAYS_PER_CM2_PER_S = 0.02         ≈1.2 hits/cm²/min at sea level; 300–5000 e⁻ in 1–4 pixels (assumption).
    GLOW_CORNER_E = 400 at GLOW_REF_S = 600 s, GLOW_EXPONENT = 2.0
                                             amp glow at the right-hand corners ∝ (t/600 s)^2: the paper reports the
                                             clamped dark mean flat to ~1 min then falling quadratically.
    GLOW_LENGTH_X = 0.06, GLOW_LENGTH_Y = 0.08   e-folding lengths as fractions of the width / height (assumption).
    AMP_GLOW factors: "on" 1.0 (amplifier powered during the exposure), "off" 0.5 (amplifier powered down, residual
                      glow), "auto" = "off" for exposures ≥ AUTO_AMP_THRESHOLD_S = 1 s else "on" (assumption after the
                      QHY SDK's amp-glow control).
    Optical-black clamping: the mean electron signal of the OB rows is subtracted from every OB and effective pixel
                      before the ADC (the paper, part 1). Overscan columns are ADC-only: pedestal + read noise +
                      ADC drift, no dark signal, no glow, no clamp.
    Flats and lights: flat level default FLAT_LEVEL_FRACTION = 40 % of the saturation signal at any exposure (an
    auto-levelling panel), sky SKY_E_PER_S = 0.5 e⁻/s; vignetting, dust and stars are in :mod:`drivers.sim.sky`.

Noise: shot noise and read noise are drawn as one Gaussian per pixel with variance (signal_e + read_noise_e²)
(normal approximation to Poisson — exact in mean and variance, which is what pair-method measurements use).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from drivers.sim.sky import flat_response, star_field, vignetting_profiles

FrameKind = Literal["light", "bias", "dark", "flat"]
AmpGlow = Literal["auto", "on", "off"]

ADC_BITS = 12
ADC_SCALE = 16
ADC_MAX_ADU12 = (1 << ADC_BITS) - 1
SATURATION_ADU = ADC_MAX_ADU12 * ADC_SCALE  # 65520
PIXEL_SIZE_UM = 3.8

GAIN0_E_PER_ADU12 = 4.9
UNITY_GAIN_SETTING = 118.0
GAIN_DECADE = UNITY_GAIN_SETTING / math.log10(GAIN0_E_PER_ADU12)
READ_NOISE_FLOOR_E = 1.2
READ_NOISE_SPAN_E = 2.3
READ_NOISE_SCALE = 90.0
FULL_WELL_E = 20000.0
PEDESTAL_BASE_ADU12 = 40.0
PEDESTAL_ADU12_PER_OFFSET = 3.0

DARK_CURRENT_REF_E_PER_S = 0.005
DARK_CURRENT_REF_C = -20.0
DOUBLING_C = 6.0
DSNU_SIGMA = 0.25
HOT_PIXEL_FRACTION = 3e-4
HOT_PIXEL_FACTOR_MIN = 20.0
HOT_PIXEL_FACTOR_MAX = 2000.0
RTS_PIXEL_FRACTION = 5e-5
RTS_AMPLITUDE_MIN_E = 5.0
RTS_AMPLITUDE_MAX_E = 30.0
COSMIC_RAYS_PER_CM2_PER_S = 0.02

GLOW_CORNER_E = 400.0
GLOW_REF_S = 600.0
GLOW_EXPONENT = 2.0
GLOW_LENGTH_X = 0.06
GLOW_LENGTH_Y = 0.08
AMP_GLOW_FACTOR: dict[str, float] = {"on": 1.0, "off": 0.5}
AUTO_AMP_THRESHOLD_S = 1.0

FLAT_LEVEL_FRACTION = 0.4
SKY_E_PER_S = 0.5


@dataclass(frozen=True)
class SensorGeometry:
    """Raw readout structure: OB rows on top, effective area below them, overscan columns on the right."""

    effective_width: int
    effective_height: int
    overscan_cols: int
    ob_rows: int
    name: str = ""

    @property
    def full_width(self) -> int:
        return self.effective_width + self.overscan_cols

    @property
    def full_height(self) -> int:
        return self.effective_height + self.ob_rows

    @property
    def datasec(self) -> str:
        """Effective area in include mode (IRAF, 1-based inclusive)."""
        return f"[1:{self.effective_width},{self.ob_rows + 1}:{self.full_height}]"

    @property
    def trimsec(self) -> str:
        return self.datasec

    @property
    def biassec(self) -> str:
        """Overscan columns beside the effective rows, in include mode."""
        return f"[{self.effective_width + 1}:{self.full_width},{self.ob_rows + 1}:{self.full_height}]"

    @property
    def obsec(self) -> str:
        """Optical-black rows over the effective columns, in include mode."""
        return f"[1:{self.effective_width},1:{self.ob_rows}]"

    def shape(self, overscan_include: bool = True) -> tuple[int, int]:
        """(height, width) of a frame in include or ignore mode."""
        if overscan_include:
            return (self.full_height, self.full_width)
        return (self.effective_height, self.effective_width)


FULL_GEOMETRY = SensorGeometry(4656, 3522, 64, 18, "FULL")
SMALL_GEOMETRY = SensorGeometry(480, 360, 16, 8, "SMALL")
GEOMETRIES: dict[str, SensorGeometry] = {"FULL": FULL_GEOMETRY, "SMALL": SMALL_GEOMETRY}


def gain_e_per_adu12(gain_setting: float) -> float:
    """e⁻ per 12-bit ADU: 4.9 · 10^(−gain/GAIN_DECADE) (unity at GAIN 118)."""
    return GAIN0_E_PER_ADU12 * 10.0 ** (-float(gain_setting) / GAIN_DECADE)


def gain_e_per_adu(gain_setting: float) -> float:
    """e⁻ per 16-bit ADU (the FITS scale): the 12-bit conversion factor divided by 16."""
    return gain_e_per_adu12(gain_setting) / ADC_SCALE


def read_noise_e(gain_setting: float) -> float:
    """Read noise in e⁻ rms: 1.2 + 2.3·exp(−gain/90) (3.5 e⁻ at GAIN 0, ≈1.8 e⁻ at GAIN 120)."""
    return READ_NOISE_FLOOR_E + READ_NOISE_SPAN_E * math.exp(-float(gain_setting) / READ_NOISE_SCALE)


def pedestal_adu(offset_setting: float) -> float:
    """Black level in 16-bit ADU set by OFFSET: (40 + 3·offset) · 16."""
    return (PEDESTAL_BASE_ADU12 + PEDESTAL_ADU12_PER_OFFSET * float(offset_setting)) * ADC_SCALE


def dark_current_e_per_s(temperature_c: float) -> float:
    """Mean dark current in e⁻/s/pixel: 0.005 · 2^((T + 20)/6) (the paper's −20 °C value, doubling every 6 °C)."""
    return DARK_CURRENT_REF_E_PER_S * 2.0 ** ((float(temperature_c) - DARK_CURRENT_REF_C) / DOUBLING_C)


def saturation_e(gain_setting: float, offset_setting: float = 0.0) -> float:
    """Signal in e⁻ at which the pixel or the ADC saturates, whichever comes first."""
    adc_e = (ADC_MAX_ADU12 - pedestal_adu(offset_setting) / ADC_SCALE) * gain_e_per_adu12(gain_setting)
    return min(FULL_WELL_E, adc_e)


def glow_factor(amp_glow: str, exposure_s: float) -> float:
    """Relative glow amplitude for the CCD_AMP_GLOW setting ("auto" powers the amplifier down for t ≥ 1 s)."""
    mode = amp_glow.lower()
    if mode == "auto":
        mode = "off" if exposure_s >= AUTO_AMP_THRESHOLD_S else "on"
    if mode not in AMP_GLOW_FACTOR:
        raise ValueError(f"amp_glow must be auto, on or off, not {amp_glow!r}")
    return AMP_GLOW_FACTOR[mode]


def glow_corner_e(exposure_s: float, amp_glow: str = "on", exponent: float = GLOW_EXPONENT) -> float:
    """Amp-glow signal in e⁻ at the right-hand corners: 400 · factor · (t/600 s)^exponent."""
    return GLOW_CORNER_E * glow_factor(amp_glow, exposure_s) * (max(exposure_s, 0.0) / GLOW_REF_S) ** exponent


@dataclass
class _FixedPattern:
    dark_rel: np.ndarray  # float32 (full_h, full_w): relative dark current (DSNU × hot pixels), 0 in overscan
    glow_x: np.ndarray  # float32 (full_w,): horizontal glow profile, 0 in overscan
    glow_y: np.ndarray  # float32 (full_h,): vertical glow profile (top + bottom corners)
    vig_x: np.ndarray  # float32 (full_w,)
    vig_y: np.ndarray  # float32 (full_h,)
    rts_index: np.ndarray  # int64 flat indices of RTS pixels
    rts_amp_e: np.ndarray  # float32
    seed: int
    response: np.ndarray | None = None  # PRNU × dust × vignetting (lazy)
    stars_e_per_s: np.ndarray | None = None  # star field rate (lazy)
    extra: dict[str, object] = field(default_factory=dict)


class SensorModel:
    """The QHY163M sensor: fixed patterns from ``seed`` (DSNU, hot, RTS pixels, glow, vignetting, dust, stars).

    ``expose`` returns a uint16 frame (values multiple of 16, BZERO-compatible). Per-exposure noise comes from ``rng``
    or, when omitted, from the model's own generator (seeded from ``seed``).
    """

    def __init__(self, geometry: SensorGeometry = SMALL_GEOMETRY, seed: int = 0, *, ob_clamping: bool = True,
                 glow_exponent: float = GLOW_EXPONENT, glow_corner_e: float = GLOW_CORNER_E,
                 cosmic_rays: bool = True, added_hot_pixels: int = 0) -> None:
        if added_hot_pixels < 0:
            raise ValueError(f"added_hot_pixels must be >= 0, got {added_hot_pixels}")
        self.geometry = geometry
        self.seed = int(seed)
        self.ob_clamping = ob_clamping
        self.glow_exponent = float(glow_exponent)
        self.glow_corner_e_ref = float(glow_corner_e)
        self.cosmic_rays = cosmic_rays
        fixed_seq, noise_seq = np.random.SeedSequence([self.seed, 163]).spawn(2)
        self._fixed_seq = fixed_seq
        self._rng = np.random.default_rng(noise_seq)
        self._fixed = self._make_fixed(np.random.default_rng(fixed_seq))
        self.added_hot_pixels = int(added_hot_pixels)
        if added_hot_pixels:
            self._add_hot_pixels(np.random.default_rng(np.random.SeedSequence([self.seed, 163, 1])), added_hot_pixels)

    def _add_hot_pixels(self, rng: np.random.Generator, n: int) -> None:
        """``n`` more hot pixels (same factor law) in the effective area, on pixels that are not hot yet."""
        g, dark_rel = self.geometry, self._fixed.dark_rel
        rows = rng.integers(g.ob_rows, g.full_height, 4 * n)
        cols = rng.integers(0, g.effective_width, 4 * n)
        flat = np.unique(rows * g.full_width + cols)
        flat = flat[dark_rel.ravel()[flat] < HOT_PIXEL_FACTOR_MIN]
        chosen = rng.permutation(flat)[:n]
        factors = np.exp(rng.uniform(math.log(HOT_PIXEL_FACTOR_MIN), math.log(HOT_PIXEL_FACTOR_MAX), chosen.size))
        dark_rel.ravel()[chosen] = factors.astype(np.float32)

    def hot_pixels(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The injected hot pixels as ``(rows, cols, factors)``: 0-based raw-frame coordinates (OB rows included,
        so subtract ``geometry.ob_rows`` from the rows for an overscan-ignored frame) and the dark-current factor
        (×20…×2000 the mean; the lognormal DSNU never reaches ×20)."""
        rows, cols = np.nonzero(self._fixed.dark_rel >= HOT_PIXEL_FACTOR_MIN)
        return rows, cols, self._fixed.dark_rel[rows, cols].astype(np.float64)

    def rts_pixels(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The random-telegraph pixels as ``(rows, cols, amplitudes_e)`` (0-based raw-frame coordinates)."""
        rows, cols = np.divmod(self._fixed.rts_index, self.geometry.full_width)
        return rows, cols, self._fixed.rts_amp_e.astype(np.float64)

    # ---- fixed patterns -------------------------------------------------------------------------------------
    def _make_fixed(self, rng: np.random.Generator) -> _FixedPattern:
        g = self.geometry
        h, w = g.full_height, g.full_width
        mu = -0.5 * DSNU_SIGMA**2  # lognormal with mean 1
        dark_rel = rng.standard_normal((h, w), dtype=np.float32)
        dark_rel *= np.float32(DSNU_SIGMA)
        dark_rel += np.float32(mu)
        np.exp(dark_rel, out=dark_rel)
        n_hot = max(1, round(HOT_PIXEL_FRACTION * h * g.effective_width))
        hot_idx = rng.integers(0, h * g.effective_width, n_hot)
        hot_rows, hot_cols = np.divmod(hot_idx, g.effective_width)
        factors = np.exp(rng.uniform(math.log(HOT_PIXEL_FACTOR_MIN), math.log(HOT_PIXEL_FACTOR_MAX), n_hot))
        dark_rel[hot_rows, hot_cols] = factors.astype(np.float32)
        dark_rel[:, g.effective_width:] = 0.0
        x = np.arange(w, dtype=np.float32)
        glow_x = np.exp(-(g.effective_width - 1 - x) / np.float32(GLOW_LENGTH_X * g.effective_width))
        glow_x[g.effective_width:] = 0.0
        y = np.arange(h, dtype=np.float32)
        ly = np.float32(GLOW_LENGTH_Y * h)
        glow_y = np.exp(-y / ly) + np.exp(-(h - 1 - y) / ly)
        vig_x, vig_y = vignetting_profiles(g)
        n_rts = max(1, round(RTS_PIXEL_FRACTION * g.effective_width * g.effective_height))
        rts_rows = rng.integers(g.ob_rows, h, n_rts)
        rts_cols = rng.integers(0, g.effective_width, n_rts)
        rts_amp = rng.uniform(RTS_AMPLITUDE_MIN_E, RTS_AMPLITUDE_MAX_E, n_rts).astype(np.float32)
        return _FixedPattern(dark_rel=dark_rel, glow_x=glow_x.astype(np.float32), glow_y=glow_y.astype(np.float32),
                             vig_x=vig_x, vig_y=vig_y, rts_index=rts_rows * w + rts_cols, rts_amp_e=rts_amp,
                             seed=self.seed)

    def _response(self) -> np.ndarray:
        """Flat-field response (vignetting × dust × PRNU), computed once per model on first use."""
        f = self._fixed
        if f.response is None:
            f.response = flat_response(self.geometry, f.vig_x, f.vig_y,
                                       np.random.default_rng(self._fixed_seq.spawn(1)[0]))
        return f.response

    def _stars(self) -> np.ndarray:
        """Star field in e⁻/s, computed once per model on first use."""
        f = self._fixed
        if f.stars_e_per_s is None:
            f.stars_e_per_s = star_field(self.geometry, np.random.default_rng(self._fixed_seq.spawn(2)[1]))
        return f.stars_e_per_s

    # ---- exposure -------------------------------------------------------------------------------------------
    def glow_map_e(self, exposure_s: float, amp_glow: str = "auto") -> np.ndarray:
        """Expected amp-glow signal in e⁻ per pixel (full raw frame), zero in the overscan."""
        f = self._fixed
        amp = self.glow_corner_e_ref / GLOW_CORNER_E * glow_corner_e(exposure_s, amp_glow, self.glow_exponent)
        return (np.float32(amp) * f.glow_y[:, None]) * f.glow_x[None, :]

    def expose(self, frame_type: FrameKind | str, exposure_s: float, temperature_c: float, gain: float,
               offset: float, *, amp_glow: str = "auto", overscan_include: bool = True,
               light_leak_e_per_s: float = 0.0, adc_drift_adu: float = 0.0, flat_level_e: float | None = None,
               rng: np.random.Generator | None = None) -> np.ndarray:
        """One frame as uint16 (height, width): raw readout with OB rows and overscan, or the effective area only.

        Signal (e⁻) = dark_rel·I_dark(T)·t + glow(t) + light; noise N(0, signal + RON²); OB clamp subtracts the OB
        rows' mean signal; ADU12 = round(e⁻ / gain12 + pedestal12 + drift12), clipped to 0..4095, then ×16.
        """
        kind = str(frame_type).lower()
        kind = "dark" if kind == "flatdark" else kind  # a flat-dark is a dark frame at the flat's exposure
        if kind not in ("light", "bias", "dark", "flat"):
            raise ValueError(f"frame_type must be light, bias, dark or flat, not {frame_type!r}")
        if exposure_s < 0:
            raise ValueError(f"exposure_s must be >= 0, got {exposure_s}")
        rng = rng if rng is not None else self._rng
        g, f = self.geometry, self._fixed
        t = float(exposure_s)
        ew = g.effective_width

        signal = f.dark_rel * np.float32(dark_current_e_per_s(temperature_c) * t)
        signal += self.glow_map_e(t, amp_glow)
        light_rate = None
        if kind == "flat":
            level = flat_level_e if flat_level_e is not None else FLAT_LEVEL_FRACTION * saturation_e(gain, offset)
            signal += self._response() * np.float32(level)
        elif kind == "light":
            light_rate = self._stars() + np.float32(SKY_E_PER_S)
            light_rate *= self._response()
            signal += light_rate * np.float32(t)
        if light_leak_e_per_s > 0 and kind in ("bias", "dark"):
            signal += self._response() * np.float32(light_leak_e_per_s * t)
        if self.cosmic_rays and t > 0:
            self._add_cosmic_rays(signal, t, rng)
        np.minimum(signal, np.float32(FULL_WELL_E), out=signal)

        rn = read_noise_e(gain)
        sigma = signal + np.float32(rn * rn)
        np.maximum(sigma, np.float32(0.0), out=sigma)
        np.sqrt(sigma, out=sigma)
        sigma *= rng.standard_normal(sigma.shape, dtype=np.float32)
        signal += sigma
        del sigma
        # random telegraph pixels: two-level offset, state drawn per exposure
        high = rng.random(f.rts_index.size) < 0.5
        signal.ravel()[f.rts_index] += np.where(high, f.rts_amp_e, 0.0).astype(np.float32)

        if self.ob_clamping and g.ob_rows > 0:
            clamp_e = float(signal[: g.ob_rows, :ew].mean(dtype=np.float64))
            signal[:, :ew] -= np.float32(clamp_e)

        g12 = gain_e_per_adu12(gain)
        base_adu12 = (pedestal_adu(offset) + adc_drift_adu) / ADC_SCALE
        signal *= np.float32(1.0 / g12)
        signal += np.float32(base_adu12)
        np.rint(signal, out=signal)
        np.clip(signal, 0, ADC_MAX_ADU12, out=signal)
        out = signal.astype(np.uint16)
        del signal
        out *= np.uint16(ADC_SCALE)
        if not overscan_include:
            out = np.ascontiguousarray(out[g.ob_rows:, :ew])
        return out

    def _add_cosmic_rays(self, signal: np.ndarray, exposure_s: float, rng: np.random.Generator) -> None:
        g = self.geometry
        area_cm2 = g.effective_width * g.full_height * (PIXEL_SIZE_UM * 1e-4) ** 2
        n = int(rng.poisson(COSMIC_RAYS_PER_CM2_PER_S * area_cm2 * exposure_s))
        if n == 0:
            return
        ys = rng.integers(0, g.full_height - 1, n)
        xs = rng.integers(0, g.effective_width - 1, n)
        energy = rng.uniform(300.0, 5000.0, n).astype(np.float32)
        signal[ys, xs] += energy
        spread = rng.random(n) < 0.5  # half of the hits share charge with a neighbour
        signal[ys[spread], xs[spread] + 1] += 0.3 * energy[spread]
