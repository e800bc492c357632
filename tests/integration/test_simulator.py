"""The simulated QHY163M under the real indiserver, driven through pyindi-client like a careful user would.

Physics assertions are against the documented model (drivers.sim.physics / drivers.sim.cooler): dark current from
pairs of equal darks, clamped long darks below bias, overscan without dark signal, doubling with temperature, TEC
limits, and each injected fault. SMALL sensor and a fast time scale keep it short.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

from drivers.sim.cooler import MAX_DELTA_C
from drivers.sim.physics import DOUBLING_C, SMALL_GEOMETRY, dark_current_e_per_s, gain_e_per_adu
from drivers.sim.vocabulary import ALWAYS_DEFINED, MIN_EXPOSURE_S
from tests.conftest import SIM_DEVICE, SIM_DRIVER, requires_sim_driver, sim_env
from tests.indi_server import IndiServer
from tests.integration.indi_client_helper import SimClient

pytestmark = [pytest.mark.integration,
              requires_sim_driver]

GEO = SMALL_GEOMETRY
OB, EW = GEO.ob_rows, GEO.effective_width
CENTER = (slice(OB + 100, OB + 260), slice(140, 340))

VOCABULARY = {
    "CONNECTION": {"CONNECT", "DISCONNECT"},
    "DRIVER_INFO": {"DRIVER_NAME", "DRIVER_EXEC", "DRIVER_VERSION", "DRIVER_INTERFACE"},
    "CCD_INFO": {"CCD_MAX_X", "CCD_MAX_Y", "CCD_PIXEL_SIZE", "CCD_PIXEL_SIZE_X", "CCD_PIXEL_SIZE_Y",
                 "CCD_BITSPERPIXEL"},
    "CCD_EXPOSURE": {"CCD_EXPOSURE_VALUE"},
    "CCD_ABORT_EXPOSURE": {"ABORT"},
    "CCD_FRAME": {"X", "Y", "WIDTH", "HEIGHT"},
    "CCD_FRAME_RESET": {"RESET"},
    "CCD_BINNING": {"HOR_BIN", "VER_BIN"},
    "CCD_FRAME_TYPE": {"FRAME_LIGHT", "FRAME_BIAS", "FRAME_DARK", "FRAME_FLAT"},
    "CCD_TEMPERATURE": {"CCD_TEMPERATURE_VALUE"},
    "CCD_TEMP_RAMP": {"RAMP_SLOPE", "RAMP_THRESHOLD"},
    "CCD_COOLER": {"COOLER_ON", "COOLER_OFF"},
    "CCD_COOLER_POWER": {"CCD_COOLER_VALUE"},
    "CCD_COOLER_MODE": {"COOLER_AUTOMATIC", "COOLER_MANUAL"},
    "CCD_GAIN": {"GAIN"},
    "CCD_OFFSET": {"OFFSET"},
    "READ_MODE": {"MODE"},
    "USB_TRAFFIC": {"TRAFFIC"},
    "CCD_AMP_GLOW": {"AMP_AUTO", "AMP_ON", "AMP_OFF"},
    "OVERSCAN_MODE": {"INDI_ENABLED", "INDI_DISABLED"},
    "UPLOAD_MODE": {"UPLOAD_CLIENT", "UPLOAD_LOCAL", "UPLOAD_BOTH"},
    "CCD_TRANSFER_FORMAT": {"FORMAT_FITS", "FORMAT_NATIVE"},
    "FITS_HEADER": {"KEYWORD_NAME", "KEYWORD_VALUE", "KEYWORD_COMMENT"},
    "CCD1": set(),
    "SIM_SETTINGS": {"AMBIENT_C", "TIME_SCALE", "LIGHT_LEAK", "SEED"},
    "SIM_SENSOR": {"FULL", "SMALL"},
    "SIM_FAULTS": {"FAIL_NEXT_EXPOSURE", "DROP_NEXT_DOWNLOAD", "DISCONNECT"},
}



@pytest.fixture
def start_client(tmp_path: Path) -> Iterator[Callable[..., SimClient]]:
    """start_client(**sim_env overrides) → a pyindi-client connected to a fresh indiserver + simulator."""
    started: list[tuple[IndiServer, SimClient]] = []

    def start(connect: bool = True, **overrides: str | float) -> SimClient:
        server = IndiServer([SIM_DRIVER], env=sim_env(**overrides),
                                 log_path=tmp_path / f"indiserver{len(started)}.log").start()
        client = SimClient(server.port, SIM_DEVICE)
        started.append((server, client))
        client.start()
        if connect:
            client.connect_device()
        return client

    yield start
    for server, client in started:
        client.stop()
        server.stop()


def _clipped_var(x: np.ndarray) -> float:
    med = np.median(x)
    mad = 1.4826 * np.median(np.abs(x - med))
    return float(x[np.abs(x - med) < 5 * mad].var())


def _cool(client: SimClient, set_point_c: float, timeout_s: float = 20.0) -> None:
    client.number("CCD_TEMPERATURE", {"CCD_TEMPERATURE_VALUE": set_point_c}, wait=False)
    client.wait_for(lambda: client.props["CCD_TEMPERATURE"].state == "Ok"
                    and abs(client.props["CCD_TEMPERATURE"].values["CCD_TEMPERATURE_VALUE"] - set_point_c) < 0.2,
                    timeout_s, f"sensor at {set_point_c} C")


def test_vocabulary_geometry_and_headers(start_client: Callable[..., SimClient]) -> None:
    client = start_client(connect=False)
    time.sleep(0.3)
    assert set(client.props) == set(ALWAYS_DEFINED)  # camera properties appear on CONNECT, as INDI drivers do
    assert client.value("DRIVER_INFO", "DRIVER_INTERFACE") == "2"
    client.connect_device()
    client.wait_for(lambda: set(VOCABULARY) <= set(client.props), 5, "all properties")
    for name, elements in VOCABULARY.items():
        assert set(client.snap(name).values) == elements, name
    info = client.snap("CCD_INFO").values
    assert (info["CCD_MAX_X"], info["CCD_MAX_Y"]) == (480, 360)  # Ignore (default): effective area

    client.text("FITS_HEADER", {"KEYWORD_NAME": "OBSERVER", "KEYWORD_VALUE": "darkd", "KEYWORD_COMMENT": "who"})
    client.number("CCD_GAIN", {"GAIN": 100})
    data, header = client.expose(2.5, "FRAME_DARK")
    assert data.shape == (360, 480) and data.dtype == np.uint16
    assert header["BITPIX"] == 16 and header["BZERO"] == 32768
    assert header["EXPTIME"] == 2.5 and header["DARKTIME"] == 2.5
    assert (header["IMAGETYP"], header["FRAME"], header["GAIN"], header["OFFSET"]) == ("Dark Frame", "Dark", 100, 30)
    assert (header["XBINNING"], header["YBINNING"], header["READMODE"], header["AMPGLOW"]) == (1, 1, 0, "Auto")
    assert header["INSTRUME"] == SIM_DEVICE and header["OBSERVER"] == "darkd" and "DATE-OBS" in header
    assert abs(header["CCD-TEMP"] - 20.0) < 1.0
    assert np.all(data % 16 == 0)

    client.switch("OVERSCAN_MODE", ["INDI_ENABLED"], wait=True)
    client.wait_for(lambda: client.props["CCD_INFO"].values["CCD_MAX_X"] == 496, 5, "CCD_INFO include size")
    assert client.value("CCD_INFO", "CCD_MAX_Y") == 368 and client.value("CCD_FRAME", "WIDTH") == 496
    bias, bias_header = client.expose(5.0, "FRAME_BIAS")  # BIAS forces the minimum exposure
    assert bias.shape == (368, 496)
    assert bias_header["EXPTIME"] == pytest.approx(MIN_EXPOSURE_S) and bias_header["IMAGETYP"] == "Bias Frame"

    client.number("CCD_BINNING", {"HOR_BIN": 2, "VER_BIN": 2})
    client.number("CCD_FRAME", {"X": 0, "Y": 0, "WIDTH": 200, "HEIGHT": 100})
    small, small_header = client.expose(1.0, "FRAME_FLAT")
    assert small.shape == (50, 100) and small_header["XBINNING"] == 2 and small_header["IMAGETYP"] == "Flat Frame"
    client.number("CCD_GAIN", {"GAIN": 10000}, wait=False)
    client.wait_update("CCD_GAIN", client.seq() - 1, "Alert")


def test_dark_physics_from_pairs(start_client: Callable[..., SimClient]) -> None:
    """Buil's pair method recovers the documented dark current; long darks sit below bias; overscan stays flat."""
    client = start_client(time_scale=600, ambient_c=10)
    client.switch("OVERSCAN_MODE", ["INDI_ENABLED"], wait=True)
    client.wait_for(lambda: client.props["CCD_INFO"].values["CCD_MAX_X"] == 496, 5, "include mode")
    ge = gain_e_per_adu(120)
    measured: dict[float, float] = {}
    for set_point_c in (-20.0, -20.0 + DOUBLING_C):
        _cool(client, set_point_c)
        b1, _ = client.expose(0.0, "FRAME_BIAS")
        b2, _ = client.expose(0.0, "FRAME_BIAS")
        d1, h1 = client.expose(600.0, "FRAME_DARK")
        d2, _ = client.expose(600.0, "FRAME_DARK")
        assert abs(h1["CCD-TEMP"] - set_point_c) < 0.3
        b1, b2, d1, d2 = (x.astype(np.float64) for x in (b1, b2, d1, d2))
        var_dark = _clipped_var((d1 - d2)[CENTER]) / 2 * ge * ge
        var_bias = _clipped_var((b1 - b2)[CENTER]) / 2 * ge * ge
        measured[set_point_c] = (var_dark - var_bias) / 600.0
        if set_point_c == -20.0:
            # clamped long dark below bias (each relative to its own overscan, which follows the ADC drift)
            dark_level = d1[OB:, :EW].mean() - d1[OB:, EW:].mean()
            bias_level = b1[OB:, :EW].mean() - b1[OB:, EW:].mean()
            assert dark_level < bias_level - 50
            # overscan: pedestal + read noise + drift only — no dark signal, no glow
            assert abs(d1[OB:, EW:].mean() - b1[OB:, EW:].mean()) < 60
            assert d1[OB:, EW:].std() == pytest.approx(b1[OB:, EW:].std(), rel=0.15)
            assert d1[-4:, EW - 4:EW].mean() > d1[OB:, EW:].mean() + 100  # glow corner right beside it
    assert measured[-20.0] == pytest.approx(dark_current_e_per_s(-20.0), rel=0.2)
    assert measured[-20.0 + DOUBLING_C] / measured[-20.0] == pytest.approx(2.0, rel=0.25)


