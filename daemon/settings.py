"""All daemon settings in one object, loaded from a TOML file with ``DARKD_*`` environment overrides.

Nested keys use a double underscore in the environment: ``DARKD_INDI__PORT=7625`` overrides ``[indi] port``; list and
table settings take JSON (``DARKD_CAMERAS='[{"id": "main", "device": "…"}]'``) and a number picks one list item
(``DARKD_CAMERAS__1__DEVICE=…``): :func:`_apply_env`.
Units are in the names: seconds (``_s``), degrees Celsius (``_c``), days (``_days``).
"""

from __future__ import annotations

import json
import os
import tomllib
from dataclasses import dataclass
from pathlib import Path
from types import UnionType
from typing import Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel, Field, ValidationError, model_validator
from pydantic_core import PydanticCustomError

DEFAULT_CONFIG = Path(__file__).resolve().parent.parent / "config" / "darkd.toml"


class IndiSettings(BaseModel):
    host: str = "127.0.0.1"
    port: int = 7624
    device: str | None = None  # None: the first CCD the server announces
    connect_timeout_s: float = 30.0


class CoolingSettings(BaseModel):
    tolerance_c: float = 0.2
    hold_s: float = 60.0
    timeout_s: float = 1800.0
    ramp_c_per_min: float | None = None
    warm_up_rate_c_per_min: float = 5.0
    warm_up_target_c: float = 15.0
    warm_up_at_end: bool = True
    unreachable_window_s: float = 120.0  # no approach for this long at >= unreachable_power_pct: set point unreachable
    unreachable_power_pct: float = 95.0
    reconnect_timeout_s: float = 120.0  # how long a series keeps trying to reconnect after the server/device dropped


class LibrarySettings(BaseModel):
    root: Path = Path("/var/lib/darkd/library")
    database_url: str | None = None  # None: sqlite:///<root>/index.sqlite3
    validity_days: float = 90.0
    temperature_tolerance_c: float = 0.5
    frames_bias: int = 50
    frames_dark: int = 20
    max_retakes: int = 3
    review_k_sigma: float = 5.0  # a new master is held for review when more than review_max_moved_fraction of its
    review_max_moved_fraction: float = 0.001  # pixels moved beyond k·σ from the previous master (calib/compare.py)
    min_free_bytes: int = Field(default=1 << 30, ge=0, le=1 << 50)  # disk margin kept free beyond a job's needs
    #: captured frames (16-bit integers) written as lossless Rice tile-compressed FITS ("rice") or plain ("none");
    #: masters (float32) are never compressed (calib/frames.py, docs/benchmarks.md for the measured ratio)
    compression: Literal["none", "rice"] = "none"

    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{self.root / 'index.sqlite3'}"


class ApiSettings(BaseModel):
    host: str = "127.0.0.1"
    port: int = 8470
    read_tokens: list[str] = Field(default_factory=list)
    control_tokens: list[str] = Field(default_factory=list)
    tokens_file: Path | None = None
    allowed_roots: list[Path] = Field(default_factory=list)
    max_body_bytes: int = 1_048_576
    #: concurrent ``GET /events`` streams; one more gets 503. Each holds a socket (a file descriptor): keep it well
    #: under the process's descriptor limit (systemd's default 1024, raised to 4096 in systemd/darkd.service).
    max_sse_clients: int = Field(default=200, ge=1, le=100_000)


class LightCameraSettings(BaseModel):
    """``[lights."<camera>"]``: what this camera's lights do not state in their headers, set once per camera.

    Used by the unstated-fields rule (:mod:`daemon.light_rule`) after the light's own header and before what the frame
    shows and the driver's recorded state. ``read_modes`` maps read-mode names (N.I.N.A. ``READOUTM``, SGP) to the
    driver's mode index. ``gain``/``offset`` apply only to lights that do not state them.
    """

    model_config = {"extra": "forbid"}

    gain: int | None = Field(default=None, ge=0)
    offset: int | None = Field(default=None, ge=0)
    read_mode: int | None = Field(default=None, ge=0)
    usb_traffic: int | None = Field(default=None, ge=0)
    amp_glow: Literal["auto", "on", "off"] | None = None
    overscan: Literal["include", "ignore"] | None = None
    bit_depth: int | None = Field(default=None, ge=1, le=32)
    read_modes: dict[str, int] = Field(default_factory=dict)
    #: other names lights give this camera in ``INSTRUME`` (N.I.N.A./ASCOM "QHY163M", SGP, SharpCap, a POCS serial
    #: number): a light naming one of them is keyed to this camera (compared case-insensitively)
    names: list[str] = Field(default_factory=list, max_length=100)


