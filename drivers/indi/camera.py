""":class:`IndiCamera`: the :class:`drivers.camera.Camera` protocol over INDI (``pyindi-client``).

Speaks every vendor's vocabulary through one small adapter per driver family (:mod:`drivers.indi.vendors`, chosen
by ``DRIVER_INFO.DRIVER_EXEC``): gain and offset are found by the KStars rule, vendor controls by name or label, and
cooler quirks (write-only ``CCD_COOLER``, no cooler switch, cooler-on refused when warming) are the adapter's. Drivers
with fewer properties, e.g. the stock ``CCD Simulator``, degrade gracefully: the capabilities (with a per-setting
table) say what exists, and asking for a setting the device lacks raises :class:`SettingUnsupported`. Every value is
checked against the range the driver advertises before it is sent (:meth:`IndiCamera.check_settings` checks a whole
request up front); ramp rates are clamped with a warning instead.

The camera reports ``connected`` only once :meth:`IndiCamera.connect` has finished (client, device, capabilities
published together); a call that needs the camera while another thread is connecting waits for that connect.

Every wait is bounded. The download timeout of an exposure is ``exposure_s / time_scale + readout_s`` where
``time_scale`` is the simulator's ``SIM_SETTINGS.TIME_SCALE`` when the device has it (1 for a real camera) and
``readout_s`` comes from the camera profile. When the server or the device goes away the current call raises
:class:`drivers.camera.CameraDisconnected`; the next call reconnects first (``reconnect=True``).
"""

from __future__ import annotations

import collections
import contextlib
import io
import logging
import threading
import time
from collections.abc import Callable, Mapping
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
from drivers.cooling import HeldElsewhereDetector, StabilityTracker, UnreachableDetector, warm_up_plan
from drivers.indi.client import IndiClient, PropertyAlert, PropertyMissing, PropertySnapshot
from drivers.indi.vendors import Control, VendorAdapter, Vocabulary, adapter_for
from drivers.observation import stamp_observation
from drivers.profiles import CameraProfile, ProfileMatch, detect_profile, match_score

log = logging.getLogger(__name__)

CCD_INTERFACE = 2  # INDI::BaseDevice::CCD_INTERFACE bit in DRIVER_INFO.DRIVER_INTERFACE
SETTING_TIMEOUT_S = 10.0
GEOMETRY_SETTLE_S = 3.0  # how long a new sensor size may follow an overscan switch
RETIRED_CLIENTS = 8  # closed INDI clients kept alive per camera (see IndiCamera._retire)
FRAME_TYPE_SWITCH = {FrameType.LIGHT: "FRAME_LIGHT", FrameType.BIAS: "FRAME_BIAS", FrameType.DARK: "FRAME_DARK",
                     FrameType.FLAT: "FRAME_FLAT"}
AMP_GLOW_SWITCH = {"auto": "AMP_AUTO", "on": "AMP_ON", "off": "AMP_OFF"}
#: CaptureSettings fields written through the family's vocabulary (number elements or option indexes)
NUMBER_SETTINGS = ("gain", "offset", "read_mode", "conversion_gain", "usb_traffic", "heater")
OVERSCAN_SWITCH = {OverscanMode.INCLUDE: "INDI_ENABLED", OverscanMode.IGNORE: "INDI_DISABLED"}


