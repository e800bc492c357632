"""REST routes on a real index (SQLite on disk) and a real job engine: library filters and master download,
planning, jobs (409 conflict, 404, 422), SSE events, metrics, status page data."""

from __future__ import annotations

import io
import json
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from astropy.io import fits
from fastapi.testclient import TestClient

from calib.frames import write_frame
from daemon.api.app import create_app
from daemon.library.keys import LibraryKey
from daemon.runtime import Runtime
from daemon.settings import Settings
from drivers.camera import CameraState, OverscanMode

LOCAL = ("127.0.0.1", 50000)
CAMERA = "QHY CCD QHY163M-Sim"


def key(kind: str, exposure_s: float, set_point_c: float) -> LibraryKey:
    return LibraryKey(camera=CAMERA, kind=kind, exposure_s=exposure_s, set_point_c=set_point_c, gain=120, offset=30,
                      width_px=64, height_px=48)


@pytest.fixture
def runtime(tmp_path: Path) -> Runtime:
    settings = Settings.model_validate({"library": {"root": str(tmp_path / "lib")},
                                        "api": {"allowed_roots": [str(tmp_path / "data")]}})
    return Runtime(settings, connect_camera=False, start_engine=True, warm_on_shutdown=False)


@pytest.fixture
def client(runtime: Runtime) -> Iterator[TestClient]:
    with TestClient(create_app(runtime), client=LOCAL, raise_server_exceptions=False) as c:
        yield c


@pytest.fixture
def seeded(client: TestClient, runtime: Runtime) -> dict[str, Any]:
    """Three entries: a ready dark with a master (seeded data, known mean 1000 ADU), a planned dark, a bias."""
    index = runtime.index
    ready = index.upsert_entry(key("dark", 300, -10), frames_target=5)
    rng = np.random.default_rng(7)
    data = (1000 + rng.normal(0, 5, size=(48, 64))).astype(np.float32)
    master = write_frame(Path(ready.directory) / "master.fits", data, fits.Header({"IMAGETYP": "Master Dark"}))
    index.set_master(ready.id, master, {"mean_adu": float(data.mean()), "n_frames": 5}, review=False)
    planned = index.upsert_entry(key("dark", 60, -10), frames_target=5)
    bias = index.upsert_entry(key("bias", 0, -20), frames_target=10)
    return {"ready": ready.id, "planned": planned.id, "bias": bias.id, "data": data}


# ------------------------------------------------------------------------------------------------ library
def test_library_filters(client: TestClient, seeded: dict[str, Any]) -> None:
    everything = client.get("/api/v1/library").json()
    assert [e["id"] for e in everything] == [seeded["ready"], seeded["planned"], seeded["bias"]]
    darks = client.get("/api/v1/library", params={"kind": "dark"}).json()
    assert {e["id"] for e in darks} == {seeded["ready"], seeded["planned"]}
    assert [e["id"] for e in client.get("/api/v1/library?status=ready").json()] == [seeded["ready"]]
    both = client.get("/api/v1/library?status=ready&status=planned").json()
    assert {e["id"] for e in both} == {seeded["ready"], seeded["planned"], seeded["bias"]}
    assert [e["id"] for e in client.get("/api/v1/library?kind=dark&status=planned").json()] == [seeded["planned"]]
    # set point within the 0.5 °C tolerance; -20.6 is outside it
    assert [e["id"] for e in client.get("/api/v1/library?set_point_c=-19.6").json()] == [seeded["bias"]]
    assert client.get("/api/v1/library?set_point_c=-20.6").json() == []
    assert [e["id"] for e in client.get("/api/v1/library?exposure_s=60").json()] == [seeded["planned"]]
    assert len(client.get("/api/v1/library", params={"camera": CAMERA}).json()) == 3
    assert client.get("/api/v1/library", params={"camera": "other"}).json() == []


@pytest.mark.parametrize("query", ["kind=darkk", "status=done", "exposure_s=-1", "exposure_s=abc", "gain=1.5",
                                   "set_point_c=nan", "set_point_c=inf", "limit=0"])
def test_library_bad_filters_are_422(client: TestClient, query: str) -> None:
    r = client.get(f"/api/v1/library?{query}")
    assert r.status_code == 422
    assert r.json()["error"]["code"] == "invalid_request"


