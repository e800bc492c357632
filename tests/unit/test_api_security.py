"""Security rules of the REST API, each proven through the real app (FastAPI TestClient, real index on disk):
token scopes (401/403), loopback-only without tokens, allowed roots (traversal, symlink escape), body size (413),
JSON errors without stack traces."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from daemon.api.app import create_app
from daemon.api.auth import Authenticator, TokenFileError, is_loopback
from daemon.runtime import Runtime
from daemon.settings import Settings

READ, CONTROL = "read-token-1234", "control-token-5678"
LOCAL = ("127.0.0.1", 50000)


def make_client(tmp_path: Path, *, client: tuple[str, int] = LOCAL, **api: Any) -> TestClient:
    settings = Settings.model_validate({"library": {"root": str(tmp_path / "lib")}, "api": api})
    runtime = Runtime(settings, connect_camera=False, start_engine=False)
    return TestClient(create_app(runtime), client=client, raise_server_exceptions=False)


@pytest.fixture
def tokens_client(tmp_path: Path) -> Iterator[TestClient]:
    with make_client(tmp_path, read_tokens=[READ], control_tokens=[CONTROL]) as c:
        yield c


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


PLAN_BODY = {"keys": [{"camera": "cam", "kind": "dark", "exposure_s": 60, "set_point_c": -10, "gain": 1,
                       "offset": 2}]}


# ------------------------------------------------------------------------------------------------ tokens and scopes
def test_missing_token_is_401_with_bearer_challenge(tokens_client: TestClient) -> None:
    r = tokens_client.get("/api/v1/library")
    assert r.status_code == 401
    assert r.json()["error"]["code"] == "missing_token"
    assert r.headers["www-authenticate"].startswith("Bearer")


@pytest.mark.parametrize("header", [f"Bearer {READ}x", "Bearer ", f"Basic {READ}", READ, f"Bearer {CONTROL[:-1]}"])
def test_bad_token_is_401(tokens_client: TestClient, header: str) -> None:
    r = tokens_client.get("/api/v1/library", headers={"Authorization": header})
    assert r.status_code == 401
    assert r.json()["error"]["code"] in ("missing_token", "invalid_token")


def test_read_token_reads_but_cannot_control(tokens_client: TestClient) -> None:
    assert tokens_client.get("/api/v1/library", headers=bearer(READ)).status_code == 200
    assert tokens_client.get("/api/v1/camera", headers=bearer(READ)).status_code == 200
    assert tokens_client.get("/metrics", headers=bearer(READ)).status_code == 200
    r = tokens_client.post("/api/v1/jobs", json={"kind": "integrate", "params": {"entry_id": 1}},
                           headers=bearer(READ))
    assert r.status_code == 403
    assert r.json()["error"]["code"] == "insufficient_scope"
    for action in ("cancel", "pause", "resume"):
        assert tokens_client.post(f"/api/v1/jobs/1/{action}", headers=bearer(READ)).status_code == 403


def test_control_token_also_reads(tokens_client: TestClient) -> None:
    assert tokens_client.get("/api/v1/library", headers=bearer(CONTROL)).status_code == 200
    # past authentication, the (absent) job engine answers: proves the control scope was accepted
    r = tokens_client.post("/api/v1/jobs/1/cancel", headers=bearer(CONTROL))
    assert r.status_code == 503 and r.json()["error"]["code"] == "jobs_unavailable"


def test_health_and_ready_need_no_token(tokens_client: TestClient) -> None:
    assert tokens_client.get("/health").status_code == 200
    r = tokens_client.get("/ready")  # no camera in this test: not ready, but answered without a token
    assert r.status_code == 503 and r.json()["checks"]["database"] is True


def test_tokens_file_adds_tokens(tmp_path: Path) -> None:
    path = tmp_path / "tokens.toml"
    path.write_text('read_tokens = ["from-file-r"]\ncontrol_tokens = ["from-file-c"]\n')
    with make_client(tmp_path, tokens_file=str(path), client=("198.51.100.7", 4000)) as c:
        assert c.get("/api/v1/library", headers=bearer("from-file-r")).status_code == 200
        assert c.post("/api/v1/jobs/1/pause", headers=bearer("from-file-r")).status_code == 403
        assert c.post("/api/v1/jobs/1/pause", headers=bearer("from-file-c")).status_code == 503


@pytest.mark.parametrize("text", ["read_tokens = 'x'", "other = []", "read_tokens = [\"\"]", "not toml ["])
def test_bad_tokens_file_is_refused_at_start(tmp_path: Path, text: str) -> None:
    path = tmp_path / "tokens.toml"
    path.write_text(text)
    settings = Settings.model_validate({"api": {"tokens_file": str(path)}})
    with pytest.raises(TokenFileError, match=r"tokens\.toml"):
        Authenticator.from_settings(settings.api)


# ------------------------------------------------------------------------------------------------ no tokens: loopback
@pytest.mark.parametrize("host", ["127.0.0.1", "::1", "127.0.0.2", "::ffff:127.0.0.1"])
def test_no_tokens_allows_loopback(tmp_path: Path, host: str) -> None:
    with make_client(tmp_path, client=(host, 1234)) as c:
        assert c.get("/api/v1/library").status_code == 200


@pytest.mark.parametrize("host", ["192.168.1.20", "10.0.0.1", "2001:db8::1", "testclient"])
def test_no_tokens_refuses_remote_clients(tmp_path: Path, host: str) -> None:
    with make_client(tmp_path, client=(host, 1234)) as c:
        r = c.get("/api/v1/library")
        assert r.status_code == 403
        assert r.json()["error"]["code"] == "loopback_only"
        assert c.post("/api/v1/library/plan", json=PLAN_BODY).status_code == 403


def test_no_tokens_logs_a_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level("WARNING", logger="daemon.api.auth"):
        Authenticator.from_settings(Settings().api)
    assert "only loopback clients" in caplog.text


def test_is_loopback() -> None:
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("8.8.8.8") and not is_loopback("")


# ------------------------------------------------------------------------------------------------ allowed roots
@pytest.fixture
def roots(tmp_path: Path) -> dict[str, Path]:
    allowed = tmp_path / "allowed"
    lights = allowed / "lights"
    lights.mkdir(parents=True)
    outside = tmp_path / "outside"
    outside.mkdir()
    (allowed / "escape").symlink_to(outside, target_is_directory=True)
    (allowed / "inner-link").symlink_to(lights, target_is_directory=True)
    return {"allowed": allowed, "lights": lights, "outside": outside}


@pytest.fixture
def roots_client(tmp_path: Path, roots: dict[str, Path]) -> Iterator[TestClient]:
    with make_client(tmp_path, allowed_roots=[str(roots["allowed"])]) as c:
        yield c


def plan_lights(client: TestClient, lights_dir: str) -> Any:
    return client.post("/api/v1/library/plan", json={"lights_dir": lights_dir})


def test_path_inside_root_passes_the_check(roots_client: TestClient, roots: dict[str, Path]) -> None:
    # an empty lights folder: the path check passes, then planning says there are no lights (422 plan_failed)
    for raw in (str(roots["lights"]), "lights", str(roots["allowed"] / "inner-link")):
        r = plan_lights(roots_client, raw)
        assert r.status_code == 422, raw
        assert r.json()["error"]["code"] == "plan_failed"
        assert "no light frames" in r.json()["error"]["message"]


@pytest.mark.parametrize("raw", ["../outside", "lights/../../outside", "/etc", "/", "escape", "escape/sub",
                                 "lights/../escape"])
def test_traversal_and_symlink_escape_are_refused(roots_client: TestClient, roots: dict[str, Path], raw: str) -> None:
    r = plan_lights(roots_client, raw)
    assert r.status_code == 403, r.text
    assert r.json()["error"]["code"] == "path_not_allowed"


def test_absolute_path_outside_and_missing_path(roots_client: TestClient, roots: dict[str, Path]) -> None:
    assert plan_lights(roots_client, str(roots["outside"])).status_code == 403
    r = plan_lights(roots_client, "lights/does-not-exist")
    assert r.status_code == 404 and r.json()["error"]["code"] == "path_not_found"
    assert plan_lights(roots_client, "lights\x00/x").status_code == 422


def test_no_allowed_roots_means_no_paths(tmp_path: Path) -> None:
    with make_client(tmp_path) as c:
        r = plan_lights(c, str(tmp_path))
        assert r.status_code == 403 and r.json()["error"]["code"] == "no_allowed_roots"


# ------------------------------------------------------------------------------------------------ body size
def test_oversized_body_is_413(tmp_path: Path) -> None:
    with make_client(tmp_path, max_body_bytes=1000) as c:
        big = {"keys": [PLAN_BODY["keys"][0]] * 40}  # ~4 KB of valid JSON
        r = c.post("/api/v1/library/plan", json=big)
        assert r.status_code == 413
        assert r.json()["error"]["code"] == "body_too_large"
        assert c.post("/api/v1/library/plan", json=PLAN_BODY).status_code == 200  # a small body passes


def test_oversized_streamed_body_without_length_is_413(tmp_path: Path) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"keys": ['
        for _ in range(100):
            yield b'{"camera": "c", "kind": "dark", "exposure_s": 1, "set_point_c": 0, "gain": 1, "offset": 1},'
        yield b"]}"

    with make_client(tmp_path, max_body_bytes=1000) as c:
        r = c.post("/api/v1/library/plan", content=chunks(), headers={"Content-Type": "application/json"})
        assert r.status_code == 413


# ------------------------------------------------------------------------------------------------ error shape
def test_unexpected_error_is_500_without_details(tmp_path: Path) -> None:
    with make_client(tmp_path) as c:
        runtime: Runtime = c.app.state.runtime  # type: ignore[attr-defined]

        def broken(**_filters: object) -> list[object]:
            raise RuntimeError("secret internal detail /var/lib/x")

        runtime.index.entries = broken  # type: ignore[method-assign]
        r = c.get("/api/v1/library")
        assert r.status_code == 500
        assert r.json() == {"error": {"code": "internal_error",
                                      "message": "internal error; the daemon log has the details"}}
        assert "secret" not in r.text and "Traceback" not in r.text


def test_routing_errors_are_json(tmp_path: Path) -> None:
    with make_client(tmp_path) as c:
        r = c.get("/api/v1/no-such-thing")
        assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
        r = c.delete("/api/v1/library")
        assert r.status_code == 405 and r.json()["error"]["code"] == "method_not_allowed"
        r = c.post("/api/v1/library/plan", content=b"{not json", headers={"Content-Type": "application/json"})
        assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_request"
