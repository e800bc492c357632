"""``indi_darkd_sim_ccd``: the simulated QHY163M as an INDI driver (indipydriver, INDI XML on stdin/stdout).

The C ``indiserver`` launches it like any driver: ``indiserver -p 7624 indi_darkd_sim_ccd``. Device
"QHY CCD QHY163M-Sim" with the real QHY driver's vocabulary (:mod:`drivers.sim.vocabulary`), frames from the sensor
model (:mod:`drivers.sim.physics`), temperatures from the TEC model (:mod:`drivers.sim.cooler`). Simulated time runs
``TIME_SCALE`` times faster than wall time; FITS ``EXPTIME`` stays the nominal exposure. See drivers/sim/README.md.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import math
import os
import sys
import time
import xml.etree.ElementTree as ET
from datetime import UTC, datetime
from xml.sax.saxutils import quoteattr

import numpy as np
from indipydriver import Device, IPyDriver
from indipydriver.ipydriver import _makestart

from drivers.sim.cooler import TecCooler
from drivers.sim.electronics import AdcDrift
from drivers.sim.physics import GEOMETRIES, SensorGeometry, SensorModel
from drivers.sim.rendering import ExposureRequest, render_fits
from drivers.sim.rendering import bin_frame as bin_frame  # re-exported (tests import it from here)
from drivers.sim.vocabulary import (
    ALWAYS_DEFINED,
    AMP_GLOW,
    DEVICE_NAME,
    FRAME_TYPES,
    MAX_EXPOSURE_S,
    MIN_EXPOSURE_S,
    SimDefaults,
    build_vectors,
    ccd_info_members,
)

log = logging.getLogger("drivers.sim.driver")

POLL_S = 0.5  # wall seconds between temperature / cooler-power updates
COUNTDOWN_S = 1.0  # wall seconds between CCD_EXPOSURE countdown updates
BLOB_CHUNK = 1 << 20


def defaults_from_env(env: dict[str, str] | None = None) -> SimDefaults:
    """SimDefaults from DARKD_SIM_AMBIENT_C, _TIME_SCALE, _LIGHT_LEAK, _SEED, _SENSOR (clear error on bad values)."""
    env = dict(os.environ if env is None else env)

    def num(name: str, default: float) -> float:
        raw = env.get(f"DARKD_SIM_{name}")
        if raw is None or raw.strip() == "":
            return default
        try:
            value = float(raw)
        except ValueError as exc:
            raise ValueError(f"DARKD_SIM_{name}={raw!r} is not a number") from exc
        if not math.isfinite(value):
            raise ValueError(f"DARKD_SIM_{name}={raw!r} is not finite")
        return value

    sensor = env.get("DARKD_SIM_SENSOR", "FULL").strip().upper() or "FULL"
    if sensor not in GEOMETRIES:
        raise ValueError(f"DARKD_SIM_SENSOR={sensor!r}: expected FULL or SMALL")
    scale = num("TIME_SCALE", 1.0)
    if scale <= 0:
        raise ValueError(f"DARKD_SIM_TIME_SCALE must be > 0, got {scale}")
    leak = num("LIGHT_LEAK", 0.0)
    if leak < 0:
        raise ValueError(f"DARKD_SIM_LIGHT_LEAK must be >= 0, got {leak}")
    return SimDefaults(ambient_c=num("AMBIENT_C", 20.0), time_scale=scale, light_leak_e_per_s=leak,
                       seed=int(num("SEED", 0)), sensor=sensor)


async def _say(vector, state: str, message: str = "") -> None:  # type: ignore[no-untyped-def]
    """send_setVector with a one-off message (indipydriver would otherwise repeat it on every later update)."""
    await vector.send_setVector(message=message, state=state)
    vector._message = ""


class SimQhyDriver(IPyDriver):
    """The simulated camera. All mutable state lives on this instance."""

    def __init__(self, defaults: SimDefaults) -> None:
        self.defaults = defaults
        vectors = build_vectors(defaults, GEOMETRIES[defaults.sensor])
        self.device = Device(DEVICE_NAME, vectors)
        super().__init__(self.device)
        for name, vector in self.device.items():
            vector.enable = name in ALWAYS_DEFINED
        self.connected = False
        self.cooler = TecCooler(ambient_c=defaults.ambient_c, temperature_c=defaults.ambient_c)
        self.drift = AdcDrift()
        self.rng = np.random.default_rng(np.random.SeedSequence([defaults.seed, 2]))
        self.fits_cards: dict[str, tuple[object, str]] = {}
        self._model: SensorModel | None = None
        self._exposure: asyncio.Task[None] | None = None
        self._exposing = False  # True from CCD_EXPOSURE until the image is ready (a new exposure may then start)
        self._last_readout_sim_s = 0.0
        self._sim_clock_s = 0.0
        self._tx_lock = asyncio.Lock()

    # ------------------------------------------------------------------ helpers
    def vec(self, name: str):  # type: ignore[no-untyped-def]
        return self.device[name]

    def number(self, name: str, member: str) -> float:
        return float(self.device[name].data[member].getfloatvalue())

    def switch_on(self, name: str) -> str | None:
        vector = self.device[name]
        return next((m for m in vector.data if vector[m] == "On"), None)

    @property
    def time_scale(self) -> float:
        return self.number("SIM_SETTINGS", "TIME_SCALE")

    @property
    def geometry(self) -> SensorGeometry:
        return GEOMETRIES[self.switch_on("SIM_SENSOR") or "FULL"]

    @property
    def overscan_include(self) -> bool:
        return self.switch_on("OVERSCAN_MODE") == "INDI_ENABLED"

    async def model(self) -> SensorModel:
        """Sensor model for the current (geometry, seed); fixed patterns are computed once per pair, off the loop."""
        seed = int(self.number("SIM_SETTINGS", "SEED"))
        geometry = self.geometry
        if self._model is None or self._model.geometry != geometry or self._model.seed != seed:
            loop = asyncio.get_running_loop()
            self._model = await loop.run_in_executor(None, lambda: SensorModel(geometry, seed=seed))
        return self._model

    async def _set_switches(self, name: str, on: list[str], state: str = "Ok", message: str = "") -> None:
        vector = self.device[name]
        for member in vector.data:
            vector[member] = "On" if member in on else "Off"
        await _say(vector, state, message)

    # ------------------------------------------------------------------ transport
    async def _run_tx(self, txdata):  # type: ignore[no-untyped-def]
        """Write one INDI message to stdout, whole, under a lock.

        indiserver gives the driver one socket for stdin and stdout, and indipydriver makes stdin non-blocking, so
        stdout is non-blocking too: large BLOB writes must handle partial writes. (Reading indipydriver 3.1.2's writer:
        its buffered write + flush raises BlockingIOError on a full socket, and it yields to the event loop between
        BLOB chunks without a lock, so another message could land inside a BLOB.)
        """
        if self._stop:
            return
        async with self._tx_lock:
            if txdata.tag != "setBLOBVector" or not len(txdata):
                await self._write_all(ET.tostring(txdata) + b"\n")
                return
            await self._write_all(_makestart(txdata).encode())
            for oneblob in txdata.iter("oneBLOB"):
                await self._write_all(_makestart(oneblob).encode())
                await self._write_all(oneblob.text.encode())
                await self._write_all(b"</oneBLOB>")
            await self._write_all(b"</setBLOBVector>\n")

    async def _send_image(self, payload: bytes) -> None:
        """setBLOBVector CCD1 with the FITS bytes, base64-encoded once, straight to the socket (no str round trip)."""
        vector = self.device["CCD1"]
        if self._stop or not self.device.enable or not vector.enable:
            return
        encoded = await asyncio.get_running_loop().run_in_executor(None, base64.b64encode, payload)
        stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")
        head = (f"<setBLOBVector device={quoteattr(DEVICE_NAME)} name=\"CCD1\" state=\"Ok\" timeout=\"0\" "
                f"timestamp=\"{stamp}\"><oneBLOB name=\"CCD1\" size=\"{len(payload)}\" format=\".fits\">")
        async with self._tx_lock:
            await self._write_all(head.encode())
            await self._write_all(encoded)
            await self._write_all(b"</oneBLOB></setBLOBVector>\n")

    async def _write_all(self, data: bytes) -> None:
        """os.write until everything is out, waiting for writability when the socket buffer is full."""
        fd = sys.stdout.fileno()
        view = memoryview(data)
        loop = asyncio.get_running_loop()
        while view:
            try:
                written = os.write(fd, view[:BLOB_CHUNK])
                view = view[written:]
            except BlockingIOError:
                ready = loop.create_future()
                loop.add_writer(fd, lambda f=ready: f.done() or f.set_result(None))
                try:
                    await ready
                finally:
                    loop.remove_writer(fd)

    # ------------------------------------------------------------------ connection
    async def connect(self) -> None:
        self.connected = True
        await self._set_switches("CONNECTION", ["CONNECT"], message="QHY163M-Sim connected")
        self._refresh_geometry_values()
        for name, vector in self.device.items():
            if name not in ALWAYS_DEFINED:
                vector.enable = True
                await vector.send_defVector()

    async def disconnect(self, message: str = "QHY163M-Sim disconnected", state: str = "Idle") -> None:
        await self._cancel_exposure()
        self.connected = False
        for name, vector in self.device.items():
            if name not in ALWAYS_DEFINED and vector.enable:
                await vector.send_delProperty()
        await self._set_switches("CONNECTION", ["DISCONNECT"], state=state, message=message)

    def _refresh_geometry_values(self) -> None:
        """CCD_INFO and the CCD_FRAME limits follow the sensor and the overscan mode; the frame resets to full."""
        info = ccd_info_members(self.geometry, self.overscan_include)
        for key, value in info.items():
            self.device["CCD_INFO"][key] = value
        frame = self.device["CCD_FRAME"]
        width, height = int(info["CCD_MAX_X"]), int(info["CCD_MAX_Y"])
        limits = {"X": (0, width - 1), "Y": (0, height - 1), "WIDTH": (1, width), "HEIGHT": (1, height)}
        for key, (lo, hi) in limits.items():
            frame.data[key].min, frame.data[key].max = str(lo), str(hi)
        frame["X"], frame["Y"], frame["WIDTH"], frame["HEIGHT"] = 0, 0, width, height

    async def _send_geometry(self) -> None:
        self._refresh_geometry_values()
        if self.connected:
            frame = self.device["CCD_FRAME"]
            await frame.send_defVector(state="Ok")  # new limits (clients that keep the first definition ignore it)
            await frame.send_setVector(state="Ok")  # new values, before CCD_INFO announces the new size
            await self.device["CCD_INFO"].send_setVector(state="Ok")

    # ------------------------------------------------------------------ events
    async def rxevent(self, event) -> None:  # type: ignore[no-untyped-def]
        name = event.vectorname
        handler = getattr(self, f"_on_{name.lower()}", None)
        if handler is None:
            return
        try:
            await handler(event)
        except ValueError as exc:
            log.warning("%s rejected: %s", name, exc)
            await _say(self.device[name], "Alert", str(exc))

    async def _on_connection(self, event) -> None:  # type: ignore[no-untyped-def]
        want = event.get("CONNECT") == "On" or (event.get("DISCONNECT") == "Off" and "CONNECT" not in event)
        if want and not self.connected:
            await self.connect()
        elif not want and self.connected:
            await self.disconnect()
        else:
            await self.device["CONNECTION"].send_setVector(state="Ok")

    async def _on_sim_settings(self, event) -> None:  # type: ignore[no-untyped-def]
        vector = self.device["SIM_SETTINGS"]
        values = {k: event.getfloatvalue(k) for k in event}
        if values.get("TIME_SCALE", 1.0) <= 0:
            raise ValueError("TIME_SCALE must be > 0")
        if values.get("LIGHT_LEAK", 0.0) < 0:
            raise ValueError("LIGHT_LEAK must be >= 0")
        if "SEED" in values and self._busy():
            raise ValueError("cannot change SEED during an exposure")
        for key, value in values.items():
            vector[key] = int(value) if key == "SEED" else value
        if "AMBIENT_C" in values:
            self.cooler.ambient_c = values["AMBIENT_C"]
        await vector.send_setVector(state="Ok")

    async def _on_sim_sensor(self, event) -> None:  # type: ignore[no-untyped-def]
        if self._busy():
            raise ValueError("cannot change the sensor during an exposure")
        chosen = next((k for k, v in event.items() if v == "On"), None)
        if chosen is None:
            raise ValueError("choose FULL or SMALL")
        await self._set_switches("SIM_SENSOR", [chosen])
        await self._send_geometry()

    async def _on_sim_faults(self, event) -> None:  # type: ignore[no-untyped-def]
        vector = self.device["SIM_FAULTS"]
        for key, value in event.items():
            vector[key] = value
        await vector.send_setVector(state="Ok")
        if vector["DISCONNECT"] == "On":
            vector["DISCONNECT"] = "Off"
            await vector.send_setVector(state="Ok")
            if self.connected:
                log.warning("simulated fault: the camera drops its connection")
                await self.disconnect(message="simulated fault: camera disconnected", state="Alert")

    async def _consume_fault(self, fault: str) -> bool:
        vector = self.device["SIM_FAULTS"]
        if vector[fault] != "On":
            return False
        vector[fault] = "Off"
        await vector.send_setVector(state="Ok")
        return True

    async def _on_ccd_exposure(self, event) -> None:  # type: ignore[no-untyped-def]
        if not self.connected:
            raise ValueError("camera not connected")
        if self._busy():
            raise ValueError("an exposure is already running")
        requested_s = event.getfloatvalue("CCD_EXPOSURE_VALUE")
        if not MIN_EXPOSURE_S <= requested_s <= MAX_EXPOSURE_S and FRAME_TYPES.get(
                self.switch_on("CCD_FRAME_TYPE") or "") != "bias":
            raise ValueError(f"exposure {requested_s} s outside {MIN_EXPOSURE_S}..{MAX_EXPOSURE_S} s")
        request = self._request(requested_s)
        vector = self.device["CCD_EXPOSURE"]
        vector["CCD_EXPOSURE_VALUE"] = request.exposure_s
        await vector.send_setVector(state="Busy")
        self._exposing = True
        self._exposure = asyncio.get_running_loop().create_task(self._expose(request))
        self._exposure.add_done_callback(self._exposure_done)

    def _exposure_done(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            log.error("exposure failed", exc_info=task.exception())

    def _request(self, requested_s: float) -> ExposureRequest:
        frame_type = FRAME_TYPES[self.switch_on("CCD_FRAME_TYPE") or "FRAME_LIGHT"]
        exposure_s = MIN_EXPOSURE_S if frame_type == "bias" else requested_s  # BIAS forces the minimum exposure
        frame = self.device["CCD_FRAME"]
        roi = tuple(int(float(frame[k])) for k in ("X", "Y", "WIDTH", "HEIGHT"))
        return ExposureRequest(
            frame_type=frame_type, exposure_s=exposure_s, gain=self.number("CCD_GAIN", "GAIN"),
            offset=self.number("CCD_OFFSET", "OFFSET"), read_mode=int(self.number("READ_MODE", "MODE")),
            usb_traffic=int(self.number("USB_TRAFFIC", "TRAFFIC")),
            amp_glow=AMP_GLOW[self.switch_on("CCD_AMP_GLOW") or "AMP_AUTO"], overscan_include=self.overscan_include,
            binning=int(self.number("CCD_BINNING", "HOR_BIN")), roi=roi,  # type: ignore[arg-type]
            light_leak_e_per_s=self.number("SIM_SETTINGS", "LIGHT_LEAK"), start_utc=datetime.now(UTC),
            extra_cards=[(k, v, c) for k, (v, c) in self.fits_cards.items()])

    def _busy(self) -> bool:
        return self._exposing

    async def _cancel_exposure(self) -> bool:
        if not self._busy():
            return False
        assert self._exposure is not None
        self._exposure.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._exposure
        self._exposing = False
        return True

    async def _expose(self, request: ExposureRequest) -> None:
        try:
            await self._expose_steps(request)
        finally:
            if self._exposure is asyncio.current_task():
                self._exposing = False

    async def _expose_steps(self, request: ExposureRequest) -> None:
        """Countdown, render, then BLOB and CCD_EXPOSURE Ok; the camera counts as idle once the image is ready."""
        vector = self.device["CCD_EXPOSURE"]
        loop = asyncio.get_running_loop()
        scale = self.time_scale
        if await self._consume_fault("FAIL_NEXT_EXPOSURE"):
            await asyncio.sleep(min(0.2, request.exposure_s / scale))
            self._exposing = False
            vector["CCD_EXPOSURE_VALUE"] = 0
            await _say(vector, "Alert", "simulated fault: exposure failed")
            return
        temp_start = self.cooler.temperature_c
        start = loop.time()
        while True:
            remaining_s = request.exposure_s - (loop.time() - start) * scale
            if remaining_s <= 0:
                break
            vector["CCD_EXPOSURE_VALUE"] = round(remaining_s, 3)
            await vector.send_setVector(state="Busy")
            tick_s = max(0.1, min(COUNTDOWN_S, COUNTDOWN_S / scale))  # 1 s of wall or sim time, >= 0.1 s wall
            await asyncio.sleep(min(tick_s, remaining_s / scale))
        temperature_c = 0.5 * (temp_start + self.cooler.temperature_c)
        self.drift.idle(self._sim_clock_s - self._last_readout_sim_s)
        self._last_readout_sim_s = self._sim_clock_s
        drift_adu = self.drift.readout()
        reading = self.cooler.reading(self.rng)
        noise_rng = np.random.default_rng(self.rng.integers(0, 2**63))
        model = await self.model()
        t_render = time.perf_counter()
        try:
            payload = await loop.run_in_executor(None, self._render, model, request, temperature_c, drift_adu,
                                                 reading.temperature_c, noise_rng)
        except (ValueError, MemoryError) as exc:
            log.exception("rendering the frame failed")
            self._exposing = False
            vector["CCD_EXPOSURE_VALUE"] = 0
            await _say(vector, "Alert", f"exposure failed: {exc}")
            return
        self._exposing = False
        if await self._consume_fault("DROP_NEXT_DOWNLOAD"):
            log.warning("simulated fault: image download dropped")
            vector["CCD_EXPOSURE_VALUE"] = 0
            await vector.send_setVector(state="Ok")
            return
        t_send = time.perf_counter()
        await self._send_image(payload)
        log.info("%s %.4g s frame %s: rendered in %.3f s, sent in %.3f s", request.frame_type, request.exposure_s,
                 "x".join(map(str, request.roi[2:])), t_send - t_render, time.perf_counter() - t_send)
        vector["CCD_EXPOSURE_VALUE"] = 0
        await vector.send_setVector(state="Ok")

    @staticmethod
    def _render(model: SensorModel, request: ExposureRequest, temperature_c: float, drift_adu: float,
                reported_temperature_c: float, rng: np.random.Generator) -> bytes:
        """Sensor model → crop to CCD_FRAME → bin → FITS bytes (runs in a worker thread)."""
        return render_fits(model, request, temperature_c, drift_adu, reported_temperature_c, rng, DEVICE_NAME)

    async def _on_ccd_abort_exposure(self, event) -> None:  # type: ignore[no-untyped-def]
        aborted = await self._cancel_exposure()
        await self._set_switches("CCD_ABORT_EXPOSURE", [], state="Ok")
        if aborted:
            vector = self.device["CCD_EXPOSURE"]
            vector["CCD_EXPOSURE_VALUE"] = 0
            await _say(vector, "Idle", "Exposure aborted")

    async def _on_ccd_temperature(self, event) -> None:  # type: ignore[no-untyped-def]
        set_point_c = event.getfloatvalue("CCD_TEMPERATURE_VALUE")
        if not -50 <= set_point_c <= 50:
            raise ValueError(f"set point {set_point_c} C outside -50..50 C")
        self.cooler.set_point(set_point_c)
        await self._set_switches("CCD_COOLER", ["COOLER_ON"])
        await _say(self.device["CCD_TEMPERATURE"], "Busy", f"Setting temperature to {set_point_c:.2f} C")

    async def _on_ccd_temp_ramp(self, event) -> None:  # type: ignore[no-untyped-def]
        vector = self.device["CCD_TEMP_RAMP"]
        for key in event:
            value = event.getfloatvalue(key)
            if value < 0:
                raise ValueError(f"{key} must be >= 0")
            vector[key] = value
        self.cooler.ramp_c_per_min = self.number("CCD_TEMP_RAMP", "RAMP_SLOPE")
        await vector.send_setVector(state="Ok")

    async def _on_ccd_cooler(self, event) -> None:  # type: ignore[no-untyped-def]
        on = event.get("COOLER_ON") == "On" or event.get("COOLER_OFF") == "Off"
        self.cooler.switch(on)
        await self._set_switches("CCD_COOLER", ["COOLER_ON" if on else "COOLER_OFF"])
        if not on:
            await self.device["CCD_TEMPERATURE"].send_setVector(state="Idle")

    async def _on_ccd_cooler_mode(self, event) -> None:  # type: ignore[no-untyped-def]
        chosen = next((k for k, v in event.items() if v == "On"), "COOLER_AUTOMATIC")
        await self._set_switches("CCD_COOLER_MODE", [chosen])

    async def _set_numbers(self, event, limits: dict[str, tuple[float, float]], integer: bool = True) -> None:  # type: ignore[no-untyped-def]
        vector = self.device[event.vectorname]
        values = {k: event.getfloatvalue(k) for k in event}
        for key, value in values.items():
            lo, hi = limits[key]
            if not lo <= value <= hi:
                raise ValueError(f"{event.vectorname}.{key}={value} outside {lo}..{hi}")
        if self._busy():
            raise ValueError(f"cannot change {event.vectorname} during an exposure")
        for key, value in values.items():
            vector[key] = round(value) if integer else value
        await vector.send_setVector(state="Ok")

    def _limits(self, name: str) -> dict[str, tuple[float, float]]:
        vector = self.device[name]
        return {k: (float(m.min), float(m.max)) for k, m in vector.data.items()}

    async def _on_ccd_gain(self, event) -> None:  # type: ignore[no-untyped-def]
        await self._set_numbers(event, self._limits("CCD_GAIN"))

    async def _on_ccd_offset(self, event) -> None:  # type: ignore[no-untyped-def]
        await self._set_numbers(event, self._limits("CCD_OFFSET"))

    async def _on_read_mode(self, event) -> None:  # type: ignore[no-untyped-def]
        await self._set_numbers(event, self._limits("READ_MODE"))

    async def _on_usb_traffic(self, event) -> None:  # type: ignore[no-untyped-def]
        await self._set_numbers(event, self._limits("USB_TRAFFIC"))

    async def _on_ccd_binning(self, event) -> None:  # type: ignore[no-untyped-def]
        values = {k: event.getfloatvalue(k) for k in event}
        if len(set(values.values())) > 1 or ("HOR_BIN" in values) != ("VER_BIN" in values):
            # the QHY163M bins symmetrically: take the horizontal factor for both
            value = values.get("HOR_BIN", values.get("VER_BIN", 1.0))
            values = {"HOR_BIN": value, "VER_BIN": value}
        vector = self.device["CCD_BINNING"]
        for value in values.values():
            if not 1 <= value <= 4:
                raise ValueError(f"binning {value} outside 1..4")
        if self._busy():
            raise ValueError("cannot change binning during an exposure")
        for key, value in values.items():
            vector[key] = int(value)
        await vector.send_setVector(state="Ok")

    async def _on_ccd_frame(self, event) -> None:  # type: ignore[no-untyped-def]
        if self._busy():
            raise ValueError("cannot change the frame during an exposure")
        vector = self.device["CCD_FRAME"]
        info = ccd_info_members(self.geometry, self.overscan_include)
        max_w, max_h = int(info["CCD_MAX_X"]), int(info["CCD_MAX_Y"])
        current = {k: int(float(vector[k])) for k in ("X", "Y", "WIDTH", "HEIGHT")}
        current.update({k: round(event.getfloatvalue(k)) for k in event})
        x, y = min(max(current["X"], 0), max_w - 1), min(max(current["Y"], 0), max_h - 1)
        w, h = min(max(current["WIDTH"], 1), max_w - x), min(max(current["HEIGHT"], 1), max_h - y)
        vector["X"], vector["Y"], vector["WIDTH"], vector["HEIGHT"] = x, y, w, h
        await vector.send_setVector(state="Ok")

    async def _on_ccd_frame_reset(self, event) -> None:  # type: ignore[no-untyped-def]
        await self._set_switches("CCD_FRAME_RESET", [], state="Ok")
        self.device["CCD_BINNING"]["HOR_BIN"] = 1
        self.device["CCD_BINNING"]["VER_BIN"] = 1
        await self.device["CCD_BINNING"].send_setVector(state="Ok")
        await self._send_geometry()

    async def _on_ccd_frame_type(self, event) -> None:  # type: ignore[no-untyped-def]
        chosen = next((k for k, v in event.items() if v == "On"), None)
        if chosen is None:
            raise ValueError("choose one frame type")
        await self._set_switches("CCD_FRAME_TYPE", [chosen])

    async def _on_ccd_amp_glow(self, event) -> None:  # type: ignore[no-untyped-def]
        chosen = next((k for k, v in event.items() if v == "On"), None)
        if chosen is None:
            raise ValueError("choose AMP_AUTO, AMP_ON or AMP_OFF")
        await self._set_switches("CCD_AMP_GLOW", [chosen])

    async def _on_overscan_mode(self, event) -> None:  # type: ignore[no-untyped-def]
        if self._busy():
            raise ValueError("cannot change the overscan mode during an exposure")
        chosen = next((k for k, v in event.items() if v == "On"), None)
        if chosen is None:
            raise ValueError("choose INDI_ENABLED or INDI_DISABLED")
        await self._set_switches("OVERSCAN_MODE", [chosen])
        await self._send_geometry()

    async def _on_upload_mode(self, event) -> None:  # type: ignore[no-untyped-def]
        chosen = next((k for k, v in event.items() if v == "On"), None)
        if chosen != "UPLOAD_CLIENT":
            await self._set_switches("UPLOAD_MODE", ["UPLOAD_CLIENT"], state="Alert",
                                     message="the simulator uploads to the client only")
            return
        await self._set_switches("UPLOAD_MODE", ["UPLOAD_CLIENT"])

    async def _on_ccd_transfer_format(self, event) -> None:  # type: ignore[no-untyped-def]
        chosen = next((k for k, v in event.items() if v == "On"), None)
        if chosen != "FORMAT_FITS":
            await self._set_switches("CCD_TRANSFER_FORMAT", ["FORMAT_FITS"], state="Alert",
                                     message="the simulator sends FITS only")
            return
        await self._set_switches("CCD_TRANSFER_FORMAT", ["FORMAT_FITS"])

    async def _on_fits_header(self, event) -> None:  # type: ignore[no-untyped-def]
        members = ("KEYWORD_NAME", "KEYWORD_VALUE", "KEYWORD_COMMENT")
        texts = {k: " ".join((event.get(k) or "").split()) for k in members}
        key = texts["KEYWORD_NAME"].upper()
        if not key or len(key) > 8 or not all(c.isalnum() or c in "-_" for c in key):
            raise ValueError(f"invalid FITS keyword {key!r}")
        raw, comment = texts["KEYWORD_VALUE"], texts["KEYWORD_COMMENT"]
        if not (raw + comment).isascii() or not (raw + comment).isprintable():
            raise ValueError("FITS keyword values and comments must be printable ASCII")
        if not raw:
            self.fits_cards.pop(key, None)
        else:
            value: object = raw
            with contextlib.suppress(ValueError):
                value = float(raw) if any(c in raw for c in ".eE") else int(raw)
            self.fits_cards[key] = (value, comment)
        vector = self.device["FITS_HEADER"]
        for member in ("KEYWORD_NAME", "KEYWORD_VALUE", "KEYWORD_COMMENT"):
            vector[member] = texts[member]
        await vector.send_setVector(state="Ok")

    # ------------------------------------------------------------------ time
    async def hardware(self) -> None:
        """Advance the TEC in simulated time and publish temperature and cooler power every POLL_S."""
        last = time.monotonic()
        while not self._stop:
            await asyncio.sleep(POLL_S)
            now = time.monotonic()
            dt_sim_s = (now - last) * self.time_scale
            last = now
            self._sim_clock_s += dt_sim_s
            self.cooler.step(dt_sim_s)
            if not self.connected:
                continue
            reading = self.cooler.reading(self.rng)
            # power first: a client that reacts to the temperature then sees the power of the same instant
            power = self.device["CCD_COOLER_POWER"]
            power["CCD_COOLER_VALUE"] = reading.power_pct
            await power.send_setVector(state="Busy" if reading.power_pct > 0 else "Idle")
            temp = self.device["CCD_TEMPERATURE"]
            temp["CCD_TEMPERATURE_VALUE"] = reading.temperature_c
            threshold = self.number("CCD_TEMP_RAMP", "RAMP_THRESHOLD")
            if not self.cooler.cooler_on:
                state = "Idle"
            elif abs(self.cooler.temperature_c - self.cooler.set_point_c) <= threshold:
                state = "Ok"
            else:
                state = "Busy"
            await temp.send_setVector(state=state)


def main() -> None:
    """Console script ``indi_darkd_sim_ccd``: run the driver on stdin/stdout (logs on stderr)."""
    logging.basicConfig(level=os.environ.get("DARKD_SIM_LOG_LEVEL", "INFO"), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        defaults = defaults_from_env()
    except ValueError as exc:
        log.error("bad simulator settings: %s", exc)
        raise SystemExit(2) from exc
    driver = SimQhyDriver(defaults)
    asyncio.run(driver.asyncrun())


if __name__ == "__main__":
    main()
