"""Several cameras in one daemon (issue 17): ``[[cameras]]``, one connection/monitor per camera, concurrent capture.

Real parts: :class:`daemon.runtime.Runtime` with its monitors, the job engine (integration in a thread,
:class:`tests.engines.InThreadEngine`), the SQLite index, ``capture_series``, ``calib.masters`` and the REST app —
only the cameras are two in-process simulated cameras (:class:`drivers.sim.inprocess.SimCamera`) on simulated time.
Concurrency is proven, not timed: each camera's first exposure waits at a barrier for the other camera's first
exposure, which only a daemon capturing on both cameras at once can pass.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError

from daemon.api.app import create_app
from daemon.jobs.states import FINAL_STATES
from daemon.library.verify import verify_library
from daemon.planning import plan_from_keys
from daemon.runtime import Runtime, UnknownCamera
from daemon.settings import DEFAULT_CAMERA_ID, Settings, load_settings
from drivers.camera import CapturedFrame, FrameType
from drivers.profiles import load_profile
from drivers.sim.inprocess import ManualClock, SimCamera, SimFaults
from tests.engines import InThreadEngine, wait_for

PROFILE = "qhy163m-sim-small"
LOCAL = ("127.0.0.1", 50000)
DEVICES = {"main": "Sim Main", "guide": "Sim Guide"}
KEY = {"set_point_c": -10.0, "gain": 120, "offset": 30, "binning": 1, "read_mode": 0, "usb_traffic": 30,
       "amp_glow": "auto", "overscan": "include", "width_px": 496, "height_px": 368}


class GatedSimCamera(SimCamera):
    """A simulated camera whose first exposure waits (up to 20 s of real time) until the other camera exposes too."""

    def __init__(self, gate: threading.Barrier, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.gate = gate
        self.passed_gate = False

    def expose(self, frame_type: FrameType, exposure_s: float, timeout_s: float | None = None) -> CapturedFrame:
        if not self.passed_gate:
            self.gate.wait(timeout=20.0)  # BrokenBarrierError (a failed frame, a failed job) when captures are serial
            self.passed_gate = True
        return super().expose(frame_type, exposure_s, timeout_s)


class ThreadedRuntime(Runtime):
    """The daemon's runtime with the engine integrating in a thread (no 2 s worker-process start)."""

    def _start_job_engine(self) -> None:
        self.engine = InThreadEngine(self.settings, self.index, self.camera, self.bus, poll_s=0.02,
                                     camera_for=self.camera_for, camera_name=self.job_camera)
        self.engine.start()


def two_camera_settings(root: Path) -> Settings:
    return Settings.model_validate({
        "camera_profile": PROFILE,
        "cooling": {"tolerance_c": 0.3, "hold_s": 30.0, "timeout_s": 3600.0, "reconnect_timeout_s": 60.0,
                    "warm_up_at_end": False},
        "library": {"root": str(root), "frames_bias": 3, "frames_dark": 2},
        "cameras": [{"id": cam_id, "device": device, "port": 7624 + n}
                    for n, (cam_id, device) in enumerate(DEVICES.items())]})



class Daemon:
    """A two-camera runtime behind the REST app (TestClient), with the cameras injected by id."""

    def __init__(self, root: Path) -> None:
        self.gate = threading.Barrier(2)
        self.settings = two_camera_settings(root)
        self.cams = {cam_id: GatedSimCamera(self.gate, clock=ManualClock(), profile=load_profile(PROFILE),
                                            device=device, seed=n + 1,
                                            reconnect_timeout_s=60.0)
                     for n, (cam_id, device) in enumerate(DEVICES.items())}
        factories = {cam_id: (lambda c=cam: c) for cam_id, cam in self.cams.items()}
        self.runtime = ThreadedRuntime(self.settings, camera_factories=factories, monitor_interval_s=0.02,
                                       warm_on_shutdown=False)
        self.client = TestClient(create_app(self.runtime), client=LOCAL, raise_server_exceptions=False)

    def post(self, keys: list[dict[str, Any]], name: str, query: str = "") -> Any:
        """``POST /jobs[?query]`` of a build-library job whose plan keys call the camera ``name``."""
        plan = plan_from_keys([{**KEY, "camera": name, **k} for k in keys], None, self.settings, ambient_c=None,
                              readout_s=1.0)
        return self.client.post(f"/api/v1/jobs{query}", json={"kind": "build-library",
                                                              "params": {"plan": plan.to_dict()}})

    def submit(self, cam_id: str, keys: list[dict[str, Any]], name: str | None = None) -> int:
        """Queue a build-library job on camera ``cam_id`` (its keys name the camera's device, or ``name`` given
        with ``?camera=<cam_id>``)."""
        response = self.post(keys, name or DEVICES[cam_id], f"?camera={cam_id}" if name else "")
        assert response.status_code == 201, response.text
        body = response.json()
        assert body["camera"] == cam_id  # several cameras: jobs record the camera id
        return int(body["id"])

    def job(self, job_id: int) -> dict[str, Any]:
        response = self.client.get(f"/api/v1/jobs/{job_id}")
        assert response.status_code == 200, response.text
        return dict(response.json())

    def wait_jobs(self, *job_ids: int) -> list[dict[str, Any]]:
        wait_for(lambda: all(self.job(j)["state"] in FINAL_STATES for j in job_ids), 60, "the jobs to end")
        return [self.job(j) for j in job_ids]

    def cameras(self) -> dict[str, dict[str, Any]]:
        response = self.client.get("/api/v1/cameras")
        assert response.status_code == 200, response.text
        return {c["id"]: c for c in response.json()}


