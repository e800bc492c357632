"""``darkd serve --config PATH``: the daemon (job engine, camera monitor, HTTP API on uvicorn).

Under systemd (``Type=notify``): ``READY=1`` once the HTTP server listens and the runtime has started, then
``WATCHDOG=1`` every ``WATCHDOG_USEC / 2`` — but only while ``GET /health`` answers, so a wedged event loop makes
systemd restart the service — and ``STOPPING=1`` on shutdown (via the ``sdnotify`` package; no-ops elsewhere).
SIGTERM/SIGINT: uvicorn stops accepting requests, then the lifespan stops the runtime: running jobs abort or finish
their exposure and are persisted as queued (resumed at the next start), the camera is warmed if configured.
Logs go to stderr; under journald (``JOURNAL_STREAM`` set) each line carries its syslog priority (``<3>`` …).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Any

log = logging.getLogger("darkd.serve")

SYSLOG_PRIORITY = {logging.CRITICAL: 2, logging.ERROR: 3, logging.WARNING: 4, logging.INFO: 6, logging.DEBUG: 7}


class JournalFormatter(logging.Formatter):
    """``<priority>logger: message`` (journald parses the prefix into PRIORITY; it adds its own timestamps)."""

    def format(self, record: logging.LogRecord) -> str:
        prio = SYSLOG_PRIORITY.get(record.levelno, 6)
        text = f"<{prio}>{record.name}: {record.getMessage()}"
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info).replace("\n", f"\n<{prio}>")
        return text


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message (and exc)."""

    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {"time": self.formatTime(record), "level": record.levelname, "logger": record.name,
                                "message": record.getMessage()}
        if record.exc_info:
            data["exc"] = self.formatException(record.exc_info)
        return json.dumps(data)


def configure_logging(fmt: str, verbose: int) -> None:
    root = logging.getLogger()
    root.setLevel(logging.DEBUG if verbose >= 2 else logging.INFO)
    if fmt == "auto":
        fmt = "journal" if os.environ.get("JOURNAL_STREAM") else "text"
    formatter: logging.Formatter | None = {"journal": JournalFormatter(), "json": JsonFormatter()}.get(fmt)
    if formatter is not None:
        for handler in root.handlers:
            handler.setFormatter(formatter)


def health_ok(host: str, port: int, timeout_s: float = 5.0) -> bool:
    """True when ``GET /health`` on our own server answers 200 within ``timeout_s``."""
    import http.client  # here, not at module level: every darkd command imports this module to build its parser

    probe_host = "127.0.0.1" if host in ("0.0.0.0", "", "::") else host
    conn = http.client.HTTPConnection(probe_host, port, timeout=timeout_s)
    try:
        conn.request("GET", "/health")
        return conn.getresponse().status == 200
    except OSError:
        return False
    finally:
        conn.close()


def _notify_loop(server: Any, runtime: Any, host: str, port: int, stop: threading.Event) -> None:
    import sdnotify

    notifier = sdnotify.SystemdNotifier()
    while not stop.is_set() and not (server.started and runtime.running):
        stop.wait(0.1)
    if stop.is_set():
        return
    notifier.notify(f"READY=1\nSTATUS=serving on {host}:{port}\nMAINPID={os.getpid()}")
    log.info("darkd serving on http://%s:%s (library %s)", host, port, runtime.index.layout.root)
    watchdog_us = int(os.environ.get("WATCHDOG_USEC", "0") or 0)
    if watchdog_us <= 0:
        return
    interval_s = watchdog_us / 2e6
    while not stop.wait(interval_s):
        if health_ok(host, port, timeout_s=min(5.0, interval_s)):
            notifier.notify("WATCHDOG=1")
        else:
            log.error("health check failed: not sending the watchdog ping")


def run(args: argparse.Namespace) -> int:
    import uvicorn

    from daemon.api.app import create_app
    from daemon.runtime import Runtime
    from daemon.settings import load_settings

    configure_logging(args.log_format, args.verbose)
    # The event loop shares the GIL with the capture and job threads: a shorter switch interval (Python's default is
    # 5 ms) bounds how long a request waits for the GIL while those threads run Python code.
    sys.setswitchinterval(args.switch_interval_ms / 1000)
    settings = load_settings(args.config)
    if args.host is not None:
        settings.api.host = args.host
    if args.port is not None:
        settings.api.port = args.port
    runtime = Runtime(settings)
    app = create_app(runtime, stop_timeout_s=args.stop_timeout)
    config = uvicorn.Config(app, host=settings.api.host, port=settings.api.port, log_config=None,
                            access_log=args.access_log, lifespan="on", timeout_graceful_shutdown=5)
    server = uvicorn.Server(config)
    stop = threading.Event()
    notifier = threading.Thread(target=_notify_loop, args=(server, runtime, settings.api.host, settings.api.port,
                                                           stop), name="sd-notify", daemon=True)
    notifier.start()
    # uvicorn handles SIGTERM (graceful shutdown) and afterwards re-raises it with the previous handler: make that
    # handler a no-op so the process ends with status 0 after a clean shutdown instead of dying by the signal.
    signal.signal(signal.SIGTERM, lambda _sig, _frame: None)
    try:
        server.run()
    finally:
        stop.set()
        import sdnotify

        sdnotify.SystemdNotifier().notify("STOPPING=1")
        runtime.stop()  # no-op when the lifespan already stopped it
    if not server.started:
        log.error("the HTTP server did not start (see the messages above)")
        return 1
    log.info("darkd stopped")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    serve = subparsers.add_parser("serve", help="run the daemon: job engine, camera monitor and HTTP API")
    serve.add_argument("--config", type=Path, help="TOML configuration (default: $DARKD_CONFIG or config/darkd.toml)")
    serve.add_argument("--host", help="bind address (overrides [api] host)")
    serve.add_argument("--port", type=int, help="TCP port (overrides [api] port)")
    serve.add_argument("--log-format", choices=["auto", "text", "journal", "json"], default="auto",
                       help="auto: journal priorities under systemd, text otherwise")
    serve.add_argument("--access-log", action="store_true", help="log every HTTP request")
    serve.add_argument("--stop-timeout", type=float, default=30.0,
                       help="seconds the job engine gets to stop at shutdown (default 30)")
    serve.add_argument("--switch-interval-ms", type=float, default=1.0,
                       help="Python thread switch interval in ms (default 1; Python's own default is 5)")
    serve.set_defaults(func=run)
