"""``darkd watch DIR…`` (daemon/cli/watch.py): its help stays light (issue 16), and the command runs the closed loop in
the foreground — a light dropped into the folder is taken and waits for its dark (no library, no camera here), the
standing plan is in the index — and stops cleanly on SIGINT."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from datetime import datetime, timedelta
from pathlib import Path

from sqlalchemy import select

from daemon.library.catalog import LibraryIndex
from daemon.library.models import WatchKey, WatchLight
from daemon.settings import LibrarySettings
from tests.indi_server import free_port
from tests.unit.test_cli_startup import HEAVY, imported_by
from tests.unit.test_watch import light_bytes

DARKD = "import sys; from daemon.cli import main; sys.exit(main(sys.argv[1:]))"


def test_watch_help_imports_none_of_the_heavy_stack() -> None:
    loaded = imported_by("watch", "--help")
    assert not loaded & set(HEAVY), sorted(loaded & set(HEAVY))


def test_darkd_watch_takes_a_light_in_the_foreground_and_stops_on_sigint(tmp_path: Path) -> None:
    library, lights = tmp_path / "library", tmp_path / "lights"
    config = tmp_path / "darkd.toml"
    config.write_text(f'[indi]\nport = {free_port()}\n[library]\nroot = "{library}"\n'
                      '[cooling]\nwarm_up_at_end = false\n', encoding="utf-8")
    later = datetime.now().astimezone() + timedelta(hours=2)  # a window that is not now: nothing is built
    window = f"{later:%H:%M}-{later + timedelta(hours=1):%H:%M}"
    proc = subprocess.Popen([sys.executable, "-c", DARKD, "watch", str(lights), "--config", str(config),
                             "--interval", "0.1", "--build-window", window],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 30
        while not (library / "index.sqlite3").exists() or not lights.is_dir():
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[0]
            time.sleep(0.05)
        (lights / "M42_0001.fits").write_bytes(light_bytes())
        index = LibraryIndex.open(LibrarySettings(root=library))
        try:
            rows: list[WatchLight] = []
            while not rows:
                assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[0]
                time.sleep(0.05)
                with index.read_session() as s:
                    rows = list(s.scalars(select(WatchLight)))
                    keys = list(s.scalars(select(WatchKey)))
        finally:
            index.close()
        assert [(r.path, r.status) for r in rows] == [(str((lights / "M42_0001.fits").resolve()), "waiting")]
        assert [(k.slug, k.status) for k in keys] == [(rows[0].slug, "missing")]
        proc.send_signal(signal.SIGINT)
        out = proc.communicate(timeout=30)[0]
        assert proc.returncode == 0, out
        assert "watching" in out and "watcher stopped" in out
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
