"""Any other INDI CCD, including Debian's stock ``indi_simulator_ccd`` ("CCD Simulator").

Source: indilib/indi ``libindi/ccd.cpp`` (the ``INDI::CCD`` base class: ``CCD_TEMPERATURE``, ``CCD_COOLER``,
``CCD_TEMP_RAMP``, ``CCD_BINNING``, ``CCD_FRAME``) and ``drivers/ccd/ccd_simulator.cpp`` (``CCD_GAIN.GAIN``,
``CCD_OFFSET.OFFSET``, ``CCD_TEMP_RAMP.RAMP_SLOPE`` 0..30 °C/min, no cooler power). Gain and offset follow the
KStars rule; everything else darkd needs comes from the base class. Read mode is taken from a ``READ_MODE.MODE``
number when one exists.
"""

from __future__ import annotations

from typing import ClassVar

from drivers.indi.vendors.base import Fixed, VendorAdapter


class GenericAdapter(VendorAdapter):
    name = "generic"
    execs = ("indi_simulator_ccd",)
    source = "indilib/indi libindi/ccd.cpp, drivers/ccd/ccd_simulator.cpp"
    fixed: ClassVar[Fixed] = {"read_mode": ("READ_MODE", "MODE"), "usb_traffic": ("USB_TRAFFIC", "TRAFFIC")}
