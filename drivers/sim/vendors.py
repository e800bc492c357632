"""Vendor vocabularies of the simulated camera: one table entry per real INDI driver (``DARKD_SIM_VENDOR``).

Each :class:`VendorSpec` says what the twin of one driver defines beyond the INDI::CCD base class (which
:mod:`drivers.sim.vocabulary` builds for every vendor): device name, ``DRIVER_INFO``, the vendor's own vectors with
their permissions and ranges, which element plays which role (gain, offset, cooler switch, cooler power, ramp), the
FITS keywords the driver adds, and its quirks. Sources (indilib/indi-3rdparty unless noted) are cited per entry; the
README's vendor table says which points were read in the source and which come from issue 13's table.

Only data here; behaviour lives in :mod:`drivers.sim.driver`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

MAIN = "Main Control"
CONTROLS = "Controls"
OPTIONS = "Options"
INFO = "General Info"
IMAGE = "Image Settings"

#: (name, label, format, min, max, step, value)
NumEl = tuple[str, str, str, float, float, float, float]
#: (name, label, on)
SwEl = tuple[str, str, bool]


@dataclass(frozen=True)
class NumberDef:
    name: str
    label: str
    group: str
    perm: str
    elements: tuple[NumEl, ...]


@dataclass(frozen=True)
class SwitchDef:
    name: str
    label: str
    group: str
    perm: str
    rule: str
    elements: tuple[SwEl, ...]


@dataclass(frozen=True)
class TextDef:
    name: str
    label: str
    group: str
    perm: str
    elements: tuple[tuple[str, str, str], ...]


VectorDef = NumberDef | SwitchDef | TextDef


@dataclass(frozen=True)
class FitsKey:
    """A keyword the driver's ``addFITSKeywords`` writes: value of ``role`` (see VendorSpec.roles), CFITSIO decimals
    (``None``: a string — the on-switch's label, or the text element's text)."""

    key: str
    role: str
    decimals: int | None
    comment: str


@dataclass(frozen=True)
class VendorSpec:
    """One real driver's vocabulary and quirks (see module docstring)."""

    key: str
    source: str  #: driver file(s) in indilib/indi-3rdparty
    model: str
    device_name: str
    driver_name: str
    driver_exec: str
    driver_version: str
    capture_formats: tuple[SwEl, ...]
    vectors: tuple[VectorDef, ...]
    #: role → (property, element); roles: gain, offset, cooler_power, read_mode, usb_traffic, amp_glow, overscan
    roles: dict[str, tuple[str, str]]
    #: CCD_COOLER permission ("rw", "wo") or None when the driver defines no cooler switch
    cooler_switch: str | None = "rw"
    cooler_labels: tuple[str, str] = ("ON", "OFF")
    cooler_starts_on: bool = False
    #: replace the base class CCD_TEMP_RAMP (Moravian: element TEMP_RAMP, write-only)
    ramp: NumberDef | None = None
    fits_keys: tuple[FitsKey, ...] = ()
    bins: tuple[int, ...] = (1, 2, 3, 4)
    #: values the SDK puts back on every connect (property → {element: value})
    reset_on_connect: dict[str, dict[str, float]] = field(default_factory=dict)
    #: vectors whose last value survives a reconnect (the driver saves and reloads them from its config file)
    restored_from_config: tuple[str, ...] = ()
    #: Atik: cooler-on refused unless the set point is below the current temperature
    cooler_on_needs_lower_target: bool = False
    #: Atik: CCD_CONTROLS only writable while CCD_CONTROL_PRESETS is PRESET_CUSTOM
    controls_need_custom_preset: bool = False
    #: physics inputs for cameras that lack a gain or offset control (sensor fixed at this value)
    fixed_gain: float = 120.0
    fixed_offset: float = 30.0
    #: QHY: CCD_COOLER_POWER writable (manual PWM), CCD_COOLER_MODE read-only
    manual_cooler_power: bool = False
    #: vectors the driver defines before CONNECT (ISGetProperties), besides the base class ones
    before_connect: tuple[VectorDef, ...] = ()
    #: CCD_EXPOSURE minimum the driver sets (PrimaryCCD.setMinMaxStep)
    min_exposure_s: float = 0.0001


def _n(name: str, label: str, group: str, perm: str, *elements: NumEl) -> NumberDef:
    return NumberDef(name, label, group, perm, tuple(elements))


def _s(name: str, label: str, group: str, perm: str, rule: str, *elements: SwEl) -> SwitchDef:
    return SwitchDef(name, label, group, perm, rule, tuple(elements))


