"""daemon.settings: TOML file, then DARKD_* environment overrides, validated into one object."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from daemon.settings import DEFAULT_CONFIG, load_settings


def test_shipped_default_config_loads() -> None:
    settings = load_settings(DEFAULT_CONFIG, environ={})
    assert settings.api.host == "127.0.0.1"
    assert settings.cooling.tolerance_c == pytest.approx(0.2)
    assert settings.library.resolved_database_url().startswith("sqlite:///")


def test_environment_overrides_nested_keys(tmp_path: Path) -> None:
    cfg = tmp_path / "darkd.toml"
    cfg.write_text('[indi]\nport = 7624\n[library]\nroot = "/data/lib"\n')
    settings = load_settings(cfg, environ={"DARKD_INDI__PORT": "7777", "DARKD_SIM_SEED": "3"})
    assert settings.indi.port == 7777
    assert settings.library.root == Path("/data/lib")


def test_bad_values_and_missing_file_are_clear(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="port"):
        load_settings(DEFAULT_CONFIG, environ={"DARKD_INDI__PORT": "not-a-number"})
    with pytest.raises(FileNotFoundError, match="config file not found"):
        load_settings(tmp_path / "missing.toml", environ={})
