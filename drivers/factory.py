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


def open_indi_camera(host: str = "127.0.0.1", port: int = 7624, device: str | None = None, *,
                     profile: CameraProfile | str | None = None, reconnect: bool = True,
                     reconnect_timeout_s: float = 60.0) -> Camera:
    """An (unconnected) ``IndiCamera``; ``profile`` may be a profile name from ``config/cameras``."""
    module = importlib.import_module(INDI_IMPLEMENTATION)
    prof = load_profile(profile) if isinstance(profile, str) else profile
    camera = module.IndiCamera(host, port, device, profile=prof, reconnect=reconnect,
                               reconnect_timeout_s=reconnect_timeout_s)
    return cast(Camera, camera)
