"""Per-camera frame geometry (``config/cameras/<name>.toml``): where the overscan, optical-black and data areas are.

The QHY INDI driver writes no overscan geometry into its FITS, so the profile is the source of ``BIASSEC``, ``DATASEC``
and ``TRIMSEC`` (IRAF convention: ``[x1:x2,y1:y2]``, 1-based inclusive, x first). Geometry is given for binning 1 and
both ``OVERSCAN_MODE`` settings; :meth:`CameraProfile.sections_for` picks the mode, scales for binning, and checks the
result against the frame actually received — a disagreement raises :class:`ProfileMismatch` with both sizes.

Profiles are **detected, not configured** (:func:`detect_profile`): each file's ``[detect]`` table names the driver
executables (``DRIVER_INFO.DRIVER_EXEC``), the model as it appears in the device name, and the sensor sizes
(``CCD_INFO``) it applies to; a configured ``profile`` still overrides. A camera no profile matches gets a generic
profile — the whole frame as data, no overscan geometry — and a logged notice, never a failure. A profile whose
sensor geometry is not documented declares ``whole_frame = true`` instead of an ``[ignore]`` table.
"""

from __future__ import annotations

import logging
import os
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from drivers.camera import OverscanMode

log = logging.getLogger(__name__)

GENERIC_PROFILE = "generic"
PROFILES_DIR = Path(__file__).resolve().parent.parent / "config" / "cameras"
_SECTION = re.compile(r"^\[\s*(\d+)\s*:\s*(\d+)\s*,\s*(\d+)\s*:\s*(\d+)\s*\]$")


class ProfileError(ValueError):
    """A camera profile that is missing or malformed; the message names the file and the key."""


class ProfileMismatch(ProfileError):
    """The frame received does not have the size the profile expects for its overscan mode and binning."""


def parse_section(text: str) -> tuple[int, int, int, int]:
    """``"[x1:x2,y1:y2]"`` -> ``(x1, x2, y1, y2)`` (1-based inclusive). Raises :class:`ProfileError`."""
    m = _SECTION.match(str(text).strip())
    if not m:
        raise ProfileError(f"not an IRAF section: {text!r} (expected '[x1:x2,y1:y2]')")
    x1, x2, y1, y2 = (int(g) for g in m.groups())
    if min(x1, y1) < 1 or x2 < x1 or y2 < y1:
        raise ProfileError(f"invalid section {text!r}: needs 1 <= x1 <= x2 and 1 <= y1 <= y2")
    return x1, x2, y1, y2


def format_section(x1: int, x2: int, y1: int, y2: int) -> str:
    return f"[{x1}:{x2},{y1}:{y2}]"


