"""INDI vocabulary of the simulated camera: the INDI::CCD / INDI::DefaultDevice base-class vectors every driver
defines, plus the vendor's own vectors from :mod:`drivers.sim.vendors`.

Base-class names, labels, groups, permissions, rules and ranges follow indilib/indi ``libs/indibase/indiccd.cpp``
(``CCD::initProperties``/``updateProperties``) and ``defaultdevice.cpp`` (DEBUG, CONFIG_PROCESS, POLLING_PERIOD).
Only construction here (indipydriver vectors with their defaults); behaviour lives in :mod:`drivers.sim.driver`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from indipydriver import (
    BLOBMember,
    BLOBVector,
    NumberMember,
    NumberVector,
    SwitchMember,
    SwitchVector,
    TextMember,
    TextVector,
)

from drivers.sim.physics import PIXEL_SIZE_UM, SensorGeometry
from drivers.sim.vendors import QHY, NumberDef, SwitchDef, TextDef, VectorDef, VendorSpec

DEVICE_NAME = QHY.device_name  # the default (QHY) twin; other vendors: VendorSpec.device_name
CCD_INTERFACE = "2"  # INDI::BaseDevice::CCD_INTERFACE
MIN_EXPOSURE_S = 0.0001
MAX_EXPOSURE_S = 3600.0
MAX_BINNING = 4

MAIN = "Main Control"
IMAGE = "Image Settings"
INFO = "Image Info"
OPTIONS = "Options"
GENERAL = "General Info"
WCS = "WCS"
SIMULATION = "Simulation"

FRAME_TYPES = {"FRAME_LIGHT": "light", "FRAME_BIAS": "bias", "FRAME_DARK": "dark", "FRAME_FLAT": "flat"}
AMP_GLOW = {"AMP_AUTO": "auto", "AMP_ON": "on", "AMP_OFF": "off"}
FAULTS = ("FAIL_NEXT_EXPOSURE", "DROP_NEXT_DOWNLOAD", "DISCONNECT")

#: vectors defined before CONNECT too (DefaultDevice::ISGetProperties, CCD::ISGetProperties: ACTIVE_DEVICES) and
#: the simulator's own; every other vector exists only while connected (INDI convention)
ALWAYS_DEFINED = ("CONNECTION", "DRIVER_INFO", "DEBUG", "CONFIG_PROCESS", "POLLING_PERIOD", "ACTIVE_DEVICES",
                  "SIM_SETTINGS", "SIM_SENSOR", "SIM_FAULTS")
#: the simulator's own vectors (not part of any real driver)
SIM_VECTORS = ("SIM_SETTINGS", "SIM_SENSOR", "SIM_FAULTS")


@dataclass(frozen=True)
class SimDefaults:
    """Start-up values of the simulation settings (from the DARKD_SIM_* environment)."""

    ambient_c: float = 20.0
    time_scale: float = 1.0
    light_leak_e_per_s: float = 0.0
    seed: int = 0
    sensor: str = "FULL"
    vendor: str = "qhy"


def _switch(name: str, label: str, group: str, rule: str, members: list[tuple[str, str]], on: str | None,
            perm: str = "rw") -> SwitchVector:
    return SwitchVector(name, label, group, perm, rule, "Idle",
                        [SwitchMember(m, lab, "On" if m == on else "Off") for m, lab in members])


def _number(name: str, label: str, group: str, members: list[tuple[str, str, str, float, float, float, float]],
            perm: str = "rw", state: str = "Idle") -> NumberVector:
    return NumberVector(name, label, group, perm, state,
                        [NumberMember(m, lab, fmt, lo, hi, step, val) for m, lab, fmt, lo, hi, step, val in members])


def from_def(vdef: VectorDef) -> NumberVector | SwitchVector | TextVector:
    """indipydriver vector from a vendor table entry."""
    if isinstance(vdef, NumberDef):
        return _number(vdef.name, vdef.label, vdef.group, list(vdef.elements), perm=vdef.perm)
    if isinstance(vdef, SwitchDef):
        return SwitchVector(vdef.name, vdef.label, vdef.group, vdef.perm, vdef.rule, "Idle",
                            [SwitchMember(m, lab, "On" if on else "Off") for m, lab, on in vdef.elements])
    assert isinstance(vdef, TextDef)
    return TextVector(vdef.name, vdef.label, vdef.group, vdef.perm, "Idle",
                      [TextMember(m, lab, text) for m, lab, text in vdef.elements])


def ccd_info_members(geometry: SensorGeometry, overscan_include: bool) -> dict[str, float]:
    """CCD_INFO values: the raw readout size with Include, the effective area with Ignore."""
    height, width = geometry.shape(overscan_include)
    return {"CCD_MAX_X": width, "CCD_MAX_Y": height, "CCD_PIXEL_SIZE": PIXEL_SIZE_UM,
            "CCD_PIXEL_SIZE_X": PIXEL_SIZE_UM, "CCD_PIXEL_SIZE_Y": PIXEL_SIZE_UM, "CCD_BITSPERPIXEL": 16}


def _always(defaults: SimDefaults, vendor: VendorSpec) -> list:
    """DefaultDevice + CCD::ISGetProperties vectors and the simulator's own settings."""
    return [
        _switch("CONNECTION", "Connection", MAIN, "OneOfMany", [("CONNECT", "Connect"), ("DISCONNECT", "Disconnect")],
                "DISCONNECT"),
        TextVector("DRIVER_INFO", "Driver Info", GENERAL, "ro", "Idle", [
            TextMember("DRIVER_NAME", "Name", vendor.driver_name),
            TextMember("DRIVER_EXEC", "Exec", vendor.driver_exec),
            TextMember("DRIVER_VERSION", "Version", vendor.driver_version),
            TextMember("DRIVER_INTERFACE", "Interface", CCD_INTERFACE)]),
        _switch("DEBUG", "Debug", OPTIONS, "OneOfMany", [("ENABLE", "Enable"), ("DISABLE", "Disable")], "DISABLE"),
        _switch("CONFIG_PROCESS", "Configuration", OPTIONS, "AtMostOne",
                [("CONFIG_LOAD", "Load"), ("CONFIG_SAVE", "Save"), ("CONFIG_DEFAULT", "Default"),
                 ("CONFIG_PURGE", "Purge")], None),
        _number("POLLING_PERIOD", "Polling", OPTIONS, [("PERIOD_MS", "Period (ms)", "%.f", 10, 600000, 1000, 1000)]),
        TextVector("ACTIVE_DEVICES", "Snoop devices", OPTIONS, "rw", "Idle", [
            TextMember("ACTIVE_TELESCOPE", "Telescope", "Telescope Simulator"),
            TextMember("ACTIVE_ROTATOR", "Rotator", "Rotator Simulator"),
            TextMember("ACTIVE_FOCUSER", "Focuser", "Focuser Simulator"),
            TextMember("ACTIVE_FILTER", "Filter", "CCD Simulator"),
            TextMember("ACTIVE_SKYQUALITY", "Sky Quality", "SQM")]),
        _number("SIM_SETTINGS", "Settings", SIMULATION, [
            ("AMBIENT_C", "Ambient (C)", "%.2f", -30, 45, 0.5, defaults.ambient_c),
            ("TIME_SCALE", "Time scale", "%.2f", 0.01, 10000, 1, defaults.time_scale),
            ("LIGHT_LEAK", "Light leak (e/s/px)", "%.4f", 0, 10000, 0.1, defaults.light_leak_e_per_s),
            ("SEED", "Seed", "%.0f", 0, 2**31 - 1, 1, defaults.seed)]),
        _switch("SIM_SENSOR", "Sensor", SIMULATION, "OneOfMany", [("FULL", "Full 4656x3522"), ("SMALL", "Small")],
                defaults.sensor),
        _switch("SIM_FAULTS", "Faults", SIMULATION, "AnyOfMany",
                [("FAIL_NEXT_EXPOSURE", "Fail next exposure"), ("DROP_NEXT_DOWNLOAD", "Drop next download"),
                 ("DISCONNECT", "Disconnect")], None),
        *(from_def(v) for v in vendor.before_connect),
    ]


