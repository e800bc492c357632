"""The library key: every attribute that must be equal between a light and the master that calibrates it.

This dataclass is the **one definition** of the key. Everything else is derived from its fields: the index columns
(:mod:`daemon.library.models`), the entry views (:class:`daemon.library.store.EntryView` extends the key), the REST
models (``KeyIn`` extends it; the ``Annotated`` bounds below are what the API validates), the CLI columns, the list
filters and the on-disk slug. Adding a key field is one field here plus an Alembic migration that adds its column.

Modelled on the BANZAI calibration database: a master is found by explicit attributes, never by file name. Units are in
the field names (``exposure_s`` seconds, ``set_point_c`` degrees Celsius, ``width_px``/``height_px`` the frame size
as stored, after binning and overscan cropping, ``bit_depth`` the ADC bit depth of the capture format). ``None`` in an
optional field means "not applicable to this camera / not known"; two keys only match if the values are equal,
``None`` included.

The daemon spells the kinds ``bias``, ``dark``, ``flatdark``, ``flat``; :mod:`calib` spells the flat-dark
``flat-dark``. :func:`calib_kind` is the one place that maps between the two vocabularies.
"""

from __future__ import annotations

import re
import typing
from collections.abc import Callable, Mapping
from dataclasses import MISSING, dataclass, field, fields
from typing import TYPE_CHECKING, Annotated, Any, Literal

from annotated_types import Ge, Le, Len

if TYPE_CHECKING:
    from drivers.camera import CaptureSettings

Kind = Literal["bias", "dark", "flatdark", "flat"]
AmpGlow = Literal["auto", "on", "off"]
Overscan = Literal["include", "ignore"]
KINDS: tuple[str, ...] = typing.get_args(Kind)
#: the most frames one library entry (one series) may ask for: plans, jobs, the API and capture all refuse more
MAX_FRAMES_PER_KEY = 10_000
AMP_GLOW_MODES: tuple[str, ...] = typing.get_args(AmpGlow)
OVERSCAN_MODES: tuple[str, ...] = typing.get_args(Overscan)
#: daemon kind → the name :mod:`calib.masters` uses for it (the one mapping between the two vocabularies)
CALIB_KINDS = {"bias": "bias", "dark": "dark", "flatdark": "flat-dark", "flat": "flat"}

#: Exposures are compared to the microsecond, set points to 0.01 °C (the precision the key is normalised to).
EXPOSURE_DECIMALS = 6
SET_POINT_DECIMALS = 2


class InvalidKey(ValueError):
    """A library key with a missing or invalid attribute; the message names it."""


@dataclass(frozen=True)
class KeyFieldSpec:
    """How one key field appears outside Python: index column, slug, CLI listing.

    ``sql_length``: width of a string column. ``slug``: the field's part of the directory name (``None``: not in the
    slug; optional fields whose value is ``None`` add nothing). ``column``: header of the ``darkd library`` table
    (``None``: not listed). ``tolerance``: filters and matching compare within this absolute difference.
    """

    sql_length: int | None = None
    slug: Callable[[Any], str] | None = None
    column: str | None = None
    tolerance: float | None = None


def _spec(**kwargs: Any) -> dict[str, KeyFieldSpec]:
    return {"key": KeyFieldSpec(**kwargs)}


def slug_part(text: str) -> str:
    """A directory-safe name: only ``A-Za-z0-9._+-``, never empty, never starting or ending with a dot (so never
    ``.`` or ``..``), at most 100 characters."""
    cleaned = re.sub(r"[^A-Za-z0-9._+-]+", "-", text)
    cleaned = re.sub(r"\.{2,}", ".", cleaned).strip("-.")[:100].strip("-.")
    return cleaned or "x"


def _fmt_number(value: float) -> str:
    text = f"{value:.6f}".rstrip("0").rstrip(".")
    return text if text not in ("", "-0") else "0"


def _fmt_set_point(value: float) -> str:
    temp = _fmt_number(value)
    return ("m" + temp[1:] if temp.startswith("-") else "p" + temp) + "C"


