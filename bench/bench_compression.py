"""Lossless Rice tile compression of library frames (``[library] compression = "rice"``): ratio and time cost.

Frames are rendered by the simulator's sensor model (:class:`drivers.sim.physics.SensorModel`, the QHY163M: 12-bit ADC
scaled ×16 to 16 bit, read noise, dark current, amp glow, hot and RTS pixels), FULL (4720 × 3540 with overscan) and
SMALL (496 × 368) geometry: a bias, a 300 s dark at −10 °C and a flat at the simulator's flat level, gain 120 / offset
30. For each frame and each setting (``none``/``rice``), timed in this process (best of ``--repeat``):

* encode: ``daemon.capture.encode_frame`` (header + FITS serialisation + CHECKSUM/DATASUM; for ``rice`` the Rice
  encoding of one tile per row);
* write: ``calib.frames.atomic_write_bytes`` (temporary file, fsync, rename) — fewer bytes to write and fsync;
* read: ``calib.frames.read_frame`` (whole image, decompressing every tile);
* bands: the integration's reader (:class:`calib.integration.FrameSource`, 128-row bands) over the whole image.

``--integrate N`` additionally integrates N FULL darks (Winsorized, 2 workers) stored plain and stored Rice-compressed
(``calib.integration.integrate``, in process) and checks the masters are identical. Losslessness is checked for every
frame (decoded == rendered, bit for bit).

    .venv/bin/python -m bench.bench_compression [--repeat 3] [--integrate 8]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from astropy.io import fits

from calib.frames import atomic_write_bytes, read_frame
from calib.integration import FrameSource, IntegrationParams, integrate
from daemon.capture import encode_frame
from drivers.sim.physics import FULL_GEOMETRY, SMALL_GEOMETRY, SensorGeometry, SensorModel

KINDS: tuple[tuple[str, str, float], ...] = (("bias", "bias", 0.0), ("dark", "dark", 300.0), ("flat", "flat", 2.0))
SETTINGS = ("none", "rice")
BAND_ROWS = 128


def _header(kind: str, exposure_s: float) -> fits.Header:
    header = fits.Header()
    for key, value in (("IMAGETYP", f"{kind.capitalize()} Frame"), ("EXPTIME", exposure_s), ("CCD-TEMP", -10.0),
                       ("GAIN", 120), ("OFFSET", 30), ("XBINNING", 1), ("YBINNING", 1),
                       ("INSTRUME", "QHY CCD QHY163M-Sim")):
        header[key] = value
    return header


def _best(fn: Callable[[], Any], repeat: int) -> tuple[float, Any]:
    best, value = float("inf"), None
    for _ in range(repeat):
        t0 = time.perf_counter()
        value = fn()
        best = min(best, time.perf_counter() - t0)
    return best, value


def _read_bands(path: Path) -> np.ndarray:
    source = FrameSource(path)
    try:
        h, w = source.shape
        out = np.empty((h, w), dtype=np.float32)
        for r0 in range(0, h, BAND_ROWS):
            source.read_rows(r0, min(h, r0 + BAND_ROWS), out[r0:min(h, r0 + BAND_ROWS)])
        return out
    finally:
        source.close()


def measure(geometry: SensorGeometry, folder: Path, repeat: int) -> list[dict[str, Any]]:
    model = SensorModel(geometry, seed=7)
    rng = np.random.default_rng(11)
    rows = []
    for name, kind, exposure_s in KINDS:
        data = model.expose(kind, exposure_s, -10.0, 120, 30, overscan_include=True, rng=rng)
        header = _header(name, exposure_s)
        row: dict[str, Any] = {"geometry": geometry.name, "kind": name, "shape": data.shape,
                               "raw_bytes": data.nbytes}
        for setting in SETTINGS:
            t_encode, payload = _best(partial(encode_frame, data, header, setting), repeat)
            path = folder / f"{geometry.name}_{name}_{setting}.fits"
            t_write, _ = _best(partial(atomic_write_bytes, path, payload), repeat)
            t_read, frame = _best(partial(read_frame, path, dtype=None), repeat)
            t_bands, bands = _best(partial(_read_bands, path), repeat)
            if not (np.array_equal(frame.data, data) and np.array_equal(bands, data.astype(np.float32))):
                raise SystemExit(f"{path}: not lossless")
            row[setting] = {"bytes": len(payload), "encode_s": t_encode, "write_s": t_write, "read_s": t_read,
                            "bands_s": t_bands}
        row["ratio"] = row["none"]["bytes"] / row["rice"]["bytes"]
        rows.append(row)
    return rows


def integrate_both(n: int, folder: Path) -> dict[str, float]:
    model = SensorModel(FULL_GEOMETRY, seed=7)
    rng = np.random.default_rng(12)
    paths: dict[str, list[Path]] = {s: [] for s in SETTINGS}
    for i in range(n):
        data = model.expose("dark", 300.0, -10.0, 120, 30, overscan_include=True, rng=rng)
        for setting in SETTINGS:
            path = folder / f"int_{setting}_{i:03d}.fits"
            atomic_write_bytes(path, encode_frame(data, _header("dark", 300.0), setting))
            paths[setting].append(path)
        del data
    params = IntegrationParams(rejection="winsorized", sigma_low=4.0, sigma_high=3.0, workers=2)
    out: dict[str, float] = {}
    masters = {}
    for setting in SETTINGS:
        t0 = time.perf_counter()
        cpu0 = time.process_time()
        result = integrate(paths[setting], params)
        out[f"{setting}_s"] = time.perf_counter() - t0
        out[f"{setting}_cpu_s"] = time.process_time() - cpu0
        masters[setting] = result.data
    if not np.array_equal(masters["none"], masters["rice"]):
        raise SystemExit("integration of the compressed frames differs from the plain ones")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--integrate", type=int, default=8, metavar="N", help="FULL darks to integrate (0: skip)")
    args = parser.parse_args(argv)
    out = sys.stdout
    out.write(f"load average {os.getloadavg()[0]:.1f}; best of {args.repeat}\n")
    out.write("| frame | plain MB | rice MB | ratio | encode plain / rice | write plain / rice | read plain / rice "
              "| 128-row bands plain / rice |\n|---|---|---|---|---|---|---|---|\n")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for geometry in (SMALL_GEOMETRY, FULL_GEOMETRY):
            for row in measure(geometry, folder, args.repeat):
                p, r = row["none"], row["rice"]
                h, w = row["shape"]
                out.write(f"| {row['geometry']} {w}×{h} {row['kind']} | {p['bytes'] / 1e6:.2f} | "
                          f"{r['bytes'] / 1e6:.2f} | **{row['ratio']:.2f}** | "
                          f"{p['encode_s'] * 1e3:.0f} / {r['encode_s'] * 1e3:.0f} ms | "
                          f"{p['write_s'] * 1e3:.0f} / {r['write_s'] * 1e3:.0f} ms | "
                          f"{p['read_s'] * 1e3:.0f} / {r['read_s'] * 1e3:.0f} ms | "
                          f"{p['bands_s'] * 1e3:.0f} / {r['bands_s'] * 1e3:.0f} ms |\n")
                out.flush()
            for path in folder.iterdir():
                path.unlink()
        if args.integrate > 0:
            t = integrate_both(args.integrate, folder)
            out.write(f"integrate {args.integrate} FULL darks (Winsorized, 2 workers): plain {t['none_s']:.2f} s "
                      f"({t['none_cpu_s']:.2f} CPU s), rice {t['rice_s']:.2f} s ({t['rice_cpu_s']:.2f} CPU s); "
                      "masters identical\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