def _onoff(name: str, label: str, group: str = CONTROLS, on: bool = False) -> SwitchDef:
    return _s(name, label, group, "rw", "OneOfMany", ("INDI_ENABLED", "ON", on), ("INDI_DISABLED", "OFF", not on))


MONO16 = (("INDI_MONO", "Mono", True),)

# --------------------------------------------------------------------------------------------------------------- QHY
# indi-qhy/qhy_ccd.cpp: initProperties (CCD_GAIN/CCD_OFFSET/READ_MODE/USB_TRAFFIC/USB_BUFFER/SDK_VERSION/
# CCD_COOLER_MODE IP_RO/OVERSCAN_MODE/CCD_AMP_GLOW), updateProperties (CCD_COOLER_POWER rw with manual PWM),
# UpdateCCDBin (symmetric, supported bins only), addFITSKeywords (GAIN 3, OFFSET 3, AMPGLOW label, READMODE 1).
QHY = VendorSpec(
    key="qhy", source="indi-qhy/qhy_ccd.cpp", model="QHY163M-Sim", device_name="QHY CCD QHY163M-Sim",
    driver_name="QHY CCD", driver_exec="indi_qhy_ccd", driver_version="2.8",
    capture_formats=MONO16,
    vectors=(
        _n("CCD_COOLER_POWER", "Cooling Power", MAIN, "rw",
           ("CCD_COOLER_VALUE", "Cooling Power (%)", "%+06.2f", 0, 100, 5, 0)),
        _s("CCD_COOLER_MODE", "Cooler Mode", MAIN, "ro", "OneOfMany",
           ("COOLER_AUTOMATIC", "Auto", True), ("COOLER_MANUAL", "Manual", False)),
        _n("READ_MODE", "Read Mode", MAIN, "rw", ("MODE", "Mode", "%.f", 0, 0, 1, 0)),
        _n("CCD_GAIN", "Gain", MAIN, "rw", ("GAIN", "Gain", "%.f", 0, 580, 1, 120)),
        _n("CCD_OFFSET", "Offset", MAIN, "rw", ("OFFSET", "Offset", "%.f", 0, 255, 1, 30)),
        _n("USB_TRAFFIC", "USB Traffic", MAIN, "rw", ("TRAFFIC", "Speed", "%.f", 0, 255, 12.75, 30)),
        _n("USB_BUFFER", "USB Buffer", MAIN, "rw", ("BUFFER", "Bytes", "%.f", 512, 4096, 512, 512)),
        TextDef("SDK_VERSION", "SDK", INFO, "ro", (("VERSION", "Version", "23.9.6"),)),
        _s("CCD_AMP_GLOW", "Amp Glow", MAIN, "rw", "OneOfMany",
           ("AMP_AUTO", "Auto", True), ("AMP_ON", "On", False), ("AMP_OFF", "Off", False)),
        _s("OVERSCAN_MODE", "Overscan Area", MAIN, "rw", "OneOfMany",
           ("INDI_ENABLED", "Include", False), ("INDI_DISABLED", "Ignore", True)),
    ),
    roles={"gain": ("CCD_GAIN", "GAIN"), "offset": ("CCD_OFFSET", "OFFSET"),
           "cooler_power": ("CCD_COOLER_POWER", "CCD_COOLER_VALUE"), "read_mode": ("READ_MODE", "MODE"),
           "usb_traffic": ("USB_TRAFFIC", "TRAFFIC"), "amp_glow": ("CCD_AMP_GLOW", ""),
           "overscan": ("OVERSCAN_MODE", "")},
    cooler_switch="rw", cooler_labels=("On", "Off"),
    fits_keys=(FitsKey("GAIN", "gain", 3, "Gain"), FitsKey("OFFSET", "offset", 3, "Offset"),
               FitsKey("AMPGLOW", "amp_glow", None, "Mode"), FitsKey("READMODE", "read_mode", 1, "Read Mode")),
    bins=(1, 2, 4), manual_cooler_power=True,
)

