"""A camera's health over two library builds on the simulated QHY163M (in-process renderer, SMALL sensor): the master
history is recorded when a master is set (build_entry_master, the integrate and build-library jobs' worker function)
and by the back-fill, and the hot-pixel drift warning comes when — and only when — the sensor gained hot pixels."""

from __future__ import annotations

from pathlib import Path

from astropy.io import fits
from sqlalchemy import delete

from calib.provenance import file_sha256
from daemon.health import backfill, camera_health, load_history
from daemon.jobs.integrate_job import build_entry_master
from daemon.library.catalog import LibraryIndex
from daemon.library.keys import LibraryKey
from daemon.library.models import MasterHistory
from daemon.settings import HealthSettings, LibrarySettings
from drivers.sim.physics import SMALL_GEOMETRY as G
from drivers.sim.physics import SensorModel
from tests.unit.test_defects_sim import EXPOSURE_S, SEED, TEMPERATURE_C, write_frames

N = 4


def build_twice(root: Path, added_hot_pixels: int) -> tuple[LibraryIndex, dict, dict]:
    """A bias and a dark master, then the dark rebuilt from a sensor with ``added_hot_pixels`` more hot pixels."""
    settings = LibrarySettings(root=root)
    index = LibraryIndex.open(settings)
    key = LibraryKey(camera="sim", kind="dark", exposure_s=EXPOSURE_S, set_point_c=TEMPERATURE_C, gain=120, offset=30,
                     width_px=G.effective_width, height_px=G.effective_height)

    def record(entry_id: int, paths: list[Path]) -> None:
        for i, path in enumerate(paths):
            index.record_frame(entry_id, path, file_sha256(path), i)

    lib = settings.model_dump(mode="json")
    model = SensorModel(G, seed=SEED)
    bias = index.upsert_entry(key.with_kind("bias"), N)
    record(bias.id, write_frames(model, "bias", 0.0, N, Path(bias.master_target).parent / "frames", 30))
    build_entry_master(lib, bias.id)
    dark = index.upsert_entry(key, N)
    first = write_frames(model, "dark", EXPOSURE_S, N, Path(dark.master_target).parent / "frames", 31)
    for i, path in enumerate(first):  # the keys a camera backend stamps (drivers/observation.py) and N.I.N.A.'s AMBTEMP
        with fits.open(path, mode="update") as hdul:
            hdul[0].header["COOLPWR"] = 50.0 + i
            hdul[0].header["AMBTEMP"] = 10.0
    record(dark.id, first)
    one = build_entry_master(lib, dark.id)
    for path in first:  # the next library build, months later: the entry is rebuilt from new frames
        index.remove_frame(path)
    later = SensorModel(G, seed=SEED, added_hot_pixels=added_hot_pixels)
    record(dark.id, write_frames(later, "dark", EXPOSURE_S, N, Path(dark.master_target).parent / "later", 32))
    two = build_entry_master(lib, dark.id)
    return index, one, two


def test_hot_pixel_growth_between_builds_raises_the_health_warning(tmp_path: Path) -> None:
    index, one, two = build_twice(tmp_path / "aged", added_hot_pixels=25)
    assert one["health_warnings"] == []
    assert len(two["health_warnings"]) == 1 and "hot pixels rose" in two["health_warnings"][0]
    assert "rebuild the darks" in two["health_warnings"][0]
    report = camera_health(index, HealthSettings())
    [hot] = [s for s in report["series"] if s["quantity"] == "hot_pixels"]
    assert len(hot["points"]) == 2 and hot["points"][1]["value"] - hot["points"][0]["value"] >= 20
    assert [w["quantity"] for w in report["warnings"]] == ["hot_pixels"]
    quantities = {p.quantity for p in load_history(index)}
    # render_fits writes no COOLPWR (the camera backends stamp it): no cooler power here; see test_health_report.py
    assert {"bias_level_adu", "read_noise_adu", "hot_pixels", "dark_current_adu2_per_s", "amp_glow_adu"} <= quantities
    index.close()


def test_a_steady_camera_raises_no_warning_and_the_backfill_is_idempotent(tmp_path: Path) -> None:
    index, one, two = build_twice(tmp_path / "steady", added_hot_pixels=0)
    assert one["health_warnings"] == [] and two["health_warnings"] == []
    [power] = [p for p in load_history(index) if p.quantity == "cooler_power_pct"]  # first build only: stamped
    assert (power.value, power.ambient_c, power.series) == (51.5, 10.0, "set point -10 C")
    assert power.uncertainty is not None and abs(power.uncertainty - 0.6455) < 1e-3  # std(50..53) / sqrt(4)
    assert camera_health(index, HealthSettings())["warnings"] == []
    # the back-fill records the current masters of an index that has no history (e.g. built before migration 0006)
    before = len(load_history(index))
    with index.write_session() as s:
        s.execute(delete(MasterHistory))
    assert backfill(index, HealthSettings()) == {"masters": 2, "rows": before - 4}  # first dark: 4 rows gone
    assert backfill(index, HealthSettings()) == {"masters": 0, "rows": 0}
    index.close()
