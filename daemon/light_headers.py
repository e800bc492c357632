"""Read a light's library key from its FITS header, whichever acquisition program wrote it.

Spellings differ between programs; each attribute is looked up under its aliases (:data:`ALIASES`), first found wins.
The program column names who writes the spelling, as read in its source or in headers it wrote (sources, and a
fixture header per program: ``tests/fixtures/headers/``; per-program list: ``docs/lights.md``):

================  =====================================================================================================
attribute         keywords (program that writes it)
================  =====================================================================================================
exposure_s        EXPTIME (INDI/Ekos, N.I.N.A., MaxIm DL, SharpCap, ASIAIR, APT, PixInsight, POCS),
                  EXPOSURE (SGP — its only one —, N.I.N.A., MaxIm DL, ASIAIR), EXP_TIME
set point         SET-TEMP (N.I.N.A., SGP, MaxIm DL, SharpCap, ASIAIR, APT, POCS; INDI/Ekos never), SET_TEMP, SETTEMP,
                  TEMP_SET
measured temp.    CCD-TEMP (INDI/Ekos, N.I.N.A., SGP, MaxIm DL, SharpCap, ASIAIR, POCS), TEMPERAT (SGP's documented
                  older spelling), CCD_TEMP, CCDTEMP
gain              GAIN (INDI/Ekos drivers, N.I.N.A., SGP, SharpCap, ASIAIR, APT), CAM-GAIN (POCS/Huntsman, ZWO: the
                  SDK's gain in internal units, no GAIN written). Never EGAIN: that is e⁻/ADU (N.I.N.A., SGP, MaxIm DL,
                  SharpCap, ASIAIR, APT, PixInsight, POCS write it), not the gain setting
offset            OFFSET (INDI/Ekos drivers, N.I.N.A., SGP, SharpCap, ASIAIR), BLKLEVEL (SharpCap, beside OFFSET),
                  BLACKLEV
binning           XBINNING (all but POCS, which writes none: 1), CCDXBIN (SGP, ASIAIR), BINNING (also ``'2x2'``),
                  XBIN, BINX; the Y spelling (YBINNING, CCDYBIN, YBIN, BINY) must agree when present
read mode         READMODE (INDI QHY driver: the mode index), READOUTM (N.I.N.A., MaxIm DL: the mode *name*, e.g.
                  'Standard', 'Monochrome'), READ_MODE, READOUT. A name is mapped with ``read_mode_names``; the text is
                  kept in :attr:`LightInfo.read_mode_name` (and :func:`read_mode_text`) for the rule that maps names
USB traffic       USBTRAF (darkd), USBLIMIT (N.I.N.A.), USBTRAFF, USB_TRAF
amp glow          AMPGLOW (darkd; INDI QHY driver: the switch label 'Auto'/'On'/'Off'), AMP_GLOW
overscan          OVSCMODE (darkd), OVERSCAN when it holds a mode name (darkd uses a numeric OVERSCAN for the
                  overscan mean, which is ignored here)
camera            INSTRUME (all; POCS writes the camera's serial number there), CAMERA (darkd: the INDI device)
frame type        IMAGETYP ('Light Frame': INDI, MaxIm DL, APT, POCS; 'LIGHT': N.I.N.A., SGP; 'Light': ASIAIR;
                  SharpCap writes none: light), FRAME (INDI 'Light'), FRAMETYP
time              DATE-OBS (UTC; SGP and SharpCap with 7 fractional digits), DATE_OBS
================  =====================================================================================================

Not read, on purpose: EGAIN/EGAINSAV (e⁻/ADU), ISO/ISOSPEED (DSLRs), CAMID/CAMERAID/CAM-ID (serial numbers, not the
camera name darkd keys on), BITDEPTH/ADCBITS (bit depth is not read from lights yet).

The set point of the key is ``SET-TEMP`` when present and sensible; otherwise, here, the measured ``CCD-TEMP`` rounded
to the nearest whole degree — a provisional value: :mod:`daemon.light_rule` replaces it with the nearest library set
point within the tolerance (Ekos never writes ``SET-TEMP``), and keeps the rounding only when there is no library.
N.I.N.A. once wrote ``-1.79769e308`` or NaN for an unset set point: such values count as absent. Geometry is the image
size as stored (``NAXIS1`` × ``NAXIS2``, after binning). A light without ``GAIN``/``OFFSET`` (and no default for them)
comes from a camera without that control — FLI cameras have neither, Moravian no offset — so its key says ``None``
there. :attr:`LightInfo.stated` names the attributes the header itself gave; the rest are filled by the one rule in
:mod:`daemon.light_rule`. Missing required keys raise :class:`HeaderKeyError` naming the file and the keywords looked
for.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

from astropy.io import fits

from calib.frames import read_header
from daemon.library.keys import InvalidKey, Kind, LibraryKey

ALIASES: dict[str, tuple[str, ...]] = {
    "exposure_s": ("EXPTIME", "EXPOSURE", "EXP_TIME"),
    "set_point_c": ("SET-TEMP", "SET_TEMP", "SETTEMP", "TEMP_SET"),
    "temperature_c": ("CCD-TEMP", "TEMPERAT", "CCD_TEMP", "CCDTEMP"),
    "gain": ("GAIN", "CAM-GAIN"),
    "offset": ("OFFSET", "BLKLEVEL", "BLACKLEV"),
    "binning": ("XBINNING", "CCDXBIN", "BINNING", "XBIN", "BINX"),
    "ybinning": ("YBINNING", "CCDYBIN", "YBIN", "BINY"),
    "read_mode": ("READMODE", "READOUTM", "READ_MODE", "READOUT"),
    "usb_traffic": ("USBTRAF", "USBLIMIT", "USBTRAFF", "USB_TRAF"),
    "amp_glow": ("AMPGLOW", "AMP_GLOW"),
    "overscan": ("OVSCMODE", "OVERSCAN"),
    "camera": ("INSTRUME", "CAMERA"),
    "image_type": ("IMAGETYP", "FRAME", "FRAMETYP"),
    "date_obs": ("DATE-OBS", "DATE_OBS"),
}
_ABSURD_C = 200.0  # |temperature| above this is a placeholder, not a reading
_GLOW = {"auto": "auto", "on": "on", "off": "off", "1": "on", "0": "off", "true": "on", "false": "off",
         "t": "on", "f": "off", "enabled": "on", "disabled": "off"}
_OVERSCAN = {"include": "include", "ignore": "ignore", "1": "include", "0": "ignore", "on": "include",
             "off": "ignore", "t": "include", "f": "ignore", "true": "include", "false": "ignore",
             "indi_enabled": "include", "indi_disabled": "ignore"}


class HeaderKeyError(ValueError):
    """A light's header lacks (or has an unusable value for) an attribute of the library key."""

    def __init__(self, source: str, attribute: str, message: str, *, keyword: str | None = None,
                 value: object = None) -> None:
        super().__init__(f"{source}: {message}")
        self.source = source
        self.attribute = attribute
        self.keyword = keyword  # the header keyword whose value was refused, when one was
        self.value = value  # that value as the header states it (e.g. a read-mode name to map)