# --------------------------------------------------------------------------------------------------------------- ZWO
# indi-asi/asi_ccd.cpp ("ZWO CCD %s", SDK name without "ZWO ") + indi-asi/asi_base.cpp (read in the source):
# CCD_COOLER IP_WO; CCD_COOLER_POWER IP_RO whose min/max setupParams() copies from the ASI_TARGET_TEMP caps;
# CCD_CONTROLS "Controls" (one element per SDK control, named after it), CCD_CONTROLS_MODE "Set Auto" (AnyOfMany),
# FLIP, CCD_VIDEO_FORMAT, BLINK, ADC_DEPTH, SDK, "Serial Number", NICKNAME; Connect() writes BANDWIDTHOVERLOAD = 40;
# addFITSKeywords: GAIN and OFFSET with 3 decimals. The SDK control list of the ASI1600MM Pro is not in the source:
# the elements below are a plausible subset.
ASI = VendorSpec(
    key="asi", source="indi-asi/asi_ccd.cpp, indi-asi/asi_base.cpp", model="ASI1600MM Pro",
    device_name="ZWO CCD ASI1600MM Pro", driver_name="ZWO CCD", driver_exec="indi_asi_ccd", driver_version="2.5",
    capture_formats=(("ASI_IMG_RAW8", "Raw 8 bit", False), ("ASI_IMG_RAW16", "Raw 16 bit", True)),
    vectors=(
        _n("CCD_COOLER_POWER", "Cooling Power", MAIN, "ro",
           ("CCD_COOLER_VALUE", "Cooling Power (%)", "%+06.2f", -40, 30, 0.2, 0)),
        _n("CCD_CONTROLS", "Controls", CONTROLS, "rw",
           ("Gain", "Gain", "%g", 0, 300, 1, 139), ("Offset", "Offset", "%g", 0, 240, 1, 21),
           ("BandWidth", "BandWidth", "%g", 40, 100, 1, 50), ("Flip", "Flip", "%g", 0, 3, 1, 0),
           ("HighSpeedMode", "HighSpeedMode", "%g", 0, 1, 1, 0), ("MonoBin", "MonoBin", "%g", 0, 1, 1, 0),
           ("AntiDewHeater", "AntiDewHeater", "%g", 0, 1, 1, 0)),
        _s("CCD_CONTROLS_MODE", "Set Auto", CONTROLS, "rw", "AnyOfMany",
           ("AUTO_Gain", "Gain", False), ("AUTO_BandWidth", "BandWidth", False)),
        _s("FLIP", "Flip", CONTROLS, "rw", "AnyOfMany", ("FLIP_HORIZONTAL", "Horizontal", False),
           ("FLIP_VERTICAL", "Vertical", False)),
        _s("CCD_VIDEO_FORMAT", "Format", CONTROLS, "rw", "OneOfMany",
           ("ASI_IMG_RAW8", "Raw 8 bit", False), ("ASI_IMG_RAW16", "Raw 16 bit", True)),
        _n("BLINK", "Blink", CONTROLS, "rw", ("BLINK_COUNT", "Blinks before exposure", "%2.0f", 0, 100, 1, 0),
           ("BLINK_DURATION", "Blink duration", "%2.3f", 0, 60, 0.001, 0)),
        _n("ADC_DEPTH", "ADC Depth", "Image Info", "ro", ("BITS", "Bits", "%2.0f", 0, 32, 1, 12)),
        TextDef("SDK", "SDK", INFO, "ro", (("VERSION", "Version", "1, 37, 0, 0"),)),
        TextDef("Serial Number", "Serial Number", INFO, "ro", (("SN#", "SN#", "1a2b3c4d5e6f7081"),)),
        TextDef("NICKNAME", "Nickname", INFO, "rw", (("nickname", "nickname", ""),)),
    ),
    roles={"gain": ("CCD_CONTROLS", "Gain"), "offset": ("CCD_CONTROLS", "Offset"),
           "cooler_power": ("CCD_COOLER_POWER", "CCD_COOLER_VALUE"), "bandwidth": ("CCD_CONTROLS", "BandWidth"),
           "heater": ("CCD_CONTROLS", "AntiDewHeater"), "adc_bits": ("ADC_DEPTH", "BITS")},
    cooler_switch="wo",
    fits_keys=(FitsKey("GAIN", "gain", 3, "Gain"), FitsKey("OFFSET", "offset", 3, "Offset")),
    bins=(1, 2, 3, 4), reset_on_connect={"CCD_CONTROLS": {"BandWidth": 40}},
)