@dataclass(frozen=True)
class LibraryKey:
    """Identity of a library entry (see the module docstring). Construct with keywords; values are validated."""

    camera: Annotated[str, Len(1, 200)] = field(metadata=_spec(sql_length=255))
    kind: Kind = field(metadata=_spec(sql_length=16, slug=str, column="kind"))
    exposure_s: Annotated[float, Ge(0), Le(86_400)] = field(
        metadata=_spec(slug=lambda v: f"{_fmt_number(v)}s", column="exposure", tolerance=10.0 ** -EXPOSURE_DECIMALS))
    set_point_c: Annotated[float, Ge(-100), Le(60)] = field(
        metadata=_spec(slug=_fmt_set_point, column="set point"))
    #: ``None``: the camera has no such control (FLI has neither, Moravian no offset); required, so never just unknown
    gain: Annotated[int, Ge(0), Le(100_000)] | None = field(metadata=_spec(slug=lambda v: f"g{v}", column="gain"))
    offset: Annotated[int, Ge(0), Le(100_000)] | None = field(metadata=_spec(slug=lambda v: f"o{v}", column="offset"))
    binning: Annotated[int, Ge(1), Le(16)] = field(default=1, metadata=_spec(slug=lambda v: f"bin{v}", column="bin"))
    read_mode: Annotated[int, Ge(0), Le(1000)] | None = field(default=None, metadata=_spec(slug=lambda v: f"rm{v}"))
    usb_traffic: Annotated[int, Ge(0), Le(1000)] | None = field(default=None, metadata=_spec(slug=lambda v: f"usb{v}"))
    amp_glow: AmpGlow | None = field(default=None, metadata=_spec(sql_length=8, slug=lambda v: f"glow-{v}"))
    overscan: Overscan | None = field(default=None, metadata=_spec(sql_length=8, slug=lambda v: f"os-{v}"))
    width_px: Annotated[int, Ge(0), Le(100_000)] = field(default=0, metadata=_spec())
    height_px: Annotated[int, Ge(0), Le(100_000)] = field(default=0, metadata=_spec())
    bit_depth: Annotated[int, Ge(1), Le(32)] | None = field(default=None, metadata=_spec(slug=lambda v: f"{v}bit"))

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
        if set_point_c != set_point_c:
            raise InvalidKey("library key: set_point_c must be a number, got NaN")
        if kind == "bias":
            exposure_s = 0.0  # a bias is the shortest exposure the camera makes, whatever its header says
        fix("exposure_s", exposure_s)
        fix("set_point_c", set_point_c)
        for name in ("binning", "width_px", "height_px"):
            fix(name, _as_int(name, getattr(self, name)))
        for name in ("gain", "offset", "read_mode", "usb_traffic", "bit_depth"):
            value = getattr(self, name)
            fix(name, None if value is None else _as_int(name, value))
        if self.binning < 1:
            raise InvalidKey(f"library key: binning must be >= 1, got {self.binning}")
        if self.width_px < 0 or self.height_px < 0:
            raise InvalidKey("library key: width_px/height_px must be >= 0")
        if self.bit_depth is not None and not 1 <= self.bit_depth <= 32:
            raise InvalidKey(f"library key: bit_depth must be 1..32, got {self.bit_depth}")
        fix("amp_glow", _choice("amp_glow", self.amp_glow, AMP_GLOW_MODES))
        fix("overscan", _choice("overscan", getattr(self.overscan, "value", self.overscan), OVERSCAN_MODES))

    # --- conversions -------------------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-safe dict of the key fields (the inverse of :meth:`from_dict`)."""
        return {name: getattr(self, name) for name in KEY_FIELDS}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LibraryKey:
        """Build from a mapping of key fields; unknown and missing names are refused with their names."""
        values = dict(data)
        unknown = sorted(set(values) - set(KEY_FIELDS))
        if unknown:
            raise InvalidKey(f"library key: unknown attribute(s) {', '.join(unknown)}")
        missing = [n for n in REQUIRED_FIELDS if n not in values]
        if missing:
            raise InvalidKey(f"library key: missing attribute(s) {', '.join(missing)}")
        return LibraryKey(**values)

    def key_only(self) -> LibraryKey:
        """This key as a plain :class:`LibraryKey` (drops what a subclass such as an entry view adds)."""
        return self if type(self) is LibraryKey else LibraryKey(**{n: getattr(self, n) for n in KEY_FIELDS})

    def with_kind(self, kind: str, exposure_s: float | None = None) -> LibraryKey:
        """The same sensor settings for another kind (e.g. the bias that goes with a dark: exposure 0)."""
        exp = (0.0 if kind == "bias" else self.exposure_s) if exposure_s is None else exposure_s
        return LibraryKey(**{**self.key_only().to_dict(), "kind": kind, "exposure_s": exp})

    def matches(self, other: LibraryKey, *, ignore: tuple[str, ...] = ("set_point_c",)) -> list[str]:
        """Names of key attributes (other than ``ignore``) whose values differ; empty list = equal."""
        return [name for name in KEY_FIELDS if name not in ignore and getattr(self, name) != getattr(other, name)]

    @property
    def slug(self) -> str:
        """Stable, readable directory name, e.g. ``dark_300s_m10C_g120_o30_bin1_rm0_usb30_glow-auto_os-include_496x368``
        (``m`` = minus, ``p`` = plus for the set point), derived from the fields' ``slug`` parts in field order, then
        the geometry. The camera is not part of the slug (it is the parent directory in the layout).
        """
        parts = [spec.slug(getattr(self, name)) for name, spec in KEY_SPECS.items()
                 if spec.slug is not None and getattr(self, name) is not None]
        parts.append(f"{self.width_px}x{self.height_px}")
        return slug_part("_".join(parts))

    @property
    def camera_slug(self) -> str:
        """Directory-safe camera name (never ``.``/``..``, never containing ``/``)."""
        return slug_part(self.camera)

    @property
    def calib_kind(self) -> str:
        """The kind as :mod:`calib.masters` spells it (see :func:`calib_kind`)."""
        return calib_kind(self.kind)

    @property
    def is_partial(self) -> bool:
        """True when the frame geometry is unknown (a key typed by hand: completed from the camera before capture)."""
        return self.width_px == 0 or self.height_px == 0

    def capture_settings(self) -> CaptureSettings:
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