@pytest.fixture
def daemon_factory(tmp_path: Path) -> Iterator[Callable[..., Daemon]]:
    made: list[Daemon] = []

    def make() -> Daemon:
        made.append(Daemon(tmp_path / f"library{len(made)}"))
        made[-1].client.__enter__()  # the app's lifespan starts the runtime
        wait_for(lambda: all(c["connected"] for c in made[-1].cameras().values()), 20, "both cameras to connect")
        return made[-1]

    yield make
    for daemon in made:
        daemon.client.__exit__(None, None, None)  # stops the runtime: engine, monitors, index


def test_two_cameras_build_their_libraries_at_the_same_time(daemon_factory: Callable[..., Daemon]) -> None:
    daemon = daemon_factory()
    cameras = daemon.cameras()
    assert list(cameras) == ["main", "guide"]  # configuration order, the default first
    assert {c: cameras[c]["device"] for c in cameras} == DEVICES
    assert cameras["guide"]["indi_port"] == 7625 and cameras["guide"]["profile"] == PROFILE
    # today's single-camera call answers for the default camera
    assert daemon.client.get("/api/v1/camera").json()["id"] == "main"
    assert daemon.client.get("/api/v1/cameras/guide").json()["device"] == DEVICES["guide"]
    missing = daemon.client.get("/api/v1/cameras/spare")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "camera_not_found"

    main = daemon.submit("main", [{"kind": "bias", "exposure_s": 0}, {"kind": "dark", "exposure_s": 300}])
    # at most one capture job per camera: main's job cannot end before guide's first exposure (the gate)
    busy = daemon.post([{"kind": "dark", "exposure_s": 10}], DEVICES["main"])
    assert busy.status_code == 409 and busy.json()["error"]["code"] == "job_conflict"
    # the guide camera's keys under another name (an imaging program's INSTRUME), the camera chosen by id
    guide = daemon.submit("guide", [{"kind": "dark", "exposure_s": 60}], name="ZWO ASI120MM Mini")
    jobs = daemon.wait_jobs(main, guide)
    assert [j["state"] for j in jobs] == ["succeeded", "succeeded"], [j["error"] for j in jobs]
    assert all(c.passed_gate for c in daemon.cams.values())  # both first exposures were in flight together
    assert (jobs[0]["result"]["frames_captured"], jobs[1]["result"]["frames_captured"]) == (5, 2)
    index = daemon.runtime.index
    by_camera = {"main": index.entries(camera=DEVICES["main"]), "guide": index.entries(camera="ZWO ASI120MM Mini")}
    assert sorted(e.kind for e in by_camera["main"]) == ["bias", "dark"] and len(by_camera["guide"]) == 1
    assert all(e.status == "ready" and e.master is not None for entries in by_camera.values() for e in entries)
    assert verify_library(index).ok
    # each camera kept its own connection: every frame of a camera came from that camera's one object
    assert daemon.cams["main"].state().connected and daemon.cams["guide"].state().connected
    assert daemon.runtime.readiness()["checks"]["indi"] is True
    # every camera everywhere: the status page lists both cameras, /metrics has one series per camera
    status = daemon.client.get("/api/v1/status").json()
    assert status["camera"]["id"] == "main"
    assert [(c["id"], c["device"], c["connected"]) for c in status["cameras"]] == [
        ("main", DEVICES["main"], True), ("guide", DEVICES["guide"], True)]
    metrics = daemon.client.get("/metrics").text  # one series per camera, by id (as its frame counters)
    for cam_id in DEVICES:
        assert f'darkd_camera_connected{{camera="{cam_id}"}} 1.0' in metrics
        assert f'darkd_sensor_temperature_celsius{{camera="{cam_id}"}}' in metrics
    assert 'darkd_frames_captured_total{camera="guide",result="accepted"} 2.0' in metrics
    assert 'camera="unknown"' not in metrics