# --------------------------------------------------------------------------------------------------------- Player One
# indi-playerone/playerone_ccd.cpp ("PlayerOne CCD %s") + playerone_base.cpp (read in the source): the same layout
# as ASIBase — CCD_COOLER IP_WO, CCD_COOLER_POWER IP_RO (min/max from POA_TARGET_TEMP), CCD_CONTROLS named after the
# SDK configs, CCD_CONTROLS_MODE, FLIP, CCD_VIDEO_FORMAT (POA_RAW8/POA_RAW16), BLINK, ADC_DEPTH, SDK, Serial Number,
# NICKNAME; Connect() writes POA_USB_BANDWIDTH_LIMIT = 40; GAIN/OFFSET in the FITS. SENSOR_MODE (issue 13's table) and
# the SDK config names are not in this source: element names below are plausible.
PLAYERONE = VendorSpec(
    key="playerone", source="indi-playerone/playerone_ccd.cpp, indi-playerone/playerone_base.cpp",
    model="Poseidon-M", device_name="PlayerOne CCD Poseidon-M", driver_name="PlayerOne CCD",
    driver_exec="indi_playerone_ccd", driver_version="1.8",
    capture_formats=(("POA_RAW8", "Raw 8 bit", False), ("POA_RAW16", "Raw 16 bit", True)),
    vectors=(
        _n("CCD_COOLER_POWER", "Cooling Power", MAIN, "ro",
           ("CCD_COOLER_VALUE", "Cooling Power (%)", "%+06.2f", -50, 50, 0.2, 0)),
        _n("CCD_CONTROLS", "Controls", CONTROLS, "rw",
           ("Gain", "Gain", "%g", 0, 500, 1, 120), ("Offset", "Offset", "%g", 0, 100, 1, 12),
           ("USBBandwidthLimit", "USB Bandwidth Limit", "%g", 35, 100, 1, 100),
           ("HeaterPower", "Heater Power", "%g", 0, 100, 1, 0), ("FanPower", "Fan Power", "%g", 0, 100, 1, 100)),
        _s("CCD_CONTROLS_MODE", "Set Auto", CONTROLS, "rw", "AnyOfMany", ("AUTO_Gain", "Gain", False)),
        _s("FLIP", "Flip", CONTROLS, "rw", "AnyOfMany", ("FLIP_HORIZONTAL", "Horizontal", False),
           ("FLIP_VERTICAL", "Vertical", False)),
        _s("CCD_VIDEO_FORMAT", "Format", CONTROLS, "rw", "OneOfMany",
           ("POA_RAW8", "Raw 8 bit", False), ("POA_RAW16", "Raw 16 bit", True)),
        _n("BLINK", "Blink", CONTROLS, "rw", ("BLINK_COUNT", "Blinks before exposure", "%2.0f", 0, 100, 1, 0),
           ("BLINK_DURATION", "Blink duration", "%2.3f", 0, 60, 0.001, 0)),
        _n("ADC_DEPTH", "ADC Depth", "Image Info", "ro", ("BITS", "Bits", "%2.0f", 0, 32, 1, 12)),
        TextDef("SDK", "SDK", INFO, "ro", (("VERSION", "Version", "3.6.2"),)),
        TextDef("Serial Number", "Serial Number", INFO, "ro", (("SN#", "SN#", "P0A1B2C3D4"),)),
        TextDef("NICKNAME", "Nickname", INFO, "rw", (("nickname", "nickname", ""),)),
        _s("SENSOR_MODE", "Sensor Mode", CONTROLS, "rw", "OneOfMany",
           ("SENSOR_MODE_0", "Normal", True), ("SENSOR_MODE_1", "LowNoise", False)),
    ),
    roles={"gain": ("CCD_CONTROLS", "Gain"), "offset": ("CCD_CONTROLS", "Offset"),
           "cooler_power": ("CCD_COOLER_POWER", "CCD_COOLER_VALUE"),
           "bandwidth": ("CCD_CONTROLS", "USBBandwidthLimit"), "heater": ("CCD_CONTROLS", "HeaterPower"),
           "fan": ("CCD_CONTROLS", "FanPower"), "mode": ("SENSOR_MODE", ""), "adc_bits": ("ADC_DEPTH", "BITS")},
    cooler_switch="wo",
    fits_keys=(FitsKey("GAIN", "gain", 3, "Gain"), FitsKey("OFFSET", "offset", 3, "Offset")),
    reset_on_connect={"CCD_CONTROLS": {"USBBandwidthLimit": 40}},
)

