"""Moravian Instruments (``indi_mi_ccd``).

Source: indilib/indi-3rdparty ``indi-mi/mi_ccd.cpp`` (``initProperties``): ``CCD_GAIN.GAIN`` is **read-only**
(e-/ADU, label "Gain (e-/ADU)"), no offset, ``CCD_READ_MODE`` (one switch per read mode of the camera),
``CCD_WINDOW_HEATING.WINDOW_HEATING`` and ``CCD_FAN.FAN`` are write-only numbers, the temperature ramp is the
write-only ``CCD_TEMP_RAMP.TEMP_RAMP`` (°C/min, in place of the base class's ``RAMP_SLOPE``), cooler power
``CCD_COOLER_POWER.CCD_COOLER_VALUE``. The cooler starts ON when the camera connects.
"""

from __future__ import annotations

from typing import ClassVar

from drivers.indi.vendors.base import Fixed, Names, VendorAdapter


class MiAdapter(VendorAdapter):
    name = "mi"
    execs = ("indi_mi_ccd", "indi_mi_ccd_usb", "indi_mi_ccd_eth")  # the _usb/_eth names are symlinks (CMakeLists)
    device_prefixes = ("MI ",)
    source = "indilib/indi-3rdparty indi-mi/mi_ccd.cpp"
    fixed: ClassVar[Fixed] = {"read_mode": ("CCD_READ_MODE", None), "heater": ("CCD_WINDOW_HEATING", "WINDOW_HEATING"),
             "fan": ("CCD_FAN", "FAN"), "temp_ramp": ("CCD_TEMP_RAMP", "TEMP_RAMP")}
    heaters = ("heater",)
    cooler_starts_on = True
    expected: ClassVar[Names] = {"read_mode": "CCD_READ_MODE", "heater": "CCD_WINDOW_HEATING", "fan": "CCD_FAN"}
    quirks = ("CCD_GAIN is read-only (e-/ADU): darkd records it, never sets it", "no offset control",
              "window heating, fan and the ramp (CCD_TEMP_RAMP.TEMP_RAMP) are write-only: not read back",
              "cooler starts ON")
