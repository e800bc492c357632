"""Prometheus metrics of one daemon (one :class:`DaemonMetrics` per runtime, with its own registry — no globals).

Names follow Prometheus conventions with units in them: ``darkd_sensor_temperature_celsius{camera}``,
``darkd_set_point_celsius{camera}``, ``darkd_cooler_power_percent{camera}``, ``darkd_camera_connected{camera}``,
``darkd_camera_stable{camera}``, ``darkd_frames_captured_total{camera,result="accepted"|"rejected"}``,
``darkd_job_duration_seconds{kind,state}`` (wall time from start to end of a finished job),
``darkd_library_entries{status}`` (read from the index at scrape time),
``darkd_http_request_duration_seconds{method,route,status}`` (server-side latency of the API),
``darkd_master_integrity_failures_total`` (masters found changed on disk when used, then marked bad),
``darkd_disk_low_total`` (times a job was held or paused because the library disk was short of room),
``darkd_camera_health_value{camera,quantity,series}`` (latest value of each health series),
``darkd_camera_health_slope_per_day{…}`` and ``…_slope_uncertainty_per_day{…}`` (its trend),
``darkd_camera_health_warning{camera,quantity,series}`` (1 while beyond its ``[health]`` limit) — :mod:`daemon.health`,
read at scrape time.

Per-camera series carry a ``camera`` label (the INDI device name; ``unknown`` before the camera first reported it),
so one Grafana board shows every rig of a fleet whose daemons share one index (each daemon is scraped on its own).
A daemon with several ``[[cameras]]`` has one series per camera, labelled with the camera's id (the name its capture
jobs record, so its frame counters carry the same label; :meth:`DaemonMetrics.observe_camera`).
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable, Iterator, Mapping
from datetime import datetime
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from daemon.jobs.states import FINAL_STATES
from drivers.camera import CameraState

log = logging.getLogger(__name__)

#: the ``camera`` label before the camera has reported its device name (and of a frame event without a camera)
UNKNOWN_CAMERA = "unknown"

HTTP_BUCKETS_S = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0)
JOB_DURATION_BUCKETS_S = (1, 5, 15, 60, 300, 900, 1800, 3600, 7200, 14_400, 28_800, 57_600)


class _LibraryCollector(Collector):
    """``darkd_library_entries{status}`` from ``count_by_status()`` at scrape time."""

    def __init__(self, count_by_status: Callable[[], Mapping[str, int]]) -> None:
        self._count = count_by_status

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily("darkd_library_entries", "Library entries by status", labels=["status"])
        try:
            counts = self._count()
        except Exception:  # a scrape must not fail because the database is briefly unavailable
            log.exception("library counts unavailable for metrics")
            counts = {}
        for status, n in sorted(counts.items()):
            family.add_metric([status], float(n))
        yield family

    def describe(self) -> Iterator[GaugeMetricFamily]:
        yield GaugeMetricFamily("darkd_library_entries", "Library entries by status", labels=["status"])


class _HealthCollector(Collector):
    """The camera-health gauges from a :func:`daemon.health.health_report` dict, read at scrape time."""

    NAMES = ("darkd_camera_health_value", "darkd_camera_health_slope_per_day",
             "darkd_camera_health_slope_uncertainty_per_day", "darkd_camera_health_warning")

    def __init__(self, report: Callable[[], Mapping[str, Any]]) -> None:
        self._report = report

    def _families(self) -> list[GaugeMetricFamily]:
        labels = ["camera", "quantity", "series"]
        return [GaugeMetricFamily(self.NAMES[0], "Latest value of a camera-health series (unit in the quantity)",
                                  labels=labels),
                GaugeMetricFamily(self.NAMES[1], "Least-squares slope of a camera-health series per day",
                                  labels=labels),
                GaugeMetricFamily(self.NAMES[2], "1 sigma error of that slope per day", labels=labels),
                GaugeMetricFamily(self.NAMES[3], "1 while a camera-health series is beyond its [health] limit",
                                  labels=labels)]

    def collect(self) -> Iterator[GaugeMetricFamily]:
        value, slope, slope_err, warning = families = self._families()
        try:
            report = self._report()
        except Exception:  # a scrape must not fail because the database is briefly unavailable
            log.exception("camera health unavailable for metrics")
            report = {}
        warned = {(w["camera"], w["quantity"], w["series"]) for w in report.get("warnings", [])}
        for s in report.get("series", []):
            labels = [s["camera"], s["quantity"], s["series"]]
            value.add_metric(labels, float(s["points"][-1]["value"]))
            trend = s.get("trend") or {}
            if trend.get("slope_per_day") is not None:
                slope.add_metric(labels, float(trend["slope_per_day"]))
            if trend.get("slope_uncertainty_per_day") is not None:
                slope_err.add_metric(labels, float(trend["slope_uncertainty_per_day"]))
            warning.add_metric(labels, 1.0 if tuple(labels) in warned else 0.0)
        yield from families

    def describe(self) -> Iterator[GaugeMetricFamily]:
        yield from self._families()


class DaemonMetrics:
    """The daemon's metrics. Thread-safe (prometheus_client metrics are)."""

    def __init__(self, count_by_status: Callable[[], Mapping[str, int]] | None = None,
                 job_times: Callable[[int], tuple[str, datetime | None, datetime | None] | None] | None = None,
                 health_report: Callable[[], Mapping[str, Any]] | None = None) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        cam = ["camera"]
        self.temperature_c = Gauge("darkd_sensor_temperature_celsius", "Sensor temperature (°C)", cam, registry=r)
        self.set_point_c = Gauge("darkd_set_point_celsius", "Cooler set point (°C; NaN when none)", cam, registry=r)
        self.cooler_power_pct = Gauge("darkd_cooler_power_percent", "Cooler power (%)", cam, registry=r)
        self.camera_connected = Gauge("darkd_camera_connected", "1 when the camera is connected", cam, registry=r)
        self.camera_stable = Gauge("darkd_camera_stable", "1 when the sensor is stable at its set point", cam,
                                   registry=r)
        self.frames = Counter("darkd_frames_captured", "Frames captured, by camera and quality check result",
                              ["camera", "result"], registry=r)
        self.job_duration_s = Histogram("darkd_job_duration_seconds", "Wall time of finished jobs (s)",
                                        ["kind", "state"], buckets=JOB_DURATION_BUCKETS_S, registry=r)
        self.jobs_finished = Counter("darkd_jobs_finished", "Jobs that reached a final state", ["kind", "state"],
                                     registry=r)
        self.warnings = Counter("darkd_warnings", "Warnings published by jobs", registry=r)
        self.http_s = Histogram("darkd_http_request_duration_seconds",
                                "Time from a request's arrival to its response headers (s), by route",
                                ["method", "route", "status"], buckets=HTTP_BUCKETS_S, registry=r)
        self.integrity_failures = Counter("darkd_master_integrity_failures",
                                          "Masters that failed their integrity check on use (marked bad)", registry=r)
        self.disk_low = Counter("darkd_disk_low", "Jobs held or paused for lack of room on the library disk",
                                registry=r)
        self.events = Counter("darkd_events", "Events published on the bus, by type", ["type"], registry=r)
        self._labels: dict[str, str] = {}  # "": the device label of a single-camera daemon's state gauges
        self._unknown_dropped = False
        self._cameras_seen: set[str] = set()
        for gauge in (self.temperature_c, self.set_point_c, self.cooler_power_pct):
            gauge.labels(camera=UNKNOWN_CAMERA).set(float("nan"))  # unknown until the camera monitor's first reading
        if count_by_status is not None:
            r.register(_LibraryCollector(count_by_status))
        if health_report is not None:
            r.register(_HealthCollector(health_report))
        self._job_times = job_times
        self._seen_jobs: set[int] = set()
        self._lock = threading.Lock()

    def _state_gauges(self) -> tuple[Gauge, ...]:
        return (self.temperature_c, self.set_point_c, self.cooler_power_pct, self.camera_connected,
                self.camera_stable)

    def _seen(self, camera: str) -> None:
        """Start a camera's frame counters at 0 (both results), so a rate query finds them before the first frame."""
        with self._lock:
            if camera in self._cameras_seen:
                return
            self._cameras_seen.add(camera)
        for result in ("accepted", "rejected"):
            self.frames.labels(camera=camera, result=result)

    def observe_camera(self, state: CameraState, camera_id: str | None = None) -> None:
        """A camera monitor's reading. ``camera_id`` (a daemon with several ``[[cameras]]``): the series labelled
        with that camera id — the label its capture jobs' frame counters carry too. ``None`` (one camera): labelled
        with the device the reading names (a disconnected reading keeps the last one; the ``unknown`` series go once
        the device is known). The constructor's ``unknown`` series go with the first labelled reading."""
        nan = float("nan")
        with self._lock:
            if camera_id is not None:
                label = camera_id
            else:
                if state.device:
                    self._labels[""] = state.device
                label = self._labels.get("", UNKNOWN_CAMERA)
            drop_unknown = label != UNKNOWN_CAMERA and not self._unknown_dropped
            self._unknown_dropped = self._unknown_dropped or drop_unknown
        if drop_unknown:
            for gauge in self._state_gauges():
                with contextlib.suppress(KeyError):
                    gauge.remove(UNKNOWN_CAMERA)
            self._seen(label)
        elif label != UNKNOWN_CAMERA:
            self._seen(label)
        self.camera_connected.labels(camera=label).set(1.0 if state.connected else 0.0)
        self.camera_stable.labels(camera=label).set(1.0 if state.stable else 0.0)
        self.temperature_c.labels(camera=label).set(state.temperature_c if state.temperature_c is not None else nan)
        self.set_point_c.labels(camera=label).set(state.set_point_c if state.set_point_c is not None else nan)
        self.cooler_power_pct.labels(camera=label).set(
            state.cooler_power_pct if state.cooler_power_pct is not None else nan)

    def observe_event(self, event: Mapping[str, Any]) -> None:
        """Update counters from a bus event (``frame``, ``job``, ``warning``; ``temperature`` only counted)."""
        kind = str(event.get("type"))
        self.events.labels(type=kind).inc()
        if kind == "frame":
            camera = str(event.get("camera") or UNKNOWN_CAMERA)
            self._seen(camera)
            self.frames.labels(camera=camera, result="accepted" if event.get("ok") else "rejected").inc()
        elif kind == "warning":
            self.warnings.inc()
        elif kind == "integrity":
            self.integrity_failures.inc()
        elif kind == "disk":
            self.disk_low.inc()
        elif kind == "job" and event.get("state") in FINAL_STATES:
            self._job_finished(event)

    def _job_finished(self, event: Mapping[str, Any]) -> None:
        try:
            job_id = int(event["job_id"])
        except (KeyError, TypeError, ValueError):
            return
        with self._lock:
            if job_id in self._seen_jobs:
                return
            self._seen_jobs.add(job_id)
        state = str(event["state"])
        kind, started, finished = "unknown", None, None
        if self._job_times is not None:
            try:
                times = self._job_times(job_id)
            except Exception:
                log.exception("job %s: times unavailable for metrics", job_id)
                times = None
            if times is not None:
                kind, started, finished = times
        self.jobs_finished.labels(kind=kind, state=state).inc()
        if started is not None and finished is not None:
            self.job_duration_s.labels(kind=kind, state=state).observe(max((finished - started).total_seconds(), 0))

    def render(self) -> bytes:
        """The text exposition format (``CONTENT_TYPE_LATEST``)."""
        return generate_latest(self.registry)