# ------------------------------------------------------------------------------------------------- ToupTek family
# indi-toupbase/indi_toupbase.cpp: device "<DNAME> <model>" (DNAME "ToupTek" for indi_toupcam_ccd), CCD_COOLER IP_WO
# starting ON (IPS_BUSY), CCD_COOLER_POWER.COOLER_POWER ("Percent", 0..100, IP_RO), CCD_CONTROLS (Gain, Contrast,
# Brightness, Gamma, Speed, FPS Limit on mono), CCD_OFFSET.OFFSET ("Value", 0..255, Controls tab),
# TC_CONVERSION_GAIN, TC_LOW_NOISE, TC_HIGHFULLWELL, TC_FAN_SPEED, TC_HEAT_CONTROL (INDI_DISABLED + HEATn).
TOUPCAM = VendorSpec(
    key="toupcam", source="indi-toupbase/indi_toupbase.cpp", model="ATR3CMOS26000KMA",
    device_name="ToupTek ATR3CMOS26000KMA", driver_name="ToupTek", driver_exec="indi_toupcam_ccd",
    driver_version="1.62",
    capture_formats=(("INDI_MONO_8", "Mono 8", False), ("INDI_MONO_16", "Mono 16", True)),
    vectors=(
        _s("CCD_BINNING_MODE", "Binning Mode", IMAGE, "wo", "OneOfMany",
           ("TC_BINNING_AVG", "AVG", False), ("TC_BINNING_ADD", "Add", True)),
        _n("CCD_COOLER_POWER", "Cooler Power", MAIN, "ro", ("COOLER_POWER", "Percent", "%.f", 0, 100, 10, 0)),
        _n("CCD_CONTROLS", "Controls", CONTROLS, "rw",
           ("Gain", "Gain", "%.f", 100, 5000, 1, 100), ("Contrast", "Contrast", "%.f", -255, 255, 1, 0),
           ("Brightness", "Brightness", "%.f", -255, 255, 1, 0), ("Gamma", "Gamma", "%.f", 20, 180, 1, 100),
           ("Speed", "Speed", "%.f", 0, 3, 1, 0), ("FPS Limit", "FPS Limit", "%.f", 0, 63, 1, 0)),
        _n("CCD_OFFSET", "Offset", CONTROLS, "rw", ("OFFSET", "Value", "%.f", 0, 255, 1, 0)),
        _s("TC_CONVERSION_GAIN", "Conversion Gain", CONTROLS, "rw", "OneOfMany",
           ("GAIN_LOW", "Low", True), ("GAIN_HIGH", "High", False), ("GAIN_HDR", "HDR", False)),
        _onoff("TC_LOW_NOISE", "Low Noise Mode"),
        _onoff("TC_HIGHFULLWELL", "High Fullwell Mode"),
        _s("TC_FAN_SPEED", "Fan Speed", CONTROLS, "rw", "OneOfMany", ("INDI_DISABLED", "OFF", False),
           ("FAN_SPEED1", "1", True), ("FAN_SPEED2", "2", False), ("FAN_SPEED3", "3", False)),
        _s("TC_HEAT_CONTROL", "Heat", CONTROLS, "rw", "OneOfMany", ("INDI_DISABLED", "OFF", False),
           ("HEAT1", "1", True), ("HEAT2", "2", False), ("HEAT3", "3", False)),
        TextDef("CAMERA", "Camera", INFO, "ro", (
            ("MODEL", "Model", "ATR3CMOS26000KMA"), ("PRODUCTIONDATE", "Production Date", "20230412"),
            ("SN", "SN", "TP2304120001"), ("FIRMWAREVERSION", "Firmware Version", "3.1.5"),
            ("HARDWAREVERSION", "Hardware Version", "3.1"), ("FPGAVERSION", "FPGA Version", "1.8"),
            ("REVISION", "Revision", "4"))),
        TextDef("SDK", "SDK", INFO, "ro", (("VERSION", "Version", "57.25163.20240324"),)),
        _n("ADC_DEPTH", "ADC Depth", "Image Info", "ro", ("BITS", "Bits", "%2.0f", 0, 32, 1, 16)),
    ),
    roles={"gain": ("CCD_CONTROLS", "Gain"), "offset": ("CCD_OFFSET", "OFFSET"),
           "cooler_power": ("CCD_COOLER_POWER", "COOLER_POWER"), "speed": ("CCD_CONTROLS", "Speed"),
           "conversion_gain": ("TC_CONVERSION_GAIN", ""), "heater": ("TC_HEAT_CONTROL", ""),
           "fan": ("TC_FAN_SPEED", ""), "low_noise": ("TC_LOW_NOISE", ""), "high_fullwell": ("TC_HIGHFULLWELL", ""),
           "serial": ("CAMERA", "SN"), "production_date": ("CAMERA", "PRODUCTIONDATE"),
           "firmware": ("CAMERA", "FIRMWAREVERSION"), "hardware": ("CAMERA", "HARDWAREVERSION"),
           "fpga": ("CAMERA", "FPGAVERSION")},
    cooler_switch="wo", cooler_starts_on=True,
    # ToupBase::addFITSKeywords (read in the source)
    fits_keys=(FitsKey("GAIN", "gain", 3, "Gain"), FitsKey("OFFSET", "offset", 3, "Offset"),
               FitsKey("LOWNOISE", "low_noise", None, "Low Noise"),
               FitsKey("FULLWELL", "high_fullwell", None, "High Fullwell"),
               FitsKey("SN", "serial", None, "Serial Number"), FitsKey("PRODATE", "production_date", None,
                                                                      "Production Date"),
               FitsKey("FIRMVER", "firmware", None, "Firmware Version"),
               FitsKey("HARDVER", "hardware", None, "Hardware Version"),
               FitsKey("FPGAVER", "fpga", None, "FPGA Version")),
    # ToupBase::saveConfigItems saves these; the INDI config is loaded again on connect
    restored_from_config=("TC_HEAT_CONTROL", "TC_FAN_SPEED", "TC_CONVERSION_GAIN", "TC_LOW_NOISE",
                          "TC_HIGHFULLWELL", "CCD_OFFSET", "CCD_CONTROLS"), fixed_gain=120.0,
)