class MqttSettings(BaseModel):
    """``[mqtt]``: optional publishing to an MQTT broker for home/observatory automation (:mod:`daemon.mqtt`)."""

    enabled: bool = False
    host: str = "127.0.0.1"
    port: int | None = Field(default=None, ge=1, le=65535)  # None: 1883, or 8883 with tls (broker_port)
    topic_prefix: str = "darkd"  # topics are <topic_prefix>/<node_id>/...
    node_id: str | None = None  # None: this host's name ([a-zA-Z0-9_-] only; other characters become "_")
    client_id: str | None = None  # None: darkd-<node_id>
    username: str | None = None
    password: str | None = None
    keepalive_s: int = Field(default=60, ge=5, le=3600)
    discovery: bool = True  # Home Assistant MQTT discovery configs under <discovery_prefix>/
    discovery_prefix: str = "homeassistant"
    state_interval_s: float = Field(default=10.0, gt=0)  # camera snapshot and library counts, published if changed
    reconnect_min_s: int = Field(default=1, ge=1)  # back-off after the broker went away: doubles up to max
    reconnect_max_s: int = Field(default=60, ge=1)
    #: TLS to the broker (usually port 8883): the broker's certificate is checked against ``ca_file`` (PEM; None: the
    #: system's trusted CAs) and its host name against ``host``, unless ``tls_insecure`` (a self-signed certificate
    #: whose name does not match: still encrypted, no longer authenticated)
    tls: bool = False
    ca_file: Path | None = None
    cert_file: Path | None = None  # a client certificate (PEM), for brokers that authenticate clients by certificate
    key_file: Path | None = None  # its private key (PEM, unencrypted); with cert_file
    tls_insecure: bool = False

    @property
    def broker_port(self) -> int:
        """``port``, else MQTT's registered port: 1883, or 8883 over TLS."""
        return self.port if self.port is not None else 8883 if self.tls else 1883

    @model_validator(mode="after")
    def _tls_files(self) -> MqttSettings:
        """Reject at load time what would otherwise fail in the network thread, retried forever: a client
        certificate without its key (or the reverse), TLS files given without ``tls``, files that cannot be read."""
        files = {"ca_file": self.ca_file, "cert_file": self.cert_file, "key_file": self.key_file}
        given = [name for name, path in files.items() if path is not None]
        if given and not self.tls:
            raise ValueError(f"[mqtt] {', '.join(given)} given but tls = false: set tls = true to use them")
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("[mqtt] cert_file and key_file go together (a client certificate and its private key)")
        if self.enabled:
            for name, path in files.items():
                if path is not None and not os.access(path, os.R_OK):
                    raise ValueError(f"[mqtt] {name} {path} does not exist or cannot be read")
        if self.enabled and self.tls:  # parse them as the client will (a broken PEM, a key of another certificate)
            import ssl

            try:
                context = ssl.create_default_context(cafile=str(self.ca_file) if self.ca_file else None)
                if self.cert_file is not None:
                    context.load_cert_chain(self.cert_file, self.key_file)
            except (ssl.SSLError, OSError) as exc:
                raise ValueError(f"[mqtt] the TLS files cannot be used: {exc}") from None
        return self


class HealthSettings(BaseModel):
    """``[health]``: limits of a camera's health over months (:mod:`daemon.health`, docs/health.md). A quantity beyond
    its limit is a warning (SSE ``warning`` event, ``darkd_camera_health_warning`` metric) suggesting a rebuild."""

    enabled: bool = True  # record every new master's statistics in the index (``master_history``)
    window_days: float = Field(default=90.0, gt=0)  # the window of the relative limits below
    hot_pixels_rise_fraction: float = Field(default=0.20, ge=0)  # hot pixels +20 % within window_days
    hot_pixels_min_new: int = Field(default=5, ge=0)  # … and at least this many more pixels
    level_sigma: float = Field(default=3.0, gt=0)  # bias/overscan level or read noise moved by more than kσ
    read_noise_rise_fraction: float = Field(default=0.10, ge=0)  # … and read noise up by this fraction
    dark_current_rise_fraction: float = Field(default=0.50, ge=0)  # dark current at a set point up 50 % (and > kσ)
    cooler_power_rise_fraction: float = Field(default=0.15, ge=0)  # cooler power at a set point up 15 % …
    ambient_match_c: float = Field(default=2.0, gt=0)  # … at equal ambient (± this many °C)
    measure_frames: int = Field(default=4, ge=2, le=64)  # frames of an entry read for read noise and dark current
    #: e⁻/ADU per camera for the dark current in e⁻/s (else the frames' ``EGAIN``; without either: ADU²/s)
    gain_e_per_adu: dict[str, float] = Field(default_factory=dict)


