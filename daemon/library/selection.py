"""The usable-master rule: which master may calibrate a light. This file is its one home: selection (``darkd
calibrate``, the calibrate job), planning (``ready`` or not), review (the master a new one would replace), the build
job (the light-leak expectation) and the status coverage all ask :func:`refusal` / :func:`select_master` through
:class:`daemon.library.catalog.LibraryIndex`. Read it top to bottom.

For a light with key ``K`` (its ``kind`` set to the kind of master wanted, e.g. ``K.with_kind("dark")``), a candidate is
acceptable when

1. it is ``ready`` with a master file, and not held for review (``bad`` and ``stale`` entries never qualify);
2. every key attribute equals the light's: camera, kind, exposure, gain, offset, binning, read mode, USB traffic,
   amp-glow mode, overscan mode, geometry (the set point is compared by rule 3 instead);
3. its temperature (measured mean of its frames, else its set point) is within ``tolerance_c`` (default 0.5 °C,
   inclusive) of the light's (measured ``CCD-TEMP`` when given, else the light's set point);
4. the light's time lies inside the master's validity window: ``|light_time − master_created| ≤ validity_days`` and
   not after ``valid_until``;
5. its master file is intact: the file's SHA-256 equals the one recorded in the index (checked last, on use, by the
   ``file_problem`` callback the catalog passes: :class:`daemon.library.integrity.FileCheck`, cached by path, size
   and modification time).

Among acceptable candidates the one nearest in time to the light wins (ties: the newest entry). A dark of another
exposure is never substituted unless ``allow_scaled`` is set, and then the result carries the scaled-dark warning.
The approach follows BANZAI's calibration database (explicit attributes, validity window, bad flag).

The light's key is what its header states, completed by the one rule for unstated fields
(:class:`daemon.light_rule.LightRule`; :func:`select_for_light` applies it). A refusal by rule 2 names **every**
differing field with both values and what would make it match: the header keyword (first spelling of
:data:`daemon.light_headers.ALIASES`) or the camera's config value ``[lights."<camera>"] <field>`` that the rule uses
when the header does not state the field (:func:`key_difference`); a plan's missing key names the same for the
nearest ready entry (:func:`nearest_difference`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from daemon.library.keys import LibraryKey
from daemon.library.store import EntryView

if TYPE_CHECKING:  # light headers (astropy) are read by the callers that select for a light file
    from daemon.light_headers import LightInfo
    from daemon.light_rule import LightRule

DEFAULT_TOLERANCE_C = 0.5
DEFAULT_VALIDITY_DAYS = 90.0
SCALED_DARK_WARNING = (
    "scaled dark: no master dark with exposure {light_s:g} s; using the {master_s:g} s master scaled by k = {k:.4g}. "
    "Dark scaling is invalid for cameras whose dark mean falls below the bias (optical-black clamping) or whose dark "
    "signal grows non-linearly with exposure (amp glow); expect residual glow and a wrong pedestal."
)
_EPS = 1e-9

#: ``file_problem(entry)``: why the entry's master file is not the recorded one, or ``None`` (rule 5)
MasterCheck = Callable[[EntryView], "str | None"]


class NoMatchingMaster(LookupError):
    """No master passes the selection rule; the message lists why each candidate was refused."""


@dataclass(frozen=True)
class Selection:
    """Outcome of :func:`select_master`: the chosen entry (or ``None``) and why the others were refused."""

    light_key: LibraryKey
    entry: EntryView | None
    scaled: bool = False
    scale_factor: float = 1.0
    warnings: list[str] = field(default_factory=list)
    refused: dict[int, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.entry is not None

    def require(self) -> EntryView:
        """The chosen entry, or :class:`NoMatchingMaster` with a readable explanation."""
        if self.entry is not None:
            return self.entry
        why = "; ".join(f"#{i}: {r}" for i, r in sorted(self.refused.items())) or "the library has no candidates"
        raise NoMatchingMaster(f"no ready master for {self.light_key.describe()} ({why})")


def refusal(light_key: LibraryKey, entry: EntryView, *, light_temperature_c: float | None, light_time: datetime,
            tolerance_c: float, validity_days: float, ignore_exposure: bool = False,
            file_problem: MasterCheck | None = None, expired_ok: bool = False) -> str | None:
    """Why ``entry`` cannot calibrate the light (rules 1–5 of the module docstring), or ``None`` if it can.

    ``expired_ok`` asks for the last master that *was* usable (review's previous master, the build job's light-leak
    expectation): a ``stale`` status and rule 4 (validity window) are then accepted; every other rule holds.
    """
    if entry.status not in (("ready", "stale") if expired_ok else ("ready",)):
        return f"status {entry.status}"
    if not entry.master:
        return "no master file"
    if entry.review:
        return f"held for review ({entry.review_reason or 'large change from the previous master'})"
    ignore = ("set_point_c", "exposure_s") if ignore_exposure else ("set_point_c",)
    differing = light_key.matches(entry.key, ignore=ignore)
    if differing:
        return key_difference(light_key, entry.key, differing)
    light_c = light_key.set_point_c if light_temperature_c is None else light_temperature_c
    master_c = entry.temperature_mean_c if entry.temperature_mean_c is not None else entry.set_point_c
    if abs(master_c - light_c) > tolerance_c + _EPS:
        return f"temperature {master_c:.2f} °C is more than {tolerance_c:g} °C from the light's {light_c:.2f} °C"
    if not expired_ok:
        created = entry.master_created_utc or entry.created_utc
        if abs((light_time - created).total_seconds()) > validity_days * 86400.0 + _EPS:
            return f"outside the {validity_days:g}-day validity window (master made {created.isoformat()})"
        if entry.valid_until_utc is not None and light_time > entry.valid_until_utc:
            return f"validity ended {entry.valid_until_utc.isoformat()}"
    return file_problem(entry) if file_problem is not None else None


#: key fields a camera's ``[lights."<camera>"]`` config table can set for lights that do not state them
CONFIGURABLE = ("gain", "offset", "read_mode", "usb_traffic", "amp_glow", "overscan", "bit_depth")
#: where the fields no config can set come from
_HEADER_ONLY = {"camera": "INSTRUME (or the camera given to the command)", "kind": None,
                "width_px": "NAXIS1 (the stored frame's width)", "height_px": "NAXIS2 (the stored frame's height)"}


def key_difference(light_key: LibraryKey, master_key: LibraryKey, differing: Iterable[str]) -> str:
    """Every differing field with both values and what would make it match: the header keyword the light could
    carry, or the config value (``[lights."<camera>"]``) darkd uses when the header does not state the field."""
    from daemon.light_headers import ALIASES  # the header keyword spellings have their one home there

    parts = []
    for name in differing:
        light_v, master_v = getattr(light_key, name), getattr(master_key, name)
        hints: list[str] = []
        if name in _HEADER_ONLY:
            if _HEADER_ONLY[name]:
                hints.append(f"header {_HEADER_ONLY[name]} = {_fits_value(master_v)}")
        elif name in ALIASES and master_v is not None:
            hints.append(f"header {ALIASES[name][0]} = {_fits_value(master_v)}")
        if name in CONFIGURABLE:
            if master_v is not None:
                hints.append(f'config [lights."{light_key.camera}"] {name} = {_toml_value(master_v)} (used when the '
                             "header does not state it)")
            else:
                hints.append(f"a light key without {name} (the header, config and driver record all leave it unset)")
        hint = f": would match with {' or '.join(hints)}" if hints else ""
        parts.append(f"{name} differs (light {light_v!r}, master {master_v!r}){hint}")
    return "; ".join(parts)


def nearest_difference(light_key: LibraryKey, entries: Iterable[EntryView]) -> str | None:
    """For a key no ready master serves: how it differs from the nearest ready entry of its camera and kind (fewest
    differing fields, the set point included), as :func:`key_difference` words it; ``None`` without such entries."""
    best: tuple[list[str], EntryView] | None = None
    for entry in entries:
        if entry.status != "ready" or entry.camera != light_key.camera or entry.kind != light_key.kind:
            continue
        differing = light_key.matches(entry.key, ignore=())
        if differing and (best is None or len(differing) < len(best[0])):
            best = (differing, entry)
    if best is None:
        return None
    return f"nearest ready entry #{best[1].id}: {key_difference(light_key, best[1].key, best[0])}"


def _fits_value(value: object) -> str:
    return f"'{value}'" if isinstance(value, str) else f"{value:g}" if isinstance(value, float) else str(value)


def _toml_value(value: object) -> str:
    return f'"{value}"' if isinstance(value, str) else f"{value:g}" if isinstance(value, float) else str(value)


def select_master(light_key: LibraryKey, candidates: Iterable[EntryView], *,
                  tolerance_c: float = DEFAULT_TOLERANCE_C, validity_days: float = DEFAULT_VALIDITY_DAYS,
                  light_temperature_c: float | None = None, light_time: datetime | None = None,
                  allow_scaled: bool = False, now: datetime | None = None,
                  file_problem: MasterCheck | None = None, expired_ok: bool = False) -> Selection:
    """Choose the master for a light by the rule of the module docstring (no I/O but ``file_problem``).

    ``light_time`` (UTC; default ``now``, default the current time) is the light's DATE-OBS.
    """
    when = light_time or now or datetime.now(UTC)
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    pool = list(candidates)
    refused: dict[int, str] = {}
    accepted: list[EntryView] = []
    for entry in pool:
        reason = refusal(light_key, entry, light_temperature_c=light_temperature_c, light_time=when,
                         tolerance_c=tolerance_c, validity_days=validity_days, file_problem=file_problem,
                         expired_ok=expired_ok)
        if reason is None:
            accepted.append(entry)
        else:
            refused[entry.id] = reason
    if accepted:
        return Selection(light_key, _nearest_in_time(accepted, when), refused=refused)
    if allow_scaled and light_key.kind == "dark" and light_key.exposure_s > 0:
        scalable = [e for e in pool if e.exposure_s > 0 and refusal(
            light_key, e, light_temperature_c=light_temperature_c, light_time=when, tolerance_c=tolerance_c,
            validity_days=validity_days, ignore_exposure=True, file_problem=file_problem) is None]
        if scalable:
            # the nearest exposure (log ratio) wins, then the nearest in time
            best_ratio = min(abs(_log_ratio(light_key.exposure_s, e.exposure_s)) for e in scalable)
            closest = [e for e in scalable if abs(_log_ratio(light_key.exposure_s, e.exposure_s)) <= best_ratio + _EPS]
            chosen = _nearest_in_time(closest, when)
            k = light_key.exposure_s / chosen.exposure_s
            warning = SCALED_DARK_WARNING.format(light_s=light_key.exposure_s, master_s=chosen.exposure_s, k=k)
            return Selection(light_key, chosen, scaled=True, scale_factor=k, warnings=[warning], refused=refused)
    return Selection(light_key, None, refused=refused)


def _nearest_in_time(entries: list[EntryView], when: datetime) -> EntryView:
    def distance(e: EntryView) -> tuple[timedelta, int]:
        created = e.master_created_utc or e.created_utc
        return abs(when - created), -e.id

    return min(entries, key=distance)


def _log_ratio(a: float, b: float) -> float:
    return math.log(a / b)


class MasterSelector(Protocol):
    """What :func:`select_for_light` needs: the catalog's :meth:`~daemon.library.catalog.LibraryIndex.select_master`."""

    def select_master(self, light_key: LibraryKey, *, light_temperature_c: float | None = None,
                      light_time: datetime | None = None, allow_scaled: bool = False) -> Selection: ...


def select_for_light(index: MasterSelector, light: str | Path | LightInfo, *, kind: str = "dark",
                     camera: str | None = None, rule: LightRule | None = None,
                     allow_scaled: bool = False) -> Selection:
    """Read a light's header (or take its :class:`LightInfo`, already resolved) and select its master from ``index``.

    The fields the header does not state are filled by ``rule`` (:class:`daemon.light_rule.LightRule`; default: the
    rule with default settings over ``index``'s recorded driver states and set points). The light's measured
    ``CCD-TEMP`` and ``DATE-OBS`` are used for rules 3 and 4 when present.
    """
    from daemon.light_headers import LightInfo
    from daemon.light_rule import LightRule
    from daemon.settings import Settings

    if rule is None:
        rule = LightRule(Settings(), index if hasattr(index, "camera_defaults") else None)  # type: ignore[arg-type]
    info = light if isinstance(light, LightInfo) else rule.light_info(light, camera=camera, kind=kind)
    key = info.key if info.key.kind == kind else info.key.with_kind(kind)
    return index.select_master(key, light_temperature_c=info.temperature_c, light_time=info.time_utc,
                               allow_scaled=allow_scaled)