def test_entry_and_master(client: TestClient, seeded: dict[str, Any]) -> None:
    entry = client.get(f"/api/v1/library/{seeded['ready']}").json()
    assert entry["status"] == "ready" and entry["exposure_s"] == 300 and entry["set_point_c"] == -10
    r = client.get(f"/api/v1/library/{seeded['ready']}/master")
    assert r.status_code == 200 and r.headers["content-type"] == "application/fits"
    with fits.open(io.BytesIO(r.content)) as hdul:
        np.testing.assert_array_equal(hdul[0].data, seeded["data"])


@pytest.mark.parametrize("path", ["/api/v1/library/999", "/api/v1/library/0", "/api/v1/library/-3",
                                  "/api/v1/library/99999999999999999999", "/api/v1/library/999/master"])
def test_unknown_entry_is_404(client: TestClient, seeded: dict[str, Any], path: str) -> None:
    r = client.get(path)
    assert r.status_code == 404
    assert r.json()["error"]["code"] == "entry_not_found"


def test_master_missing(client: TestClient, seeded: dict[str, Any], runtime: Runtime) -> None:
    r = client.get(f"/api/v1/library/{seeded['planned']}/master")
    assert r.status_code == 404 and r.json()["error"]["code"] == "master_not_found"
    Path(runtime.index.get(seeded["ready"]).master).unlink()  # type: ignore[union-attr,arg-type]
    r = client.get(f"/api/v1/library/{seeded['ready']}/master")
    assert r.status_code == 404 and "library verify" in r.json()["error"]["message"]


# ------------------------------------------------------------------------------------------------ plan
def test_plan_from_keys_against_the_library(client: TestClient, seeded: dict[str, Any]) -> None:
    keys = [{**key("dark", 300, -10).to_dict()}, {**key("dark", 120, -10).to_dict(), "frames": 7}]
    r = client.post("/api/v1/library/plan", json={"keys": keys, "ambient_c": 20})
    assert r.status_code == 200, r.text
    items = {i["exposure_s"]: i for i in r.json()["items"]}
    assert items[300]["status"] == "ready" and items[300]["frames_needed"] == 0
    assert items[120]["status"] == "missing" and items[120]["frames_needed"] == 7
    assert r.json()["total_frames"] == 7
    status = client.get("/api/v1/status").json()
    rows = {(row["kind"], row["exposure_s"]): row["status"] for row in status["coverage"]}
    assert rows[("dark", 120)] == "missing" and rows[("dark", 300)] == "ready"
    assert rows[("dark", 60)] == "in-progress"


@pytest.mark.parametrize("body", [
    {"keys": [{"camera": "c", "kind": "darkk", "exposure_s": 1, "set_point_c": 0, "gain": 1, "offset": 1}]},
    {"keys": [{"camera": "c", "kind": "dark", "exposure_s": 1, "set_point_c": 0, "gain": "x", "offset": 1}]},
    {"keys": [{"camera": "c", "kind": "dark", "exposure_s": 1, "set_point_c": 0, "gain": 1}]},
    {"keys": [{"camera": "c", "kind": "dark", "exposure_s": -1, "set_point_c": 0, "gain": 1, "offset": 1}]},
    {"keys": [{"camera": "c", "kind": "dark", "exposure_s": 1, "set_point_c": 0, "gain": 1, "offset": 1,
               "colour": "red"}]},
    {"keys": []}, {}, {"keys": [], "lights_dir": "x"},
])
def test_invalid_key_is_422(client: TestClient, body: dict[str, Any]) -> None:
    r = client.post("/api/v1/library/plan", json=body)
    assert r.status_code == 422, r.text
    assert r.json()["error"]["code"] in ("invalid_request", "invalid_key")


def test_nan_in_json_is_422(client: TestClient) -> None:
    raw = b'{"keys": [{"camera": "c", "kind": "dark", "exposure_s": NaN, "set_point_c": 0, "gain": 1, "offset": 1}]}'
    r = client.post("/api/v1/library/plan", content=raw, headers={"Content-Type": "application/json"})
    assert r.status_code == 422


