"""Make a :class:`drivers.camera.Camera` without importing an implementation module at import time.

The daemon depends only on the camera interface (an import-linter contract forbids ``daemon → PyIndi``, including
indirectly), so the INDI implementation is loaded by name here when a camera is actually opened.
"""

from __future__ import annotations

import importlib
from typing import cast

from drivers.camera import Camera
from drivers.profiles import CameraProfile, load_profile

INDI_IMPLEMENTATION = "drivers.indi.camera"
#: profile names that are not files: detect the profile on connect, or use none (whole frame, no geometry)
AUTO_PROFILE = "auto"
NO_PROFILE = "none"


def open_indi_camera(host: str = "127.0.0.1", port: int = 7624, device: str | None = None, *,
                     profile: CameraProfile | str | None = None, reconnect: bool = True,
                     reconnect_timeout_s: float = 60.0) -> Camera:
    """An (unconnected) ``IndiCamera``.

    ``profile``: a :class:`CameraProfile`, a profile name from ``config/cameras`` (overrides detection), ``"auto"``
    or None (detected on connect from the driver, the model in the device name and ``CCD_INFO``), or ``"none"``
    (no profile at all: whole frames, no geometry).
    """
    module = importlib.import_module(INDI_IMPLEMENTATION)
    detect = profile is None or profile in ("", AUTO_PROFILE)
    if isinstance(profile, str):
        prof = None if profile in ("", AUTO_PROFILE, NO_PROFILE) else load_profile(profile)
    else:
        prof = profile
    camera = module.IndiCamera(host, port, device, profile=prof, reconnect=reconnect,
                               reconnect_timeout_s=reconnect_timeout_s, detect_profile=detect)
    return cast(Camera, camera)
