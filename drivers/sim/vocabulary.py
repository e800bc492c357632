"""INDI vocabulary of the simulated QHY163M: the real QHY driver's / INDI CCD base class's property and element names.

Only construction here (indipydriver vectors with their defaults); behaviour lives in :mod:`drivers.sim.driver`.
"""

from __future__ import annotations

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

DEVICE_NAME = "QHY CCD QHY163M-Sim"
DRIVER_EXEC = "indi_darkd_sim_ccd"
DRIVER_VERSION = "0.1"
CCD_INTERFACE = "2"  # INDI::BaseDevice::CCD_INTERFACE
MIN_EXPOSURE_S = 0.0001
MAX_EXPOSURE_S = 3600.0
MAX_GAIN = 580
MAX_OFFSET = 255
MAX_BINNING = 4

MAIN = "Main Control"
IMAGE = "Image Settings"
INFO = "Image Info"
CONTROLS = "Controls"
OPTIONS = "Options"
SIMULATION = "Simulation"

FRAME_TYPES = {"FRAME_LIGHT": "light", "FRAME_BIAS": "bias", "FRAME_DARK": "dark", "FRAME_FLAT": "flat"}
AMP_GLOW = {"AMP_AUTO": "auto", "AMP_ON": "on", "AMP_OFF": "off"}
FAULTS = ("FAIL_NEXT_EXPOSURE", "DROP_NEXT_DOWNLOAD", "DISCONNECT")

#: vectors always defined (before CONNECT too); every other vector exists only while connected (INDI convention)
ALWAYS_DEFINED = ("CONNECTION", "DRIVER_INFO", "SIM_SETTINGS", "SIM_SENSOR", "SIM_FAULTS")


@dataclass(frozen=True)
class SimDefaults:
    """Start-up values of the simulation settings (from the DARKD_SIM_* environment)."""

    ambient_c: float = 20.0
    time_scale: float = 1.0
    light_leak_e_per_s: float = 0.0
    seed: int = 0
    sensor: str = "FULL"


def _switch(name: str, label: str, group: str, rule: str, members: list[tuple[str, str]], on: str | None,
            perm: str = "rw") -> SwitchVector:
    return SwitchVector(name, label, group, perm, rule, "Idle",
                        [SwitchMember(m, lab, "On" if m == on else "Off") for m, lab in members])


def _number(name: str, label: str, group: str, members: list[tuple[str, str, str, float, float, float, float]],
            perm: str = "rw", state: str = "Idle") -> NumberVector:
    return NumberVector(name, label, group, perm, state,
                        [NumberMember(m, lab, fmt, lo, hi, step, val) for m, lab, fmt, lo, hi, step, val in members])


def ccd_info_members(geometry: SensorGeometry, overscan_include: bool) -> dict[str, float]:
    """CCD_INFO values: the raw readout size with Include, the effective area with Ignore."""
    height, width = geometry.shape(overscan_include)
    return {"CCD_MAX_X": width, "CCD_MAX_Y": height, "CCD_PIXEL_SIZE": PIXEL_SIZE_UM,
            "CCD_PIXEL_SIZE_X": PIXEL_SIZE_UM, "CCD_PIXEL_SIZE_Y": PIXEL_SIZE_UM, "CCD_BITSPERPIXEL": 16}