class IndiCamera:
    """A cooled INDI camera. See the module docstring; thread-safe for one capturing thread plus observers."""

    def __init__(self, host: str = "127.0.0.1", port: int = 7624, device: str | None = None, *,
                 profile: CameraProfile | None = None, reconnect: bool = True,
                 reconnect_timeout_s: float = 60.0, sample_interval_s: float = 1.0,
                 detect_profile: bool = True) -> None:
        self.host = host
        self.port = port
        self.requested_device = device
        self.profile = profile
        self._profile_configured = profile is not None
        self._detect_profile = detect_profile and profile is None
        self._profile_detected = False
        self.adapter: VendorAdapter = adapter_for(None)
        self.vocabulary = Vocabulary()
        self._ready = threading.Event()  # set only once connect() has published client, device and capabilities
        self._connect_called = False
        self._heaters_settled = False
        self.reconnect = reconnect
        self.reconnect_timeout_s = reconnect_timeout_s
        self.sample_interval_s = sample_interval_s
        self.device: str | None = None
        self.client: IndiClient | None = None
        self._caps: CameraCapabilities | None = None
        self._epoch = 0
        self._lock = threading.RLock()
        self._retired: collections.deque[IndiClient] = collections.deque(maxlen=RETIRED_CLIENTS)
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
        """Connect to the server, find the device (by name or the first CCD), connect it, set BLOB/upload modes.

        Nothing is published before the connect has finished: until then :meth:`state` says not connected and
        :attr:`capabilities` raises. A connect while this camera is already connected and healthy returns the current
        capabilities (two threads connecting at start-up share one connection instead of closing each other's).
        """
        self._connect_called = True
        with self._lock:
            if self._healthy() and self._caps is not None:
                return self._caps
            self._connect_timeout_s = timeout_s
            self._ready.clear()
            old, self.client, self._caps = self.client, None, None
            if old is not None:
                self._retire(old)
            client = IndiClient(self.host, self.port)
            try:
                caps = self._open(client, timeout_s)
            except BaseException:
                self._retire(client)
                raise
            self.client = client
            self._caps = caps
            self._heaters_settled = False
            self._ready.set()
            log.info("connected to %s on %s:%s (driver %s, adapter %s, profile %s)", self.device, self.host,
                     self.port, caps.driver_exec or "unknown", caps.adapter, caps.profile or "none")
            return caps

    def _open(self, client: IndiClient, timeout_s: float) -> CameraCapabilities:
        client.open(timeout_s)
        deadline = time.monotonic() + timeout_s
        device = client.wait_for(lambda: self._find_device(client), timeout_s,
                                 f"device {self.requested_device or 'with a CCD interface'} on "
                                 f"{self.host}:{self.port}")
        self.device = device
        info = client.get(device, "DRIVER_INFO")
        self.adapter = adapter_for(info.values.get("DRIVER_EXEC") if info else None, device)
        self._connect_device(client, device, max(1.0, deadline - time.monotonic()))
        self.vocabulary = self.adapter.discover(client.properties(device))
        caps = self._read_capabilities(client, device)
        if self._detect_profile:
            self.profile, self._profile_detected = detect_profile(caps.driver_exec, device, caps.width_px,
                                                                  caps.height_px, caps.pixel_size_um,
                                                                  caps.bits_per_pixel)
            caps = replace(caps, profile=self.profile.name, profile_detected=self._profile_detected)
        elif self.profile is not None:
            caps = replace(caps, profile=self.profile.name)
            if match_score(self.profile, caps.driver_exec, device, caps.width_px, caps.height_px) == 0 \
                    and self.profile.match != ProfileMatch():
                log.warning("configured camera profile %s does not match %s (driver %s, %dx%d px): its geometry "
                            "may not fit; use profile 'auto' to detect it", self.profile.name, device,
                            caps.driver_exec, caps.width_px, caps.height_px)
        if self.profile is not None and caps.bit_depth is None:
            caps = replace(caps, bit_depth=self.profile.adc_bits)
        if self._ambient_c is None:
            self._ambient_c = self._ambient_estimate(client, device)
        return caps

    def wait_ready(self, timeout_s: float) -> bool:
        """Block until a connect (in any thread) has finished; True when connected within ``timeout_s``."""
        return self._ready.wait(timeout_s) and self._healthy()

    def _healthy(self) -> bool:
        client, device = self.client, self.device
        return (self._ready.is_set() and client is not None and device is not None and client.server_up
                and client.epoch(device) == self._epoch and client.get(device, "CCD_EXPOSURE") is not None)

    def _find_device(self, client: IndiClient) -> str | None:
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
        if self.adapter.capture_format:
            self._select_if_present(client, device, "CCD_CAPTURE_FORMAT", self.adapter.capture_format)

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

    def _read_capabilities(self, client: IndiClient, device: str) -> CameraCapabilities:
        props = client.properties(device)
        info = props["CCD_INFO"]
        binning = props.get("CCD_BINNING")
        max_bin = int(binning.limits.get("HOR_BIN", (1, 1, 1))[1]) if binning else 1
        driver = props.get("DRIVER_INFO")
        adc = props.get("ADC_DEPTH")
        vocab = self.vocabulary

        def has(setting: str) -> bool:
            return vocab.get(setting) is not None

        return CameraCapabilities(
            device=device, width_px=int(info.values.get("CCD_MAX_X", 0)),
            height_px=int(info.values.get("CCD_MAX_Y", 0)), pixel_size_um=info.values.get("CCD_PIXEL_SIZE"),
            bits_per_pixel=int(info.values.get("CCD_BITSPERPIXEL", 16)),
            has_cooler="CCD_COOLER" in props or "CCD_TEMPERATURE" in props, has_cooler_power=has("cooler_power"),
            has_temp_ramp=has("temp_ramp"), has_gain=has("gain"), has_offset=has("offset"),
            has_read_mode=has("read_mode"), has_usb_traffic=has("usb_traffic"), has_amp_glow=has("amp_glow"),
            has_overscan=has("overscan"), max_binning=max(1, max_bin),
            driver_exec=str(driver.values.get("DRIVER_EXEC") or "") or None if driver else None,
            driver_version=str(driver.values.get("DRIVER_VERSION") or "") or None if driver else None,
            adapter=self.adapter.name,
            bit_depth=int(adc.values.get("BITS", 0)) or None if adc is not None and adc.kind == "number" else None,
            settings=vocab.table(), read_mode_labels=self._read_mode_labels(props))

    def _read_mode_labels(self, props: Mapping[str, PropertySnapshot]) -> tuple[str, ...]:
        """The read-mode names the driver offers: the element labels of a one-of-many read-mode switch, in order."""
        control = self.vocabulary.get("read_mode")
        snap = props.get(control.prop) if control is not None else None
        if control is None or snap is None or snap.kind != "switch" or control.element is not None:
            return ()
        return tuple(snap.labels.get(name) or name for name in snap.values)

    def _ambient_estimate(self, client: IndiClient, device: str) -> float | None:
        """The sensor temperature at connect time while the cooler is off (≈ ambient), else None."""
        temp = client.get(device, "CCD_TEMPERATURE")
        cooler = client.get(device, "CCD_COOLER")
        power = self.vocabulary.get("cooler_power")
        if temp is None:
            return None
        # a write-only switch (ZWO) says nothing; a cooler that starts ON (ToupTek, Moravian) is judged by its power
        cooler_off = (cooler is not None and cooler.readable and not self.adapter.cooler_starts_on
                      and not cooler.values.get("COOLER_ON", False))
        power_pct = self._control_value(power, client, device) if power is not None else None
        no_power = power_pct is not None and power_pct <= 1.0
        return temp.values.get("CCD_TEMPERATURE_VALUE") if (cooler_off or no_power) else None

    def disconnect(self) -> None:
        with self._lock:
            self._ready.clear()
            self._connect_called = False
            if self.client is not None:
                self._retire(self.client)
            self.client = None

    def _retire(self, client: IndiClient) -> None:
        """Close ``client`` and keep a reference to it for a while.

        ``libindiclient`` runs our callbacks on its own thread. If the last Python reference to a client went away
        while that thread was inside a callback, the C++ destructor would run on that very thread and join it —
        ``std::terminate``, the process aborts (seen once in a fresh-clone test run, right after a server stop).
        Closed clients are therefore released only after :data:`RETIRED_CLIENTS` later ones, long after their thread
        has ended.
        """
        client.close()
        self._retired.append(client)

    def _ensure(self) -> tuple[IndiClient, str]:
        """The live client and device; reconnects (bounded by ``reconnect_timeout_s``) when the link was lost.

        While another thread is connecting, this waits for that connect (the lock) instead of failing.
        """
        if self._healthy():
            assert self.client is not None and self.device is not None
            return self.client, self.device
        with self._lock:
            if self._healthy():
                assert self.client is not None and self.device is not None
                return self.client, self.device
            if not self._connect_called:
                raise CameraDisconnected("camera not connected: call connect() first")
            if not self.reconnect:
                raise CameraDisconnected(f"lost the connection to {self.device} on {self.host}:{self.port}")
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
                    # every setting again: some drivers reset them on connect (SVBony: SDK defaults; ZWO: BandWidth)
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
        caps = self._caps
        if caps is None or not self._ready.is_set():
            raise CameraDisconnected("camera not connected: call connect() first")
        return caps

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
        power = self.vocabulary.get("cooler_power")
        return self._control_value(power) if power is not None else None

    def _control_value(self, control: Control, client: IndiClient | None = None,
                       device: str | None = None) -> float | None:
        """The current value of a control: a number element, or the index of the switch option that is on."""
        client, device = client or self.client, device or self.device
        if client is None or device is None or not control.readable:
            return None
        snap = client.get(device, control.prop)
        if snap is None:
            return None
        if control.kind == "switch":
            on = snap.on_switches()
            return float(list(snap.values).index(on[0])) if on else None
        value = snap.values.get(control.element or "")
        return float(value) if value is not None else None

    def setting_value(self, setting: str) -> float | None:
        """The driver's current value of a darkd setting (None when absent or write-only)."""
        control = self.vocabulary.get(setting)
        return self._control_value(control) if control is not None else None

    def sample(self) -> TemperatureSample:
        temp = self.temperature_c()
        if temp is None:
            raise SettingUnsupported(f"{self.device}: no CCD_TEMPERATURE property (camera without cooling)")
        return TemperatureSample(datetime.now(UTC), temp, self.cooler_power_pct())

    def state(self) -> CameraState:
        client, device = self.client, self.device
        if not self._healthy() or client is None or device is None:
            return CameraState(connected=False, device=device, set_point_c=self._set_point_c)
        cooler = client.get(device, "CCD_COOLER")
        overscan = client.get(device, "OVERSCAN_MODE")
        exposure = client.get(device, "CCD_EXPOSURE")
        exposing = exposure is not None and exposure.state == "Busy"
        read_mode = self.setting_value("read_mode")
        usb_traffic = self.setting_value("usb_traffic")
        glow = client.get(device, "CCD_AMP_GLOW")
        amp_glow = next((name for name, element in AMP_GLOW_SWITCH.items() if glow is not None
                         and glow.values.get(element)), None)
        power = self.cooler_power_pct()
        if cooler is not None and cooler.readable:
            cooler_on: bool | None = bool(cooler.values.get("COOLER_ON"))
        else:  # write-only switch (ZWO) or none (FLI): judged by its effect, the power drawn
            cooler_on = power > 0.0 if power is not None else None
        return CameraState(
            connected=True, device=device, temperature_c=self.temperature_c(), set_point_c=self._set_point_c,
            cooler_on=cooler_on, heater=self.setting_value("heater"),
            cooler_power_pct=power, stable=self._stable, gain=self.setting_value("gain"),
            offset=self.setting_value("offset"),
            binning=int(b) if (b := self._value("CCD_BINNING", "HOR_BIN")) is not None else None,
            read_mode=int(read_mode) if read_mode is not None else None,
            overscan=(OverscanMode.INCLUDE if overscan.values.get("INDI_ENABLED") else OverscanMode.IGNORE)
            if overscan is not None else None,
            usb_traffic=int(usb_traffic) if usb_traffic is not None else None, amp_glow=amp_glow,
            exposing=exposing,
            exposure_remaining_s=exposure.values.get("CCD_EXPOSURE_VALUE") if exposing and exposure else None)

    # ------------------------------------------------------------------ cooling
    def set_temperature(self, set_point_c: float, ramp_c_per_min: float | None = None) -> None:
        """Turn the cooler on and set the set point (with ``CCD_TEMP_RAMP`` when given and supported)."""
        client, device = self._ensure()
        self._check_set_point(client, device, set_point_c)
        ramp = self.vocabulary.get("temp_ramp")  # CCD_TEMP_RAMP.RAMP_SLOPE; Moravian: .TEMP_RAMP, write-only
        if ramp_c_per_min is not None and ramp is not None and ramp.writable and ramp.element is not None:
            ramp_c_per_min = clamp_to_range(ramp_c_per_min, ramp.limits, f"{device}: {ramp.where} (°C/min)")
            if not ramp.readable or self._control_value(ramp) != ramp_c_per_min:
                before = client.send_number(device, ramp.prop, {ramp.element: ramp_c_per_min})
                self._await_setting(client, device, ramp.prop, before)
        current_c = self.temperature_c()
        if self.adapter.cooler_on_needs_colder_target:
            # Atik: the set point first; the cooler switch only when cooling down (it refuses cooler-on otherwise)
            self._send_set_point(client, device, set_point_c)
            if current_c is None or set_point_c < current_c:
                self._switch_cooler(client, device, on=True)
        else:
            self._switch_cooler(client, device, on=True)
            self._send_set_point(client, device, set_point_c)
        self._set_point_c = set_point_c
        self._ramp_c_per_min = ramp_c_per_min
        self._stable = False

    def _send_set_point(self, client: IndiClient, device: str, set_point_c: float) -> None:
        before = client.send_number(device, "CCD_TEMPERATURE", {"CCD_TEMPERATURE_VALUE": set_point_c})
        self._await_setting(client, device, "CCD_TEMPERATURE", before, allow_busy=True)

    def _switch_cooler(self, client: IndiClient, device: str, *, on: bool) -> None:
        """``CCD_COOLER`` on/off where the family has one (FLI: none, the set point alone drives the cooler).

        A write-only switch (ZWO) is always sent and never read back: its effect (power, temperature) is what
        :meth:`wait_until_stable` checks.
        """
        cooler = client.get(device, "CCD_COOLER") if self.adapter.cooler_switch else None
        element = "COOLER_ON" if on else "COOLER_OFF"
        if cooler is None or element not in cooler.values:
            return
        if cooler.readable and cooler.values.get(element, False):
            return
        before = client.send_switch(device, "CCD_COOLER", [element])
        if cooler.readable:
            self._await_setting(client, device, "CCD_COOLER", before, allow_busy=True)
        else:
            log.debug("%s: CCD_COOLER is write-only; %s sent, verified by its effect", device, element)

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
        elsewhere = HeldElsewhereDetector(set_point_c, tolerance_c=tolerance_c, window_s=unreachable_window_s,
                                          power_threshold_pct=unreachable_power_pct, ambient_c=self._ambient_c)
        resent_at_c: float | None = None
        deadline = time.monotonic() + timeout_s
        effect = CoolerEffect(set_point_c, tolerance_c, unreachable_window_s) if self._cooler_unreadable() else None
        self._stable = False
        while True:
            now = time.monotonic()
            sample = self.sample()
            if on_sample is not None:
                on_sample(sample)
            if tracker.feed(now, sample.temperature_c):
                self._stable = True
                return sample
            if effect is not None and effect.idle(now, sample):
                self._cooler_did_not_start(client, device, effect, sample)
            verdict = detector.feed(now, sample.temperature_c, sample.cooler_power_pct)
            if verdict is not None:
                raise SetPointUnreachable(verdict.message(set_point_c), reachable_c=verdict.reachable_c,
                                          ambient_limit_c=verdict.ambient_limit_c)
            if resent_at_c is None and (held_c := elsewhere.feed(now, sample.temperature_c,
                                                                 sample.cooler_power_pct)) is not None:
                # regulated to another set point (another client, or the driver itself): say it once more, only once
                log.warning("%s: the sensor holds %.2f °C, not the set point %.2f °C, below full power for %.0f s: "
                            "sending the set point again (did another INDI client change it?)", device, held_c,
                            set_point_c, unreachable_window_s)
                resent_at_c = held_c
                self.set_temperature(set_point_c, self._ramp_c_per_min)
                client, device = self._ensure()
            if now >= deadline:
                again = (f"; it was held at {resent_at_c:.2f} °C and the set point sent again: another INDI client "
                         f"may be changing it" if resent_at_c is not None else "")
                raise CameraTimeout(f"temperature not stable at {set_point_c} °C ± {tolerance_c} within {timeout_s} s "
                                    f"(now {sample.temperature_c:.2f} °C{again})")
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

    def _cooler_unreadable(self) -> bool:
        """A write-only ``CCD_COOLER`` (ZWO) whose effect can be seen in a cooler-power reading."""
        cooler = self.vocabulary.get("cooler")
        return cooler is not None and not cooler.readable and self.vocabulary.get("cooler_power") is not None

    def _cooler_did_not_start(self, client: IndiClient, device: str, effect: CoolerEffect,
                              sample: TemperatureSample) -> None:
        """The write-only cooler switch shows no effect: send it once more, then refuse with what was seen."""
        if effect.resent:
            raise SettingNotApplied(
                f"{device}: the cooler did not start (CCD_COOLER is write-only; power stayed "
                f"{sample.cooler_power_pct or 0:.0f} % and the sensor at {sample.temperature_c:.2f} °C for "
                f"{2 * effect.window_s:.0f} s with set point {effect.set_point_c:g} °C)",
                setting="cooler", requested="COOLER_ON", actual=sample.cooler_power_pct)
        log.warning("%s: no cooler power %.0f s after COOLER_ON (write-only switch): sending it again", device,
                    effect.window_s)
        client.send_switch(device, "CCD_COOLER", ["COOLER_ON"])
        effect.resend(time.monotonic())

    def warm_up(self, target_c: float, rate_c_per_min: float = 5.0, timeout_s: float = 3600.0) -> None:
        """Warm gently to ``target_c`` at ``rate_c_per_min``, then switch the cooler off."""
        client, device = self._ensure()
        current = self.temperature_c()
        if current is None:
            return
        deadline = time.monotonic() + timeout_s
        if (ramp := self.vocabulary.get("temp_ramp")) is not None and ramp.writable:
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
        self._switch_cooler(client, device, on=False)
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

    def check_settings(self, settings: CaptureSettings, exposure_s: float | None = None,
                       set_point_c: float | None = None) -> None:
        """Check a whole request against what the driver offers and advertises, before anything is sent.

        Raises :class:`SettingUnsupported` for a setting the camera lacks or only reports (read-only), and
        :class:`SettingNotApplied` naming the driver's range for a gain, offset, mode, binning, exposure or set point
        outside it. Capture calls this before the series starts (cooling included), so nothing fails mid-series.
        """
        client, device = self._ensure()
        for setting in NUMBER_SETTINGS:
            value = getattr(settings, setting, None)
            if value is not None:
                self._checked_control(device, setting, float(value))
        if settings.amp_glow is not None:
            if str(settings.amp_glow).lower() not in AMP_GLOW_SWITCH:
                raise ValueError(f"amp_glow must be one of {sorted(AMP_GLOW_SWITCH)}, got {settings.amp_glow!r}")
            self._checked_control(device, "amp_glow", None)
        if settings.overscan is not None and OverscanMode(settings.overscan) is OverscanMode.INCLUDE \
                and self.vocabulary.get("overscan") is None:
            raise SettingUnsupported(f"{device} has no OVERSCAN_MODE: cannot include the overscan")
        self._check_binning(client, device, int(settings.binning or 1))
        if exposure_s is not None:
            self._check_exposure(client, device, exposure_s)
        if set_point_c is not None:
            self._check_set_point(client, device, set_point_c)

    def _checked_control(self, device: str, setting: str, value: float | None) -> Control:
        control = self.vocabulary.get(setting)
        label = setting.replace("_", " ")
        if control is None:
            raise SettingUnsupported(f"{device} has no {self.vocabulary.expected.get(setting, setting)}: "
                                     f"cannot set {label}")
        if not control.writable:
            raise SettingUnsupported(f"{device}: {control.where} is read-only on this driver: darkd cannot set "
                                     f"{label} (it records the value instead)")
        if value is not None and (why := control.check(value)) is not None:
            raise SettingNotApplied(f"{device}: {why}", setting=setting, requested=value,
                                    actual=self._control_value(control))
        return control

    @staticmethod
    def _check_binning(client: IndiClient, device: str, binning: int) -> None:
        snap = client.get(device, "CCD_BINNING")
        if snap is None:
            if binning != 1:
                raise SettingUnsupported(f"{device} has no CCD_BINNING: cannot bin {binning}x{binning}")
            return
        low, high, _ = snap.limits.get("HOR_BIN", (1.0, 1.0, 1.0))
        if high > low and not low <= binning <= high:
            raise SettingNotApplied(f"{device}: binning {binning} is outside the driver's range {low:g}..{high:g}",
                                    setting="binning", requested=binning, actual=snap.values.get("HOR_BIN"))

    @staticmethod
    def _check_exposure(client: IndiClient, device: str, exposure_s: float) -> None:
        if not exposure_s >= 0:
            raise ValueError(f"exposure_s must be >= 0, got {exposure_s}")
        exp = client.require(device, "CCD_EXPOSURE")
        low, high, _ = exp.limits.get("CCD_EXPOSURE_VALUE", (0.0, 0.0, 0.0))
        if high > low and exposure_s > high:  # below the minimum is a bias: taken at the driver's minimum
            raise SettingNotApplied(f"{device}: exposure {exposure_s:g} s is outside the driver's range "
                                    f"{low:g}..{high:g} s", setting="exposure_s", requested=exposure_s, actual=None)

    @staticmethod
    def _check_set_point(client: IndiClient, device: str, set_point_c: float) -> None:
        temp = client.get(device, "CCD_TEMPERATURE")
        if temp is None:
            raise SettingUnsupported(f"{device} has no CCD_TEMPERATURE: it cannot be cooled")
        low, high, _ = temp.limits.get("CCD_TEMPERATURE_VALUE", (0.0, 0.0, 0.0))
        if high > low and not low <= set_point_c <= high:
            raise SettingNotApplied(f"{device}: set point {set_point_c:g} °C is outside the driver's range "
                                    f"{low:g}..{high:g} °C", setting="set_point_c", requested=set_point_c,
                                    actual=None)

    def apply_settings(self, settings: CaptureSettings) -> CaptureSettings:
        """Check every value against the driver's range, then apply each one and verify it by reading it back.

        Writes go through the family adapter (Atik selects PRESET_CUSTOM before gain/offset); write-only controls
        (Moravian heater/fan) are sent without a read-back. Returns the settings as the driver reports them.
        """
        client, device = self._ensure()
        self.check_settings(settings)
        result: dict[str, Any] = {}
        if settings.overscan is not None:
            mode = OverscanMode(settings.overscan)
            control = self.vocabulary.get("overscan")
            if control is not None:
                info = client.get(device, "CCD_INFO")
                changing = not (client.require(device, control.prop).values.get(OVERSCAN_SWITCH[mode]))
                self._set_switch(client, device, control.prop, OVERSCAN_SWITCH[mode], "overscan")
                if changing and info is not None:
                    # The QHY driver answers the switch first and sends the new sensor size (CCD_INFO) after it:
                    # wait for that size, or CCD_FRAME below would be set from the old one.
                    with contextlib.suppress(CameraTimeout):
                        client.wait_update(device, "CCD_INFO", info.version, GEOMETRY_SETTLE_S, epoch=self._epoch)
            result["overscan"] = mode
        for setting in NUMBER_SETTINGS:
            value = getattr(settings, setting)
            if value is not None:
                result[setting] = self._set_control(client, device, setting, value)
        if settings.amp_glow is not None:
            glow = str(settings.amp_glow).lower()
            control = self._checked_control(device, "amp_glow", None)
            self._set_switch(client, device, control.prop, AMP_GLOW_SWITCH[glow], "amp glow")
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
        result["binning"] = binning
        result["subframe"] = self._apply_frame(client, device, settings.subframe)
        applied = replace(CaptureSettings(), **result)
        self._applied = replace(applied, subframe=settings.subframe)
        return applied

    def _set_control(self, client: IndiClient, device: str, setting: str, value: float) -> int:
        """Write one setting where this family keeps it (presets first), verified by read-back when readable."""
        control = self._checked_control(device, setting, float(value))
        for prop, element in self.adapter.prepare(setting, client.properties(device)):
            self._set_switch(client, device, prop, element, f"{setting} (preset {element})")
        label = setting.replace("_", " ")
        if control.kind == "switch":
            element = control.options[int(value)]
            if control.readable:
                self._set_switch(client, device, control.prop, element, label)
            else:
                client.send_switch(device, control.prop, [element])
            return int(value)
        if not control.readable:  # write-only number (Moravian CCD_WINDOW_HEATING, CCD_FAN): sent, not read back
            client.send_number(device, control.prop, {control.element or "": value})
            return round(value)
        return round(self._set_number(client, device, control.prop, control.element or "", value, label))

    def _settle_heaters(self, client: IndiClient, device: str) -> None:
        """Heaters off before a bias/dark series (a heater changes the dark signal), unless the request set one."""
        self._heaters_settled = True
        for control in self.adapter.heater_controls(self.vocabulary):
            off = control.off_value()
            if self._control_value(control) == off:
                continue
            self._set_control(client, device, control.setting, off)
            log.info("%s: %s switched off for the bias/dark series (%s)", device, control.setting, control.where)

    def _check_header(self, header: fits.Header, device: str) -> None:
        """Where the driver writes GAIN/OFFSET into the FITS, the frame's own header must match the request."""
        for setting, key in self.adapter.fits_keys.items():
            requested = getattr(self._applied, setting, None)
            if requested is None or key not in header:
                continue
            try:
                written = float(header[key])
            except (TypeError, ValueError):
                continue
            if abs(written - float(requested)) > 0.5:
                raise SettingNotApplied(f"{device}: the frame says {key}={written:g} but {setting} {requested} was "
                                        "requested", setting=setting, requested=requested, actual=written)

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
        return None if subframe is None else current

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
        if frame_type in (FrameType.BIAS, FrameType.DARK) and self._applied.heater is None \
                and not self._heaters_settled:
            self._settle_heaters(client, device)
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
        self._check_header(header, device)
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


class CoolerEffect:
    """Verifies a write-only cooler switch by its effect: some power drawn, or the sensor reaching the set point.

    ``idle`` is True once ``window_s`` has passed with 0 % power while the sensor is still warmer than the set point.
    """

    def __init__(self, set_point_c: float, tolerance_c: float, window_s: float) -> None:
        self.set_point_c = set_point_c
        self.tolerance_c = tolerance_c
        self.window_s = window_s
        self.since: float | None = None
        self.resent = False

    def idle(self, now: float, sample: TemperatureSample) -> bool:
        working = (sample.cooler_power_pct or 0.0) > 0.0 or sample.temperature_c <= self.set_point_c + self.tolerance_c
        if working:
            self.since = None
            return False
        if self.since is None:
            self.since = now
        return now - self.since >= self.window_s

    def resend(self, now: float) -> None:
        self.resent = True
        self.since = now


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
