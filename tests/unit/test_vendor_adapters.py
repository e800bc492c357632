"""drivers/indi/vendors: each family's vocabulary found on property snapshots built from its driver's source.

The snapshots below copy the properties each driver defines (names, element names, labels, permissions, ranges) from
indilib/indi-3rdparty; the SDK-named ``CCD_CONTROLS`` elements of ZWO/Player One/SVBony use the SDK spellings those
drivers copy at run time (and a renamed variant, to prove they are discovered, not hard-coded).
"""

from __future__ import annotations

import pytest

from drivers.indi.client import PropertySnapshot
from drivers.indi.vendors import adapter_for
from drivers.indi.vendors.atik import AtikAdapter
from drivers.indi.vendors.base import find_kstars

DEV = "dev"


def num(name: str, elements: dict[str, tuple[float, float, float, str]], perm: str = "rw") -> PropertySnapshot:
    """A number vector: element -> (value, min, max, label)."""
    return PropertySnapshot(DEV, name, "number", "Idle", {k: v[0] for k, v in elements.items()},
                            {k: (v[1], v[2], 1.0) for k, v in elements.items()}, 1,
                            {k: v[3] for k, v in elements.items()}, perm, name)


def sw(name: str, elements: dict[str, bool], perm: str = "rw") -> PropertySnapshot:
    return PropertySnapshot(DEV, name, "switch", "Idle", dict(elements), {}, 1, {k: k for k in elements}, perm, name)


def props(*snaps: PropertySnapshot) -> dict[str, PropertySnapshot]:
    base = (num("CCD_TEMPERATURE", {"CCD_TEMPERATURE_VALUE": (20.0, -50.0, 50.0, "Temperature (C)")}),
            num("CCD_EXPOSURE", {"CCD_EXPOSURE_VALUE": (1.0, 0.0001, 3600.0, "Duration (s)")}))
    return {s.name: s for s in (*base, *snaps)}


def cooler(perm: str = "rw") -> PropertySnapshot:
    return sw("CCD_COOLER", {"COOLER_ON": False, "COOLER_OFF": True}, perm)


def power(element: str = "CCD_COOLER_VALUE", perm: str = "ro") -> PropertySnapshot:
    return num("CCD_COOLER_POWER", {element: (0.0, 0.0, 100.0, "Cooling Power (%)")}, perm)


# ---- per family: the driver's own vocabulary ------------------------------------------------------------------------
QHY = props(num("CCD_GAIN", {"GAIN": (0, 0, 580, "Gain")}), num("CCD_OFFSET", {"OFFSET": (0, 0, 255, "Offset")}),
            power(), cooler(), num("READ_MODE", {"MODE": (0, 0, 3, "Mode")}),
            num("USB_TRAFFIC", {"TRAFFIC": (30, 0, 60, "Speed")}),
            sw("CCD_AMP_GLOW", {"AMP_AUTO": True, "AMP_ON": False, "AMP_OFF": False}),
            sw("OVERSCAN_MODE", {"INDI_ENABLED": False, "INDI_DISABLED": True}))
# indi-asi/asi_base.cpp: CCD_COOLER IP_WO, CCD_COOLER_POWER IP_RO, CCD_CONTROLS from ASI_CONTROL_CAPS names
ASI = props(cooler("wo"), power(), num("ADC_DEPTH", {"BITS": (12, 0, 32, "Bits")}, "ro"),
            num("CCD_CONTROLS", {"Gain": (0, 0, 600, "Gain"), "Exposure": (1e4, 32, 2e9, "Exposure"),
                                 "Offset": (10, 0, 100, "Offset"), "BandWidth": (50, 40, 100, "BandWidth"),
                                 "AntiDewHeater": (1, 0, 1, "AntiDewHeater"), "FanOn": (1, 0, 1, "FanOn")}),
            sw("CCD_CAPTURE_FORMAT", {"ASI_IMG_RAW8": True, "ASI_IMG_RAW16": False}))
