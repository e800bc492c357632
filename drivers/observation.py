"""The observation keys every camera backend stamps on a frame it captured (one home for the INDI and in-process ones).

``FRAMETYP``, ``SET-TEMP``, ``CCDTEMP1``/``CCDTEMP2`` (sensor °C at exposure start/end), ``COOLPWR1``/``COOLPWR2``/
``COOLPWR`` (%), ``OVSCMODE``, ``CAMERA`` and ``CCDTMIN``/``CCDTMAX`` (extremes of the readings during the exposure);
``EXPTIME`` and ``DATE-OBS`` only when the driver wrote none. The driver's own keys (``CCD-TEMP``, ``GAIN``, ...) stay.
"""

from __future__ import annotations

from drivers.camera import CapturedFrame


def stamp_observation(frame: CapturedFrame, device: str | None) -> None:
    """Write the observation keys of ``frame`` (see the module docstring) into ``frame.header``."""
    header = frame.header
    header.setdefault("EXPTIME", frame.exposure_s)
    header.setdefault("DATE-OBS", frame.started_utc.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3])
    header["FRAMETYP"] = (frame.frame_type.value, "darkd frame type")
    if frame.set_point_c is not None:
        header["SET-TEMP"] = (round(frame.set_point_c, 3), "[C] cooler set point")
    for key, value, comment in (
            ("CCDTEMP1", frame.temperature_start_c, "[C] sensor temperature at exposure start"),
            ("CCDTEMP2", frame.temperature_end_c, "[C] sensor temperature at exposure end"),
            ("COOLPWR1", frame.cooler_power_start_pct, "[%] cooler power at exposure start"),
            ("COOLPWR2", frame.cooler_power_end_pct, "[%] cooler power at exposure end")):
        if value is not None:
            header[key] = (round(value, 3), comment)
    if frame.cooler_power_start_pct is not None and frame.cooler_power_end_pct is not None:
        header["COOLPWR"] = (round((frame.cooler_power_start_pct + frame.cooler_power_end_pct) / 2, 2),
                             "[%] mean cooler power")
    if frame.overscan is not None:
        header["OVSCMODE"] = (frame.overscan.value, "OVERSCAN_MODE include|ignore")
    header["CAMERA"] = (device or "", "INDI device")
    if frame.temperature_min_c is not None and frame.temperature_max_c is not None:
        header["CCDTMIN"] = (round(frame.temperature_min_c, 3), "[C] lowest sensor temperature during exposure")
        header["CCDTMAX"] = (round(frame.temperature_max_c, 3), "[C] highest sensor temperature during exposure")
