"""A real, throw-away PostgreSQL server for tests: Debian's ``postgresql`` binaries, a temporary data directory,
listening only on a Unix socket in that directory (no TCP port, so parallel test runs never collide).

``initdb``/``postgres`` refuse to run as root, and CI runs as root: the server then runs as the ``postgres`` system
user that Debian's package creates (``runuser -u postgres``). Authentication is ``trust`` on the socket only.
Use :func:`postgres_or_skip` in fixtures: it skips with the reason when the binaries (or the user) are missing.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

PG_BIN_DIRS = sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)  # newest major version first
START_TIMEOUT_S = 60.0


def _pg_bin(name: str) -> str | None:
    for directory in PG_BIN_DIRS:
        candidate = directory / name
        if candidate.exists():
            return str(candidate)
    return shutil.which(name)


def _run_as() -> list[str]:
    """The prefix that runs a command as a non-root user (nothing when we are not root)."""
    if os.geteuid() != 0:
        return []
    return ["runuser", "-u", "postgres", "--"]


def unavailable_reason() -> str | None:
    """Why a PostgreSQL test server cannot be started here, or None when it can."""
    if _pg_bin("initdb") is None or _pg_bin("pg_ctl") is None:
        return "PostgreSQL server binaries not installed (Debian package 'postgresql')"
    if os.geteuid() == 0:
        try:
            subprocess.run(["id", "postgres"], check=True, capture_output=True)
        except (OSError, subprocess.CalledProcessError):
            return "running as root and there is no 'postgres' user to run the server as"
    try:
        import psycopg  # noqa: F401
    except ImportError:
        return "psycopg (the PostgreSQL driver) is not installed"
    return None


@dataclass(frozen=True)
class PostgresServer:
    """A running server; :meth:`url` gives a SQLAlchemy URL for one database on it."""

    socket_dir: Path
    data_dir: Path

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://postgres@/{database}?host={self.socket_dir}"

    def create_database(self, name: str) -> str:
        """Create an empty database ``name`` and return its URL."""
        import psycopg

        with psycopg.connect(host=str(self.socket_dir), user="postgres", dbname="postgres",
                             autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)


@contextlib.contextmanager
def running_postgres() -> Iterator[PostgresServer]:
    """Start a private server (``initdb`` + ``pg_ctl start``), yield it, stop it and remove its files."""
    base = Path(tempfile.mkdtemp(prefix="darkd-pg-"))
    data_dir, socket_dir = base / "data", base / "sock"
    socket_dir.mkdir()
    prefix = _run_as()
    if prefix:
        shutil.chown(base, user="postgres")
        shutil.chown(socket_dir, user="postgres")
        base.chmod(0o755)
    try:
        subprocess.run([*prefix, _pg_bin("initdb"), "-D", str(data_dir), "-U", "postgres", "--auth=trust",
                        "--no-sync", "-E", "UTF8", "--locale=C"], check=True, capture_output=True, timeout=120)
        options = (f"-c listen_addresses='' -c unix_socket_directories='{socket_dir}' -c fsync=off "
                   "-c synchronous_commit=off -c full_page_writes=off -c max_connections=100")
        subprocess.run([*prefix, _pg_bin("pg_ctl"), "-D", str(data_dir), "-o", options, "-l",
                        str(base / "server.log"), "-w", "-t", str(int(START_TIMEOUT_S)), "start"],
                       check=True, capture_output=True, timeout=START_TIMEOUT_S + 10)
        server = PostgresServer(socket_dir=socket_dir, data_dir=data_dir)
        _wait_ready(server)
        yield server
    except subprocess.CalledProcessError as exc:
        log = (base / "server.log").read_text(errors="replace") if (base / "server.log").exists() else ""
        raise RuntimeError(f"could not start PostgreSQL: {exc.stderr.decode(errors='replace')}\n{log}") from exc
    finally:
        if (data_dir / "postmaster.pid").exists():
            subprocess.run([*prefix, _pg_bin("pg_ctl"), "-D", str(data_dir), "-m", "immediate", "-w", "stop"],
                           capture_output=True, timeout=60)
        shutil.rmtree(base, ignore_errors=True)


def _wait_ready(server: PostgresServer) -> None:
    import psycopg

    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        try:
            with psycopg.connect(host=str(server.socket_dir), user="postgres", dbname="postgres", connect_timeout=2):
                return
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def postgres_or_skip() -> contextlib.AbstractContextManager[PostgresServer]:
    """:func:`running_postgres`, or ``pytest.skip`` with the reason it cannot run here."""
    reason = unavailable_reason()
    if reason is not None:
        pytest.skip(reason)
    return running_postgres()
