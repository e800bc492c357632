"""Completing a partial key (no frame size) from the camera's read-back state: the rule in isolation (a small stub
camera; the end-to-end proof through indiserver is ``tests/integration/test_library_partial_key_sim.py``)."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from daemon.jobs.build_library import complete_key
from daemon.library.keys import LibraryKey
from drivers.camera import CameraCapabilities, CameraState, OverscanMode
from drivers.profiles import CameraProfile, load_profile

PARTIAL = LibraryKey(camera="cam", kind="dark", exposure_s=60, set_point_c=-10, gain=120, offset=30)
CAPS = CameraCapabilities(device="cam", width_px=4656, height_px=3522, pixel_size_um=3.8, bits_per_pixel=16,
                          has_cooler=True, has_cooler_power=True, has_temp_ramp=False, has_gain=True, has_offset=True,
                          has_read_mode=True, has_usb_traffic=True, has_amp_glow=True, has_overscan=True, max_binning=4)


@dataclass
class StubCamera:
    """Only what ``complete_key`` reads: ``state()``, ``capabilities`` and an optional ``profile``."""

    read_back: CameraState = field(default_factory=lambda: CameraState(
        connected=True, read_mode=1, overscan=OverscanMode.INCLUDE, usb_traffic=30, amp_glow="auto"))
    profile: CameraProfile | None = None
    capabilities: CameraCapabilities = CAPS

    def state(self) -> CameraState:
        return self.read_back


def test_partial_key_takes_the_profile_geometry_of_the_reported_overscan_mode() -> None:
    profile = load_profile("qhy163m-sim-small")
    done = complete_key(PARTIAL, StubCamera(profile=profile))  # type: ignore[arg-type]
    include = profile.geometry(OverscanMode.INCLUDE)
    assert (done.width_px, done.height_px) == (include.width_px, include.height_px)
    assert (done.read_mode, done.overscan, done.usb_traffic, done.amp_glow) == (1, "include", 30, "auto")
    assert done.bit_depth is None and not done.is_partial
    assert {n: getattr(done, n) for n in ("camera", "kind", "exposure_s", "set_point_c", "gain", "offset")} == \
        {n: getattr(PARTIAL, n) for n in ("camera", "kind", "exposure_s", "set_point_c", "gain", "offset")}


def test_given_fields_are_kept_and_binning_divides_the_frame() -> None:
    profile = load_profile("qhy163m-sim-small")
    wanted = LibraryKey(**{**PARTIAL.to_dict(), "overscan": "ignore", "read_mode": 0, "binning": 2})
    done = complete_key(wanted, StubCamera(profile=profile))  # type: ignore[arg-type]
    ignore = profile.geometry(OverscanMode.IGNORE).binned(2)
    assert (done.width_px, done.height_px, done.overscan, done.read_mode) == (ignore.width_px, ignore.height_px,
                                                                              "ignore", 0)


@pytest.mark.parametrize("binning", [1, 2])
def test_without_a_profile_the_sensor_size_is_used(binning: int) -> None:
    key = LibraryKey(**{**PARTIAL.to_dict(), "binning": binning})
    camera = StubCamera(read_back=CameraState(connected=True))
    done = complete_key(key, camera)  # type: ignore[arg-type]
    assert (done.width_px, done.height_px) == (4656 // binning, 3522 // binning)
    assert (done.read_mode, done.overscan, done.usb_traffic, done.amp_glow) == (None, None, None, None)
