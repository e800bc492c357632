"""IndiCamera against Debian's stock ``indi_simulator_ccd`` (device "CCD Simulator"): graceful degradation.

That driver has a cooler set point but no cooler power, no overscan, no read mode, no USB traffic, no amp-glow mode —
the capabilities must say so, the absent settings must fail clearly, and capture must still work.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from daemon.capture import SeriesRequest, capture_series
from daemon.settings import CoolingSettings
from drivers.camera import (
    CameraDisconnected,
    CaptureSettings,
    FrameType,
    OverscanMode,
    SettingNotApplied,
    SettingUnsupported,
)
from tests.conftest import requires_indi
from tests.indi_server import IndiServer, free_port

pytestmark = [pytest.mark.integration,
              requires_indi]

STOCK = "CCD Simulator"



@pytest.fixture
def stock_server(tmp_path: Path) -> Iterator[IndiServer]:
    server = IndiServer(["indi_simulator_ccd"], log_path=tmp_path / "indiserver.log").start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def camera(stock_server: IndiServer) -> Iterator[object]:
    from drivers.indi.camera import IndiCamera

    cam = IndiCamera(port=stock_server.port, reconnect_timeout_s=20.0)
    yield cam
    cam.disconnect()


def test_capabilities_degrade_and_missing_settings_fail_clearly(camera) -> None:  # type: ignore[no-untyped-def]
    caps = camera.connect(15)
    assert caps.device == STOCK  # found as the first CCD, no name given
    assert (caps.width_px, caps.height_px) == (1280, 1024)
    assert caps.has_gain and caps.has_cooler
    assert not (caps.has_cooler_power or caps.has_overscan or caps.has_read_mode or caps.has_usb_traffic
                or caps.has_amp_glow)
    applied = camera.apply_settings(CaptureSettings(gain=40, offset=3, binning=2))
    assert (applied.gain, applied.offset, applied.binning) == (40, 3, 2)
    state = camera.state()
    assert (state.gain, state.offset, state.binning) == (40, 3, 2)
    assert state.cooler_power_pct is None and state.overscan is None
    with pytest.raises(SettingUnsupported, match="READ_MODE"):
        camera.apply_settings(CaptureSettings(read_mode=1))
    with pytest.raises(SettingUnsupported, match="OVERSCAN_MODE"):
        camera.apply_settings(CaptureSettings(overscan=OverscanMode.INCLUDE))
    with pytest.raises(SettingNotApplied, match=r"outside the driver's range 0\.\.100"):
        camera.apply_settings(CaptureSettings(gain=1000))
    frame = camera.expose(FrameType.DARK, 0.1)
    assert frame.data.shape == (512, 640)  # binned 2x2
    assert frame.cooler_power_start_pct is None and frame.header["CCDTEMP1"] == frame.temperature_start_c

    # cooling without a cooler-power reading, then a gentle warm-up that ends with the cooler off
    camera.set_temperature(-1.0)
    sample = camera.wait_until_stable(-1.0, tolerance_c=0.2, hold_s=0.5, timeout_s=30)
    assert sample.cooler_power_pct is None and abs(sample.temperature_c + 1.0) <= 0.2
    camera.warm_up(0.0, rate_c_per_min=60.0, timeout_s=30)
    state = camera.state()
    assert state.temperature_c is not None and state.temperature_c >= -0.5
    assert state.cooler_on in (False, None) and state.set_point_c is None


def test_series_resumes_and_survives_an_indiserver_restart(camera, stock_server: IndiServer,  # type: ignore[no-untyped-def]
                                                          tmp_path: Path) -> None:
    camera.connect(15)
    out = tmp_path / "darks"
    request = SeriesRequest(FrameType.DARK, 0.2, 4, set_point_c=None, settings=CaptureSettings(gain=20),
                            name_prefix="dark")
    restarted: list[int] = []

    def on_frame(record) -> None:  # type: ignore[no-untyped-def]
        if record.index == 2 and not restarted:
            restarted.append(record.index)
            stock_server.restart()  # same port; the series must reconnect and go on with frame 3

    cooling = CoolingSettings(reconnect_timeout_s=20.0)
    result = capture_series(camera, request, out, cooling=cooling, on_frame=on_frame)
    assert restarted == [2]
    assert result.reconnects >= 1
    assert [r.index for r in result.frames] == [1, 2, 3, 4]
    assert sorted(p.name for p in out.glob("*.fits")) == [f"dark_{i:04d}.fits" for i in range(1, 5)]
    assert not list(out.glob(".*part"))
    # the restarted driver came back with its default gain; the series re-applied ours
    assert camera.state().gain == 20

    # resume: remove frame 3, run again: only frame 3 is taken, the others are untouched
    before = {p.name: p.read_bytes() for p in out.glob("*.fits")}
    (out / "dark_0003.fits").unlink()
    again = capture_series(camera, request, out, cooling=cooling)
    assert [r.index for r in again.frames] == [1, 2, 3, 4]
    assert [r.resumed for r in again.frames] == [True, True, False, True]
    for name, payload in before.items():
        if name != "dark_0003.fits":
            assert (out / name).read_bytes() == payload


def test_no_server_is_a_clear_error() -> None:
    from drivers.indi.camera import IndiCamera

    cam = IndiCamera(port=free_port(), reconnect=False)
    with pytest.raises(CameraDisconnected, match="no INDI server"):
        cam.connect(2)


def test_connected_only_once_connect_has_finished(stock_server: IndiServer) -> None:
    """Issue 15 item 2: a job right after start-up saw "connected" before the connect had finished and failed."""
    import threading
    import time

    from drivers.indi.camera import IndiCamera

    cam = IndiCamera(port=stock_server.port, reconnect_timeout_s=20.0)
    errors: list[BaseException] = []
    seen: list[bool] = []
    caps: list[object] = []
    done = threading.Event()

    def poll() -> None:  # the monitor: trusts state().connected and uses the camera at once
        while not done.is_set():
            if cam.state().connected:
                try:
                    assert cam.capabilities.device == STOCK
                    cam.apply_settings(CaptureSettings(gain=12))  # the same value as the job below
                except BaseException as exc:
                    errors.append(exc)
                seen.append(True)
                return

    started = threading.Event()

    def connect() -> None:
        started.set()
        try:
            caps.append(cam.connect(15))
        except BaseException as exc:
            errors.append(exc)

    poller = threading.Thread(target=poll)
    poller.start()
    connectors = [threading.Thread(target=connect) for _ in range(2)]  # monitor and engine connect at once
    for t in connectors:
        t.start()
    try:
        started.wait(10)
        time.sleep(0.05)  # mid-connect (a connect takes about a second): a job that needs the camera waits for it
        applied = cam.apply_settings(CaptureSettings(gain=12))
        assert applied.gain == 12
        for t in connectors:
            t.join(30)
        poller.join(30)
    finally:
        done.set()
        cam.disconnect()
    assert errors == [] and seen == [True]
    assert len(caps) == 2 and caps[0] == caps[1]  # one connection shared, neither connect closed the other's


def test_driver_adapter_profile_and_up_front_range_checks(camera) -> None:  # type: ignore[no-untyped-def]
    caps = camera.connect(15)
    assert (caps.driver_exec, caps.adapter, caps.profile, caps.profile_detected) == (
        "indi_simulator_ccd", "generic", "ccd-simulator", True)
    rows = {r.setting: r for r in caps.settings}
    assert rows["gain"].access == "sets" and rows["gain"].where == "CCD_GAIN.GAIN" and rows["gain"].range == (0, 100)
    assert rows["cooler_power"].access == "lacks" and rows["overscan"].access == "lacks"
    assert rows["temp_ramp"].range == (0, 30)
    with pytest.raises(SettingNotApplied, match=r"gain 1000 is outside the driver's range 0\.\.100"):
        camera.check_settings(CaptureSettings(gain=1000), exposure_s=1.0, set_point_c=-10.0)
    with pytest.raises(SettingNotApplied, match=r"set point -80 °C is outside the driver's range -50\.\.50"):
        camera.check_settings(CaptureSettings(gain=10), exposure_s=1.0, set_point_c=-80.0)
    with pytest.raises(SettingNotApplied, match=r"exposure 1e\+06 s is outside the driver's range"):
        camera.check_settings(CaptureSettings(gain=10), exposure_s=1e6)
    camera.check_settings(CaptureSettings(gain=10, offset=3, binning=2), exposure_s=1.0, set_point_c=-10.0)
    # a ramp request outside the driver's range is clamped with a warning, never refused
    camera.set_temperature(0.0, ramp_c_per_min=60.0)
    assert camera.client.get(STOCK, "CCD_TEMP_RAMP").values["RAMP_SLOPE"] == 30.0


def test_cli_status_shows_driver_profile_and_capability_table(stock_server: IndiServer) -> None:
    import subprocess
    import sys

    darkd = str(Path(sys.executable).parent / "darkd")
    run = subprocess.run([darkd, "camera", "status", "--port", str(stock_server.port), "--profile", "auto"],
                         capture_output=True, text=True, timeout=60, check=False)
    assert run.returncode == 0, run.stderr
    out = run.stdout
    assert "driver          indi_simulator_ccd" in out and "(adapter generic)" in out
    assert "profile         ccd-simulator (detected)" in out
    lines = {line.split()[0]: line for line in out.splitlines()[out.splitlines().index(
        next(x for x in out.splitlines() if x.startswith("settings"))) + 1:]}
    assert lines["gain"].split()[1:4] == ["sets", "CCD_GAIN.GAIN", "0..100"]
    assert lines["cooler_power"].split()[1] == "lacks"
