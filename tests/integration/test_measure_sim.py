"""Camera characterisation on frames captured through the real indiserver from the simulated QHY163M.

Biases, flats and equal 600 s darks at −20 °C (SMALL sensor, time scale 600, seed 7, ambient 10 °C so the TEC reaches
−20 °C) via ``capture_series``; then ``darkd measure gain`` and ``darkd measure dark-current --json`` as a user would
run them, the dark current computed with the *measured* gain. Truth: drivers/sim/physics.py at the sensor temperature
recorded in the headers. Tolerances: dark current 15 % (the paper's pair method has a few % statistical error on this
sensor area and an RTS/quantisation bias of ~1 %), gain and read noise 5 %.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from calib.frames import read_header
from daemon.capture import SeriesRequest, capture_series
from daemon.settings import CoolingSettings
from drivers.camera import CaptureSettings, FrameType, OverscanMode
from drivers.profiles import load_profile
from drivers.sim import physics
from tests.conftest import SIM_DRIVER, requires_sim_driver, sim_env
from tests.indi_server import IndiServer

pytestmark = [pytest.mark.integration,
              requires_sim_driver]

DARKD = str(Path(sys.executable).parent / "darkd")
SET_POINT_C = -20.0
GAIN_SETTING, OFFSET = 120, 30
DARK_S = 600.0
SETTINGS = CaptureSettings(gain=GAIN_SETTING, offset=OFFSET, binning=1, read_mode=0, amp_glow="auto",
                           overscan=OverscanMode.INCLUDE)
COOLING = CoolingSettings(tolerance_c=0.2, hold_s=1.0, timeout_s=60.0, unreachable_window_s=2.0,
                          reconnect_timeout_s=30.0)


def _darkd(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([DARKD, "measure", *args], capture_output=True, text=True, timeout=60, check=False)


@pytest.fixture(scope="module")
def frames(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[Path]]:
    from drivers.indi.camera import IndiCamera

    out = tmp_path_factory.mktemp("measure_sim")
    server = IndiServer([SIM_DRIVER], env=sim_env(time_scale=600, seed=7, ambient_c=10),
                        log_path=out / "indiserver.log").start()
    try:
        camera = IndiCamera(port=server.port, profile=load_profile("qhy163m-sim-small"), reconnect_timeout_s=30.0,
                            sample_interval_s=0.2)
        camera.connect(20)
        try:
            got: dict[str, list[Path]] = {}
            for kind, frame_type, exposure_s, count in (("bias", FrameType.BIAS, 0.0, 4),
                                                        ("flat", FrameType.FLAT, 1.0, 2),
                                                        ("dark", FrameType.DARK, DARK_S, 4)):
                req = SeriesRequest(frame_type, exposure_s, count, SET_POINT_C, SETTINGS, kind)
                result = capture_series(camera, req, out / kind, cooling=COOLING)
                got[kind] = [r.path for r in result.frames]
            return got
        finally:
            camera.disconnect()
    finally:
        server.stop()


def test_dark_current_gain_and_read_noise_against_the_simulator(frames: dict[str, list[Path]]) -> None:
    biases = [str(p) for p in frames["bias"]]
    gain_run = _darkd("gain", "--flats", *map(str, frames["flat"]), "--bias", *biases[:2], "--json")
    assert gain_run.returncode == 0, gain_run.stderr
    gain = json.loads(gain_run.stdout)["gain_e_per_adu"]
    true_gain = physics.gain_e_per_adu(GAIN_SETTING)
    assert abs(gain - true_gain) / true_gain < 0.05

    run = _darkd("dark-current", "--darks", *map(str, frames["dark"]), "--bias", *biases, "--gain", repr(gain),
                 "--json")
    assert run.returncode == 0, run.stderr
    res = json.loads(run.stdout)
    temps = [read_header(p)["CCD-TEMP"] for p in frames["dark"]]
    assert abs(np.mean(temps) - SET_POINT_C) < 0.3
    truth = physics.dark_current_e_per_s(float(np.mean(temps)))
    assert res["exposure_s"] == DARK_S and res["n_frames"] == 4 and len(res["frames"]) == 4
    assert abs(res["dark_current_e_per_s"] - truth) / truth < 0.15, (res["dark_current_e_per_s"], truth)
    assert res["dark_current_ci_e_per_s"][0] < truth * 1.15 and res["dark_current_ci_e_per_s"][1] > truth * 0.85
    # optical-black clamping with the glow in the OB rows: the naive mean method goes negative at 600 s, with or
    # without the overscan correction (the clamp acts before the ADC, the overscan cannot see it)
    assert res["dark_current_naive_e_per_s"] < 0 and res["naive_negative"] is True
    assert res["dark_current_naive_overscan_e_per_s"] < 0
    true_ron = physics.read_noise_e(GAIN_SETTING)
    assert abs(res["read_noise_e"] - true_ron) / true_ron < 0.05
    assert res["read_noise_source"] == "measured from 4 biases"
