"""``darkd capture`` (cool, wait for stability, capture N frames) and ``darkd camera status [--json]``.

Progress (temperature, frame count) goes to stderr; one summary line per frame to stdout. Ctrl-C stops cleanly: the
running exposure is aborted and nothing half-written is left behind.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import logging
import signal
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from daemon.cli import LazyChoices

if TYPE_CHECKING:  # the capture stack is imported by the command that runs it (start-up time of every darkd command)
    from daemon.capture import FrameRecord
    from daemon.settings import Settings
    from drivers.camera import Camera, TemperatureSample
    from drivers.profiles import CameraProfile

log = logging.getLogger("darkd.capture")
BAR_WIDTH = 24


def _number(text: float) -> str:
    out = f"{text:.3f}".rstrip("0").rstrip(".")
    return out if out not in ("", "-0") else "0"


def default_prefix(frame_type: str, exposure_s: float, set_point_c: float | None) -> str:
    """E.g. ``dark_300s_m10C`` (``m`` for minus): a clear, filesystem-safe series name."""
    parts = [frame_type, f"{_number(exposure_s)}s"]
    if set_point_c is not None:
        temp = _number(set_point_c)
        parts.append(("m" + temp[1:] if temp.startswith("-") else "p" + temp) + "C")
    return "_".join(parts)


class Progress:
    """A one-line progress display on stderr: cooling state, then a bar with frames done and the temperature."""

    def __init__(self, total: int, stream: Any = None) -> None:
        self.total = total
        self.done = 0
        self.stream = stream or sys.stderr
        self.temperature_c: float | None = None
        self.power_pct: float | None = None
        self.phase = "connecting"
        self._lock = threading.Lock()
        self._tty = bool(getattr(self.stream, "isatty", lambda: False)())

    def _render(self) -> str:
        filled = int(BAR_WIDTH * self.done / max(1, self.total))
        temp = f"{self.temperature_c:7.2f} °C" if self.temperature_c is not None else "    -- °C"
        power = f" {self.power_pct:3.0f} %" if self.power_pct is not None else ""
        return f"[{'#' * filled}{'-' * (BAR_WIDTH - filled)}] {self.done}/{self.total} {self.phase:<10} {temp}{power}"

    def show(self) -> None:
        with self._lock:
            line = self._render()
            self.stream.write(("\r" + line + "\x1b[K") if self._tty else line + "\n")
            self.stream.flush()

    def sample(self, sample: TemperatureSample) -> None:
        self.temperature_c = sample.temperature_c
        self.power_pct = sample.cooler_power_pct
        if self._tty:
            self.show()

    def clear(self) -> None:
        if self._tty:
            with self._lock:
                self.stream.write("\r\x1b[K")
                self.stream.flush()


def summary_line(record: FrameRecord) -> str:
    """One line per frame: name, index, temperatures, overscan level/noise, verdict."""
    def temp(value: float | None) -> str:
        return f"{value:.2f}" if value is not None else "--"

    ovs = (f"overscan {record.overscan_mean_adu:.1f}±{record.overscan_std_adu or 0:.1f} ADU"
           if record.overscan_mean_adu is not None else "overscan --")
    mean = f"mean-ovs {record.corrected_mean_adu:.1f} ADU" if record.corrected_mean_adu is not None else ""
    verdict = "ok" if record.quality_ok else "REJECTED: " + "; ".join(record.reasons)
    return (f"{record.path.name}  #{record.index}  {temp(record.temperature_start_c)}->"
            f"{temp(record.temperature_end_c)} °C  {ovs}  {mean}  {verdict}")


@contextlib.contextmanager
def _stop_on_sigint(stop: threading.Event) -> Iterator[None]:
    """First Ctrl-C sets ``stop`` (abort the exposure, finish cleanly); the second one interrupts hard."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        if stop.is_set():
            raise KeyboardInterrupt
        sys.stderr.write("\nstopping: aborting the current exposure (Ctrl-C again to force)\n")
        stop.set()

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _profile(name: str | None) -> CameraProfile | str | None:
    """A named profile (overrides detection); ``auto``/unset: detected on connect; ``none``: no profile."""
    if name is None or name in ("", "none", "auto"):
        return name
    from drivers.profiles import load_profile

    return load_profile(str(name))


