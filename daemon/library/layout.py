"""Browsable on-disk layout of the library: ``<root>/<camera>/<kind>/<key-slug>/`` with ``frames/`` and ``master.fits``.

A rebuilt key (e.g. a stale dark captured again) gets a sibling directory ``<key-slug>.2``, ``.3`` … so older masters
stay where the index says they are. Paths inside the root are stored relative to it in the index (the library can be
moved); paths outside are stored absolute. Directory names come from :func:`daemon.library.keys.slug_part`, which
never yields ``.``, ``..`` or a ``/``, and :meth:`Layout.entry_dir` refuses any result outside the root anyway.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from daemon.library.keys import LibraryKey, slug_part

MASTER_NAME = "master.fits"
FRAMES_DIR = "frames"
PARTIAL_SUFFIXES = (".part", ".tmp")


@dataclass(frozen=True)
class Layout:
    """Path arithmetic for one library root (no I/O except :meth:`ensure`)."""

    root: Path

    def camera_dir(self, camera: str) -> Path:
        """``<root>/<camera>``: the entries of every kind of one camera (its INDI device name, as in the keys)."""
        return self.root / slug_part(camera)

    def entry_dir(self, key: LibraryKey, generation: int = 1) -> Path:
        """Directory of an entry; ``generation`` > 1 for later rebuilds of the same key."""
        name = key.slug if generation <= 1 else f"{key.slug}.{generation}"
        path = self.camera_dir(key.camera) / key.kind / name
        if not self.contains(path):
            raise ValueError(f"entry directory {path} of {key.describe()} would lie outside the library root")
        return path

    def contains(self, path: str | Path) -> bool:
        """Whether ``path`` (symlinks and ``..`` resolved) lies inside the library root."""
        return Path(path).resolve().is_relative_to(self.root.resolve())

    def frames_dir(self, key: LibraryKey, generation: int = 1) -> Path:
        return self.entry_dir(key, generation) / FRAMES_DIR

    def master_path(self, key: LibraryKey, generation: int = 1) -> Path:
        return self.entry_dir(key, generation) / MASTER_NAME

    @staticmethod
    def frame_prefix(key: LibraryKey) -> str:
        """File-name prefix of the frames of an entry: ``<kind>`` → ``dark_0001.fits`` …"""
        return key.kind

    def to_stored(self, path: str | Path) -> str:
        """The string stored in the index: relative to the root when inside it, else absolute."""
        p = Path(path)
        if not p.is_absolute():
            return p.as_posix()
        try:
            return p.resolve().relative_to(self.root.resolve()).as_posix()
        except ValueError:
            return str(p)

    def from_stored(self, stored: str) -> Path:
        """The absolute path of a stored string."""
        p = Path(stored)
        return p if p.is_absolute() else self.root / p

    def ensure(self, key: LibraryKey, generation: int = 1) -> Path:
        """Create the entry's ``frames/`` directory; returns the entry directory."""
        self.frames_dir(key, generation).mkdir(parents=True, exist_ok=True)
        return self.entry_dir(key, generation)


def entry_dir(root: Path, key: LibraryKey) -> Path:
    """``<root>/<camera>/<kind>/<key-slug>`` (first generation)."""
    return Layout(Path(root)).entry_dir(key)
