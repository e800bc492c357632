"""Defect maps of masters built from the simulated QHY163M (drivers/sim: the in-process renderer, SMALL sensor).

The simulator's hot pixels are known pixel by pixel (``SensorModel.hot_pixels``; 53 draws for SMALL, 51 of them in the
effective area for seed 7), so the map's completeness and false-positive rate are measured, not assumed. The numbers
asserted here are the ones docs/defects.md states.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

from calib.defects import Defect, DefectMap, hot_pixel_drift, read_master_defects
from calib.masters import build_master
from calib.provenance import file_sha256
from daemon.jobs.integrate_job import build_entry_master
from daemon.library.catalog import LibraryIndex
from daemon.library.keys import LibraryKey
from daemon.settings import LibrarySettings
from drivers.sim.physics import SMALL_GEOMETRY, SensorModel
from drivers.sim.rendering import ExposureRequest, render_fits

G = SMALL_GEOMETRY
SEED = 7
TEMPERATURE_C = -10.0
EXPOSURE_S = 120.0
N_FRAMES = 8


def write_frames(model: SensorModel, kind: str, exposure_s: float, n: int, folder: Path, noise_seed: int) -> list[Path]:
    """``n`` frames as the driver uploads them (overscan ignored: 480 × 360, GAIN 120, OFFSET 30)."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        request = ExposureRequest(kind, exposure_s, 120, 30, "auto", False, 1, (0, 0, G.effective_width,
                                  G.effective_height), 0.0, datetime(2026, 1, 1, tzinfo=UTC), device_name="sim")
        path = folder / f"{kind}_{i:02d}.fits"
        path.write_bytes(render_fits(model, request, TEMPERATURE_C, 0.0, TEMPERATURE_C,
                                     np.random.default_rng([noise_seed, i])))
        paths.append(path)
    return paths


def effective(rows: np.ndarray, cols: np.ndarray) -> set[tuple[int, int]]:
    """Raw-frame (row, col) → (y, x) of the overscan-ignored frame, dropping the optical-black rows."""
    keep = rows >= G.ob_rows
    return set(zip((rows[keep] - G.ob_rows).tolist(), cols[keep].tolist(), strict=True))