def test_a_camera_that_disappears_does_not_stop_the_other(daemon_factory: Callable[..., Daemon]) -> None:
    daemon = daemon_factory()
    # once connected, the guide camera's link drops during its first exposure and its server never comes back
    daemon.cams["guide"].faults = SimFaults(disconnect_exposures=1, refuse_connects=1_000_000)
    for query, name in (("", "QHY163M"), ("?camera=spare", DEVICES["main"])):  # a camera not configured: refused
        refused = daemon.post([{"kind": "dark", "exposure_s": 120}], name, query)
        assert refused.status_code == 422 and refused.json()["error"]["code"] == "unknown_camera", refused.text
    main = daemon.submit("main", [{"kind": "dark", "exposure_s": 120}])
    guide = daemon.submit("guide", [{"kind": "dark", "exposure_s": 120}])
    main_job, guide_job = daemon.wait_jobs(main, guide)
    assert main_job["state"] == "succeeded", main_job["error"]
    assert guide_job["state"] == "failed"
    (entry,) = daemon.runtime.index.entries(camera=DEVICES["main"])
    assert entry.status == "ready" and entry.frames == entry.frames_target
    wait_for(lambda: daemon.cameras()["guide"]["last_error"] is not None, 20, "the guide camera's monitor to fail")
    cameras = daemon.cameras()
    assert cameras["main"]["connected"] is True and cameras["main"]["last_error"] is None
    assert cameras["guide"]["connected"] is False and "camera guide" in cameras["guide"]["last_error"]
    ready = daemon.runtime.readiness()
    assert ready["checks"]["indi"] is False and ready["details"]["indi"].startswith("guide: ")
    # the main camera still takes new work while the guide camera is gone
    again = daemon.submit("main", [{"kind": "bias", "exposure_s": 0}])
    assert daemon.wait_jobs(again)[0]["state"] == "succeeded"


def test_jobs_name_a_camera_by_id_or_device_and_an_unknown_one_is_refused(tmp_path: Path) -> None:
    runtime = Runtime(two_camera_settings(tmp_path / "lib"), connect_camera=False, start_engine=False)
    assert runtime.slot("guide") is runtime.slot(DEVICES["guide"]) is runtime.cameras["guide"]
    assert runtime.slot(None) is runtime.default_camera is runtime.cameras["main"]
    with pytest.raises(UnknownCamera, match="no configured camera 'QHY163M'"):
        runtime.slot("QHY163M")
    with pytest.raises(UnknownCamera, match="spare"):
        Runtime(two_camera_settings(tmp_path / "lib"), camera_factories={"spare": SimCamera}, connect_camera=False)


def test_a_config_without_cameras_is_one_default_camera_from_indi(tmp_path: Path) -> None:
    config = tmp_path / "darkd.toml"
    config.write_text('camera_profile = "qhy163m"\n[indi]\nhost = "pier1"\nport = 7000\ndevice = "QHY CCD QHY163M"\n')
    (camera,) = load_settings(config, environ={}).camera_configs()
    assert (camera.id, camera.indi.host, camera.indi.port, camera.indi.device, camera.profile) == (
        DEFAULT_CAMERA_ID, "pier1", 7000, "QHY CCD QHY163M", "qhy163m")
    runtime = Runtime(load_settings(config, environ={}), connect_camera=False, start_engine=False)
    assert runtime.slot("any name a key gives it") is runtime.default_camera  # one camera serves every name
    assert runtime.job_camera("QHY163M") == "QHY163M"  # jobs keep the name their plan gives, as before
    (snapshot,) = runtime.camera_snapshots()
    assert snapshot["id"] == DEFAULT_CAMERA_ID and snapshot["indi_host"] == "pier1" and not snapshot["connected"]
    assert runtime.camera_snapshot() == snapshot  # GET /camera: the default camera, never read yet


def test_the_demo_config_names_two_simulated_cameras() -> None:
    demo = Path(__file__).resolve().parents[2] / "config" / "darkd-two-cameras.toml"
    cameras = load_settings(demo, environ={}).camera_configs()
    assert [(c.id, c.indi.port, c.indi.device) for c in cameras] == [
        ("main", 7624, "QHY CCD QHY163M-Sim"), ("second", 7625, "ZWO CCD ASI1600MM Pro")]