def _settings(args: argparse.Namespace, camera_id: str | None = None) -> Settings:
    """The config with one camera's connection in ``[indi]``/``camera_profile``: ``camera_id`` (else ``--camera``,
    else the default camera) from ``[[cameras]]``, then ``--host/--port/--device`` on top."""
    from daemon.settings import load_settings

    settings = load_settings(args.config)
    wanted = camera_id or getattr(args, "camera", None)
    configs = settings.camera_configs()
    chosen = [c for c in configs if c.id == wanted] if wanted else configs[:1]
    if not chosen:
        raise ValueError(f"no configured camera {wanted!r} (configured: {', '.join(c.id for c in configs)})")
    indi = chosen[0].indi.model_copy(update={k: v for k, v in (("host", args.host), ("port", args.port),
                                                               ("device", args.device)) if v is not None})
    return settings.model_copy(update={"indi": indi, "camera_profile": chosen[0].profile})


def _open_camera(args: argparse.Namespace, settings: Settings) -> Camera:
    from drivers.factory import open_indi_camera

    profile = _profile(args.profile if args.profile is not None else settings.camera_profile)
    return open_indi_camera(settings.indi.host, settings.indi.port, settings.indi.device, profile=profile,
                            reconnect_timeout_s=settings.cooling.reconnect_timeout_s)


def run_capture(args: argparse.Namespace) -> int:
    from daemon.capture import SeriesFailed, SeriesRequest, capture_series
    from drivers.camera import CameraError, CaptureSettings, FrameType, OverscanMode
    from drivers.profiles import ProfileError

    try:
        settings = _settings(args)
    except ValueError as exc:  # an unknown --camera
        sys.stderr.write(f"darkd capture: {exc}\n")
        return 2
    cooling = settings.cooling.model_copy(update={k: v for k, v in (("hold_s", args.hold), ("tolerance_c",
                                                                    args.tolerance)) if v is not None})
    capture_settings = CaptureSettings(gain=args.gain, offset=args.offset, binning=args.binning,
                                       read_mode=args.read_mode, usb_traffic=args.usb_traffic,
                                       amp_glow=args.amp_glow,
                                       overscan=OverscanMode(args.overscan) if args.overscan else None)
    request = SeriesRequest(frame_type=FrameType(args.type), exposure_s=args.exposure, count=args.count,
                            set_point_c=args.temperature, settings=capture_settings,
                            name_prefix=args.prefix or default_prefix(args.type, args.exposure, args.temperature),
                            max_retakes=settings.library.max_retakes if args.max_retakes is None else args.max_retakes)
    try:
        request.validate()
        camera = _open_camera(args, settings)
    except (ValueError, ProfileError) as exc:
        sys.stderr.write(f"darkd capture: {exc}\n")
        return 2
    progress = Progress(args.count)
    stop = threading.Event()

    def on_frame(record: FrameRecord) -> None:
        if record.quality_ok:
            progress.done += 1
        progress.clear()
        sys.stdout.write(summary_line(record) + "\n")
        sys.stdout.flush()
        progress.phase = "capturing"
        progress.show()

    out = Path(args.out)
    started = time.monotonic()
    with _stop_on_sigint(stop):
        try:
            camera.connect(settings.indi.connect_timeout_s)
            progress.phase = "cooling" if args.temperature is not None else "capturing"
            progress.show()
            result = capture_series(camera, request, out, cooling=cooling, on_frame=on_frame,
                                    on_temperature=progress.sample, stop=stop)
            resumed = sum(1 for r in result.frames if r.resumed)
            if resumed:
                sys.stdout.write(f"{resumed} frame(s) already present in {out}, not retaken\n")
            if cooling.warm_up_at_end and not args.no_warm_up and args.temperature is not None and not stop.is_set():
                progress.phase = "warming"
                progress.show()
                camera.warm_up(cooling.warm_up_target_c, cooling.warm_up_rate_c_per_min)
        except SeriesFailed as exc:
            progress.clear()
            sys.stderr.write(f"darkd capture: {exc}\n")
            return 1
        except CameraError as exc:
            progress.clear()
            sys.stderr.write(f"darkd capture: {type(exc).__name__}: {exc}\n")
            return 1
        finally:
            camera.disconnect()
    progress.clear()
    elapsed = time.monotonic() - started
    sys.stdout.write(f"{len(result.frames)}/{args.count} frames in {out} ({len(result.rejected)} rejected, "
                     f"{result.reconnects} reconnects, {elapsed:.1f} s){' - stopped' if result.stopped else ''}\n")
    return 130 if result.stopped else 0