def test_cooler_reaches_holds_and_reports_unreachable(start_client: Callable[..., SimClient]) -> None:
    client = start_client(time_scale=600, ambient_c=20)
    _cool(client, -10.0)
    held = []
    for _ in range(4):
        time.sleep(0.5)
        held.append(client.value("CCD_TEMPERATURE", "CCD_TEMPERATURE_VALUE"))
    assert max(abs(t + 10.0) for t in held) < 0.2
    assert 0 < client.value("CCD_COOLER_POWER", "CCD_COOLER_VALUE") < 95
    assert client.value("CCD_COOLER", "COOLER_ON") is True

    client.number("CCD_TEMPERATURE", {"CCD_TEMPERATURE_VALUE": -30.0}, wait=False)
    floor_c = 20.0 - MAX_DELTA_C
    client.wait_for(lambda: abs(client.props["CCD_TEMPERATURE"].values["CCD_TEMPERATURE_VALUE"] - floor_c) < 0.3,
                    15, "temperature at the TEC limit")
    time.sleep(1.0)
    assert client.snap("CCD_TEMPERATURE").state == "Busy"  # never reached
    assert client.value("CCD_TEMPERATURE", "CCD_TEMPERATURE_VALUE") > -29.0
    assert client.value("CCD_COOLER_POWER", "CCD_COOLER_VALUE") >= 95

    client.switch("CCD_COOLER", ["COOLER_OFF"], wait=True)
    client.wait_for(lambda: client.props["CCD_TEMPERATURE"].values["CCD_TEMPERATURE_VALUE"] > 15, 15, "warm-up")
    assert client.value("CCD_COOLER_POWER", "CCD_COOLER_VALUE") == 0


