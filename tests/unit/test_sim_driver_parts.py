"""Pure parts of the simulated driver: environment defaults, FITS encoding, software binning."""

from __future__ import annotations

import io

import numpy as np
import pytest
from astropy.io import fits

from drivers.sim.driver import bin_frame, defaults_from_env
from drivers.sim.fits_image import fits_bytes


def test_env_defaults_and_errors() -> None:
    d = defaults_from_env({"DARKD_SIM_SENSOR": "small", "DARKD_SIM_TIME_SCALE": "100", "DARKD_SIM_SEED": "7",
                           "DARKD_SIM_AMBIENT_C": "12.5", "DARKD_SIM_LIGHT_LEAK": "0.5"})
    assert (d.sensor, d.time_scale, d.seed, d.ambient_c, d.light_leak_e_per_s) == ("SMALL", 100.0, 7, 12.5, 0.5)
    assert defaults_from_env({}).sensor == "FULL" and defaults_from_env({}).time_scale == 1.0
    with pytest.raises(ValueError, match="DARKD_SIM_SENSOR"):
        defaults_from_env({"DARKD_SIM_SENSOR": "HUGE"})
    with pytest.raises(ValueError, match="TIME_SCALE"):
        defaults_from_env({"DARKD_SIM_TIME_SCALE": "0"})
    with pytest.raises(ValueError, match="not a number"):
        defaults_from_env({"DARKD_SIM_AMBIENT_C": "warm"})


def test_fits_bytes_roundtrip_bzero_uint16() -> None:
    data = np.array([[0, 16, 32768], [65520, 4096, 1]], dtype=np.uint16)
    payload = fits_bytes(data, [("EXPTIME", 2.5, "s"), ("IMAGETYP", "Dark Frame", "type")])
    assert len(payload) % 2880 == 0
    with fits.open(io.BytesIO(payload)) as hdul:
        h = hdul[0].header
        assert (h["BITPIX"], h["BZERO"], h["EXPTIME"], h["IMAGETYP"]) == (16, 32768, 2.5, "Dark Frame")
        assert hdul[0].data.dtype == np.uint16 and np.array_equal(hdul[0].data, data)
    with pytest.raises(ValueError):
        fits_bytes(data.astype(np.float32), [])


def test_bin_frame_block_mean() -> None:
    data = np.arange(24, dtype=np.uint16).reshape(4, 6) * 16
    binned = bin_frame(data, 2)
    assert binned.shape == (2, 3) and binned.dtype == np.uint16
    assert binned[0, 0] == round(np.mean([0, 16, 96, 112]))
    assert bin_frame(data, 1) is data
    assert bin_frame(data[:3], 2).shape == (1, 3)  # partial blocks dropped
