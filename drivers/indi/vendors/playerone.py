"""Player One (``indi_playerone_ccd``, ``indi_playerone_single_ccd``).

Source: indilib/indi-3rdparty ``indi-playerone/playerone_base.cpp``: ``CCD_CONTROLS`` is filled from the SDK's
``POAConfigAttributes`` (gain, offset, USB bandwidth limit, heater power %, fan power % — SDK names, found by
name/label), ``SENSOR_MODE`` selects the sensor mode (not written to the FITS by the driver, so darkd records it),
cooler power in ``CCD_COOLER_POWER.CCD_COOLER_VALUE``.
"""

from __future__ import annotations

from typing import ClassVar

from drivers.indi.vendors.base import Fixed, Names, VendorAdapter, Words


class PlayerOneAdapter(VendorAdapter):
    name = "playerone"
    execs = ("indi_playerone_ccd", "indi_playerone_single_ccd")
    device_prefixes = ("PlayerOne CCD", "Player One")
    source = "indilib/indi-3rdparty indi-playerone/playerone_base.cpp"
    fixed: ClassVar[Fixed] = {"read_mode": ("SENSOR_MODE", None)}
    words: ClassVar[Words] = {"usb_traffic": (("bandwidth", "usblimit"), ("CCD_CONTROLS",)),
             "heater": (("heater", "dew"), ("CCD_CONTROLS",)),
             "fan": (("fan",), ("CCD_CONTROLS",))}
    heaters = ("heater",)
    expected: ClassVar[Names] = {"gain": "CCD_CONTROLS gain", "offset": "CCD_CONTROLS offset",
                                 "read_mode": "SENSOR_MODE", "usb_traffic": "CCD_CONTROLS USB bandwidth"}
    quirks = ("SENSOR_MODE is not in the driver's FITS header: darkd records it",)
