"""Capture a series of calibration frames: cool, wait for stability, expose N frames, check, retake, write atomically.

``capture_series`` is resumable: frames already complete in ``out_dir`` (``<prefix>_0001.fits`` ...; files are only
ever renamed into place, so an existing file is complete) count and are not retaken. A frame that fails the quality
check (:mod:`calib.quality`) is written to ``out_dir/rejected/`` with its reasons and retaken, up to ``max_retakes``
times. When the INDI server or the device drops, the camera is reconnected, settings and cooling restored, and the
*current* frame retried — never a duplicate, never a gap. A ``stop`` event ends the series between frames or aborts
the running exposure.

Header keys stamped here (on top of the driver's and the camera's ``SET-TEMP``/``CCDTEMP1``/``CCDTEMP2``/``COOLPWR*``):
library key fields (``GAIN``, ``OFFSET``, ``XBINNING``, ``YBINNING``, ``READMODE``, ``USBTRAF``, ``AMPGLOW``,
``OVSCMODE``), geometry from the camera profile (``BIASSEC``, ``DATASEC``, ``TRIMSEC``, ``OBSEC``), overscan level
(``OVERSCAN`` mean, ``OVSCMED``, ``OVSCSTD``, ADU), quality (``QUALOK``, ``QCMEAN``, ``QCREASON``), ``FRAMENUM``.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import re
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from astropy.io import fits

from calib.frames import FrameError, atomic_write_bytes, check_compression, fits_bytes, read_header
from calib.quality import (
    FrameExpectation,
    QualityThresholds,
    QualityVerdict,
    check_frame,
    overscan_stats,
)
from daemon.library.keys import MAX_FRAMES_PER_KEY
from daemon.settings import CoolingSettings
from drivers.camera import (
    Camera,
    CameraDisconnected,
    CameraError,
    CameraTimeout,
    CapturedFrame,
    CaptureSettings,
    ExposureAborted,
    ExposureFailed,
    FrameType,
    OverscanMode,
    TemperatureSample,
)
from drivers.profiles import CameraProfile, FrameGeometry, ProfileError

log = logging.getLogger(__name__)

_PREFIX = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")
MAX_RECONNECTS_PER_FRAME = 5
MIN_FRAMES_FOR_SELF_EXPECTATION = 3
DEFAULT_SATURATION_ADU = 65520.0  # a camera without a profile: the QHY 12-bit ADC scaled to 16 bit


class SeriesFailed(CameraError):
    """A frame could not be captured within its retakes or the camera was not recovered; ``result`` is partial."""

    def __init__(self, message: str, result: SeriesResult) -> None:
        super().__init__(message)
        self.result = result


@dataclass
class SeriesRequest:
    """What to capture. ``set_point_c=None`` captures at whatever temperature the camera has (no cooling wait).

    ``expected`` is the library's prediction for the leak check (see :mod:`calib.quality`); without it the series
    predicts from its own accepted frames once it has three. ``quality`` overrides the default thresholds.
    """

    frame_type: FrameType | str
    exposure_s: float
    count: int
    set_point_c: float | None
    settings: CaptureSettings
    name_prefix: str
    max_retakes: int = 3
    extra_headers: dict[str, Any] = field(default_factory=dict)
    expected: FrameExpectation | None = None
    quality: QualityThresholds | None = None
    compression: str = "none"  # "rice": lossless tile compression of the written frames ([library] compression)

    def validate(self) -> None:
        FrameType(self.frame_type)
        check_compression(self.compression)
        if not 1 <= self.count <= MAX_FRAMES_PER_KEY:
            raise ValueError(f"count must be 1..{MAX_FRAMES_PER_KEY}, got {self.count}")
        if not self.exposure_s >= 0:
            raise ValueError(f"exposure_s must be >= 0, got {self.exposure_s}")
        if self.max_retakes < 0:
            raise ValueError(f"max_retakes must be >= 0, got {self.max_retakes}")
        if not _PREFIX.match(self.name_prefix):
            raise ValueError(f"name_prefix {self.name_prefix!r} must be letters, digits, '._+-' (no path)")

    def frame_path(self, out_dir: Path, index: int) -> Path:
        return out_dir / f"{self.name_prefix}_{index:04d}.fits"


@dataclass
class FrameRecord:
    """One written frame (accepted, or rejected under ``rejected/``), as the library index records it."""

    path: Path
    index: int
    sha256: str
    temperature_start_c: float | None
    temperature_end_c: float | None
    quality_ok: bool
    reasons: list[str]
    overscan_mean_adu: float | None
    overscan_std_adu: float | None = None
    corrected_mean_adu: float | None = None
    attempt: int = 0
    resumed: bool = False


@dataclass
class SeriesResult:
    """Accepted frames in index order, rejected frames in capture order, and whether the series was stopped early."""

    frames: list[FrameRecord] = field(default_factory=list)
    rejected: list[FrameRecord] = field(default_factory=list)
    stopped: bool = False
    reconnects: int = 0

    @property
    def complete(self) -> bool:
        return not self.stopped


# ---------------------------------------------------------------------------------------------------- cooling
def cool_and_wait(camera: Camera, set_point_c: float, cooling: CoolingSettings,
                  on_sample: Callable[[TemperatureSample], None] | None = None) -> TemperatureSample:
    """Set the set point (with the configured ramp) and block until darkd judges it stable.

    Raises :class:`drivers.camera.SetPointUnreachable` (with reachable and ambient-limit temperatures) or
    :class:`drivers.camera.CameraTimeout` after ``cooling.timeout_s``.
    """
    camera.set_temperature(set_point_c, cooling.ramp_c_per_min)
    return camera.wait_until_stable(set_point_c, tolerance_c=cooling.tolerance_c, hold_s=cooling.hold_s,
                                    timeout_s=cooling.timeout_s, on_sample=on_sample,
                                    unreachable_window_s=cooling.unreachable_window_s,
                                    unreachable_power_pct=cooling.unreachable_power_pct)


# ---------------------------------------------------------------------------------------------------- headers
def frame_geometry(profile: CameraProfile | None, frame: CapturedFrame) -> FrameGeometry:
    """Sections for the received frame: from the profile (validated against the frame size) or the whole frame."""
    rows, cols = frame.data.shape
    if frame.settings.subframe is not None or profile is None:
        whole = f"[1:{cols},1:{rows}]"
        return FrameGeometry(cols, rows, whole, whole)
    return profile.sections_for(frame.overscan or OverscanMode.IGNORE, frame.data.shape,
                                frame.settings.binning or 1)


def stamp_header(header: fits.Header, frame: CapturedFrame, request: SeriesRequest, geometry: FrameGeometry,
                 index: int) -> None:
    """Library key fields, geometry and series keys (see the module docstring)."""
    s = frame.settings
    header["FRAMENUM"] = (index, "index in the darkd series")
    header["SERIES"] = (request.name_prefix, "darkd series name prefix")
    if request.set_point_c is not None:
        header["SET-TEMP"] = (round(request.set_point_c, 3), "[C] cooler set point")
    for key, value, comment in (("GAIN", s.gain, "sensor gain setting"), ("OFFSET", s.offset, "sensor offset"),
                                ("READMODE", s.read_mode, "read mode"), ("USBTRAF", s.usb_traffic, "USB traffic"),
                                ("AMPGLOW", s.amp_glow, "amp-glow mode (auto|on|off)")):
        if value is not None:
            header[key] = (value, comment)
    header.setdefault("XBINNING", s.binning or 1)
    header.setdefault("YBINNING", s.binning or 1)
    if frame.overscan is not None:
        header["OVSCMODE"] = (frame.overscan.value, "OVERSCAN_MODE include|ignore")
    for key, value in geometry.header_cards().items():
        header[key] = (value, "IRAF section, 1-based inclusive, x first")
    for key, value in request.extra_headers.items():
        header[str(key).upper()[:8]] = value


def fits_text(text: str) -> str:
    """``text`` as a FITS string value (printable ASCII): ``°C`` → ``C``, ``±`` → ``+/-``, anything else → ``?``."""
    text = text.replace("°", "").replace("±", "+/-").replace("σ", "sigma").replace("⁻", "-")
    return "".join(c if " " <= c <= "~" else "?" for c in text)


def encode_frame(data: np.ndarray, header: fits.Header, compression: str = "none") -> bytes:
    """Serialise to FITS bytes as ADU (``BITPIX=16``/``BZERO=32768``, ``BUNIT``, ``CHECKSUM``/``DATASUM``).

    ``compression="rice"``: the image in a lossless Rice tile-compressed extension (HDU 1) after an empty primary
    (:func:`calib.frames.to_hdulist`; ``[library] compression``)."""
    header = header.copy()
    if "BUNIT" not in header:
        header["BUNIT"] = ("adu", "pixel values are ADU")
    return fits_bytes(data, header, bitpix16=True, compression=compression)


# ---------------------------------------------------------------------------------------------------- processing
@dataclass
class ProcessedFrame:
    """A frame after stamping and checking, ready to write."""

    payload: bytes
    verdict: QualityVerdict
    overscan_mean_adu: float | None
    overscan_std_adu: float | None


def process_frame(frame: CapturedFrame, request: SeriesRequest, profile: CameraProfile | None, index: int,
                  expected: FrameExpectation | None, thresholds: QualityThresholds) -> ProcessedFrame:
    """The post-download pipeline: geometry, header stamping, overscan statistics, quality check, encoding."""
    geometry = frame_geometry(profile, frame)
    header = frame.header
    stamp_header(header, frame, request, geometry, index)
    ovs = overscan_stats(frame.data, geometry.biassec) if geometry.biassec else None
    if ovs is not None:
        for key, card in ovs.header_cards().items():
            header[key] = card
    verdict = check_frame(
        frame.data, frame_type=FrameType(request.frame_type).value, set_point_c=request.set_point_c,
        temperature_start_c=frame.temperature_start_c, temperature_end_c=frame.temperature_end_c,
        temperature_min_c=frame.temperature_min_c, temperature_max_c=frame.temperature_max_c,
        datasec=geometry.datasec, biassec=geometry.biassec, expected=expected, thresholds=thresholds)
    header["QUALOK"] = (verdict.ok, "darkd per-frame quality check passed")
    header["QCMEAN"] = (round(verdict.metrics["corrected_mean_adu"], 3), "[adu] mean(DATASEC) - mean(BIASSEC)")
    if verdict.reasons:
        header["QCREASON"] = fits_text("; ".join(verdict.reasons))[:68]
    return ProcessedFrame(encode_frame(frame.data, header, request.compression), verdict, ovs.mean_adu if ovs else None,
                          ovs.std_adu if ovs else None)


def _existing_frames(out_dir: Path, request: SeriesRequest) -> list[tuple[int, Path]]:
    """The series' frames already on disk, ``(index, path)`` in index order, from one listing of ``out_dir``."""
    pattern = re.compile(rf"{re.escape(request.name_prefix)}_(\d{{4,}})\.fits")
    found = []
    for path in out_dir.iterdir():
        match = pattern.fullmatch(path.name)
        if match and 1 <= (index := int(match.group(1))) <= request.count and path.is_file() \
                and path == request.frame_path(out_dir, index):
            found.append((index, path))
    return sorted(found)


