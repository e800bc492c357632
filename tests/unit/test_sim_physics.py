"""Known physics of the pure-NumPy QHY163M model (drivers.sim.physics), measured the way a user measures a camera."""

from __future__ import annotations

import numpy as np
import pytest

from drivers.sim.physics import (
    ADC_SCALE,
    DOUBLING_C,
    SMALL_GEOMETRY,
    SensorModel,
    dark_current_e_per_s,
    gain_e_per_adu,
    glow_corner_e,
    pedestal_adu,
    read_noise_e,
)

GEO = SMALL_GEOMETRY
OB = GEO.ob_rows
EW = GEO.effective_width
CENTER = (slice(OB + 100, OB + 260), slice(140, 340))  # far from the amplifier corners


def _clipped(x: np.ndarray, k: float = 5.0) -> np.ndarray:
    """Drop hot pixels, RTS and cosmic rays: |x − median| < k · 1.4826 · MAD."""
    med = np.median(x)
    mad = 1.4826 * np.median(np.abs(x - med))
    return x[np.abs(x - med) < k * mad]


def _pair_dark_current(model: SensorModel, exposure_s: float, temperature_c: float, gain: int = 120,
                       pairs: int = 3) -> float:
    """Buil's pair method (the paper): Dc = ((σ(D1−D2)/√2)² − RON²)/t in e⁻/s, RON from a bias pair."""
    ge = gain_e_per_adu(gain)
    values = []
    for _ in range(pairs):
        d1, d2 = (model.expose("dark", exposure_s, temperature_c, gain, 30).astype(np.float64) for _ in range(2))
        b1, b2 = (model.expose("bias", 0.0, temperature_c, gain, 30).astype(np.float64) for _ in range(2))
        var_d = _clipped((d1 - d2)[CENTER]).var() / 2 * ge * ge
        var_b = _clipped((b1 - b2)[CENTER]).var() / 2 * ge * ge
        values.append((var_d - var_b) / exposure_s)
    return float(np.mean(values))


def test_geometry_sections() -> None:
    assert (GEO.full_width, GEO.full_height) == (496, 368)
    assert (GEO.datasec, GEO.biassec, GEO.trimsec) == ("[1:480,9:368]", "[481:496,9:368]", "[1:480,9:368]")
    m = SensorModel(GEO, seed=3)
    assert m.expose("bias", 0.0, 0.0, 120, 30).shape == (368, 496)
    assert m.expose("bias", 0.0, 0.0, 120, 30, overscan_include=False).shape == (360, 480)


def test_constants_follow_the_reference() -> None:
    assert dark_current_e_per_s(-20.0) == pytest.approx(0.005)
    assert dark_current_e_per_s(-20.0 + DOUBLING_C) == pytest.approx(0.010)
    assert 1.5 <= read_noise_e(120) <= 3.0
    assert read_noise_e(0) > read_noise_e(120) > read_noise_e(300)
    assert gain_e_per_adu(118) * ADC_SCALE == pytest.approx(1.0, rel=1e-6)


def test_pair_method_recovers_dark_current_at_minus_20() -> None:
    model = SensorModel(GEO, seed=11)
    measured = _pair_dark_current(model, 600.0, -20.0)
    assert measured == pytest.approx(dark_current_e_per_s(-20.0), rel=0.15)


def test_dark_current_doubles_every_doubling_interval() -> None:
    model = SensorModel(GEO, seed=12)
    cold = _pair_dark_current(model, 600.0, -20.0)
    warm = _pair_dark_current(model, 600.0, -20.0 + DOUBLING_C)
    assert warm / cold == pytest.approx(2.0, rel=0.2)


def test_long_dark_below_bias_by_clamping_while_pair_variance_grows() -> None:
    model = SensorModel(GEO, seed=13)
    bias = [model.expose("bias", 0.0, -20.0, 120, 30).astype(np.float64) for _ in range(2)]
    short = [model.expose("dark", 30.0, -20.0, 120, 30).astype(np.float64) for _ in range(2)]
    long_ = [model.expose("dark", 900.0, -20.0, 120, 30).astype(np.float64) for _ in range(2)]
    bias_mean = np.mean([b[OB:, :EW].mean() for b in bias])
    short_mean = np.mean([d[OB:, :EW].mean() for d in short])
    long_mean = np.mean([d[OB:, :EW].mean() for d in long_])
    assert abs(short_mean - bias_mean) < 5.0  # flat up to about a minute
    assert long_mean < bias_mean - 50.0  # clamped long dark is darker than bias
    var_bias = _clipped((bias[0] - bias[1])[CENTER]).var()
    var_long = _clipped((long_[0] - long_[1])[CENTER]).var()
    assert var_long > var_bias * 1.2  # the dark signal's shot noise is still there

    unclamped = SensorModel(GEO, seed=13, ob_clamping=False)
    d = unclamped.expose("dark", 900.0, -20.0, 120, 30).astype(np.float64)
    assert d[OB:, :EW].mean() > bias_mean  # without the clamp the dark sits above bias


