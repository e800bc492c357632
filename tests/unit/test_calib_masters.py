"""Master bias/dark/flat: no bias subtraction from darks, flats bias-subtracted and normalized, input checks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

from calib.frames import read_frame, write_frame
from calib.masters import build_master

SHAPE = (48, 64)
BIAS_ADU = 500.0
READ_NOISE_ADU = 4.0


def _header(exposure_s: float, image_type: str, *, gain: int = 100, temp_c: float = -10.0) -> fits.Header:
    h = fits.Header()
    for key, value in (("EXPTIME", exposure_s), ("GAIN", gain), ("OFFSET", 30), ("XBINNING", 1), ("YBINNING", 1),
                       ("READMODE", 0), ("SET-TEMP", -10.0), ("CCD-TEMP", temp_c), ("IMAGETYP", image_type),
                       ("DATASEC", "[1:60,1:48]"), ("BIASSEC", "[61:64,1:48]")):
        h[key] = value
    return h


def _write(tmp_path: Path, name: str, images: list[np.ndarray], exposure_s: float, image_type: str,
           **kw: object) -> list[Path]:
    return [write_frame(tmp_path / f"{name}{i:02d}.fits", img, _header(exposure_s, image_type, **kw),  # type: ignore[arg-type]
                        bitpix16=True) for i, img in enumerate(images)]


def _bias_images(rng: np.random.Generator, n: int) -> list[np.ndarray]:
    return [BIAS_ADU + rng.normal(0, READ_NOISE_ADU, SHAPE) for _ in range(n)]


def test_master_bias_level_noise_and_header(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    paths = _write(tmp_path, "bias", _bias_images(rng, 16), 0.0, "Bias Frame")
    res = build_master("bias", paths, output=tmp_path / "mb.fits", extra_header={"LIBKEY": ("abc", "library key")})
    assert res.header["IMAGETYP"] == "Master Bias" and res.header["NCOMBINE"] == 16
    assert res.header["LIBKEY"] == "abc" and res.header["SET-TEMP"] == -10.0
    assert res.stats["n_frames"] == 16
    assert res.stats["mean_adu"] == pytest.approx(BIAS_ADU, abs=0.3)
    # a mean of 16 frames: sigma / 4 (plus quantisation of the 16-bit inputs)
    assert res.stats["noise_adu"] == pytest.approx(READ_NOISE_ADU / 4, rel=0.2)
    assert 0 <= res.stats["rejected_fraction"] < 0.02
    with fits.open(res.path) as hdul:
        assert hdul[0].header["IMAGETYP"] == "Master Bias" and "REJ_LOW" in hdul


def test_master_dark_is_not_bias_subtracted_and_counts_hot_pixels(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    dark_signal = 40.0
    hot = [(5, 7), (20, 30), (40, 11)]
    images = []
    for img in _bias_images(rng, 12):
        img = img + dark_signal
        for y, x in hot:
            img[y, x] += 2000.0
        images.append(img)
    paths = _write(tmp_path, "dark", images, 120.0, "Dark Frame")
    res = build_master("dark", paths, output=tmp_path / "md.fits")
    assert res.header["IMAGETYP"] == "Master Dark" and res.header["EXPTIME"] == 120.0
    median = float(np.median(read_frame(res.path).data))
    assert median == pytest.approx(BIAS_ADU + dark_signal, abs=0.5)  # the bias is still in the master dark
    assert res.stats["hot_pixels"] == len(hot)
    with pytest.raises(ValueError, match="not bias"):
        build_master("dark", paths, output=tmp_path / "md2.fits", bias=np.zeros(SHAPE))


def test_master_flat_subtracts_bias_and_normalizes(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    yy, xx = np.mgrid[0:SHAPE[0], 0:SHAPE[1]]
    vignetting = 1.0 - 0.3 * (((yy - 24) / 48.0) ** 2 + ((xx - 32) / 64.0) ** 2)
    levels = [20000.0, 24000.0, 18000.0, 22000.0, 21000.0, 19000.0, 23000.0, 20500.0]
    flats = [BIAS_ADU + level * vignetting + rng.normal(0, 50.0, SHAPE) for level in levels]
    flat_paths = _write(tmp_path, "flat", flats, 2.0, "Flat Field")
    bias = build_master("bias", _write(tmp_path, "bias", _bias_images(rng, 8), 0.0, "Bias Frame"),
                        output=tmp_path / "mb.fits")
    res = build_master("flat", flat_paths, output=tmp_path / "mf.fits", bias=bias.path)
    master = read_frame(res.path).data
    assert res.header["IMAGETYP"] == "Master Flat" and res.header["NORMALIZ"] == "multiplicative"
    assert res.header["CALBIAS"] == "mb.fits" and len(res.header["BIASSHA"]) == 64
    # bias removed: the shape is pure vignetting, normalised to mean 1 over DATASEC [1:60,1:48]; the level (the
    # first flat's) is kept in FLATNORM (ADU); the overscan strip [61:64] carries no illumination and is set to 1
    data, vig = master[:, :60], vignetting[:, :60]
    assert float(data.mean(dtype=np.float64)) == pytest.approx(1.0, abs=1e-6)
    np.testing.assert_allclose(data, vig / vig.mean(), atol=0.01)
    assert np.all(master[:, 60:] == 1.0)
    assert res.header["FLATNORM"] == pytest.approx(levels[0] * float(vig.mean()), rel=0.01)
    assert res.header["BUNIT"] == "adu/adu" and res.stats["mean_adu"] == pytest.approx(res.header["FLATNORM"])
    with pytest.raises(ValueError, match="master bias"):
        build_master("flat", flat_paths, output=tmp_path / "mf2.fits")
    flat_dark = np.full(SHAPE, BIAS_ADU, dtype=np.float32)
    res_fd = build_master("flat", flat_paths, output=tmp_path / "mf3.fits", flat_dark=flat_dark)
    assert "CALFDARK" in res_fd.header


def test_mismatched_inputs_are_refused_with_the_key_named(tmp_path: Path) -> None:
    rng = np.random.default_rng(4)
    good = _write(tmp_path, "a", _bias_images(rng, 3), 60.0, "Dark Frame")
    other_gain = _write(tmp_path, "g", _bias_images(rng, 1), 60.0, "Dark Frame", gain=200)
    with pytest.raises(ValueError, match="gain differs"):
        build_master("dark", [*good, *other_gain], output=tmp_path / "x.fits")
    other_exp = _write(tmp_path, "e", _bias_images(rng, 1), 30.0, "Dark Frame")
    with pytest.raises(ValueError, match="exposure differs"):
        build_master("dark", [*good, *other_exp], output=tmp_path / "x.fits")
    warm = _write(tmp_path, "w", _bias_images(rng, 1), 60.0, "Dark Frame", temp_c=-7.0)
    with pytest.raises(ValueError, match="temperature spread"):
        build_master("dark", [*good, *warm], output=tmp_path / "x.fits")
    assert not (tmp_path / "x.fits").exists()
    with pytest.raises(ValueError, match="unknown master kind"):
        build_master("light", good, output=tmp_path / "x.fits")
    with pytest.raises(ValueError, match="no input"):
        build_master("bias", [], output=tmp_path / "x.fits")