# ------------------------------------------------------------------------------------------------------------ SVBony
# indi-svbony/svbony_ccd.cpp + svbony_base.cpp (read in the source): "SVBONY CCD" default name, the ASIBase layout
# without BLINK (CCD_COOLER IP_WO, CCD_COOLER_POWER IP_RO with min/max from SVB_TARGET_TEMPERATURE, CCD_CONTROLS,
# CCD_CONTROLS_MODE, FLIP, CCD_VIDEO_FORMAT, ADC_DEPTH, SDK, Serial Number, NICKNAME); Connect() calls
# SVBRestoreDefaultParam and SVBSetAutoSaveParam(false) on every connect; GAIN/OFFSET in the FITS. The SDK control
# names/ranges below are plausible, not in the source.
SVBONY = VendorSpec(
    key="svbony", source="indi-svbony/svbony_ccd.cpp, indi-svbony/svbony_base.cpp", model="SV605MM",
    device_name="SVBONY CCD SV605MM", driver_name="SVBONY CCD", driver_exec="indi_svbony_ccd",
    driver_version="1.3",
    capture_formats=(("SVB_IMG_RAW8", "Raw 8 bit", False), ("SVB_IMG_RAW16", "Raw 16 bit", True)),
    vectors=(
        _n("CCD_COOLER_POWER", "Cooling Power", MAIN, "ro",
           ("CCD_COOLER_VALUE", "Cooling Power (%)", "%+06.2f", -35, 30, 0.2, 0)),
        _n("CCD_CONTROLS", "Controls", CONTROLS, "rw",
           ("Gain", "Gain", "%g", 0, 720, 1, 10), ("Offset", "Offset", "%g", 0, 255, 1, 0),
           ("FrameSpeed", "Frame speed", "%g", 0, 2, 1, 1)),
        _s("CCD_CONTROLS_MODE", "Set Auto", CONTROLS, "rw", "AnyOfMany", ("AUTO_Gain", "Gain", False)),
        _s("FLIP", "Flip", CONTROLS, "rw", "AnyOfMany", ("FLIP_HORIZONTAL", "Horizontal", False),
           ("FLIP_VERTICAL", "Vertical", False)),
        _s("CCD_VIDEO_FORMAT", "Format", CONTROLS, "rw", "OneOfMany",
           ("SVB_IMG_RAW8", "Raw 8 bit", False), ("SVB_IMG_RAW16", "Raw 16 bit", True)),
        _n("ADC_DEPTH", "ADC Depth", "Image Info", "ro", ("BITS", "Bits", "%2.0f", 0, 32, 1, 16)),
        TextDef("SDK", "SDK", INFO, "ro", (("VERSION", "Version", "1.12.6"),)),
        TextDef("Serial Number", "Serial Number", INFO, "ro", (("SN#", "SN#", "SV605MM0001"),)),
        TextDef("NICKNAME", "Nickname", INFO, "rw", (("nickname", "nickname", ""),)),
    ),
    roles={"gain": ("CCD_CONTROLS", "Gain"), "offset": ("CCD_CONTROLS", "Offset"),
           "cooler_power": ("CCD_COOLER_POWER", "CCD_COOLER_VALUE"), "speed": ("CCD_CONTROLS", "FrameSpeed"),
           "adc_bits": ("ADC_DEPTH", "BITS")},
    cooler_switch="wo",
    fits_keys=(FitsKey("GAIN", "gain", 3, "Gain"), FitsKey("OFFSET", "offset", 3, "Offset")),
    reset_on_connect={"CCD_CONTROLS": {"Gain": 10, "Offset": 0, "FrameSpeed": 1}},
)