# indi-toupbase/indi_toupbase.cpp: offset in CCD_OFFSET, cooler power COOLER_POWER, TC_* switches
TOUP = props(cooler(), power("COOLER_POWER"), num("CCD_OFFSET", {"OFFSET": (0, 0, 31 * 16, "Offset")}),
             num("CCD_CONTROLS", {"Gain": (100, 100, 5000, "Gain"), "Speed": (0, 0, 4, "Speed")}),
             sw("TC_CONVERSION_GAIN", {"GAIN_LOW": True, "GAIN_HIGH": False, "GAIN_HDR": False}),
             sw("TC_HEAT_CONTROL", {"INDI_DISABLED": False, "HEAT1": False, "HEAT2": True}),
             sw("TC_FAN_SPEED", {"INDI_DISABLED": False, "FAN_SPEED1": True}))
# indi-atik/atik_ccd.cpp: presets + CONTROL_GAIN/CONTROL_OFFSET labelled Gain/Offset
ATIK = props(cooler(), power(), sw("CCD_CONTROL_PRESETS", {"PRESET_CUSTOM": False, "PRESET_LOW": True,
                                                           "PRESET_MEDIUM": False, "PRESET_HIGH": False}),
             num("CCD_CONTROLS", {"CONTROL_GAIN": (30, 0, 60, "Gain"), "CONTROL_OFFSET": (0, 0, 511, "Offset")}))
# indi-mi/mi_ccd.cpp: CCD_GAIN read-only (e-/ADU), heating and fan write-only numbers, CCD_READ_MODE switch
MI = props(cooler(), power(), num("CCD_GAIN", {"GAIN": (0.8, 0, 100, "Gain (e-/ADU)")}, "ro"),
           num("CCD_WINDOW_HEATING", {"WINDOW_HEATING": (0, 0, 3, "Heating Intensity")}, "wo"),
           num("CCD_FAN", {"FAN": (1, 0, 2, "Fan speed")}, "wo"),
           sw("CCD_READ_MODE", {"PREVIEW": False, "LOW_NOISE": True}))
# indi-fli/fli_ccd.cpp: no CCD_COOLER, CAMERA_MODES
FLI = props(power(), sw("CAMERA_MODES", {"MODE_0": True, "MODE_1": False}))
# indi-playerone/playerone_base.cpp: SENSOR_MODE, CCD_CONTROLS from POAConfigAttributes
PLAYERONE = props(cooler(), power(), sw("SENSOR_MODE", {"Normal": True, "LowNoise": False}),
                  num("CCD_CONTROLS", {"Gain": (0, 0, 600, "Gain"), "Offset": (0, 0, 1000, "Offset"),
                                       "USBBandwidthLimit": (100, 35, 100, "USB Bandwidth Limit"),
                                       "HeaterPower": (10, 0, 100, "Heater Power"),
                                       "FanPower": (50, 0, 100, "Fan Power")}))
# indi-svbony/svbony_base.cpp: CCD_CONTROLS from SVB_CONTROL_CAPS
SVBONY = props(cooler(), power(), num("CCD_CONTROLS", {"Gain": (10, 0, 720, "Gain"),
                                                       "Offset": (0, 0, 255, "Offset"),
                                                       "FrameSpeed": (1, 0, 2, "Frame speed")}))
# Debian's indi_simulator_ccd
STOCK = props(cooler(), num("CCD_GAIN", {"GAIN": (90, 0, 100, "Gain")}),
              num("CCD_OFFSET", {"OFFSET": (0, 0, 6000, "Offset")}),
              num("CCD_TEMP_RAMP", {"RAMP_SLOPE": (0, 0, 30, "Max. dT (C/min)"),
                                    "RAMP_THRESHOLD": (0.2, 0.1, 2, "Threshold (C)")}))


@pytest.mark.parametrize(("driver_exec", "family"), [
    ("indi_qhy_ccd", "qhy"), ("indi_asi_ccd", "asi"), ("indi_asi_single_ccd", "asi"),
    ("indi_playerone_ccd", "playerone"), ("indi_toupcam_ccd", "toupcam"), ("indi_altair_ccd", "toupcam"),
    ("indi_bressercam_ccd", "toupcam"), ("indi_mallincam_ccd", "toupcam"), ("indi_nncam_ccd", "toupcam"),
    ("indi_ogmacam_ccd", "toupcam"), ("indi_omegonprocam_ccd", "toupcam"), ("indi_starshootg_ccd", "toupcam"),
    ("indi_tscam_ccd", "toupcam"), ("indi_svbony_ccd", "svbony"), ("indi_atik_ccd", "atik"), ("indi_mi_ccd", "mi"),
    ("indi_fli_ccd", "fli"), ("indi_simulator_ccd", "generic"), ("/usr/bin/indi_asi_ccd", "asi"),
])
def test_adapter_is_chosen_by_driver_exec_not_device_name(driver_exec: str, family: str) -> None:
    assert adapter_for(driver_exec, "My renamed camera").name == family
    assert adapter_for(driver_exec, "QHY CCD QHY163M").name == family  # the exec decides, even against the name


