""":class:`IndiCamera`: the :class:`drivers.camera.Camera` protocol over INDI (``pyindi-client``).

Works with the QHY driver (and our simulated QHY163M, which speaks the same vocabulary) and degrades gracefully on
drivers with fewer properties, e.g. the stock ``CCD Simulator`` (no cooler power, no overscan, no read mode): the
capabilities say what exists, and asking for a setting the device lacks raises :class:`SettingUnsupported`.

Every wait is bounded. The download timeout of an exposure is ``exposure_s / time_scale + readout_s`` where
``time_scale`` is the simulator's ``SIM_SETTINGS.TIME_SCALE`` when the device has it (1 for a real camera) and
``readout_s`` comes from the camera profile. When the server or the device goes away the current call raises
:class:`drivers.camera.CameraDisconnected`; the next call reconnects first (``reconnect=True``).
"""

from __future__ import annotations

import io
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

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
    SettingUnsupported,
    TemperatureSample,
)
from drivers.cooling import StabilityTracker, UnreachableDetector, warm_up_plan
from drivers.indi.client import IndiClient, PropertyAlert, PropertyMissing, PropertySnapshot
from drivers.observation import stamp_observation
from drivers.profiles import CameraProfile

log = logging.getLogger(__name__)

CCD_INTERFACE = 2  # INDI::BaseDevice::CCD_INTERFACE bit in DRIVER_INFO.DRIVER_INTERFACE
SETTING_TIMEOUT_S = 10.0
FRAME_TYPE_SWITCH = {FrameType.LIGHT: "FRAME_LIGHT", FrameType.BIAS: "FRAME_BIAS", FrameType.DARK: "FRAME_DARK",
                     FrameType.FLAT: "FRAME_FLAT"}
AMP_GLOW_SWITCH = {"auto": "AMP_AUTO", "on": "AMP_ON", "off": "AMP_OFF"}
OVERSCAN_SWITCH = {OverscanMode.INCLUDE: "INDI_ENABLED", OverscanMode.IGNORE: "INDI_DISABLED"}