# -------------------------------------------------------------------------------------------------------------- Atik
# indi-atik/atik_ccd.cpp (read in the source): device = Artemis name, capture format INDI_RAW, CCD_COOLER IP_WO,
# CCD_COOLER_POWER IP_RO 0..1, VERSION (VERSION_API, VERSION_FIRMWARE); Horizon: CCD_CONTROL_PRESETS "GO Presets"
# (PRESET_CUSTOM/LOW/MEDIUM/HIGH, current GO mode read from the SDK on connect), CCD_CONTROLS "GO Controls"
# (CONTROL_GAIN "Gain" 0..60 step 5, CONTROL_OFFSET "Offset" 0..511 step 10; config values loaded only with
# PRESET_CUSTOM), CCD_PAD_DATA and CCD_EVEN_ILLUMINATION IP_WO, CCD_FAST_MODE (CONTROL_POWERSAVE, CONTROL_NORMAL).
# From issue 13 (not located in the source): cooler-on refused unless the target is below the current temperature,
# gain/offset writable only with PRESET_CUSTOM.
ATIK = VendorSpec(
    key="atik", source="indi-atik/atik_ccd.cpp", model="Atik Horizon", device_name="Atik Horizon",
    driver_name="Atik", driver_exec="indi_atik_ccd", driver_version="1.32",
    capture_formats=(("INDI_RAW", "RAW", True),),
    vectors=(
        _n("CCD_COOLER_POWER", "Cooling Power", MAIN, "ro",
           ("CCD_COOLER_VALUE", "Cooling Power (%)", "%+06.2f", 0, 1, 0.2, 0)),
        TextDef("VERSION", "Version", INFO, "ro", (("VERSION_API", "API", "20240828"),
                                                   ("VERSION_FIRMWARE", "Firmware", "1.8"))),
        _s("CCD_CONTROL_PRESETS", "GO Presets", CONTROLS, "rw", "OneOfMany",
           ("PRESET_CUSTOM", "Custom", False), ("PRESET_LOW", "Low", True), ("PRESET_MEDIUM", "Medium", False),
           ("PRESET_HIGH", "High", False)),
        _n("CCD_CONTROLS", "GO Controls", CONTROLS, "rw",
           ("CONTROL_GAIN", "Gain", "%.f", 0, 60, 5, 30), ("CONTROL_OFFSET", "Offset", "%.f", 0, 511, 10, 0)),
        _s("CCD_PAD_DATA", "Pad Data", CONTROLS, "wo", "OneOfMany",
           ("CONTROL_PAD_DATA_OFF", "OFF", True), ("CONTROL_PAD_DATA_ON", "ON", False)),
        _s("CCD_EVEN_ILLUMINATION", "Even Illumination", CONTROLS, "wo", "OneOfMany",
           ("CONTROL_EVEN_ILLUMINATION_OFF", "OFF", True), ("CONTROL_EVEN_ILLUMINATION_ON", "ON", False)),
        _s("CCD_FAST_MODE", "Fast Mode", CONTROLS, "rw", "OneOfMany",
           ("CONTROL_POWERSAVE", "Powersave / Low noise", False), ("CONTROL_NORMAL", "Normal", True)),
    ),
    roles={"gain": ("CCD_CONTROLS", "CONTROL_GAIN"), "offset": ("CCD_CONTROLS", "CONTROL_OFFSET"),
           "cooler_power": ("CCD_COOLER_POWER", "CCD_COOLER_VALUE"), "preset": ("CCD_CONTROL_PRESETS", ""),
           "mode": ("CCD_FAST_MODE", ""), "pad_data": ("CCD_PAD_DATA", "")},
    cooler_switch="wo", cooler_on_needs_lower_target=True, controls_need_custom_preset=True,
)