@dataclass(frozen=True)
class LightInfo:
    """What the planner and the calibrator need from one light: its key, measured temperature, time, type."""

    key: LibraryKey
    temperature_c: float | None
    time_utc: datetime | None
    image_type: str
    path: Path | None = None
    program: str | None = None
    read_mode_name: str | None = None  # the header's read mode as text (N.I.N.A./MaxIm READOUTM), when it is a name
    #: attributes the header itself states (of set_point_c, gain, offset, binning, read_mode, usb_traffic, amp_glow,
    #: overscan, camera); the others are unstated
    stated: frozenset[str] = frozenset()
    #: where each filled-in attribute came from (``daemon.light_rule``: "config", "frame", "driver", "--default"...)
    sources: Mapping[str, str] = field(default_factory=dict)


def _find(header: Mapping[str, Any] | fits.Header, attribute: str) -> tuple[str, Any] | None:
    for name in ALIASES[attribute]:
        if name in header:
            value = header[name]
            if value is None or (isinstance(value, str) and not value.strip()):
                continue
            return name, value
    return None


def _number(source: str, attribute: str, found: tuple[str, Any]) -> float:
    name, value = found
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise HeaderKeyError(source, attribute, f"{name} = {value!r} is not a number") from None
    return number


def _temperature(source: str, header: Any, attribute: str) -> float | None:
    found = _find(header, attribute)
    if found is None:
        return None
    value = _number(source, attribute, found)
    return value if math.isfinite(value) and abs(value) < _ABSURD_C else None


def _integer(source: str, attribute: str, found: tuple[str, Any]) -> int:
    value = _number(source, attribute, found)
    if not math.isfinite(value) or value != round(value):
        hint = " (a fractional GAIN is e⁻/ADU, written by some programs in place of EGAIN: state the gain setting " \
               "with a default)" if attribute == "gain" else ""
        raise HeaderKeyError(source, attribute, f"{found[0]} = {found[1]!r} is not a whole number{hint}",
                             keyword=found[0], value=found[1])
    return round(value)


def _binning(source: str, attribute: str, found: tuple[str, Any]) -> int:
    """A binning factor: a number, or a ``'2x2'``/``'2*2'``/``'2 x 2'`` string (symmetric only)."""
    name, value = found
    if isinstance(value, str):
        parts = [p.strip() for p in value.lower().replace("*", "x").split("x")]
        if len(parts) == 2 and all(p.isdigit() for p in parts):
            if parts[0] != parts[1]:
                raise HeaderKeyError(source, attribute, f"asymmetric binning {name} = {value!r} is not supported",
                                     keyword=name, value=value)
            return int(parts[0])
    return _integer(source, attribute, found)