def test_cameras_inherit_indi_and_profile_and_are_checked(tmp_path: Path) -> None:
    config = tmp_path / "darkd.toml"
    config.write_text('camera_profile = "auto"\n[indi]\nhost = "rig"\nconnect_timeout_s = 5\n'
                      '[[cameras]]\nid = "main"\ndevice = "A"\nprofile = "qhy163m"\n'
                      '[[cameras]]\nid = "guide"\ndevice = "B"\nhost = "pi2"\nport = 7625\n')
    main, guide = load_settings(config, environ={}).camera_configs()
    assert (main.indi.host, main.indi.port, main.indi.connect_timeout_s, main.profile) == ("rig", 7624, 5.0, "qhy163m")
    assert (guide.indi.host, guide.indi.port, guide.indi.device, guide.profile) == ("pi2", 7625, "B", "auto")
    for cameras, message in (([{"id": "a", "device": "A"}, {"id": "a", "device": "B"}], "distinct"),
                             ([{"id": "a", "device": "A"}, {"id": "b", "device": "A"}], "same INDI"),
                             ([{"id": "a", "device": "A"}, {"id": "b"}], "INDI device name"),
                             ([{"id": "no spaces", "device": "A"}], "pattern"),
                             ([{"id": "a", "device": "A", "colour": "red"}], "Extra inputs")):
        with pytest.raises(ValidationError, match=message):
            Settings.model_validate({"cameras": cameras})


def test_camera_status_shows_every_configured_camera(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``darkd camera status`` with two ``[[cameras]]`` on INDI ports where no server listens: each camera is
    reported (not only the first), ``--camera`` picks one, an unknown id is a usage error."""
    from daemon.cli import main as darkd

    config = tmp_path / "darkd.toml"
    config.write_text('[indi]\nconnect_timeout_s = 2\n[[cameras]]\nid = "main"\nport = 1\ndevice = "A"\n'
                      'profile = "none"\n[[cameras]]\nid = "guide"\nport = 2\ndevice = "B"\nprofile = "none"\n')
    assert darkd(["camera", "status", "--json", "--config", str(config)]) == 1
    listed = json.loads(capsys.readouterr().out)
    assert [(c["id"], c["connected"]) for c in listed] == [("main", False), ("guide", False)]
    assert "127.0.0.1:2" in listed[1]["error"]
    assert darkd(["camera", "status", "--config", str(config)]) == 1
    text = capsys.readouterr().out
    assert text.startswith("camera main\n") and "\ncamera guide\n" in text
    assert darkd(["camera", "status", "--json", "--camera", "guide", "--config", str(config)]) == 1
    assert "127.0.0.1:2" in json.loads(capsys.readouterr().out)["error"]
    assert darkd(["camera", "status", "--camera", "spare", "--config", str(config)]) == 2
    assert "no configured camera 'spare'" in capsys.readouterr().err


def test_mqtt_publishes_and_announces_every_camera(tmp_path: Path) -> None:
    """``<base>/camera/<id>`` per camera (retained) next to today's ``<base>/camera`` (the first camera), and one
    set of Home Assistant camera entities per camera; no broker needed (the retained state is kept offline)."""
    from daemon.events import EventBus
    from daemon.mqtt import MqttPublisher
    from daemon.settings import MqttSettings

    runtime = Runtime(two_camera_settings(tmp_path / "lib"), connect_camera=False, start_engine=False)
    publisher = MqttPublisher(MqttSettings(node_id="pier"), EventBus(), camera_state=runtime.camera_snapshot,
                              camera_states=runtime.camera_snapshots, camera_ids=list(runtime.cameras))
    publisher._publish_camera()
    assert publisher.retained_topics() == ["darkd/pier/camera", "darkd/pier/camera/guide", "darkd/pier/camera/main"]
    assert json.loads(publisher._retained["darkd/pier/camera/guide"])["id"] == "guide"
    discovery = publisher.discovery_messages()
    temps = {c["state_topic"] for t, c in discovery.items() if t.endswith("sensor_temperature/config")}
    assert temps == {"darkd/pier/camera/main", "darkd/pier/camera/guide"}
    assert "homeassistant/sensor/pier/guide_sensor_temperature/config" in discovery
    assert discovery["homeassistant/sensor/pier/job_state/config"]["state_topic"] == "darkd/pier/job"
