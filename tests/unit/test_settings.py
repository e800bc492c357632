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


def test_mqtt_tls_files_are_checked_when_loaded(tmp_path: Path) -> None:
    """What would only fail later, retried forever in paho's thread, is refused when the configuration is loaded
    (working certificates: tests/integration/test_mqtt.py)."""
    from daemon.settings import MqttSettings

    broken = tmp_path / "ca.pem"
    broken.write_text("-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n", encoding="utf-8")
    assert MqttSettings(enabled=False, tls=True, ca_file=tmp_path / "missing.pem").tls  # off: not checked
    with pytest.raises(ValidationError, match="tls = false"):
        MqttSettings(enabled=True, ca_file=broken)
    with pytest.raises(ValidationError, match="cert_file and key_file go together"):
        MqttSettings(enabled=True, tls=True, cert_file=broken)
    with pytest.raises(ValidationError, match="does not exist or cannot be read"):
        MqttSettings(enabled=True, tls=True, ca_file=tmp_path / "missing.pem")
    with pytest.raises(ValidationError, match="the TLS files cannot be used"):
        MqttSettings(enabled=True, tls=True, ca_file=broken)
    with pytest.raises(ValidationError, match="the TLS files cannot be used"):
        MqttSettings(enabled=True, tls=True, cert_file=broken, key_file=broken)
    assert MqttSettings(enabled=True, tls=True).tls  # the system's CAs
    env = {"DARKD_MQTT__TLS": "true", "DARKD_MQTT__CA_FILE": str(broken)}
    settings = load_settings(DEFAULT_CONFIG, environ=env)  # [mqtt] enabled = false in the shipped file
    assert settings.mqtt.tls and settings.mqtt.ca_file == broken
    with pytest.raises(ValidationError, match="the TLS files cannot be used"):
        load_settings(DEFAULT_CONFIG, environ={**env, "DARKD_MQTT__ENABLED": "true"})


def test_environment_sets_lists_tables_and_list_items(tmp_path: Path) -> None:
    """A container (systemd EnvironmentFile, docker -e) can configure what only the file could: ``[[cameras]]`` as
    JSON, one item of the file's list by index, list settings; a text setting stays text even when it looks like
    JSON; a bad value names its variable."""
    cfg = tmp_path / "darkd.toml"
    cfg.write_text('[[cameras]]\nid = "main"\ndevice = "QHY CCD QHY163M-0123"\n', encoding="utf-8")
    settings = load_settings(cfg, environ={"DARKD_CAMERAS__0__PORT": "7630", "DARKD_CAMERAS__1__ID": "guide",
                                           "DARKD_CAMERAS__1__DEVICE": "ZWO CCD ASI120MM Mini",
                                           "DARKD_WATCH__FOLDERS": '["/data/lights", "/data/more"]',
                                           "DARKD_MQTT__PASSWORD": '{"not": "json"}'})
    assert [(c.id, c.device, c.port) for c in settings.cameras] == [("main", "QHY CCD QHY163M-0123", 7630),
                                                                     ("guide", "ZWO CCD ASI120MM Mini", None)]
    assert settings.watch.folders == [Path("/data/lights"), Path("/data/more")]
    assert settings.mqtt.password == '{"not": "json"}'
    replaced = load_settings(cfg, environ={"DARKD_CAMERAS": '[{"id": "roof", "device": "ZWO CCD ASI2600MM Pro"}]',
                                           "DARKD_CAMERAS__0__PROFILE": "asi2600mm-pro"})
    assert [(c.id, c.device, c.profile) for c in replaced.cameras] == [("roof", "ZWO CCD ASI2600MM Pro",
                                                                        "asi2600mm-pro")]
    with pytest.raises(ValidationError, match=r"DARKD_CAMERAS\n.*takes JSON"):
        load_settings(cfg, environ={"DARKD_CAMERAS": "main"})
    with pytest.raises(ValidationError, match=r"DARKD_CAMERAS__3__ID\n.*CAMERAS has 1 entries"):
        load_settings(cfg, environ={"DARKD_CAMERAS__3__ID": "x"})
    with pytest.raises(ValidationError, match="cameras"):  # the items are checked as the file's are
        load_settings(cfg, environ={"DARKD_CAMERAS__0__PORT": "not-a-port"})


def test_mqtt_port_defaults_to_the_registered_port() -> None:
    from daemon.settings import MqttSettings

    assert MqttSettings().broker_port == 1883
    assert MqttSettings(tls=True).broker_port == 8883
    assert MqttSettings(tls=True, port=8884).broker_port == 8884
    assert load_settings(DEFAULT_CONFIG, environ={"DARKD_MQTT__TLS": "true"}).mqtt.broker_port == 8883