def _record_from_file(path: Path, index: int) -> FrameRecord | None:
    """A record for an already-written frame, or None when the file is not a usable FITS frame."""
    try:
        header = read_header(path)
    except FrameError as exc:
        log.warning("ignoring unreadable existing frame %s: %s", path, exc)
        return None
    digest = hashlib.sha256(path.read_bytes()).hexdigest()

    def num(key: str) -> float | None:
        value = header.get(key)
        return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None

    return FrameRecord(path=path, index=index, sha256=digest, temperature_start_c=num("CCDTEMP1"),
                       temperature_end_c=num("CCDTEMP2"), quality_ok=bool(header.get("QUALOK", True)), reasons=[],
                       overscan_mean_adu=num("OVERSCAN"), overscan_std_adu=num("OVSCSTD"),
                       corrected_mean_adu=num("QCMEAN"), resumed=True)


@contextlib.contextmanager
def _abort_on_stop(camera: Camera, stop: threading.Event | None) -> Iterator[None]:
    """While the body runs, a watcher aborts the exposure as soon as ``stop`` is set."""
    if stop is None:
        yield
        return
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            if stop.wait(0.1):
                if not done.is_set():
                    camera.abort()
                return

    watcher = threading.Thread(target=watch, name="darkd-abort-watch", daemon=True)
    watcher.start()
    try:
        yield
    finally:
        # Not joined: waiting for the watcher's next 0.1 s poll cost ~50 ms per frame. A watcher that wakes late can
        # only abort when ``stop`` is set, which is when every exposure should be aborted anyway.
        done.set()


