"""Atik (``indi_atik_ccd``).

Source: indilib/indi-3rdparty ``indi-atik/atik_ccd.cpp`` (``initProperties``): ``CCD_CONTROL_PRESETS``
(PRESET_CUSTOM/LOW/MEDIUM/HIGH) and ``CCD_CONTROLS`` with ``CONTROL_GAIN`` (label "Gain") and ``CONTROL_OFFSET``
(label "Offset"), which the camera honours only while the preset is PRESET_CUSTOM — darkd selects it before writing
gain or offset; ``CCD_FAST_MODE``, ``CCD_PAD_DATA``. The driver refuses to switch the cooler on unless the target is
below the current temperature, so darkd sends the set point first and the cooler switch only when cooling down.
"""

from __future__ import annotations

from typing import ClassVar

from drivers.indi.vendors.base import Names, Props, VendorAdapter


class AtikAdapter(VendorAdapter):
    name = "atik"
    execs = ("indi_atik_ccd",)
    device_prefixes = ("Atik",)
    source = "indilib/indi-3rdparty indi-atik/atik_ccd.cpp"
    cooler_on_needs_colder_target = True
    expected: ClassVar[Names] = {"gain": "CCD_CONTROLS.CONTROL_GAIN", "offset": "CCD_CONTROLS.CONTROL_OFFSET"}
    quirks = ("gain/offset apply only with CCD_CONTROL_PRESETS = PRESET_CUSTOM",
              "cooler-on is refused unless the target is below the current temperature")

    def prepare(self, setting: str, props: Props) -> list[tuple[str, str]]:
        presets = props.get("CCD_CONTROL_PRESETS")
        if setting in ("gain", "offset") and presets is not None and "PRESET_CUSTOM" in presets.values:
            return [("CCD_CONTROL_PRESETS", "PRESET_CUSTOM")]
        return []
