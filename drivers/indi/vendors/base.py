"""What every vendor adapter shares: capability discovery (the KStars rule) and the :class:`VendorAdapter` hooks.

Discovery works on property snapshots only (``{name: PropertySnapshot}``), so it is tested without a server.

* **gain / offset** follow KStars (``kstars/indi/indicamera.cpp``, ``Camera::getGain``/``getOffset`` and their
  property lookup): the property ``CCD_GAIN`` / ``CCD_OFFSET`` when it is defined, otherwise the first number property
  with an element whose name *or label*, lower-cased, is ``gain`` / ``offset`` (ZWO ``CCD_CONTROLS.Gain``, Atik
  ``CCD_CONTROLS.CONTROL_GAIN`` labelled "Gain").
* **cooler power**: ``CCD_COOLER_POWER`` with element ``CCD_COOLER_VALUE`` or ``COOLER_POWER`` (ToupTek), or a number
  property named ``CCD_COOLER_VALUE``.
* Elements that the ASI, Player One and SVBony drivers copy from the vendor SDK at run time (bandwidth, heater, fan)
  are found by a word in their name or label (:func:`find_by_words`), never by a hard-coded SDK name.

A read-only property is recorded as ``reads`` (darkd never writes it); a write-only one is written without a read-back
and verified by its effect (the cooler by temperature and power).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar

from drivers.camera import SettingAccess

if TYPE_CHECKING:  # snapshots are plain data; no PyIndi needed here
    from drivers.indi.client import PropertySnapshot

Props = Mapping[str, "PropertySnapshot"]
Fixed = dict[str, tuple[str, str | None]]  # setting -> (property, element or None for a switch vector)
Words = dict[str, tuple[tuple[str, ...], tuple[str, ...]]]  # setting -> (words, properties searched)
Names = dict[str, str]

#: settings darkd knows, in the order of the capability table
SETTINGS = ("gain", "offset", "read_mode", "conversion_gain", "usb_traffic", "amp_glow", "overscan", "heater", "fan",
            "cooler", "cooler_power", "temp_ramp", "capture_format")
#: settings darkd writes when the driver offers them writable (fan and cooler power are only ever read)
WRITTEN = ("gain", "offset", "read_mode", "conversion_gain", "usb_traffic", "amp_glow", "overscan", "heater",
           "cooler", "temp_ramp")
#: settings that change the dark signal: written explicitly before every bias/dark series
DARK_SIGNAL_SETTINGS = ("gain", "offset", "read_mode", "conversion_gain", "usb_traffic")
#: switch elements that mean "off" on heater/fan switches (ToupTek ``TC_HEAT_CONTROL``: INDI_DISABLED or TC_HEAT_OFF)
OFF_ELEMENTS = ("INDI_DISABLED", "TC_HEAT_OFF", "TC_FAN_OFF", "FAN_OFF", "HEATER_OFF", "OFF")


def _norm(text: str) -> str:
    return re.sub(r"[^a-z0-9]", "", text.lower())


@dataclass(frozen=True)
class Control:
    """Where one setting lives on this driver: a number element, or a switch vector (value = option index)."""

    setting: str
    prop: str
    element: str | None  # None: a one-of-many switch vector; the value is the index of the option that is on
    kind: str  # "number" | "switch"
    permission: str = "rw"
    limits: tuple[float, float, float] | None = None  # number: (min, max, step); switch: (0, n-1, 1)
    options: tuple[str, ...] = ()  # switch: element names in the driver's order

    @property
    def where(self) -> str:
        return f"{self.prop}.{self.element}" if self.element else self.prop

    @property
    def writable(self) -> bool:
        return self.permission != "ro"

    @property
    def readable(self) -> bool:
        return self.permission != "wo"

    def off_value(self) -> int:
        """The value that switches this heater/fan off: 0 for a number, the index of the off option for a switch."""
        if self.kind == "switch":
            for name in OFF_ELEMENTS:
                if name in self.options:
                    return self.options.index(name)
        return 0

    def range_text(self) -> str:
        if self.limits is None:
            return "no advertised range"
        return f"{self.limits[0]:g}..{self.limits[1]:g}"

    def check(self, value: float) -> str | None:
        """None when ``value`` lies in the advertised range (or none is advertised), else why not."""
        if self.limits is None:
            return None
        low, high, _ = self.limits
        if high <= low and self.kind == "number":
            return None  # the driver advertises no range
        if not low <= value <= high:
            return f"{self.setting} {value:g} is outside the driver's range {low:g}..{high:g} ({self.where})"
        return None


def number_control(setting: str, snap: PropertySnapshot, element: str) -> Control:
    return Control(setting, snap.name, element, "number", snap.permission, snap.limits.get(element))


def switch_control(setting: str, snap: PropertySnapshot) -> Control:
    options = tuple(snap.values)
    return Control(setting, snap.name, None, "switch", snap.permission, (0.0, float(len(options) - 1), 1.0), options)


def fixed_control(props: Props, setting: str, prop: str, element: str | None = None) -> Control | None:
    """The control at ``prop`` (``.element`` for a number; the first element when None) if the driver defines it."""
    snap = props.get(prop)
    if snap is None:
        return None
    if snap.kind == "switch":
        return switch_control(setting, snap)
    if snap.kind != "number" or not snap.values:
        return None
    element = element or next(iter(snap.values))
    return number_control(setting, snap, element) if element in snap.values else None


def find_kstars(props: Props, word: str, standard: str) -> Control | None:
    """The KStars rule: property ``standard`` if defined, else the first number element named/labelled ``word``."""
    snap = props.get(standard)
    if snap is not None and snap.kind == "number" and snap.values:
        return number_control(word, snap, next(iter(snap.values)))
    for snap in props.values():
        if snap.kind != "number":
            continue
        for element in snap.values:
            if element.lower() == word or snap.labels.get(element, "").strip().lower() == word:
                return number_control(word, snap, element)
    return None


def find_by_words(props: Props, setting: str, words: tuple[str, ...], within: tuple[str, ...]) -> Control | None:
    """A number element of one of the properties ``within`` whose normalised name or label contains one of ``words``.

    For the controls that ZWO, Player One and SVBony drivers name after their SDK at run time (``BandWidth``,
    ``AntiDewHeater``, ``FanOn``, ...): found by meaning, never by a hard-coded SDK spelling.
    """
    for prop in within:
        snap = props.get(prop)
        if snap is None or snap.kind != "number":
            continue
        for element in snap.values:
            text = _norm(element) + " " + _norm(snap.labels.get(element, ""))
            if any(w in text for w in words):
                return number_control(setting, snap, element)
    return None


def cooler_power(props: Props) -> Control | None:
    """``CCD_COOLER_POWER.CCD_COOLER_VALUE`` / ``.COOLER_POWER`` (ToupTek), or a ``CCD_COOLER_VALUE`` property."""
    snap = props.get("CCD_COOLER_POWER")
    if snap is not None and snap.kind == "number":
        for element in ("CCD_COOLER_VALUE", "COOLER_POWER"):
            if element in snap.values:
                return number_control("cooler_power", snap, element)
    return fixed_control(props, "cooler_power", "CCD_COOLER_VALUE")


@dataclass(frozen=True)
class Vocabulary:
    """The controls found on one connected device, by darkd setting name."""

    controls: dict[str, Control] = field(default_factory=dict)
    expected: dict[str, str] = field(default_factory=dict)  # setting -> where this family keeps it (for messages)
    written: tuple[str, ...] = WRITTEN  # settings darkd writes on this family

    def get(self, setting: str) -> Control | None:
        return self.controls.get(setting)

    def table(self) -> tuple[SettingAccess, ...]:
        """The capability table: for each setting, whether darkd sets it, only reads it, or the camera lacks it."""
        rows = []
        for setting in SETTINGS:
            control = self.controls.get(setting)
            if control is None:
                rows.append(SettingAccess(setting, "lacks", self.expected.get(setting)))
                continue
            access = "sets" if control.writable and setting in self.written else "reads"
            note = ""
            if not control.readable:
                note = "write-only: verified by effect" if access == "sets" else "write-only: left as it is"
            rng = (control.limits[0], control.limits[1]) if control.limits and control.limits[1] > control.limits[0] \
                else None
            rows.append(SettingAccess(setting, access, control.where, rng, note))
        return tuple(rows)


class VendorAdapter:
    """One INDI driver family's vocabulary and quirks. Subclasses only fill in the class attributes they differ in.

    ``fixed`` maps a setting to ``(property, element)`` where this family keeps it by a fixed INDI name; ``words``
    maps a setting to (words, properties to search) for controls named at run time; gain and offset always follow
    the KStars rule. Cooler quirks: ``cooler_switch`` (False: cool through ``CCD_TEMPERATURE`` only, FLI),
    ``cooler_on_needs_colder_target`` (Atik refuses cooler-on unless target < current), ``cooler_starts_on``
    (ToupTek, Moravian), ``defaults_on_connect`` (SVBony restores SDK defaults on every connect).
    """

    name: ClassVar[str] = "generic"
    execs: ClassVar[tuple[str, ...]] = ()
    device_prefixes: ClassVar[tuple[str, ...]] = ()  # a hint only when DRIVER_EXEC is unknown (e.g. a simulator)
    source: ClassVar[str] = "indilib/indi libindi/ccd.cpp (INDI::CCD base class)"
    fixed: ClassVar[Fixed] = {}
    words: ClassVar[Words] = {}
    heaters: ClassVar[tuple[str, ...]] = ()  # settings that are heaters (switched off before a bias/dark series)
    cooler_switch: ClassVar[bool] = True
    cooler_on_needs_colder_target: ClassVar[bool] = False
    cooler_starts_on: ClassVar[bool] = False
    defaults_on_connect: ClassVar[bool] = False
    capture_format: ClassVar[str | None] = None  # CCD_CAPTURE_FORMAT option selected on connect (ZWO ASI_IMG_RAW16)
    #: setting -> FITS key the driver writes into the frame (checked against the request after each exposure)
    fits_keys: ClassVar[Names] = {"gain": "GAIN", "offset": "OFFSET"}
    quirks: ClassVar[tuple[str, ...]] = ()
    expected: ClassVar[Names] = {"gain": "CCD_GAIN", "offset": "CCD_OFFSET", "read_mode": "READ_MODE",
                                          "usb_traffic": "USB_TRAFFIC", "amp_glow": "CCD_AMP_GLOW",
                                          "overscan": "OVERSCAN_MODE", "conversion_gain": "TC_CONVERSION_GAIN",
                                          "heater": "a heater control", "fan": "a fan control",
                                          "cooler": "CCD_COOLER", "cooler_power": "CCD_COOLER_POWER",
                                          "temp_ramp": "CCD_TEMP_RAMP", "capture_format": "CCD_CAPTURE_FORMAT"}

    def discover(self, props: Props) -> Vocabulary:
        """Every control this family offers on the connected device (see the module docstring)."""
        controls: dict[str, Control] = {}
        for setting, word, standard in (("gain", "gain", "CCD_GAIN"), ("offset", "offset", "CCD_OFFSET")):
            if (found := find_kstars(props, word, standard)) is not None:
                controls[setting] = found
        for setting, (prop, element) in self.fixed.items():
            if setting not in controls and (found := fixed_control(props, setting, prop, element)) is not None:
                controls[setting] = found
        for setting, (words, within) in self.words.items():
            if setting not in controls and (found := find_by_words(props, setting, words, within)) is not None:
                controls[setting] = found
        if (power := cooler_power(props)) is not None:
            controls["cooler_power"] = power
        if self.cooler_switch and (cooler := fixed_control(props, "cooler", "CCD_COOLER")) is not None:
            controls["cooler"] = cooler
        for setting, prop, element in (("temp_ramp", "CCD_TEMP_RAMP", "RAMP_SLOPE"),
                                       ("capture_format", "CCD_CAPTURE_FORMAT", None)):
            if (found := fixed_control(props, setting, prop, element)) is not None:
                controls[setting] = found
        written = WRITTEN + (("capture_format",) if self.capture_format else ())
        return Vocabulary(controls, {**VendorAdapter.expected, **self.expected}, written)

    def prepare(self, setting: str, props: Props) -> list[tuple[str, str]]:
        """Switches to turn on before writing ``setting`` (``[(property, element)]``); none by default."""
        return []

    def heater_controls(self, vocab: Vocabulary) -> list[Control]:
        """The heater controls found (switched off before a bias/dark series unless the user asks otherwise)."""
        return [c for s in self.heaters if (c := vocab.get(s)) is not None and c.writable]