def _expectation(request: SeriesRequest, accepted: list[FrameRecord]) -> FrameExpectation | None:
    if request.expected is not None:
        return request.expected
    means = [r.corrected_mean_adu for r in accepted if r.corrected_mean_adu is not None]
    if len(means) < MIN_FRAMES_FOR_SELF_EXPECTATION:
        return None
    return FrameExpectation.from_means(means, source="series")


def capture_series(camera: Camera, request: SeriesRequest, out_dir: Path, *, cooling: CoolingSettings,
                   on_frame: Callable[[FrameRecord], None] | None = None,
                   on_temperature: Callable[[TemperatureSample], None] | None = None,
                   stop: threading.Event | None = None) -> SeriesResult:
    """Capture ``request.count`` good frames into ``out_dir`` (see the module docstring). Raises :class:`SeriesFailed`
    when a frame fails ``max_retakes + 1`` times or the camera cannot be recovered; other camera errors propagate."""
    request.validate()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    frame_type = FrameType(request.frame_type)
    profile = camera.profile
    thresholds = request.quality or QualityThresholds(
        temperature_tolerance_c=max(0.5, cooling.tolerance_c),
        saturation_adu=float(profile.saturation_adu if profile is not None else DEFAULT_SATURATION_ADU))
    result = SeriesResult()
    existing: dict[int, FrameRecord] = {}
    for index, path in _existing_frames(out_dir, request):
        if stop is not None and stop.is_set():
            result.stopped = True
            return result
        if (rec := _record_from_file(path, index)) is not None:
            existing[index] = rec
    result.frames.extend(existing.values())
    if len(existing) == request.count:
        return result
    if stop is not None and stop.is_set():
        result.stopped = True
        return result
    camera.check_settings(request.settings, request.exposure_s, request.set_point_c)  # refused before cooling

    def prepare() -> None:
        if request.set_point_c is not None and camera.capabilities.has_cooler:
            cool_and_wait(camera, request.set_point_c, cooling, on_temperature)
        applied = camera.apply_settings(request.settings)
        log.info("settings applied: %s", applied)

    def recover(reason: str) -> None:
        """Reconnect (the camera retries within its own bound, ``cooling.reconnect_timeout_s`` for the daemon's
        cameras), then restore settings and cooling."""
        result.reconnects += 1
        log.warning("camera lost (%s); reconnecting", reason)
        try:
            camera.reconnect_now()
            prepare()
        except (CameraDisconnected, CameraTimeout) as exc:
            raise SeriesFailed(f"camera did not come back: {exc}", result) from exc

    prepare()
    for index in range(1, request.count + 1):
        if index in existing:
            continue
        attempts = 0
        reconnects = 0
        while True:
            if stop is not None and stop.is_set():
                result.stopped = True
                return result
            if not camera.state().connected:
                recover("not connected before the exposure")
            try:
                with _abort_on_stop(camera, stop):
                    frame = camera.expose(frame_type, request.exposure_s)
            except ExposureAborted:
                if stop is not None and stop.is_set():
                    result.stopped = True
                    return result
                raise
            except CameraDisconnected as exc:
                reconnects += 1
                if reconnects > MAX_RECONNECTS_PER_FRAME:
                    raise SeriesFailed(f"frame {index}: camera dropped {reconnects} times: {exc}", result) from exc
                recover(str(exc))
                continue
            except (ExposureFailed, CameraTimeout) as exc:
                attempts += 1
                log.warning("frame %d attempt %d failed: %s", index, attempts, exc)
                if attempts > request.max_retakes:
                    raise SeriesFailed(f"frame {index} failed {attempts} times; last: {exc}", result) from exc
                with contextlib.suppress(CameraError):
                    camera.abort()
                continue
            try:
                processed = process_frame(frame, request, profile, index, _expectation(request, result.frames),
                                          thresholds)
            except (ProfileError, ValueError) as exc:
                raise SeriesFailed(f"frame {index}: {exc}", result) from exc
            record = FrameRecord(
                path=request.frame_path(out_dir, index), index=index,
                sha256=hashlib.sha256(processed.payload).hexdigest(),
                temperature_start_c=frame.temperature_start_c, temperature_end_c=frame.temperature_end_c,
                quality_ok=processed.verdict.ok, reasons=list(processed.verdict.reasons),
                overscan_mean_adu=processed.overscan_mean_adu, overscan_std_adu=processed.overscan_std_adu,
                corrected_mean_adu=processed.verdict.metrics.get("corrected_mean_adu"), attempt=attempts)
            if processed.verdict.ok:
                atomic_write_bytes(record.path, processed.payload)
                result.frames.append(record)
                if on_frame is not None:
                    on_frame(record)
                break
            attempts += 1
            record.path = out_dir / "rejected" / f"{request.name_prefix}_{index:04d}_try{attempts}.fits"
            atomic_write_bytes(record.path, processed.payload)
            result.rejected.append(record)
            if on_frame is not None:
                on_frame(record)
            log.warning("frame %d rejected: %s", index, "; ".join(record.reasons))
            if attempts > request.max_retakes:
                raise SeriesFailed(f"frame {index} rejected {attempts} times: {'; '.join(record.reasons)}", result)
            if any(r.startswith("temperature") for r in record.reasons) and request.set_point_c is not None:
                cool_and_wait(camera, request.set_point_c, cooling, on_temperature)
    result.frames.sort(key=lambda r: r.index)
    return result