def always_defined(vendor: VendorSpec) -> tuple[str, ...]:
    """Names of the vectors defined before CONNECT for this vendor."""
    return (*ALWAYS_DEFINED, *(v.name for v in vendor.before_connect))


def _ccd_base(geometry: SensorGeometry, vendor: VendorSpec) -> list:
    """CCD::updateProperties vectors (connected), in its definition order; cooler ones with HasCooler."""
    height, width = geometry.shape(False)
    info = ccd_info_members(geometry, False)
    ramp = (from_def(vendor.ramp) if vendor.ramp is not None else _number("CCD_TEMP_RAMP", "Temp. Ramp", MAIN, [
        ("RAMP_SLOPE", "Max. dT (C/min)", "%.f", 0, 30, 1, 0), ("RAMP_THRESHOLD", "Threshold (C)", "%.1f", 0.1, 2,
                                                                0.1, 0.2)]))
    return [
        _number("CCD_EXPOSURE", "Expose", MAIN, [
            ("CCD_EXPOSURE_VALUE", "Duration (s)", "%5.2f", vendor.min_exposure_s, MAX_EXPOSURE_S, 1, 1.0)]),
        _switch("CCD_ABORT_EXPOSURE", "Abort", MAIN, "AtMostOne", [("ABORT", "Abort")], None),
        _number("CCD_FRAME", "Frame", IMAGE, [
            ("X", "Left ", "%4.0f", 0, width - 1, 1, 0), ("Y", "Top", "%4.0f", 0, height - 1, 1, 0),
            ("WIDTH", "Width", "%4.0f", 1, width, 1, width), ("HEIGHT", "Height", "%4.0f", 1, height, 1, height)]),
        _switch("CCD_FRAME_RESET", "Frame Values", IMAGE, "OneOfMany", [("RESET", "Reset")], None, perm="wo"),
        _number("CCD_BINNING", "Binning", IMAGE, [
            ("HOR_BIN", "X", "%2.0f", 1, MAX_BINNING, 1, 1), ("VER_BIN", "Y", "%2.0f", 1, MAX_BINNING, 1, 1)]),
        TextVector("FITS_HEADER", "FITS Header", GENERAL, "wo", "Idle", [
            TextMember("KEYWORD_NAME", "Name", ""), TextMember("KEYWORD_VALUE", "Value", ""),
            TextMember("KEYWORD_COMMENT", "Comment", "")]),
        _number("CCD_TEMPERATURE", "Temperature", MAIN, [
            ("CCD_TEMPERATURE_VALUE", "Temperature (C)", "%5.2f", -50, 50, 0, 20.0)]),
        ramp,
        SwitchVector("CCD_CAPTURE_FORMAT", "Format", IMAGE, "rw", "OneOfMany", "Idle",
                     [SwitchMember(m, lab, "On" if on else "Off") for m, lab, on in vendor.capture_formats]),
        _switch("CCD_TRANSFER_FORMAT", "Encode", IMAGE, "OneOfMany",
                [("FORMAT_FITS", "FITS"), ("FORMAT_NATIVE", "Native")], "FORMAT_FITS"),
        _number("CCD_INFO", "CCD Information", INFO, [
            ("CCD_MAX_X", "Max. Width", "%.f", 1, 16000, 0, info["CCD_MAX_X"]),
            ("CCD_MAX_Y", "Max. Height", "%.f", 1, 16000, 0, info["CCD_MAX_Y"]),
            ("CCD_PIXEL_SIZE", "Pixel size (um)", "%.2f", 1, 40, 0, PIXEL_SIZE_UM),
            ("CCD_PIXEL_SIZE_X", "Pixel size X", "%.2f", 1, 40, 0, PIXEL_SIZE_UM),
            ("CCD_PIXEL_SIZE_Y", "Pixel size Y", "%.2f", 1, 40, 0, PIXEL_SIZE_UM),
            ("CCD_BITSPERPIXEL", "Bits per pixel", "%.f", 8, 64, 0, 16)], perm="ro"),
        _switch("CCD_COMPRESSION", "Compression", IMAGE, "OneOfMany",
                [("INDI_ENABLED", "Enabled"), ("INDI_DISABLED", "Disabled")], "INDI_DISABLED"),
        BLOBVector("CCD1", "Image Data", INFO, "ro", "Idle", [BLOBMember("CCD1", "Image", blobformat=".fits")]),
        _switch("CCD_FRAME_TYPE", "Type", IMAGE, "OneOfMany",
                [("FRAME_LIGHT", "Light"), ("FRAME_BIAS", "Bias"), ("FRAME_DARK", "Dark"), ("FRAME_FLAT", "Flat")],
                "FRAME_LIGHT"),
        _number("SCOPE_INFO", "Scope", OPTIONS, [("FOCAL_LENGTH", "Focal Length (mm)", "%g", 0, 10000, 1, 0),
                                                 ("APERTURE", "Aperture (mm)", "%g", 0, 3000, 1, 0)]),
        _switch("WCS_CONTROL", "WCS", WCS, "OneOfMany", [("WCS_ENABLE", "Enable"), ("WCS_DISABLE", "Disable")],
                "WCS_DISABLE"),
        _switch("UPLOAD_MODE", "Upload", OPTIONS, "OneOfMany",
                [("UPLOAD_CLIENT", "Client"), ("UPLOAD_LOCAL", "Local"), ("UPLOAD_BOTH", "Both")], "UPLOAD_CLIENT"),
        TextVector("UPLOAD_SETTINGS", "Upload Settings", OPTIONS, "rw", "Idle", [
            TextMember("UPLOAD_DIR", "Dir", os.environ.get("HOME", "/")),
            TextMember("UPLOAD_PREFIX", "Prefix", "IMAGE_XXX")]),
        _switch("CCD_FAST_TOGGLE", "Fast Exposure", OPTIONS, "OneOfMany",
                [("INDI_ENABLED", "Enabled"), ("INDI_DISABLED", "Disabled")], "INDI_DISABLED"),
        _number("CCD_FAST_COUNT", "Fast Count", OPTIONS, [("FRAMES", "Frames", "%.f", 0, 100000, 1, 1)]),
    ]


def _cooler_switch(vendor: VendorSpec) -> list:
    if vendor.cooler_switch is None:
        return []
    on, off = vendor.cooler_labels
    return [_switch("CCD_COOLER", "Cooler", MAIN, "OneOfMany", [("COOLER_ON", on), ("COOLER_OFF", off)],
                    "COOLER_ON" if vendor.cooler_starts_on else "COOLER_OFF", perm=vendor.cooler_switch)]


def build_vectors(defaults: SimDefaults, geometry: SensorGeometry, vendor: VendorSpec = QHY) -> list:
    """All vectors of the device, in definition order."""
    return [*_always(defaults, vendor), *_ccd_base(geometry, vendor), *_cooler_switch(vendor),
            *(from_def(v) for v in vendor.vectors)]
