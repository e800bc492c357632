"""The camera-health report over history rows (no frames): limits, cooler power at equal ambient, REST, metrics, CLI."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from daemon.api.app import create_app
from daemon.cli import main
from daemon.health import HistoryPoint, health_report
from daemon.library.models import MasterHistory
from daemon.runtime import Runtime
from daemon.settings import HealthSettings, Settings

T0 = datetime(2026, 1, 1, tzinfo=UTC)
CAMERA = "QHY CCD QHY163M-Sim"


def point(day: float, quantity: str, value: float, uncertainty: float | None = None, ambient_c: float | None = None,
          series: str = "dark-300s", entry_id: int = 1) -> HistoryPoint:
    return HistoryPoint(camera=CAMERA, entry_id=entry_id, kind="dark", slug="dark-300s", series=series,
                        set_point_c=-20.0, exposure_s=300.0, created_utc=T0 + timedelta(days=day), quantity=quantity,
                        value=value, uncertainty=uncertainty, unit="", ambient_c=ambient_c)


def quantities_warned(points: list[HistoryPoint]) -> list[str]:
    return [w["quantity"] for w in health_report(points, HealthSettings())["warnings"]]


def test_hot_pixels_window_and_bias_level_sigma() -> None:
    assert quantities_warned([point(0, "hot_pixels", 100), point(60, "hot_pixels", 125)]) == ["hot_pixels"]
    assert quantities_warned([point(0, "hot_pixels", 100), point(60, "hot_pixels", 115)]) == []  # +15 %
    assert quantities_warned([point(0, "hot_pixels", 100), point(200, "hot_pixels", 125)]) == []  # beyond 90 days
    levels = [point(d, "bias_level_adu", v, 0.1) for d, v in ((0, 500.0), (30, 500.1), (60, 499.9))]
    assert quantities_warned([*levels, point(90, "bias_level_adu", 500.2, 0.1)]) == []
    assert quantities_warned([*levels, point(90, "bias_level_adu", 501.0, 0.1)]) == ["bias_level_adu"]


def test_cooler_power_is_judged_only_at_equal_ambient() -> None:
    def power(day: float, pct: float, ambient: float | None) -> HistoryPoint:
        return point(day, "cooler_power_pct", pct, 0.5, ambient, series="set point -20 C")

    assert quantities_warned([power(0, 60, 10.0), power(40, 72, 11.0)]) == ["cooler_power_pct"]  # +20 % at ±2 °C
    assert quantities_warned([power(0, 60, 10.0), power(40, 72, 16.0)]) == []  # warmer night: not comparable
    assert quantities_warned([power(0, 60, 10.0), power(40, 66, 10.0)]) == []  # +10 %
    report = health_report([power(0, 60, None), power(40, 90, None)], HealthSettings())
    assert report["warnings"] == [] and "not recorded" in report["series"][0]["notes"][0]


@pytest.fixture
def runtime(tmp_path: Path) -> Iterator[Runtime]:
    settings = Settings.model_validate({"library": {"root": str(tmp_path / "lib")}})
    rt = Runtime(settings, connect_camera=False, start_engine=False, warm_on_shutdown=False)
    rt.index.create()
    with rt.index.write_session() as s:
        for day, value in ((0, 100.0), (45, 130.0)):
            s.add(MasterHistory(camera=CAMERA, entry_id=int(day) + 1, kind="dark", slug="dark-300s", series="dark-300s",
                                set_point_c=-20.0, exposure_s=300.0, created_utc=T0 + timedelta(days=day),
                                quantity="hot_pixels", value=value, uncertainty=value**0.5, unit="pixels"))
    yield rt
    rt.index.close()


def test_rest_metrics_and_cli(runtime: Runtime, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with TestClient(create_app(runtime, manage_runtime=False), client=("127.0.0.1", 50000)) as client:
        body = client.get("/api/v1/camera/health").json()
        assert [w["quantity"] for w in body["warnings"]] == ["hot_pixels"]
        assert "rebuild the darks" in body["warnings"][0]["suggestion"]
        assert body["series"][0]["trend"]["slope_per_day"] == pytest.approx(30 / 45)
        assert client.get("/api/v1/camera/health", params={"camera": "other"}).json()["series"] == []
        metrics = client.get("/metrics").text
    labels = f'camera="{CAMERA}",quantity="hot_pixels",series="dark-300s"'
    assert f"darkd_camera_health_warning{{{labels}}} 1.0" in metrics
    assert f"darkd_camera_health_value{{{labels}}} 130.0" in metrics

    config = tmp_path / "darkd.toml"
    config.write_text(f'[library]\nroot = "{runtime.settings.library.root}"\n', encoding="utf-8")
    assert main(["camera", "health", "--config", str(config), "--json", "--plot", str(tmp_path / "plots")]) == 1
    out = json.loads(capsys.readouterr().out)
    assert out["warnings"][0]["quantity"] == "hot_pixels"
    assert (tmp_path / "plots" / "QHY_CCD_QHY163M-Sim_hot_pixels.png").stat().st_size > 1000
    assert main(["camera", "health", "--config", str(config)]) == 1
    assert "WARNING camera health" in capsys.readouterr().out
