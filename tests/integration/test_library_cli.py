"""The library through the real ``darkd`` command: list, plan, and verify detecting damage on disk.

Starts ``darkd`` processes (and concurrent writer processes) against a real SQLite index in a temporary root.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

from calib.frames import write_frame
from daemon.jobs.queue import JobQueue
from daemon.library.catalog import LibraryIndex
from daemon.library.integrity import sha256_file
from daemon.library.keys import LibraryKey
from daemon.settings import LibrarySettings
from drivers.profiles import load_profile
from drivers.sim.physics import SMALL_GEOMETRY, SensorModel

pytestmark = pytest.mark.integration

DARKD = [str(Path(sys.executable).parent / "darkd")]
CAMERA = "QHY CCD QHY163M-Sim"
SHAPE = (SMALL_GEOMETRY.full_height, SMALL_GEOMETRY.full_width)  # frames of the simulated sensor (SMALL, include)
KEY = LibraryKey(camera=CAMERA, kind="dark", exposure_s=30, set_point_c=-10, gain=120, offset=30, read_mode=0,
                 usb_traffic=30, amp_glow="auto", overscan="include", width_px=SHAPE[1], height_px=SHAPE[0])


def frame_header(key: LibraryKey, **changes: object) -> fits.Header:
    header = fits.Header()
    header["IMAGETYP"] = "Dark Frame" if key.kind == "dark" else "Bias Frame"
    header["EXPTIME"] = key.exposure_s
    header["CCD-TEMP"] = key.set_point_c
    header["SET-TEMP"] = key.set_point_c
    header["GAIN"] = key.gain
    header["OFFSET"] = key.offset
    header["XBINNING"] = key.binning
    header["INSTRUME"] = key.camera
    for name, value in changes.items():
        header[name] = value
    return header


def build_entry(index: LibraryIndex, key: LibraryKey, n_frames: int, seed: int) -> int:
    rng = np.random.default_rng(seed)
    sensor = SensorModel(SMALL_GEOMETRY, seed=1)
    entry = index.upsert_entry(key, n_frames)
    stack = []
    for i in range(1, n_frames + 1):
        data = sensor.expose(key.kind, key.exposure_s, key.set_point_c, key.gain, key.offset, rng=rng)
        stack.append(data.astype(np.float32))
        path = write_frame(Path(entry.frames_dir) / f"{key.kind}_{i:04d}.fits", data, frame_header(key),
                           bitpix16=True)
        index.record_frame(entry.id, path, sha256_file(path), i, key.set_point_c - 0.05, key.set_point_c + 0.05,
                           True, [])
    master_header = frame_header(key, NCOMBINE=n_frames)
    master = write_frame(entry.master_target, np.mean(stack, axis=0), master_header)
    index.set_master(entry.id, master, {"mean_adu": 1000.0, "noise_adu": 10.0, "n_frames": n_frames})
    return entry.id


def darkd(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*DARKD, *args, "--config", str(config)], capture_output=True, text=True, timeout=60,
                          check=False)


@pytest.fixture
def library(tmp_path: Path) -> tuple[Path, LibraryIndex, int]:
    root = tmp_path / "lib"
    config = tmp_path / "darkd.toml"
    config.write_text(f'camera_profile = "qhy163m"\n[library]\nroot = "{root}"\nframes_dark = 4\nframes_bias = 6\n')
    index = LibraryIndex.open(LibrarySettings(root=root))
    dark_id = build_entry(index, KEY, 4, seed=1)
    build_entry(index, KEY.with_kind("bias"), 3, seed=2)
    yield config, index, dark_id
    index.close()


def test_library_json_lists_entries(library: tuple[Path, LibraryIndex, int]) -> None:
    config, _, dark_id = library
    result = darkd(config, "library", "--json")
    assert result.returncode == 0, result.stderr
    entries = json.loads(result.stdout)
    assert [e["kind"] for e in entries] == ["dark", "bias"]
    dark = entries[0]
    assert {k: dark[k] for k in ("id", "status", "exposure_s", "set_point_c", "gain", "offset", "binning", "frames",
                                 "frames_target")} == {"id": dark_id, "status": "ready", "exposure_s": 30.0,
                                                        "set_point_c": -10.0, "gain": 120, "offset": 30,
                                                        "binning": 1, "frames": 4, "frames_target": 4}
    assert Path(dark["master"]).is_file() and dark["master"].endswith("master.fits")
    filtered = json.loads(darkd(config, "library", "--json", "--kind", "bias").stdout)
    assert [e["kind"] for e in filtered] == ["bias"]
    table = darkd(config, "library").stdout
    assert "dark" in table and "ready" in table


def test_verify_clean_library_passes(library: tuple[Path, LibraryIndex, int]) -> None:
    config, _, _ = library
    result = darkd(config, "library", "verify", "--json")
    report = json.loads(result.stdout)
    assert result.returncode == 0, report
    assert report["ok"] and report["entries"] == 2 and report["frames"] == 7 and report["masters"] == 2


def _codes(result: subprocess.CompletedProcess[str]) -> list[str]:
    return [p["code"] for p in json.loads(result.stdout)["problems"]]


def test_verify_detects_corrupted_missing_extra_and_partial_files(library: tuple[Path, LibraryIndex, int]) -> None:
    config, index, dark_id = library
    frames = index.frames_of(dark_id)
    corrupted = Path(frames[0].path)
    payload = bytearray(corrupted.read_bytes())
    payload[len(payload) // 2] ^= 0xFF  # flip bits of a pixel in the middle of the data, size unchanged
    corrupted.write_bytes(bytes(payload))
    Path(frames[1].path).unlink()
    extra = Path(frames[0].path).parent / "dark_0099.fits"
    write_frame(extra, np.zeros(SHAPE), frame_header(KEY), bitpix16=True)
    partial = Path(frames[0].path).parent / ".dark_0005.fits.abc123.part"
    partial.write_bytes(b"half a frame")
    result = darkd(config, "library", "verify", "--json")
    assert result.returncode == 1
    problems = json.loads(result.stdout)["problems"]
    by_code = {p["code"]: p for p in problems}
    assert set(by_code) == {"checksum", "missing-file", "orphan-file", "partial-file"}, problems
    assert by_code["checksum"]["path"] == str(corrupted)
    assert by_code["missing-file"]["path"] == frames[1].path
    assert by_code["orphan-file"]["path"] == str(extra)
    assert by_code["partial-file"]["path"] == str(partial)
    text = darkd(config, "library", "verify")
    assert text.returncode == 1 and "PROBLEMS: 4 problem(s)" in text.stdout
    cleaned = darkd(config, "library", "verify", "--remove-partial", "--json")
    assert "partial-file" not in _codes(cleaned) and not partial.exists()
    assert "checksum" in _codes(cleaned)


def test_verify_detects_header_and_count_mismatch(library: tuple[Path, LibraryIndex, int]) -> None:
    config, index, dark_id = library
    entry = index.get(dark_id)
    assert entry is not None
    wrong = write_frame(Path(entry.frames_dir) / "dark_0005.fits", np.zeros(SHAPE), frame_header(KEY, GAIN=0),
                        bitpix16=True)
    index.record_frame(dark_id, wrong, sha256_file(wrong), 5, -10, -10, True, [])
    result = darkd(config, "library", "verify", "--json")
    assert result.returncode == 1
    messages = {p["code"]: p["message"] for p in json.loads(result.stdout)["problems"]}
    assert "GAIN 0 (expected 120)" in messages["header"]
    assert "combines 4 frames but the index records 5" in messages["count"]


def test_plan_command_reports_unreachable_temperature(tmp_path: Path, library: tuple[Path, LibraryIndex, int]) -> None:
    config, _, _ = library
    lights = tmp_path / "lights"
    for i, (exposure_s, temp_c) in enumerate([(30, -10), (30, -10), (60, -10), (60, -30)]):
        header = frame_header(KEY, IMAGETYP="Light Frame", EXPTIME=exposure_s, **{"SET-TEMP": temp_c},
                              READMODE=0, USBTRAFF=30, AMPGLOW="auto", OVERSCAN="include")
        write_frame(lights / f"light_{i}.fits", np.zeros(SHAPE), header, bitpix16=True)
    result = darkd(config, "plan", "--lights", str(lights), "--ambient", "12", "--json")
    assert result.returncode == 0, result.stderr
    plan = json.loads(result.stdout)
    assert plan["unreachable_c"] == [-30.0]
    # the cooling limit comes from the configured camera profile (qhy163m) when --max-cooling-delta is not given
    assert plan["assumptions"]["max_cooling_delta_c"] == load_profile("qhy163m").max_cooling_delta_c
    status = {(i["kind"], i["exposure_s"], i["set_point_c"]): (i["status"], i["reachable"]) for i in plan["items"]}
    assert status[("dark", 30.0, -10.0)] == ("ready", True)  # built by the fixture
    assert status[("dark", 60.0, -10.0)] == ("missing", True)
    assert status[("dark", 60.0, -30.0)] == ("missing", False)
    assert status[("bias", 0.0, -10.0)] == ("ready", True)
    assert status[("bias", 0.0, -30.0)] == ("missing", False)
    assert plan["work"] == [KEY.slug.replace("_30s_", "_60s_")]
    missing_dir = darkd(config, "plan", "--lights", str(tmp_path / "nowhere"))
    assert missing_dir.returncode == 2 and "lights directory not found" in missing_dir.stderr


def test_concurrent_writer_processes_share_the_index(tmp_path: Path) -> None:
    root = tmp_path / "lib"  # not created yet: the three processes also race to create and migrate the index
    script = textwrap.dedent(f"""
        import sys
        from pathlib import Path
        from daemon.jobs.queue import JobQueue
        from daemon.library.catalog import LibraryIndex
        from daemon.library.keys import LibraryKey
        from daemon.settings import LibrarySettings
        n = int(sys.argv[1])
        index = LibraryIndex.open(LibrarySettings(root=Path({str(root)!r})))
        key = LibraryKey(camera="cam", kind="dark", exposure_s=n, set_point_c=-10, gain=0, offset=0)
        entry = index.upsert_entry(key, 40)
        queue = JobQueue(index)
        job = queue.add_job("build-library", {{"n": n}})
        for i in range(40):
            index.record_frame(entry.id, Path(entry.frames_dir) / f"dark_{{i:04d}}.fits", "0" * 64, i, -10, -10)
            queue.update_job(job.id, progress_done=i + 1, progress_total=40)
            queue.append_job_log(job.id, f"frame {{i}}")
    """)
    procs = [subprocess.Popen([sys.executable, "-c", script, str(n)], stderr=subprocess.PIPE, text=True)
             for n in (1, 2, 3)]
    errors = [p.communicate(timeout=120)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], errors
    with LibraryIndex(LibrarySettings(root=root)) as index:
        assert sorted(e.frames for e in index.entries()) == [40, 40, 40]
        assert [j.progress_done for j in JobQueue(index).jobs()] == [40, 40, 40]
