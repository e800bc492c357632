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