def build_vectors(defaults: SimDefaults, geometry: SensorGeometry) -> list:  # type: ignore[type-arg]
    """All vectors of the device, in definition order."""
    height, width = geometry.shape(False)
    info = ccd_info_members(geometry, False)
    return [
        _switch("CONNECTION", "Connection", MAIN, "OneOfMany", [("CONNECT", "Connect"), ("DISCONNECT", "Disconnect")],
                "DISCONNECT"),
        TextVector("DRIVER_INFO", "Driver Info", "General Info", "ro", "Idle", [
            TextMember("DRIVER_NAME", "Name", "QHY CCD (darkd simulator)"),
            TextMember("DRIVER_EXEC", "Exec", DRIVER_EXEC),
            TextMember("DRIVER_VERSION", "Version", DRIVER_VERSION),
            TextMember("DRIVER_INTERFACE", "Interface", CCD_INTERFACE)]),
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
        _number("CCD_EXPOSURE", "Expose", MAIN, [
            ("CCD_EXPOSURE_VALUE", "Duration (s)", "%.6f", MIN_EXPOSURE_S, MAX_EXPOSURE_S, 1, 1.0)]),
        _switch("CCD_ABORT_EXPOSURE", "Abort", MAIN, "AtMostOne", [("ABORT", "Abort")], None),
        _number("CCD_TEMPERATURE", "Temperature", MAIN, [
            ("CCD_TEMPERATURE_VALUE", "Temperature (C)", "%.2f", -50, 50, 0, defaults.ambient_c)]),
        _number("CCD_TEMP_RAMP", "Temp. Ramp", MAIN, [
            ("RAMP_SLOPE", "Max. dT (C/min)", "%.0f", 0, 30, 1, 0),
            ("RAMP_THRESHOLD", "Threshold (C)", "%.1f", 0.1, 2, 0.1, 0.2)]),
        _switch("CCD_COOLER", "Cooler", MAIN, "OneOfMany", [("COOLER_ON", "ON"), ("COOLER_OFF", "OFF")], "COOLER_OFF"),
        _number("CCD_COOLER_POWER", "Cooling Power", MAIN, [
            ("CCD_COOLER_VALUE", "Cooling Power (%)", "%.1f", 0, 100, 0, 0)], perm="ro"),
        _switch("CCD_COOLER_MODE", "Cooling Mode", MAIN, "OneOfMany",
                [("COOLER_AUTOMATIC", "Auto"), ("COOLER_MANUAL", "Manual")], "COOLER_AUTOMATIC"),
        _number("CCD_FRAME", "Frame", IMAGE, [
            ("X", "Left", "%.0f", 0, width - 1, 1, 0), ("Y", "Top", "%.0f", 0, height - 1, 1, 0),
            ("WIDTH", "Width", "%.0f", 1, width, 1, width), ("HEIGHT", "Height", "%.0f", 1, height, 1, height)]),
        _switch("CCD_FRAME_RESET", "Frame Values", IMAGE, "AtMostOne", [("RESET", "Reset")], None),
        _number("CCD_BINNING", "Binning", IMAGE, [
            ("HOR_BIN", "X", "%.0f", 1, MAX_BINNING, 1, 1), ("VER_BIN", "Y", "%.0f", 1, MAX_BINNING, 1, 1)]),
        _switch("CCD_FRAME_TYPE", "Type", IMAGE, "OneOfMany",
                [("FRAME_LIGHT", "Light"), ("FRAME_BIAS", "Bias"), ("FRAME_DARK", "Dark"), ("FRAME_FLAT", "Flat")],
                "FRAME_LIGHT"),
        _number("CCD_INFO", "CCD Information", INFO, [
            ("CCD_MAX_X", "Max. Width", "%.0f", 1, 16000, 0, info["CCD_MAX_X"]),
            ("CCD_MAX_Y", "Max. Height", "%.0f", 1, 16000, 0, info["CCD_MAX_Y"]),
            ("CCD_PIXEL_SIZE", "Pixel size (um)", "%.2f", 1, 40, 0, PIXEL_SIZE_UM),
            ("CCD_PIXEL_SIZE_X", "Pixel size X", "%.2f", 1, 40, 0, PIXEL_SIZE_UM),
            ("CCD_PIXEL_SIZE_Y", "Pixel size Y", "%.2f", 1, 40, 0, PIXEL_SIZE_UM),
            ("CCD_BITSPERPIXEL", "Bits per pixel", "%.0f", 8, 64, 0, 16)], perm="ro"),
        _number("CCD_GAIN", "Gain", CONTROLS, [("GAIN", "Gain", "%.0f", 0, MAX_GAIN, 1, 120)]),
        _number("CCD_OFFSET", "Offset", CONTROLS, [("OFFSET", "Offset", "%.0f", 0, MAX_OFFSET, 1, 30)]),
        _number("READ_MODE", "Read Mode", CONTROLS, [("MODE", "Mode", "%.0f", 0, 0, 1, 0)]),
        _number("USB_TRAFFIC", "USB Traffic", CONTROLS, [("TRAFFIC", "Speed", "%.0f", 0, 255, 1, 30)]),
        _switch("CCD_AMP_GLOW", "Amp Glow", CONTROLS, "OneOfMany",
                [("AMP_AUTO", "Auto"), ("AMP_ON", "On"), ("AMP_OFF", "Off")], "AMP_AUTO"),
        _switch("OVERSCAN_MODE", "Overscan", CONTROLS, "OneOfMany",
                [("INDI_ENABLED", "Include"), ("INDI_DISABLED", "Ignore")], "INDI_DISABLED"),
        _switch("UPLOAD_MODE", "Upload", OPTIONS, "OneOfMany",
                [("UPLOAD_CLIENT", "Client"), ("UPLOAD_LOCAL", "Local"), ("UPLOAD_BOTH", "Both")], "UPLOAD_CLIENT"),
        _switch("CCD_TRANSFER_FORMAT", "Format", OPTIONS, "OneOfMany",
                [("FORMAT_FITS", "FITS"), ("FORMAT_NATIVE", "Native")], "FORMAT_FITS"),
        TextVector("FITS_HEADER", "FITS Header", OPTIONS, "wo", "Idle", [
            TextMember("KEYWORD_NAME", "Name", ""), TextMember("KEYWORD_VALUE", "Value", ""),
            TextMember("KEYWORD_COMMENT", "Comment", "")]),
        BLOBVector("CCD1", "Image", "Image Info", "ro", "Idle", [BLOBMember("CCD1", "Image", blobformat=".fits")]),
    ]
