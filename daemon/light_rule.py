"""The one rule for the key fields a light does not state, used by plan, selection, the calibrate job and REST.

Lights come from Ekos, N.I.N.A., SGP, MaxIm, SharpCap, ASIAIR, APT, PixInsight, POCS or the stock INDI tools; most of
them leave out fields of the library key that darkd's masters carry (overscan, read mode, USB traffic, amp glow, bit
depth; gain and offset on some). :mod:`daemon.light_headers` reads what the header states; :class:`LightRule` fills
the rest, each field from the first source that knows it:

=====  ====================  ==========================================================================================
order  source                what it gives
=====  ====================  ==========================================================================================
1      the light's header    every field it states (any spelling of :data:`daemon.light_headers.ALIASES`); always wins
2      ``--default``          explicit values of this one command (``darkd plan --default read_mode=0``): ``overrides``
3      config                ``[lights."<camera>"]`` (:class:`daemon.settings.LightCameraSettings`), once per camera;
                             its ``names`` also key lights that call the camera otherwise (N.I.N.A.'s "QHY163M")
4      the frame itself      overscan only: ``NAXIS1`` × ``NAXIS2`` equals the camera profile's *include* or *ignore*
                             geometry (binned); the profile is the one recorded for the camera, else ``camera_profile``
5      the driver            the camera's state as its driver reported it when darkd connected, before darkd changed
                             anything (``camera_defaults`` in the index, :func:`record_driver_defaults`): gain and
                             offset (only when the camera has the control), read mode, USB traffic, amp glow, overscan
6      nothing               ``None``: the camera has no such control, or nobody knows (the key says so)
=====  ====================  ==========================================================================================

The bit depth is never taken from the driver: darkd's own entries record a bit depth only when the key asked for one
(:func:`daemon.jobs.build_library.complete_key`), so filling it from the driver would keep lights off darkd's masters;
set it in the config when the library's entries carry one.

**Read-mode names** (N.I.N.A. ``READOUTM='Standard'``, SGP, the driver's own labels) map to the mode index through the
camera's config table ``read_modes`` first (case-insensitive), then the labels the driver offers (recorded at connect,
label *i* is mode *i*, e.g. Moravian ``CCD_READ_MODE`` "Photo" = 0, "Fast" = 1).

**Temperature**: the light's set point when it states one (``SET-TEMP``…). Otherwise (Ekos writes only ``CCD-TEMP``)
its measured temperature matched to the **nearest set point of the camera's library entries** within
``library.temperature_tolerance_c`` (inclusive; a tie goes to the colder set point, since a cooler that falls short
reads warm). No library set point within the tolerance, or no library at all (planning from an empty index): the
measured temperature rounded to the nearest whole degree — the set point a plan would build.

:attr:`LightInfo.sources <daemon.light_headers.LightInfo.sources>` records where each filled-in field came from.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from typing import Any, Protocol

from astropy.io import fits

from calib.frames import read_header
from daemon.library.keys import InvalidKey, LibraryKey
from daemon.light_headers import HeaderKeyError, LightInfo, camera_from_header, light_info_from_header
from daemon.settings import LightCameraSettings, Settings
from drivers.camera import CameraCapabilities, CameraState
from drivers.profiles import CameraProfile, ProfileError, load_profile

log = logging.getLogger(__name__)

#: the key fields the rule fills when a light's header lacks them
UNSTATED_FIELDS: tuple[str, ...] = ("gain", "offset", "read_mode", "usb_traffic", "amp_glow", "overscan", "bit_depth")
#: the fields the driver's recorded state may fill (not the bit depth: see the module docstring)
DRIVER_FIELDS: tuple[str, ...] = ("gain", "offset", "read_mode", "usb_traffic", "amp_glow", "overscan")
_EPS = 1e-9


class CameraRecords(Protocol):
    """What the rule reads from the index (:class:`daemon.library.catalog.LibraryIndex` has both)."""

    def camera_defaults(self, camera: str) -> tuple[dict[str, Any], list[str]] | None: ...

    def entries(self, **filters: Any) -> Sequence[LibraryKey]: ...


def driver_defaults(caps: CameraCapabilities, state: CameraState) -> dict[str, Any]:
    """The values :func:`record_driver_defaults` stores: the key fields the driver reports, plus what it offers."""
    def whole(value: float | None, present: bool = True) -> int | None:
        return round(value) if present and value is not None else None

    return {"gain": whole(state.gain, caps.has_gain), "offset": whole(state.offset, caps.has_offset),
            "read_mode": state.read_mode if caps.has_read_mode else None,
            "usb_traffic": state.usb_traffic if caps.has_usb_traffic else None,
            "amp_glow": state.amp_glow if caps.has_amp_glow else None,
            "overscan": str(state.overscan.value) if caps.has_overscan and state.overscan is not None else None,
            "has_gain": caps.has_gain, "has_offset": caps.has_offset, "profile": caps.profile,
            "bit_depth": caps.bit_depth, "driver_exec": caps.driver_exec}


def record_driver_defaults(index: Any, caps: CameraCapabilities, state: CameraState) -> None:
    """Record ``caps.device``'s driver-reported state in the index (call right after connecting, before applying
    anything). ``index``: a :class:`daemon.library.store.LibraryStore`."""
    values = driver_defaults(caps, state)
    index.record_camera_defaults(caps.device, values, caps.read_mode_labels)
    log.info("recorded the driver's state of %s: %s; read modes %s", caps.device, values,
             list(caps.read_mode_labels) or "unnamed")


def match_set_point(measured_c: float, set_points_c: Iterable[float], tolerance_c: float) -> float | None:
    """The set point nearest to ``measured_c`` within ``tolerance_c`` (inclusive; ties: the colder), else ``None``."""
    near = [(abs(measured_c - t), t) for t in set_points_c if abs(measured_c - t) <= tolerance_c + _EPS]
    if not near:
        return None
    return min(near, key=lambda d_t: (round(d_t[0], 9), d_t[1]))[1]


class LightRule:
    """The rule of the module docstring for one command or job (it caches what it reads from the index)."""

    def __init__(self, settings: Settings, index: CameraRecords | None = None, *,
                 overrides: Mapping[str, Any] | None = None) -> None:
        self.settings = settings
        self.index = index
        self.overrides = dict(overrides or {})
        unknown = sorted(set(self.overrides) - {*UNSTATED_FIELDS, "camera", "binning"})
        if unknown:
            raise ValueError(f"unknown default(s) {', '.join(unknown)} (allowed: camera, binning, "
                             f"{', '.join(UNSTATED_FIELDS)})")
        self._driver: dict[str, tuple[dict[str, Any], list[str]] | None] = {}
        self._set_points: dict[str, list[float]] = {}
        self._profiles: dict[str, CameraProfile | None] = {}

    # --- the sources ---------------------------------------------------------------------------------------------
    def config(self, camera: str) -> LightCameraSettings:
        """The camera's ``[lights."<camera>"]`` table (empty when not configured)."""
        return self.settings.lights.get(camera) or LightCameraSettings()

    def camera_name(self, name: str) -> tuple[str, str | None]:
        """The library's name for a camera a light calls ``name``: ``(name, None)`` when it is a configured camera or
        no configured camera lists it in ``names``, else ``(camera, 'config [lights."<camera>"].names')``."""
        if name in self.settings.lights:
            return name, None
        wanted = name.strip().casefold()
        for camera, config in self.settings.lights.items():
            if any(alias.strip().casefold() == wanted for alias in config.names):
                return camera, f'config [lights."{camera}"].names'
        return name, None

    def driver(self, camera: str) -> tuple[dict[str, Any], list[str]]:
        """``(values, read-mode labels)`` recorded for the camera (empty when never connected)."""
        if camera not in self._driver:
            self._driver[camera] = self.index.camera_defaults(camera) if self.index is not None else None
        return self._driver[camera] or ({}, [])

    def read_mode_names(self, camera: str) -> dict[str, int]:
        """Read-mode name → index: the config's ``read_modes`` over the driver's labels."""
        names = {label.strip().lower(): i for i, label in enumerate(self.driver(camera)[1]) if label.strip()}
        names.update({name.strip().lower(): int(i) for name, i in self.config(camera).read_modes.items()})
        return names

    def set_points(self, camera: str) -> list[float]:
        """The set points of the camera's library entries (``bad`` ones left out)."""
        if camera not in self._set_points:
            entries = self.index.entries(camera=camera) if self.index is not None else []
            self._set_points[camera] = sorted({e.set_point_c for e in entries
                                               if getattr(e, "status", None) != "bad"})
        return self._set_points[camera]

    def profile(self, camera: str) -> CameraProfile | None:
        """The camera's profile: the one recorded at connect, else ``camera_profile`` when not ``auto``."""
        name = self.driver(camera)[0].get("profile") or (
            self.settings.camera_profile if self.settings.camera_profile != "auto" else None)
        if not name:
            return None
        if name not in self._profiles:
            try:
                self._profiles[name] = load_profile(name)
            except (ProfileError, OSError) as exc:
                log.warning("camera profile %s of %s not usable for lights: %s", name, camera, exc)
                self._profiles[name] = None
        return self._profiles[name]

    def overscan_from_frame(self, camera: str, width_px: int, height_px: int, binning: int) -> str | None:
        """``include``/``ignore`` when the frame size is exactly one of the profile's geometries, else ``None``."""
        profile = self.profile(camera)
        if profile is None or profile.include is None or profile.ignore is None:
            return None
        fits_mode = [mode for mode in ("include", "ignore")
                     if (g := profile.geometry(mode).binned(binning)).width_px == width_px and g.height_px == height_px]
        return fits_mode[0] if len(fits_mode) == 1 else None

    # --- the rule ------------------------------------------------------------------------------------------------
    def light_info(self, light: str | os.PathLike[str] | Mapping[str, Any] | fits.Header, *,
                   camera: str | None = None, kind: str = "dark",
                   source: str | os.PathLike[str] | None = None) -> LightInfo:
        """Read a light (a FITS path or a header) and resolve its key by the rule. :class:`HeaderKeyError` when even
        the rule cannot make a key of it."""
        if isinstance(light, str | os.PathLike):
            header: Mapping[str, Any] | fits.Header = read_header(light)
            source = light
        else:
            header = light
        cam = camera or self.overrides.get("camera")
        alias_source = None
        if not cam:
            cam = camera_from_header(header)
            if cam:
                cam, alias_source = self.camera_name(cam)
        fixed: dict[str, Any] = {k: self.overrides[k] for k in ("camera", "binning") if k in self.overrides}
        info = light_info_from_header(header, camera=cam, kind=kind, source=source, defaults=fixed,
                                      read_mode_names=self.read_mode_names(cam) if cam else None)
        resolved = self.resolve(info)
        if alias_source is not None:
            resolved = replace(resolved, sources={**resolved.sources, "camera": alias_source})
        return resolved

    def resolve(self, info: LightInfo) -> LightInfo:
        """Fill the unstated fields of ``info``'s key and its set point (see the module docstring)."""
        key = info.key
        config, (driver, _labels) = self.config(key.camera), self.driver(key.camera)
        filled: dict[str, Any] = {}
        sources: dict[str, str] = {}
        for name in UNSTATED_FIELDS:
            if name in info.stated:
                continue
            value, where = self.overrides.get(name), "--default"
            if value is None:
                value, where = getattr(config, name), f'config [lights."{key.camera}"]'
            if value is None and name == "overscan":
                value, where = self.overscan_from_frame(key.camera, key.width_px, key.height_px, key.binning), \
                    "frame size"
            if value is None and name in DRIVER_FIELDS and (name not in ("gain", "offset")
                                                            or driver.get(f"has_{name}", True)):
                value, where = driver.get(name), "driver state at connect"
            if value is not None:
                filled[name], sources[name] = value, where
        if "set_point_c" not in info.stated and info.temperature_c is not None:
            matched = match_set_point(info.temperature_c, self.set_points(key.camera),
                                      self.settings.library.temperature_tolerance_c)
            if matched is not None:
                filled["set_point_c"], sources["set_point_c"] = matched, "nearest library set point"
            else:
                sources["set_point_c"] = "CCD-TEMP rounded"
        if not filled:
            return replace(info, sources=sources)
        try:
            new_key = LibraryKey(**{**key.key_only().to_dict(), **filled})
        except InvalidKey as exc:
            where = ", ".join(f"{n} from {sources[n]}" for n in filled)
            raise HeaderKeyError(str(info.path or "header"), "key", f"{exc} ({where})") from exc
        return replace(info, key=new_key, sources=sources)