def test_faults_and_abort(start_client: Callable[..., SimClient]) -> None:
    client = start_client()

    client.switch("SIM_FAULTS", ["FAIL_NEXT_EXPOSURE"], wait=True)
    before = client.seq()
    client.switch("CCD_FRAME_TYPE", ["FRAME_DARK"], wait=True)
    client.number("CCD_EXPOSURE", {"CCD_EXPOSURE_VALUE": 10.0}, wait=False)
    client.wait_update("CCD_EXPOSURE", before, "Alert")
    time.sleep(0.3)
    assert not client.blobs
    assert client.value("SIM_FAULTS", "FAIL_NEXT_EXPOSURE") is False  # one-shot
    client.expose(1.0)  # the next one works

    client.switch("SIM_FAULTS", ["DROP_NEXT_DOWNLOAD"], wait=True)
    before = client.seq()
    client.number("CCD_EXPOSURE", {"CCD_EXPOSURE_VALUE": 50.0}, wait=False)
    states = []
    client.wait_for(lambda: (states.append(client.props["CCD_EXPOSURE"].state) or True)
                    and client.props["CCD_EXPOSURE"].state == "Ok" and client.seq() > before + 2, 10, "finished")
    assert any(s.name == "CCD_EXPOSURE" and s.state == "Busy" and 0 < s.values["CCD_EXPOSURE_VALUE"] < 50
               for s in client.history if s.seq > before)  # countdown seen
    time.sleep(1.0)
    assert not client.blobs  # the BLOB never arrives
    client.expose(1.0)

    before = client.seq()
    client.number("CCD_EXPOSURE", {"CCD_EXPOSURE_VALUE": 600.0}, wait=False)
    client.wait_update("CCD_EXPOSURE", before, "Busy")
    client.switch("CCD_ABORT_EXPOSURE", ["ABORT"])
    client.wait_update("CCD_EXPOSURE", before, "Idle")
    time.sleep(0.5)
    assert not client.blobs

    client.switch("SIM_FAULTS", ["DISCONNECT"])
    client.wait_for(lambda: client.props["CONNECTION"].values["DISCONNECT"] and "CCD_EXPOSURE" not in client.props,
                    5, "device disconnected")
    assert "CCD_EXPOSURE" in client.removed
    client.connect_device()  # and it comes back
    data, _ = client.expose(1.0)
    assert data.shape == (360, 480)