def _jsonable(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {k: _jsonable(v) for k, v in dataclasses.asdict(value).items()}
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if hasattr(value, "value") and not isinstance(value, int | float | str | bool):
        return value.value
    return value


def run_status(args: argparse.Namespace) -> int:
    """One camera (``--camera``, ``--host/--port/--device``, or the only configured one) as before; with several
    ``[[cameras]]`` every camera in turn, each under a ``camera <id>`` heading (``--json``: a list with ``id``)."""
    from daemon.settings import load_settings

    try:
        configs = load_settings(args.config).camera_configs()
        one = args.camera is not None or len(configs) == 1 or any(
            v is not None for v in (args.host, args.port, args.device))
        ids = [args.camera] if one else [c.id for c in configs]
        settings = [_settings(args, cam_id) for cam_id in ids]
    except ValueError as exc:
        sys.stderr.write(f"darkd camera status: {exc}\n")
        return 2
    if one:
        code, info, lines = _status_of(args, settings[0])
        if args.json and info is not None:
            sys.stdout.write(json.dumps(info, sort_keys=True) + "\n")
        elif lines:
            sys.stdout.write("\n".join(lines) + "\n")
        return code
    results = [_status_of(args, s) for s in settings]
    if args.json:
        infos = [{"id": cam_id, **(info or {"connected": False})} for cam_id, (_, info, _) in zip(ids, results,
                                                                                                    strict=True)]
        sys.stdout.write(json.dumps(infos, sort_keys=True) + "\n")
    else:
        blocks = [f"camera {cam_id}\n" + "\n".join(lines or [f"connected       False ({(info or {}).get('error')})"])
                  for cam_id, (_, info, lines) in zip(ids, results, strict=True)]
        sys.stdout.write("\n\n".join(blocks) + "\n")
    return max(code for code, _, _ in results)


def _status_of(args: argparse.Namespace, settings: Settings) -> tuple[int, dict[str, Any] | None, list[str]]:
    """Connect one camera and read its state: (exit code, the JSON dict, the text lines); errors go to stderr."""
    from drivers.camera import CameraError
    from drivers.profiles import ProfileError

    try:
        camera = _open_camera(args, settings)
    except ProfileError as exc:
        sys.stderr.write(f"darkd camera status: {exc}\n")
        return 2, None, []
    try:
        caps = camera.connect(settings.indi.connect_timeout_s)
        state = camera.state()
    except CameraError as exc:
        if not args.json:
            sys.stderr.write(f"darkd camera status: {exc}\n")
        return 1, {"connected": False, "error": str(exc)}, []
    finally:
        camera.disconnect()
    info = {**_jsonable(state), "capabilities": _jsonable(caps)}
    lines = [f"device          {state.device}", f"connected       {state.connected}",
             f"sensor          {caps.width_px} x {caps.height_px} px, {caps.bits_per_pixel} bit"]
    for label, value, unit in (("temperature", state.temperature_c, " °C"), ("set point", state.set_point_c, " °C"),
                               ("cooler power", state.cooler_power_pct, " %"), ("gain", state.gain, ""),
                               ("offset", state.offset, ""), ("binning", state.binning, ""),
                               ("read mode", state.read_mode, "")):
        lines.append(f"{label:<15} {'n/a' if value is None else f'{value:g}{unit}'}")
    lines.append(f"cooler          {'n/a' if state.cooler_on is None else ('on' if state.cooler_on else 'off')}")
    lines.append(f"overscan        {state.overscan.value if state.overscan else 'n/a'}")
    lines.append(f"exposing        {state.exposing}")
    missing = [name for name in ("cooler_power", "read_mode", "usb_traffic", "amp_glow", "overscan", "temp_ramp")
               if not getattr(caps, f"has_{name}")]
    if missing:
        lines.append(f"not offered     {', '.join(missing)}")
    lines.extend(_driver_lines(caps))
    return 0, info, lines


def _driver_lines(caps: Any) -> list[str]:  # a CameraCapabilities
    """The driver, the profile and the capability table: what darkd sets, only reads, and what the camera lacks."""
    version = f" {caps.driver_version}" if caps.driver_version else ""
    profile = caps.profile or "none"
    if caps.profile:
        profile += " (detected)" if caps.profile_detected else " (configured)"
    lines = [f"driver          {caps.driver_exec or 'unknown'}{version} (adapter {caps.adapter})",
             f"profile         {profile}",
             f"bit depth       {caps.bit_depth if caps.bit_depth else 'n/a'}",
             "settings        setting          darkd   where                                range"]
    for row in caps.settings:
        rng = f"{row.range[0]:g}..{row.range[1]:g}" if row.range else ""
        note = f"  ({row.note})" if row.note else ""
        lines.append(f"                {row.setting:<16} {row.access:<7} {row.where or '-':<36} {rng}{note}")
    return lines


def _connection_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--camera", metavar="ID", help="a camera of the config's [[cameras]] (default: the first; "
                        "camera status: every configured camera)")
    parser.add_argument("--host", help="INDI server host (default from config)")
    parser.add_argument("--port", type=int, help="INDI server port (default from config)")
    parser.add_argument("--device", help="INDI device name (default: first CCD)")
    parser.add_argument("--profile", help="camera profile in config/cameras (default from config; 'none' for no "
                        "overscan geometry)")
    parser.add_argument("--config", help="darkd TOML config (default config/darkd.toml or $DARKD_CONFIG)")


