"""Plan a dark library: which masters the lights need, what the library already has, and the order to build them.

``plan_from_lights(dir)`` reads the lights' headers (any of the spellings in :mod:`daemon.light_headers`), groups
them by library key, adds the bias that goes with each sensor setting, and compares every key with the library:
``ready`` (nothing to do), ``in-progress`` (resume: only the missing frames), ``stale`` (rebuild) or ``missing``.
``plan_from_keys`` does the same for an explicit list (TOML/JSON, see :func:`load_keys_file`).

Ordering minimises set-point changes: all work at one set point before the next, **coldest reachable first** (cooling
is slow and fights the cooler's limit; warming is passive and fast), and within a set point bias, flat-darks, then
darks by increasing exposure. A set point colder than ``ambient_c − max_cooling_delta_c`` is *unreachable*: its items
are reported and left out of the work list.

Time estimate (documented assumptions, all in ``Plan.assumptions``):
  * capture: ``frames × (exposure_s + readout_s)``, ``readout_s`` default 2.0 s (full-frame USB download);
  * cooling: ``|ΔT| / rate`` with ``rate = cooling.ramp_c_per_min`` if configured else 3 °C/min — a conservative
    thermo-electric cooler figure (fast near ambient, slow near its limit) — from ambient (or the first set point if
    ambient is unknown) to each set point in turn, plus ``cooling.hold_s`` of stability at each set point;
  * warm-up at the end (if ``cooling.warm_up_at_end``): to ``warm_up_target_c`` at ``warm_up_rate_c_per_min``.

Disk budget (``Plan.bytes_needed``, ``PlanItem.bytes_needed``): ``frames_needed × frame_bytes + master_bytes`` per item
to build, with ``frame_bytes = W·H·2 + headers`` (16-bit frames) and ``master_bytes = W·H·(4 + 2 + 2) + headers``
(float32 master, two uint16 rejection-count images), each rounded up to whole 2880-byte FITS blocks; a key typed
without a frame size counts at :data:`DEFAULT_FRAME_PX` (the reference QHY163M's full frame). The job engine does not
start a capture job without this room plus ``library.min_free_bytes``.
"""

from __future__ import annotations

import json
import logging
import math
import os
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from calib.frames import FrameError
from daemon.library.integrity import damaged_master
from daemon.library.keys import InvalidKey, LibraryKey
from daemon.library.selection import nearest_difference
from daemon.light_headers import HeaderKeyError, LightInfo
from daemon.light_rule import LightRule
from daemon.settings import Settings

if TYPE_CHECKING:
    from daemon.library.catalog import LibraryIndex
    from daemon.library.store import EntryView

log = logging.getLogger(__name__)

DEFAULT_COOLING_RATE_C_PER_MIN = 3.0
DEFAULT_READOUT_S = 2.0
DEFAULT_MAX_COOLING_DELTA_C = 38.0
FITS_SUFFIXES = (".fits", ".fit", ".fts", ".fits.fz", ".fz")
KIND_ORDER = {"bias": 0, "flatdark": 1, "dark": 2, "flat": 3}
FITS_BLOCK_BYTES = 2880
FITS_HEADER_BYTES = 4 * FITS_BLOCK_BYTES  # per HDU: darkd's frame and master headers fit in 4 blocks
DEFAULT_FRAME_PX = 4656 * 3522  # a key without a frame size: the reference camera's full frame (QHY163M)


