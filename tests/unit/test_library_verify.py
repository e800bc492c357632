"""verify_library on in-progress entries (crash between writing a frame and recording it) and duplicates."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from astropy.io import fits

from calib.frames import write_frame
from daemon.library.catalog import LibraryIndex
from daemon.library.integrity import sha256_file
from daemon.library.keys import LibraryKey
from daemon.library.verify import remove_partial_files, verify_library
from daemon.settings import LibrarySettings

KEY = LibraryKey(camera="cam", kind="dark", exposure_s=10, set_point_c=-10, gain=120, offset=30, width_px=8,
                 height_px=6)


def frame(path: Path, value: float) -> Path:
    header = fits.Header()
    header["IMAGETYP"] = "Dark Frame"
    header["EXPTIME"] = 10.0
    header["GAIN"] = 120
    header["OFFSET"] = 30
    return write_frame(path, np.full((6, 8), value), header, bitpix16=True)


def test_unrecorded_frames_of_in_progress_entry_are_warnings_unless_strict(tmp_path: Path) -> None:
    with LibraryIndex(LibrarySettings(root=tmp_path / "lib")) as index:
        entry = index.upsert_entry(KEY, 3)
        recorded = frame(Path(entry.frames_dir) / "dark_0001.fits", 100)
        index.record_frame(entry.id, recorded, sha256_file(recorded), 1, -10, -10, True, [])
        frame(Path(entry.frames_dir) / "dark_0002.fits", 101)  # written, then the daemon was killed
        frame(Path(entry.frames_dir) / "rejected" / "dark_0003_a1.fits", 102)
        report = verify_library(index)
        assert report.ok and len(report.warnings) == 2
        strict = verify_library(index, strict=True)
        assert [p.code for p in strict.problems] == ["orphan-file", "orphan-file"]
        index.set_status(entry.id, "bad", note="abandoned")
        assert [p.code for p in verify_library(index).problems] == ["orphan-file", "orphan-file"]


def test_duplicate_frames_and_partial_cleanup(tmp_path: Path) -> None:
    with LibraryIndex(LibrarySettings(root=tmp_path / "lib")) as index:
        entry = index.upsert_entry(KEY, 3)
        a = frame(Path(entry.frames_dir) / "dark_0001.fits", 100)
        b = frame(Path(entry.frames_dir) / "dark_0002.fits", 100)  # same pixels and header: same content
        index.record_frame(entry.id, a, sha256_file(a), 1, -10, -10, True, [])
        index.record_frame(entry.id, b, sha256_file(b), 1, -10, -10, True, [])
        codes = [p.code for p in verify_library(index).problems]
        assert codes == ["duplicate", "duplicate"]  # shared index and identical content
        part = Path(entry.frames_dir) / ".dark_0003.fits.x1.part"
        part.write_bytes(b"partial")
        assert "partial-file" in [p.code for p in verify_library(index).problems]
        assert remove_partial_files(index.layout.root) == [part] and not part.exists()


def test_fits_checksums_are_verified_and_missing_ones_only_warn(tmp_path: Path) -> None:
    with LibraryIndex(LibrarySettings(root=tmp_path / "lib")) as index:
        entry = index.upsert_entry(KEY, 3)
        good = frame(Path(entry.frames_dir) / "dark_0001.fits", 100)
        damaged = frame(Path(entry.frames_dir) / "dark_0002.fits", 101)
        payload = bytearray(damaged.read_bytes())
        payload[-100] ^= 0x01  # a pixel changed after darkd wrote the file, before its SHA-256 was recorded
        damaged.write_bytes(bytes(payload))
        old = Path(entry.frames_dir) / "dark_0003.fits"  # written without CHECKSUM/DATASUM (older darkd)
        header = fits.Header([(k, fits.getheader(good)[k]) for k in ("IMAGETYP", "EXPTIME", "GAIN", "OFFSET")])
        fits.PrimaryHDU(np.full((6, 8), 102, dtype=np.int16), header=header).writeto(old)
        assert "CHECKSUM" not in fits.getheader(old)
        for number, path in enumerate((good, damaged, old), start=1):
            index.record_frame(entry.id, path, sha256_file(path), number, -10, -10, True, [])
        report = verify_library(index)
        assert [(p.code, Path(str(p.path)).name) for p in report.problems] == [("checksum", "dark_0002.fits")]
        assert "FITS checksum mismatch" in report.problems[0].message
        assert [w for w in report.warnings if "dark_0003.fits has no CHECKSUM" in w]
        assert not [w for w in report.warnings if "dark_0001" in w]
