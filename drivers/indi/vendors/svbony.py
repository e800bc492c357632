"""SVBony (``indi_svbony_ccd``).

Source: indilib/indi-3rdparty ``indi-svbony/svbony_base.cpp``: ``CCD_CONTROLS`` is filled from the SDK's
``SVB_CONTROL_CAPS`` (gain, offset/black level, frame speed — SDK names, found by name/label), cooler power
``CCD_COOLER_POWER.CCD_COOLER_VALUE``. The camera **restores SDK defaults on every connect**, so darkd writes every
setting again after each (re)connect.
"""

from __future__ import annotations

from typing import ClassVar

from drivers.indi.vendors.base import Names, VendorAdapter, Words


class SvbonyAdapter(VendorAdapter):
    name = "svbony"
    execs = ("indi_svbony_ccd",)
    device_prefixes = ("SVBONY CCD",)
    source = "indilib/indi-3rdparty indi-svbony/svbony_base.cpp"
    words: ClassVar[Words] = {"usb_traffic": (("framespeed", "speed", "bandwidth"), ("CCD_CONTROLS",))}
    defaults_on_connect = True
    expected: ClassVar[Names] = {"gain": "CCD_CONTROLS gain", "offset": "CCD_CONTROLS offset",
                "usb_traffic": "CCD_CONTROLS frame speed"}
    quirks = ("restores SDK defaults on every connect: darkd re-applies every setting after a reconnect",)
