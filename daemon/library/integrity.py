"""Integrity on use: is a master file still the one the index recorded?

:class:`FileCheck` compares a file's SHA-256 with the digest recorded in the index. The full hash is computed once per
(path, size, mtime_ns) and cached, so checking a master again on every use (selection, planning, serving it) costs a
``stat`` while the file is unchanged; any write that changes its size or modification time makes the next use hash it
again. The cache belongs to one :class:`daemon.library.catalog.LibraryIndex` (no global state) and is thread-safe.
"""

from __future__ import annotations

import hashlib
import threading
from dataclasses import dataclass
from pathlib import Path

DEFAULT_CACHE_ENTRIES = 4096


def sha256_file(path: str | Path, chunk_bytes: int = 1 << 20) -> str:
    """Hex SHA-256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as fh:
        while chunk := fh.read(chunk_bytes):
            digest.update(chunk)
    return digest.hexdigest()


#: the words of a changed master's :class:`Damage` message, kept in the bad entry's note (see :func:`damaged_master`)
CHANGED_ON_DISK = "does not match its recorded SHA-256"


def damaged_master(note: str | None) -> bool:
    """True when an entry was marked ``bad`` only because its master file changed on disk: its frames are intact, so
    the key is re-integrated from them (never recaptured)."""
    return bool(note) and CHANGED_ON_DISK in str(note)


@dataclass(frozen=True)
class Damage:
    """Why a file is not the recorded one. ``corrupt``: it exists but its content differs (a missing or unreadable
    file may come back; a changed one will not)."""

    message: str
    corrupt: bool


class FileCheck:
    """Cached "does this file still have this SHA-256" (see the module docstring)."""

    def __init__(self, max_entries: int = DEFAULT_CACHE_ENTRIES) -> None:
        self.max_entries = max_entries
        self._digests: dict[tuple[str, int, int], str] = {}
        self._lock = threading.Lock()
        self.hashed = 0  # number of full hashes computed (for tests and metrics)

    def problem(self, path: str | Path, expected_sha256: str | None) -> Damage | None:
        """Why the file at ``path`` is not the recorded one (missing, unreadable, changed), or ``None`` when intact.

        A ``None`` expected digest (nothing recorded) only requires the file to exist."""
        p = Path(path)
        try:
            st = p.stat()
        except OSError as exc:
            return Damage(f"master file {p} is missing ({exc.strerror})", corrupt=False)
        if expected_sha256 is None:
            return None
        cache_key = (str(p), st.st_size, st.st_mtime_ns)
        with self._lock:
            digest = self._digests.get(cache_key)
        if digest is None:
            try:
                digest = sha256_file(p)
            except OSError as exc:
                return Damage(f"master file {p} cannot be read ({exc.strerror})", corrupt=False)
            with self._lock:
                self.hashed += 1
                if len(self._digests) >= self.max_entries:
                    self._digests.clear()
                self._digests[cache_key] = digest
        if digest != expected_sha256:
            return Damage(f"master file {p} {CHANGED_ON_DISK} (corrupted or replaced: "
                          f"{digest[:12]}… on disk, {expected_sha256[:12]}… in the index)", corrupt=True)
        return None