def _mode_name(text: object) -> str:
    """A read-mode name compared case- and spacing-blind: ``'High  Gain Mode '`` → ``'high gain mode'``."""
    return " ".join(str(text).lower().split())


def read_mode_text(header: Mapping[str, Any] | fits.Header) -> tuple[str, str] | None:
    """``(keyword, name)`` when the header states its read mode as a name (N.I.N.A. and MaxIm DL write
    ``READOUTM = 'Standard'``), else ``None`` (no read mode, or a mode index such as INDI's ``READMODE = 0.0``).

    The name is returned as written, stripped, for the rule that maps names to the driver's mode indices."""
    found = _find(header, "read_mode")
    if found is None:
        return None
    name, value = found
    try:
        float(value)
    except (TypeError, ValueError):
        return name, str(value).strip()
    return None


def _missing(source: str, attribute: str, what: str) -> HeaderKeyError:
    return HeaderKeyError(source, attribute, f"no {what} keyword (looked for {', '.join(ALIASES[attribute])})")


def camera_from_header(header: Mapping[str, Any] | fits.Header) -> str | None:
    """The camera name the header states (``INSTRUME``/``CAMERA``), or ``None``."""
    found = _find(header, "camera")
    return str(found[1]).strip() or None if found is not None else None


def detect_program(header: Mapping[str, Any] | fits.Header) -> str | None:
    """The acquisition program named in ``SWCREATE``/``CREATOR``/``PROGRAM``, if any."""
    for name in ("SWCREATE", "CREATOR", "PROGRAM", "SOFTWARE"):
        if name in header and str(header[name]).strip():
            return str(header[name]).strip()
    return None


def normalise_image_type(value: object) -> str:
    """Frame type from IMAGETYP/FRAME: ``"Light Frame"``/``"LIGHT"`` → ``light``; ``"Master Dark"`` → ``dark``;
    ``"Flat Dark"``/``"DARKFLAT"`` → ``flatdark``; ``"Offset"``/``"Zero"`` → ``bias``; anything else compacted."""
    text = str(value).strip().lower()
    for noise in ("frame", "master", "field", "_", "-", " "):
        text = text.replace(noise, "")
    if text in ("flatdark", "darkflat"):
        return "flatdark"
    for kind in ("light", "bias", "dark", "flat"):
        if text.startswith(kind):
            return kind
    if text in ("offset", "zero"):
        return "bias"
    return text or "light"


