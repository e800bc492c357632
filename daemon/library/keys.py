"""The library key: every attribute that must be equal between a light and the master that calibrates it.

Modelled on the BANZAI calibration database: a master is found by explicit attributes, never by file name. Units are in
the field names (``exposure_s`` seconds, ``set_point_c`` degrees Celsius, ``width_px``/``height_px`` the frame size
as stored, after binning and overscan cropping). ``None`` in an optional field means "not applicable to this
camera"; two keys only match if the values are equal, ``None`` included.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

KINDS = ("bias", "dark", "flatdark", "flat")
AMP_GLOW_MODES = ("auto", "on", "off")
OVERSCAN_MODES = ("include", "ignore")

#: Exposures are compared to the microsecond, set points to 0.01 °C (the precision the key is normalised to).
EXPOSURE_DECIMALS = 6
SET_POINT_DECIMALS = 2


class InvalidKey(ValueError):
    """A library key with a missing or invalid attribute; the message names it."""


def _slug_part(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._+-]+", "-", text).strip("-") or "x"


def _fmt_number(value: float) -> str:
    text = f"{value:.6f}".rstrip("0").rstrip(".")
    return text if text not in ("", "-0") else "0"


@dataclass(frozen=True)
class LibraryKey:
    """Identity of a library entry (see the module docstring). Construct with keywords; values are validated."""

    camera: str
    kind: str
    exposure_s: float
    set_point_c: float
    gain: int
    offset: int
    binning: int = 1
    read_mode: int | None = None
    usb_traffic: int | None = None
    amp_glow: str | None = None
    overscan: str | None = None
    width_px: int = 0
    height_px: int = 0

    def __post_init__(self) -> None:
        def fix(name: str, value: object) -> None:
            object.__setattr__(self, name, value)

        if not isinstance(self.camera, str) or not self.camera.strip():
            raise InvalidKey("library key: camera must be a non-empty string")
        kind = str(self.kind).lower().replace("-", "").replace("_", "")
        if kind not in KINDS:
            raise InvalidKey(f"library key: kind {self.kind!r} is not one of {', '.join(KINDS)}")
        fix("kind", kind)
        try:
            exposure_s = round(float(self.exposure_s), EXPOSURE_DECIMALS)
            set_point_c = round(float(self.set_point_c), SET_POINT_DECIMALS) + 0.0  # +0.0: no negative zero
        except (TypeError, ValueError) as exc:
            raise InvalidKey(f"library key: exposure_s/set_point_c must be numbers ({exc})") from exc
        if exposure_s < 0 or exposure_s != exposure_s:
            raise InvalidKey(f"library key: exposure_s must be >= 0, got {self.exposure_s!r}")
        if kind == "bias":
            exposure_s = 0.0  # a bias is the shortest exposure the camera makes, whatever its header says
        fix("exposure_s", exposure_s)
        fix("set_point_c", set_point_c)
        for name in ("gain", "offset", "binning", "width_px", "height_px"):
            fix(name, _as_int(name, getattr(self, name)))
        for name in ("read_mode", "usb_traffic"):
            value = getattr(self, name)
            fix(name, None if value is None else _as_int(name, value))
        if self.binning < 1:
            raise InvalidKey(f"library key: binning must be >= 1, got {self.binning}")
        if self.width_px < 0 or self.height_px < 0:
            raise InvalidKey("library key: width_px/height_px must be >= 0")
        if self.amp_glow is not None:
            glow = str(self.amp_glow).lower()
            if glow not in AMP_GLOW_MODES:
                raise InvalidKey(f"library key: amp_glow {self.amp_glow!r} is not one of {', '.join(AMP_GLOW_MODES)}")
            fix("amp_glow", glow)
        if self.overscan is not None:
            mode = str(getattr(self.overscan, "value", self.overscan)).lower()
            if mode not in OVERSCAN_MODES:
                raise InvalidKey(f"library key: overscan {self.overscan!r} is not one of {', '.join(OVERSCAN_MODES)}")
            fix("overscan", mode)

    # --- conversions -------------------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-safe dict (the inverse of :meth:`from_dict`)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LibraryKey:
        """Build from a mapping; unknown names are refused, ``temperature_c`` is accepted for ``set_point_c``."""
        names = {f.name for f in fields(cls)}
        values = dict(data)
        if "set_point_c" not in values and "temperature_c" in values:
            values["set_point_c"] = values.pop("temperature_c")
        unknown = sorted(set(values) - names)
        if unknown:
            raise InvalidKey(f"library key: unknown attribute(s) {', '.join(unknown)}")
        missing = [n for n in ("camera", "kind", "exposure_s", "set_point_c", "gain", "offset") if n not in values]
        if missing:
            raise InvalidKey(f"library key: missing attribute(s) {', '.join(missing)}")
        return cls(**values)

    def with_kind(self, kind: str, exposure_s: float | None = None) -> LibraryKey:
        """The same sensor settings for another kind (e.g. the bias that goes with a dark: exposure 0)."""
        exp = (0.0 if kind == "bias" else self.exposure_s) if exposure_s is None else exposure_s
        return replace(self, kind=kind, exposure_s=exp)

    def matches(self, other: LibraryKey, *, ignore: tuple[str, ...] = ("set_point_c",)) -> list[str]:
        """Names of attributes (other than ``ignore``) whose values differ; empty list = equal."""
        names = [f.name for f in fields(self) if f.name not in ignore]
        return [name for name in names if getattr(self, name) != getattr(other, name)]

    @property
    def slug(self) -> str:
        """Stable, readable directory name, e.g. ``dark_300s_m10C_g120_o30_bin1_rm0_usb30_glow-auto_os-include_496x368``
        (``m`` = minus, ``p`` = plus for the set point).

        The camera is not part of the slug (it is the parent directory in the layout).
        """
        parts = [self.kind, f"{_fmt_number(self.exposure_s)}s"]
        temp = _fmt_number(self.set_point_c)
        parts.append(("m" + temp[1:] if temp.startswith("-") else "p" + temp) + "C")
        parts += [f"g{self.gain}", f"o{self.offset}", f"bin{self.binning}"]
        if self.read_mode is not None:
            parts.append(f"rm{self.read_mode}")
        if self.usb_traffic is not None:
            parts.append(f"usb{self.usb_traffic}")
        if self.amp_glow is not None:
            parts.append(f"glow-{self.amp_glow}")
        if self.overscan is not None:
            parts.append(f"os-{self.overscan}")
        parts.append(f"{self.width_px}x{self.height_px}")
        return _slug_part("_".join(parts))

    @property
    def camera_slug(self) -> str:
        """Directory-safe camera name."""
        return _slug_part(self.camera)

    def capture_settings(self) -> Any:
        """The :class:`drivers.camera.CaptureSettings` that reproduce this key on the camera."""
        from drivers.camera import CaptureSettings, OverscanMode

        return CaptureSettings(
            gain=self.gain, offset=self.offset, binning=self.binning, read_mode=self.read_mode,
            usb_traffic=self.usb_traffic, amp_glow=self.amp_glow,
            overscan=OverscanMode(self.overscan) if self.overscan is not None else None,
        )

    def describe(self) -> str:
        """One line for people: ``dark 300 s at -10 °C, gain 120, offset 30, bin 1 (496x368)``."""
        exposure = f" {_fmt_number(self.exposure_s)} s" if self.kind != "bias" else ""
        return (f"{self.kind}{exposure} at {_fmt_number(self.set_point_c)} °C, gain {self.gain}, offset {self.offset}, "
                f"bin {self.binning} ({self.width_px}x{self.height_px})")


def _as_int(name: str, value: object) -> int:
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError) as exc:
        raise InvalidKey(f"library key: {name} must be an integer, got {value!r}") from exc
    if number != int(number):
        raise InvalidKey(f"library key: {name} must be an integer, got {value!r}")
    return int(number)