def test_device_name_is_only_a_hint_when_the_exec_is_unknown() -> None:
    assert adapter_for("indi_darkd_sim_ccd", "QHY CCD QHY163M-Sim").name == "qhy"
    assert adapter_for("indi_darkd_sim_ccd", "ZWO CCD ASI1600MM Pro").name == "asi"
    assert adapter_for(None, "Some Camera").name == "generic"
    assert adapter_for("indi_unknown_ccd", None).name == "generic"


def where(vocab, setting: str) -> str | None:  # type: ignore[no-untyped-def]
    control = vocab.get(setting)
    return control.where if control is not None else None


def test_qhy_vocabulary() -> None:
    v = adapter_for("indi_qhy_ccd").discover(QHY)
    assert [where(v, s) for s in ("gain", "offset", "read_mode", "usb_traffic", "amp_glow", "overscan",
                                  "cooler_power")] == ["CCD_GAIN.GAIN", "CCD_OFFSET.OFFSET", "READ_MODE.MODE",
                                                       "USB_TRAFFIC.TRAFFIC", "CCD_AMP_GLOW", "OVERSCAN_MODE",
                                                       "CCD_COOLER_POWER.CCD_COOLER_VALUE"]
    assert v.get("heater") is None


def test_asi_controls_found_by_sdk_name_and_cooler_is_write_only() -> None:
    adapter = adapter_for("indi_asi_ccd")
    v = adapter.discover(ASI)
    assert where(v, "gain") == "CCD_CONTROLS.Gain" and where(v, "offset") == "CCD_CONTROLS.Offset"
    assert where(v, "usb_traffic") == "CCD_CONTROLS.BandWidth"
    assert where(v, "heater") == "CCD_CONTROLS.AntiDewHeater" and where(v, "fan") == "CCD_CONTROLS.FanOn"
    cooler_control = v.get("cooler")
    assert cooler_control is not None and cooler_control.writable and not cooler_control.readable
    rows = {r.setting: r for r in v.table()}
    assert rows["cooler"].access == "sets" and "verified by effect" in rows["cooler"].note
    assert rows["cooler_power"].access == "reads" and rows["gain"].range == (0, 600)
    assert rows["amp_glow"].access == "lacks"
    assert rows["fan"].access == "reads" and rows["capture_format"].access == "sets"  # darkd never drives the fan
    assert [c.setting for c in adapter.heater_controls(v)] == ["heater"]
    assert adapter.capture_format == "ASI_IMG_RAW16"


def test_sdk_names_are_discovered_not_hard_coded() -> None:
    renamed = props(num("CCD_CONTROLS", {"GainValue": (0, 0, 600, "Gain"), "Black": (0, 0, 100, "Offset"),
                                         "USB_Bandwidth": (50, 40, 100, "USB bandwidth"),
                                         "DewHeaterPower": (0, 0, 100, "Anti-dew heater")}))
    v = adapter_for("indi_asi_ccd").discover(renamed)
    assert where(v, "gain") == "CCD_CONTROLS.GainValue"  # by label, the KStars rule
    assert where(v, "offset") == "CCD_CONTROLS.Black"
    assert where(v, "usb_traffic") == "CCD_CONTROLS.USB_Bandwidth"
    assert where(v, "heater") == "CCD_CONTROLS.DewHeaterPower"


def test_toupcam_offset_and_cooler_power_live_elsewhere_and_heater_off_is_its_off_option() -> None:
    adapter = adapter_for("indi_omegonprocam_ccd")
    v = adapter.discover(TOUP)
    assert where(v, "gain") == "CCD_CONTROLS.Gain" and where(v, "offset") == "CCD_OFFSET.OFFSET"
    assert where(v, "cooler_power") == "CCD_COOLER_POWER.COOLER_POWER"
    assert where(v, "conversion_gain") == "TC_CONVERSION_GAIN" and where(v, "usb_traffic") == "CCD_CONTROLS.Speed"
    heater = v.get("heater")
    assert heater is not None and heater.options[heater.off_value()] == "INDI_DISABLED"
    assert adapter.cooler_starts_on


