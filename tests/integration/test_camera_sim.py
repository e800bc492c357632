"""IndiCamera + capture service against the real indiserver running our simulated QHY163M (SMALL sensor, fast time).

Assertions use the simulator's documented physics (drivers.sim.physics): overscan carries pedestal + read noise only.
Each test starts its own server; indiserver gets its own local socket (``-u``) so tests never collide with another
indiserver on the machine.
"""

from __future__ import annotations

import logging
import math
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

from calib.frames import read_frame
from daemon.capture import FrameRecord, SeriesRequest, capture_series, cool_and_wait
from daemon.settings import CoolingSettings
from drivers.camera import (
    CameraDisconnected,
    CameraTimeout,
    CaptureSettings,
    ExposureFailed,
    FrameType,
    OverscanMode,
    SetPointUnreachable,
    SettingNotApplied,
)
from drivers.profiles import load_profile
from tests.conftest import SIM_DEVICE, SIM_DRIVER, requires_sim_driver, sim_env
from tests.indi_server import IndiServer

pytestmark = [pytest.mark.integration,
              requires_sim_driver]

PROFILE = load_profile("qhy163m-sim-small")
TIME_SCALE = 300  # the cooler's 120 s time constant takes 0.4 s of wall time; a 100 s dark 0.33 s
COOLING = CoolingSettings(tolerance_c=0.2, hold_s=1.0, timeout_s=60.0, unreachable_window_s=2.0,
                          reconnect_timeout_s=30.0)
SETTINGS = CaptureSettings(gain=120, offset=30, binning=1, read_mode=0, amp_glow="auto", overscan=OverscanMode.INCLUDE)



@pytest.fixture
def start_sim(tmp_path: Path) -> Iterator[Callable[..., IndiServer]]:
    servers: list[IndiServer] = []

    def start(**overrides: str | float) -> IndiServer:
        overrides.setdefault("time_scale", TIME_SCALE)
        server = IndiServer([SIM_DRIVER], env=sim_env(**overrides),
                                 log_path=tmp_path / f"indiserver{len(servers)}.log").start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


@pytest.fixture
def sim(start_sim: Callable[..., IndiServer]) -> IndiServer:
    return start_sim()


def make_camera(server: IndiServer, **kwargs: object):  # type: ignore[no-untyped-def]
    from drivers.indi.camera import IndiCamera

    camera = IndiCamera(port=server.port, profile=PROFILE, reconnect_timeout_s=30.0, sample_interval_s=0.2,
                        **kwargs)  # type: ignore[arg-type]
    camera.connect(20)
    return camera


@pytest.fixture
def camera(sim: IndiServer) -> Iterator[object]:
    cam = make_camera(sim)
    yield cam
    cam.disconnect()


