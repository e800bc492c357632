"""QHY (``indi_qhy_ccd``; our simulated QHY163M speaks the same vocabulary).

Source: indilib/indi-3rdparty ``indi-qhy/qhy_ccd.cpp`` (``initProperties``/``updateProperties``): gain
``CCD_GAIN.GAIN``, offset ``CCD_OFFSET.OFFSET``, cooler power ``CCD_COOLER_POWER.CCD_COOLER_VALUE``, read mode
``READ_MODE.MODE``, ``USB_TRAFFIC.TRAFFIC``, ``CCD_AMP_GLOW`` (AMP_AUTO/ON/OFF) and ``OVERSCAN_MODE``
(INDI_ENABLED = include the overscan and optical-black area). No heater or fan control.
"""

from __future__ import annotations

from typing import ClassVar

from drivers.indi.vendors.base import Fixed, VendorAdapter


class QhyAdapter(VendorAdapter):
    name = "qhy"
    execs = ("indi_qhy_ccd",)
    device_prefixes = ("QHY CCD",)
    source = "indilib/indi-3rdparty indi-qhy/qhy_ccd.cpp"
    fixed: ClassVar[Fixed] = {"read_mode": ("READ_MODE", "MODE"), "usb_traffic": ("USB_TRAFFIC", "TRAFFIC"),
             "amp_glow": ("CCD_AMP_GLOW", None), "overscan": ("OVERSCAN_MODE", None)}
    quirks = ("no overscan geometry in its FITS: BIASSEC/DATASEC come from the camera profile",)
