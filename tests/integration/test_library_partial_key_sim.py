"""A plan made from a partial key (camera, kind, exposure, set point, gain, offset only: what ``POST /library/plan``
accepts) builds an entry whose key is what its frames really are: the build job completes the key from the camera's
read-back state before the first frame. Real parts: indiserver with ``indi_darkd_sim_ccd``, IndiCamera, the job engine.
"""

from __future__ import annotations

import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import TypeAdapter

from calib.frames import read_header
from daemon.api.models import KeyIn
from daemon.events import EventBus
from daemon.indiserver import LocalIndiServer
from daemon.jobs.engine import JobEngine
from daemon.jobs.states import FINAL_STATES
from daemon.library.catalog import LibraryIndex
from daemon.light_headers import light_info_from_file
from daemon.planning import plan_from_keys
from tests.conftest import SIM_DEVICE, SIM_DRIVER, sim_env
from tests.integration.test_jobs_sim import open_camera, settings_for, wait_for

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(shutil.which(SIM_DRIVER, path=str(Path(sys.executable).parent)) is None
                                 or shutil.which("indiserver") is None, reason="indiserver/simulated driver missing")]

PARTIAL = {"camera": SIM_DEVICE, "kind": "dark", "exposure_s": 30, "set_point_c": -10.0, "gain": 120, "offset": 30,
           "frames": 3}


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[tuple[JobEngine, LibraryIndex]]:
    with LocalIndiServer(env=sim_env(time_scale=300), log_path=tmp_path / "indiserver.log") as server:
        settings = settings_for(tmp_path / "library", server.port)
        index = LibraryIndex.open(settings.library)
        camera = open_camera(server.port)
        engine = JobEngine(settings, index, lambda: camera, EventBus(), poll_s=0.1).start()
        try:
            yield engine, index
        finally:
            engine.stop(timeout_s=30)
            camera.disconnect()
            index.close()


def test_partial_key_plan_builds_an_entry_whose_key_equals_its_frames_headers(
        rig: tuple[JobEngine, LibraryIndex]) -> None:
    engine, index = rig
    key_in = TypeAdapter(KeyIn).validate_python(PARTIAL)  # the REST model: the same path as POST /library/plan
    plan = plan_from_keys([key_in.plan_key()], index, engine.settings, ambient_c=20.0, readout_s=1.0)
    (item,) = plan.work()
    assert item.key.is_partial and item.key.slug.endswith("_0x0")
    row = engine.submit("build-library", {"plan": plan.to_dict()})
    wait_for(lambda: engine.get(row.id).state in FINAL_STATES, 120, "the job to end")
    job = engine.get(row.id)
    assert job.state == "succeeded", job.error

    (entry,) = index.entries()
    assert entry.status == "ready" and entry.frames == 3
    assert (entry.width_px, entry.height_px) != (0, 0) and not entry.slug.endswith("_0x0")
    assert entry.read_mode is not None and entry.overscan is not None
    assert Path(entry.directory).name == entry.slug
    for frame in index.frames_of(entry.id, accepted_only=True):
        header = read_header(frame.path)
        assert (header["NAXIS1"], header["NAXIS2"]) == (entry.width_px, entry.height_px)
        assert header["OVSCMODE"] == entry.overscan and header["READMODE"] == entry.read_mode
        from_header = light_info_from_file(frame.path).key.with_kind(entry.kind)
        assert from_header == entry.key, (from_header, entry.key)
    assert index.select_master(entry.key).require().id == entry.id  # a light with the frames' key finds it
