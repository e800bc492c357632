"""The ``camera`` label of the per-camera metrics (:class:`daemon.metrics.DaemonMetrics`): a fleet whose daemons share
one index shows every rig on one Grafana board, each series named by its camera."""

from __future__ import annotations

import math

from daemon.metrics import DaemonMetrics
from drivers.camera import CameraState


def sample(text: str, name: str) -> float | None:
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    return None


def test_state_gauges_and_frame_counters_carry_the_camera_label() -> None:
    metrics = DaemonMetrics()
    before = metrics.render().decode()
    assert 'darkd_sensor_temperature_celsius{camera="unknown"} NaN' in before  # no reading yet
    metrics.observe_camera(CameraState(connected=True, device="ZWO CCD ASI1600MM Pro", temperature_c=-9.5,
                                       cooler_power_pct=40.0, stable=True))
    metrics.observe_camera(CameraState(connected=False))  # a disconnected reading names no device: the label stays
    for ok in (True, True, False):
        metrics.observe_event({"type": "frame", "job_id": 1, "camera": "ZWO CCD ASI1600MM Pro", "ok": ok})
    metrics.observe_event({"type": "frame", "job_id": 2, "camera": "QHY CCD QHY163M-Sim", "ok": True})
    text = metrics.render().decode()
    asi = 'camera="ZWO CCD ASI1600MM Pro"'
    assert 'camera="unknown"' not in text
    assert sample(text, f"darkd_camera_connected{{{asi}}}") == 0.0
    assert math.isnan(sample(text, f"darkd_sensor_temperature_celsius{{{asi}}}") or 0.0)  # disconnected: unknown
    assert sample(text, f'darkd_frames_captured_total{{{asi},result="accepted"}}') == 2
    assert sample(text, f'darkd_frames_captured_total{{{asi},result="rejected"}}') == 1
    assert sample(text, 'darkd_frames_captured_total{camera="QHY CCD QHY163M-Sim",result="accepted"}') == 1
    assert sample(text, 'darkd_frames_captured_total{camera="QHY CCD QHY163M-Sim",result="rejected"}') == 0
