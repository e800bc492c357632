"""Finger Lakes Instrumentation (``indi_fli_ccd``).

Source: indilib/indi-3rdparty ``indi-fli/fli_ccd.cpp``: no gain, no offset, ``CAMERA_MODES`` (one switch per
camera mode), cooler power ``CCD_COOLER_POWER.CCD_COOLER_VALUE`` and **no** ``CCD_COOLER`` switch: the cooler is
driven through ``CCD_TEMPERATURE`` alone (warming up = a warm set point).
"""

from __future__ import annotations

from typing import ClassVar

from drivers.indi.vendors.base import Fixed, Names, VendorAdapter


class FliAdapter(VendorAdapter):
    name = "fli"
    execs = ("indi_fli_ccd",)
    device_prefixes = ("FLI",)
    source = "indilib/indi-3rdparty indi-fli/fli_ccd.cpp"
    fixed: ClassVar[Fixed] = {"read_mode": ("CAMERA_MODES", None)}
    cooler_switch = False
    expected: ClassVar[Names] = {"read_mode": "CAMERA_MODES", "cooler": "CCD_TEMPERATURE (no CCD_COOLER switch)"}
    quirks = ("no CCD_COOLER switch: cooling and warm-up go through CCD_TEMPERATURE only",)
