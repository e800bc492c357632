"""``darkd demo``: the whole product on the simulated QHY163M, in a couple of minutes, with nothing to set up.

1. start a local ``indiserver`` running the simulated camera (SMALL sensor unless ``--full``, fast time scale);
2. capture a few simulated lights (two exposures at −10 °C, gain/offset of the QHY163M profile);
3. plan the library from the lights' headers (bias + one dark per exposure);
4. run the build-library job through the :class:`daemon.jobs.engine.JobEngine` (cool, capture with per-frame quality
   checks, integrate each master in a worker process while the next key is captured, review, warm up), printing its
   progress;
5. print the library table, select the master for each light, calibrate the lights (when the CALIB engine is present),
   verify the library against the files, and print a summary.

Everything lands in one directory (``--workdir``, default a new temporary directory that is kept) with a
``darkd.toml`` so ``darkd library --config <dir>/darkd.toml`` shows the result afterwards. Exit code 0 on success.
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from daemon.jobs.states import JobState

if TYPE_CHECKING:  # the whole stack is imported when the demo runs (start-up time of every darkd command)
    from daemon.events import Subscription
    from daemon.jobs.engine import JobEngine
    from daemon.jobs.queue import JobRow
    from daemon.library.catalog import LibraryIndex
    from daemon.settings import Settings
    from drivers.camera import Camera

AMBIENT_C = 20.0
SET_POINT_C = -10.0
LIGHT_EXPOSURES_S = (30.0, 120.0)
LIGHTS_PER_EXPOSURE = 2


def _out(text: str = "") -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


@dataclass
class DemoOutcome:
    job: JobRow | None = None
    selections: dict[str, str] = field(default_factory=dict)
    refused: dict[str, str] = field(default_factory=dict)
    calibrated: list[str] = field(default_factory=list)
    calibration_note: str | None = None
    measure_note: str | None = None
    verify_ok: bool = False
    verify_text: str = ""


def demo_settings(args: argparse.Namespace, root: Path, port: int) -> Settings:
    """Settings for the demo: small frame counts, a short stability hold (the simulator runs fast)."""
    from daemon.settings import CoolingSettings, IndiSettings, LibrarySettings, Settings

    cooling = CoolingSettings(tolerance_c=0.3, hold_s=2.0, timeout_s=120.0, unreachable_window_s=10.0,
                              warm_up_at_end=True, warm_up_target_c=15.0, warm_up_rate_c_per_min=10.0,
                              reconnect_timeout_s=30.0)
    library = LibrarySettings(root=root, frames_bias=args.frames_bias, frames_dark=args.frames_dark, max_retakes=3)
    return Settings(camera_profile="qhy163m" if args.full else "qhy163m-sim-small",
                    indi=IndiSettings(host="127.0.0.1", port=port, connect_timeout_s=30.0),
                    cooling=cooling, library=library)


def write_config(path: Path, settings: Settings) -> None:
    """A darkd.toml for the demo's library, so the usual commands can inspect it afterwards."""
    lib, cool = settings.library, settings.cooling
    path.write_text(
        f'camera_profile = "{settings.camera_profile}"\n\n[indi]\nhost = "{settings.indi.host}"\n'
        f"port = {settings.indi.port}\n\n[cooling]\ntolerance_c = {cool.tolerance_c}\nhold_s = {cool.hold_s}\n\n"
        f'[library]\nroot = "{lib.root}"\nframes_bias = {lib.frames_bias}\nframes_dark = {lib.frames_dark}\n',
        encoding="utf-8")


def capture_lights(camera: Camera, settings: Settings, lights_dir: Path) -> list[Path]:
    """Simulated lights (star field) at each demo exposure, cooled to the demo set point."""
    from calib.quality import QualityThresholds
    from daemon.capture import SeriesRequest, capture_series
    from drivers.camera import CaptureSettings, FrameType, OverscanMode

    # the QHY163M's usual unity-gain-ish setting; the simulator's defaults
    sensor = CaptureSettings(gain=120, offset=30, binning=1, read_mode=0, amp_glow="auto",
                             overscan=OverscanMode.INCLUDE)
    paths: list[Path] = []
    for exposure_s in LIGHT_EXPOSURES_S:
        request = SeriesRequest(FrameType.LIGHT, exposure_s, LIGHTS_PER_EXPOSURE, SET_POINT_C, sensor,
                                f"M42_{exposure_s:g}s", max_retakes=2,
                                quality=QualityThresholds(saturation_max_fraction=0.05))  # stars may saturate
        result = capture_series(camera, request, lights_dir, cooling=settings.cooling)
        paths += [r.path for r in result.frames]
    return paths


def _fmt_eta(eta_s: float | None) -> str:
    return "--" if eta_s is None else f"{eta_s:5.0f}s"


