"""Open the in-process simulated QHY163M (:class:`drivers.sim.inprocess.SimCamera`) as a :class:`drivers.camera.Camera`.

The peer of :func:`drivers.factory.open_indi_camera` for the in-process backend: hand it to
``daemon.runtime.Runtime(camera_factory=...)`` or ``JobEngine(camera_factory=...)`` to run darkd without indiserver.
"""

from __future__ import annotations

from drivers.camera import Camera
from drivers.profiles import CameraProfile, load_profile
from drivers.sim.inprocess import Clock, ManualClock, ScaledClock, SimCamera, SimFaults
from drivers.sim.physics import GEOMETRIES

SENSOR_PROFILES = {"SMALL": "qhy163m-sim-small", "FULL": "qhy163m"}


def open_sim_camera(*, sensor: str = "SMALL", time_scale: float | None = 1.0, seed: int = 1,
                    ambient_c: float = 20.0, light_leak_e_per_s: float = 0.0,
                    profile: CameraProfile | str | None = None, faults: SimFaults | None = None,
                    reconnect_timeout_s: float = 60.0) -> Camera:
    """An (unconnected) in-process simulated QHY163M.

    ``sensor`` is ``SMALL`` or ``FULL`` (as ``DARKD_SIM_SENSOR``); ``time_scale`` simulated seconds per wall second
    (as ``DARKD_SIM_TIME_SCALE``), or ``None`` for a :class:`ManualClock` on which every wait returns at once;
    ``profile`` defaults to the camera profile of the sensor (``config/cameras``).
    """
    key = sensor.strip().upper()
    if key not in GEOMETRIES:
        raise ValueError(f"sensor {sensor!r}: expected one of {', '.join(sorted(GEOMETRIES))}")
    prof = load_profile(profile or SENSOR_PROFILES[key]) if not isinstance(profile, CameraProfile) else profile
    clock: Clock = ManualClock() if time_scale is None else ScaledClock(time_scale)
    return SimCamera(clock=clock, geometry=GEOMETRIES[key], seed=seed, ambient_c=ambient_c,
                     light_leak_e_per_s=light_leak_e_per_s, profile=prof, faults=faults,
                     reconnect_timeout_s=reconnect_timeout_s)
