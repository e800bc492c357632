"""Typed job params (issue 12) and their bounds (issue 15 item 3), through the real app and through the engine.

Before: build-library params skipped the checks of ``POST /library/plan``; 1e308, NaN, 10⁴⁰ and negative values were
queued with 201 and failed at run time, and a ``frames_target`` of 10⁷ spun the job thread at 100 % CPU.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from daemon.api.app import create_app
from daemon.events import EventBus
from daemon.jobs.build_library import MAX_FRAMES_PER_KEY
from daemon.jobs.engine import JobEngine
from daemon.jobs.states import (
    ACTIVE_STATES,
    COMMANDS,
    FINAL_STATES,
    JOB_KINDS,
    KIND_MODULES,
    TRANSITIONS,
    JobState,
    can_transition,
)
from daemon.library.keys import LibraryKey
from daemon.runtime import Runtime
from daemon.settings import Settings

LOCAL = ("127.0.0.1", 50000)
KEY = LibraryKey(camera="cam", kind="dark", exposure_s=60, set_point_c=-10, gain=120, offset=30)


@pytest.fixture
def runtime(tmp_path: Path) -> Iterator[Runtime]:
    settings = Settings.model_validate({"library": {"root": str(tmp_path / "lib")}})
    rt = Runtime(settings, connect_camera=False, start_engine=True, warm_on_shutdown=False)
    yield rt
    rt.stop()


@pytest.fixture
def client(runtime: Runtime) -> Iterator[TestClient]:
    with TestClient(create_app(runtime), client=LOCAL, raise_server_exceptions=False) as c:
        yield c


@pytest.fixture
def plan(client: TestClient) -> dict[str, Any]:
    r = client.post("/api/v1/library/plan", json={"keys": [KEY.to_dict()], "include_bias": False})
    assert r.status_code == 200, r.text
    return r.json()


def _with(plan: dict[str, Any], where: str, value: Any) -> dict[str, Any]:
    out = copy.deepcopy(plan)
    item = out["items"][0]
    (item["key"] if where != "frames_target" else item)[where] = value
    return out


@pytest.mark.parametrize("where,value", [
    ("frames_target", 10_000_000), ("frames_target", 10**40), ("frames_target", -5),
    ("exposure_s", 1e308), ("exposure_s", -1.0), ("set_point_c", 1e40), ("gain", 10**40), ("offset", -30),
])
def test_build_library_out_of_bounds_is_422_naming_the_field(client: TestClient, plan: dict[str, Any],
                                                              where: str, value: Any) -> None:
    body = {"kind": "build-library", "params": {"plan": _with(plan, where, value)}}
    r = client.post("/api/v1/jobs", json=body)
    assert r.status_code == 422, r.text
    error = r.json()["error"]
    assert error["code"] == "invalid_request" and f"params.plan.items.0.{'key.' if where != 'frames_target' else ''}"\
        f"{where}" in error["message"]
    assert client.get("/api/v1/jobs").json() == []


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity"])
def test_build_library_non_finite_numbers_are_422(client: TestClient, plan: dict[str, Any], literal: str) -> None:
    raw = json.dumps({"kind": "build-library", "params": {"plan": _with(plan, "set_point_c", "@")}})
    r = client.post("/api/v1/jobs", content=raw.replace('"@"', literal), headers={"Content-Type": "application/json"})
    assert r.status_code == 422 and "set_point_c" in r.json()["error"]["message"], r.text


def test_build_library_within_bounds_is_queued(client: TestClient, plan: dict[str, Any]) -> None:
    small = _with(_with(plan, "width_px", 64), "height_px", 48)  # 10 000 full frames would not fit the disk budget
    params = {"plan": _with(small, "frames_target", MAX_FRAMES_PER_KEY), "not_before": "2999-01-01T00:00:00Z",
              "max_retakes": 3}
    r = client.post("/api/v1/jobs", json={"kind": "build-library", "params": params})
    assert r.status_code == 201, r.text
    job = r.json()
    assert job["params"]["plan"]["items"][0]["frames_target"] == MAX_FRAMES_PER_KEY
    assert job["params"]["not_before"].startswith("2999-01-01T00:00:00") and job["params"]["max_retakes"] == 3


def test_the_engine_applies_the_same_bounds_whatever_the_way_in(runtime: Runtime, client: TestClient,
                                                                 plan: dict[str, Any]) -> None:
    engine = JobEngine(runtime.settings, runtime.index, lambda: None, EventBus())  # type: ignore[arg-type,return-value]
    with pytest.raises(ValueError, match=r"build-library: params\.plan\.items\.0\.frames_target: .*10000"):
        engine.submit("build-library", {"plan": _with(plan, "frames_target", 10_000_000)})
    with pytest.raises(ValueError, match=r"params\.plan\.items\.0\.key\.exposure_s"):
        engine.submit("build-library", {"plan": _with(plan, "exposure_s", float("nan"))})


def test_openapi_documents_each_kind_and_its_bounds(client: TestClient) -> None:
    schema = client.get("/api/v1/openapi.json").json()
    body = schema["paths"]["/api/v1/jobs"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert set(body["discriminator"]["mapping"]) == set(JOB_KINDS)
    parts = schema["components"]["schemas"]
    assert parts["PlanItemParams"]["properties"]["frames_target"]["maximum"] == MAX_FRAMES_PER_KEY
    assert parts["PlanKeyParams"]["properties"]["exposure_s"]["maximum"] == 86_400
    assert "entry_id" in parts["IntegrateParams"]["required"]
    assert {"output_dir"} <= set(parts["CalibrateParams"]["required"])
    assert parts["MeasureParams"]["properties"]["gain_e_per_adu"]["exclusiveMinimum"] == 0
    job_out = parts["JobOut"]["properties"]
    assert "$ref" in job_out["state"] or "enum" in job_out["state"]


def test_state_table_commands_and_kinds_are_consistent() -> None:
    assert set(TRANSITIONS) == set(JobState) and set(JobState) == ACTIVE_STATES | FINAL_STATES
    for state in FINAL_STATES:
        assert TRANSITIONS[state] == frozenset()
    for command in COMMANDS.values():
        assert all(can_transition(s, command.to_state) for s in command.from_states), command
    assert not can_transition("succeeded", "running") and not can_transition("nonsense", "queued")
    assert set(KIND_MODULES) == set(JOB_KINDS)


@pytest.mark.parametrize("module", ["states", "errors", "params"])
def test_the_bottom_job_modules_import_nothing_from_darkd(module: str) -> None:
    """``states``, ``errors`` and ``params`` sit under the store and the queue: they may not import darkd code."""
    import ast

    import daemon.jobs

    source = (Path(daemon.jobs.__file__).parent / f"{module}.py").read_text(encoding="utf-8")
    imported = {node.module or "" for node in ast.walk(ast.parse(source)) if isinstance(node, ast.ImportFrom)}
    imported |= {alias.name for node in ast.walk(ast.parse(source)) if isinstance(node, ast.Import)
                 for alias in node.names}
    assert not {name for name in imported if name.split(".")[0] in ("daemon", "drivers", "calib")}