@pytest.fixture(scope="module")
def masters(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    root = tmp_path_factory.mktemp("sim-masters")
    model = SensorModel(G, seed=SEED)
    bias = build_master("bias", write_frames(model, "bias", 0.0, N_FRAMES, root / "bias", 1), output=root / "mb.fits")
    dark = build_master("dark", write_frames(model, "dark", EXPOSURE_S, N_FRAMES, root / "dark", 2),
                        output=root / "md.fits", defect_bias=bias.path)
    return {"model": model, "bias": bias, "dark": dark}


def test_the_dark_map_finds_the_simulators_hot_pixels(masters: dict[str, object]) -> None:
    model: SensorModel = masters["model"]  # type: ignore[assignment]
    dark = masters["dark"]
    found_map = read_master_defects(dark.path)  # type: ignore[attr-defined]
    assert found_map is not None and found_map.tested == frozenset({Defect.HOT, Defect.RTS})
    injected = effective(*model.hot_pixels()[:2])
    assert len(injected) == 51  # 53 draws for SMALL, 2 of them in the optical-black rows (seed 7)
    rts = effective(*model.rts_pixels()[:2])
    dark_rel = model._fixed.dark_rel[G.ob_rows:, :G.effective_width]  # the truth: relative dark current per pixel
    found = {(int(y), int(x)) for x, y in found_map.positions(Defect.HOT)}

    completeness = len(found & injected) / len(injected)
    beyond = found - injected
    # flagged pixels that are neither injected hot pixels, flickering pixels nor DSNU-tail pixels (≥ 1.5× the mean
    # dark current): pixels with nothing wrong
    false = {p for p in beyond - rts if dark_rel[p] < 1.5}
    good = G.effective_width * G.effective_height - len(injected)
    assert completeness == 1.0  # measured: 51 / 51 at 120 s, -10 C (5 e- per ×20 pixel per minute)
    assert len(false) / good == 0.0  # measured: 0 of 172 749
    assert len(beyond) <= 8  # measured: 4 (2 telegraph pixels, 2 DSNU-tail pixels at 1.7× and 2.2×)
    # the glow corners (right edge, strongest at top and bottom) are not defects
    assert not {p for p in beyond if p[1] >= G.effective_width - 8 and dark_rel[p] < 1.5}

    with fits.open(dark.path) as hdul:  # type: ignore[attr-defined]
        h = hdul["MASK"].header
        assert h["NHOT"] == len(found) and h["DFKHOT"] == 5.0 and h["DFREF"] == "master bias"
        assert h["DFNSPRD"] == N_FRAMES and h["DFBIAS"] == "mb.fits" and h["DFREGION"] == "[1:480,1:360]"
        assert hdul[0].header["DEFECTS"] == h["NDEFECTS"]
    assert dark.stats["defects_hot"] == len(found)  # type: ignore[attr-defined]


def test_flickering_pixels_are_found_in_the_bias_and_nothing_else(masters: dict[str, object]) -> None:
    model: SensorModel = masters["model"]  # type: ignore[assignment]
    bias_map = read_master_defects(masters["bias"].path)  # type: ignore[attr-defined]
    assert bias_map is not None and bias_map.tested == frozenset({Defect.RTS})
    rts = effective(*model.rts_pixels()[:2])
    found = {(int(y), int(x)) for x, y in bias_map.positions(Defect.RTS)}
    assert found <= rts and len(found) >= 5  # measured: 6 of the 9 (14-30 e-, telegraph state random per frame)


def build_dark(model: SensorModel, folder: Path, noise_seed: int) -> DefectMap:
    master = build_master("dark", write_frames(model, "dark", EXPOSURE_S, 6, folder, noise_seed),
                          output=folder / "md.fits")
    found = read_master_defects(master.path)
    assert found is not None
    return found


def test_a_camera_whose_hot_pixels_multiply_raises_the_drift_warning(tmp_path: Path) -> None:
    first = build_dark(SensorModel(G, seed=SEED), tmp_path / "first", 10)
    steady = hot_pixel_drift(first, build_dark(SensorModel(G, seed=SEED), tmp_path / "steady", 11))
    aged = hot_pixel_drift(first, build_dark(SensorModel(G, seed=SEED, added_hot_pixels=25), tmp_path / "aged", 11))
    assert steady.warning is None and abs(steady.after - steady.before) <= 3
    assert aged.warning is not None and "rebuild" in aged.warning
    assert aged.appeared >= 25 and aged.change_fraction > 0.3  # measured: 62 -> 85 (+37 %); steady 62 -> 60


def test_the_integrate_job_maps_against_the_keys_bias_and_warns_of_drift(tmp_path: Path) -> None:
    """build_entry_master (the worker function of the integrate and build-library jobs), twice on one entry."""
    settings = LibrarySettings(root=tmp_path / "lib")
    index = LibraryIndex.open(settings)
    key = LibraryKey(camera="sim", kind="dark", exposure_s=EXPOSURE_S, set_point_c=TEMPERATURE_C, gain=120,
                     offset=30, width_px=G.effective_width, height_px=G.effective_height)

    def record(entry_id: int, paths: list[Path]) -> None:
        for i, path in enumerate(paths):
            index.record_frame(entry_id, path, file_sha256(path), i)

    model = SensorModel(G, seed=SEED)
    bias = index.upsert_entry(key.with_kind("bias"), 6)
    record(bias.id, write_frames(model, "bias", 0.0, 6, Path(bias.master_target).parent / "frames", 20))
    build_entry_master(settings.model_dump(mode="json"), bias.id)
    dark = index.upsert_entry(key, 6)
    first_frames = write_frames(model, "dark", EXPOSURE_S, 6, Path(dark.master_target).parent / "frames", 21)
    record(dark.id, first_frames)
    first = build_entry_master(settings.model_dump(mode="json"), dark.id)
    assert first["defect_drift"] is None and first["stats"]["defects_hot"] >= 51
    with fits.open(first["master"]) as hdul:
        assert hdul["MASK"].header["DFREF"] == "master bias" and hdul["MASK"].header["DFBIAS"] == "master.fits"
        assert "DFLADDER" not in hdul["MASK"].header  # the key's only dark: no WARM test

    short = index.upsert_entry(key.with_kind("dark", exposure_s=30.0), 6)  # the same key at another exposure
    record(short.id, write_frames(model, "dark", 30.0, 6, Path(short.master_target).parent / "frames", 23))
    with fits.open(build_entry_master(settings.model_dump(mode="json"), short.id)["master"]) as hdul:
        assert hdul["MASK"].header["DFLADDER"] == "30 120"  # the library's 120 s dark is its ladder
        assert hdul["MASK"].header["NWARM"] >= 45

    for path in first_frames:  # months later the camera has 25 more hot pixels; the entry is rebuilt
        index.remove_frame(path)
    aged = SensorModel(G, seed=SEED, added_hot_pixels=25)
    record(dark.id, write_frames(aged, "dark", EXPOSURE_S, 6, Path(dark.master_target).parent / "aged", 22))
    second = build_entry_master(settings.model_dump(mode="json"), dark.id)
    assert second["defect_drift"] is not None and "hot pixels rose" in second["defect_drift"]
    index.close()


def test_ageing_the_simulated_sensor_adds_hot_pixels_and_changes_nothing_else() -> None:
    young, old = SensorModel(G, seed=SEED), SensorModel(G, seed=SEED, added_hot_pixels=10)
    changed = young._fixed.dark_rel != old._fixed.dark_rel
    assert int(changed.sum()) == 10 and bool((old._fixed.dark_rel[changed] >= 20.0).all())
    assert len(old.hot_pixels()[0]) == len(young.hot_pixels()[0]) + 10
    assert np.array_equal(young.rts_pixels()[0], old.rts_pixels()[0])
    assert not changed[:G.ob_rows].any() and not changed[:, G.effective_width:].any()  # effective area only
    with pytest.raises(ValueError, match="added_hot_pixels"):
        SensorModel(G, seed=SEED, added_hot_pixels=-1)


def test_a_dark_with_darks_at_other_exposures_flags_the_pixels_that_grow_as_warm(
        masters: dict[str, object], tmp_path: Path) -> None:
    """WARM: with the same key's master dark at another exposure (the library's ladder), the new dark's map flags the
    pixels whose dark signal grows faster than their neighbours' — the simulator's hot pixels (dark current ×22 and
    more), not pixels with nothing wrong."""
    model: SensorModel = masters["model"]  # type: ignore[assignment]
    bias = masters["bias"]
    short = build_master("dark", write_frames(model, "dark", 30.0, N_FRAMES, tmp_path / "d30", 3),
                         output=tmp_path / "md30.fits", defect_bias=bias.path)  # type: ignore[attr-defined]
    long = build_master("dark", write_frames(model, "dark", EXPOSURE_S, N_FRAMES, tmp_path / "d120", 2),
                        output=tmp_path / "md120.fits", defect_bias=bias.path,  # type: ignore[attr-defined]
                        defect_ladder=[(30.0, short.path)])
    found_map = read_master_defects(long.path)
    assert found_map is not None and Defect.WARM in found_map.tested
    assert fits.getheader(long.path, "MASK")["DFLADDER"] == "30 120"
    injected = effective(*model.hot_pixels()[:2])
    dark_rel = model._fixed.dark_rel[G.ob_rows:, :G.effective_width]
    warm = {(int(y), int(x)) for x, y in found_map.positions(Defect.WARM)}
    completeness = len(warm & injected) / len(injected)
    nothing_wrong = {p for p in warm - injected if dark_rel[p] < 1.5}
    assert completeness >= 0.9 and not nothing_wrong
    # without the ladder there is no WARM test at all
    assert Defect.WARM not in read_master_defects(masters["dark"].path).tested  # type: ignore[attr-defined,union-attr]
