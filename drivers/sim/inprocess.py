""":class:`SimCamera`: the simulated QHY163M in process — a peer backend of :class:`drivers.indi.camera.IndiCamera`.

Same :class:`drivers.camera.Camera` protocol, same physics (:mod:`drivers.sim.physics` sensor, :mod:`drivers.sim.cooler`
TEC, :mod:`drivers.sim.electronics` ADC drift), same frames and FITS cards (:mod:`drivers.sim.rendering`, shared with
the INDI driver) and the same observation keys (:mod:`drivers.observation`, shared with ``IndiCamera``) — but no
``indiserver``, no INDI library and time from an injectable :class:`Clock`:

* :class:`ManualClock`: simulated time moves only when the camera waits, so a 600 s dark or a 20-minute cool-down
  returns in milliseconds (unit tests);
* :class:`ScaledClock`: wall time × ``time_scale``, like the INDI simulator's ``TIME_SCALE`` (abort tests, demos).

Faults (:class:`SimFaults`, counters consumed one exposure or one connect at a time): an exposure that ends in an
Alert (:class:`ExposureFailed`), an image that never arrives (:class:`CameraTimeout` after the download timeout), a
link that drops mid-exposure (:class:`CameraDisconnected`; the camera then reports ``connected=False`` until it is
connected again), connects that fail while the "server" is away, light leaking onto the next dark/bias frames and a
sensor that starts an exposure warmer than the set point (rejected by the temperature check).
:meth:`SimCamera.drop_connection` drops the link at once (INDI ``SIM_FAULTS.DISCONNECT``); ``light_leak_e_per_s``
leaks on every frame (``SIM_SETTINGS.LIGHT_LEAK``); an unreachable set point comes from the physics (``ambient_c``,
``max_delta_c``). Units: seconds are *simulated* seconds throughout.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

import numpy as np
from astropy.io import fits

from drivers.camera import (
    CameraCapabilities,
    CameraDisconnected,
    CameraError,
    CameraState,
    CameraTimeout,
    CapturedFrame,
    CaptureSettings,
    ExposureAborted,
    ExposureFailed,
    FrameType,
    OverscanMode,
    SetPointUnreachable,
    SettingNotApplied,
    TemperatureSample,
)
from drivers.cooling import StabilityTracker, UnreachableDetector
from drivers.observation import stamp_observation
from drivers.profiles import CameraProfile
from drivers.sim.cooler import MAX_DELTA_C, TecCooler
from drivers.sim.electronics import AdcDrift
from drivers.sim.fits_image import FitsRecord
from drivers.sim.physics import PIXEL_SIZE_UM, SMALL_GEOMETRY, SensorGeometry, SensorModel
from drivers.sim.rendering import ExposureRequest, render_frame
from drivers.sim.vendors import NumberDef, vendor_spec

log = logging.getLogger(__name__)

QHY = vendor_spec("qhy")  # the QHY driver's vocabulary, shared with the INDI twin (drivers/sim/vendors.py)


def _role_element(role: str) -> tuple[float, float, float]:
    """``(min, max, default)`` of the QHY number element that holds ``role`` (gain, offset, read_mode, usb_traffic)."""
    name, element = QHY.roles[role]
    for vector in QHY.vectors:
        if isinstance(vector, NumberDef) and vector.name == name:
            for el in vector.elements:
                if el[0] == element:
                    return float(el[3]), float(el[4]), float(el[6])
    raise KeyError(f"the QHY vocabulary has no {name}.{element}")


DEVICE_NAME = QHY.device_name
# INDI::CCD base class limits (libs/indibase/indiccd.cpp), as drivers/sim/vocabulary.py declares them for the twin
MIN_EXPOSURE_S = QHY.min_exposure_s
MAX_EXPOSURE_S = 3600.0
SET_POINT_RANGE_C = (-50.0, 50.0)
RAMP_RANGE_C_PER_MIN = (0.0, 30.0)
NUMBER_RANGES: dict[str, tuple[int, int]] = {
    role: (int(_role_element(role)[0]), int(_role_element(role)[1])) for role in ("gain", "offset", "read_mode",
                                                                                  "usb_traffic")}
DEFAULT_NUMBERS: dict[str, int] = {role: int(_role_element(role)[2]) for role in NUMBER_RANGES}
BINS = QHY.bins
MAX_BINNING = max(BINS)
AMP_GLOW_MODES = ("auto", "on", "off")
FAILED_EXPOSURE_S = 0.2  # the INDI simulator's Alert arrives after min(0.2 s, exposure)
WARM_UP_MARGIN_C = 0.5
TIME_EPSILON_S = 1e-6  # remaining times below this are rounding (a float clock of hours cannot add 1e-13 s)


# ------------------------------------------------------------------------------------------------------------ clocks
class Clock(Protocol):
    """Simulated time: a monotonic reading, a wait that an event can cut short, and the UTC date of "now"."""

    def monotonic(self) -> float: ...

    def wait(self, event: threading.Event, seconds: float) -> bool:
        """Wait ``seconds`` or until ``event`` is set; returns whether it is set."""
        ...

    def utcnow(self) -> datetime: ...


class ManualClock:
    """Time stands still until someone waits; every wait returns at once, ``seconds`` later in simulated time."""

    def __init__(self, start_utc: datetime | None = None) -> None:
        self.start_utc = start_utc or datetime(2026, 1, 1, 22, 0, tzinfo=UTC)
        self._now_s = 0.0
        self._lock = threading.Lock()

    def monotonic(self) -> float:
        return self._now_s

    def advance(self, seconds: float) -> None:
        with self._lock:
            self._now_s += max(0.0, float(seconds))

    def wait(self, event: threading.Event, seconds: float) -> bool:
        if event.is_set():
            return True
        self.advance(seconds)
        return event.is_set()

    def utcnow(self) -> datetime:
        return self.start_utc + timedelta(seconds=self._now_s)


class ScaledClock:
    """Wall time × ``time_scale`` simulated seconds per wall second (1 = real time)."""

    def __init__(self, time_scale: float = 1.0) -> None:
        if time_scale <= 0:
            raise ValueError(f"time_scale must be > 0, got {time_scale}")
        self.time_scale = float(time_scale)
        self._t0 = time.monotonic()
        self._utc0 = datetime.now(UTC)

    def monotonic(self) -> float:
        return (time.monotonic() - self._t0) * self.time_scale

    def wait(self, event: threading.Event, seconds: float) -> bool:
        return event.wait(max(0.0, seconds) / self.time_scale)

    def utcnow(self) -> datetime:
        return self._utc0 + timedelta(seconds=self.monotonic())


# ------------------------------------------------------------------------------------------------------------ faults
@dataclass
class SimFaults:
    """Faults to inject; each counter is consumed by the next exposure (or connect) it applies to."""

    fail_exposures: int = 0  # exposures that end in a CCD_EXPOSURE Alert → ExposureFailed
    drop_downloads: int = 0  # images that never arrive → CameraTimeout once the download timeout has passed
    disconnect_exposures: int = 0  # exposures during which the link drops (half-way) → CameraDisconnected
    refuse_connects: int = 0  # connect() calls that fail while the "server" is away → CameraDisconnected
    leak_frames: int = 0  # dark/bias frames that see ``leak_e_per_s`` of light
    leak_e_per_s: float = 2.0
    jolt_exposures: int = 0  # exposures that start with the sensor ``jolt_c`` warmer (a draught, the dew heater)
    jolt_c: float = 2.0

    def take(self, name: str) -> bool:
        """Consume one count of fault ``name``; whether it was pending."""
        count = int(getattr(self, name))
        if count <= 0:
            return False
        setattr(self, name, count - 1)
        return True


# ------------------------------------------------------------------------------------------------------------ camera
class SimCamera:
    """The simulated QHY163M behind the :class:`drivers.camera.Camera` protocol, in process (module docstring)."""

    def __init__(self, *, clock: Clock | None = None, geometry: SensorGeometry = SMALL_GEOMETRY, seed: int = 1,
                 ambient_c: float = 20.0, max_delta_c: float = MAX_DELTA_C, light_leak_e_per_s: float = 0.0,
                 profile: CameraProfile | None = None, faults: SimFaults | None = None, device: str = DEVICE_NAME,
                 reconnect: bool = True, reconnect_timeout_s: float = 60.0, sample_interval_s: float = 1.0,
                 readout_s: float | None = None, has_cooler: bool = True) -> None:
        self.clock: Clock = clock or ManualClock()
        #: False: an uncooled camera (a guide camera): no cooler, no cooler power, a sensor that follows ambient
        self.has_cooler = bool(has_cooler)
        self.geometry = geometry
        self.seed = int(seed)
        self.profile = profile
        self.faults = faults or SimFaults()
        self.device = device
        self.light_leak_e_per_s = float(light_leak_e_per_s)
        self.reconnect = reconnect
        self.reconnect_timeout_s = reconnect_timeout_s
        self.sample_interval_s = sample_interval_s
        self.readout_s = readout_s if readout_s is not None else (profile.readout_s if profile else 1.0)
        self.reconnects = 0  # transparent reconnections so far (see reconnect_now)
        self.exposures = 0  # exposures started (failed, aborted and dropped ones included)
        self.aborted = 0  # exposures ended by abort()
        self.cooler = TecCooler(ambient_c=ambient_c, temperature_c=ambient_c, max_delta_c=max_delta_c)
        self._drift = AdcDrift()
        self._rng = np.random.default_rng(np.random.SeedSequence([self.seed, 2]))
        self._model: SensorModel | None = None
        self._lock = threading.RLock()
        self._abort = threading.Event()
        self._connected = False
        self._ever_connected = False
        self._last_s = self.clock.monotonic()
        self._last_readout_s = self._last_s
        self._numbers: dict[str, int] = dict(DEFAULT_NUMBERS)
        self._amp_glow = "auto"
        self._overscan = OverscanMode.IGNORE
        self._binning = 1
        self._roi: tuple[int, int, int, int] | None = None  # None: the full frame of the current overscan mode
        self._set_point_c: float | None = None
        self._ramp_c_per_min: float | None = None
        self._applied = CaptureSettings()
        self._ambient_estimate_c: float | None = None
        self._stable = False
        self._exposure_end_s: float | None = None

    # ------------------------------------------------------------------ simulated time
    def _advance(self) -> None:
        """Step the TEC up to the clock's now (in steps of at most one simulated second, at most 1000 steps)."""
        with self._lock:
            now = self.clock.monotonic()
            dt_s = now - self._last_s
            if dt_s <= 0:
                return
            steps = max(1, min(1000, int(np.ceil(dt_s))))
            for _ in range(steps):
                self.cooler.step(dt_s / steps)
            self._last_s = now

    def _reading(self) -> tuple[float, float]:
        """(temperature °C, cooler power %) as the camera reports them now."""
        with self._lock:
            self._advance()
            reading = self.cooler.reading(self._rng)
            return reading.temperature_c, reading.power_pct

    def _model_for(self) -> SensorModel:
        if self._model is None:
            self._model = SensorModel(self.geometry, seed=self.seed)
        return self._model

    # ------------------------------------------------------------------ connection
    def connect(self, timeout_s: float = 30.0) -> CameraCapabilities:
        """Connect; with the cooler off the temperature read now is taken as ambient (as ``IndiCamera`` does)."""
        if self.faults.take("refuse_connects"):
            raise CameraDisconnected(f"{self.device}: simulated fault: the server is unreachable")
        with self._lock:
            self._connected = True
            self._ever_connected = True
            if self._ambient_estimate_c is None and not self.cooler.cooler_on:
                self._ambient_estimate_c = self._reading()[0]
        log.info("connected to %s (in process)", self.device)
        return self.capabilities

    def disconnect(self) -> None:
        self._abort.set()
        with self._lock:
            self._connected = False

    def drop_connection(self) -> None:
        """Fault: the link drops now (a running exposure fails with :class:`CameraDisconnected`)."""
        log.warning("simulated fault: %s drops its connection", self.device)
        self.disconnect()

    def _ensure(self) -> None:
        """Raise, or reconnect transparently, when the link is down (``IndiCamera`` semantics)."""
        if self._connected:
            return
        if not self._ever_connected:
            raise CameraDisconnected("camera not connected: call connect() first")
        if not self.reconnect:
            raise CameraDisconnected(f"lost the connection to {self.device}")
        self.reconnect_now()

    def reconnect_now(self) -> CameraCapabilities:
        """Reconnect, retrying until ``reconnect_timeout_s``; restores the set point and the last applied settings."""
        deadline_s = self.clock.monotonic() + self.reconnect_timeout_s
        delay_s = 0.2
        never = threading.Event()
        last: Exception | None = None
        while self.clock.monotonic() < deadline_s:
            try:
                caps = self.connect()
                if self._applied != CaptureSettings():
                    self.apply_settings(self._applied)
                if self._set_point_c is not None:
                    self.set_temperature(self._set_point_c, self._ramp_c_per_min)
                self.reconnects += 1
                log.warning("reconnected to %s", self.device)
                return caps
            except CameraError as exc:
                last = exc
                self.clock.wait(never, min(delay_s, max(0.0, deadline_s - self.clock.monotonic())))
                delay_s = min(2.0, delay_s * 2)
        raise CameraDisconnected(f"could not reconnect to {self.device} within {self.reconnect_timeout_s:.0f} s: "
                                 f"{last}")

    @property
    def capabilities(self) -> CameraCapabilities:
        if not self._ever_connected:
            raise CameraDisconnected("camera not connected: call connect() first")
        height, width = self.geometry.shape(self._overscan is OverscanMode.INCLUDE)
        return CameraCapabilities(
            device=self.device, width_px=width, height_px=height, pixel_size_um=PIXEL_SIZE_UM, bits_per_pixel=16,
            has_cooler=self.has_cooler, has_cooler_power=self.has_cooler, has_temp_ramp=self.has_cooler,
            has_gain=True, has_offset=True,
            has_read_mode=True, has_usb_traffic=True, has_amp_glow=True, has_overscan=True, max_binning=MAX_BINNING,
            profile=self.profile.name if self.profile is not None else None)

    # ------------------------------------------------------------------ readings
    def sample(self) -> TemperatureSample:
        temperature_c, power_pct = self._reading()
        return TemperatureSample(self.clock.utcnow(), temperature_c, power_pct)

    def state(self) -> CameraState:
        if not self._connected:
            return CameraState(connected=False, device=self.device, set_point_c=self._set_point_c)
        temperature_c, power_pct = self._reading()
        end_s = self._exposure_end_s
        return CameraState(
            connected=True, device=self.device, temperature_c=temperature_c, set_point_c=self._set_point_c,
            cooler_on=self.cooler.cooler_on if self.has_cooler else None,
            cooler_power_pct=power_pct if self.has_cooler else None, stable=self._stable,
            gain=float(self._numbers["gain"]), offset=float(self._numbers["offset"]), binning=self._binning,
            read_mode=self._numbers["read_mode"], overscan=self._overscan, exposing=end_s is not None,
            usb_traffic=self._numbers["usb_traffic"], amp_glow=self._amp_glow,
            exposure_remaining_s=max(0.0, end_s - self.clock.monotonic()) if end_s is not None else None)

    # ------------------------------------------------------------------ cooling
    def set_temperature(self, set_point_c: float, ramp_c_per_min: float | None = None) -> None:
        self._ensure()
        if not self.has_cooler:
            raise SettingNotApplied(f"{self.device} has no cooler", setting="set_point_c", requested=set_point_c,
                                    actual=None)
        low, high = SET_POINT_RANGE_C
        if not low <= set_point_c <= high:
            raise SettingNotApplied(f"set point {set_point_c} °C is outside the driver's range {low}..{high} °C",
                                    setting="set_point_c", requested=set_point_c, actual=None)
        with self._lock:
            self._advance()
            if ramp_c_per_min is not None:
                lo, hi = RAMP_RANGE_C_PER_MIN
                clamped = min(max(ramp_c_per_min, lo), hi)
                if clamped != ramp_c_per_min:
                    log.warning("%s: ramp %g °C/min is outside the driver's range %g..%g; using %g", self.device,
                                ramp_c_per_min, lo, hi, clamped)
                ramp_c_per_min = clamped
                self.cooler.ramp_c_per_min = ramp_c_per_min
            self.cooler.set_point(set_point_c)
            self._set_point_c = set_point_c
            self._ramp_c_per_min = ramp_c_per_min
            self._stable = False

    def wait_until_stable(self, set_point_c: float, *, tolerance_c: float = 0.2, hold_s: float = 60.0,
                          timeout_s: float = 1800.0,
                          on_sample: Callable[[TemperatureSample], None] | None = None,
                          unreachable_window_s: float = 120.0,
                          unreachable_power_pct: float = 95.0) -> TemperatureSample:
        """Sample every ``sample_interval_s`` until stable (:mod:`drivers.cooling`), unreachable or timed out."""
        self._ensure()
        tracker = StabilityTracker(set_point_c, tolerance_c, hold_s)
        detector = UnreachableDetector(
            set_point_c, tolerance_c=tolerance_c, window_s=unreachable_window_s,
            power_threshold_pct=unreachable_power_pct, ambient_c=self._ambient_estimate_c,
            max_delta_c=self.profile.max_cooling_delta_c if self.profile else None)
        deadline_s = self.clock.monotonic() + timeout_s
        never = threading.Event()
        self._stable = False
        while True:
            now_s = self.clock.monotonic()
            sample = self.sample()
            if on_sample is not None:
                on_sample(sample)
            if tracker.feed(now_s, sample.temperature_c):
                self._stable = True
                return sample
            verdict = detector.feed(now_s, sample.temperature_c, sample.cooler_power_pct)
            if verdict is not None:
                raise SetPointUnreachable(verdict.message(set_point_c), reachable_c=verdict.reachable_c,
                                          ambient_limit_c=verdict.ambient_limit_c)
            if now_s >= deadline_s:
                raise CameraTimeout(f"temperature not stable at {set_point_c} °C ± {tolerance_c} within "
                                    f"{timeout_s} s (now {sample.temperature_c:.2f} °C)")
            self.clock.wait(never, min(self.sample_interval_s, max(0.01, deadline_s - now_s)))
            self._ensure()

    def warm_up(self, target_c: float, rate_c_per_min: float = 5.0, timeout_s: float = 3600.0) -> None:
        """Ramp to ``target_c`` with the driver's ramp, wait until within 0.5 °C of it, then switch the cooler off."""
        self._ensure()
        if self._reading()[0] < target_c - WARM_UP_MARGIN_C:
            self.set_temperature(target_c, rate_c_per_min)
            deadline_s = self.clock.monotonic() + timeout_s
            never = threading.Event()
            while self._reading()[0] < target_c - WARM_UP_MARGIN_C:
                if self.clock.monotonic() >= deadline_s:
                    raise CameraTimeout(f"warm-up to {target_c} °C did not finish within {timeout_s} s")
                self.clock.wait(never, self.sample_interval_s)
        with self._lock:
            self._advance()
            self.cooler.switch(False)
            self._set_point_c = None
            self._stable = False

    # ------------------------------------------------------------------ settings
    def _number(self, name: str, value: int | None) -> int | None:
        if value is None:
            return None
        low, high = NUMBER_RANGES[name]
        if not low <= value <= high:
            raise SettingNotApplied(f"{self.device}: {name.replace('_', ' ')} {value:g} is outside the driver's range "
                                    f"{low:g}..{high:g}", setting=name, requested=value, actual=self._numbers[name])
        self._numbers[name] = int(value)
        return int(value)

    def apply_settings(self, settings: CaptureSettings) -> CaptureSettings:
        """Apply each given setting as the INDI driver would, refusing values outside its ranges."""
        self._ensure()
        result: dict[str, Any] = {}
        with self._lock:
            if self._exposure_end_s is not None:
                raise SettingNotApplied(f"{self.device}: cannot change settings during an exposure",
                                        setting="settings", requested=settings, actual=None)
            if settings.overscan is not None:
                self._overscan = OverscanMode(settings.overscan)
                result["overscan"] = self._overscan
            for name in NUMBER_RANGES:
                value = self._number(name, getattr(settings, name))
                if value is not None:
                    result[name] = value
            if settings.amp_glow is not None:
                glow = str(settings.amp_glow).lower()
                if glow not in AMP_GLOW_MODES:
                    raise ValueError(f"amp_glow must be one of {sorted(AMP_GLOW_MODES)}, got {settings.amp_glow!r}")
                self._amp_glow = glow
                result["amp_glow"] = glow
            binning = int(settings.binning or 1)
            self._check_binning(binning)
            self._binning = binning
            result["binning"] = binning
            result["subframe"] = self._apply_roi(settings.subframe)
        applied = replace(CaptureSettings(), **result)
        self._applied = replace(applied, subframe=settings.subframe)
        return applied

    def _check_binning(self, binning: int) -> None:
        if binning not in BINS:  # qhy_ccd.cpp UpdateCCDBin: only the bins the camera supports, symmetric
            raise SettingNotApplied(f"{self.device}: {binning}x{binning} binning is not supported (supported: "
                                    f"{', '.join(map(str, BINS))})", setting="binning", requested=binning,
                                    actual=self._binning)

    def check_settings(self, settings: CaptureSettings, exposure_s: float | None = None,
                       set_point_c: float | None = None) -> None:
        """Refuse a request outside the driver's ranges before anything changes (see :class:`drivers.camera.Camera`)."""
        self._ensure()
        for name, (low, high) in NUMBER_RANGES.items():
            value = getattr(settings, name)
            if value is not None and not low <= float(value) <= high:
                raise SettingNotApplied(f"{self.device}: {name.replace('_', ' ')} {value:g} is outside the driver's "
                                        f"range {low}..{high}", setting=name, requested=value, actual=None)
        if settings.amp_glow is not None and str(settings.amp_glow).lower() not in AMP_GLOW_MODES:
            raise ValueError(f"amp_glow must be one of {sorted(AMP_GLOW_MODES)}, got {settings.amp_glow!r}")
        self._check_binning(int(settings.binning or 1))
        if exposure_s is not None and not 0 <= exposure_s <= MAX_EXPOSURE_S:
            raise SettingNotApplied(f"{self.device}: exposure {exposure_s:g} s is outside the driver's range "
                                    f"0..{MAX_EXPOSURE_S:g} s", setting="exposure_s", requested=exposure_s, actual=None)
        low_c, high_c = SET_POINT_RANGE_C
        if set_point_c is not None and not low_c <= set_point_c <= high_c:
            raise SettingNotApplied(f"set point {set_point_c} °C is outside the driver's range {low_c}..{high_c} °C",
                                    setting="set_point_c", requested=set_point_c, actual=None)

    def _apply_roi(self, subframe: tuple[int, int, int, int] | None) -> tuple[int, int, int, int] | None:
        """The driver clamps ``CCD_FRAME`` into the sensor; a clamped request is refused, as ``IndiCamera`` does."""
        if subframe is None:
            self._roi = None
            return None
        height, width = self.geometry.shape(self._overscan is OverscanMode.INCLUDE)
        x, y, w, h = (int(v) for v in subframe)
        cx, cy = min(max(x, 0), width - 1), min(max(y, 0), height - 1)
        actual = (cx, cy, min(max(w, 1), width - cx), min(max(h, 1), height - cy))
        if actual != (x, y, w, h):
            raise SettingNotApplied(f"{self.device}: frame requested {(x, y, w, h)}, driver reports {actual}",
                                    setting="subframe", requested=(x, y, w, h), actual=actual)
        self._roi = actual
        return actual

    # ------------------------------------------------------------------ capture
    def download_timeout_s(self, exposure_s: float) -> float:
        """Allowance (simulated seconds) for an exposure plus readout/download, as ``IndiCamera`` computes it."""
        return exposure_s + self.readout_s + 2.0

    def _request(self, frame_type: FrameType, exposure_s: float, leak_e_per_s: float) -> ExposureRequest:
        full_h, full_w = self.geometry.shape(self._overscan is OverscanMode.INCLUDE)
        return ExposureRequest(
            frame_type=frame_type.value, exposure_s=exposure_s, gain=self._numbers["gain"],
            offset=self._numbers["offset"], amp_glow=self._amp_glow,
            overscan_include=self._overscan is OverscanMode.INCLUDE, binning=self._binning,
            roi=self._roi or (0, 0, full_w, full_h), light_leak_e_per_s=leak_e_per_s, start_utc=self.clock.utcnow(),
            vendor_records=self._vendor_records(), device_name=self.device, has_cooler=self.has_cooler)

    def _vendor_records(self) -> list[FitsRecord]:
        """The QHY driver's own keywords (:data:`drivers.sim.vendors` QHY ``fits_keys``) with this camera's values."""
        values: dict[str, str | int | float] = {**self._numbers, "amp_glow": self._amp_glow.capitalize()}  # label
        return [FitsRecord(k.key, values[k.role], k.comment, k.decimals)
                for k in vendor_spec("qhy").fits_keys if k.role in values]

    def expose(self, frame_type: FrameType, exposure_s: float, timeout_s: float | None = None) -> CapturedFrame:
        """One exposure in simulated time; faults as configured in :attr:`faults` (module docstring)."""
        self._ensure()
        frame_type = FrameType(frame_type)
        if exposure_s < 0:
            raise ValueError(f"exposure_s must be >= 0, got {exposure_s}")
        requested_s = max(exposure_s, MIN_EXPOSURE_S)  # a bias is the driver's minimum exposure
        if requested_s > MAX_EXPOSURE_S:
            raise ValueError(f"exposure {exposure_s} s exceeds the driver's maximum {MAX_EXPOSURE_S} s")
        sim_exposure_s = MIN_EXPOSURE_S if frame_type is FrameType.BIAS else requested_s
        timeout = timeout_s if timeout_s is not None else self.download_timeout_s(requested_s)
        self._abort.clear()
        self.exposures += 1
        start_s = self.clock.monotonic()
        self._exposure_end_s = start_s + sim_exposure_s
        try:
            if self.faults.take("fail_exposures"):
                self._wait_or_abort(min(FAILED_EXPOSURE_S, sim_exposure_s))
                raise ExposureFailed(f"{self.device}: exposure failed (CCD_EXPOSURE Alert): "
                                     f"simulated fault: exposure failed")
            return self._exposure(frame_type, exposure_s, sim_exposure_s, start_s, timeout)
        finally:
            self._exposure_end_s = None

    def _wait_or_abort(self, seconds: float) -> None:
        if self.clock.wait(self._abort, seconds):
            if not self._connected:
                raise CameraDisconnected(f"lost the connection to {self.device} during the exposure")
            self.aborted += 1
            raise ExposureAborted(f"{self.device}: exposure aborted")

    def _exposure(self, frame_type: FrameType, exposure_s: float, sim_exposure_s: float, start_s: float,
                  timeout: float) -> CapturedFrame:
        leak = self.light_leak_e_per_s
        if frame_type in (FrameType.BIAS, FrameType.DARK) and self.faults.take("leak_frames"):
            leak += self.faults.leak_e_per_s
        request = self._request(frame_type, sim_exposure_s, leak)
        drop_link = self.faults.take("disconnect_exposures")
        if self.faults.take("jolt_exposures"):
            with self._lock:
                self._advance()
                self.cooler.temperature_c += self.faults.jolt_c
        temp_start, power_start = self._reading()
        true_start_c = self.cooler.temperature_c
        seen_c = [temp_start]
        while (remaining_s := sim_exposure_s - (self.clock.monotonic() - start_s)) > TIME_EPSILON_S:
            if drop_link and remaining_s <= sim_exposure_s / 2:
                self.drop_connection()
            self._wait_or_abort(min(self.sample_interval_s, remaining_s))
            seen_c.append(self._reading()[0])
        if drop_link:
            self.drop_connection()
            self._wait_or_abort(0.0)
        temp_end, power_end = self._reading()
        seen_c.append(temp_end)
        data, cards = self._render(request, 0.5 * (true_start_c + self.cooler.temperature_c), temp_end)
        if self.faults.take("drop_downloads"):
            log.warning("simulated fault: image download dropped")
            self._wait_or_abort(max(0.0, start_s + timeout - self.clock.monotonic()))
            raise CameraTimeout(f"{self.device}: no image {timeout:.1f} s after starting a {exposure_s} s exposure "
                                f"(download lost?)")
        header = fits.Header()
        for record in cards:
            if record.key == "COMMENT":
                header.append(("COMMENT", record.comment))  # in the driver's order, not moved to the end
            else:
                header[record.key] = (record.value, record.comment)
        frame = CapturedFrame(
            data=data, header=header, frame_type=frame_type, exposure_s=exposure_s, set_point_c=self._set_point_c,
            temperature_start_c=temp_start, temperature_end_c=temp_end, cooler_power_start_pct=power_start,
            cooler_power_end_pct=power_end, started_utc=request.start_utc, finished_utc=self.clock.utcnow(),
            overscan=self._overscan, settings=self._applied, temperature_min_c=min(seen_c),
            temperature_max_c=max(seen_c))
        stamp_observation(frame, self.device)
        return frame

    def _render(self, request: ExposureRequest, temperature_c: float,
                reported_temperature_c: float) -> tuple[np.ndarray, list[FitsRecord]]:
        with self._lock:
            now_s = self.clock.monotonic()
            self._drift.idle(now_s - self._last_readout_s)
            self._last_readout_s = now_s
            drift_adu = self._drift.readout()
            noise_rng = np.random.default_rng(self._rng.integers(0, 2**63))
        return render_frame(self._model_for(), request, temperature_c, drift_adu, reported_temperature_c, noise_rng)

    def abort(self) -> None:
        """Abort a running exposure (safe from another thread): the blocked :meth:`expose` raises ExposureAborted."""
        self._abort.set()