def test_atik_gain_found_by_label_and_custom_preset_comes_first() -> None:
    adapter = adapter_for("indi_atik_ccd")
    v = adapter.discover(ATIK)
    assert where(v, "gain") == "CCD_CONTROLS.CONTROL_GAIN" and where(v, "offset") == "CCD_CONTROLS.CONTROL_OFFSET"
    assert adapter.prepare("offset", ATIK) == [("CCD_CONTROL_PRESETS", "PRESET_CUSTOM")]
    assert adapter.prepare("read_mode", ATIK) == []
    assert isinstance(adapter, AtikAdapter) and adapter.cooler_on_needs_colder_target


def test_moravian_gain_is_read_only_no_offset_heater_write_only() -> None:
    v = adapter_for("indi_mi_ccd").discover(MI)
    rows = {r.setting: r for r in v.table()}
    assert rows["gain"].access == "reads" and rows["gain"].where == "CCD_GAIN.GAIN"
    assert rows["offset"].access == "lacks"
    assert rows["heater"].access == "sets" and "verified by effect" in rows["heater"].note
    assert where(v, "read_mode") == "CCD_READ_MODE"


def test_fli_cools_without_a_cooler_switch() -> None:
    adapter = adapter_for("indi_fli_ccd")
    v = adapter.discover({**FLI, "CCD_COOLER": cooler()})  # even if one appeared, FLI does not use it
    assert v.get("cooler") is None and not adapter.cooler_switch
    assert v.get("gain") is None and v.get("offset") is None and where(v, "read_mode") == "CAMERA_MODES"


def test_playerone_and_svbony() -> None:
    p = adapter_for("indi_playerone_ccd").discover(PLAYERONE)
    assert (where(p, "read_mode"), where(p, "usb_traffic"), where(p, "heater"), where(p, "fan")) == (
        "SENSOR_MODE", "CCD_CONTROLS.USBBandwidthLimit", "CCD_CONTROLS.HeaterPower", "CCD_CONTROLS.FanPower")
    adapter = adapter_for("indi_svbony_ccd")
    s = adapter.discover(SVBONY)
    assert (where(s, "gain"), where(s, "offset"), where(s, "usb_traffic")) == (
        "CCD_CONTROLS.Gain", "CCD_CONTROLS.Offset", "CCD_CONTROLS.FrameSpeed")
    assert adapter.defaults_on_connect


def test_stock_simulator_is_generic_with_its_ranges() -> None:
    v = adapter_for("indi_simulator_ccd").discover(STOCK)
    assert where(v, "gain") == "CCD_GAIN.GAIN" and v.get("gain").limits[:2] == (0, 100)  # type: ignore[union-attr]
    assert where(v, "temp_ramp") == "CCD_TEMP_RAMP.RAMP_SLOPE" and v.get("cooler_power") is None
    assert {r.setting: r.access for r in v.table()}["temp_ramp"] == "sets"


def test_kstars_rule_prefers_ccd_gain_then_the_first_number_property() -> None:
    both = props(num("CCD_CONTROLS", {"Gain": (0, 0, 10, "Gain")}), num("CCD_GAIN", {"GAIN": (0, 0, 99, "Gain")}))
    assert find_kstars(both, "gain", "CCD_GAIN").where == "CCD_GAIN.GAIN"  # type: ignore[union-attr]
    order = props(num("A", {"x": (0, 0, 1, "Gain")}), num("B", {"gain": (0, 0, 1, "g")}))
    assert find_kstars(order, "gain", "CCD_GAIN").where == "A.x"  # type: ignore[union-attr]
    text_only = {"T": PropertySnapshot(DEV, "T", "text", "Idle", {"gain": "1"})}
    assert find_kstars(text_only, "gain", "CCD_GAIN") is None  # only number properties count


def test_range_check_names_the_range() -> None:
    gain = adapter_for("indi_asi_ccd").discover(ASI).get("gain")
    assert gain is not None and gain.check(600) is None
    assert gain.check(601) == "gain 601 is outside the driver's range 0..600 (CCD_CONTROLS.Gain)"
    mode = adapter_for("indi_fli_ccd").discover(FLI).get("read_mode")
    assert mode is not None and mode.check(1) is None and "0..1" in (mode.check(2) or "")