@pytest.mark.slow
def test_full_size_frame(start_client: Callable[..., SimClient]) -> None:
    client = start_client(sensor="FULL")
    client.switch("OVERSCAN_MODE", ["INDI_ENABLED"], wait=True)
    client.wait_for(lambda: client.props["CCD_INFO"].values["CCD_MAX_X"] == 4720, 5, "include mode")
    assert client.value("CCD_INFO", "CCD_MAX_Y") == 3540
    data, header = client.expose(60.0, "FRAME_DARK", timeout_s=60)
    assert data.shape == (3540, 4720) and header["NAXIS1"] == 4720
    overscan = data[18:, 4656:].astype(np.float64)
    image = data[18:, :4656].astype(np.float64)
    # the OB clamp removes the dark signal (hot pixels in the OB rows pull the median a few ADU12 below the pedestal)
    assert abs(np.median(image) - np.median(overscan)) < 150
    assert overscan.std() < image.std()


def test_simulation_settings_at_runtime(start_client: Callable[..., SimClient]) -> None:
    """LIGHT_LEAK brightens darks, SEED changes the fixed pattern, AMBIENT_C moves the TEC limit."""
    client = start_client(time_scale=1000)
    dark, _ = client.expose(100.0, "FRAME_DARK")
    client.number("SIM_SETTINGS", {"LIGHT_LEAK": 5.0})
    leaky, _ = client.expose(100.0, "FRAME_DARK")
    expected_adu = 5.0 * 100.0 / gain_e_per_adu(120)  # e⁻ → ADU, before vignetting (< 25 % in the centre)
    centre = (slice(130, 230), slice(190, 290))
    gain_adu = np.median(leaky[centre].astype(np.float64)) - np.median(dark[centre].astype(np.float64))
    assert 0.75 * expected_adu < gain_adu < 1.05 * expected_adu

    client.number("SIM_SETTINGS", {"LIGHT_LEAK": 0.0})
    hot_before = set(np.flatnonzero(client.expose(1000.0, "FRAME_DARK")[0] > 20000))
    client.number("SIM_SETTINGS", {"SEED": 99})
    hot_after = set(np.flatnonzero(client.expose(1000.0, "FRAME_DARK")[0] > 20000))
    assert len(hot_before) > 5 and len(hot_before & hot_after) < 0.2 * len(hot_before)

    client.number("SIM_SETTINGS", {"AMBIENT_C": 0.0})
    client.number("CCD_TEMPERATURE", {"CCD_TEMPERATURE_VALUE": -45.0}, wait=False)
    client.wait_for(lambda: abs(client.props["CCD_TEMPERATURE"].values["CCD_TEMPERATURE_VALUE"]
                                - (0.0 - MAX_DELTA_C)) < 0.3, 15, "new TEC limit")