# ---------------------------------------------------------------------------------------------------------- Moravian
# indi-mi/mi_ccd.cpp: "MI %s" (GSP_CAMERA_DESCRIPTION), CCD_TEMP_RAMP redefined with element TEMP_RAMP IP_WO (0..30,
# default 2), CCD_COOLER IP_WO starting ON, CCD_COOLER_POWER IP_RO 0..1, CCD_FAN.FAN IP_WO (default max),
# CCD_WINDOW_HEATING.WINDOW_HEATING IP_WO, CCD_GAIN.GAIN IP_RW when GIP_MAX_GAIN > 0, CCD_READ_MODE READ_MODE_n with
# SDK labels; fan, heating, gain and read mode saved to / loaded from the config file. No offset, no FITS additions.
MI = VendorSpec(
    key="mi", source="indi-mi/mi_ccd.cpp", model="C3-26000", device_name="MI C3-26000",
    driver_name="MI CCD", driver_exec="indi_mi_ccd", driver_version="2.3",
    capture_formats=MONO16,
    vectors=(
        _n("CCD_COOLER_POWER", "Cooling Power", MAIN, "ro",
           ("CCD_COOLER_VALUE", "Cooling Power (%)", "%+6.2f", 0, 1, 0.01, 0)),
        _n("CCD_FAN", "Fan", MAIN, "wo", ("FAN", "Fan speed", "%2.0f", 0, 3, 1, 3)),
        _n("CCD_WINDOW_HEATING", "Window Heating", MAIN, "wo",
           ("WINDOW_HEATING", "Heating Intensity", "%2.0f", 0, 3, 1, 0)),
        _n("CCD_GAIN", "Gain", MAIN, "rw", ("GAIN", "Gain", "%2.0f", 0, 4030, 1, 0)),
        _s("CCD_READ_MODE", "Read Mode", MAIN, "rw", "OneOfMany",
           ("READ_MODE_1", "Photo", True), ("READ_MODE_2", "Fast", False)),
    ),
    roles={"gain": ("CCD_GAIN", "GAIN"), "cooler_power": ("CCD_COOLER_POWER", "CCD_COOLER_VALUE"),
           "mode": ("CCD_READ_MODE", ""), "heater": ("CCD_WINDOW_HEATING", "WINDOW_HEATING"),
           "fan": ("CCD_FAN", "FAN")},
    cooler_switch="wo", cooler_starts_on=True,
    ramp=_n("CCD_TEMP_RAMP", "Temp. Ramp", MAIN, "wo", ("TEMP_RAMP", "Max. dT (C/min)", "%2.0f", 0, 30, 1, 2)),
    restored_from_config=("CCD_FAN", "CCD_WINDOW_HEATING", "CCD_GAIN", "CCD_READ_MODE", "CCD_TEMP_RAMP"),
    fixed_offset=30.0,
)

# --------------------------------------------------------------------------------------------------------------- FLI
# indi-fli/fli_ccd.cpp (read in the source): "FLI CCD", PORTS (IP_WO) defined before CONNECT, "Model" texts,
# CCD_COOLER_POWER IP_RO 0..100, CCD_FLUSH_COUNT, CCD_BACKGROUND_FLUSH, CAMERA_MODES (Options tab; element names
# and labels are the SDK's mode strings, not in the source), no CCD_COOLER switch and no gain/offset: cooling is
# CCD_TEMPERATURE alone; exposures 0.04..3600 s.
FLI = VendorSpec(
    key="fli", source="indi-fli/fli_ccd.cpp", model="FLI CCD", device_name="FLI CCD", driver_name="FLI CCD",
    driver_exec="indi_fli_ccd", driver_version="2.0",
    capture_formats=MONO16,
    before_connect=(_s("PORTS", "Port", MAIN, "wo", "OneOfMany", ("USB", "USB", True), ("SERIAL", "Serial", False),
                       ("PARALLEL", "Parallel", False), ("INET", "INet", False)),),
    vectors=(
        TextDef("Model", "", "Image Info", "ro", (("Model", "Model", "MicroLine ML16200"), ("HW Rev", "HW Rev", "1"),
                                                  ("FW Rev", "FW Rev", "1"))),
        _n("CCD_COOLER_POWER", "Cooling Power", MAIN, "ro",
           ("CCD_COOLER_VALUE", "Cooling Power (%)", "%+06.2f", 0, 100, 0.2, 0)),
        _n("CCD_FLUSH_COUNT", "N Flush", OPTIONS, "rw", ("FLUSH_COUNT", "Count", "%.f", 0, 16, 1, 0)),
        _s("CCD_BACKGROUND_FLUSH", "BKG. Flush", OPTIONS, "rw", "OneOfMany", ("ENABLED", "Enabled", True),
           ("DISABLED", "Disabled", False)),
        _s("CAMERA_MODES", "Modes", OPTIONS, "rw", "OneOfMany",
           ("2.0 MHz", "2.0 MHz", True), ("8.0 MHz", "8.0 MHz", False)),
    ),
    roles={"cooler_power": ("CCD_COOLER_POWER", "CCD_COOLER_VALUE"), "mode": ("CAMERA_MODES", "")},
    cooler_switch=None, min_exposure_s=0.04,
)

VENDORS: dict[str, VendorSpec] = {v.key: v for v in (QHY, ASI, PLAYERONE, TOUPCAM, SVBONY, ATIK, MI, FLI)}


def vendor_spec(key: str | None) -> VendorSpec:
    """The spec for ``DARKD_SIM_VENDOR`` (default qhy); a clear error naming the choices otherwise."""
    name = (key or "qhy").strip().lower() or "qhy"
    if name not in VENDORS:
        raise ValueError(f"DARKD_SIM_VENDOR={key!r}: expected one of {', '.join(VENDORS)}")
    return VENDORS[name]