class IndiCamera:
    """A cooled INDI camera. See the module docstring; thread-safe for one capturing thread plus observers."""

    def __init__(self, host: str = "127.0.0.1", port: int = 7624, device: str | None = None, *,
                 profile: CameraProfile | None = None, reconnect: bool = True,
                 reconnect_timeout_s: float = 60.0, sample_interval_s: float = 1.0) -> None:
        self.host = host
        self.port = port
        self.requested_device = device
        self.profile = profile
        self.reconnect = reconnect
        self.reconnect_timeout_s = reconnect_timeout_s
        self.sample_interval_s = sample_interval_s
        self.device: str | None = None
        self.client: IndiClient | None = None
        self._caps: CameraCapabilities | None = None
        self._epoch = 0
        self._lock = threading.RLock()
        self._abort = threading.Event()
        self._set_point_c: float | None = None
        self._ramp_c_per_min: float | None = None
        self._applied = CaptureSettings()
        self._ambient_c: float | None = None
        self._stable = False
        self._connect_timeout_s = 30.0
        self.reconnects = 0  # transparent reconnections so far (server restart, device drop)

    # ------------------------------------------------------------------ connection
    def connect(self, timeout_s: float = 30.0) -> CameraCapabilities:
        """Connect to the server, find the device (by name or the first CCD), connect it, set BLOB/upload modes."""
        with self._lock:
            self._connect_timeout_s = timeout_s
            if self.client is not None:
                self.client.close()
            client = IndiClient(self.host, self.port)
            self.client = client
            client.open(timeout_s)
            deadline = time.monotonic() + timeout_s
            device = client.wait_for(self._find_device, timeout_s,
                                     f"device {self.requested_device or 'with a CCD interface'} on "
                                     f"{self.host}:{self.port}")
            self.device = device
            self._connect_device(client, device, max(1.0, deadline - time.monotonic()))
            self._caps = self._read_capabilities(client, device)
            if self._ambient_c is None:
                self._ambient_c = self._ambient_estimate(client, device)
            log.info("connected to %s on %s:%s", device, self.host, self.port)
            return self._caps

    def _find_device(self) -> str | None:
        assert self.client is not None
        client = self.client
        # called under the client's lock: use the raw dict to avoid re-entrance cost
        props = client._props
        devices = sorted(client._devices)
        if self.requested_device is not None:
            return self.requested_device if (self.requested_device, "CONNECTION") in props else None
        candidates = []
        for dev in devices:
            info = props.get((dev, "DRIVER_INFO"))
            interface = info.values.get("DRIVER_INTERFACE") if info is not None else None
            ccd_interface = interface is not None and str(interface).isdigit() and int(interface) & CCD_INTERFACE
            # drivers without DRIVER_INFO define CCD_* only once connected: fall back to the profile's name prefix
            by_name = bool(self.profile and self.profile.device_prefix and dev.startswith(self.profile.device_prefix))
            if ccd_interface or (dev, "CCD_EXPOSURE") in props or (by_name and (dev, "CONNECTION") in props):
                candidates.append(dev)
        if not candidates:
            return None
        prefix = self.profile.device_prefix if self.profile else None
        preferred = [d for d in candidates if prefix and d.startswith(prefix)]
        return (preferred or candidates)[0]

    def _connect_device(self, client: IndiClient, device: str, timeout_s: float) -> None:
        conn = client.wait_property(device, "CONNECTION", timeout_s)
        if not conn.values.get("CONNECT", False):
            client.send_switch(device, "CONNECTION", ["CONNECT"])
            client.wait_for(lambda: self._is_connected_locked(client, device), timeout_s, f"{device} to connect")
        client.wait_property(device, "CCD_EXPOSURE", timeout_s)
        client.wait_property(device, "CCD_INFO", timeout_s)
        client.wait_quiet(0.3, min(3.0, timeout_s))  # the driver defines its remaining properties in a burst
        client.set_blob_mode(device)
        self._epoch = client.epoch(device)
        self._select_if_present(client, device, "UPLOAD_MODE", "UPLOAD_CLIENT")
        self._select_if_present(client, device, "CCD_TRANSFER_FORMAT", "FORMAT_FITS")
        compression = client.get(device, "CCD_COMPRESSION")
        if compression is not None:
            off = "INDI_DISABLED" if "INDI_DISABLED" in compression.values else "CCD_RAW"
            self._select_if_present(client, device, "CCD_COMPRESSION", off)

    @staticmethod
    def _is_connected_locked(client: IndiClient, device: str) -> bool:
        snap = client._props.get((device, "CONNECTION"))
        return bool(snap is not None and snap.values.get("CONNECT") and snap.state != "Busy"
                    and (device, "CCD_EXPOSURE") in client._props)

    def _select_if_present(self, client: IndiClient, device: str, name: str, element: str) -> None:
        snap = client.get(device, name)
        if snap is None or element not in snap.values or snap.values[element]:
            return
        before = client.send_switch(device, name, [element])
        client.wait_update(device, name, before, SETTING_TIMEOUT_S, lambda s: s.state != "Busy")

    @staticmethod
    def _read_capabilities(client: IndiClient, device: str) -> CameraCapabilities:
        props = client.properties(device)
        info = props["CCD_INFO"]
        binning = props.get("CCD_BINNING")
        max_bin = int(binning.limits.get("HOR_BIN", (1, 1, 1))[1]) if binning else 1

        def has(name: str) -> bool:
            return name in props

        return CameraCapabilities(
            device=device, width_px=int(info.values.get("CCD_MAX_X", 0)),
            height_px=int(info.values.get("CCD_MAX_Y", 0)), pixel_size_um=info.values.get("CCD_PIXEL_SIZE"),
            bits_per_pixel=int(info.values.get("CCD_BITSPERPIXEL", 16)),
            has_cooler=has("CCD_COOLER") or has("CCD_TEMPERATURE"), has_cooler_power=has("CCD_COOLER_POWER"),
            has_temp_ramp=has("CCD_TEMP_RAMP"), has_gain=has("CCD_GAIN"), has_offset=has("CCD_OFFSET"),
            has_read_mode=has("READ_MODE"), has_usb_traffic=has("USB_TRAFFIC"), has_amp_glow=has("CCD_AMP_GLOW"),
            has_overscan=has("OVERSCAN_MODE"), max_binning=max(1, max_bin))

    @staticmethod
    def _ambient_estimate(client: IndiClient, device: str) -> float | None:
        """The sensor temperature at connect time while the cooler is off (≈ ambient), else None."""
        temp = client.get(device, "CCD_TEMPERATURE")
        cooler = client.get(device, "CCD_COOLER")
        power = client.get(device, "CCD_COOLER_POWER")
        if temp is None:
            return None
        cooler_off = cooler is not None and not cooler.values.get("COOLER_ON", False)
        no_power = power is not None and power.values.get("CCD_COOLER_VALUE", 0.0) <= 1.0
        return temp.values.get("CCD_TEMPERATURE_VALUE") if (cooler_off or no_power) else None

    def disconnect(self) -> None:
        with self._lock:
            if self.client is not None:
                self.client.close()
            self.client = None

    def _ensure(self) -> tuple[IndiClient, str]:
        """The live client and device; reconnects (bounded by ``reconnect_timeout_s``) when the link was lost."""
        client, device = self.client, self.device
        if client is not None and device is not None and client.server_up and client.epoch(device) == self._epoch \
                and client.get(device, "CCD_EXPOSURE") is not None:
            return client, device
        if client is None or device is None:
            raise CameraDisconnected("camera not connected: call connect() first")
        if not self.reconnect:
            raise CameraDisconnected(f"lost the connection to {device} on {self.host}:{self.port}")
        self.reconnect_now()
        assert self.client is not None and self.device is not None
        return self.client, self.device

    def reconnect_now(self) -> CameraCapabilities:
        """Reconnect, retrying until ``reconnect_timeout_s``; restores the set point and the last applied settings."""
        deadline = time.monotonic() + self.reconnect_timeout_s
        delay_s = 0.2
        last: Exception | None = None
        pause = threading.Event()
        while time.monotonic() < deadline:
            try:
                caps = self.connect(min(self._connect_timeout_s, max(1.0, deadline - time.monotonic())))
                if self._applied != CaptureSettings():
                    self.apply_settings(self._applied)
                if self._set_point_c is not None:
                    self.set_temperature(self._set_point_c, self._ramp_c_per_min)
                self.reconnects += 1
                log.warning("reconnected to %s", self.device)
                return caps
            except CameraError as exc:
                last = exc
                log.info("reconnect attempt failed: %s", exc)
                pause.wait(min(delay_s, max(0.0, deadline - time.monotonic())))
                delay_s = min(2.0, delay_s * 2)
        raise CameraDisconnected(f"could not reconnect to {self.host}:{self.port} within "
                                 f"{self.reconnect_timeout_s:.0f} s: {last}")

    @property
    def capabilities(self) -> CameraCapabilities:
        if self._caps is None:
            raise CameraDisconnected("camera not connected: call connect() first")
        return self._caps

    @property
    def time_scale(self) -> float:
        """Simulation time scale (``SIM_SETTINGS.TIME_SCALE``), 1.0 for real cameras."""
        if self.client is None or self.device is None:
            return 1.0
        snap = self.client.get(self.device, "SIM_SETTINGS")
        scale = snap.values.get("TIME_SCALE") if snap is not None else None
        return float(scale) if scale and scale > 0 else 1.0

    # ------------------------------------------------------------------ readings
    def _value(self, name: str, element: str) -> float | None:
        if self.client is None or self.device is None:
            return None
        snap = self.client.get(self.device, name)
        value = snap.values.get(element) if snap is not None else None
        return float(value) if value is not None else None

    def temperature_c(self) -> float | None:
        return self._value("CCD_TEMPERATURE", "CCD_TEMPERATURE_VALUE")

    def cooler_power_pct(self) -> float | None:
        return self._value("CCD_COOLER_POWER", "CCD_COOLER_VALUE")

    def sample(self) -> TemperatureSample:
        temp = self.temperature_c()
        if temp is None:
            raise SettingUnsupported(f"{self.device}: no CCD_TEMPERATURE property (camera without cooling)")
        return TemperatureSample(datetime.now(UTC), temp, self.cooler_power_pct())

    def state(self) -> CameraState:
        client, device = self.client, self.device
        if client is None or device is None or not client.server_up or client.get(device, "CCD_EXPOSURE") is None:
            return CameraState(connected=False, device=device, set_point_c=self._set_point_c)
        cooler = client.get(device, "CCD_COOLER")
        overscan = client.get(device, "OVERSCAN_MODE")
        exposure = client.get(device, "CCD_EXPOSURE")
        exposing = exposure is not None and exposure.state == "Busy"
        read_mode = self._value("READ_MODE", "MODE")
        return CameraState(
            connected=True, device=device, temperature_c=self.temperature_c(), set_point_c=self._set_point_c,
            cooler_on=bool(cooler.values.get("COOLER_ON")) if cooler is not None else None,
            cooler_power_pct=self.cooler_power_pct(), stable=self._stable, gain=self._value("CCD_GAIN", "GAIN"),
            offset=self._value("CCD_OFFSET", "OFFSET"),
            binning=int(b) if (b := self._value("CCD_BINNING", "HOR_BIN")) is not None else None,
            read_mode=int(read_mode) if read_mode is not None else None,
            overscan=(OverscanMode.INCLUDE if overscan.values.get("INDI_ENABLED") else OverscanMode.IGNORE)
            if overscan is not None else None,
            exposing=exposing,
            exposure_remaining_s=exposure.values.get("CCD_EXPOSURE_VALUE") if exposing and exposure else None)

    # ------------------------------------------------------------------ cooling
    def set_temperature(self, set_point_c: float, ramp_c_per_min: float | None = None) -> None:
        """Turn the cooler on and set the set point (with ``CCD_TEMP_RAMP`` when given and supported)."""
        client, device = self._ensure()
        temp = client.get(device, "CCD_TEMPERATURE")
        if temp is None:
            raise SettingUnsupported(f"{device} has no CCD_TEMPERATURE: it cannot be cooled")
        low, high, _ = temp.limits.get("CCD_TEMPERATURE_VALUE", (-1e9, 1e9, 0))
        if high > low and not low <= set_point_c <= high:
            raise SettingNotApplied(f"set point {set_point_c} °C is outside the driver's range {low}..{high} °C",
                                    setting="set_point_c", requested=set_point_c, actual=None)
        ramp = client.get(device, "CCD_TEMP_RAMP")
        if ramp_c_per_min is not None and ramp is not None:
            ramp_c_per_min = clamp_to_range(ramp_c_per_min, ramp.limits.get("RAMP_SLOPE"),
                                            f"{device}: CCD_TEMP_RAMP.RAMP_SLOPE (°C/min)")
            if ramp.values.get("RAMP_SLOPE") != ramp_c_per_min:
                before = client.send_number(device, "CCD_TEMP_RAMP", {"RAMP_SLOPE": ramp_c_per_min})
                self._await_setting(client, device, "CCD_TEMP_RAMP", before)
        cooler = client.get(device, "CCD_COOLER")
        if cooler is not None and not cooler.values.get("COOLER_ON", False):
            before = client.send_switch(device, "CCD_COOLER", ["COOLER_ON"])
            self._await_setting(client, device, "CCD_COOLER", before, allow_busy=True)
        before = client.send_number(device, "CCD_TEMPERATURE", {"CCD_TEMPERATURE_VALUE": set_point_c})
        self._await_setting(client, device, "CCD_TEMPERATURE", before, allow_busy=True)
        self._set_point_c = set_point_c
        self._ramp_c_per_min = ramp_c_per_min
        self._stable = False

    def wait_until_stable(self, set_point_c: float, *, tolerance_c: float = 0.2, hold_s: float = 60.0,
                          timeout_s: float = 1800.0, on_sample: Callable[[TemperatureSample], None] | None = None,
                          unreachable_window_s: float = 120.0, unreachable_power_pct: float = 95.0
                          ) -> TemperatureSample:
        """Block until stable (see :mod:`drivers.cooling`); raises :class:`SetPointUnreachable` or a timeout.

        Samples on every ``CCD_TEMPERATURE`` update and at least every ``sample_interval_s``.
        """
        client, device = self._ensure()
        tracker = StabilityTracker(set_point_c, tolerance_c, hold_s)
        detector = UnreachableDetector(
            set_point_c, tolerance_c=tolerance_c, window_s=unreachable_window_s,
            power_threshold_pct=unreachable_power_pct, ambient_c=self._ambient_c,
            max_delta_c=self.profile.max_cooling_delta_c if self.profile else None)
        deadline = time.monotonic() + timeout_s
        self._stable = False
        while True:
            now = time.monotonic()
            sample = self.sample()
            if on_sample is not None:
                on_sample(sample)
            if tracker.feed(now, sample.temperature_c):
                self._stable = True
                return sample
            verdict = detector.feed(now, sample.temperature_c, sample.cooler_power_pct)
            if verdict is not None:
                raise SetPointUnreachable(verdict.message(set_point_c), reachable_c=verdict.reachable_c,
                                          ambient_limit_c=verdict.ambient_limit_c)
            if now >= deadline:
                raise CameraTimeout(f"temperature not stable at {set_point_c} °C ± {tolerance_c} within {timeout_s} s "
                                    f"(now {sample.temperature_c:.2f} °C)")
            snap = client.get(device, "CCD_TEMPERATURE")
            version = snap.version if snap is not None else 0
            try:
                client.wait_update(device, "CCD_TEMPERATURE", version,
                                   min(self.sample_interval_s, max(0.01, deadline - now)), epoch=self._epoch)
            except CameraTimeout:
                pass  # no change reported: sample the unchanged value again
            except CameraDisconnected:
                client, device = self._ensure()  # reconnect (restores set point) and keep waiting
                tracker = StabilityTracker(set_point_c, tolerance_c, hold_s)

    def warm_up(self, target_c: float, rate_c_per_min: float = 5.0, timeout_s: float = 3600.0) -> None:
        """Warm gently to ``target_c`` at ``rate_c_per_min``, then switch the cooler off."""
        client, device = self._ensure()
        current = self.temperature_c()
        if current is None:
            return
        deadline = time.monotonic() + timeout_s
        if client.get(device, "CCD_TEMP_RAMP") is not None:
            self.set_temperature(target_c, rate_c_per_min)
            client.wait_for(lambda: (v := client._props.get((device, "CCD_TEMPERATURE"))) is not None
                            and v.values.get("CCD_TEMPERATURE_VALUE", -1e9) >= target_c - 0.5,
                            timeout_s, f"warm-up to {target_c} °C", device=device, epoch=self._epoch)
        else:
            start = time.monotonic()
            pause = threading.Event()
            for step in warm_up_plan(current, target_c, rate_c_per_min):
                pause.wait(max(0.0, start + step.at_s - time.monotonic()))
                if time.monotonic() > deadline:
                    raise CameraTimeout(f"warm-up to {target_c} °C did not finish within {timeout_s} s")
                self.set_temperature(step.set_point_c)
        if client.get(device, "CCD_COOLER") is not None:
            before = client.send_switch(device, "CCD_COOLER", ["COOLER_OFF"])
            self._await_setting(client, device, "CCD_COOLER", before, allow_busy=True)
        self._set_point_c = None
        self._stable = False

    # ------------------------------------------------------------------ settings
    def _await_setting(self, client: IndiClient, device: str, name: str, before: int, *,
                       allow_busy: bool = False) -> PropertySnapshot:
        snap = client.wait_update(device, name, before, SETTING_TIMEOUT_S,
                                  None if allow_busy else (lambda s: s.state != "Busy"), epoch=self._epoch)
        if snap.state == "Alert":
            msgs = client.messages(device)[-2:]
            raise PropertyAlert(f"{device} refused {name} (Alert){': ' + ' | '.join(msgs) if msgs else ''}")
        return snap

    def _set_number(self, client: IndiClient, device: str, name: str, element: str, value: float,
                    setting: str) -> float:
        snap = client.get(device, name)
        if snap is None:
            raise SettingUnsupported(f"{device} has no {name}: cannot set {setting}")
        if element not in snap.values:
            raise PropertyMissing(f"{device}: {name} has no element {element}")
        low, high, _ = snap.limits.get(element, (0.0, 0.0, 0.0))
        if high > low and not low <= value <= high:
            raise SettingNotApplied(f"{device}: {setting} {value:g} is outside the driver's range {low:g}..{high:g}",
                                    setting=setting, requested=value, actual=snap.values[element])
        if snap.values[element] != value:
            before = client.send_number(device, name, {element: value})
            try:
                snap = self._await_setting(client, device, name, before)
            except PropertyAlert as exc:
                raise SettingNotApplied(str(exc), setting=setting, requested=value, actual=None) from exc
        actual = float(snap.values[element])
        if abs(actual - value) > 1e-6:
            raise SettingNotApplied(f"{device}: {setting} requested {value:g}, the driver reports {actual:g} "
                                    f"(clamped to its range {snap.limits.get(element)}?)",
                                    setting=setting, requested=value, actual=actual)
        return actual

    def _set_switch(self, client: IndiClient, device: str, name: str, element: str, setting: str) -> None:
        snap = client.get(device, name)
        if snap is None:
            raise SettingUnsupported(f"{device} has no {name}: cannot set {setting}")
        if element not in snap.values:
            raise SettingUnsupported(f"{device}: {name} has no option {element} (has {sorted(snap.values)})")
        if not snap.values[element]:
            before = client.send_switch(device, name, [element])
            snap = self._await_setting(client, device, name, before)
        if not snap.values.get(element):
            raise SettingNotApplied(f"{device}: {setting} requested {element}, the driver reports "
                                    f"{snap.on_switches()}", setting=setting, requested=element,
                                    actual=snap.on_switches())

    def apply_settings(self, settings: CaptureSettings) -> CaptureSettings:
        """Apply each given setting and verify it by reading it back; returns the settings as the driver reports."""
        client, device = self._ensure()
        result: dict[str, Any] = {}
        if settings.overscan is not None:
            mode = OverscanMode(settings.overscan)
            if client.get(device, "OVERSCAN_MODE") is None:
                if mode is OverscanMode.INCLUDE:
                    raise SettingUnsupported(f"{device} has no OVERSCAN_MODE: cannot include the overscan")
            else:
                self._set_switch(client, device, "OVERSCAN_MODE", OVERSCAN_SWITCH[mode], "overscan")
            result["overscan"] = mode
        if settings.gain is not None:
            result["gain"] = round(self._set_number(client, device, "CCD_GAIN", "GAIN", settings.gain, "gain"))
        if settings.offset is not None:
            result["offset"] = round(self._set_number(client, device, "CCD_OFFSET", "OFFSET", settings.offset,
                                                          "offset"))
        if settings.read_mode is not None:
            result["read_mode"] = round(self._set_number(client, device, "READ_MODE", "MODE",
                                                             settings.read_mode, "read mode"))
        if settings.usb_traffic is not None:
            result["usb_traffic"] = round(self._set_number(client, device, "USB_TRAFFIC", "TRAFFIC",
                                                               settings.usb_traffic, "USB traffic"))
        if settings.amp_glow is not None:
            glow = str(settings.amp_glow).lower()
            if glow not in AMP_GLOW_SWITCH:
                raise ValueError(f"amp_glow must be one of {sorted(AMP_GLOW_SWITCH)}, got {settings.amp_glow!r}")
            self._set_switch(client, device, "CCD_AMP_GLOW", AMP_GLOW_SWITCH[glow], "amp glow")
            result["amp_glow"] = glow
        binning = int(settings.binning or 1)
        if client.get(device, "CCD_BINNING") is not None:
            snap = client.require(device, "CCD_BINNING")
            if snap.values.get("HOR_BIN") != binning or snap.values.get("VER_BIN") != binning:
                before = client.send_number(device, "CCD_BINNING", {"HOR_BIN": binning, "VER_BIN": binning})
                snap = self._await_setting(client, device, "CCD_BINNING", before)
            actual = (int(snap.values.get("HOR_BIN", 1)), int(snap.values.get("VER_BIN", 1)))
            if actual != (binning, binning):
                raise SettingNotApplied(f"{device}: binning requested {binning}x{binning}, driver reports "
                                        f"{actual[0]}x{actual[1]}", setting="binning", requested=binning,
                                        actual=actual)
        elif binning != 1:
            raise SettingUnsupported(f"{device} has no CCD_BINNING: cannot bin {binning}x{binning}")
        result["binning"] = binning
        result["subframe"] = self._apply_frame(client, device, settings.subframe)
        applied = replace(CaptureSettings(), **result)
        self._applied = replace(applied, subframe=settings.subframe)
        return applied

    def _apply_frame(self, client: IndiClient, device: str,
                     subframe: tuple[int, int, int, int] | None) -> tuple[int, int, int, int] | None:
        """Set ``CCD_FRAME`` to the subframe, or to the full sensor as ``CCD_INFO`` reports it now."""
        frame = client.get(device, "CCD_FRAME")
        if frame is None:
            if subframe is not None:
                raise SettingUnsupported(f"{device} has no CCD_FRAME: cannot set a subframe")
            return None
        if subframe is None:
            info = client.require(device, "CCD_INFO")
            wanted = (0, 0, int(info.values.get("CCD_MAX_X", 0)), int(info.values.get("CCD_MAX_Y", 0)))
        else:
            wanted = tuple(int(v) for v in subframe)  # type: ignore[assignment]
        current = tuple(int(frame.values.get(k, -1)) for k in ("X", "Y", "WIDTH", "HEIGHT"))
        if current != wanted:
            before = client.send_number(device, "CCD_FRAME", dict(zip(("X", "Y", "WIDTH", "HEIGHT"), wanted,
                                                                      strict=True)))
            frame = self._await_setting(client, device, "CCD_FRAME", before)
            current = tuple(int(frame.values.get(k, -1)) for k in ("X", "Y", "WIDTH", "HEIGHT"))
        if current != wanted:
            raise SettingNotApplied(f"{device}: frame requested {wanted}, driver reports {current}",
                                    setting="subframe", requested=wanted, actual=current)
        return None if subframe is None else current  # type: ignore[return-value]

    # ------------------------------------------------------------------ capture
    def download_timeout_s(self, exposure_s: float) -> float:
        """Wall-clock allowance for an exposure plus readout/download."""
        readout_s = self.profile.readout_s if self.profile else 5.0
        return exposure_s / self.time_scale + readout_s + 2.0

    def expose(self, frame_type: FrameType, exposure_s: float, timeout_s: float | None = None) -> CapturedFrame:
        """Take one exposure and return the decoded frame with temperatures/cooler power at start and end."""
        client, device = self._ensure()
        frame_type = FrameType(frame_type)
        if exposure_s < 0:
            raise ValueError(f"exposure_s must be >= 0, got {exposure_s}")
        if client.get(device, "CCD_FRAME_TYPE") is not None:
            self._set_switch(client, device, "CCD_FRAME_TYPE", FRAME_TYPE_SWITCH[frame_type], "frame type")
        exp = client.require(device, "CCD_EXPOSURE")
        low, high, _ = exp.limits.get("CCD_EXPOSURE_VALUE", (0.0, 1e9, 0))
        requested_s = max(exposure_s, low)  # a bias is the driver's minimum exposure
        if high > low and requested_s > high:
            raise ValueError(f"exposure {exposure_s} s exceeds the driver's maximum {high} s")
        timeout = timeout_s if timeout_s is not None else self.download_timeout_s(requested_s)
        self._abort.clear()
        client.clear_blobs(device)
        epoch = self._epoch
        temp_start, power_start = self.temperature_c(), self.cooler_power_pct()
        seen_c: list[float] = [temp_start] if temp_start is not None else []

        def track(snap: PropertySnapshot) -> None:  # INDI thread: every temperature reading during the exposure
            if snap.device == device and snap.name == "CCD_TEMPERATURE" and "CCD_TEMPERATURE_VALUE" in snap.values:
                seen_c.append(float(snap.values["CCD_TEMPERATURE_VALUE"]))

        client.add_listener(track)
        started = datetime.now(UTC)
        try:
            before = client.send_number(device, "CCD_EXPOSURE", {"CCD_EXPOSURE_VALUE": requested_s})
            blob = self._wait_image(client, device, before, timeout, epoch, exposure_s, started)
        finally:
            client.remove_listener(track)
        finished = datetime.now(UTC)
        temp_end, power_end = self.temperature_c(), self.cooler_power_pct()
        if temp_end is not None:
            seen_c.append(temp_end)
        data, header = decode_fits(blob.payload, blob.fmt)
        frame = CapturedFrame(
            data=data, header=header, frame_type=frame_type, exposure_s=exposure_s, set_point_c=self._set_point_c,
            temperature_start_c=temp_start, temperature_end_c=temp_end, cooler_power_start_pct=power_start,
            cooler_power_end_pct=power_end, started_utc=started, finished_utc=finished,
            overscan=self.state().overscan, settings=self._applied,
            temperature_min_c=min(seen_c) if seen_c else None, temperature_max_c=max(seen_c) if seen_c else None)
        stamp_observation(frame, self.device)
        return frame

    def _wait_image(self, client: IndiClient, device: str, before: int, timeout: float, epoch: int,
                    exposure_s: float, started: datetime) -> Any:
        """Wait for the BLOB of the exposure started at version ``before``; Alert/abort/timeout become errors."""

        def failure() -> str | None:
            if self._abort.is_set():
                raise ExposureAborted(f"{device}: exposure aborted")
            snap = client._props.get((device, "CCD_EXPOSURE"))
            if snap is not None and snap.version > before and snap.state == "Alert":
                return f"{device}: exposure failed (CCD_EXPOSURE Alert)"
            return None

        try:
            return client.wait_blob(device, timeout, epoch=epoch, alert=failure)
        except PropertyAlert as exc:
            msgs = client.messages(device, since=started)
            raise ExposureFailed(f"{exc}{': ' + ' | '.join(msgs[-2:]) if msgs else ''}") from exc
        except CameraTimeout as exc:
            raise CameraTimeout(f"{device}: no image {timeout:.1f} s after starting a {exposure_s} s exposure "
                                f"(download lost?)") from exc

    def abort(self) -> None:
        """Abort a running exposure (safe from another thread); the blocked :meth:`expose` raises ExposureAborted."""
        self._abort.set()
        client, device = self.client, self.device
        if client is None or device is None:
            return
        client.notify()
        if client.server_up and client.get(device, "CCD_ABORT_EXPOSURE") is not None:
            try:
                client.send_switch(device, "CCD_ABORT_EXPOSURE", ["ABORT"])
            except CameraError as exc:
                log.warning("abort failed: %s", exc)


