"""ZWO ASI (``indi_asi_ccd``, ``indi_asi_single_ccd``).

Source: indilib/indi-3rdparty ``indi-asi/asi_base.cpp`` (``initProperties``, ``createControls``): ``CCD_COOLER`` is
defined **write-only** (``IP_WO``), ``CCD_COOLER_POWER.CCD_COOLER_VALUE`` read-only, ``ADC_DEPTH.BITS`` read-only,
and ``CCD_CONTROLS`` is filled at run time with one element per SDK control, named and labelled after
``ASI_CONTROL_CAPS.Name`` (Gain, Offset, BandWidth, AntiDewHeater, FanOn, ... — SDK spellings, so darkd finds them by
name/label, never hard-codes them). The SDK resets BandWidth on connect: darkd writes it again after every
(re)connect. Capture format ``CCD_CAPTURE_FORMAT`` ASI_IMG_RAW16 for 16-bit frames.
"""

from __future__ import annotations

from typing import ClassVar

from drivers.indi.vendors.base import Names, VendorAdapter, Words


class AsiAdapter(VendorAdapter):
    name = "asi"
    execs = ("indi_asi_ccd", "indi_asi_single_ccd")
    device_prefixes = ("ZWO CCD",)
    source = "indilib/indi-3rdparty indi-asi/asi_base.cpp"
    words: ClassVar[Words] = {"usb_traffic": (("bandwidth",), ("CCD_CONTROLS",)),
             "heater": (("antidew", "heater"), ("CCD_CONTROLS",)),
             "fan": (("fan",), ("CCD_CONTROLS",))}
    heaters = ("heater",)
    capture_format = "ASI_IMG_RAW16"
    expected: ClassVar[Names] = {"gain": "CCD_CONTROLS gain", "offset": "CCD_CONTROLS offset",
                "usb_traffic": "CCD_CONTROLS bandwidth"}
    quirks = ("CCD_COOLER is write-only: cooling is verified by temperature and power",
              "BandWidth is reset by the SDK on connect: re-applied after every reconnect")
