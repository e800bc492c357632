"""ToupTek and its rebrands (``indi_toupcam_ccd``, ``indi_altair_ccd``, ``indi_bressercam_ccd``,
``indi_mallincam_ccd``, ``indi_nncam_ccd``, ``indi_ogmacam_ccd``, ``indi_omegonprocam_ccd``, ``indi_starshootg_ccd``,
``indi_tscam_ccd``): one source, built once per brand.

Source: indilib/indi-3rdparty ``indi-toupbase/indi_toupbase.cpp`` (and ``oem_cameras.cpp`` for the brand list): gain
``CCD_CONTROLS.Gain``, offset in its own **``CCD_OFFSET.OFFSET``**, cooler power **``CCD_COOLER_POWER.COOLER_POWER``**,
``TC_CONVERSION_GAIN`` (LCG/HCG/HDR), ``TC_LOW_NOISE``/``TC_HIGHFULLWELL``, ``CCD_CONTROLS.Speed`` (USB speed),
``TC_HEAT_CONTROL`` (INDI_DISABLED, INDI_ENABLED or HEAT1..n) and ``TC_FAN_SPEED``, both restored from the driver's
config. The cooler **starts ON** when the camera is opened.
"""

from __future__ import annotations

from typing import ClassVar

from drivers.indi.vendors.base import Fixed, Names, VendorAdapter, Words


class ToupcamAdapter(VendorAdapter):
    name = "toupcam"
    execs = ("indi_toupcam_ccd", "indi_altair_ccd", "indi_bressercam_ccd", "indi_mallincam_ccd", "indi_nncam_ccd",
             "indi_ogmacam_ccd", "indi_omegonprocam_ccd", "indi_starshootg_ccd", "indi_tscam_ccd")
    device_prefixes = ("ToupTek", "Toupcam", "Altair", "Bresser", "MallinCam", "Nncam", "Ogma", "Omegon",
                       "StarShootG", "TScam")
    source = "indilib/indi-3rdparty indi-toupbase/indi_toupbase.cpp"
    fixed: ClassVar[Fixed] = {"conversion_gain": ("TC_CONVERSION_GAIN", None), "heater": ("TC_HEAT_CONTROL", None),
             "fan": ("TC_FAN_SPEED", None)}
    words: ClassVar[Words] = {"usb_traffic": (("speed",), ("CCD_CONTROLS",))}
    heaters = ("heater",)
    cooler_starts_on = True
    expected: ClassVar[Names] = {"gain": "CCD_CONTROLS gain", "usb_traffic": "CCD_CONTROLS.Speed",
                                 "heater": "TC_HEAT_CONTROL", "fan": "TC_FAN_SPEED"}
    quirks = ("cooler starts ON when the camera is opened", "heater and fan are restored from the driver config",
              "12-bit data padding changed between driver versions: the driver version is recorded")