def _blocks(n_bytes: int) -> int:
    return -(-n_bytes // FITS_BLOCK_BYTES) * FITS_BLOCK_BYTES


def frame_bytes(key: LibraryKey) -> int:
    """Bytes of one 16-bit frame of ``key`` on disk (data + header, whole FITS blocks)."""
    px = key.width_px * key.height_px or DEFAULT_FRAME_PX
    return _blocks(px * 2) + FITS_HEADER_BYTES


def master_bytes(key: LibraryKey) -> int:
    """Bytes of ``key``'s master on disk: float32 image + two uint16 rejection-count images, with their headers."""
    px = key.width_px * key.height_px or DEFAULT_FRAME_PX
    return _blocks(px * 4) + 2 * _blocks(px * 2) + 3 * FITS_HEADER_BYTES


class PlanError(ValueError):
    """The plan cannot be made (no lights, unreadable key file); the message says why."""


@dataclass
class PlanItem:
    """One key to build (or already built). ``frames_needed`` counts only what is still to capture."""

    key: LibraryKey
    status: str  # missing | stale | in-progress | ready
    frames_target: int
    frames_have: int = 0
    entry_id: int | None = None
    lights: int = 0
    reachable: bool = True
    reason: str | None = None
    order: int | None = None

    @property
    def frames_needed(self) -> int:
        return 0 if self.status == "ready" else max(self.frames_target - self.frames_have, 0)

    @property
    def to_build(self) -> bool:
        return self.status != "ready" and self.reachable

    @property
    def bytes_needed(self) -> int:
        """Disk room this item still needs: its missing frames and its master (0 when there is nothing to build)."""
        if not self.to_build:
            return 0
        return self.frames_needed * frame_bytes(self.key) + master_bytes(self.key)

    def capture_s(self, readout_s: float) -> float:
        return self.frames_needed * (self.key.exposure_s + readout_s)

    def to_dict(self) -> dict[str, Any]:
        return {"key": self.key.to_dict(), "slug": self.key.slug, "description": self.key.describe(),
                "kind": self.key.kind, "exposure_s": self.key.exposure_s, "set_point_c": self.key.set_point_c,
                "status": self.status, "frames_target": self.frames_target, "frames_have": self.frames_have,
                "frames_needed": self.frames_needed, "entry_id": self.entry_id, "lights": self.lights,
                "reachable": self.reachable, "reason": self.reason, "order": self.order,
                "bytes_needed": self.bytes_needed}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PlanItem:
        return cls(key=LibraryKey.from_dict(data["key"]), status=str(data["status"]),
                   frames_target=int(data["frames_target"]), frames_have=int(data.get("frames_have", 0)),
                   entry_id=data.get("entry_id"), lights=int(data.get("lights", 0)),
                   reachable=bool(data.get("reachable", True)), reason=data.get("reason"), order=data.get("order"))


@dataclass
class Plan:
    """The outcome of planning: items in build order, estimate, assumptions, problems."""

    items: list[PlanItem]
    estimate_s: dict[str, float]
    assumptions: dict[str, Any]
    set_points_c: list[float]
    unreachable_c: list[float]
    lights: int = 0
    errors: list[dict[str, str]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    created_utc: datetime = field(default_factory=lambda: datetime.now(UTC))

    def work(self) -> list[PlanItem]:
        """Items still to build, in build order (unreachable and ready ones excluded)."""
        return sorted((i for i in self.items if i.to_build), key=lambda i: i.order if i.order is not None else 1 << 30)

    @property
    def total_frames(self) -> int:
        return sum(i.frames_needed for i in self.work())

    @property
    def bytes_needed(self) -> int:
        """Disk room the work of this plan needs (frames still to capture + masters), see the module docstring."""
        return sum(i.bytes_needed for i in self.work())

    def to_dict(self) -> dict[str, Any]:
        return {
            "bytes_needed": self.bytes_needed,
            "created_utc": self.created_utc.isoformat().replace("+00:00", "Z"),
            "items": [i.to_dict() for i in self.items],
            "work": [i.key.slug for i in self.work()],
            "set_points_c": self.set_points_c,
            "unreachable_c": self.unreachable_c,
            "total_frames": self.total_frames,
            "estimate_s": self.estimate_s,
            "assumptions": self.assumptions,
            "lights": self.lights,
            "errors": self.errors,
            "warnings": self.warnings,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Plan:
        """Rebuild a plan stored as :meth:`to_dict` (e.g. in a job's params)."""
        created = data.get("created_utc")
        return cls(items=[PlanItem.from_dict(i) for i in data.get("items", [])],
                   estimate_s=dict(data.get("estimate_s", {})), assumptions=dict(data.get("assumptions", {})),
                   set_points_c=list(data.get("set_points_c", [])), unreachable_c=list(data.get("unreachable_c", [])),
                   lights=int(data.get("lights", 0)), errors=list(data.get("errors", [])),
                   warnings=list(data.get("warnings", [])),
                   created_utc=datetime.fromisoformat(created.replace("Z", "+00:00")) if created else datetime.now(UTC))

    def to_text(self) -> str:
        """A table for people."""
        head = f"{'#':>3} {'kind':8} {'exposure':>9} {'set point':>9} {'status':12} {'frames':>11} {'lights':>6}  key"
        lines = [head]
        for item in sorted(self.items, key=lambda i: (i.order is None, i.order or 0, i.key.set_point_c)):
            order = "-" if item.order is None else str(item.order)
            status = item.status if item.reachable else "UNREACHABLE"
            frames = f"{item.frames_needed}/{item.frames_target}"
            lines.append(f"{order:>3} {item.key.kind:8} {item.key.exposure_s:>8g}s {item.key.set_point_c:>7g}°C "
                         f"{status:12} {frames:>11} {item.lights:>6}  {item.key.slug}")
            if item.reason and item.reachable:
                lines.append(f"      why not ready: {item.reason}")
        est = self.estimate_s
        lines.append(f"set points (build order): {', '.join(f'{t:g} °C' for t in self.set_points_c) or 'none'}")
        if self.unreachable_c:
            lines.append(f"UNREACHABLE at ambient {self.assumptions.get('ambient_c')} °C "
                         f"(max cooling {self.assumptions.get('max_cooling_delta_c')} °C): "
                         f"{', '.join(f'{t:g} °C' for t in self.unreachable_c)}")
        lines.append(f"frames to capture: {self.total_frames}; estimated time {_hms(est.get('total_s', 0.0))} "
                     f"(capture {_hms(est.get('capture_s', 0.0))}, cooling {_hms(est.get('cooling_s', 0.0))}, "
                     f"warm-up {_hms(est.get('warm_up_s', 0.0))})")
        lines += [f"warning: {w}" for w in self.warnings]
        lines += [f"error: {e['path']}: {e['error']}" for e in self.errors]
        return "\n".join(lines)


def _hms(seconds: float) -> str:
    s = round(seconds)
    return f"{s // 3600}h{(s % 3600) // 60:02d}m{s % 60:02d}s"


def frames_for(kind: str, settings: Settings) -> int:
    """Frames per master: ``library.frames_bias`` for bias, ``library.frames_dark`` for darks/flat-darks/flats."""
    return settings.library.frames_bias if kind == "bias" else settings.library.frames_dark


def library_status(key: LibraryKey, index: LibraryIndex | None, now: datetime) -> tuple[str, EntryView | None]:
    """Status of ``key`` in the library: ready (a master a light with this key could use now, by the one
    usable-master rule, its file checked), in-progress (also an entry marked bad only because its master changed on
    disk: the build re-integrates its frames), stale, or missing."""
    if index is None:
        return "missing", None
    usable = index.usable_master(key, when=now)
    if usable is not None:
        return "ready", usable
    same = [e for e in index.entries(camera=key.camera, kind=key.kind) if e.slug == key.slug]
    in_progress = [e for e in same if e.status in ("planned", "capturing", "integrating")]
    if in_progress:
        return "in-progress", in_progress[-1]
    damaged = [e for e in same if e.status == "bad" and damaged_master(e.note) and e.frames > 0]
    if damaged:  # its master changed on disk, its frames did not: re-integrated (and completed), never recaptured
        return "in-progress", damaged[-1]
    if any(e.status == "stale" or (e.status == "ready" and e.valid_until_utc is not None
                                   and e.valid_until_utc <= now) for e in same):
        return "stale", None
    return "missing", None


def find_lights(lights_dir: str | os.PathLike[str], *, recursive: bool = True) -> list[Path]:
    """FITS files under ``lights_dir`` (sorted); hidden and partial (``.part``/``.tmp``) files are skipped."""
    root = Path(lights_dir)
    if not root.is_dir():
        raise PlanError(f"lights directory not found: {root}")
    pattern = "**/*" if recursive else "*"
    found = [p for p in root.glob(pattern) if p.is_file() and not p.name.startswith(".")
             and p.name.lower().endswith(FITS_SUFFIXES)]
    return sorted(found)


def plan_from_lights(lights_dir: str | os.PathLike[str], index: LibraryIndex | None, settings: Settings, *,
                     camera: str | None = None, overrides: Mapping[str, Any] | None = None,
                     include_bias: bool = True, ambient_c: float | None = None,
                     max_cooling_delta_c: float = DEFAULT_MAX_COOLING_DELTA_C, readout_s: float = DEFAULT_READOUT_S,
                     now: datetime | None = None) -> Plan:
    """Plan the darks (and biases) the lights in ``lights_dir`` need. Unreadable lights are listed in ``errors``.

    The fields a light's header does not state are filled by the one rule, :class:`daemon.light_rule.LightRule`
    (config ``[lights."<camera>"]``, the frame size, the driver state recorded in ``index``; a measured temperature
    goes to the nearest library set point); ``overrides`` are explicit values of this command (``darkd plan
    --default NAME=VALUE``), used when the header does not state the field.
    """
    try:
        rule = LightRule(settings, index, overrides=overrides)
    except ValueError as exc:
        raise PlanError(str(exc)) from exc
    infos: list[LightInfo] = []
    errors: list[dict[str, str]] = []
    skipped: dict[str, int] = {}
    paths = find_lights(lights_dir)
    for path in paths:
        try:
            info = rule.light_info(path, camera=camera)
        except (HeaderKeyError, FrameError) as exc:
            errors.append({"path": str(path), "error": str(exc).removeprefix(f"{path}: ")})
            continue
        if info.image_type != "light":
            skipped[info.image_type] = skipped.get(info.image_type, 0) + 1
            continue
        infos.append(info)
    if not infos:
        detail = f"; {len(errors)} unreadable (first: {errors[0]['path']}: {errors[0]['error']})" if errors else ""
        raise PlanError(f"no light frames found in {lights_dir} ({len(paths)} FITS files{detail})")
    counts: dict[LibraryKey, int] = {}
    for info in infos:
        counts[info.key] = counts.get(info.key, 0) + 1
    if include_bias:
        for key in list(counts):
            bias = key.with_kind("bias")
            counts.setdefault(bias, 0)
    warnings = [f"skipped {n} {kind} frame(s) (not lights)" for kind, n in sorted(skipped.items())]
    return _plan(counts, index, settings, ambient_c=ambient_c, max_cooling_delta_c=max_cooling_delta_c,
                 readout_s=readout_s, now=now, lights=len(infos), errors=errors, warnings=warnings)


def plan_from_keys(keys: Iterable[LibraryKey | Mapping[str, Any]], index: LibraryIndex | None, settings: Settings, *,
                   ambient_c: float | None = None, max_cooling_delta_c: float = DEFAULT_MAX_COOLING_DELTA_C,
                   readout_s: float = DEFAULT_READOUT_S, now: datetime | None = None) -> Plan:
    """Plan an explicit list of keys (mappings may carry ``frames`` to override the per-kind frame count)."""
    counts: dict[LibraryKey, int] = {}
    frames: dict[LibraryKey, int] = {}
    for n, raw in enumerate(keys, start=1):
        if isinstance(raw, LibraryKey):
            key = raw
        else:
            data = dict(raw)
            wanted = data.pop("frames", None)
            try:
                key = LibraryKey.from_dict(data)
            except InvalidKey as exc:
                raise PlanError(f"key #{n}: {exc}") from exc
            if wanted is not None:
                if int(wanted) < 1:
                    raise PlanError(f"key #{n}: frames must be >= 1, got {wanted}")
                frames[key] = int(wanted)
        counts.setdefault(key, 0)
    if not counts:
        raise PlanError("the key list is empty")
    return _plan(counts, index, settings, ambient_c=ambient_c, max_cooling_delta_c=max_cooling_delta_c,
                 readout_s=readout_s, now=now, frames=frames)


def load_keys_file(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Read keys from TOML (``[defaults]`` + ``[[keys]]``) or JSON (a list, or ``{"defaults": {}, "keys": []}``).

    Each key inherits the ``defaults`` table (e.g. camera, gain, offset) and overrides it.
    """
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise PlanError(f"{p}: cannot read key file ({exc.strerror})") from exc
    try:
        data: Any = json.loads(text) if p.suffix.lower() == ".json" else tomllib.loads(text)
    except (json.JSONDecodeError, tomllib.TOMLDecodeError) as exc:
        raise PlanError(f"{p}: not valid {'JSON' if p.suffix.lower() == '.json' else 'TOML'} ({exc})") from exc
    if isinstance(data, list):
        data = {"keys": data}
    if not isinstance(data, dict) or not isinstance(data.get("keys"), list):
        raise PlanError(f"{p}: expected a list of keys (JSON list, or a 'keys' array)")
    defaults = data.get("defaults", {})
    if not isinstance(defaults, dict):
        raise PlanError(f"{p}: 'defaults' must be a table")
    out = []
    for n, item in enumerate(data["keys"], start=1):
        if not isinstance(item, dict):
            raise PlanError(f"{p}: key #{n} is not a table/object")
        out.append({**defaults, **item})
    return out


def _plan(counts: Mapping[LibraryKey, int], index: LibraryIndex | None, settings: Settings, *,
          ambient_c: float | None, max_cooling_delta_c: float, readout_s: float, now: datetime | None,
          lights: int = 0, errors: list[dict[str, str]] | None = None, warnings: list[str] | None = None,
          frames: Mapping[LibraryKey, int] | None = None) -> Plan:
    now = now or datetime.now(UTC)
    warnings = list(warnings or [])
    limit_c = None if ambient_c is None else ambient_c - max_cooling_delta_c
    if ambient_c is None:
        warnings.append("ambient temperature unknown: reachability of set points not checked")
    items: list[PlanItem] = []
    for key, n_lights in counts.items():
        status, entry = library_status(key, index, now)
        target = (frames or {}).get(key, frames_for(key.kind, settings))
        item = PlanItem(key=key, status=status, frames_target=target, lights=n_lights)
        if entry is not None:
            item.entry_id = entry.id
            if status == "in-progress":
                item.frames_target = max(target, entry.frames_target)
                item.frames_have = entry.frames
        if status == "missing" and index is not None:  # say what would make an existing master serve the lights
            item.reason = nearest_difference(key, index.entries(camera=key.camera, kind=key.kind, status="ready"))
        if limit_c is not None and key.set_point_c < limit_c - 1e-9:
            item.reachable = False
            item.reason = (f"set point {key.set_point_c:g} °C is more than {max_cooling_delta_c:g} °C below the "
                           f"ambient {ambient_c:g} °C (coldest reachable {limit_c:g} °C)")
        items.append(item)

    work = sorted((i for i in items if i.to_build),
                  key=lambda i: (i.key.set_point_c, i.key.camera, KIND_ORDER.get(i.key.kind, 9), i.key.exposure_s,
                                 i.key.gain, i.key.offset, i.key.binning))
    for order, item in enumerate(work, start=1):
        item.order = order
    set_points = _unique([i.key.set_point_c for i in work])
    unreachable = sorted({i.key.set_point_c for i in items if not i.reachable and i.status != "ready"})

    rate = settings.cooling.ramp_c_per_min or DEFAULT_COOLING_RATE_C_PER_MIN
    capture_s = sum(i.capture_s(readout_s) for i in work)
    cooling_s = 0.0
    current = ambient_c if ambient_c is not None else (set_points[0] if set_points else None)
    for set_point in set_points:
        if current is not None:
            cooling_s += abs(current - set_point) / rate * 60.0
        cooling_s += settings.cooling.hold_s
        current = set_point
    warm_up_s = 0.0
    if set_points and settings.cooling.warm_up_at_end and current is not None:
        warm_up_s = max(settings.cooling.warm_up_target_c - current, 0.0) / settings.cooling.warm_up_rate_c_per_min * 60
    estimate = {"capture_s": round(capture_s, 1), "cooling_s": round(cooling_s, 1), "warm_up_s": round(warm_up_s, 1),
                "total_s": round(capture_s + cooling_s + warm_up_s, 1)}
    assumptions = {"cooling_rate_c_per_min": rate, "readout_s": readout_s, "hold_s": settings.cooling.hold_s,
                   "ambient_c": ambient_c, "max_cooling_delta_c": max_cooling_delta_c,
                   "warm_up_at_end": settings.cooling.warm_up_at_end,
                   "warm_up_rate_c_per_min": settings.cooling.warm_up_rate_c_per_min,
                   "frames_bias": settings.library.frames_bias, "frames_dark": settings.library.frames_dark,
                   "order": "one set point at a time, coldest reachable first; bias, flat-darks, darks by exposure"}
    for t in unreachable:
        warnings.append(f"set point {t:g} °C is unreachable at ambient {ambient_c:g} °C "
                        f"(cooler reaches at most {max_cooling_delta_c:g} °C below ambient)")
    return Plan(items=items, estimate_s=estimate, assumptions=assumptions, set_points_c=set_points,
                unreachable_c=unreachable, lights=lights, errors=list(errors or []), warnings=warnings,
                created_utc=now)


def _unique(values: Sequence[float]) -> list[float]:
    seen: list[float] = []
    for v in values:
        if not any(math.isclose(v, s, abs_tol=1e-9) for s in seen):
            seen.append(v)
    return seen