# ------------------------------------------------------------------------------------------------ jobs
def _plan(client: TestClient) -> dict[str, Any]:
    r = client.post("/api/v1/library/plan", json={"keys": [key("dark", 120, -10).to_dict()], "include_bias": False})
    assert r.status_code == 200, r.text
    return r.json()


def test_job_lifecycle_and_conflict(client: TestClient) -> None:
    later = (datetime.now(UTC) + timedelta(days=1)).isoformat()  # start window closed: the job stays queued
    body = {"kind": "build-library", "params": {"plan": _plan(client), "not_before": later}}
    r = client.post("/api/v1/jobs", json=body)
    assert r.status_code == 201, r.text
    job = r.json()
    assert job["state"] == "queued" and job["camera"] == CAMERA
    second = client.post("/api/v1/jobs", json=body)
    assert second.status_code == 409
    assert second.json()["error"]["code"] == "job_conflict" and str(job["id"]) in second.json()["error"]["message"]
    assert client.get(f"/api/v1/jobs/{job['id']}").json()["state"] == "queued"
    assert [j["id"] for j in client.get("/api/v1/jobs?state=queued").json()] == [job["id"]]
    assert client.post(f"/api/v1/jobs/{job['id']}/pause").json()["state"] == "paused"
    r = client.post(f"/api/v1/jobs/{job['id']}/pause")
    assert r.status_code == 409 and "paused" in r.json()["error"]["message"]
    assert client.post(f"/api/v1/jobs/{job['id']}/resume").json()["state"] == "queued"
    assert client.post(f"/api/v1/jobs/{job['id']}/cancel").json()["state"] == "cancelled"
    assert client.post(f"/api/v1/jobs/{job['id']}/cancel").status_code == 409
    assert client.post("/api/v1/jobs", json=body).status_code == 201  # the camera is free again


@pytest.mark.parametrize("method,path", [("get", "/api/v1/jobs/999"), ("post", "/api/v1/jobs/999/cancel"),
                                         ("post", "/api/v1/jobs/999/pause"), ("post", "/api/v1/jobs/999/resume"),
                                         ("get", "/api/v1/jobs/0"), ("get", "/api/v1/jobs/123456789012345678901")])
def test_unknown_job_is_404(client: TestClient, method: str, path: str) -> None:
    r = getattr(client, method)(path)
    assert r.status_code == 404
    assert r.json()["error"]["code"] == "job_not_found"


@pytest.mark.parametrize("body,code,field", [
    ({"kind": "nonsense"}, "invalid_request", "kind"),
    ({"kind": "integrate", "params": {"entry_id": 999}}, "invalid_job", "no library entry with id 999"),
    ({"kind": "integrate", "params": {"entry_id": "abc"}}, "invalid_request", "params.entry_id"),
    ({"kind": "integrate", "params": {"entry_id": 1e300}}, "invalid_request", "params.entry_id"),
    ({"kind": "integrate", "params": {"entry_id": 1, "sigma_low": -1}}, "invalid_request", "params.sigma_low"),
    ({"kind": "build-library", "params": {}}, "invalid_request", "params.plan"),
    ({"kind": "build-library", "params": {"plan": {"items": "x"}}}, "invalid_request", "params.plan.items"),
    ({"kind": "integrate", "extra": 1}, "invalid_request", "extra"),
    ({"kind": "measure", "params": {"darks": ["a"], "biases": ["b"], "gain_e_per_adu": 0}}, "invalid_request",
     "params.gain_e_per_adu"),
])
def test_invalid_job_is_422_naming_the_field(client: TestClient, body: dict[str, Any], code: str, field: str) -> None:
    r = client.post("/api/v1/jobs", json=body)
    assert r.status_code == 422, r.text
    assert r.json()["error"]["code"] == code and field in r.json()["error"]["message"]


def test_infinite_number_in_job_params_is_422(client: TestClient) -> None:
    raw = b'{"kind": "integrate", "params": {"entry_id": 1e400}}'
    r = client.post("/api/v1/jobs", content=raw, headers={"Content-Type": "application/json"})
    assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_request"


@pytest.mark.parametrize("params", [{"lights_dir": "/etc"}, {"output_dir": "../../x", "lights_dir": "DATA/l"},
                                    {"lights": ["/tmp/a", "b"]}, {"darks": ["/etc/x.fits"]}])