def _bin_section(text: str, binning: int) -> str:
    """Scale a binning-1 section to ``binning`` (integer division, as the camera bins whole superpixels)."""
    x1, x2, y1, y2 = parse_section(text)
    if binning == 1:
        return text
    return format_section((x1 - 1) // binning + 1, x2 // binning, (y1 - 1) // binning + 1, y2 // binning)


@dataclass(frozen=True)
class FrameGeometry:
    """Sections for one overscan mode (binning 1): frame size and IRAF sections (``biassec``/``obsec`` may be None)."""

    width_px: int
    height_px: int
    datasec: str
    trimsec: str
    biassec: str | None = None
    obsec: str | None = None

    def binned(self, binning: int) -> FrameGeometry:
        if binning == 1:
            return self
        return FrameGeometry(
            self.width_px // binning, self.height_px // binning, _bin_section(self.datasec, binning),
            _bin_section(self.trimsec, binning), self.biassec and _bin_section(self.biassec, binning),
            self.obsec and _bin_section(self.obsec, binning))

    def header_cards(self) -> dict[str, str]:
        """``BIASSEC``/``DATASEC``/``TRIMSEC`` (+ ``OBSEC`` for the optical-black rows) for a FITS header."""
        cards = {"DATASEC": self.datasec, "TRIMSEC": self.trimsec}
        if self.biassec:
            cards["BIASSEC"] = self.biassec
        if self.obsec:
            cards["OBSEC"] = self.obsec
        return cards


@dataclass(frozen=True)
class ProfileMatch:
    """When a profile applies (its ``[detect]`` table): any listed driver, a model in the device name, a sensor size."""

    drivers: tuple[str, ...] = ()  # DRIVER_INFO.DRIVER_EXEC values; empty = any driver
    models: tuple[str, ...] = ()  # model names as they appear in the device name (compared without case/punctuation)
    sizes: tuple[tuple[int, int], ...] = ()  # CCD_INFO (CCD_MAX_X, CCD_MAX_Y) values; empty = any size


@dataclass(frozen=True)
class CameraProfile:
    """One camera model: geometry per overscan mode plus limits used by capture and quality checks.

    ``ignore`` None means *whole frame*: the frame as received is all data (no overscan geometry is known).
    """

    name: str
    model: str
    include: FrameGeometry | None
    ignore: FrameGeometry | None
    device_prefix: str | None = None
    adc_bits: int = 16
    saturation_adu: int = 65535
    readout_s: float = 2.0
    max_cooling_delta_c: float | None = None
    match: ProfileMatch = field(default_factory=ProfileMatch)

    def geometry(self, mode: OverscanMode | str | None) -> FrameGeometry:
        """Geometry for ``mode`` (None = ignore). Raises :class:`ProfileError` if the camera has no include mode."""
        if mode is not None and OverscanMode(mode) is OverscanMode.INCLUDE:
            if self.include is None:
                raise ProfileError(f"camera profile {self.name}: no overscan (include) geometry")
            return self.include
        if self.ignore is None:
            raise ProfileError(f"camera profile {self.name}: whole frame; the geometry is the frame received")
        return self.ignore

    def sections_for(self, mode: OverscanMode | str | None, shape: tuple[int, int], binning: int = 1) -> FrameGeometry:
        """The geometry for a received frame of NumPy ``shape`` (rows, cols); :class:`ProfileMismatch` if it differs."""
        rows, cols = int(shape[0]), int(shape[1])
        include = mode is not None and OverscanMode(mode) is OverscanMode.INCLUDE
        if self.ignore is None and not include:
            whole = format_section(1, cols, 1, rows)
            return FrameGeometry(cols, rows, whole, whole)
        geo = self.geometry(mode).binned(max(1, int(binning)))
        if (cols, rows) != (geo.width_px, geo.height_px):
            mode_name = OverscanMode(mode).value if mode is not None else "ignore"
            raise ProfileMismatch(
                f"camera profile {self.name}: overscan {mode_name}, binning {binning} expects a "
                f"{geo.width_px}x{geo.height_px} frame (width x height) but the camera sent {cols}x{rows}; "
                "check OVERSCAN_MODE, binning/subframe, or pick the right profile (config/cameras/*.toml)")
        return geo


def _geometry(data: dict[str, Any], where: str) -> FrameGeometry:
    try:
        geo = FrameGeometry(
            width_px=int(data["width_px"]), height_px=int(data["height_px"]), datasec=str(data["datasec"]),
            trimsec=str(data.get("trimsec", data["datasec"])),
            biassec=str(data["biassec"]) if data.get("biassec") else None,
            obsec=str(data["obsec"]) if data.get("obsec") else None)
    except KeyError as exc:
        raise ProfileError(f"{where}: missing key {exc.args[0]}") from exc
    except (TypeError, ValueError) as exc:
        raise ProfileError(f"{where}: {exc}") from exc
    validate_geometry(geo, where)
    return geo


def validate_geometry(geo: FrameGeometry, where: str) -> None:
    """Every section lies inside the frame; BIASSEC does not overlap DATASEC. Raises :class:`ProfileError`."""
    for key, text in (("datasec", geo.datasec), ("trimsec", geo.trimsec), ("biassec", geo.biassec),
                      ("obsec", geo.obsec)):
        if text is None:
            continue
        _, x2, _, y2 = parse_section(text)
        if x2 > geo.width_px or y2 > geo.height_px:
            raise ProfileError(f"{where}: {key} {text} lies outside the {geo.width_px}x{geo.height_px} frame")
    if geo.biassec:
        bx1, bx2, by1, by2 = parse_section(geo.biassec)
        dx1, dx2, dy1, dy2 = parse_section(geo.datasec)
        if bx1 <= dx2 and dx1 <= bx2 and by1 <= dy2 and dy1 <= by2:
            raise ProfileError(f"{where}: biassec {geo.biassec} overlaps datasec {geo.datasec}")


def _match(data: dict[str, Any], where: str) -> ProfileMatch:
    detect = data.get("detect", {})
    if not isinstance(detect, dict):
        raise ProfileError(f"{where}: [detect] must be a table")
    try:
        sizes = tuple((int(w), int(h)) for w, h in detect.get("sizes", []))
        return ProfileMatch(tuple(str(d) for d in detect.get("drivers", [])),
                            tuple(str(m) for m in detect.get("models", [])), sizes)
    except (TypeError, ValueError) as exc:
        raise ProfileError(f"{where}: [detect] {exc} (sizes = [[width, height], ...])") from exc


def profile_from_dict(data: dict[str, Any], where: str = "profile") -> CameraProfile:
    """Build and validate a profile from parsed TOML."""
    whole_frame = bool(data.get("whole_frame", False))
    if "ignore" not in data and not whole_frame:
        raise ProfileError(f"{where}: missing [ignore] table (the frame geometry without overscan) "
                           "or whole_frame = true")
    include = _geometry(data["include"], f"{where} [include]") if "include" in data else None
    ignore = _geometry(data["ignore"], f"{where} [ignore]") if "ignore" in data else None
    try:
        return CameraProfile(
            name=str(data.get("name", where)), model=str(data.get("model", data.get("name", where))),
            include=include, ignore=ignore, device_prefix=data.get("device_prefix"),
            adc_bits=int(data.get("adc_bits", 16)), saturation_adu=int(data.get("saturation_adu", 65535)),
            readout_s=float(data.get("readout_s", 2.0)),
            max_cooling_delta_c=(float(data["max_cooling_delta_c"]) if "max_cooling_delta_c" in data else None),
            match=_match(data, where))
    except (TypeError, ValueError) as exc:
        raise ProfileError(f"{where}: {exc}") from exc


def _profiles_dir(directory: str | os.PathLike[str] | None) -> Path:
    return Path(directory or os.environ.get("DARKD_CAMERA_PROFILES") or PROFILES_DIR)


def load_profile(name: str, directory: str | os.PathLike[str] | None = None) -> CameraProfile:
    """Load ``<directory>/<name>.toml`` (default ``config/cameras``, or ``$DARKD_CAMERA_PROFILES``)."""
    base = _profiles_dir(directory)
    path = base / f"{name}.toml"
    if not path.is_file():
        known = sorted(p.stem for p in base.glob("*.toml")) if base.is_dir() else []
        raise ProfileError(f"camera profile {name!r} not found in {base} (known: {', '.join(known) or 'none'})")
    try:
        with path.open("rb") as fh:
            data = tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise ProfileError(f"{path}: invalid TOML ({exc})") from exc
    return profile_from_dict(data, str(path))


def _norm(text: str) -> str:
    return re.sub(r"[^a-z0-9]", "", text.lower())


def _sizes(profile: CameraProfile) -> set[tuple[int, int]]:
    sizes = set(profile.match.sizes)
    for geo in (profile.include, profile.ignore):
        if geo is not None:
            sizes.add((geo.width_px, geo.height_px))
    return sizes


def match_score(profile: CameraProfile, driver_exec: str | None, device: str, width_px: int, height_px: int) -> int:
    """How well ``profile`` fits the camera (0 = not at all): driver, model in the device name, and sensor size.

    A profile without a ``[detect]`` table is never detected (it can still be configured by name). The driver must
    be listed when the profile lists drivers and the driver is known; the model must appear in the device name; the
    size must be one the profile knows (a sensor size or the size of one of its geometries).
    """
    m = profile.match
    if not (m.drivers or m.models or m.sizes):
        return 0
    score = 0
    if m.drivers and driver_exec:
        if driver_exec not in m.drivers:
            return 0
        score += 1
    if m.models:
        name = _norm(device)
        if not any(_norm(model) in name for model in m.models):
            return 0
        score += 2
    sizes = _sizes(profile)
    if sizes:
        if (width_px, height_px) not in sizes:
            return 0
        score += 1
    return score


def generic_profile(device: str, bits_per_pixel: int = 16) -> CameraProfile:
    """The profile of a camera no profile matches: the whole frame is data, no overscan geometry."""
    bits = bits_per_pixel if bits_per_pixel in (8, 16, 32) else 16
    return CameraProfile(name=GENERIC_PROFILE, model=device, include=None, ignore=None, adc_bits=bits,
                         saturation_adu=2 ** min(bits, 16) - 1, readout_s=5.0)


def all_profiles(directory: str | os.PathLike[str] | None = None) -> list[CameraProfile]:
    """Every valid profile in the profiles directory (a broken file is logged and skipped, never fatal here)."""
    base = _profiles_dir(directory)
    profiles = []
    for path in sorted(base.glob("*.toml")) if base.is_dir() else []:
        try:
            profiles.append(load_profile(path.stem, base))
        except ProfileError as exc:
            log.warning("camera profile skipped: %s", exc)
    return profiles


def detect_profile(driver_exec: str | None, device: str, width_px: int, height_px: int,
                   pixel_size_um: float | None = None, bits_per_pixel: int = 16,
                   directory: str | os.PathLike[str] | None = None) -> tuple[CameraProfile, bool]:
    """The best-matching profile for a connected camera and True, or the generic profile and False (with a notice).

    ``pixel_size_um`` is accepted for the log line only: drivers report it too inconsistently to decide with it.
    """
    scored = [(match_score(p, driver_exec, device, width_px, height_px), p) for p in all_profiles(directory)]
    scored = [(score, p) for score, p in scored if score > 0]
    if scored:
        best = max(score for score, _ in scored)
        profile = sorted((p for score, p in scored if score == best), key=lambda p: p.name)[0]
        log.info("camera profile %s detected for %s (driver %s, %dx%d)", profile.name, device, driver_exec,
                 width_px, height_px)
        return profile, True
    log.warning("no camera profile matches %s (driver %s, %dx%d px, %s um): using the generic profile (whole frame, "
                "no overscan geometry); add one in config/cameras to record overscan geometry", device, driver_exec,
                width_px, height_px, pixel_size_um)
    return generic_profile(device, bits_per_pixel), False