#: The key fields in definition order, their specs, and the ones without a default.
KEY_SPECS: dict[str, KeyFieldSpec] = {f.name: f.metadata["key"] for f in fields(LibraryKey)}
KEY_FIELDS: tuple[str, ...] = tuple(KEY_SPECS)
REQUIRED_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(LibraryKey)
                                         if f.default is MISSING and f.default_factory is MISSING)


def key_types() -> dict[str, Any]:
    """The resolved type of each key field (``Annotated`` bounds included), e.g. for deriving columns."""
    hints = typing.get_type_hints(LibraryKey, include_extras=True)
    return {name: hints[name] for name in KEY_FIELDS}


def calib_kind(kind: str) -> str:
    """The daemon's kind name → :mod:`calib`'s (``flatdark`` → ``flat-dark``); the one mapping between them."""
    return CALIB_KINDS[kind]


def _choice(name: str, value: object, allowed: tuple[str, ...]) -> str | None:
    if value is None:
        return None
    text = str(value).lower()
    if text not in allowed:
        raise InvalidKey(f"library key: {name} {value!r} is not one of {', '.join(allowed)}")
    return text


def _as_int(name: str, value: object) -> int:
    if not isinstance(value, int | float | str):
        raise InvalidKey(f"library key: {name} must be an integer, got {value!r}")
    try:
        number = float(value)
    except (TypeError, ValueError) as exc:
        raise InvalidKey(f"library key: {name} must be an integer, got {value!r}") from exc
    if number != number or number in (float("inf"), float("-inf")) or number != int(number):
        raise InvalidKey(f"library key: {name} must be an integer, got {value!r}")
    return int(number)
