"""calib.frames.DirectWriter: a master written with direct I/O (O_DIRECT) has exactly the bytes of a buffered write,
whatever the lengths of the pieces and of the file; where direct I/O is refused the bytes are written buffered; a full
disk under direct I/O is the same clear error as buffered."""

from __future__ import annotations

import errno
import fcntl
import os
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

import calib.frames
from calib.frames import DirectWriter, DiskFullError, atomic_file
from calib.integration import IntegrationResult, write_integration

ALIGN = DirectWriter.ALIGN_BYTES


@pytest.fixture
def small_chunks(monkeypatch: pytest.MonkeyPatch) -> int:
    """A buffer of three blocks, so that small files cross several chunk boundaries."""
    monkeypatch.setattr(DirectWriter, "CHUNK_BYTES", 3 * ALIGN)
    return 3 * ALIGN


def _direct_io_taken(folder: Path) -> bool:
    probe = folder / "probe"
    with probe.open("wb") as fh:
        taken = calib.frames._set_direct_io(fh.fileno(), True)
    probe.unlink()
    return taken


@pytest.mark.parametrize("length", [0, 1, ALIGN - 1, ALIGN, ALIGN + 1, 3 * ALIGN - 1, 3 * ALIGN, 7 * ALIGN + 5])
def test_direct_write_gives_the_bytes_written(tmp_path: Path, small_chunks: int, length: int) -> None:
    if not _direct_io_taken(tmp_path):
        pytest.skip(f"the file system of {tmp_path} does not take O_DIRECT")
    payload = np.random.default_rng(length).integers(0, 256, length, dtype=np.uint8).tobytes()
    target = tmp_path / "out.bin"
    with atomic_file(target, direct_io=True) as fh:
        assert isinstance(fh, DirectWriter) and fh.direct
        assert fcntl.fcntl(fh._fd, fcntl.F_GETFL) & os.O_DIRECT, "the descriptor must be in direct I/O"
        for start in range(0, length, 1000):  # pieces that never fall on a block boundary
            assert fh.write(payload[start:start + 1000]) == len(payload[start:start + 1000])
        assert fh.tell() == length
    assert target.read_bytes() == payload
    assert [p.name for p in tmp_path.iterdir()] == ["out.bin"]


def _result(rows: int = 37, cols: int = 53) -> IntegrationResult:
    rng = np.random.default_rng(3)
    data = rng.normal(100, 5, (rows, cols)).astype(np.float32)
    counts = rng.integers(0, 4, (rows, cols), dtype=np.uint8)
    header = fits.Header({"IMAGETYP": "Dark Frame", "EXPTIME": 300.0, "NCOMBINE": 16})
    return IntegrationResult(data, counts, counts.copy(), header, {})


def test_a_master_written_direct_and_buffered_is_the_same_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    if not _direct_io_taken(tmp_path):
        pytest.skip(f"the file system of {tmp_path} does not take O_DIRECT")
    taken: list[bool] = []
    real = calib.frames._set_direct_io

    def recording(fd: int, direct: bool) -> bool:
        taken.append(real(fd, direct))
        return taken[-1]

    monkeypatch.setattr(calib.frames, "_set_direct_io", recording)
    # astropy stamps the time, to the second, into the comments of CHECKSUM and DATASUM ("HDU checksum updated
    # 2026-…"), and CHECKSUM covers those comments: two writes a second apart differ there
    monkeypatch.setattr(fits.hdu.base._ValidHDU, "_get_timestamp", lambda _self: "2026-12-03T14:20:00")
    result = _result()
    before = result.data.copy()
    direct = write_integration(result, tmp_path / "direct" / "master.fits")
    assert taken == [True]
    buffered = write_integration(result, tmp_path / "buffered" / "master.fits", direct_io=False)
    assert taken == [True], "direct_io=False must not try direct I/O"
    assert direct.read_bytes() == buffered.read_bytes()
    assert direct.stat().st_size % 2880 == 0
    np.testing.assert_array_equal(result.data, before)  # converted back after the write
    with fits.open(direct, checksum=True) as hdul:
        np.testing.assert_array_equal(hdul[0].data, before)
        assert [h.name for h in hdul] == ["PRIMARY", "REJ_LOW", "REJ_HIGH"]


def test_a_refused_direct_write_is_written_buffered(tmp_path: Path, small_chunks: int,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """Some file systems take the O_DIRECT flag and refuse the write itself with EINVAL (the first one is refused
    here); the writer turns direct I/O off and writes the same bytes buffered."""
    real_write = os.write
    refused: list[int] = []

    def refuse_first(fd: int, data: memoryview) -> int:
        if not refused:
            refused.append(len(data))
            raise OSError(errno.EINVAL, "Invalid argument")
        return real_write(fd, data)

    monkeypatch.setattr(calib.frames.os, "write", refuse_first)
    payload = bytes(range(256)) * 70  # 17920 bytes: one full chunk, then a tail
    target = tmp_path / "out.bin"
    with atomic_file(target, direct_io=True) as fh:
        fh.write(payload)
        assert refused == [small_chunks]
        assert isinstance(fh, DirectWriter) and not fh.direct
        assert not fcntl.fcntl(fh._fd, fcntl.F_GETFL) & os.O_DIRECT
    assert target.read_bytes() == payload


def test_a_full_disk_under_direct_io_is_a_disk_full_error(tmp_path: Path, small_chunks: int,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    real_write = os.write
    calls: list[int] = []

    def full_after_one_chunk(fd: int, data: memoryview) -> int:
        calls.append(len(data))
        if len(calls) > 1:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(fd, data)

    monkeypatch.setattr(calib.frames.os, "write", full_after_one_chunk)
    target = tmp_path / "masters" / "master.fits"
    with pytest.raises(DiskFullError, match="no space left on device") as info:
        write_integration(_result(200, 300), target)
    assert info.value.filename == str(target)
    assert list(target.parent.iterdir()) == [], "no partial file may be left"