def register(subparsers: argparse._SubParsersAction) -> None:
    cap = subparsers.add_parser("capture", help="cool, wait for stability and capture a series of frames")
    cap.add_argument("--type", required=True, choices=LazyChoices("drivers.camera", "FrameType"), metavar="TYPE",
                     help="frame type: %(choices)s")
    cap.add_argument("--exposure", required=True, type=float, help="exposure time in seconds")
    cap.add_argument("--count", required=True, type=int, help="number of good frames wanted")
    cap.add_argument("--temperature", type=float, help="cooler set point in °C (omit: no cooling)")
    cap.add_argument("--gain", type=int)
    cap.add_argument("--offset", type=int)
    cap.add_argument("--binning", type=int, default=1)
    cap.add_argument("--read-mode", type=int)
    cap.add_argument("--usb-traffic", type=int)
    cap.add_argument("--amp-glow", choices=["auto", "on", "off"])
    cap.add_argument("--overscan", choices=LazyChoices("drivers.camera", "OverscanMode"), metavar="MODE",
                     help="%(choices)s")
    cap.add_argument("--out", required=True, help="output directory")
    cap.add_argument("--prefix", help="file name prefix (default e.g. dark_300s_m10C)")
    cap.add_argument("--max-retakes", type=int, help="retakes per frame after a failed quality check")
    cap.add_argument("--hold", type=float, help="stability hold time in seconds (default from config)")
    cap.add_argument("--tolerance", type=float, help="stability tolerance in °C (default from config)")
    cap.add_argument("--no-warm-up", action="store_true", help="leave the cooler on at the end")
    _connection_args(cap)
    cap.set_defaults(func=run_capture)

    cam = subparsers.add_parser("camera", help="camera commands")
    cam_sub = cam.add_subparsers(dest="camera_command", required=True, metavar="SUBCOMMAND")
    status = cam_sub.add_parser("status", help="print the camera's state")
    status.add_argument("--json", action="store_true", help="machine-readable output")
    _connection_args(status)
    status.set_defaults(func=run_status)