class WatchSettings(BaseModel):
    """``[watch]``: the closed loop (:mod:`daemon.watch`, docs/watch.md): watch lights folders, calibrate each new light
    whose master exists, build the missing darks when the camera cannot image, then calibrate the waiting lights."""

    folders: list[Path] = Field(default_factory=list, max_length=100)  # empty: no watcher
    output: Path = Path("calibrated")  # relative: beside the lights (<folder>/calibrated); absolute: one folder
    poll: bool = False  # poll the folders instead of inotify (network shares: NFS, SMB)
    interval_s: float = Field(default=2.0, gt=0, le=3600)  # a light is complete when its size held this long
    build_window: str | None = None  # "22:00-05:00" local time: build missing darks inside it (may wrap midnight)
    weather: dict[str, Any] | None = None  # {"device", "host"?, "port"?, "hold_s"?, ...}: build while sky is closed
    ambient_c: float | None = None  # to tell a set point the cooler cannot reach (with max_cooling_delta_c)
    max_cooling_delta_c: float | None = None  # default: the camera profile's, else 38
    max_attempts: int = Field(default=2, ge=1, le=100)  # builds of a key that failed before it is reported unbuildable
    readout_s: float = Field(default=2.0, ge=0)  # for the build-time estimate
    #: build once the camera took no exposure for anyone this long (the imaging program stopped or disconnected)
    idle_s: float | None = Field(default=None, gt=0, le=7 * 86_400)
    #: replace the pixels flagged in the master's defect map (``darkd calibrate --cosmetic``) in every calibrated light
    cosmetic: bool = False


#: ``[[cameras]] id``: short, URL-safe (``GET /api/v1/cameras/{id}``, thread and log names)
CAMERA_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
#: the id of the one camera built from the top-level ``camera_profile`` and ``[indi]`` when ``[[cameras]]`` is absent
DEFAULT_CAMERA_ID = "default"
MAX_CAMERAS = 32


class CameraSettings(BaseModel):
    """``[[cameras]]``: one camera of a daemon that serves several. Unset connection fields come from ``[indi]``,
    an unset profile from the top-level ``camera_profile`` (:meth:`Settings.camera_configs`)."""

    model_config = {"extra": "forbid"}

    id: str = Field(pattern=CAMERA_ID_PATTERN)
    host: str | None = None
    port: int | None = Field(default=None, ge=1, le=65535)
    device: str | None = None  # None: the first CCD the server announces (only sensible with one camera per server)
    profile: str | None = None
    connect_timeout_s: float | None = Field(default=None, gt=0)


@dataclass(frozen=True)
class CameraConfig:
    """A configured camera, resolved: its id, its INDI connection and its profile name."""

    id: str
    indi: IndiSettings
    profile: str

    def matches(self, name: str | None) -> bool:
        """Whether a job's or a library key's camera name is this camera's id or its INDI device name."""
        return name is not None and name in (self.id, self.indi.device)


class Settings(BaseModel):
    """Everything the daemon reads from its configuration."""

    camera_profile: str = "auto"  # detected from the driver, model and sensor size; or a config/cameras/<name>.toml
    #: several cameras in one daemon; empty: one camera (id ``default``) from ``camera_profile`` and ``[indi]``
    cameras: list[CameraSettings] = Field(default_factory=list, max_length=MAX_CAMERAS)
    indi: IndiSettings = Field(default_factory=IndiSettings)
    cooling: CoolingSettings = Field(default_factory=CoolingSettings)
    library: LibrarySettings = Field(default_factory=LibrarySettings)
    api: ApiSettings = Field(default_factory=ApiSettings)
    #: per camera (the light's ``INSTRUME``, the INDI device name): values for fields its lights do not state
    lights: dict[str, LightCameraSettings] = Field(default_factory=dict)
    mqtt: MqttSettings = Field(default_factory=MqttSettings)
    health: HealthSettings = Field(default_factory=HealthSettings)
    watch: WatchSettings = Field(default_factory=WatchSettings)

    @model_validator(mode="after")
    def _distinct_cameras(self) -> Settings:
        ids = [c.id for c in self.cameras]
        if len(set(ids)) != len(ids):
            raise ValueError(f"[[cameras]]: ids must be distinct, got {', '.join(ids)}")
        targets = [(c.indi.host, c.indi.port, c.indi.device) for c in self.camera_configs()]
        if len(set(targets)) != len(targets):
            raise ValueError("[[cameras]]: two cameras name the same INDI host, port and device")
        if len(targets) > 1 and any(device is None for _, _, device in targets):
            raise ValueError("[[cameras]]: with several cameras each needs its INDI device name (device = ...)")
        return self

    def camera_configs(self) -> list[CameraConfig]:
        """The configured cameras, the first being the default one (``GET /camera``, jobs naming no camera)."""
        if not self.cameras:
            return [CameraConfig(DEFAULT_CAMERA_ID, self.indi, self.camera_profile)]
        out = []
        for cam in self.cameras:
            given = {k: v for k, v in (("host", cam.host), ("port", cam.port), ("device", cam.device),
                                       ("connect_timeout_s", cam.connect_timeout_s)) if v is not None}
            out.append(CameraConfig(cam.id, self.indi.model_copy(update={"device": None, **given}),
                                    cam.profile or self.camera_profile))
        return out