def follow(engine: JobEngine, sub: Subscription, job_id: int, started: float) -> JobRow:
    """Print the job's progress from the event bus until it ends; returns the final row."""
    from daemon.jobs.states import FINAL_STATES

    last_step = None
    while True:
        event = sub.get(timeout_s=1.0)
        if event is None:
            row = engine.get(job_id)
            if row.state in FINAL_STATES:
                return row
            continue
        if event.get("job_id") != job_id:
            continue
        if event["type"] == "warning":
            _out(f"           warning: {event['message']}")
        elif event["type"] == "job":
            step = event.get("step")
            if step != last_step or event["state"] in FINAL_STATES:
                last_step = step
                _out(f"[{time.monotonic() - started:6.1f}s] {event['state']:9} {event['progress_done']:>3}/"
                     f"{event['progress_total']:<3} ETA {_fmt_eta(event.get('eta_s'))}  {step or ''}")
            if event["state"] in FINAL_STATES:
                return engine.get(job_id)


def _library_table(config: Path) -> None:
    from daemon.cli import build_parser

    args = build_parser().parse_args(["library", "--config", str(config)])
    args.func(args)


def _measure(engine: JobEngine, index: LibraryIndex, sub: Subscription, started: float,
             outcome: DemoOutcome) -> None:
    """Dark current of the longest dark (pair method) next to the simulator's truth."""
    from drivers.sim import physics

    darks = [e for e in index.entries(kind="dark", status="ready")]
    biases = index.entries(kind="bias", status="ready")
    if importlib.util.find_spec("calib.measure.dark_current") is None or not darks or not biases:
        return
    dark = max(darks, key=lambda e: e.exposure_s)
    job = engine.submit("measure", {"dark_entry_id": dark.id, "bias_entry_id": biases[-1].id,
                                    "gain_e_per_adu": physics.gain_e_per_adu(dark.gain or 0)})
    final = follow(engine, sub, job.id, started)
    report = (final.result or {}).get("report") or {}
    measured = report.get("dark_current_e_per_s")
    if final.state == JobState.SUCCEEDED and measured is not None:
        truth = physics.dark_current_e_per_s(dark.set_point_c)
        outcome.measure_note = (f"dark current at {dark.set_point_c:g} °C from the {dark.exposure_s:g} s darks: "
                                f"{measured:.4f} e-/s/pixel (simulator truth {truth:.4f}; naive mean method "
                                f"{report.get('dark_current_naive_e_per_s', float('nan')):.4f})")
    else:
        outcome.measure_note = f"measure job {final.state}: {final.error}"


def _after_build(engine: JobEngine, index: LibraryIndex, sub: Subscription, lights: list[Path], workdir: Path,
                 started: float, outcome: DemoOutcome) -> None:
    from daemon.library.selection import NoMatchingMaster, select_for_light
    from daemon.library.verify import verify_library
    from daemon.light_rule import LightRule

    rule = LightRule(engine.settings, index)
    for light in lights:
        try:
            entry = select_for_light(index, light, rule=rule).require()
            master = Path(entry.master or "")
            shown = master.relative_to(workdir) if master.is_relative_to(workdir) else master
            outcome.selections[light.name] = f"entry {entry.id}: {shown}"
        except NoMatchingMaster as exc:
            outcome.refused[light.name] = str(exc)
    if importlib.util.find_spec("calib.calibration") is None or importlib.util.find_spec("calib.masters") is None:
        outcome.calibration_note = "skipped: the calibration engine (calib.calibration) is not installed"
    elif outcome.refused:
        outcome.calibration_note = "skipped: not every light has a master"
    else:
        job = engine.submit("calibrate", {"lights": [str(p) for p in lights],
                                          "output_dir": str(workdir / "calibrated")})
        final = follow(engine, sub, job.id, started)
        if final.state == JobState.SUCCEEDED:
            outcome.calibrated = list((final.result or {}).get("outputs", []))
        else:
            outcome.calibration_note = f"calibrate job {final.state}: {final.error}"
    _measure(engine, index, sub, started, outcome)
    report = verify_library(index)
    outcome.verify_ok = report.ok
    outcome.verify_text = report.to_text().splitlines()[-1]


