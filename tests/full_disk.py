"""A full disk for unit tests of atomic writes (``calib.frames.atomic_file``), without a real full file system."""

from __future__ import annotations

import os
from pathlib import Path
from typing import BinaryIO

import pytest

import calib.frames


def simulate_full_disk(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make every atomic write fail as on a full disk until ``monkeypatch`` is undone.

    The temporary file is still created and named as usual, but its descriptor is redirected to ``/dev/full``, where
    the kernel answers every write with ``ENOSPC``: the writers (astropy included) meet the real error. Skips the test
    where ``/dev/full`` does not exist.
    """
    if not Path("/dev/full").exists():
        pytest.skip("needs /dev/full")
    real_open_part = calib.frames._open_part

    def open_on_full_disk(tmp: str, fd: int) -> BinaryIO:
        full = os.open("/dev/full", os.O_WRONLY)
        os.dup2(full, fd)
        os.close(full)
        return real_open_part(tmp, fd)

    monkeypatch.setattr(calib.frames, "_open_part", open_on_full_disk)
