"""calib.frames: round trips, 16-bit BZERO storage, atomic writes, clear errors for bad files."""

from __future__ import annotations

import io
import os
import re
import stat
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

from calib.frames import (
    DiskFullError,
    FrameError,
    atomic_write_bytes,
    read_frame,
    read_header,
    to_hdulist,
    write_frame,
)
from tests.full_disk import simulate_full_disk


def test_uint16_round_trip_uses_bzero(tmp_path: Path) -> None:
    data = np.array([[0, 16, 65520], [32768, 4096, 65535]], dtype=np.uint16)
    header = fits.Header({"EXPTIME": 600.0, "CCD-TEMP": -20.1})
    path = write_frame(tmp_path / "a.fits", data, header, bitpix16=True)
    with fits.open(path) as hdul:
        assert hdul[0].header["BITPIX"] == 16
        assert hdul[0].header["BZERO"] == 32768
    frame = read_frame(path, dtype=None)
    assert frame.data.dtype == np.uint16
    np.testing.assert_array_equal(frame.data, data)
    assert frame.header["CCD-TEMP"] == pytest.approx(-20.1)
    assert read_header(path)["EXPTIME"] == 600.0


def test_float_round_trip_and_extra_hdus(tmp_path: Path) -> None:
    data = np.linspace(-5, 5, 12, dtype=np.float32).reshape(3, 4)
    extra = fits.ImageHDU(np.ones((3, 4), dtype=np.int16), name="REJ_LOW")
    path = write_frame(tmp_path / "m.fits", data, extra_hdus=[extra])
    np.testing.assert_array_equal(read_frame(path).data, data)
    with fits.open(path) as hdul:
        assert hdul["REJ_LOW"].data.sum() == 12


def test_compressed_fits_is_read(tmp_path: Path) -> None:
    data = (np.arange(64 * 64, dtype=np.int32).reshape(64, 64) % 4096 * 16).astype(np.uint16)
    hdul = fits.HDUList([fits.PrimaryHDU(), fits.CompImageHDU(data)])
    path = tmp_path / "c.fits.fz"
    hdul.writeto(path)
    np.testing.assert_array_equal(read_frame(path, dtype=None).data, data)
    assert read_header(path)["NAXIS1"] == 64


@pytest.mark.parametrize(
    ("content", "message"),
    [(b"", "not a readable FITS"), (b"SIMPLE  = T" + b" " * 100, "not a readable FITS")],
)
def test_garbage_is_a_frame_error(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "bad.fits"
    path.write_bytes(content)
    with pytest.raises(FrameError, match=message):
        read_frame(path)


def test_truncated_file_is_a_frame_error(tmp_path: Path) -> None:
    path = write_frame(tmp_path / "t.fits", np.ones((200, 200), dtype=np.uint16), bitpix16=True)
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(FrameError, match=str(path.name)):
        read_frame(path)


def test_missing_file_and_table_only_file(tmp_path: Path) -> None:
    with pytest.raises(FrameError, match="file not found"):
        read_frame(tmp_path / "nope.fits")
    table = fits.BinTableHDU.from_columns([fits.Column(name="a", format="J", array=np.arange(3))])
    fits.HDUList([fits.PrimaryHDU(), table]).writeto(tmp_path / "table.fits")
    with pytest.raises(FrameError, match="no image"):
        read_frame(tmp_path / "table.fits")


def test_atomic_write_keeps_old_file_when_write_fails(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "frame.fits"
    target.write_bytes(b"old")

    def failing_fsync(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("calib.frames.os.fsync", failing_fsync)
    with pytest.raises(DiskFullError, match="no space left on device"):
        atomic_write_bytes(target, b"new content")
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["frame.fits"], "temporary file must be removed"


def test_full_disk_is_a_disk_full_error_naming_the_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "frame.fits"
    target.write_bytes(b"old")
    simulate_full_disk(monkeypatch)
    with pytest.raises(DiskFullError, match="no space left on device") as info:
        write_frame(target, np.ones((64, 64), dtype=np.float32))
    assert isinstance(info.value, OSError)
    assert info.value.errno == 28
    assert info.value.filename == str(target)
    assert str(target) in str(info.value)
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["frame.fits"], "temporary file must be removed"


def test_images_written_in_file_order_give_the_same_bytes() -> None:
    """A float32 image, uint16 maps and a uint8 map converted in place to the file's byte order (two threads) give
    byte for byte the file astropy writes from the native arrays, checksums included, and are restored afterwards —
    also when the same map is given twice."""
    from concurrent.futures import ThreadPoolExecutor

    from calib.frames import in_file_order, unsigned_image_hdu

    rng = np.random.default_rng(4)
    image = rng.normal(1000, 30, (301, 97)).astype(np.float32)
    low = rng.integers(0, 65536, (301, 97)).astype(np.uint16)
    high = rng.integers(0, 9, (301, 97)).astype(np.uint16)
    few = rng.integers(0, 256, (301, 97)).astype(np.uint8)
    before = [image.copy(), low.copy(), high.copy(), few.copy()]

    def written(hdul: fits.HDUList) -> bytes:
        out = io.BytesIO()
        hdul.writeto(out, checksum=True)
        return out.getvalue()

    def masked(raw: bytes) -> bytes:  # the CHECKSUM cards carry the time of writing
        return re.sub(rb"CHECKSUM= '.{16}'", b"CHECKSUM", re.sub(rb"updated [0-9T:-]{19}", b"updated", raw))

    expected = written(to_hdulist(image, fits.Header(), extra_hdus=[fits.ImageHDU(low, name="LOW"),
                                                                     fits.ImageHDU(high, name="HIGH"),
                                                                     fits.ImageHDU(high, name="AGAIN"),
                                                                     fits.ImageHDU(few, name="FEW")]))
    with ThreadPoolExecutor(2) as pool, in_file_order([image, low, high, high, few], pool) as (i, lo, hi, again, f):
        raw = written(to_hdulist(i, fits.Header(), extra_hdus=[unsigned_image_hdu(lo, "LOW"),
                                                               unsigned_image_hdu(hi, "HIGH"),
                                                               unsigned_image_hdu(again, "AGAIN"),
                                                               unsigned_image_hdu(f, "FEW")]))
    assert masked(raw) == masked(expected)
    for array, original in zip((image, low, high, few), before, strict=True):
        np.testing.assert_array_equal(array, original)
        assert array.dtype == original.dtype
    with fits.open(io.BytesIO(raw)) as back:
        for hdu in back:
            assert hdu.verify_checksum() == 1 and hdu.verify_datasum() == 1
        np.testing.assert_array_equal(back["LOW"].data, low)
        assert back["LOW"].data.dtype == np.uint16
        np.testing.assert_array_equal(back["FEW"].data, few)
        assert back["FEW"].header["BITPIX"] == 8 and back["FEW"].data.dtype == np.uint8


@pytest.mark.parametrize("umask", [0o022, 0o027, 0o077])
def test_atomic_writes_get_the_mode_open_would_give(tmp_path: Path, umask: int) -> None:
    """A master written by the service user must be readable by the observer's tools where the umask allows
    (mkstemp alone gives 0600)."""
    before = os.umask(umask)
    try:
        frame = write_frame(tmp_path / "frame.fits", np.ones((4, 4), dtype=np.float32))
        plain = tmp_path / "plain"
        plain.write_bytes(b"")
    finally:
        os.umask(before)
    assert stat.S_IMODE(frame.stat().st_mode) == 0o666 & ~umask == stat.S_IMODE(plain.stat().st_mode)