def _env_error(key: str, value: str, message: str) -> ValidationError:
    """A ``DARKD_*`` variable that cannot be applied (a bad JSON list or table, an index past the end of a list), as
    the same ``ValidationError`` a bad value in the file gives (the CLI and the service report those already)."""
    return ValidationError.from_exception_data("Settings", [
        {"type": PydanticCustomError("environment", "{message}", {"message": message}), "loc": (key,), "input": value}])


def _setting_type(model: Any, path: list[str]) -> Any:
    """The declared type of the setting at ``path`` under the pydantic ``model`` (``None`` when unknown): a list
    index in the path (``cameras``, ``0``) steps into the list's item type; ``X | None`` is ``X``."""
    kind: Any = model
    for part in path:
        kind = _unoptional(kind)
        if get_origin(kind) is list:
            kind = get_args(kind)[0] if part.isdigit() else None
        elif get_origin(kind) is dict:
            kind = get_args(kind)[1]
        elif isinstance(kind, type) and issubclass(kind, BaseModel) and part in kind.model_fields:
            kind = kind.model_fields[part].annotation
        else:
            return None
    return _unoptional(kind)


def _container(path: list[str]) -> Any:
    """``list`` or ``dict`` when the setting at ``path`` is a list or a table (it then takes JSON), else None."""
    origin = get_origin(_setting_type(Settings, path))
    return origin if origin in (list, dict) else None


def _unoptional(kind: Any) -> Any:
    args = [a for a in get_args(kind) if a is not type(None)]
    return args[0] if get_origin(kind) in (Union, UnionType) and len(args) == 1 else kind


def _apply_env(data: dict[str, Any], environ: dict[str, str], prefix: str = "DARKD_") -> dict[str, Any]:
    """Apply ``DARKD_<SECTION>__<KEY>=value`` overrides to the file's ``data``.

    A list or table setting takes JSON (``DARKD_CAMERAS='[{"id": "main", "device": "QHY CCD QHY163M-0123"}]'``,
    ``DARKD_WATCH__FOLDERS='["/data/lights"]'``); a number in the path picks one item of a list, ``len`` of it adds
    one (``DARKD_CAMERAS__1__DEVICE=…`` changes the second ``[[cameras]]`` entry's device). Everything else is the
    text pydantic converts and checks as it does the file's values."""
    for key, value in sorted(environ.items()):  # sorted: CAMERAS before CAMERAS__0__… (a list, then its items)
        if not key.startswith(prefix) or key.startswith("DARKD_SIM_"):
            continue
        path = key[len(prefix):].lower().split("__")
        kind = _container(path)
        parsed: Any = value
        if kind is not None:
            try:
                parsed = json.loads(value)
            except json.JSONDecodeError as exc:
                raise _env_error(key, value, f"a {'list' if kind is list else 'table'} setting takes JSON "
                                 f"(e.g. {'[...]' if kind is list else '{...}'}): {exc}") from None
        node: Any = data
        for depth, part in enumerate(path):
            last = depth == len(path) - 1
            if isinstance(node, list):
                if not part.isdigit() or int(part) > len(node):
                    raise _env_error(key, value, f"{'__'.join(path[:depth]).upper()} has {len(node)} entries: "
                                     f"an index 0..{len(node)} changes one or adds one")
                if int(part) == len(node):
                    node.append({})
                index: Any = int(part)
            elif isinstance(node, dict):
                index = part
            else:
                raise _env_error(key, value, f"{'__'.join(path[:depth]).upper()} is not a section or a list")
            if last:
                node[index] = parsed
            else:
                if isinstance(node, dict) and index not in node:
                    node[index] = [] if _container(path[:depth + 1]) is list else {}
                node = node[index]
    return data


def load_settings(path: str | os.PathLike[str] | None = None, environ: dict[str, str] | None = None) -> Settings:
    """Read ``path`` (default: ``config/darkd.toml`` if present) then apply ``DARKD_*`` overrides and validate."""
    env = dict(os.environ if environ is None else environ)
    cfg = Path(path) if path is not None else Path(env.get("DARKD_CONFIG", DEFAULT_CONFIG))
    data: dict[str, Any] = {}
    if cfg.is_file():
        with cfg.open("rb") as fh:
            data = tomllib.load(fh)
    elif path is not None:
        raise FileNotFoundError(f"config file not found: {cfg}")
    env.pop("DARKD_CONFIG", None)
    return Settings.model_validate(_apply_env(data, env))
