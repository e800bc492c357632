"""`darkd measure ...` end to end on FITS files written from the seeded sensor model; report tables, JSON, plots."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from astropy.io import fits

from calib.frames import write_frame
from calib.measure.report import format_table, to_json
from daemon.cli import main
from drivers.sim import physics
from drivers.sim.physics import SMALL_GEOMETRY, SensorModel

GAIN_SETTING = 120
GAIN = physics.gain_e_per_adu(GAIN_SETTING)


@pytest.fixture(scope="module")
def frames(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("frames")
    model = SensorModel(SMALL_GEOMETRY, seed=61)
    g = model.geometry

    def write(name: str, kind: str, exposure_s: float) -> None:
        h = fits.Header()
        h["EXPTIME"], h["CCD-TEMP"] = exposure_s, -20.0
        h["DATASEC"], h["BIASSEC"], h["OBSEC"] = g.datasec, g.biassec, g.obsec
        write_frame(out / f"{name}.fits", model.expose(kind, exposure_s, -20.0, GAIN_SETTING, 30), h, bitpix16=True)

    for i in range(4):
        write(f"bias_{i}", "bias", 0.0001)
    for t in (30, 120, 600):
        for i in range(2):
            write(f"dark_{t:04d}s_{i}", "dark", float(t))
    for i in range(2):
        write(f"flat_{i}", "flat", 2.0)
    return out


def _run(capsys, argv: list[str]) -> tuple[int, str, str]:
    rc = main(argv)
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


def test_dark_current_json_is_one_object_with_the_contract_keys(frames, capsys, tmp_path) -> None:
    darks = [str(p) for p in sorted(frames.glob("dark_0600s_*.fits"))]
    rc, out, _ = _run(capsys, ["measure", "dark-current", "--darks", *darks, "--bias", *map(str, frames.glob(
        "bias_*.fits")), "--gain", str(GAIN), "--json", "--report", str(tmp_path / "r.json"), "--plot",
        str(tmp_path / "plots")])
    assert rc == 0
    res = json.loads(out)
    for key in ("dark_current_e_per_s", "dark_current_naive_e_per_s", "read_noise_e", "exposure_s", "frames",
                "n_frames", "method", "convergence", "naive_negative"):
        assert key in res
    truth = physics.dark_current_e_per_s(-20.0)
    assert abs(res["dark_current_e_per_s"] - truth) / truth < 0.15
    assert res["naive_negative"] is True
    assert json.loads((tmp_path / "r.json").read_text())["dark_current_e_per_s"] == res["dark_current_e_per_s"]
    assert (tmp_path / "plots" / "dark_current_convergence.png").stat().st_size > 10_000


def test_tables_verdict_and_gain(frames, capsys) -> None:
    rc, out, _ = _run(capsys, ["measure", "read-noise", "--bias", str(frames / "bias_0.fits"),
                               str(frames / "bias_1.fits"), "--gain", str(GAIN)])
    assert rc == 0 and "Read noise" in out and "e⁻" in out
    darks = sorted(str(p) for p in frames.glob("dark_*.fits"))
    rc, out, _ = _run(capsys, ["measure", "dark-ladder", "--darks", *darks, "--bias", str(frames / "bias_0.fits"),
                               str(frames / "bias_1.fits")])
    assert rc == 0 and "VERDICT: dark scaling is not valid for this camera" in out
    rc, out, _ = _run(capsys, ["measure", "gain", "--flats", str(frames / "flat_0.fits"), str(frames / "flat_1.fits"),
                               "--bias", str(frames / "bias_0.fits"), str(frames / "bias_1.fits"), "--json"])
    assert rc == 0 and abs(json.loads(out)["gain_e_per_adu"] - GAIN) / GAIN < 0.05


def test_bad_input_exits_2_with_a_message(frames, capsys) -> None:
    darks = sorted(str(p) for p in frames.glob("dark_0600s_*.fits"))
    rc, out, err = _run(capsys, ["measure", "dark-current", "--darks", *darks, "--bias", str(frames),
                                 "--gain", str(GAIN), "--region", "[400:490,20:300]"])
    assert rc == 2 and "overscan" in err and out == ""
    rc, _, err = _run(capsys, ["measure", "read-noise", "--bias", str(frames / "bias_0.fits"),
                               str(frames / "dark_0600s_0.fits")])
    assert rc == 2 and "mismatched exposure" in err
    rc, _, err = _run(capsys, ["measure", "read-noise", "--bias", str(frames / "nope.fits"), str(frames / "x.fits")])
    assert rc == 2 and "not found" in err


def test_report_json_drops_private_arrays_and_nan() -> None:
    import numpy as np

    out = to_json({"a": np.float64("nan"), "_glow_map": np.zeros(3), "b": [np.int64(2), np.bool_(True)]})
    assert out == {"a": None, "b": [2, True]}
    with pytest.raises(ValueError, match="unknown measurement"):
        format_table({"measurement": "nope"})