def test_job_paths_outside_roots_are_refused(client: TestClient, runtime: Runtime, params: dict[str, Any]) -> None:
    data = runtime.settings.api.allowed_roots[0]
    params = {k: (v.replace("DATA", str(data)) if isinstance(v, str) else v) for k, v in params.items()}
    kind = "measure" if "darks" in params else "calibrate"
    params = {"output_dir": f"{data}/out", **params} if kind == "calibrate" else \
        {"biases": [f"{data}/b.fits"], "gain_e_per_adu": 1.0, **params}
    r = client.post("/api/v1/jobs", json={"kind": kind, "params": params})
    assert r.status_code in (403, 422), r.text
    assert r.json()["error"]["code"] in ("path_not_allowed", "invalid_path")


@pytest.mark.parametrize("params", [{"lights_dir": 5}, {"paths": ["/tmp/a"]}])
def test_job_params_of_the_wrong_shape_are_refused_before_any_path_check(client: TestClient,
                                                                         params: dict[str, Any]) -> None:
    r = client.post("/api/v1/jobs", json={"kind": "calibrate", "params": {"output_dir": "x", **params}})
    assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_request"


# ------------------------------------------------------------------------------------------------ events
def _parse_sse(lines: list[str]) -> list[dict[str, Any]]:
    return [json.loads(line.removeprefix("data: ")) for line in lines if line.startswith("data: ")]


def test_events_stream_filters_types(client: TestClient, runtime: Runtime) -> None:
    hub = client.app.state.event_hub  # type: ignore[attr-defined]

    def produce() -> None:
        deadline = time.monotonic() + 10
        while hub.client_count == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        runtime.bus.publish("temperature", {"temperature_c": -5.0})
        runtime.bus.publish("warning", {"job_id": 1, "message": "first"})
        runtime.bus.publish("frame", {"job_id": 1, "path": "/x.fits", "ok": False, "reasons": ["light leak"]})
        runtime.bus.publish("warning", {"job_id": 1, "message": "second"})

    producer = threading.Thread(target=produce)
    producer.start()
    with client.stream("GET", "/api/v1/events?types=warning,frame&limit=3") as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        events = _parse_sse(list(r.iter_lines()))
    producer.join()
    assert [e["type"] for e in events] == ["warning", "frame", "warning"]
    assert events[0]["message"] == "first" and events[1]["reasons"] == ["light leak"]
    assert hub.client_count == 0  # the finished stream unsubscribed


def test_events_unknown_type_is_422(client: TestClient) -> None:
    r = client.get("/api/v1/events?types=temperature,bogus")
    assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_event_type"