def light_info_from_header(header: Mapping[str, Any] | fits.Header, *, camera: str | None = None,
                           kind: str = "dark", source: str | os.PathLike[str] | None = None,
                           defaults: Mapping[str, Any] | None = None,
                           read_mode_names: Mapping[str, int] | None = None) -> LightInfo:
    """Parse ``header`` into a :class:`LightInfo` whose key has ``kind`` (the master wanted, default dark).

    ``camera`` overrides ``INSTRUME``. ``defaults`` supplies attributes the header lacks (``read_mode``,
    ``usb_traffic``, ``amp_glow``, ``overscan``, ``gain``, ``offset``, ``camera``); header values win.
    ``read_mode_names`` maps textual read modes (N.I.N.A.'s READOUTM) to the camera's mode index.
    """
    src = str(source) if source is not None else "header"
    dflt = dict(defaults or {})
    stated: set[str] = set()

    found = _find(header, "exposure_s")
    if found is None:
        raise _missing(src, "exposure_s", "exposure")
    exposure_s = _number(src, "exposure_s", found)
    if not math.isfinite(exposure_s) or exposure_s < 0:
        raise HeaderKeyError(src, "exposure_s", f"{found[0]} = {found[1]!r} is not a valid exposure")

    measured_c = _temperature(src, header, "temperature_c")
    set_point_c = _temperature(src, header, "set_point_c")
    if set_point_c is not None:
        stated.add("set_point_c")
    else:
        if measured_c is None:
            raise HeaderKeyError(src, "set_point_c", "no sensor temperature keyword (looked for "
                                 f"{', '.join(ALIASES['set_point_c'] + ALIASES['temperature_c'])})")
        set_point_c = float(round(measured_c))

    values: dict[str, Any] = {}
    for attribute in ("gain", "offset"):
        found = _find(header, attribute)
        if found is not None:
            values[attribute] = _integer(src, attribute, found)
            stated.add(attribute)
        else:  # not stated: the given default, else "no such control" (FLI: no gain or offset; Moravian: no offset)
            values[attribute] = dflt.get(attribute)

    found = _find(header, "binning")
    binning = _binning(src, "binning", found) if found is not None else int(dflt.get("binning", 1))
    if found is not None:
        stated.add("binning")
    found_y = _find(header, "ybinning")
    if found_y is not None and _binning(src, "binning", found_y) != binning:
        raise HeaderKeyError(src, "binning", f"asymmetric binning {binning}x{found_y[1]} is not supported")

    read_mode: int | None = dflt.get("read_mode")
    mode_text = read_mode_text(header)  # a name (READOUTM = 'Standard'), passed on as text for the mapping rule
    found = _find(header, "read_mode")
    if found is not None:
        stated.add("read_mode")
    if found is not None and mode_text is None:
        read_mode = _integer(src, "read_mode", found)
    elif mode_text is not None:
        names = {_mode_name(k): int(v) for k, v in (read_mode_names or {}).items()}
        if _mode_name(mode_text[1]) not in names:
            raise HeaderKeyError(src, "read_mode", f"{mode_text[0]} = {mode_text[1]!r} is not a known read mode "
                                 f"(known: {', '.join(sorted(names)) or 'none configured'})",
                                 keyword=mode_text[0], value=mode_text[1])
        read_mode = names[_mode_name(mode_text[1])]

    usb_traffic: int | None = dflt.get("usb_traffic")
    found = _find(header, "usb_traffic")
    if found is not None:
        usb_traffic = _integer(src, "usb_traffic", found)
        stated.add("usb_traffic")

    amp_glow = dflt.get("amp_glow")
    found = _find(header, "amp_glow")
    if found is not None:
        text = str(found[1]).strip().lower()
        if text not in _GLOW:
            raise HeaderKeyError(src, "amp_glow", f"{found[0]} = {found[1]!r} is not auto/on/off")
        amp_glow = _GLOW[text]
        stated.add("amp_glow")

    overscan = dflt.get("overscan")
    found = _find(header, "overscan")
    if found is not None and isinstance(found[1], int | float) and found[0] == "OVERSCAN":
        found = None  # darkd's numeric overscan mean (ADU), not a mode
    if found is not None:
        text = str(found[1]).strip().lower()
        if text not in _OVERSCAN:
            raise HeaderKeyError(src, "overscan", f"{found[0]} = {found[1]!r} is not include/ignore")
        overscan = _OVERSCAN[text]
        stated.add("overscan")

    cam = camera
    if cam is None:
        found = _find(header, "camera")
        cam = str(found[1]).strip() if found is not None else dflt.get("camera")
        if found is not None:
            stated.add("camera")
    if not cam:
        raise _missing(src, "camera", "camera name")

    width_px = header.get("NAXIS1") if hasattr(header, "get") else None
    height_px = header.get("NAXIS2") if hasattr(header, "get") else None
    if not width_px or not height_px:
        raise HeaderKeyError(src, "width_px", "no image size (NAXIS1/NAXIS2)")

    found = _find(header, "image_type")
    image_type = normalise_image_type(found[1]) if found is not None else "light"
    time_utc = _parse_time(header)

    try:
        key = LibraryKey(camera=str(cam), kind=cast(Kind, kind), exposure_s=0.0 if kind == "bias" else exposure_s,
                         set_point_c=set_point_c, gain=values["gain"], offset=values["offset"], binning=binning,
                         read_mode=read_mode, usb_traffic=usb_traffic, amp_glow=amp_glow, overscan=overscan,
                         width_px=int(width_px), height_px=int(height_px))
    except InvalidKey as exc:
        raise HeaderKeyError(src, "key", str(exc)) from exc
    return LightInfo(key=key, temperature_c=measured_c, time_utc=time_utc, image_type=image_type,
                     path=Path(source) if source is not None else None, program=detect_program(header),
                     read_mode_name=mode_text[1] if mode_text is not None else None,
                     stated=frozenset(stated))


def key_from_header(header: Mapping[str, Any] | fits.Header, camera: str | None = None, *, kind: str = "dark",
                    source: str | os.PathLike[str] | None = None, defaults: Mapping[str, Any] | None = None,
                    read_mode_names: Mapping[str, int] | None = None) -> LibraryKey:
    """The library key (of ``kind``) that calibrates the light with this header. See the module docstring."""
    return light_info_from_header(header, camera=camera, kind=kind, source=source, defaults=defaults,
                                  read_mode_names=read_mode_names).key


def light_info_from_file(path: str | os.PathLike[str], **kwargs: Any) -> LightInfo:
    """:func:`light_info_from_header` on a FITS file's header (no pixels read)."""
    return light_info_from_header(read_header(path), source=path, **kwargs)


def _parse_time(header: Any) -> datetime | None:
    found = _find(header, "date_obs")
    if found is None:
        return None
    text = str(found[1]).strip().replace("Z", "")
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
