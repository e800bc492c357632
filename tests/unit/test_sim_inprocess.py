"""The in-process simulated QHY163M (:mod:`drivers.sim.inprocess`): the Camera protocol, simulated time, faults.

The last test compares a frame with one from the INDI twin (real indiserver + ``indi_darkd_sim_ccd``) and is skipped
where those are not installed.
"""

from __future__ import annotations

import inspect
import subprocess
import sys
import threading
import time
import typing

import numpy as np
import pytest

from drivers.camera import (
    Camera,
    CameraDisconnected,
    CameraTimeout,
    CaptureSettings,
    ExposureAborted,
    ExposureFailed,
    FrameType,
    OverscanMode,
    SetPointUnreachable,
    SettingNotApplied,
)
from drivers.profiles import load_profile
from drivers.sim import physics
from drivers.sim.inprocess import ManualClock, ScaledClock, SimCamera, SimFaults
from tests.conftest import SIM_DEVICE, requires_sim_driver, sim_env

PROFILE = load_profile("qhy163m-sim-small")
SETTINGS = CaptureSettings(gain=120, offset=30, read_mode=0, usb_traffic=30, amp_glow="auto",
                           overscan=OverscanMode.INCLUDE)


def make_camera(**kwargs: typing.Any) -> SimCamera:
    camera = SimCamera(profile=PROFILE, **kwargs)
    camera.connect()
    return camera


def protocol_members() -> set[str]:
    """Every member the Camera protocol declares (methods, properties and attributes)."""
    declared = {name for name in vars(Camera) if not name.startswith("_")}
    return declared | set(typing.get_type_hints(Camera, localns={"CameraProfile": object}))