def test_capabilities_and_every_setting_read_back(camera) -> None:  # type: ignore[no-untyped-def]
    caps = camera.capabilities
    assert caps.device == SIM_DEVICE
    assert caps.has_cooler and caps.has_cooler_power and caps.has_temp_ramp and caps.has_overscan
    assert caps.has_gain and caps.has_offset and caps.has_read_mode and caps.has_usb_traffic and caps.has_amp_glow
    wanted = CaptureSettings(gain=150, offset=40, binning=2, read_mode=0, usb_traffic=20, amp_glow="off",
                             overscan=OverscanMode.INCLUDE)
    applied = camera.apply_settings(wanted)
    assert applied == wanted
    state = camera.state()
    assert (state.gain, state.offset, state.binning, state.read_mode, state.overscan) == (
        150, 40, 2, 0, OverscanMode.INCLUDE)
    with pytest.raises(SettingNotApplied, match="READ_MODE"):  # the QHY163M has one read mode: 1 is refused
        camera.apply_settings(CaptureSettings(read_mode=1))
    assert camera.state().read_mode == 0
    raw = camera.client.properties(camera.device)
    assert raw["USB_TRAFFIC"].values["TRAFFIC"] == 20 and raw["CCD_AMP_GLOW"].values["AMP_OFF"]
    frame = camera.expose(FrameType.BIAS, 0.0)
    assert frame.data.shape == (368 // 2, 496 // 2)  # include + bin 2
    back = camera.apply_settings(CaptureSettings(overscan=OverscanMode.IGNORE, amp_glow="auto"))
    assert back.overscan is OverscanMode.IGNORE and back.binning == 1
    frame = camera.expose(FrameType.BIAS, 0.0)
    assert frame.data.shape == (360, 480)
    assert frame.header["OVSCMODE"] == "ignore"


def test_stability_under_noise_and_unreachable_set_point(camera) -> None:  # type: ignore[no-untyped-def]
    samples = []
    start_c = camera.state().temperature_c
    final = cool_and_wait(camera, -10.0, COOLING, on_sample=samples.append)
    assert abs(final.temperature_c + 10.0) <= COOLING.tolerance_c
    assert final.cooler_power_pct is not None and 0 < final.cooler_power_pct < 95
    temps = np.array([s.temperature_c for s in samples])
    # started warm (ambient 20 °C); the first poll may already see it cooling (TIME_SCALE 300)
    assert start_c > 15.0
    # the hold: the trailing samples covering hold_s are all inside the tolerance
    times = np.array([(s.time - samples[-1].time).total_seconds() for s in samples])
    assert np.all(np.abs(temps[times >= -COOLING.hold_s] + 10.0) <= COOLING.tolerance_c)
    assert camera.state().stable

    # ambient 20 °C: −30 °C needs ~50 °C of cooling, beyond the TEC's 35–40 °C
    with pytest.raises(SetPointUnreachable) as err:
        cool_and_wait(camera, -30.0, COOLING)
    assert -22.0 < err.value.reachable_c < -12.0
    assert err.value.ambient_limit_c == pytest.approx(20.0 - PROFILE.max_cooling_delta_c, abs=0.5)
    assert "unreachable" in str(err.value) and f"{err.value.reachable_c:.1f}" in str(err.value)
    assert camera.state().cooler_power_pct >= 95

    # gentle warm-up through CCD_TEMP_RAMP (5 °C/min simulated), then the cooler is switched off
    camera.warm_up(10.0, rate_c_per_min=5.0, timeout_s=30.0)
    state = camera.state()
    assert state.temperature_c >= 9.5 and state.cooler_on is False and state.set_point_c is None
    ramp = camera.client.get(camera.device, "CCD_TEMP_RAMP")
    assert ramp is not None and ramp.values["RAMP_SLOPE"] == 5.0


def test_series_headers_geometry_and_overscan_level(camera, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from drivers.sim.physics import gain_e_per_adu, pedestal_adu, read_noise_e

    bias = capture_series(camera, SeriesRequest(FrameType.BIAS, 0.0, 2, -10.0, SETTINGS, "bias"), tmp_path,
                          cooling=COOLING)
    dark = capture_series(camera, SeriesRequest(FrameType.DARK, 120.0, 2, -10.0, SETTINGS, "dark",
                                                extra_headers={"observer": "test"}), tmp_path, cooling=COOLING)
    for rec in bias.frames + dark.frames:
        frame = read_frame(rec.path, dtype=None)
        h = frame.header
        assert frame.data.shape == (368, 496)
        assert (h["BIASSEC"], h["DATASEC"], h["TRIMSEC"], h["OBSEC"]) == (
            "[481:496,9:368]", "[1:480,9:368]", "[1:480,9:368]", "[1:480,1:8]")
        assert h["SET-TEMP"] == -10.0 and abs(h["CCDTEMP1"] + 10) <= 0.5 and abs(h["CCDTEMP2"] + 10) <= 0.5
        assert 0 < h["COOLPWR1"] < 100 and "COOLPWR" in h
        assert h["CCDTMIN"] <= min(h["CCDTEMP1"], h["CCDTEMP2"]) <= max(h["CCDTEMP1"], h["CCDTEMP2"]) <= h["CCDTMAX"]
        assert abs(h["CCDTMIN"] + 10) <= 0.5 and abs(h["CCDTMAX"] + 10) <= 0.5
        assert (h["GAIN"], h["OFFSET"], h["READMODE"], h["AMPGLOW"], h["OVSCMODE"]) == (120, 30, 0, "auto",
                                                                                        "include")
        assert h["XBINNING"] == 1 and h["QUALOK"] is True and h["FRAMENUM"] == rec.index
        overscan = frame.data[8:368, 480:496].astype(np.float64)
        assert h["OVERSCAN"] == pytest.approx(overscan.mean(), abs=1e-3)
        assert h["OVSCMED"] == pytest.approx(np.median(overscan), abs=1e-3)
        assert rec.overscan_mean_adu == pytest.approx(h["OVERSCAN"], abs=1e-3)
        # overscan noise is the read noise alone (e⁻ → ADU through the gain) plus 12-bit quantisation (step 16 ADU)
        expected_std = math.hypot(read_noise_e(120) / gain_e_per_adu(120), 16 / math.sqrt(12))
        assert h["OVSCSTD"] == pytest.approx(expected_std, rel=0.2)
        import hashlib
        assert rec.sha256 == hashlib.sha256(rec.path.read_bytes()).hexdigest()
    assert read_frame(dark.frames[0].path).header["OBSERVER"] == "test"
    # overscan carries no dark signal: a 120 s dark's overscan sits at the bias level (ADC drift aside)
    bias_level = np.mean([r.overscan_mean_adu for r in bias.frames])
    assert bias_level == pytest.approx(pedestal_adu(30), abs=64)  # the OFFSET pedestal (+ ADC drift of tens of ADU)
    dark_level = np.mean([r.overscan_mean_adu for r in dark.frames])
    assert abs(dark_level - bias_level) < 30  # tens of ADU of ADC drift at most, never dark current
    assert not list(tmp_path.glob(".*.part"))


def test_injected_faults_are_errors_then_transparent_retries(camera, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    camera.apply_settings(SETTINGS)

    def fault(name: str) -> None:  # through the camera's current client (a reconnect replaces it)
        before = camera.client.send_switch(camera.device, "SIM_FAULTS", [name])
        camera.client.wait_update(camera.device, "SIM_FAULTS", before, 5.0)

    fault("FAIL_NEXT_EXPOSURE")
    with pytest.raises(ExposureFailed):
        camera.expose(FrameType.DARK, 10.0)
    fault("DROP_NEXT_DOWNLOAD")
    with pytest.raises(CameraTimeout, match="no image"):
        camera.expose(FrameType.DARK, 10.0, timeout_s=2.0)
    timer = threading.Timer(0.5, fault, args=("DISCONNECT",))  # the device drops in the middle of the exposure
    timer.start()
    with pytest.raises(CameraDisconnected):
        camera.expose(FrameType.DARK, 900.0)  # 3 s of wall time
    timer.join()
    frame = camera.expose(FrameType.DARK, 10.0)  # reconnects by itself, settings restored
    assert frame.data.shape == (368, 496) and camera.state().gain == 120

    # in a series each fault costs a retry of the current frame, never a duplicate or a gap
    injected = iter(["FAIL_NEXT_EXPOSURE", "DROP_NEXT_DOWNLOAD", "DISCONNECT"])

    def on_frame(record: FrameRecord) -> None:
        name = next(injected, None)
        if name:
            fault(name)

    request = SeriesRequest(FrameType.DARK, 10.0, 4, None, SETTINGS, "faulty", max_retakes=2)
    result = capture_series(camera, request, tmp_path, cooling=COOLING, on_frame=on_frame)
    assert [r.index for r in result.frames] == [1, 2, 3, 4]
    assert sorted(p.name for p in tmp_path.glob("faulty_*.fits")) == [f"faulty_{i:04d}.fits" for i in range(1, 5)]
    assert [fits.getheader(r.path)["FRAMENUM"] for r in result.frames] == [1, 2, 3, 4]
    assert result.frames[1].attempt == 1 and result.frames[2].attempt == 1  # the failed and the dropped frame
    assert result.reconnects + camera.reconnects >= 2  # the DISCONNECT in the series (and the one before)


def test_indiserver_killed_mid_series_completes_without_duplicate_or_gap(sim: IndiServer, camera,  # type: ignore[no-untyped-def]
                                                                         tmp_path: Path) -> None:
    killed = threading.Event()

    def on_frame(record: FrameRecord) -> None:
        if record.index == 2 and not killed.is_set():
            killed.set()

            def crash() -> None:  # during frame 3's exposure
                threading.Event().wait(0.3)
                sim.kill()
                sim.start()

            threading.Thread(target=crash, daemon=True).start()

    request = SeriesRequest(FrameType.DARK, 100.0, 5, -10.0, SETTINGS, "crash")
    result = capture_series(camera, request, tmp_path, cooling=COOLING, on_frame=on_frame)
    assert killed.is_set() and result.reconnects >= 1
    assert [r.index for r in result.frames] == [1, 2, 3, 4, 5]
    names = sorted(p.name for p in tmp_path.glob("*.fits"))
    assert names == [f"crash_{i:04d}.fits" for i in range(1, 6)]
    assert [fits.getheader(tmp_path / n)["FRAMENUM"] for n in names] == [1, 2, 3, 4, 5]
    assert not list(tmp_path.glob(".*.part"))
    # after the restart the simulator came back warm; the series re-cooled before frame 3
    assert all(abs(fits.getheader(tmp_path / n)["CCDTEMP1"] + 10) <= 0.5 for n in names)


def test_a_value_sent_never_passes_through_libindiclients_own_copy(camera) -> None:  # type: ignore[no-untyped-def]
    """libindiclient's thread writes each driver update into its copy of a vector, without a lock we could take. A
    value set on that copy could be overwritten before it is sent: once, a set point of -10 °C went out as the
    temperature the driver had just reported, and the series waited 60 s at 5.7 °C. The client sends a copy of its own,
    so the shared one still holds what the driver reported right after a send (and the driver got the value sent)."""
    client, device = camera.client, camera.device
    shared = client.getDevice(device).getNumber("CCD_TEMPERATURE").findWidgetByName("CCD_TEMPERATURE_VALUE")
    client.send_number(device, "CCD_TEMPERATURE", {"CCD_TEMPERATURE_VALUE": -10.0})
    assert shared.getValue() != -10.0  # a fresh sensor at 20 °C ambient is nowhere near -10 °C yet
    client.wait_for(lambda: any("Setting temperature to -10.00 C" in m for m in client.messages(device)) or None,
                    5.0, "the driver's answer to the set point")
    # a switch goes out the same way (its shared copy cannot be checked: the driver's answer sets the same states)
    wanted = "AMP_ON" if not client.require(device, "CCD_AMP_GLOW").values["AMP_ON"] else "AMP_OFF"
    before = client.send_switch(device, "CCD_AMP_GLOW", [wanted])
    assert client.wait_update(device, "CCD_AMP_GLOW", before, 5.0).on_switches() == [wanted]


def test_a_set_point_changed_by_another_client_is_sent_again(sim: IndiServer, camera,  # type: ignore[no-untyped-def]
                                                             caplog: pytest.LogCaptureFixture) -> None:
    """Another INDI client (Debian's ``indi_setprop``, as Ekos on the same server would) sets 0 °C while darkd waits for
    −10 °C. The sensor then holds 0 °C at about half power: darkd sees it held elsewhere (drivers.cooling
    .HeldElsewhereDetector), sends −10 °C once more, and reaches it within the timeout."""
    camera.set_temperature(-10.0)
    subprocess.run(["indi_setprop", "-p", str(sim.port), f"{SIM_DEVICE}.CCD_TEMPERATURE.CCD_TEMPERATURE_VALUE=0"],
                   check=True, timeout=10, capture_output=True)
    with caplog.at_level(logging.WARNING, logger="drivers.indi.camera"):
        sample = camera.wait_until_stable(-10.0, tolerance_c=0.2, hold_s=1.0, timeout_s=30.0, unreachable_window_s=2.0)
    assert abs(sample.temperature_c + 10.0) <= 0.2
    warnings = [r.getMessage() for r in caplog.records if "sending the set point again" in r.getMessage()]
    assert len(warnings) == 1 and "not the set point -10.00 °C" in warnings[0]


def test_stop_aborts_the_running_exposure(camera, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    stop = threading.Event()
    threading.Timer(0.5, stop.set).start()
    request = SeriesRequest(FrameType.DARK, 1200.0, 3, None, SETTINGS, "stopped")  # 12 s each at time scale 100
    result = capture_series(camera, request, tmp_path, cooling=COOLING, stop=stop)
    assert result.stopped and result.frames == []
    assert not list(tmp_path.glob("*.fits")) and not list(tmp_path.glob(".*.part"))
    exposure = camera.client.wait_update(camera.device, "CCD_EXPOSURE", 0, 5.0, lambda s: s.state != "Busy")
    assert exposure.state in ("Idle", "Alert", "Ok")


def test_cli_capture_and_status(sim: IndiServer, tmp_path: Path) -> None:
    darkd = str(Path(sys.executable).parent / "darkd")
    common = ["--port", str(sim.port), "--profile", "qhy163m-sim-small"]
    status = subprocess.run([darkd, "camera", "status", "--json", *common], capture_output=True, text=True,
                            timeout=60, check=False)
    assert status.returncode == 0, status.stderr
    import json
    info = json.loads(status.stdout)
    assert info["connected"] and info["device"] == SIM_DEVICE and info["capabilities"]["has_overscan"]
    out = tmp_path / "cli"
    run = subprocess.run([darkd, "capture", "--type", "dark", "--exposure", "30", "--count", "2", "--temperature",
                          "-5", "--gain", "120", "--offset", "30", "--overscan", "include", "--out", str(out),
                          "--hold", "1", "--no-warm-up", *common], capture_output=True, text=True, timeout=90,
                         check=False)
    assert run.returncode == 0, run.stderr
    lines = run.stdout.strip().splitlines()
    assert lines[0].startswith("dark_30s_m5C_0001.fits  #1") and lines[0].endswith("ok")
    assert lines[-1].startswith("2/2 frames")
    assert "°C" in run.stderr  # progress with the temperature
    assert sorted(p.name for p in out.glob("*.fits")) == ["dark_30s_m5C_0001.fits", "dark_30s_m5C_0002.fits"]


def test_profile_and_vocabulary_detected_without_configuration(sim: IndiServer, tmp_path: Path) -> None:
    """No profile named: the QHY adapter and the small QHY163M profile are detected; the series gets its geometry."""
    from drivers.indi.camera import IndiCamera

    camera = IndiCamera(port=sim.port, reconnect_timeout_s=30.0, sample_interval_s=0.2)
    try:
        caps = camera.connect(20)
        assert (caps.driver_exec, caps.adapter, caps.profile, caps.profile_detected, caps.bit_depth) == (
            "indi_qhy_ccd", "qhy", "qhy163m-sim-small", True, 12)  # the twin reports the real driver's exec
        rows = {r.setting: (r.access, r.where) for r in caps.settings}
        assert rows["gain"] == ("sets", "CCD_GAIN.GAIN") and rows["amp_glow"] == ("sets", "CCD_AMP_GLOW")
        assert rows["heater"][0] == "lacks"
        with pytest.raises(SettingNotApplied, match=r"gain 100000 is outside the driver's range"):
            camera.check_settings(CaptureSettings(gain=100000), exposure_s=1.0, set_point_c=-5.0)
        request = SeriesRequest(FrameType.DARK, 10.0, 1, set_point_c=None, settings=SETTINGS, name_prefix="auto")
        result = capture_series(camera, request, tmp_path / "auto", cooling=COOLING)
        header = fits.getheader(result.frames[0].path)
        assert header["BIASSEC"] == "[481:496,9:368]" and header["GAIN"] == 120
    finally:
        camera.disconnect()
