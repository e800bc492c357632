"""A camera's health over months: every master's statistics as a time series, their trends and the warnings.

When a master is set (:func:`daemon.jobs.integrate_job.build_entry_master`) :func:`record_master_history` measures it
and adds rows to the index table ``master_history`` (migration 0006); ``darkd camera health --backfill`` does the same
for every master already in the library. Quantities (units in the names):

* bias masters: ``bias_level_adu`` (clipped mean over DATASEC), ``overscan_level_adu`` (mean over BIASSEC, when the
  master has one), ``read_noise_adu`` (pair/alternating-sum method on the entry's first ``measure_frames`` biases),
* dark and flat-dark masters: ``hot_pixels`` (HOT + WARM of the master's defect map; Poisson √N), dark current by
  Buil's pair method on two (``measure_frames``) darks of the entry and biases of the key's bias entry
  (``dark_current_e_per_s`` with a gain from ``[health] gain_e_per_adu`` or ``EGAIN``, else
  ``dark_current_adu2_per_s``), ``amp_glow_adu`` (strongest corner/edge box of master dark − master bias),
* every master: ``cooler_power_pct`` (mean ``COOLPWR`` of its frames), with the ambient temperature when the frames
  carry one (``AMBTEMP``/``AMB-TEMP``; darkd's own frames do not: then the cooler power is tracked but not judged).

Uncertainties: a level's is the frame-to-frame spread of the frames' levels / √n_frames; the others come from their
measurement. Trends and steps: :mod:`calib.measure.trend`. Limits: ``[health]`` (:class:`HealthSettings`).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import select

from calib.measure.trend import latest_step, linear_trend, window_change
from daemon.library.catalog import LibraryIndex
from daemon.library.models import MasterHistory
from daemon.library.store import EntryView, iso_utc
from daemon.settings import HealthSettings

log = logging.getLogger(__name__)

AMBIENT_KEYS = ("AMBTEMP", "AMB-TEMP", "AMBIENT")
UNITS = {"bias_level_adu": "adu", "overscan_level_adu": "adu", "read_noise_adu": "adu", "hot_pixels": "pixels",
         "dark_current_e_per_s": "e-/s/pixel", "dark_current_adu2_per_s": "adu2/s/pixel", "amp_glow_adu": "adu",
         "cooler_power_pct": "%"}
DAY_S = 86_400.0


@dataclass(frozen=True)
class Point:
    """One measured quantity of one master."""

    quantity: str
    value: float
    uncertainty: float | None
    method: str
    ambient_c: float | None = None


@dataclass(frozen=True)
class HistoryPoint:
    camera: str
    entry_id: int
    kind: str
    slug: str
    series: str
    set_point_c: float | None
    exposure_s: float | None
    created_utc: datetime
    quantity: str
    value: float
    uncertainty: float | None
    unit: str
    ambient_c: float | None


# --------------------------------------------------------------------------------------------------- measuring a master
def _frames(index: LibraryIndex, entry_id: int, n: int) -> list[Path]:
    return [Path(f.path) for f in index.frames_of(entry_id, accepted_only=True) if Path(f.path).is_file()][:n]


def _even(paths: list[Path]) -> list[Path]:
    return paths[: len(paths) - len(paths) % 2]


def _level(data: np.ndarray, header: Any, key: str) -> float | None:
    """Clipped mean of ``data`` over the header section ``key`` (DATASEC: whole frame when absent)."""
    from calib.measure.stats import clipped_stats, header_section

    sec = header_section(header, key)
    if sec is None:
        if key != "DATASEC":
            return None
        cut = data
    else:
        if sec.y2 > data.shape[0] or sec.x2 > data.shape[1]:
            return None
        cut = data[sec.slices]
    return float(clipped_stats(np.asarray(cut[::2, ::2], dtype=np.float64)).mean)


def _levels(master: Path, frames: Sequence[Path], n_frames: int, key: str) -> Point | None:
    from calib.frames import read_frame

    m = read_frame(master)
    value = _level(m.data, m.header, key)
    if value is None:
        return None
    per_frame = [v for v in (_level(f.data, f.header, key) for f in map(read_frame, frames)) if v is not None]
    u = float(np.std(per_frame, ddof=1)) / math.sqrt(max(n_frames, 1)) if len(per_frame) >= 2 else None
    name = "bias_level_adu" if key == "DATASEC" else "overscan_level_adu"
    return Point(name, value, u, f"clipped mean over {key}; uncertainty: spread of {len(per_frame)} frames")


def _ambient_and_power(frames: Sequence[Path]) -> Point | None:
    from calib.frames import read_header

    powers, ambients = [], []
    for path in frames:
        h = read_header(path)
        if isinstance(h.get("COOLPWR"), int | float):
            powers.append(float(h["COOLPWR"]))
        amb = next((h[k] for k in AMBIENT_KEYS if isinstance(h.get(k), int | float)), None)
        if amb is not None:
            ambients.append(float(amb))
    if not powers:
        return None
    u = float(np.std(powers, ddof=1)) / math.sqrt(len(powers)) if len(powers) >= 2 else None
    ambient = float(np.mean(ambients)) if ambients else None
    return Point("cooler_power_pct", float(np.mean(powers)), u, f"mean COOLPWR of {len(powers)} frames", ambient)


def _gain(settings: HealthSettings, camera: str, frame: Path) -> float | None:
    from calib.frames import read_header

    if camera in settings.gain_e_per_adu:
        return settings.gain_e_per_adu[camera]
    value = read_header(frame).get("EGAIN")
    return float(value) if isinstance(value, int | float) and value > 0 else None


def measure_master(index: LibraryIndex, entry: EntryView, settings: HealthSettings) -> list[Point]:
    """The health quantities of ``entry``'s master (see the module docstring). A quantity that cannot be measured is
    left out (logged), never an error."""
    from calib.measure.amp_glow import measure_amp_glow
    from calib.measure.dark_current import measure_dark_current
    from calib.measure.read_noise import measure_read_noise

    if not entry.master or not Path(entry.master).is_file():
        return []
    stats = entry.master_stats or {}
    n_frames = int(stats.get("n_frames") or entry.frames or 1)
    frames = _frames(index, entry.id, max(settings.measure_frames, 20))
    sample = frames[: settings.measure_frames]
    master = Path(entry.master)
    points: list[Point] = []

    def attempt(what: str, fn: Any) -> None:
        try:
            got = fn()
        except Exception as exc:  # one quantity failing must not cost the others (or the master)
            log.warning("health: entry %s: %s not measured (%s)", entry.id, what, exc)
            return
        if got is not None:
            points.append(got)

    if entry.kind == "bias":
        attempt("bias level", lambda: _levels(master, sample, n_frames, "DATASEC"))
        attempt("overscan level", lambda: _levels(master, sample, n_frames, "BIASSEC"))

        def ron() -> Point | None:
            pair = _even(sample)
            if len(pair) < 2:
                return None
            r = measure_read_noise(pair)
            return Point("read_noise_adu", r["read_noise_adu"], r["read_noise_adu_uncertainty"],
                         f"{r['method']} of {r['n_frames']} biases")
        attempt("read noise", ron)
    else:
        def hot() -> Point:
            if "defects_hot" in stats:
                n = int(stats.get("defects_hot") or 0) + int(stats.get("defects_warm") or 0)
                method = "HOT + WARM pixels of the defect map"
            else:
                n, method = int(stats.get("hot_pixels") or 0), "pixels above median + k sigma (no defect map)"
            return Point("hot_pixels", float(n), math.sqrt(max(n, 1)), method)
        attempt("hot pixels", hot)
        bias = index.usable_master(entry.with_kind("bias"), expired_ok=True)

        def dark_current() -> Point | None:
            darks = _even(sample)[:2]
            biases = _even(_frames(index, bias.id, settings.measure_frames))[:2] if bias is not None else []
            if len(darks) < 2 or len(biases) < 2:
                return None
            gain = _gain(settings, entry.camera, darks[0])
            r = measure_dark_current(darks, biases, gain or 1.0)
            name = "dark_current_e_per_s" if gain else "dark_current_adu2_per_s"
            return Point(name, r["dark_current_e_per_s"], r["dark_current_uncertainty_e_per_s"],
                         "Buil pair method, 2 darks and 2 biases of the library" + ("" if gain else ", gain 1"))
        attempt("dark current", dark_current)

        def glow() -> Point | None:
            if bias is None or not bias.master or not Path(bias.master).is_file():
                return None
            r = measure_amp_glow([master], [bias.master], find_hot_pixels=False)
            noise = r["per_exposure"][-1]["amplitude_noise_adu"]
            return Point("amp_glow_adu", r["glow_amplitude_adu"], noise, f"box {r['location']}: master dark - bias")
        attempt("amp glow", glow)
    attempt("cooler power", lambda: _ambient_and_power(frames))
    return points


def _series(entry: EntryView, quantity: str) -> str:
    return f"set point {entry.set_point_c:g} C" if quantity == "cooler_power_pct" else entry.slug


def record_master_history(index: LibraryIndex, entry: EntryView, settings: HealthSettings) -> int:
    """Measure ``entry``'s master and add its rows to ``master_history`` (once per master: existing rows are kept).
    Returns the number of rows added."""
    if not settings.enabled or entry.master_created_utc is None:
        return 0
    created = entry.master_created_utc
    with index.read_session() as s:
        have = set(s.scalars(select(MasterHistory.quantity).where(MasterHistory.entry_id == entry.id,
                                                                   MasterHistory.created_utc == created)).all())
    if have:
        return 0
    points = measure_master(index, entry, settings)
    with index.write_session() as s:
        for p in points:
            s.add(MasterHistory(camera=entry.camera, entry_id=entry.id, kind=entry.kind, slug=entry.slug,
                                series=_series(entry, p.quantity), set_point_c=entry.set_point_c,
                                exposure_s=entry.exposure_s, created_utc=created, quantity=p.quantity,
                                value=float(p.value),
                                uncertainty=None if p.uncertainty is None else float(p.uncertainty),
                                unit=UNITS.get(p.quantity, ""), ambient_c=p.ambient_c, method=p.method))
    log.info("health: entry %s: %d quantities recorded", entry.id, len(points))
    return len(points)


def backfill(index: LibraryIndex, settings: HealthSettings, camera: str | None = None) -> dict[str, int]:
    """Record every existing master (ready, stale; not bad) that has no history yet: ``{"masters", "rows"}``."""
    masters = rows = 0
    for entry in index.entries(camera=camera, status=["ready", "stale"]):
        added = record_master_history(index, entry, settings)
        masters += 1 if added else 0
        rows += added
    return {"masters": masters, "rows": rows}


def load_history(index: LibraryIndex, camera: str | None = None) -> list[HistoryPoint]:
    """Every history row (of ``camera``), oldest first."""
    query = select(MasterHistory).order_by(MasterHistory.created_utc, MasterHistory.id)
    if camera is not None:
        query = query.where(MasterHistory.camera == camera)
    with index.read_session() as s:
        return [HistoryPoint(camera=r.camera, entry_id=r.entry_id, kind=r.kind, slug=r.slug, series=r.series,
                             set_point_c=r.set_point_c, exposure_s=r.exposure_s, created_utc=r.created_utc,
                             quantity=r.quantity, value=r.value, uncertainty=r.uncertainty, unit=r.unit,
                             ambient_c=r.ambient_c) for r in s.scalars(query).all()]


# ------------------------------------------------------------------------------------------------- trends and warnings
@dataclass
class HealthWarning:
    camera: str
    quantity: str
    series: str
    message: str
    suggestion: str
    entry_id: int
    created_utc: str | None


@dataclass
class SeriesReport:
    camera: str
    quantity: str
    series: str
    unit: str
    points: list[dict[str, Any]]
    trend: dict[str, Any] | None
    notes: list[str] = field(default_factory=list)


def _days(points: Sequence[HistoryPoint]) -> list[float]:
    return [p.created_utc.timestamp() / DAY_S for p in points]


def _trend(points: Sequence[HistoryPoint], window_days: float) -> dict[str, Any] | None:
    days = _days(points)
    if len(points) < 2 or max(days) - min(days) <= 0:
        return None
    t = linear_trend(days, [p.value for p in points], [p.uncertainty for p in points])
    change, d_change = t.change_over(window_days)
    return {"slope_per_day": t.slope_per_day, "slope_uncertainty_per_day": t.slope_uncertainty_per_day
            if math.isfinite(t.slope_uncertainty_per_day) else None, "significance_sigma": t.significance,
            "change_per_window": change, "change_per_window_uncertainty": d_change if math.isfinite(d_change) else None,
            "window_days": window_days, "n": t.n, "reduced_chi2": t.reduced_chi2}


def _judge(points: Sequence[HistoryPoint], s: HealthSettings) -> tuple[str | None, list[str]]:
    """A warning message for the latest point of one series (or ``None``) and notes."""
    q, last = points[-1].quantity, points[-1]
    if len(points) < 2:
        return None, []
    values, errs = [p.value for p in points], [p.uncertainty for p in points]
    if q == "hot_pixels":
        inside = [p for p in points if (last.created_utc - p.created_utc).total_seconds() <= s.window_days * DAY_S]
        pair = window_change(_days(inside), [p.value for p in inside], s.window_days)
        if pair is None:
            return None, []
        ref, now = pair
        rise = (now - ref) / max(ref, 1.0)
        if rise > s.hot_pixels_rise_fraction and now - ref >= s.hot_pixels_min_new:
            return (f"hot pixels rose from {ref:.0f} to {now:.0f} ({100 * rise:+.1f} %, limit "
                    f"{100 * s.hot_pixels_rise_fraction:+.0f} % in {s.window_days:g} days)"), []
        return None, []
    if q == "cooler_power_pct":
        if last.ambient_c is None:
            return None, ["ambient temperature not recorded by the frames (no AMBTEMP): cooler power is tracked, "
                          "not judged"]
        same = [p for p in points[:-1] if p.ambient_c is not None and abs(p.ambient_c - last.ambient_c)
                <= s.ambient_match_c]
        if not same:
            return None, [f"no earlier value at ambient {last.ambient_c:.1f} ± {s.ambient_match_c:g} C"]
        ref = float(np.mean([p.value for p in same]))
        rise = (last.value - ref) / ref if ref > 0 else 0.0
        if rise > s.cooler_power_rise_fraction:
            return (f"cooler power to hold the set point rose from {ref:.1f} % to {last.value:.1f} % "
                    f"({100 * rise:+.1f} %) at ambient {last.ambient_c:.1f} C: a failing TEC or lost desiccant?"), []
        return None, []
    step = latest_step(values, errs)
    if q in ("bias_level_adu", "overscan_level_adu"):
        if abs(step.z) > s.level_sigma:
            return (f"{q.removesuffix('_adu').replace('_', ' ')} moved from {step.reference:.2f} to {step.latest:.2f} "
                    f"ADU ({step.z:+.1f} sigma, limit {s.level_sigma:g})"), []
        return None, []
    limits = {"read_noise_adu": s.read_noise_rise_fraction, "dark_current_e_per_s": s.dark_current_rise_fraction,
              "dark_current_adu2_per_s": s.dark_current_rise_fraction}
    if q in limits and step.reference > 0:
        rise = step.difference / step.reference
        if step.z > s.level_sigma and rise > limits[q]:
            return (f"{q} rose from {step.reference:.4g} to {step.latest:.4g} ({100 * rise:+.1f} %, "
                    f"{step.z:.1f} sigma)"), []
    return None, []


def health_report(history: Iterable[HistoryPoint], settings: HealthSettings, *,
                  now: datetime | None = None) -> dict[str, Any]:
    """Series (points, trend) and warnings of every camera in ``history``; JSON-ready."""
    groups: dict[tuple[str, str, str], list[HistoryPoint]] = {}
    for p in history:
        groups.setdefault((p.camera, p.quantity, p.series), []).append(p)
    series: list[SeriesReport] = []
    warnings: list[HealthWarning] = []
    for (camera, quantity, name), points in sorted(groups.items()):
        points.sort(key=lambda p: p.created_utc)
        message, notes = _judge(points, settings)
        try:
            trend = _trend(points, settings.window_days)
        except ValueError as exc:
            trend, notes = None, [*notes, f"no trend: {exc}"]
        series.append(SeriesReport(camera, quantity, name, points[-1].unit, [
            {"created_utc": iso_utc(p.created_utc), "value": p.value, "uncertainty": p.uncertainty,
             "entry_id": p.entry_id, "ambient_c": p.ambient_c} for p in points], trend, notes))
        if message is not None:
            last = points[-1]
            what = "darks" if last.kind != "bias" else "biases"
            where = (f"at set point {last.set_point_c:g} C" if quantity == "cooler_power_pct"
                     else f"of key {last.slug}")
            warnings.append(HealthWarning(camera, quantity, name, f"camera health: {camera}: {message}",
                                     f"rebuild the {what} {where} (and the masters of {camera} built before "
                                     f"{iso_utc(last.created_utc)})", last.entry_id, iso_utc(last.created_utc)))
    return {"generated_utc": iso_utc(now or datetime.now(UTC)), "window_days": settings.window_days,
            "cameras": sorted({c for c, _, _ in groups}), "series": [asdict(s) for s in series],
            "warnings": [asdict(w) for w in warnings]}


def camera_health(index: LibraryIndex, settings: HealthSettings, camera: str | None = None) -> dict[str, Any]:
    """:func:`health_report` of the index's history (of ``camera``)."""
    return health_report(load_history(index, camera), settings)


def warnings_for_entry(index: LibraryIndex, entry: EntryView, settings: HealthSettings) -> list[str]:
    """The warnings (with their suggestion) raised by ``entry``'s latest master: for the job that built it."""
    report = camera_health(index, settings, entry.camera)
    return [f"{w['message']}; {w['suggestion']}" for w in report["warnings"] if w["entry_id"] == entry.id
            and w["created_utc"] == iso_utc(entry.master_created_utc)]
