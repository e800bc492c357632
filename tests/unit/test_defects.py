"""Defect maps (calib/defects.py) on synthetic sensors whose defects are known pixel by pixel."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

from calib.defects import (
    Defect,
    DefectMap,
    DefectThresholds,
    build_defect_map,
    dark_slope_adu_per_s,
    defect_hdu,
    defect_stats,
    ekos_defect_map,
    hot_pixel_drift,
    master_defect_map,
    phd2_defect_map_text,
    read_defect_hdu,
    replace_defects,
    stack_spread_adu,
    temporal_std,
)

SHAPE = (120, 160)
READ_NOISE_ADU = 4.0


def positions(rng: np.random.Generator, n: int, taken: set[tuple[int, int]]) -> list[tuple[int, int]]:
    """``n`` distinct (y, x) positions at least 3 pixels from the edge and from each other and from ``taken``."""
    out: list[tuple[int, int]] = []
    while len(out) < n:
        y, x = int(rng.integers(3, SHAPE[0] - 3)), int(rng.integers(3, SHAPE[1] - 3))
        if all(abs(y - b) > 2 or abs(x - a) > 2 for b, a in [*out, *taken]):
            out.append((y, x))
    taken.update(out)
    return out


def glow() -> np.ndarray:
    """A smooth amp-glow ramp towards one corner (ADU per second of exposure)."""
    yy, xx = np.mgrid[0:SHAPE[0], 0:SHAPE[1]]
    return 0.5 * np.exp(-(np.hypot(yy, xx - SHAPE[1])) / 25.0)


@pytest.fixture
def sensor() -> dict[str, object]:
    rng = np.random.default_rng(11)
    taken: set[tuple[int, int]] = set()
    hot, warm, rts, cold, dead = (positions(rng, n, taken) for n in (12, 8, 6, 10, 4))
    return {"rng": rng, "hot": hot, "warm": warm, "rts": rts, "cold": cold, "dead": dead}


def dark_minus_bias(sensor: dict[str, object], exposure_s: float, n_frames: int = 1) -> np.ndarray:
    """A master ``D − B`` at ``exposure_s``: glow, hot pixels (fixed 400 ADU), warm pixels (2 ADU/s), noise."""
    rng: np.random.Generator = sensor["rng"]  # type: ignore[assignment]
    data = glow() * exposure_s + rng.normal(0.0, READ_NOISE_ADU / np.sqrt(n_frames), SHAPE)
    for y, x in sensor["hot"]:  # type: ignore[attr-defined]
        data[y, x] += 400.0
    for y, x in sensor["warm"]:  # type: ignore[attr-defined]
        data[y, x] += 2.0 * exposure_s
    return data


def test_hot_pixels_are_found_and_glow_is_not_a_defect(sensor: dict[str, object]) -> None:
    defects = build_defect_map(SHAPE, dark_minus_bias=dark_minus_bias(sensor, 120.0, n_frames=20))
    found = {(int(y), int(x)) for x, y in defects.positions(Defect.HOT)}
    expected = set(sensor["hot"]) | set(sensor["warm"])  # type: ignore[arg-type]  # warm: +240 ADU at 120 s
    assert expected <= found
    assert len(found - expected) <= 1  # at most one 5σ noise pixel in 19 200, and not the glow corner
    assert defects.tested == frozenset({Defect.HOT})
    assert defects.count(Defect.WARM) == 0


def test_warm_pixels_grow_with_exposure_and_fixed_offsets_are_not_warm(sensor: dict[str, object]) -> None:
    exposures = [30.0, 120.0, 300.0]
    ladder = [dark_minus_bias(sensor, t, n_frames=20) for t in exposures]
    slope = dark_slope_adu_per_s(exposures, ladder)
    y, x = sensor["warm"][0]  # type: ignore[index]
    assert slope[y, x] == pytest.approx(2.0 + glow()[y, x], abs=0.1)
    defects = build_defect_map(SHAPE, dark_minus_bias=ladder[-1], ladder=(exposures, ladder))
    warm = {(int(y), int(x)) for x, y in defects.positions(Defect.WARM)}
    assert set(sensor["warm"]) <= warm  # type: ignore[arg-type]
    assert not warm & set(sensor["hot"])  # type: ignore[arg-type]  # 400 ADU at every exposure: no growth
    hot = {(int(y), int(x)) for x, y in defects.positions(Defect.HOT)}
    assert set(sensor["warm"]) <= hot  # type: ignore[arg-type]  # at 300 s a warm pixel is also hot in that master


def test_rts_pixels_flicker_between_two_levels(sensor: dict[str, object]) -> None:
    rng: np.random.Generator = sensor["rng"]  # type: ignore[assignment]
    frames = []
    for _ in range(30):
        frame = rng.normal(500.0, READ_NOISE_ADU, SHAPE)
        for y, x in sensor["rts"]:  # type: ignore[attr-defined]
            frame[y, x] += 60.0 * rng.integers(0, 2)  # a telegraph signal: 0 or +60 ADU
        frames.append(frame)
    spread = temporal_std(frames)
    assert float(np.median(spread)) == pytest.approx(READ_NOISE_ADU, rel=0.05)
    defects = build_defect_map(SHAPE, temporal_std_adu=spread)
    assert {(int(y), int(x)) for x, y in defects.positions(Defect.RTS)} == set(sensor["rts"])  # type: ignore[arg-type]


def test_cold_and_dead_pixels_from_a_normalised_flat(sensor: dict[str, object]) -> None:
    rng: np.random.Generator = sensor["rng"]  # type: ignore[assignment]
    yy, xx = np.mgrid[0:SHAPE[0], 0:SHAPE[1]]
    flat = 1.0 + 0.2 * np.cos((xx - 80) / 60.0) * np.cos((yy - 60) / 60.0) + rng.normal(0, 0.01, SHAPE)  # vignetting
    flat /= flat.mean()
    for y, x in sensor["cold"]:  # type: ignore[attr-defined]
        flat[y, x] *= 0.5
    for y, x in sensor["dead"]:  # type: ignore[attr-defined]
        flat[y, x] = 0.0
    defects = build_defect_map(SHAPE, normalised_flat=flat)
    assert {(int(y), int(x)) for x, y in defects.positions(Defect.COLD)} == set(sensor["cold"])  # type: ignore[arg-type]
    assert {(int(y), int(x)) for x, y in defects.positions(Defect.DEAD)} == set(sensor["dead"])  # type: ignore[arg-type]


def test_replacement_uses_the_median_of_good_neighbours_only() -> None:
    image = np.arange(25, dtype=np.float32).reshape(5, 5)
    mask = np.zeros((5, 5), np.uint8)
    mask[2, 2] = Defect.HOT
    mask[2, 3] = Defect.COLD  # a flagged neighbour must not vote
    out, replaced = replace_defects(image, mask, Defect.HOT)
    assert replaced == 1
    assert out[2, 2] == np.median([6, 7, 8, 11, 13, 16, 17, 18])  # 13 is flagged COLD but not replaced here: it votes
    out, replaced = replace_defects(image, mask)
    assert replaced == 2
    assert out[2, 2] == np.median([6, 7, 8, 11, 16, 17, 18])
    assert image[2, 2] == 12  # the input is untouched
    # a pixel whose 3x3 box is all bad falls back to 5x5
    block = np.zeros((7, 7), np.uint8)
    block[2:5, 2:5] = Defect.DEAD
    out, replaced = replace_defects(np.ones((7, 7), np.float32) * 7, block)
    assert replaced == 9 and np.all(out == 7)


def test_the_map_round_trips_through_a_mask_extension_that_ccdproc_reads(tmp_path: Path) -> None:
    ccdproc = pytest.importorskip("ccdproc")
    mask = np.zeros(SHAPE, np.uint8)
    mask[5, 7] = Defect.HOT
    mask[9, 11] = Defect.COLD | Defect.DEAD
    defects = DefectMap(mask=mask, thresholds=DefectThresholds(k_hot=4.5), tested=frozenset({Defect.HOT}))
    primary = fits.PrimaryHDU(np.zeros(SHAPE, np.float32))
    primary.header["BUNIT"] = "adu"
    path = tmp_path / "master.fits"
    fits.HDUList([primary, defect_hdu(defects)]).writeto(path)
    with fits.open(path) as hdul:
        back = read_defect_hdu(hdul["MASK"])
        assert hdul["MASK"].header["NHOT"] == 1 and hdul["MASK"].header["NDEAD"] == 1
    assert np.array_equal(back.mask, mask) and back.thresholds.k_hot == 4.5 and back.tested == defects.tested
    ccd = ccdproc.CCDData.read(path)
    assert ccd.mask is not None and int(ccd.mask.sum()) == 2 and ccd.mask[5, 7] and ccd.mask[9, 11]


def test_exports_for_phd2_and_ekos() -> None:
    mask = np.zeros((4, 6), np.uint8)
    mask[1, 4] = Defect.HOT
    mask[3, 0] = Defect.DEAD
    mask[2, 2] = Defect.RTS  # not a fixed defect for PHD2's list
    defects = DefectMap(mask=mask)
    text = phd2_defect_map_text(defects, {"Camera": "ZWO CCD ASI120MM"})
    lines = text.splitlines()
    assert lines[0] == "# PHD2 Defect Map v1" and "# Camera: ZWO CCD ASI120MM" in lines
    assert "# Defect count: 2" in lines
    assert [line for line in lines if not line.startswith("#")] == ["4 1", "0 3"]  # x y, 0-based
    dark = np.full((4, 6), 100.0)
    dark[1, 4] = 900.0
    doc = json.loads(ekos_defect_map(defects, dark, "ZWO CCD ASI120MM"))
    assert doc["camera"] == "ZWO CCD ASI120MM" and doc["median"] == 100.0
    assert {(p["x"], p["y"], p["value"]) for p in doc["hot"]} == {(4, 1, 900.0), (2, 2, 100.0)}
    assert doc["cold"] == [{"x": 0, "y": 3, "value": 100.0}]


def test_bad_input_is_refused_with_the_reason() -> None:
    with pytest.raises(ValueError, match="2 darks at distinct exposures"):
        dark_slope_adu_per_s([60.0, 60.0], [np.zeros(SHAPE), np.zeros(SHAPE)])
    with pytest.raises(ValueError, match="HOT test input has shape"):
        build_defect_map(SHAPE, dark_minus_bias=np.zeros((10, 10)))
    with pytest.raises(ValueError, match="k_hot must be > 0"):
        DefectThresholds(k_hot=0)
    with pytest.raises(ValueError, match="differ in shape"):
        replace_defects(np.zeros((3, 3)), np.zeros((4, 4), np.uint8))


def test_the_stack_spread_ignores_a_cosmic_ray_but_not_a_telegraph_pixel(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    paths = []
    for i in range(10):
        frame = rng.normal(1000.0, READ_NOISE_ADU, SHAPE)
        frame[40, 50] += 3000.0 if i == 4 else 0.0  # one cosmic ray
        frame[60, 70] += 60.0 * (i % 2)  # a telegraph pixel, high in every other frame
        path = tmp_path / f"f{i}.fits"
        fits.PrimaryHDU(frame.astype(np.float32)).writeto(path)
        paths.append(path)
    spread, used = stack_spread_adu(paths, max_frames=8, band_rows=32)  # bands not dividing the 120 rows
    assert used == 8
    # dropping each pixel's highest of 8 Gaussian values leaves a spread ≈ 0.80 σ (the same for every pixel)
    assert float(np.median(spread)) == pytest.approx(0.80 * READ_NOISE_ADU, rel=0.05)
    assert spread[40, 50] < 3 * READ_NOISE_ADU and spread[60, 70] > 20.0
    defects = build_defect_map(SHAPE, temporal_std_adu=spread)
    assert {(int(y), int(x)) for x, y in defects.positions(Defect.RTS)} == {(60, 70)}
    with pytest.raises(ValueError, match="at least 3 frames"):
        stack_spread_adu(paths[:2])


def test_a_master_flats_map_covers_datasec_only() -> None:
    flat = np.ones((20, 30))
    flat[5, 5] = 0.0  # dead, inside DATASEC [1:24,1:20]
    flat[6, 27] = 0.0  # in the overscan columns: not tested
    found = master_defect_map("flat", flat * 5000.0, {"DATASEC": "[1:24,1:20]"})
    assert found.mask.shape == (20, 30) and found.tested == frozenset({Defect.COLD, Defect.DEAD})
    assert found.positions().tolist() == [[5, 5]]
    assert dict((k, v) for k, v, _ in found.cards)["DFREGION"] == "[1:24,1:20]"
    assert defect_stats(found) == {"defects_cold": 0, "defects_dead": 1, "defects_total": 1}
    with pytest.raises(ValueError, match="unknown master kind"):
        master_defect_map("light", flat)


def test_drift_needs_a_relative_and_an_absolute_rise() -> None:
    def with_hot(n: int, k_hot: float = 5.0) -> DefectMap:
        mask = np.zeros(SHAPE, np.uint8)
        mask.ravel()[:n] = Defect.HOT
        return DefectMap(mask=mask, thresholds=DefectThresholds(k_hot=k_hot))

    assert hot_pixel_drift(with_hot(100), with_hot(120)).warning is None  # +20 % is the limit, not beyond it
    rise = hot_pixel_drift(with_hot(100), with_hot(121))
    assert rise.warning is not None and rise.appeared == 21 and rise.vanished == 0
    assert hot_pixel_drift(with_hot(3), with_hot(7)).warning is None  # +133 % but only 4 pixels
    assert hot_pixel_drift(with_hot(3), with_hot(8)).warning is not None
    assert hot_pixel_drift(with_hot(10), with_hot(5)).change_fraction == -0.5
    with pytest.raises(ValueError, match="different thresholds"):
        hot_pixel_drift(with_hot(10), with_hot(10, k_hot=4.0))