def test_imports_neither_pyindi_nor_indipydriver() -> None:
    code = ("import sys, drivers.sim, drivers.sim.inprocess; "
            "bad = [m for m in ('PyIndi', 'indipydriver') if m in sys.modules]; assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_both_backends_have_every_protocol_member_with_the_protocol_signatures() -> None:
    from drivers.indi.camera import IndiCamera

    members = protocol_members()
    assert {"profile", "reconnects", "reconnect_now", "wait_until_stable", "expose", "abort"} <= members
    for backend in (SimCamera(), IndiCamera()):
        missing = [m for m in members if not hasattr(type(backend), m) and m not in vars(backend)]
        assert not missing, f"{type(backend).__name__} lacks {missing}"
        for name in ("wait_until_stable", "expose", "set_temperature", "warm_up", "connect"):
            want = list(inspect.signature(getattr(Camera, name)).parameters)[1:]
            have = list(inspect.signature(getattr(backend, name)).parameters)
            assert have == want, f"{type(backend).__name__}.{name}{have} differs from the protocol {want}"
    assert isinstance(make_camera(), Camera)


def test_a_600_s_dark_and_a_20_minute_cool_down_take_milliseconds() -> None:
    camera = make_camera()
    camera.apply_settings(SETTINGS)
    started = time.perf_counter()
    camera.set_temperature(-10.0, 2.0)  # 30 °C at 2 °C/min: 15 minutes of ramp, then the TEC settles
    sample = camera.wait_until_stable(-10.0, tolerance_c=0.2, hold_s=60.0, timeout_s=3600.0)
    cooled_s = camera.clock.monotonic()
    frame = camera.expose(FrameType.DARK, 600.0)
    wall_s = time.perf_counter() - started
    assert 15 * 60 < cooled_s < 30 * 60 and abs(sample.temperature_c + 10) <= 0.2
    assert camera.clock.monotonic() - cooled_s >= 600.0
    assert wall_s < 2.0, f"{wall_s:.2f} s of wall time"
    assert frame.data.shape == (368, 496) and frame.data.dtype == np.uint16
    assert frame.header["EXPTIME"] == 600.0 and frame.header["SET-TEMP"] == -10.0
    assert abs(frame.temperature_start_c + 10) <= 0.3 and abs(frame.temperature_end_c + 10) <= 0.3
    assert frame.temperature_min_c <= frame.temperature_max_c
    state = camera.state()
    assert state.connected and state.cooler_on and state.stable and state.gain == 120


def test_unreachable_set_point_and_cooling_timeout() -> None:
    camera = make_camera(ambient_c=30.0, max_delta_c=38.0)  # the TEC cannot go below −8 °C
    camera.set_temperature(-15.0)
    with pytest.raises(SetPointUnreachable) as err:
        camera.wait_until_stable(-15.0, timeout_s=7200.0, unreachable_window_s=120.0)
    assert -8.5 < err.value.reachable_c < -7.0
    assert err.value.ambient_limit_c == pytest.approx(30.0 - PROFILE.max_cooling_delta_c, abs=0.2)
    camera.set_temperature(-5.0)
    with pytest.raises(CameraTimeout, match="not stable"):
        camera.wait_until_stable(-5.0, timeout_s=30.0)


def test_settings_read_back_refusals_roi_and_binning() -> None:
    camera = make_camera()
    applied = camera.apply_settings(CaptureSettings(gain=200, offset=10, binning=2, subframe=(0, 0, 200, 100)))
    assert (applied.gain, applied.offset, applied.binning, applied.subframe) == (200, 10, 2, (0, 0, 200, 100))
    frame = camera.expose(FrameType.BIAS, 0.0)
    assert frame.data.shape == (50, 100) and frame.header["XBINNING"] == 2 and frame.header["GAIN"] == 200
    with pytest.raises(SettingNotApplied, match="gain 999"):
        camera.apply_settings(CaptureSettings(gain=999))
    with pytest.raises(SettingNotApplied, match="frame requested"):
        camera.apply_settings(CaptureSettings(subframe=(400, 0, 200, 100)))
    with pytest.raises(SettingNotApplied, match="outside the driver's range"):
        camera.set_temperature(-80.0)
    caps = camera.apply_settings(CaptureSettings(overscan=OverscanMode.IGNORE)) and camera.capabilities
    assert (caps.width_px, caps.height_px) == (480, 360)


def test_exposure_failure_dropped_download_and_light_leak() -> None:
    faults = SimFaults(fail_exposures=1, drop_downloads=1)
    camera = make_camera(faults=faults)
    camera.apply_settings(SETTINGS)
    with pytest.raises(ExposureFailed, match="Alert"):
        camera.expose(FrameType.DARK, 60.0)
    before_s = camera.clock.monotonic()
    with pytest.raises(CameraTimeout, match="no image"):
        camera.expose(FrameType.DARK, 60.0)
    assert camera.clock.monotonic() - before_s >= camera.download_timeout_s(60.0)
    clean = camera.expose(FrameType.DARK, 60.0).data[8:, :480].mean()
    faults.leak_frames = 1
    leaky = camera.expose(FrameType.DARK, 60.0).data[8:, :480].mean()
    again = camera.expose(FrameType.DARK, 60.0).data[8:, :480].mean()
    leak_adu = faults.leak_e_per_s * 60.0 / physics.gain_e_per_adu(120) * 0.8  # vignetting: ≥ 80 % in the centre
    assert leaky - clean > leak_adu * 0.5 and abs(again - clean) < 20
    assert camera.exposures == 5


def test_disconnect_mid_exposure_then_transparent_reconnect_restores_settings_and_set_point() -> None:
    camera = make_camera(faults=SimFaults(disconnect_exposures=1))
    camera.apply_settings(SETTINGS)
    camera.set_temperature(-5.0)
    with pytest.raises(CameraDisconnected):
        camera.expose(FrameType.DARK, 100.0)
    assert not camera.state().connected
    camera.faults.refuse_connects = 2  # the server is still away for two attempts
    frame = camera.expose(FrameType.DARK, 10.0)  # reconnects by itself
    assert camera.reconnects == 1 and camera.state().connected
    assert frame.header["GAIN"] == 120 and frame.header["OVSCMODE"] == "include" and frame.header["SET-TEMP"] == -5.0


def test_reconnect_gives_up_after_its_bound() -> None:
    camera = make_camera(reconnect_timeout_s=10.0)
    camera.drop_connection()
    camera.faults.refuse_connects = 1000
    with pytest.raises(CameraDisconnected, match="could not reconnect"):
        camera.expose(FrameType.DARK, 1.0)
    assert camera.clock.monotonic() >= 10.0


def test_abort_from_another_thread_ends_the_exposure_at_once() -> None:
    camera = make_camera(clock=ScaledClock(time_scale=100.0))  # a 600 s dark: 6 s of wall time
    threading.Timer(0.2, camera.abort).start()
    started = time.perf_counter()
    with pytest.raises(ExposureAborted):
        camera.expose(FrameType.DARK, 600.0)
    assert time.perf_counter() - started < 1.5 and camera.aborted == 1
    assert not camera.state().exposing
    assert camera.expose(FrameType.BIAS, 0.0).data.shape == (360, 480)  # the next exposure is unaffected


def test_warm_up_ramps_and_switches_the_cooler_off() -> None:
    camera = make_camera()
    camera.set_temperature(-10.0)
    camera.wait_until_stable(-10.0, hold_s=10.0)
    started_s = camera.clock.monotonic()
    camera.warm_up(15.0, rate_c_per_min=5.0)
    state = camera.state()
    assert not state.cooler_on and state.set_point_c is None and state.temperature_c >= 14.4
    assert camera.clock.monotonic() - started_s >= 25 / 5 * 60  # 25 °C at 5 °C/min


def test_manual_clock_dates_frames_in_simulated_time() -> None:
    clock = ManualClock()
    camera = make_camera(clock=clock)
    first = camera.expose(FrameType.DARK, 300.0)
    second = camera.expose(FrameType.DARK, 300.0)
    assert (second.started_utc - first.started_utc).total_seconds() == pytest.approx(300.0, abs=1.0)
    assert first.header["DATE-OBS"].startswith(clock.start_utc.strftime("%Y-%m-%dT%H:%M"))


@requires_sim_driver
@pytest.mark.integration
def test_same_header_keys_and_levels_as_the_indi_twin() -> None:
    """One bias and one dark from the INDI simulator (real indiserver) and from SimCamera: the same keys, the same
    values for everything but times and temperatures, the same bias level and the same fixed pattern (same seed)."""
    from drivers.indi.camera import IndiCamera
    from tests.indi_server import running_indiserver

    frames = {}
    with running_indiserver(["indi_darkd_sim_ccd"], env=sim_env(seed=1)) as server:
        indi = IndiCamera(port=server.port, device=SIM_DEVICE, profile=PROFILE)
        indi.connect(20.0)
        try:
            indi.apply_settings(SETTINGS)
            frames["indi"] = [indi.expose(FrameType.BIAS, 0.0), indi.expose(FrameType.DARK, 60.0)]
        finally:
            indi.disconnect()
    sim = make_camera(seed=1)
    sim.apply_settings(SETTINGS)
    frames["sim"] = [sim.expose(FrameType.BIAS, 0.0), sim.expose(FrameType.DARK, 60.0)]
    structural = {"SIMPLE", "BITPIX", "NAXIS", "NAXIS1", "NAXIS2", "EXTEND"}  # written by CFITSIO / astropy ...
    structural |= {"COMMENT"}  # ... with CFITSIO's two format comments; "Generated by INDI" is compared below
    varying = {"DATE-OBS", "CCD-TEMP", "CCDTEMP1", "CCDTEMP2", "CCDTMIN", "CCDTMAX", "COOLPWR1", "COOLPWR2", "COOLPWR"}
    for indi_frame, sim_frame in zip(frames["indi"], frames["sim"], strict=True):
        indi_keys = [k for k in indi_frame.header if k not in structural]
        assert indi_keys == [k for k in sim_frame.header if k not in structural]
        for key in set(indi_keys) - varying:
            assert indi_frame.header[key] == sim_frame.header[key], key
        assert indi_frame.data.shape == sim_frame.data.shape
        assert abs(float(np.median(indi_frame.data)) - float(np.median(sim_frame.data))) < 40
        assert "Generated by INDI" in str(indi_frame.header["COMMENT"]) and \
            "Generated by INDI" in str(sim_frame.header["COMMENT"])
    other = make_camera(seed=2)
    other.apply_settings(SETTINGS)
    frames["other"] = [other.expose(FrameType.DARK, 60.0)]

    def pattern(frame: typing.Any) -> np.ndarray:
        data = np.minimum(frame.data[8:, :480].astype(float), 60000.0)  # clip the (saturated) hottest pixels
        return (data - np.median(data)).ravel()

    same = np.corrcoef(pattern(frames["indi"][1]), pattern(frames["sim"][1]))[0, 1]
    different = np.corrcoef(pattern(frames["indi"][1]), pattern(frames["other"][0]))[0, 1]
    assert same > different + 0.2, (same, different)  # the same seed: the same fixed pattern (DSNU, hot pixels)


def test_the_daemon_runtime_runs_on_the_in_process_camera(tmp_path: typing.Any) -> None:
    """``Runtime(camera_factory=open_sim_camera)``: the monitor connects, ``GET /camera`` reads the protocol's
    ``reconnects``, and the warm-up at shutdown is handed to the driver's ramp (``capabilities.has_temp_ramp``)."""
    from daemon.runtime import Runtime
    from daemon.settings import LibrarySettings, Settings
    from drivers.sim.factory import open_sim_camera

    camera = open_sim_camera(time_scale=None)
    settings = Settings(camera_profile="qhy163m-sim-small", library=LibrarySettings(root=tmp_path / "library"))
    runtime = Runtime(settings, camera_factory=lambda: camera, start_engine=False, monitor_interval_s=0.02,
                      warm_on_shutdown=True).start()
    try:
        deadline = time.monotonic() + 10
        while not runtime.camera_state()[0].connected and time.monotonic() < deadline:
            time.sleep(0.02)
        camera.set_temperature(-10.0)
        while not runtime.camera_state()[0].cooler_on and time.monotonic() < deadline:
            time.sleep(0.02)
        snapshot = runtime.camera_snapshot()
        assert snapshot["connected"] and snapshot["device"] == SIM_DEVICE and snapshot["reconnects"] == 0
        recorded = runtime.index.camera_defaults(SIM_DEVICE)  # the driver's state on connect, for lights' rule
        assert recorded is not None and recorded[0]["overscan"] == "ignore" and recorded[0]["read_mode"] == 0
    finally:
        runtime.stop()
    state = camera.state()
    assert not state.connected and state.set_point_c == settings.cooling.warm_up_target_c  # ramp handed over
