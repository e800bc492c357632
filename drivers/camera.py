"""The camera interface the daemon drives: settings, state, captured frames, and the :class:`Camera` protocol.

Implementations (peer backends, as in ophyd-async): :class:`drivers.indi.camera.IndiCamera` (any INDI CCD, through
``pyindi-client``; the simulated QHY163M INDI driver is reached through it) and
:class:`drivers.sim.inprocess.SimCamera` (the same simulated QHY163M in process, on an injectable clock, for fast
tests).
Callers use only the members of :class:`Camera`; they never probe an implementation.

Units: seconds (``_s``), degrees Celsius (``_c``), percent (``_pct``), ADU for pixel values. All methods block; callers
on an asyncio loop use ``asyncio.to_thread``.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import numpy as np
from astropy.io import fits

if TYPE_CHECKING:  # drivers.profiles imports this module
    from drivers.profiles import CameraProfile


class FrameType(enum.StrEnum):
    """INDI ``CCD_FRAME_TYPE`` values, lower-cased."""

    LIGHT = "light"
    BIAS = "bias"
    DARK = "dark"
    FLAT = "flat"


class OverscanMode(enum.StrEnum):
    """QHY ``OVERSCAN_MODE``: ``include`` reads the full raw area (overscan and optical black), ``ignore`` crops."""

    INCLUDE = "include"
    IGNORE = "ignore"


class CameraError(RuntimeError):
    """A camera operation failed in a way the caller can act on; the message says what and why."""


class CameraTimeout(CameraError):
    """A wait ran out (exposure never finished, BLOB never arrived, property never updated)."""


class CameraDisconnected(CameraError):
    """The INDI server or the device went away. A caller may reconnect and retry the current frame."""


class SetPointUnreachable(CameraError):
    """The cooler is at (nearly) full power and the sensor has stopped approaching the set point."""

    def __init__(self, message: str, *, reachable_c: float, ambient_limit_c: float | None) -> None:
        super().__init__(message)
        self.reachable_c = reachable_c
        self.ambient_limit_c = ambient_limit_c


class SettingUnsupported(CameraError):
    """A setting was requested that the device does not offer (its INDI property does not exist)."""


class SettingNotApplied(CameraError):
    """The driver did not apply a setting as requested (read-back differs, e.g. clamped); names both values."""

    def __init__(self, message: str, *, setting: str, requested: object, actual: object) -> None:
        super().__init__(message)
        self.setting = setting
        self.requested = requested
        self.actual = actual


class ExposureFailed(CameraError):
    """The driver reported the exposure as failed (INDI ``CCD_EXPOSURE`` Alert)."""


class ExposureAborted(CameraError):
    """The exposure was aborted on request (:meth:`Camera.abort`)."""


@dataclass(frozen=True)
class CaptureSettings:
    """Sensor settings that must match between lights and their calibration frames. ``None`` = leave as is."""

    gain: int | None = None
    offset: int | None = None
    binning: int = 1
    read_mode: int | None = None
    usb_traffic: int | None = None
    amp_glow: str | None = None  # "auto" | "on" | "off"
    overscan: OverscanMode | None = None
    subframe: tuple[int, int, int, int] | None = None  # x, y, width, height in unbinned pixels; None = full frame
    conversion_gain: int | None = None  # ToupTek TC_CONVERSION_GAIN option index (0 = LCG, 1 = HCG, ...)
    heater: int | None = None  # heater level to keep (0 = off); None = darkd switches heaters off for bias/dark


@dataclass(frozen=True)
class SettingAccess:
    """One row of the capability table: what darkd does with a setting on this driver and where it lives.

    ``access`` is ``"sets"`` (darkd writes it and verifies it), ``"reads"`` (the driver exposes it read-only, or
    write-only so darkd verifies it by effect) or ``"lacks"`` (the driver does not offer it).
    """

    setting: str
    access: str
    where: str | None = None  # e.g. "CCD_CONTROLS.Gain"
    range: tuple[float, float] | None = None
    note: str = ""


@dataclass(frozen=True)
class CameraCapabilities:
    """What the connected device offers, read from the properties it defines."""

    device: str
    width_px: int
    height_px: int
    pixel_size_um: float | None
    bits_per_pixel: int
    has_cooler: bool
    has_cooler_power: bool
    has_temp_ramp: bool
    has_gain: bool
    has_offset: bool
    has_read_mode: bool
    has_usb_traffic: bool
    has_amp_glow: bool
    has_overscan: bool
    max_binning: int = 1
    driver_exec: str | None = None  # DRIVER_INFO.DRIVER_EXEC, e.g. "indi_asi_ccd"
    driver_version: str | None = None  # DRIVER_INFO.DRIVER_VERSION
    adapter: str = "generic"  # the vendor adapter chosen from driver_exec (drivers/indi/vendors/)
    bit_depth: int | None = None  # ADC bits when the driver or the profile says (ADC_DEPTH.BITS, profile adc_bits)
    profile: str | None = None  # the camera profile in use (detected or configured)
    profile_detected: bool = False
    #: read-mode labels the driver offers, in mode-index order (a switch vector's element labels, e.g. Moravian
    #: ``CCD_READ_MODE`` "Photo", "Fast"); empty when the driver names no modes (a number element such as QHY's)
    read_mode_labels: tuple[str, ...] = ()
    settings: tuple[SettingAccess, ...] = ()  # the capability table, one row per setting


@dataclass
class CameraState:
    """A snapshot of the camera, as ``GET /camera`` and ``darkd camera status`` show it."""

    connected: bool
    device: str | None = None
    temperature_c: float | None = None
    set_point_c: float | None = None
    cooler_on: bool | None = None
    cooler_power_pct: float | None = None
    stable: bool = False
    gain: float | None = None
    offset: float | None = None
    binning: int | None = None
    read_mode: int | None = None
    overscan: OverscanMode | None = None
    heater: float | None = None  # heater level as the driver reports it (None: no heater or not readable)
    usb_traffic: int | None = None
    amp_glow: str | None = None  # "auto" | "on" | "off"
    exposing: bool = False
    exposure_remaining_s: float | None = None


@dataclass(frozen=True)
class TemperatureSample:
    """One reading of the sensor: time (UTC), temperature (°C), cooler power (%, None when not reported)."""

    time: datetime
    temperature_c: float
    cooler_power_pct: float | None


@dataclass
class CapturedFrame:
    """A frame as received, with what we observed around the exposure.

    ``data`` is the image in ADU (uint16, rows × columns); ``header`` is the driver's FITS header with our keys stamped.
    """

    data: np.ndarray
    header: fits.Header
    frame_type: FrameType
    exposure_s: float
    set_point_c: float | None
    temperature_start_c: float | None
    temperature_end_c: float | None
    cooler_power_start_pct: float | None
    cooler_power_end_pct: float | None
    started_utc: datetime
    finished_utc: datetime
    overscan: OverscanMode | None
    settings: CaptureSettings = field(default_factory=CaptureSettings)
    temperature_min_c: float | None = None  # extremes of the readings reported during the exposure (None: unknown)
    temperature_max_c: float | None = None


@runtime_checkable
class Camera(Protocol):
    """A cooled camera. Every call blocks with a timeout and raises :class:`CameraError` subclasses, never hangs.

    ``profile`` is the camera's geometry and limits (``None``: unknown camera, the whole frame is data);
    ``reconnects`` counts the transparent reconnections the camera made on its own (shown by ``GET /camera``).
    """

    profile: CameraProfile | None
    reconnects: int

    def connect(self, timeout_s: float = 30.0) -> CameraCapabilities:
        """Connect (again) and return what the device offers."""
        ...

    def disconnect(self) -> None: ...

    def reconnect_now(self) -> CameraCapabilities:
        """Reconnect within the camera's own bound, restoring the set point and the last applied settings."""
        ...

    @property
    def capabilities(self) -> CameraCapabilities:
        """What the device offers (raises :class:`CameraDisconnected` before the first :meth:`connect`)."""
        ...

    def state(self) -> CameraState:
        """A snapshot from cached readings; never waits on the device."""
        ...

    def set_temperature(self, set_point_c: float, ramp_c_per_min: float | None = None) -> None:
        """Cooler on, new set point (with the driver's ramp when given and supported)."""
        ...

    def wait_until_stable(
        self,
        set_point_c: float,
        *,
        tolerance_c: float = 0.2,
        hold_s: float = 60.0,
        timeout_s: float = 1800.0,
        on_sample: Callable[[TemperatureSample], None] | None = None,
        unreachable_window_s: float = 120.0,
        unreachable_power_pct: float = 95.0,
    ) -> TemperatureSample:
        """Block until stable (:mod:`drivers.cooling`); :class:`SetPointUnreachable` or :class:`CameraTimeout`."""
        ...

    def warm_up(self, target_c: float, rate_c_per_min: float = 5.0, timeout_s: float = 3600.0) -> None:
        """Warm gently to ``target_c``, then switch the cooler off."""
        ...

    def check_settings(self, settings: CaptureSettings, exposure_s: float | None = None,
                       set_point_c: float | None = None) -> None:
        """Refuse, before anything is sent, a request the device cannot honour: a setting it lacks
        (:class:`SettingUnsupported`) or a value outside the range it advertises (:class:`SettingNotApplied`, naming
        the range) — gain, offset, modes, binning, exposure, set point."""
        ...

    def apply_settings(self, settings: CaptureSettings) -> CaptureSettings:
        """Apply and read back each given setting; returns them as the device reports them."""
        ...

    def expose(self, frame_type: FrameType, exposure_s: float, timeout_s: float | None = None) -> CapturedFrame:
        """One exposure with our observation keys stamped (``SET-TEMP``, ``CCDTEMP1``/``2``, ``COOLPWR*``, ...)."""
        ...

    def abort(self) -> None:
        """Abort a running exposure (safe from another thread); the blocked :meth:`expose` raises
        :class:`ExposureAborted`."""
        ...