# ------------------------------------------------------------------------------------------------ metrics, camera
def _metric(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    raise AssertionError(f"{name} not in metrics")


def test_metrics_count_frames_and_library(client: TestClient, runtime: Runtime, seeded: dict[str, Any]) -> None:
    for ok in (True, True, False):
        runtime.bus.publish("frame", {"job_id": 1, "camera": CAMERA, "path": "/f.fits", "ok": ok, "reasons": []})
    deadline = time.monotonic() + 5
    while True:
        text = client.get("/metrics").text
        rejected = _metric(text, f'darkd_frames_captured_total{{camera="{CAMERA}",result="rejected"}}')
        if rejected == 1 or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert _metric(text, f'darkd_frames_captured_total{{camera="{CAMERA}",result="accepted"}}') == 2
    assert _metric(text, f'darkd_frames_captured_total{{camera="{CAMERA}",result="rejected"}}') == 1
    assert _metric(text, 'darkd_library_entries{status="ready"}') == 1
    assert _metric(text, 'darkd_library_entries{status="planned"}') == 2
    assert client.get("/api/v1/metrics").text.count("darkd_library_entries{") == 6


def test_camera_snapshot_samples_and_metrics(client: TestClient, runtime: Runtime) -> None:
    assert client.get("/api/v1/camera").json()["connected"] is False
    with runtime.bus.subscribe() as sub:
        runtime._record(CameraState(connected=True, device=CAMERA, temperature_c=-9.8, set_point_c=-10.0,
                                    cooler_on=True, cooler_power_pct=55.0, stable=True, gain=120, offset=30,
                                    binning=1, read_mode=0, overscan=OverscanMode.INCLUDE))
        event = sub.get(timeout_s=2)
    assert event is not None and event["type"] == "temperature" and event["cooler_power_pct"] == 55.0
    cam = client.get("/api/v1/camera").json()
    assert cam["connected"] and cam["temperature_c"] == -9.8 and cam["overscan"] == "include" and cam["stable"]
    assert 0 <= cam["age_s"] < 5
    status = client.get("/api/v1/status").json()
    assert status["samples"][-1]["temperature_c"] == -9.8 and status["camera"]["set_point_c"] == -10.0
    text = client.get("/metrics").text
    assert _metric(text, f'darkd_sensor_temperature_celsius{{camera="{CAMERA}"}}') == -9.8
    assert _metric(text, f'darkd_cooler_power_percent{{camera="{CAMERA}"}}') == 55.0
    assert 'camera="unknown"' not in text  # the placeholder series went once the device was known


def test_status_page_is_served(client: TestClient) -> None:
    page = client.get("/")
    assert page.status_code == 200 and "/static/status.js" in page.text
    for asset in ("status.js", "status.css"):
        assert client.get(f"/static/{asset}").status_code == 200
    assert client.get("/static/../../settings.py").status_code == 404


def test_library_list_cache_follows_events_and_expires(client: TestClient, runtime: Runtime,
                                                        seeded: dict[str, Any]) -> None:
    """GET /library is served from a cache: rebuilt soon after a job/frame event, else after at most 1 s."""
    assert len(client.get("/api/v1/library").json()) == 3
    runtime.index.upsert_entry(key("dark", 900, -10), frames_target=5)
    assert len(client.get("/api/v1/library").json()) == 3  # cached (no event yet)

    def wait_for_count(n: int, timeout_s: float) -> float:
        start = time.monotonic()
        while len(client.get("/api/v1/library").json()) != n:
            assert time.monotonic() - start < timeout_s, f"library listing not refreshed to {n} entries"
            time.sleep(0.02)
        return time.monotonic() - start

    runtime.bus.publish("job", {"job_id": 1, "state": "running"})
    assert wait_for_count(4, timeout_s=1.0) < 0.8  # well before the 1 s maximum age
    runtime.index.upsert_entry(key("dark", 1800, -10), frames_target=5)
    assert len(client.get("/api/v1/library").json()) == 4  # no event: still the cached body ...
    wait_for_count(5, timeout_s=2.5)  # ... until it is older than LIST_MAX_AGE_S


def test_metrics_job_duration(client: TestClient, runtime: Runtime) -> None:
    started = datetime.now(UTC) - timedelta(seconds=90)
    job = runtime.queue.add_job("integrate", {"entry_id": 1}, state="running")
    runtime.queue.update_job(job.id, state="succeeded", started_utc=started,
                             finished_utc=started + timedelta(seconds=75))
    for _ in range(2):  # a repeated final event is counted once
        runtime.bus.publish("job", {"job_id": job.id, "state": "succeeded"})
    name = 'darkd_job_duration_seconds_count{kind="integrate",state="succeeded"}'
    deadline = time.monotonic() + 5
    while name not in (text := client.get("/metrics").text):
        assert time.monotonic() < deadline, "job duration not recorded"
        time.sleep(0.05)
    time.sleep(0.3)  # let the repeated event through too
    text = client.get("/metrics").text
    assert _metric(text, name) == 1
    assert _metric(text, 'darkd_job_duration_seconds_sum{kind="integrate",state="succeeded"}') == pytest.approx(75)
    assert _metric(text, 'darkd_job_duration_seconds_bucket{kind="integrate",le="60.0",state="succeeded"}') == 0


def test_status_downsamples_history() -> None:
    from daemon.api.routes.status import downsample

    start = datetime(2026, 1, 1, tzinfo=UTC)
    samples = [{"time": (start + timedelta(seconds=2 * i)).isoformat().replace("+00:00", "Z"), "temperature_c": i}
               for i in range(5000)]
    out = downsample(samples, since=start + timedelta(seconds=2000), max_points=720)
    assert len(out) <= 721 and out[0]["temperature_c"] == 1000 and out[-1]["temperature_c"] == 4999
