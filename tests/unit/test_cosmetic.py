"""``darkd calibrate --cosmetic``: flagged pixels replaced by the median of their good neighbours (calib/cosmetic.py).

Masters and a light from the simulated QHY163M (in-process renderer, SMALL sensor), calibrated through the real CLI
entry point in process.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

from calib.calibration import calibrate_files
from calib.defects import read_master_defects
from calib.masters import build_master
from daemon.cli import main
from daemon.jobs.calibrate_job import CalibrateParams
from drivers.sim.physics import SMALL_GEOMETRY, SensorModel
from drivers.sim.rendering import ExposureRequest, render_fits

G = SMALL_GEOMETRY
EXPOSURE_S = 60.0
TEMPERATURE_C = 0.0  # warm: 0.05 e-/s, so the hot pixels' shot noise is visible in the light


def frame(model: SensorModel, kind: str, path: Path, seed: int) -> Path:
    request = ExposureRequest(kind, EXPOSURE_S, 120, 30, "auto", False, 1, (0, 0, G.effective_width,
                              G.effective_height), 0.0, datetime(2026, 1, 1, tzinfo=UTC), device_name="sim")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(render_fits(model, request, TEMPERATURE_C, 0.0, TEMPERATURE_C, np.random.default_rng(seed)))
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("cosmetic")
    model = SensorModel(G, seed=3)
    darks = [frame(model, "dark", root / "darks" / f"d{i}.fits", 100 + i) for i in range(6)]
    build_master("dark", darks, output=root / "md.fits")
    build_master("dark", darks, output=root / "md_nomap.fits", defects=False)
    return {"root": root, "dark": root / "md.fits", "dark_nomap": root / "md_nomap.fits",
            "light": frame(model, "light", root / "light.fits", 7)}


def neighbour_median(image: np.ndarray, bad: np.ndarray, y: int, x: int) -> float:
    box = image[max(0, y - 1):y + 2, max(0, x - 1):x + 2]
    ok = ~bad[max(0, y - 1):y + 2, max(0, x - 1):x + 2]
    ok[min(y, 1), min(x, 1)] = False
    return float(np.median(box[ok]))


def test_flagged_pixels_are_replaced_and_counted(files: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    plain = calibrate_files([files["light"]], dark=files["dark"], output_dir=files["root"] / "plain")[0]
    assert main(["calibrate", str(files["light"]), "--dark", str(files["dark"]), "--output-dir",
                 str(files["root"] / "cos"), "--cosmetic"]) == 0
    done = Path(capsys.readouterr().out.strip())
    mask = read_master_defects(files["dark"])
    assert mask is not None
    bad = mask.mask != 0
    assert bad.sum() >= 40  # the simulator's ~50 hot pixels and a few flickering ones
    before, after = fits.getdata(plain), fits.getdata(done)
    header = fits.getheader(done)
    assert header["COSMETIC"] == int(bad.sum())  # every flagged pixel has good neighbours
    assert header["COSMFLAG"] == "HOT WARM RTS COLD DEAD" and header["COSMMAPS"] == "md.fits"
    assert "darkd cosmetic" in str(header["HISTORY"])
    assert "COSMETIC" not in fits.getheader(plain)
    assert np.array_equal(before[~bad], after[~bad])  # good pixels untouched
    ys, xs = np.nonzero(bad)
    for y, x in zip(ys, xs, strict=True):
        assert after[y, x] == pytest.approx(neighbour_median(before, bad, y, x))
    # the hot pixels' shot noise is what dark subtraction cannot remove; replacement removes it
    medians = np.array([neighbour_median(before, bad, y, x) for y, x in zip(ys, xs, strict=True)])
    residual_before, residual_after = before[ys, xs] - medians, after[ys, xs] - medians
    assert np.abs(residual_after).max() == 0.0 and np.abs(residual_before).max() > 50.0


def test_cosmetic_without_a_defect_map_is_refused(files: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    out = files["root"] / "refused"
    assert main(["calibrate", str(files["light"]), "--dark", str(files["dark_nomap"]), "--output-dir", str(out),
                 "--cosmetic"]) == 2
    assert "MASK" in capsys.readouterr().err and not out.exists()
    with fits.open(files["dark_nomap"]) as hdul:
        assert "MASK" not in hdul and "DEFECTS" not in hdul[0].header


def test_the_calibrate_job_takes_cosmetic() -> None:
    assert CalibrateParams(output_dir="/tmp/out", lights=["/tmp/a.fits"]).cosmetic is False
    assert CalibrateParams(output_dir="/tmp/out", lights=["/tmp/a.fits"], cosmetic=True).cosmetic is True