def test_overscan_carries_pedestal_and_read_noise_only() -> None:
    model = SensorModel(GEO, seed=14)
    dark = model.expose("dark", 1800.0, 0.0, 120, 30, amp_glow="on").astype(np.float64)
    bias = model.expose("bias", 0.0, 0.0, 120, 30).astype(np.float64)
    over_d, over_b = dark[OB:, EW:], bias[OB:, EW:]
    assert over_d.mean() == pytest.approx(pedestal_adu(30), abs=3.0)
    assert over_d.mean() == pytest.approx(over_b.mean(), abs=3.0)
    rn_adu = read_noise_e(120) / gain_e_per_adu(120)
    assert over_d.std() == pytest.approx(np.hypot(rn_adu, ADC_SCALE / np.sqrt(12)), rel=0.1)
    # the glow corner right next to it is bright
    assert dark[-4:, EW - 4:EW].mean() > over_d.mean() + 1000


def test_adc_drift_moves_overscan_and_image_together() -> None:
    model = SensorModel(GEO, seed=15)
    rng1, rng2 = np.random.default_rng(5), np.random.default_rng(5)
    a = model.expose("bias", 0.0, 0.0, 120, 30, rng=rng1).astype(np.float64)
    b = model.expose("bias", 0.0, 0.0, 120, 30, adc_drift_adu=48.0, rng=rng2).astype(np.float64)
    assert b[OB:, EW:].mean() - a[OB:, EW:].mean() == pytest.approx(48.0, abs=2.0)
    assert b[OB:, :EW].mean() - a[OB:, :EW].mean() == pytest.approx(48.0, abs=2.0)


def test_glow_grows_super_linearly() -> None:
    assert glow_corner_e(600.0, "on") / glow_corner_e(300.0, "on") > 2.5
    model = SensorModel(GEO, seed=16, ob_clamping=False)
    corner = (slice(-20, None), slice(EW - 20, EW))
    means = {}
    for t in (300.0, 600.0):
        f = model.expose("dark", t, -20.0, 120, 30, amp_glow="on").astype(np.float64)
        means[t] = f[corner].mean() - pedestal_adu(30)
    assert means[600.0] / means[300.0] > 2.5
    off = model.expose("dark", 600.0, -20.0, 120, 30, amp_glow="off").astype(np.float64)[corner].mean()
    assert off - pedestal_adu(30) < 0.7 * means[600.0]


def test_quantisation_dtype_and_seeded_fixed_pattern() -> None:
    a = SensorModel(GEO, seed=17).expose("dark", 60.0, -10.0, 120, 30)
    assert a.dtype == np.uint16
    assert np.all(a % ADC_SCALE == 0)
    assert a.max() <= 65520
    # same seed → same fixed pattern (hot pixels identical), different seed → different
    long1 = SensorModel(GEO, seed=18).expose("dark", 600.0, 10.0, 120, 30, rng=np.random.default_rng(1))
    long2 = SensorModel(GEO, seed=18).expose("dark", 600.0, 10.0, 120, 30, rng=np.random.default_rng(2))
    long3 = SensorModel(GEO, seed=19).expose("dark", 600.0, 10.0, 120, 30, rng=np.random.default_rng(1))
    hot1, hot2, hot3 = (set(np.flatnonzero(x[OB:, :EW] > 20000)) for x in (long1, long2, long3))
    assert len(hot1) > 5 and len(hot1 & hot2) >= 0.8 * len(hot1) and len(hot1 & hot3) < 0.2 * len(hot1)


def test_flat_has_vignetting_and_light_leak_shows_in_darks() -> None:
    model = SensorModel(GEO, seed=20)
    flat = model.expose("flat", 2.0, -10.0, 120, 30).astype(np.float64)
    centre = flat[OB + 150:OB + 210, 210:270].mean()
    corner = flat[OB:OB + 30, 0:30].mean()
    assert corner < 0.95 * centre
    assert 0.25 * 65520 < centre < 0.6 * 65520
    dark = model.expose("dark", 60.0, -10.0, 120, 30).astype(np.float64)
    leak = model.expose("dark", 60.0, -10.0, 120, 30, light_leak_e_per_s=2.0).astype(np.float64)
    assert leak[CENTER].mean() - dark[CENTER].mean() > 60.0 / gain_e_per_adu(120) * 0.5


def test_bad_input_raises() -> None:
    model = SensorModel(GEO, seed=21)
    with pytest.raises(ValueError):
        model.expose("sky", 1.0, 0.0, 120, 30)
    with pytest.raises(ValueError):
        model.expose("dark", -1.0, 0.0, 120, 30)
    with pytest.raises(ValueError):
        model.expose("dark", 1.0, 0.0, 120, 30, amp_glow="maybe")


def test_light_frame_has_sky_and_stars_none_in_overscan() -> None:
    model = SensorModel(GEO, seed=22)
    light = model.expose("light", 30.0, -10.0, 120, 30).astype(np.float64)
    dark = model.expose("dark", 30.0, -10.0, 120, 30).astype(np.float64)
    sky_adu = 30.0 * 0.5 / gain_e_per_adu(120)  # SKY_E_PER_S × t, vignetted less than 25 % in the centre
    assert np.median(light[CENTER]) - np.median(dark[CENTER]) > 0.7 * sky_adu
    assert (light[OB:, :EW] > np.median(light[CENTER]) + 2000).sum() > 50  # stars
    assert abs(light[OB:, EW:].mean() - dark[OB:, EW:].mean()) < 40  # overscan sees no light
