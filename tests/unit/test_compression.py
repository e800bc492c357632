"""Lossless Rice tile compression of library frames (``[library] compression = "rice"``, issue 15).

Real parts throughout: astropy's tiled-image codec, the capture pipeline and job engine on the in-process simulated
camera (:class:`tests.engines.InThreadEngine`, as in ``test_build_library_job.py``), ``darkd library verify``, NASA's
``fitsverify`` and Siril 1.0.6 (``siril-cli``, which reads compressed FITS through cfitsio).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from astropy.io import fits

from calib.frames import (
    FrameError,
    fits_checksum_problems,
    has_fits_checksums,
    image_hdu,
    image_hdu_index,
    read_frame,
    read_header,
    write_frame,
)
from calib.integration import FrameSource
from daemon.events import EventBus
from daemon.jobs.states import FINAL_STATES
from daemon.library.catalog import LibraryIndex
from daemon.library.verify import verify_library
from daemon.planning import plan_from_keys
from daemon.settings import CoolingSettings, LibrarySettings, Settings
from drivers.profiles import load_profile
from drivers.sim.inprocess import ManualClock, SimCamera
from tests.conftest import SIM_DEVICE
from tests.engines import InThreadEngine

PROFILE = "qhy163m-sim-small"
KEY = {"camera": SIM_DEVICE, "set_point_c": -10.0, "gain": 120, "offset": 30, "binning": 1, "read_mode": 0,
       "usb_traffic": 30, "amp_glow": "auto", "overscan": "include", "width_px": 496, "height_px": 368}
KEYS = [{**KEY, "kind": "bias", "exposure_s": 0}, {**KEY, "kind": "dark", "exposure_s": 300}]


def _frame(seed: int = 3, shape: tuple[int, int] = (64, 96)) -> np.ndarray:
    """A dark-like uint16 frame with the extremes of the range (0 and 65535) and a hot column."""
    rng = np.random.default_rng(seed)
    data = rng.normal(1800.0, 25.0, shape).clip(0, 65535).astype(np.uint16)
    data[0, 0], data[0, 1], data[1, 0] = 0, 65535, 32768
    data[:, 7] = 60000
    return data


def _header() -> fits.Header:
    header = fits.Header()
    header["IMAGETYP"] = "Dark Frame"
    header["EXPTIME"] = (300.0, "[s]")
    header["GAIN"] = 120
    return header


def test_rice_round_trip_is_bit_for_bit(tmp_path: Path) -> None:
    data = _frame()
    plain = write_frame(tmp_path / "plain.fits", data, _header(), bitpix16=True)
    rice = write_frame(tmp_path / "rice.fits", data, _header(), bitpix16=True, compression="rice")
    assert rice.stat().st_size < plain.stat().st_size
    with fits.open(rice, disable_image_compression=True) as raw:  # as on disk: the tiled-image table
        table = raw[1].header
        assert (table["ZCMPTYPE"], table["ZBITPIX"], table["ZTILE1"], table["ZTILE2"]) == ("RICE_1", 16, 96, 1)
        assert "ZQUANTIZ" not in table and "ZSCALE" not in table  # integers are never quantised
    with fits.open(rice) as hdul:
        assert image_hdu_index(hdul) == 1 and hdul[0].data is None
        assert isinstance(image_hdu(hdul), fits.CompImageHDU)
    frame = read_frame(rice, dtype=None)
    assert frame.data.dtype == np.uint16 and np.array_equal(frame.data, data)
    assert read_header(rice)["IMAGETYP"] == "Dark Frame" and read_header(rice)["NAXIS1"] == 96
    assert fits_checksum_problems(rice) == [] and has_fits_checksums(rice)
    # the integration's band reader: same values and the same per-row digests as the uncompressed file
    bands = {}
    for name, path in (("plain", plain), ("rice", rice)):
        source = FrameSource(path)
        try:
            out = np.empty((20, 96), dtype=np.float32)
            bands[name] = (source.read_rows(30, 50, out), out.copy())
        finally:
            source.close()
    assert bands["plain"][0] == bands["rice"][0]
    assert np.array_equal(bands["rice"][1], data[30:50].astype(np.float32))


def test_a_float_image_is_never_compressed(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="16-bit integer frames only"):
        write_frame(tmp_path / "master.fits", np.ones((8, 8), np.float32), compression="rice")
    with pytest.raises(ValueError, match="unknown compression"):
        write_frame(tmp_path / "frame.fits", _frame(), bitpix16=True, compression="gzip")
    assert not list(tmp_path.iterdir())


def test_a_damaged_compressed_frame_fails_its_checksum_and_never_reads_silently(tmp_path: Path) -> None:
    rice = write_frame(tmp_path / "rice.fits", _frame(), _header(), bitpix16=True, compression="rice")
    raw = bytearray(rice.read_bytes())
    raw[-3000] ^= 0xFF  # inside the compressed heap
    damaged = tmp_path / "damaged.fits"
    damaged.write_bytes(bytes(raw))
    problems = fits_checksum_problems(damaged)
    assert any("Datasum" in p for p in problems), problems
    try:
        pixels = read_frame(damaged, dtype=None).data
    except FrameError:
        return  # the Rice stream broke: a FrameError, never a bare codec exception
    assert not np.array_equal(pixels, _frame())  # decoded, but the checksum above already tells


class Rig:
    def __init__(self, root: Path, compression: str) -> None:
        cooling = CoolingSettings(tolerance_c=0.3, hold_s=30.0, timeout_s=3600.0, unreachable_window_s=120.0,
                                  reconnect_timeout_s=60.0, warm_up_at_end=False)
        self.settings = Settings(camera_profile=PROFILE, cooling=cooling,
                                 library=LibrarySettings(root=root, frames_bias=4, frames_dark=3,
                                                         compression=compression))
        self.index = LibraryIndex.open(self.settings.library)
        self.camera = SimCamera(clock=ManualClock(), profile=load_profile(PROFILE), seed=7)
        self.engine = InThreadEngine(self.settings, self.index, lambda: self.camera, EventBus(), poll_s=0.02).start()

    def build(self) -> Any:
        plan = plan_from_keys(KEYS, None, self.settings, ambient_c=None, readout_s=1.0)
        job_id = self.engine.submit("build-library", {"plan": plan.to_dict()}).id
        deadline = time.monotonic() + 60
        while self.engine.get(job_id).state not in FINAL_STATES and time.monotonic() < deadline:
            time.sleep(0.02)
        return self.engine.get(job_id)

    def close(self) -> None:
        self.engine.stop(timeout_s=10)
        self.index.close()


@pytest.fixture(scope="module")
def libraries(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Rig]]:
    """The same two keys built twice from the same simulated camera (same seed): plain and Rice-compressed."""
    rigs = {c: Rig(tmp_path_factory.mktemp(f"library-{c}"), c) for c in ("none", "rice")}
    try:
        for rig in rigs.values():
            job = rig.build()
            assert job.state == "succeeded", job.error
        yield rigs
    finally:
        for rig in rigs.values():
            rig.close()


def _by_kind(rig: Rig) -> dict[str, Any]:
    return {e.key.kind: e for e in rig.index.entries()}


def test_a_compressed_library_integrates_to_the_same_masters(libraries: dict[str, Rig]) -> None:
    plain, rice = _by_kind(libraries["none"]), _by_kind(libraries["rice"])
    assert set(plain) == set(rice) == {"bias", "dark"}
    for kind in plain:
        frames_plain = libraries["none"].index.frames_of(plain[kind].id, accepted_only=True)
        frames_rice = libraries["rice"].index.frames_of(rice[kind].id, accepted_only=True)
        assert len(frames_plain) == len(frames_rice) == plain[kind].frames_target
        for a, b in zip(frames_plain, frames_rice, strict=True):
            with fits.open(b.path) as hdul:
                assert isinstance(hdul[1], fits.CompImageHDU)  # the captured frame really is compressed
            assert Path(b.path).stat().st_size < Path(a.path).stat().st_size
            assert np.array_equal(read_frame(a.path, dtype=None).data, read_frame(b.path, dtype=None).data)
        master_plain, master_rice = read_frame(plain[kind].master, dtype=None), read_frame(rice[kind].master,
                                                                                          dtype=None)
        assert master_rice.header["BITPIX"] == -32  # masters stay float32, uncompressed
        with fits.open(rice[kind].master) as hdul:
            assert image_hdu_index(hdul) == 0
        assert np.array_equal(master_plain.data, master_rice.data, equal_nan=True)
        for key in ("NCOMBINE", "BIASSEC", "DATASEC"):
            assert master_plain.header.get(key) == master_rice.header.get(key)


def test_verify_strict_is_clean_on_a_compressed_library_and_finds_a_damaged_frame(
        libraries: dict[str, Rig], tmp_path: Path) -> None:
    rig = libraries["rice"]
    report = verify_library(rig.index, strict=True)
    assert report.ok, report.to_text()
    assert not [w for w in report.warnings if "CHECKSUM" in w], report.warnings
    frame = Path(rig.index.frames_of(_by_kind(rig)["dark"].id, accepted_only=True)[0].path)
    saved = frame.read_bytes()
    try:
        raw = bytearray(saved)
        raw[-2000] ^= 0x55
        frame.write_bytes(bytes(raw))
        damaged = verify_library(rig.index, strict=True)
        assert [(p.code, p.path) for p in damaged.problems] == [("checksum", str(frame))]
    finally:
        frame.write_bytes(saved)  # module-scoped library: leave it as built


def _tool(name: str, package: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"{name} is not installed (Debian package {package}; `make apt` installs it)")
    return path


def _a_compressed_frame(libraries: dict[str, Rig]) -> Path:
    rig = libraries["rice"]
    return Path(rig.index.frames_of(_by_kind(rig)["dark"].id, accepted_only=True)[0].path)


def test_fitsverify_finds_no_error_and_no_warning_in_a_compressed_frame(libraries: dict[str, Rig]) -> None:
    fitsverify = _tool("fitsverify", "fitsverify")
    run = subprocess.run([fitsverify, str(_a_compressed_frame(libraries))], capture_output=True, text=True,
                         timeout=60, check=False)
    summary = re.search(r"Verification found (\d+) warning\(s\) and (\d+) error\(s\)", run.stdout)
    assert summary is not None, run.stdout + run.stderr
    assert summary.groups() == ("0", "0"), run.stdout
    assert "COMPRESSED_IMAGE" in run.stdout and run.returncode == 0


SIRIL_SCRIPT = """requires 1.0.0
set16bits
setext fits
load {frame}
save {out}
"""


def test_siril_reads_a_compressed_frame_bit_for_bit(libraries: dict[str, Rig], tmp_path: Path) -> None:
    siril = _tool("siril-cli", "siril")
    frame = _a_compressed_frame(libraries)
    script = tmp_path / "read.ssf"
    script.write_text(SIRIL_SCRIPT.format(frame=frame, out=tmp_path / "siril_copy"))
    run = subprocess.run([siril, "-s", str(script)], capture_output=True, text=True, timeout=60, check=False,
                         cwd=tmp_path)
    log = run.stdout + run.stderr
    assert "Script execution finished successfully" in log, log[-3000:]
    ours = read_frame(frame, dtype=None).data
    with fits.open(tmp_path / "siril_copy.fits") as hdul:  # Siril writes it uncompressed, 16-bit
        theirs = image_hdu(hdul).data
        assert theirs is not None and theirs.dtype == np.uint16
        assert np.array_equal(theirs, ours), "Siril's copy of the compressed frame differs from darkd's pixels"
