"""Each vendor twin of ``indi_darkd_sim_ccd`` (``DARKD_SIM_VENDOR``) against a table taken from its real driver.

The expected tables below are written from the driver sources (indilib/indi-3rdparty, files cited per vendor) and the
INDI::CCD base class (indilib/indi libs/indibase/indiccd.cpp, defaultdevice.cpp) — deliberately not imported from
``drivers.sim.vendors``, so a typo in the twin's table fails here. The dump is Debian's ``indi_getprop`` (names,
elements, ``_PERM``); ranges, which getprop cannot show, come from the raw ``defNumberVector`` XML. The quirk tests
drive each twin through the real indiserver with the test-only pyindi client.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.conftest import SIM_DRIVER, sim_env
from tests.indi_server import IndiServer, raw_definitions
from tests.integration.indi_client_helper import SimClient

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(shutil.which(SIM_DRIVER, path=str(Path(sys.executable).parent)) is None
                                 or shutil.which("indiserver") is None or shutil.which("indi_getprop") is None,
                                 reason="indiserver, indi_getprop or driver missing")]

Table = dict[str, tuple[str, set[str]]]  # property → (perm, element names)

ON_OFF = {"INDI_ENABLED", "INDI_DISABLED"}
#: DefaultDevice::ISGetProperties + CCD::ISGetProperties: defined before CONNECT
BEFORE_CONNECT: Table = {
    "CONNECTION": ("rw", {"CONNECT", "DISCONNECT"}),
    "DRIVER_INFO": ("ro", {"DRIVER_NAME", "DRIVER_EXEC", "DRIVER_VERSION", "DRIVER_INTERFACE"}),
    "DEBUG": ("rw", {"ENABLE", "DISABLE"}),
    "CONFIG_PROCESS": ("rw", {"CONFIG_LOAD", "CONFIG_SAVE", "CONFIG_DEFAULT", "CONFIG_PURGE"}),
    "POLLING_PERIOD": ("rw", {"PERIOD_MS"}),
    "ACTIVE_DEVICES": ("rw", {"ACTIVE_TELESCOPE", "ACTIVE_ROTATOR", "ACTIVE_FOCUSER", "ACTIVE_FILTER",
                              "ACTIVE_SKYQUALITY"}),
}
#: CCD::updateProperties for a camera that can abort, subframe and bin, with a cooler (indiccd.cpp); CCD1 is a BLOB,
#: which indi_getprop does not list
CCD_BASE: Table = {
    "CCD_EXPOSURE": ("rw", {"CCD_EXPOSURE_VALUE"}),
    "CCD_ABORT_EXPOSURE": ("rw", {"ABORT"}),
    "CCD_FRAME": ("rw", {"X", "Y", "WIDTH", "HEIGHT"}),
    "CCD_FRAME_RESET": ("wo", {"RESET"}),
    "CCD_BINNING": ("rw", {"HOR_BIN", "VER_BIN"}),
    "FITS_HEADER": ("wo", {"KEYWORD_NAME", "KEYWORD_VALUE", "KEYWORD_COMMENT"}),
    "CCD_TEMPERATURE": ("rw", {"CCD_TEMPERATURE_VALUE"}),
    "CCD_TEMP_RAMP": ("rw", {"RAMP_SLOPE", "RAMP_THRESHOLD"}),
    "CCD_TRANSFER_FORMAT": ("rw", {"FORMAT_FITS", "FORMAT_NATIVE"}),
    "CCD_INFO": ("ro", {"CCD_MAX_X", "CCD_MAX_Y", "CCD_PIXEL_SIZE", "CCD_PIXEL_SIZE_X", "CCD_PIXEL_SIZE_Y",
                        "CCD_BITSPERPIXEL"}),
    "CCD_COMPRESSION": ("rw", ON_OFF),
    "CCD_FRAME_TYPE": ("rw", {"FRAME_LIGHT", "FRAME_BIAS", "FRAME_DARK", "FRAME_FLAT"}),
    "SCOPE_INFO": ("rw", {"FOCAL_LENGTH", "APERTURE"}),
    "WCS_CONTROL": ("rw", {"WCS_ENABLE", "WCS_DISABLE"}),
    "UPLOAD_MODE": ("rw", {"UPLOAD_CLIENT", "UPLOAD_LOCAL", "UPLOAD_BOTH"}),
    "UPLOAD_SETTINGS": ("rw", {"UPLOAD_DIR", "UPLOAD_PREFIX"}),
    "CCD_FAST_TOGGLE": ("rw", ON_OFF),
    "CCD_FAST_COUNT": ("rw", {"FRAMES"}),
}
COOLER = {"COOLER_ON", "COOLER_OFF"}
POWER = {"CCD_COOLER_VALUE"}

#: per vendor: device name, DRIVER_EXEC, vectors beyond CCD_BASE (None removes a base vector), gain/offset
#: (property, element, min, max) and the FITS keywords the driver adds
VENDOR_TABLES: dict[str, dict[str, object]] = {
    # indi-qhy/qhy_ccd.cpp (QHY163M: cooler with manual PWM, USB traffic, amp glow, overscan area)
    "qhy": {"device": "QHY CCD QHY163M-Sim", "exec": "indi_qhy_ccd", "extra": {
        "CCD_CAPTURE_FORMAT": ("rw", {"INDI_MONO"}), "CCD_COOLER": ("rw", COOLER),
        "CCD_COOLER_POWER": ("rw", POWER), "CCD_COOLER_MODE": ("ro", {"COOLER_AUTOMATIC", "COOLER_MANUAL"}),
        "READ_MODE": ("rw", {"MODE"}), "CCD_GAIN": ("rw", {"GAIN"}), "CCD_OFFSET": ("rw", {"OFFSET"}),
        "USB_TRAFFIC": ("rw", {"TRAFFIC"}), "USB_BUFFER": ("rw", {"BUFFER"}), "SDK_VERSION": ("ro", {"VERSION"}),
        "CCD_AMP_GLOW": ("rw", {"AMP_AUTO", "AMP_ON", "AMP_OFF"}), "OVERSCAN_MODE": ("rw", ON_OFF)},
        "gain": ("CCD_GAIN", "GAIN", 0, 580), "offset": ("CCD_OFFSET", "OFFSET", 0, 255),
        "fits": {"GAIN", "OFFSET", "AMPGLOW", "READMODE"}},
    # indi-asi/asi_ccd.cpp, asi_base.cpp (CCD_COOLER IP_WO, SDK-named CCD_CONTROLS)
    "asi": {"device": "ZWO CCD ASI1600MM Pro", "exec": "indi_asi_ccd", "extra": {
        "CCD_CAPTURE_FORMAT": ("rw", {"ASI_IMG_RAW8", "ASI_IMG_RAW16"}), "CCD_COOLER": ("wo", COOLER),
        "CCD_COOLER_POWER": ("ro", POWER),
        "CCD_CONTROLS": ("rw", {"Gain", "Offset", "BandWidth", "Flip", "HighSpeedMode", "MonoBin",
                                "AntiDewHeater"}),
        "CCD_CONTROLS_MODE": ("rw", {"AUTO_Gain", "AUTO_BandWidth"}),
        "FLIP": ("rw", {"FLIP_HORIZONTAL", "FLIP_VERTICAL"}),
        "CCD_VIDEO_FORMAT": ("rw", {"ASI_IMG_RAW8", "ASI_IMG_RAW16"}),
        "BLINK": ("rw", {"BLINK_COUNT", "BLINK_DURATION"}), "ADC_DEPTH": ("ro", {"BITS"}),
        "SDK": ("ro", {"VERSION"}), "Serial Number": ("ro", {"SN#"}), "NICKNAME": ("rw", {"nickname"})},
        "gain": ("CCD_CONTROLS", "Gain", 0, 300), "offset": ("CCD_CONTROLS", "Offset", 0, 240),
        "fits": {"GAIN", "OFFSET"}},
    # indi-playerone/playerone_ccd.cpp, playerone_base.cpp
    "playerone": {"device": "PlayerOne CCD Poseidon-M", "exec": "indi_playerone_ccd", "extra": {
        "CCD_CAPTURE_FORMAT": ("rw", {"POA_RAW8", "POA_RAW16"}), "CCD_COOLER": ("wo", COOLER),
        "CCD_COOLER_POWER": ("ro", POWER),
        "CCD_CONTROLS": ("rw", {"Gain", "Offset", "USBBandwidthLimit", "HeaterPower", "FanPower"}),
        "CCD_CONTROLS_MODE": ("rw", {"AUTO_Gain"}), "FLIP": ("rw", {"FLIP_HORIZONTAL", "FLIP_VERTICAL"}),
        "CCD_VIDEO_FORMAT": ("rw", {"POA_RAW8", "POA_RAW16"}), "BLINK": ("rw", {"BLINK_COUNT", "BLINK_DURATION"}),
        "ADC_DEPTH": ("ro", {"BITS"}), "SDK": ("ro", {"VERSION"}), "Serial Number": ("ro", {"SN#"}),
        "NICKNAME": ("rw", {"nickname"}), "SENSOR_MODE": ("rw", {"SENSOR_MODE_0", "SENSOR_MODE_1"})},
        "gain": ("CCD_CONTROLS", "Gain", 0, 500), "offset": ("CCD_CONTROLS", "Offset", 0, 100),
        "fits": {"GAIN", "OFFSET"}},
    # indi-toupbase/indi_toupbase.cpp (mono, FLAG_TEC_ONOFF, FLAG_FAN, FLAG_CGHDR, heater)
    "toupcam": {"device": "ToupTek ATR3CMOS26000KMA", "exec": "indi_toupcam_ccd", "extra": {
        "CCD_CAPTURE_FORMAT": ("rw", {"INDI_MONO_8", "INDI_MONO_16"}),
        "CCD_BINNING_MODE": ("wo", {"TC_BINNING_AVG", "TC_BINNING_ADD"}), "CCD_COOLER": ("wo", COOLER),
        "CCD_COOLER_POWER": ("ro", {"COOLER_POWER"}),
        "CCD_CONTROLS": ("rw", {"Gain", "Contrast", "Brightness", "Gamma", "Speed", "FPS Limit"}),
        "CCD_OFFSET": ("rw", {"OFFSET"}), "TC_CONVERSION_GAIN": ("rw", {"GAIN_LOW", "GAIN_HIGH", "GAIN_HDR"}),
        "TC_LOW_NOISE": ("rw", ON_OFF), "TC_HIGHFULLWELL": ("rw", ON_OFF),
        "TC_FAN_SPEED": ("rw", {"INDI_DISABLED", "FAN_SPEED1", "FAN_SPEED2", "FAN_SPEED3"}),
        "TC_HEAT_CONTROL": ("rw", {"INDI_DISABLED", "HEAT1", "HEAT2", "HEAT3"}), "ADC_DEPTH": ("ro", {"BITS"}),
        "CAMERA": ("ro", {"MODEL", "PRODUCTIONDATE", "SN", "FIRMWAREVERSION", "HARDWAREVERSION", "FPGAVERSION",
                          "REVISION"}), "SDK": ("ro", {"VERSION"})},
        "gain": ("CCD_CONTROLS", "Gain", 100, 5000), "offset": ("CCD_OFFSET", "OFFSET", 0, 255),
        "fits": {"GAIN", "OFFSET", "LOWNOISE", "FULLWELL", "SN", "PRODATE", "FIRMVER", "HARDVER", "FPGAVER"}},
    # indi-svbony/svbony_ccd.cpp, svbony_base.cpp
    "svbony": {"device": "SVBONY CCD SV605MM", "exec": "indi_svbony_ccd", "extra": {
        "CCD_CAPTURE_FORMAT": ("rw", {"SVB_IMG_RAW8", "SVB_IMG_RAW16"}), "CCD_COOLER": ("wo", COOLER),
        "CCD_COOLER_POWER": ("ro", POWER), "CCD_CONTROLS": ("rw", {"Gain", "Offset", "FrameSpeed"}),
        "CCD_CONTROLS_MODE": ("rw", {"AUTO_Gain"}), "FLIP": ("rw", {"FLIP_HORIZONTAL", "FLIP_VERTICAL"}),
        "CCD_VIDEO_FORMAT": ("rw", {"SVB_IMG_RAW8", "SVB_IMG_RAW16"}), "ADC_DEPTH": ("ro", {"BITS"}),
        "SDK": ("ro", {"VERSION"}), "Serial Number": ("ro", {"SN#"}), "NICKNAME": ("rw", {"nickname"})},
        "gain": ("CCD_CONTROLS", "Gain", 0, 720), "offset": ("CCD_CONTROLS", "Offset", 0, 255),
        "fits": {"GAIN", "OFFSET"}},
    # indi-atik/atik_ccd.cpp (Horizon: GO presets and controls, pad data, even illumination, fast mode)
    "atik": {"device": "Atik Horizon", "exec": "indi_atik_ccd", "extra": {
        "CCD_CAPTURE_FORMAT": ("rw", {"INDI_RAW"}), "CCD_COOLER": ("wo", COOLER), "CCD_COOLER_POWER": ("ro", POWER),
        "VERSION": ("ro", {"VERSION_API", "VERSION_FIRMWARE"}),
        "CCD_CONTROL_PRESETS": ("rw", {"PRESET_CUSTOM", "PRESET_LOW", "PRESET_MEDIUM", "PRESET_HIGH"}),
        "CCD_CONTROLS": ("rw", {"CONTROL_GAIN", "CONTROL_OFFSET"}),
        "CCD_PAD_DATA": ("wo", {"CONTROL_PAD_DATA_OFF", "CONTROL_PAD_DATA_ON"}),
        "CCD_EVEN_ILLUMINATION": ("wo", {"CONTROL_EVEN_ILLUMINATION_OFF", "CONTROL_EVEN_ILLUMINATION_ON"}),
        "CCD_FAST_MODE": ("rw", {"CONTROL_POWERSAVE", "CONTROL_NORMAL"})},
        "gain": ("CCD_CONTROLS", "CONTROL_GAIN", 0, 60), "offset": ("CCD_CONTROLS", "CONTROL_OFFSET", 0, 511),
        "fits": set()},
    # indi-mi/mi_ccd.cpp (read in the source: CCD_TEMP_RAMP.TEMP_RAMP IP_WO, CCD_FAN/CCD_WINDOW_HEATING IP_WO,
    # CCD_GAIN IP_RW with GIP_MAX_GAIN > 0, CCD_READ_MODE READ_MODE_n, no offset, no addFITSKeywords)
    "mi": {"device": "MI C3-26000", "exec": "indi_mi_ccd", "extra": {
        "CCD_TEMP_RAMP": ("wo", {"TEMP_RAMP"}), "CCD_CAPTURE_FORMAT": ("rw", {"INDI_MONO"}),
        "CCD_COOLER": ("wo", COOLER), "CCD_COOLER_POWER": ("ro", POWER), "CCD_FAN": ("wo", {"FAN"}),
        "CCD_WINDOW_HEATING": ("wo", {"WINDOW_HEATING"}), "CCD_GAIN": ("rw", {"GAIN"}),
        "CCD_READ_MODE": ("rw", {"READ_MODE_1", "READ_MODE_2"})},
        "gain": ("CCD_GAIN", "GAIN", 0, 4030), "offset": None, "fits": set()},
    # indi-fli/fli_ccd.cpp (no CCD_COOLER switch, no gain/offset)
    "fli": {"device": "FLI CCD", "exec": "indi_fli_ccd", "before": {"PORTS": ("wo", {"USB", "SERIAL", "PARALLEL",
                                                                                   "INET"})}, "extra": {
        "CCD_CAPTURE_FORMAT": ("rw", {"INDI_MONO"}), "CCD_COOLER_POWER": ("ro", POWER),
        "Model": ("ro", {"Model", "HW Rev", "FW Rev"}), "CCD_FLUSH_COUNT": ("rw", {"FLUSH_COUNT"}),
        "CCD_BACKGROUND_FLUSH": ("rw", {"ENABLED", "DISABLED"}), "CAMERA_MODES": ("rw", {"2.0 MHz", "8.0 MHz"})},
        "gain": None, "offset": None, "fits": set()},
}
SIM_ONLY = {"SIM_SETTINGS", "SIM_SENSOR", "SIM_FAULTS"}


def before_connect(vendor: str) -> Table:
    return {**BEFORE_CONNECT, **VENDOR_TABLES[vendor].get("before", {})}  # type: ignore[dict-item]


def expected(vendor: str) -> Table:
    table = before_connect(vendor)
    table.update(CCD_BASE)
    table.update(VENDOR_TABLES[vendor]["extra"])  # type: ignore[arg-type]
    return table


def getprop(port: int, *queries: str) -> dict[tuple[str, str, str], str]:
    """``indi_getprop -w`` → {(device, property, element): value}."""
    out = subprocess.run(["indi_getprop", "-p", str(port), "-t", "2", "-w", *queries], capture_output=True,
                         text=True, timeout=30).stdout
    result = {}
    for line in out.splitlines():
        key, _, value = line.partition("=")
        device, prop, element = key.split(".", 2)
        result[(device, prop, element)] = value
    return result


def dump(port: int, device: str) -> tuple[Table, dict[tuple[str, str, str], str]]:
    """Property → (perm, elements) of ``device`` as indi_getprop shows them, and the raw values (one getprop call:
    each call waits its whole ``-t`` timeout)."""
    values = getprop(port, f"{device}.*.*", f"{device}.*._PERM")
    table: Table = {}
    for (_, prop, element) in values:
        if element != "_PERM":
            table.setdefault(prop, (values.get((device, prop, "_PERM"), "?"), set()))[1].add(element)
    return table, values


@pytest.fixture
def twin(tmp_path: Path) -> Iterator[Callable[..., tuple[IndiServer, SimClient]]]:
    """twin(vendor, connect=True) → (indiserver running that vendor's twin, connected pyindi client)."""
    started: list[tuple[IndiServer, SimClient]] = []

    def start(vendor: str, connect: bool = True) -> tuple[IndiServer, SimClient]:
        server = IndiServer([SIM_DRIVER], env=sim_env(vendor=vendor),
                            log_path=tmp_path / f"indiserver-{vendor}.log").start()
        client = SimClient(server.port, str(VENDOR_TABLES[vendor]["device"]))
        started.append((server, client))
        client.start()
        if connect:
            client.connect_device()
        return server, client

    yield start
    for server, client in started:
        client.stop()
        server.stop()


def _alert(client: SimClient, name: str, before: int, text: str, check_state: bool = True) -> None:
    """``name`` refused: the message arrives (and the state turns Alert; a write-only vector may not be echoed)."""
    if check_state:
        client.wait_update(name, before, "Alert")
    client.wait_for(lambda: any(text in m for m in client.messages), 5, f"message {text!r}")


def _reconnect(client: SimClient) -> None:
    client.switch("CONNECTION", ["DISCONNECT"])
    client.wait_for(lambda: "CCD_EXPOSURE" not in client.props and client.props["CONNECTION"].values["DISCONNECT"],
                    5, "disconnected")
    client.connect_device()


@pytest.mark.parametrize("vendor", list(VENDOR_TABLES))
def test_property_dump_matches_driver_source(vendor: str, twin) -> None:  # type: ignore[no-untyped-def]
    table = VENDOR_TABLES[vendor]
    server, client = twin(vendor, connect=False)
    device = str(table["device"])
    listed, values = dump(server.port, device)
    before = {k: v for k, v in listed.items() if k not in SIM_ONLY}
    assert before == before_connect(vendor)
    assert values[(device, "DRIVER_INFO", "DRIVER_EXEC")] == table["exec"]
    client.connect_device()
    time.sleep(0.3)
    after = {k: v for k, v in dump(server.port, device)[0].items() if k not in SIM_ONLY}
    want = expected(vendor)
    assert sorted(after) == sorted(want), f"{vendor}: property names differ"
    for name, (perm, elements) in want.items():
        assert after[name] == (perm, elements), f"{vendor} {name}"
    # ranges (getprop cannot show them): gain, offset, and the base class ramp
    defs = raw_definitions(server.port, device)
    for role in ("gain", "offset"):
        spec = table[role]
        if spec is None:
            continue
        prop, element, lo, hi = spec  # type: ignore[misc]
        el = defs[prop]["elements"][element]  # type: ignore[index]
        assert (float(el["min"]), float(el["max"])) == (lo, hi), f"{vendor} {role}"
    ramp = defs["CCD_TEMP_RAMP"]["elements"]  # type: ignore[index]
    slope = ramp.get("RAMP_SLOPE") or ramp["TEMP_RAMP"]  # type: ignore[union-attr]
    assert (float(slope["min"]), float(slope["max"])) == (0, 30)

    # the frame carries the base-class keywords and exactly the driver's own additions, CFITSIO-formatted
    data, header = client.expose(0.5, "FRAME_DARK")
    candidates = {"GAIN", "OFFSET", "AMPGLOW", "READMODE", "USBTRAF", "USBTRAFF", "LOWNOISE", "FULLWELL", "SN",
                  "PRODATE", "FIRMVER", "HARDVER", "FPGAVER"}
    added = candidates & set(header)
    assert added == table["fits"], vendor
    assert header["INSTRUME"] == device and header["EXPTIME"] == 0.5 and header["DARKTIME"] == 0.5
    assert header["FRAME"] == "Dark" and header["ROWORDER"] == "TOP-DOWN" and data.shape == (360, 480)
    assert "Generated by INDI" in str(header["COMMENT"])
    raw = header.tostring(sep="\n")
    assert "EXPTIME =         5.000000E-01 / Total Exposure Time (s)" in raw
    if "GAIN" in added:
        gain_card = next(line for line in raw.splitlines() if line.startswith("GAIN    ="))
        assert gain_card[10:30].strip().endswith(("E+00", "E+01", "E+02", "E+03"))  # fits_update_key_dbl, 3 dec.


def test_qhy_refuses_what_the_real_driver_refuses(twin) -> None:  # type: ignore[no-untyped-def]
    _, client = twin("qhy")
    before = client.seq()
    client.number("CCD_TEMP_RAMP", {"RAMP_SLOPE": 45}, wait=False)
    _alert(client, "CCD_TEMP_RAMP", before, "Valid range is from 0 to 30. Requested value is 45")
    assert client.value("CCD_TEMP_RAMP", "RAMP_SLOPE") == 0
    before = client.seq()
    client.number("CCD_BINNING", {"HOR_BIN": 3, "VER_BIN": 3}, wait=False)
    _alert(client, "CCD_BINNING", before, "3x3 binning is not supported.")
    assert client.value("CCD_BINNING", "HOR_BIN") == 1
    before = client.seq()
    client.number("CCD_BINNING", {"HOR_BIN": 2, "VER_BIN": 1}, wait=False)
    _alert(client, "CCD_BINNING", before, "Asymmetrical binning not supported")
    client.number("CCD_BINNING", {"HOR_BIN": 4, "VER_BIN": 4})  # 1, 2, 4 are supported
    before = client.seq()
    client.number("CCD_GAIN", {"GAIN": 600}, wait=False)
    _alert(client, "CCD_GAIN", before, "Error: Invalid range for Gain (GAIN). Valid range is from 0 to 580.")
    before = client.seq()
    client.number("CCD_TEMPERATURE", {"CCD_TEMPERATURE_VALUE": -60}, wait=False)
    _alert(client, "CCD_TEMPERATURE", before, "Bad temperature value! Range is [-50.0, 50.0] (C).")
    # CCD_COOLER_MODE is read-only; writing the cooler power switches to manual mode
    client.number("CCD_COOLER_POWER", {"CCD_COOLER_VALUE": 50}, wait=True, state="Busy")
    client.wait_for(lambda: client.props["CCD_COOLER_MODE"].values["COOLER_MANUAL"], 5, "manual cooler mode")


def test_asi_write_only_cooler_and_bandwidth_reset(twin) -> None:  # type: ignore[no-untyped-def]
    server, client = twin("asi")
    device = str(VENDOR_TABLES["asi"]["device"])
    assert getprop(server.port, f"{device}.CCD_COOLER._PERM")[(device, "CCD_COOLER", "_PERM")] == "wo"
    client.switch("CCD_COOLER", ["COOLER_ON"])  # the effect, not a read-back, proves it: power rises
    client.number("CCD_TEMPERATURE", {"CCD_TEMPERATURE_VALUE": -5}, wait=False)
    client.wait_for(lambda: client.props["CCD_COOLER_POWER"].values["CCD_COOLER_VALUE"] > 0, 10, "cooler power")
    client.number("CCD_CONTROLS", {"BandWidth": 80, "Gain": 200})
    before = client.seq()
    client.number("CCD_CONTROLS", {"Gain": 301}, wait=False)  # ControlNP.update → IUUpdateNumber refuses
    _alert(client, "CCD_CONTROLS", before, "Invalid range for Gain (Gain). Valid range is from 0 to 300.")
    assert client.value("CCD_CONTROLS", "Gain") == 200
    _reconnect(client)
    # ASIBase::Connect writes BANDWIDTHOVERLOAD = 40 on every connect; the gain survives
    assert client.value("CCD_CONTROLS", "BandWidth") == 40 and client.value("CCD_CONTROLS", "Gain") == 200


def test_svbony_restores_sdk_defaults_on_every_connect(twin) -> None:  # type: ignore[no-untyped-def]
    _, client = twin("svbony")
    client.number("CCD_CONTROLS", {"Gain": 200, "Offset": 40})
    assert client.value("CCD_CONTROLS", "Gain") == 200
    _reconnect(client)
    assert (client.value("CCD_CONTROLS", "Gain"), client.value("CCD_CONTROLS", "Offset")) == (10, 0)


@pytest.mark.parametrize("vendor,heater", [("toupcam", ("TC_HEAT_CONTROL", "INDI_DISABLED")),
                                           ("mi", ("CCD_WINDOW_HEATING", "WINDOW_HEATING"))])
def test_cooler_starts_on_and_heater_restored(vendor: str, heater: tuple[str, str], twin) -> None:  # type: ignore[no-untyped-def]
    _, client = twin(vendor)
    assert client.value("CCD_COOLER", "COOLER_ON") is True
    client.wait_for(lambda: client.props["CCD_TEMPERATURE"].values["CCD_TEMPERATURE_VALUE"] < 15, 15, "cooling")
    name, element = heater
    if vendor == "toupcam":
        client.switch(name, [element], wait=True)
        _reconnect(client)
        assert client.value(name, element) is True  # restored from the driver's config, not reset to HEAT1
    else:
        client.number(name, {element: 2})
        client.number("CCD_TEMP_RAMP", {"TEMP_RAMP": 5})  # Moravian's write-only ramp, element TEMP_RAMP
        _reconnect(client)
        assert client.value(name, element) == 2 and client.value("CCD_TEMP_RAMP", "TEMP_RAMP") == 5


def test_atik_cooler_and_preset_rules(twin) -> None:  # type: ignore[no-untyped-def]
    _, client = twin("atik")
    before = client.seq()
    client.switch("CCD_COOLER", ["COOLER_ON"])  # no set point below the current temperature yet
    _alert(client, "CCD_COOLER", before, "must be below the current temperature", check_state=False)
    before = client.seq()
    client.number("CCD_CONTROLS", {"CONTROL_GAIN": 10, "CONTROL_OFFSET": 100}, wait=False)
    _alert(client, "CCD_CONTROLS", before, "Custom preset")
    client.switch("CCD_CONTROL_PRESETS", ["PRESET_CUSTOM"], wait=True)
    client.number("CCD_CONTROLS", {"CONTROL_GAIN": 10, "CONTROL_OFFSET": 100})
    assert client.value("CCD_CONTROLS", "CONTROL_OFFSET") == 100
    client.number("CCD_TEMPERATURE", {"CCD_TEMPERATURE_VALUE": -5}, wait=False)
    client.wait_for(lambda: client.props["CCD_TEMPERATURE"].values["CCD_TEMPERATURE_VALUE"] < 15, 15, "cooling")


def test_fli_cools_through_ccd_temperature_alone(twin) -> None:  # type: ignore[no-untyped-def]
    _, client = twin("fli")
    assert "CCD_COOLER" not in client.props and "CCD_GAIN" not in client.props
    client.number("CCD_TEMPERATURE", {"CCD_TEMPERATURE_VALUE": -5}, wait=False)
    client.wait_for(lambda: client.props["CCD_TEMPERATURE"].values["CCD_TEMPERATURE_VALUE"] < 15, 15, "cooling")
    data, header = client.expose(0.2, "FRAME_BIAS")
    assert data.shape == (360, 480) and "GAIN" not in header and header["IMAGETYP"] == "Bias Frame"