def clamp_to_range(value: float, limits: tuple[float, float, float] | None, what: str) -> float:
    """``value`` clamped into the driver's advertised ``(min, max, step)`` range, with a logged warning when it moved.

    For rates (ramp slopes), where a gentler or steeper value than asked is safe and better than a refused command.
    Values whose exactness matters (gain, offset, set point, exposure) are refused instead, never clamped.
    A range with ``max <= min`` means the driver advertises none: the value is sent as it is.
    """
    if limits is None:
        return value
    low, high, _step = limits
    if high <= low or low <= value <= high:
        return value
    clamped = min(max(value, low), high)
    log.warning("%s: %g is outside the driver's range %g..%g; using %g", what, value, low, high, clamped)
    return clamped


def decode_fits(payload: bytes, fmt: str = ".fits") -> tuple[np.ndarray, fits.Header]:
    """Decode a FITS BLOB into (uint16/native image, header copy). Raises :class:`CameraError` on bad data."""
    if fmt and "fits" not in fmt.lower():
        raise CameraError(f"received a {fmt} image; darkd needs FITS (set CCD_TRANSFER_FORMAT to FITS)")
    try:
        with fits.open(io.BytesIO(payload), memmap=False) as hdul:
            hdu = next(h for h in hdul if h.data is not None)
            data = np.array(hdu.data)
            header = hdu.header.copy()
    except (OSError, ValueError, TypeError, StopIteration) as exc:
        raise CameraError(f"received an unreadable FITS image ({len(payload)} bytes): {exc}") from exc
    if data.ndim != 2:
        raise CameraError(f"received a {data.ndim}-D image of shape {data.shape}; expected a 2-D mono frame")
    for key in ("BZERO", "BSCALE"):
        header.remove(key, ignore_missing=True)
    return data, header
