"""PHD2 dark library export (``calib/export_phd2.py``, ``darkd library export-phd2``).

The file is read back with astropy the way PHD2's ``load_multi_darks`` reads it (OpenPHDGuiding/phd2
``src/myframe.cpp``): HDU 1 on, each a 2-D unsigned 16-bit image of one size, ``EXPOSURE`` in seconds → whole ms.
The library comes from the real job engine on the in-process simulated camera (as in test_build_library_job.py).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from astropy.io import fits

from calib.export_phd2 import (
    MAX_NOTE_CHARS,
    Phd2Dark,
    build_dark_library,
    dark_library_filename,
    exposure_ms,
    read_dark_library,
    select_dark,
    to_uint16,
    write_dark_library,
)
from calib.frames import read_frame
from daemon.cli import main
from daemon.events import EventBus
from daemon.jobs.states import FINAL_STATES
from daemon.library.catalog import LibraryIndex
from daemon.planning import plan_from_keys
from daemon.settings import CoolingSettings, LibrarySettings, Settings
from drivers.profiles import load_profile
from drivers.sim.inprocess import ManualClock, SimCamera
from tests.conftest import SIM_DEVICE
from tests.engines import InThreadEngine

PROFILE = "qhy163m-sim-small"
KEY = {"camera": SIM_DEVICE, "kind": "dark", "set_point_c": -10.0, "gain": 120, "offset": 30, "binning": 1,
       "read_mode": 0, "usb_traffic": 30, "amp_glow": "auto", "overscan": "include", "width_px": 496,
       "height_px": 368}
GUIDE_EXPOSURES_S = (2.0, 0.5, 1.0)  # planned out of order on purpose: the file must be in increasing exposure


# ------------------------------------------------------------------------------------------------ the pure writer
def test_file_name_follows_phd2() -> None:
    assert dark_library_filename(3) == "PHD2_dark_lib_3.fit"
    assert dark_library_filename(3, instance=2) == "PHD2_dark_lib_2_3.fit"
    with pytest.raises(ValueError):
        dark_library_filename(0)


def test_pixels_are_rounded_and_clipped_to_unsigned_16_bit() -> None:
    data = np.array([[-3.2, 0.4, 1.5, 2.5], [1000.49, 65535.4, 70000.0, np.nan]])
    assert to_uint16(data).tolist() == [[0, 0, 2, 2], [1000, 65535, 65535, 0]]
    assert to_uint16(data).dtype == np.uint16


def test_exposures_are_whole_milliseconds() -> None:
    assert exposure_ms(0.5) == 500 and exposure_ms(2.0) == 2000 and exposure_ms(0.001) == 1
    for bad in (0.0, -1.0, 0.0015):
        with pytest.raises(ValueError):
            exposure_ms(bad)


def test_hdu_layout_as_phd2_writes_it() -> None:
    rng = np.random.default_rng(3)
    darks = [Phd2Dark(rng.uniform(100, 900, (6, 8)), s, binning=2, gain=50) for s in (4.0, 1.0, 2.5)]
    hdul = build_dark_library(darks, note="guide scope")
    assert [type(h) for h in hdul] == [fits.PrimaryHDU, fits.ImageHDU, fits.ImageHDU]  # no empty primary
    assert [h.header["EXPOSURE"] for h in hdul] == [1.0, 2.5, 4.0]
    for hdu in hdul:
        assert (hdu.header["NAXIS"], hdu.header["NAXIS1"], hdu.header["NAXIS2"]) == (2, 8, 6)
        assert hdu.header.comments["EXPOSURE"] == "Exposure time in seconds"
        assert hdu.header["USERNOTE"] == "guide scope"
        assert (hdu.header["XBINNING"], hdu.header["GAIN"]) == (2, 50)
        assert hdu.data.dtype == np.uint16


@pytest.mark.parametrize(("darks", "note", "message"), [
    ([], None, "at least one"),
    ([Phd2Dark(np.zeros((4, 4)), 1.0), Phd2Dark(np.zeros((4, 4)), 1.0)], None, "same exposure"),
    ([Phd2Dark(np.zeros((4, 4)), 1.0), Phd2Dark(np.zeros((4, 5)), 2.0)], None, "one size"),
    ([Phd2Dark(np.zeros(4), 1.0)], None, "2-D"),
    ([Phd2Dark(np.zeros((4, 4)), 1.0)], "x" * (MAX_NOTE_CHARS + 1), "USERNOTE"),
])
def test_what_phd2_could_not_load_is_refused(darks: list[Phd2Dark], note: str | None, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        build_dark_library(darks, note=note)


def test_select_dark_follows_phd2() -> None:
    darks = read_dark_library_from(build_dark_library(
        [Phd2Dark(np.full((2, 2), v), s) for v, s in ((10, 0.5), (20, 1.0), (40, 2.0))]))
    assert select_dark(darks, 1500).exposure_ms == 2000  # type: ignore[union-attr]
    assert select_dark(darks, 1000).exposure_ms == 1000  # type: ignore[union-attr]
    assert select_dark(darks, 5000).exposure_ms == 2000  # type: ignore[union-attr]  # longest when none is longer
    assert select_dark(darks, 100).exposure_ms == 500  # type: ignore[union-attr]
    assert select_dark([], 100) is None


def read_dark_library_from(hdul: fits.HDUList) -> list[Any]:
    import io
    import tempfile

    buf = io.BytesIO()
    hdul.writeto(buf)
    with tempfile.NamedTemporaryFile(suffix=".fit") as fh:
        fh.write(buf.getvalue())
        fh.flush()
        return read_dark_library(fh.name)


def test_write_is_atomic_and_replaces(tmp_path: Path) -> None:
    target = tmp_path / "darks_defects" / dark_library_filename(1)
    write_dark_library(target, [Phd2Dark(np.full((3, 3), 7.0), 1.0)])
    write_dark_library(target, [Phd2Dark(np.full((3, 3), 9.0), 1.0), Phd2Dark(np.full((3, 3), 11.0), 3.0)])
    assert [d.exposure_ms for d in read_dark_library(target)] == [1000, 3000]
    assert [p.name for p in target.parent.iterdir()] == [target.name]  # no temporary file left


# ------------------------------------------------------------------------------------------------ from a darkd library
@pytest.fixture(scope="module")
def library(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Settings, str]]:
    """A darkd library of the simulated camera: darks at three guide exposures (gain 120) and one at gain 60."""
    tmp_path = tmp_path_factory.mktemp("phd2-export")
    cooling = CoolingSettings(tolerance_c=0.3, hold_s=30.0, timeout_s=3600.0, warm_up_at_end=False)
    settings = Settings(camera_profile=PROFILE, cooling=cooling,
                        library=LibrarySettings(root=tmp_path / "library", frames_dark=3))
    index = LibraryIndex.open(settings.library)
    camera = SimCamera(clock=ManualClock(), profile=load_profile(PROFILE))
    engine = InThreadEngine(settings, index, lambda: camera, EventBus(), poll_s=0.02).start()
    try:
        keys = [{**KEY, "exposure_s": s} for s in GUIDE_EXPOSURES_S] + [{**KEY, "exposure_s": 1.0, "gain": 60}]
        plan = plan_from_keys(keys, None, settings, ambient_c=None, readout_s=1.0)
        job_id = engine.submit("build-library", {"plan": plan.to_dict()}).id
        deadline = time.monotonic() + 60
        while engine.get(job_id).state not in FINAL_STATES:
            assert time.monotonic() < deadline, "the build-library job did not end"
            time.sleep(0.02)
        assert engine.get(job_id).state == "succeeded", engine.get(job_id).error
    finally:
        engine.stop(timeout_s=10)
        index.close()
    config = tmp_path / "darkd.toml"
    config.write_text(f'[library]\nroot = "{settings.library.root}"\n', encoding="utf-8")
    yield settings, str(config)


def test_export_from_a_darkd_library_loads_as_phd2_loads_it(library: tuple[Settings, str], tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    settings, config = library
    out = tmp_path / "phd2" / "darks_defects"
    base = ["library", "export-phd2", "--config", config, "--camera", SIM_DEVICE, "--profile", "4",
            "--out", str(out)]
    # gain 120 and gain 60 darks: PHD2 keeps one set per profile, so the command asks which
    assert main(base) == 2
    assert "--gain" in capsys.readouterr().err and not out.exists()
    assert main([*base, "--gain", "120"]) == 0
    assert "3 dark(s), 496x368 px, exposures 0.5, 1, 2 s" in capsys.readouterr().out
    target = out / "PHD2_dark_lib_4.fit"

    with LibraryIndex.open(settings.library) as index:
        masters = {e.exposure_s: read_frame(e.master).data  # type: ignore[arg-type]
                   for e in index.entries(camera=SIM_DEVICE, kind="dark", gain=120)}
    # what load_multi_darks does, step by step, with astropy
    with fits.open(target, memmap=False) as hdul:
        assert len(hdul) == 3 and isinstance(hdul[0], fits.PrimaryHDU)
        previous_size = None
        for hdu, exposure_s in zip(hdul, (0.5, 1.0, 2.0), strict=True):
            assert hdu.is_image and hdu.header["NAXIS"] == 2
            assert (hdu.header["BITPIX"], hdu.header["BZERO"], hdu.header["BSCALE"]) == (16, 32768, 1)  # USHORT_IMG
            size = (hdu.header["NAXIS1"], hdu.header["NAXIS2"])
            assert size == (496, 368) and previous_size in (None, size)
            previous_size = size
            assert round(float(np.float32(hdu.header["EXPOSURE"])) * 1000) == round(exposure_s * 1000)
            assert hdu.header["USERNOTE"].startswith("darkd QHY CCD QHY163M-Sim g120 o30 bin1")
            assert "master.fits" in "".join(str(c) for c in hdu.header["HISTORY"])  # provenance: the source master
            pixels = hdu.data
            assert pixels.dtype == np.uint16
            # round trip: the pixels are the master's, rounded and clipped; the master is a real dark, not zeros
            master = masters[exposure_s]
            np.testing.assert_array_equal(pixels, np.clip(np.rint(master), 0, 65535).astype(np.uint16))
            assert np.abs(pixels.astype(np.float64) - master).max() <= 0.5 + 1e-3
            assert 0 < float(np.median(pixels)) < 65535
    loaded = read_dark_library(target)
    assert [d.exposure_ms for d in loaded] == [500, 1000, 2000]
    assert select_dark(loaded, 1500).exposure_ms == 2000  # type: ignore[union-attr]


def test_export_with_no_usable_dark_exits_1(library: tuple[Settings, str], tmp_path: Path) -> None:
    argv = ["library", "export-phd2", "--config", library[1], "--camera", "ZWO ASI120MM Mini", "--profile", "1",
            "--out", str(tmp_path / "out")]
    assert main(argv) == 1
    assert not (tmp_path / "out").exists()
