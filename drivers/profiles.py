"""Per-camera frame geometry (``config/cameras/<name>.toml``): where the overscan, optical-black and data areas are.

The QHY INDI driver writes no overscan geometry into its FITS, so the profile is the source of ``BIASSEC``, ``DATASEC``
and ``TRIMSEC`` (IRAF convention: ``[x1:x2,y1:y2]``, 1-based inclusive, x first). Geometry is given for binning 1 and
both ``OVERSCAN_MODE`` settings; :meth:`CameraProfile.sections_for` picks the mode, scales for binning, and checks the
result against the frame actually received — a disagreement raises :class:`ProfileMismatch` with both sizes.
"""

from __future__ import annotations

import os
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from drivers.camera import OverscanMode

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
class CameraProfile:
    """One camera model: geometry per overscan mode plus limits used by capture and quality checks."""

    name: str
    model: str
    include: FrameGeometry | None
    ignore: FrameGeometry
    device_prefix: str | None = None
    adc_bits: int = 16
    saturation_adu: int = 65535
    readout_s: float = 2.0
    max_cooling_delta_c: float | None = None

    def geometry(self, mode: OverscanMode | str | None) -> FrameGeometry:
        """Geometry for ``mode`` (None = ignore). Raises :class:`ProfileError` if the camera has no include mode."""
        if mode is not None and OverscanMode(mode) is OverscanMode.INCLUDE:
            if self.include is None:
                raise ProfileError(f"camera profile {self.name}: no overscan (include) geometry")
            return self.include
        return self.ignore

    def sections_for(self, mode: OverscanMode | str | None, shape: tuple[int, int], binning: int = 1) -> FrameGeometry:
        """The geometry for a received frame of NumPy ``shape`` (rows, cols); :class:`ProfileMismatch` if it differs."""
        geo = self.geometry(mode).binned(max(1, int(binning)))
        rows, cols = int(shape[0]), int(shape[1])
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


def profile_from_dict(data: dict[str, Any], where: str = "profile") -> CameraProfile:
    """Build and validate a profile from parsed TOML."""
    if "ignore" not in data:
        raise ProfileError(f"{where}: missing [ignore] table (the frame geometry without overscan)")
    include = _geometry(data["include"], f"{where} [include]") if "include" in data else None
    ignore = _geometry(data["ignore"], f"{where} [ignore]")
    try:
        return CameraProfile(
            name=str(data.get("name", where)), model=str(data.get("model", data.get("name", where))),
            include=include, ignore=ignore, device_prefix=data.get("device_prefix"),
            adc_bits=int(data.get("adc_bits", 16)), saturation_adu=int(data.get("saturation_adu", 65535)),
            readout_s=float(data.get("readout_s", 2.0)),
            max_cooling_delta_c=(float(data["max_cooling_delta_c"]) if "max_cooling_delta_c" in data else None))
    except (TypeError, ValueError) as exc:
        raise ProfileError(f"{where}: {exc}") from exc


def load_profile(name: str, directory: str | os.PathLike[str] | None = None) -> CameraProfile:
    """Load ``<directory>/<name>.toml`` (default ``config/cameras``, or ``$DARKD_CAMERA_PROFILES``)."""
    base = Path(directory or os.environ.get("DARKD_CAMERA_PROFILES") or PROFILES_DIR)
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
