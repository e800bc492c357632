"""Issue 14 "Done when": lights written the way Ekos, N.I.N.A., SGP and the stock INDI tools write them, from the same
camera and settings as a darkd-built library, are planned (every key ``ready``) and calibrated by the calibrate job
with no flags.

Real parts: the job engine (``build-library`` and ``calibrate``), the SQLite index, ``capture_series``, the masters and
the calibration; the camera is the in-process :class:`drivers.sim.inprocess.SimCamera` (the QHY163M twin) and
integration runs in a thread (:class:`tests.engines.InThreadEngine`). What darkd knows of the camera comes the way the
daemon gets it: its driver state recorded on connect (:func:`daemon.light_rule.record_driver_defaults`, what
``daemon/runtime.py`` does) and one config table ``[lights."<camera>"]`` naming the read modes.

The lights share one frame shot by the simulated camera with the user's settings (gain 120, offset 30, overscan
*include*; read mode, USB traffic and amp glow left at the driver's defaults); only their headers differ:

* stock INDI (``indi_getprop``/``indi_setprop`` fetching the BLOB): exactly the driver's own FITS keywords — the INDI
  CCD base keys (``drivers/sim/rendering.py``, after indi ``libs/indibase/indiccd.cpp``) plus the QHY driver's
  ``GAIN``, ``OFFSET``, ``AMPGLOW``, ``READMODE`` (``drivers/sim/vendors.py``, after ``indi-qhy/qhy_ccd.cpp``):
  no set point, no overscan mode, no USB traffic;
* Ekos: the same driver header (Ekos saves the driver's FITS; it never writes ``SET-TEMP``) plus the snooped
  ``OBJECT``/``TELESCOP``/``FOCALLEN``;
* N.I.N.A.: ``IMAGETYP='LIGHT'``, ``EXPOSURE`` and ``EXPTIME``, ``SET-TEMP``, ``READOUTM='Standard'`` (a name),
  ``SWCREATE='N.I.N.A. …'``, no ``FRAME``/``READMODE``/``AMPGLOW``;
* SGP: ``IMAGETYP='Light Frame'``, ``EXPOSURE``, ``SET-TEMP``, ``CREATOR='Sequence Generator Pro …'``, ``GAIN``,
  ``OFFSET``, no read mode at all.
(Spellings as listed in :mod:`daemon.light_headers`; the per-program fixture headers live in tests/fixtures/headers.)
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from astropy.io import fits

from calib.frames import read_frame, write_frame
from daemon.capture import SeriesRequest, capture_series
from daemon.events import EventBus
from daemon.jobs.states import FINAL_STATES
from daemon.library.catalog import LibraryIndex
from daemon.light_rule import LightRule, record_driver_defaults
from daemon.planning import plan_from_keys, plan_from_lights
from daemon.settings import CoolingSettings, LibrarySettings, LightCameraSettings, Settings
from drivers.camera import CaptureSettings, FrameType, OverscanMode
from drivers.profiles import load_profile
from drivers.sim.inprocess import ManualClock, SimCamera
from tests.conftest import SIM_DEVICE
from tests.engines import InThreadEngine, wait_for

PROFILE = "qhy163m-sim-small"
SET_POINT_C = -10.0
EXPOSURE_S = 60.0
COOLING = CoolingSettings(tolerance_c=0.3, hold_s=30.0, timeout_s=3600.0, unreachable_window_s=120.0,
                          warm_up_at_end=False)
#: the driver's own keywords: INDI CCD base (drivers/sim/rendering.py) + the QHY driver's (drivers/sim/vendors.py)
DRIVER_KEYS = ("ROWORDER", "INSTRUME", "EXPTIME", "DARKTIME", "CCD-TEMP", "PIXSIZE1", "PIXSIZE2", "XBINNING",
               "YBINNING", "XPIXSZ", "YPIXSZ", "FRAME", "IMAGETYP", "DATE-OBS", "GAIN", "OFFSET", "AMPGLOW", "READMODE")



def program_headers(driver: fits.Header) -> dict[str, fits.Header]:
    """The light's header as each program writes it, from the driver's own header."""
    def make(cards: dict[str, Any]) -> fits.Header:
        h = fits.Header()
        for name, value in cards.items():
            h[name] = value
        return h

    stock = {k: driver[k] for k in DRIVER_KEYS if k in driver}
    ekos = {**stock, "OBJECT": "M 42", "TELESCOP": "Telescope Simulator", "FOCALLEN": 800.0}
    common = {"INSTRUME": driver["INSTRUME"], "EXPTIME": driver["EXPTIME"], "EXPOSURE": driver["EXPTIME"],
              "DATE-OBS": driver["DATE-OBS"], "CCD-TEMP": driver["CCD-TEMP"], "SET-TEMP": SET_POINT_C,
              "XBINNING": 1, "YBINNING": 1, "GAIN": driver["GAIN"], "OFFSET": driver["OFFSET"]}
    nina = {**common, "IMAGETYP": "LIGHT", "READOUTM": "Standard", "SWCREATE": "N.I.N.A. 3.1.2.9001 (x64)"}
    sgp = {**common, "IMAGETYP": "Light Frame", "CREATOR": "Sequence Generator Pro v4.3.0.1221"}
    return {"stock-indi": make(stock), "ekos": make(ekos), "nina": make(nina), "sgp": make(sgp)}


def test_lights_from_ekos_nina_sgp_and_stock_indi_plan_ready_and_calibrate(tmp_path: Path) -> None:
    settings = Settings(camera_profile=PROFILE, cooling=COOLING,
                        library=LibrarySettings(root=tmp_path / "library", frames_bias=3, frames_dark=3),
                        lights={SIM_DEVICE: LightCameraSettings(read_modes={"Standard": 0})})
    camera = SimCamera(clock=ManualClock(start_utc=datetime.now(UTC)), profile=load_profile(PROFILE))
    index = LibraryIndex.open(settings.library)
    engine = InThreadEngine(settings, index, lambda: camera, EventBus(), poll_s=0.02).start()
    try:
        # darkd connects and records the driver's state before changing anything (daemon/runtime.py does this)
        caps = camera.connect()
        record_driver_defaults(index, caps, camera.state())

        # a library built by darkd from a key typed by hand: the rest is completed from the camera before capture
        key = {"camera": SIM_DEVICE, "set_point_c": SET_POINT_C, "gain": 120, "offset": 30, "overscan": "include"}
        plan = plan_from_keys([{**key, "kind": "bias", "exposure_s": 0}, {**key, "kind": "dark",
                                                                         "exposure_s": EXPOSURE_S}],
                              None, settings, readout_s=1.0)
        job = engine.submit("build-library", {"plan": plan.to_dict()})
        wait_for(lambda: engine.get(job.id).state in FINAL_STATES, 60, "the build-library job")
        assert engine.get(job.id).state == "succeeded", engine.get(job.id).error

        # the user's light: gain, offset and overscan set in the capture program, the rest the driver's defaults
        user = CaptureSettings(gain=120, offset=30, overscan=OverscanMode.INCLUDE)
        shot = capture_series(camera, SeriesRequest(FrameType.LIGHT, EXPOSURE_S, 1, SET_POINT_C, user, "light"),
                              tmp_path / "shot", cooling=COOLING).frames[0]
        frame = read_frame(shot.path)
        lights = tmp_path / "lights"
        for program, header in program_headers(frame.header).items():
            write_frame(lights / f"{program}_M42_0001.fits", frame.data, header, bitpix16=True)

        # every light resolves to the library's keys by the one rule ...
        rule = LightRule(settings, index)
        ready = {(e.kind, e.slug) for e in index.entries(status="ready")}
        for path in sorted(lights.iterdir()):
            info = rule.light_info(path)
            assert ("dark", info.key.slug) in ready, (path.name, info.key, info.sources)
        # ... so the plan has nothing left to build
        lights_plan = plan_from_lights(lights, index, settings, ambient_c=20.0, readout_s=1.0)
        assert lights_plan.errors == [] and lights_plan.lights == 4
        assert {(i.key.kind, i.status, i.lights) for i in lights_plan.items} == {("dark", "ready", 4),
                                                                                 ("bias", "ready", 0)}
        assert lights_plan.work() == []

        # and the calibrate job, with no flags, calibrates all four with the library's dark
        out = tmp_path / "calibrated"
        job = engine.submit("calibrate", {"lights_dir": str(lights), "output_dir": str(out)})
        wait_for(lambda: engine.get(job.id).state in FINAL_STATES, 60, "the calibrate job")
        done = engine.get(job.id)
        assert done.state == "succeeded", (done.error, done.warnings)
        assert len(done.result["outputs"]) == 4 and done.result["refused"] == {}
        (dark,) = index.entries(kind="dark", status="ready")
        assert set(done.result["masters"].values()) == {dark.master}
    finally:
        engine.stop(timeout_s=10)
        index.close()