def run_demo(args: argparse.Namespace) -> int:
    from daemon.events import EventBus
    from daemon.indiserver import IndiServerError, LocalIndiServer, sim_environment
    from daemon.jobs.engine import JobEngine
    from daemon.library.catalog import LibraryIndex
    from daemon.planning import plan_from_lights
    from drivers.camera import CameraError
    from drivers.factory import open_indi_camera
    from drivers.profiles import load_profile

    started = time.monotonic()
    if not getattr(args, "verbose", 0):  # the job's warnings are printed from the event bus already
        logging.getLogger("daemon").setLevel(logging.ERROR)
    workdir = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="darkd-demo-"))
    workdir.mkdir(parents=True, exist_ok=True)
    root = Path(args.root) if args.root else workdir / "library"
    sensor = "FULL" if args.full else "SMALL"
    _out(f"darkd demo: simulated QHY163M ({sensor} sensor, time scale {args.time_scale:g}), outputs in {workdir}")
    server = LocalIndiServer(env=sim_environment(sensor, args.time_scale, args.seed, AMBIENT_C),
                             log_path=workdir / "indiserver.log")
    try:
        server.start()
    except IndiServerError as exc:
        sys.stderr.write(f"darkd demo: {exc}\n")
        return 2
    settings = demo_settings(args, root, server.port)
    config = workdir / "darkd.toml"
    write_config(config, settings)
    outcome = DemoOutcome()
    camera = open_indi_camera(settings.indi.host, settings.indi.port, profile=load_profile(settings.camera_profile),
                              reconnect_timeout_s=settings.cooling.reconnect_timeout_s)
    index = LibraryIndex.open(settings.library)
    bus = EventBus()
    engine = JobEngine(settings, index, lambda: camera, bus, poll_s=0.2)
    try:
        camera.connect(settings.indi.connect_timeout_s)
        _out(f"[{time.monotonic() - started:6.1f}s] capturing {len(LIGHT_EXPOSURES_S) * LIGHTS_PER_EXPOSURE} "
             f"simulated lights ({', '.join(f'{e:g} s' for e in LIGHT_EXPOSURES_S)} at {SET_POINT_C:g} °C)")
        lights = capture_lights(camera, settings, workdir / "lights")
        profile = load_profile(settings.camera_profile)
        plan = plan_from_lights(workdir / "lights", index, settings, ambient_c=AMBIENT_C,
                                max_cooling_delta_c=profile.max_cooling_delta_c or 35.0, readout_s=profile.readout_s)
        _out(f"[{time.monotonic() - started:6.1f}s] plan from {plan.lights} lights:")
        _out(plan.to_text())
        with bus.subscribe() as sub:
            engine.start()
            job = engine.submit("build-library", {"plan": plan.to_dict()})
            _out(f"[{time.monotonic() - started:6.1f}s] build-library job {job.id} submitted")
            outcome.job = follow(engine, sub, job.id, started)
            _out("\nlibrary:")
            _library_table(config)
            _after_build(engine, index, sub, lights, workdir, started, outcome)
    except (CameraError, OSError, ValueError) as exc:
        sys.stderr.write(f"darkd demo: {type(exc).__name__}: {exc}\n")
        return 1
    finally:
        engine.stop(timeout_s=30)
        camera.disconnect()
        index.close()
        server.stop()
    return _summary(outcome, workdir, config, time.monotonic() - started)


def _summary(outcome: DemoOutcome, workdir: Path, config: Path, elapsed_s: float) -> int:
    job = outcome.job
    result: dict[str, Any] = (job.result or {}) if job else {}
    _out("\nmaster selected for each light:")
    for name, text in outcome.selections.items():
        _out(f"  {name:28} -> {text}")
    for name, text in outcome.refused.items():
        _out(f"  {name:28} -> REFUSED: {text}")
    if outcome.calibrated:
        _out(f"calibrated lights: {len(outcome.calibrated)} in {workdir / 'calibrated'}")
    if outcome.calibration_note:
        _out(f"calibration {outcome.calibration_note}")
    if outcome.measure_note:
        _out(outcome.measure_note)
    _out(f"verify: {outcome.verify_text}")
    _out(f"\nsummary: job {job.id if job else '-'} {job.state if job else 'not run'}; "
         f"frames captured {result.get('frames_captured', 0)}, rejected {result.get('frames_rejected', 0)}; "
         f"masters built {result.get('masters_built', 0)}"
         f"{', held for review ' + str(len(result['held_for_review'])) if result.get('held_for_review') else ''}; "
         f"{elapsed_s:.1f} s")
    _out(f"outputs: {workdir}  (darkd library --config {config})")
    if job is not None and job.error:
        _out(f"job error: {job.error}")
    ok = (job is not None and job.state == JobState.SUCCEEDED and not outcome.refused and outcome.verify_ok
          and (bool(outcome.calibrated) or outcome.calibration_note is not None))
    return 0 if ok else 1


def register(subparsers: argparse._SubParsersAction) -> None:
    demo = subparsers.add_parser("demo", help="build a dark library on the simulated camera, end to end")
    demo.add_argument("--full", action="store_true", help="full-size sensor (4720x3540) instead of the SMALL one")
    demo.add_argument("--time-scale", type=float, default=300.0,
                      help="simulated seconds per wall-clock second (default 300)")
    demo.add_argument("--root", type=Path, help="library root (default <workdir>/library)")
    demo.add_argument("--workdir", type=Path, help="directory for lights, library, outputs (default: new temp dir)")
    demo.add_argument("--frames-bias", type=int, default=8, help="frames per bias master (default 8)")
    demo.add_argument("--frames-dark", type=int, default=5, help="frames per dark master (default 5)")
    demo.add_argument("--seed", type=int, default=1, help="simulator random seed")
    demo.set_defaults(func=run_demo)
