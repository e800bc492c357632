"""Memory-bounded integration of a stack of frames with pixel rejection (``darkd integrate``).

Algorithm for ``n`` frames of ``H × W`` pixels:

1. Open every input, check it is a readable 2-D image of the same shape (:class:`~calib.frames.FrameError`
   otherwise). Pixel data are read with positioned reads (``os.preadv``) of whole row bands straight from the file,
   BZERO/BSCALE applied here, so memory does not grow with the file size. Tile-compressed inputs (library frames
   written with ``[library] compression = "rice"``) go through astropy's ``section``, which decompresses only the
   tiles of the band (one tile per row): memory stays per band too, at the CPU cost of Rice decoding
   (docs/benchmarks.md, "Library frame compression").
2. Each frame's median and robust scale (1.4826·MAD) on a subsample of rows → normalization factors
   (:mod:`calib.normalization`). With a normalization this is a first pass over the files; without one the levels
   are only reported, and are measured on the same rows copied out of the bands of step 3 as they are read (unless
   those rows would take more than 1/8 of the memory budget).
3. The pass, in row bands of ``band_rows`` rows processed by ``workers`` threads (NumPy releases the GIL): build the
   ``(n, band_rows, W)`` float32 stack, optionally subtract a calibration image, normalize, sort along the frame
   axis, reject (:mod:`calib.rejection`), then combine the kept values by mean or median. The compiled kernels
   (the prebuilt module of :mod:`calib.aot`, else numba's) are loaded in another thread; the bands wait for them
   before they read their frames (numba's loading holds the GIL: reading meanwhile, one GIL-releasing sha256 call
   per row, only slowed the loading down). The last bands
   are smaller, so the workers finish together.
   ``band_rows`` is chosen so that ``workers × n × band_rows × W × 4 B × 4`` (stack plus working copies) plus the
   outputs (and the sampled rows of step 2) fits in ``memory_budget_bytes``.

Outputs: the float32 master, per-pixel counts of values rejected low/high (uint8 up to 255 frames, else uint16:
:func:`rejection_count_dtype`), a header with the provenance, and a summary (fractions rejected, noise estimate).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import queue
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from astropy.io import fits

from calib.frames import (
    FrameError,
    atomic_file,
    decompress_error,
    image_hdu_index,
    in_file_order,
    to_hdulist,
    unsigned_image_hdu,
)
from calib.normalization import NORMALIZATIONS, FrameLevel, normalization_factors, robust_level
from calib.provenance import SOFTWARE, add_history, add_inputs, combined_digest, copy_keys
from calib.rejection import (
    SINGLE_PASS_METHODS,
    Outputs,
    RejectionParams,
    kept_mean,
    kept_median,
    load_compiled,
    numba_available,
    reject_sorted,
    sigma_combine_numba,
    single_pass_combine_numba,
    sort_frames_inplace,
    winsorized_combine_numba,
)

log = logging.getLogger(__name__)

COMBINES = ("mean", "median")
WORK_FACTOR = 4  # bytes of working memory per stack byte (stack, clamped copy, masks, subset copies)
BASELINE_BYTES = 160 << 20  # interpreter, NumPy, astropy and thread stacks, kept out of the band budget
MAX_BAND_ROWS = 128
_DTYPES: dict[int, np.dtype[Any]] = {8: np.dtype("u1"), 16: np.dtype(">i2"), 32: np.dtype(">i4"),
                                     -32: np.dtype(">f4"), -64: np.dtype(">f8")}


@dataclass(frozen=True)
class IntegrationParams:
    """How to integrate. Rejection thresholds are in σ; ``memory_budget_bytes`` bounds the process's working set."""

    combine: str = "mean"
    rejection: str = "winsorized"
    sigma_low: float = 4.0
    sigma_high: float = 3.0
    normalization: str = "none"
    memory_budget_bytes: int = 1 << 30
    workers: int = 2
    n_low: int = 1
    n_high: int = 1
    pct_low: float = 0.2
    pct_high: float = 0.1
    esd_alpha: float = 0.05
    esd_max_fraction: float = 0.3
    max_iterations: int | None = None
    band_rows: int | None = None
    sample_rows: int = 64

    def __post_init__(self) -> None:
        if self.combine not in COMBINES:
            raise ValueError(f"unknown combine {self.combine!r}; choose one of {', '.join(COMBINES)}")
        if self.normalization not in NORMALIZATIONS:
            raise ValueError(f"unknown normalization {self.normalization!r}; choose one of {', '.join(NORMALIZATIONS)}")
        if self.memory_budget_bytes <= 0 or self.workers < 1:
            raise ValueError("memory_budget_bytes must be > 0 and workers >= 1")
        if self.band_rows is not None and self.band_rows < 1:
            raise ValueError("band_rows must be >= 1")
        self.rejection_params()  # validates the rejection settings

    def rejection_params(self) -> RejectionParams:
        return RejectionParams(method=self.rejection, sigma_low=self.sigma_low, sigma_high=self.sigma_high,
                               n_low=self.n_low, n_high=self.n_high, pct_low=self.pct_low, pct_high=self.pct_high,
                               esd_alpha=self.esd_alpha, esd_max_fraction=self.esd_max_fraction,
                               max_iterations=self.max_iterations)


@dataclass
class IntegrationResult:
    """The combined image (float32, ADU), rejection counts (:func:`rejection_count_dtype`), output header and a
    summary dict."""

    data: np.ndarray
    rejected_low: np.ndarray
    rejected_high: np.ndarray
    header: fits.Header
    summary: dict[str, Any] = field(default_factory=dict)


def rejection_count_dtype(n_frames: int) -> np.dtype[Any]:
    """The type of the per-pixel rejection counts of ``n_frames`` inputs: ``uint8`` when every count fits (≤ 255
    frames; one byte per pixel and map, written as is, with no conversion), else ``uint16``."""
    return np.dtype(np.uint8) if n_frames <= np.iinfo(np.uint8).max else np.dtype(np.uint16)


def _row_digests(view: memoryview, rows: int) -> bytes:
    """Concatenated sha256 digests of each row of ``view`` (so the input digest does not depend on the bands)."""
    step = view.nbytes // rows
    return b"".join(hashlib.sha256(view[i * step:(i + 1) * step]).digest() for i in range(rows))


class FrameSource:
    """One input frame, read row band by row band without loading the whole image."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._fd: int | None = None
        self._hdul: fits.HDUList | None = None
        self._lock = threading.Lock()
        try:
            # do_not_scale_image_data: a compressed image's section gives the stored integers (astropy refuses to
            # scale a memory-mapped one); BZERO/BSCALE are applied in read_rows, as for an uncompressed image
            hdul = fits.open(self.path, memmap=True, lazy_load_hdus=True, do_not_scale_image_data=True)
        except FileNotFoundError as exc:
            raise FrameError(f"{self.path}: file not found") from exc
        except (OSError, ValueError, TypeError) as exc:
            raise FrameError(f"{self.path}: not a readable FITS file ({exc})") from exc
        try:
            self._init_from(hdul)
        except (OSError, ValueError, TypeError, IndexError) as exc:
            hdul.close()
            if isinstance(exc, FrameError):
                raise
            raise FrameError(f"{self.path}: not a readable FITS image ({exc})") from exc
        if self._hdul is None:
            hdul.close()

    def _init_from(self, hdul: fits.HDUList) -> None:
        index = image_hdu_index(hdul)
        hdu = hdul[index]
        header = hdu.header
        if header.get("NAXIS", 0) != 2:
            raise FrameError(f"{self.path}: expected a 2-D image, found NAXIS={header.get('NAXIS')}")
        self.header = header.copy()
        self.shape = (int(header["NAXIS2"]), int(header["NAXIS1"]))
        self.bzero = float(header.get("BZERO", 0.0))
        self.bscale = float(header.get("BSCALE", 1.0))
        bitpix = int(header["BITPIX"])  # a compressed image's header states the image's BITPIX (the table's ZBITPIX)
        if bitpix not in _DTYPES:
            raise FrameError(f"{self.path}: unsupported BITPIX {bitpix}")
        self.raw_dtype = _DTYPES[bitpix]
        self.is_float = bitpix < 0
        if isinstance(hdu, fits.CompImageHDU):
            self._hdul, self._hdu = hdul, hdu
            return
        self._offset = int(hdul.fileinfo(index)["datLoc"])
        needed = self._offset + self.shape[0] * self.shape[1] * self.raw_dtype.itemsize
        size = self.path.stat().st_size
        if size < needed:
            raise FrameError(f"{self.path}: truncated image data ({size} bytes, needs {needed})")
        self._fd = os.open(self.path, os.O_RDONLY)

    def read_rows(self, r0: int, r1: int, out: np.ndarray) -> bytes:
        """Decode rows ``[r0, r1)`` (ADU, BZERO/BSCALE applied) into ``out`` (float32); return per-row sha256s.

        The digests are of the stored values in the file's big-endian type, so a frame has the same digests whether
        it is stored plain or tile-compressed."""
        raw = self._compressed_rows(r0, r1) if self._fd is None else self._plain_rows(r0, r1)
        digest = _row_digests(raw.data.cast("B"), r1 - r0)
        # the stored values cast to float32 and scaled in float32 (BSCALE, then BZERO), the conversion fused with
        # the first operation: one pass over the band instead of two (e.g. 16-bit camera frames: float32(v) + 32768)
        if self.bscale != 1.0:
            np.multiply(raw, np.float32(self.bscale), out=out, dtype=np.float32, casting="unsafe")
            if self.bzero != 0.0:
                out += np.float32(self.bzero)
        elif self.bzero != 0.0:
            np.add(raw, np.float32(self.bzero), out=out, dtype=np.float32, casting="unsafe")
        else:
            np.copyto(out, raw, casting="unsafe")
        return digest

    def _plain_rows(self, r0: int, r1: int) -> np.ndarray:
        """Rows ``[r0, r1)`` as stored, by positioned reads of the uncompressed data."""
        assert self._fd is not None
        raw = np.empty((r1 - r0, self.shape[1]), dtype=self.raw_dtype)
        view = raw.data.cast("B")
        offset = self._offset + r0 * self.shape[1] * self.raw_dtype.itemsize
        done = 0
        while done < view.nbytes:
            got = os.preadv(self._fd, [view[done:]], offset + done)
            if got <= 0:
                raise FrameError(f"{self.path}: unexpected end of file in rows {r0 + 1}-{r1}")
            done += got
        return raw

    def _compressed_rows(self, r0: int, r1: int) -> np.ndarray:
        """Rows ``[r0, r1)`` of a tile-compressed image as stored: astropy's ``section`` decompresses only the tiles
        that hold them (one tile per row as darkd and ``fpack`` write, so memory ∝ the band, not the image; a file
        tiled in larger blocks costs up to one row of tiles). Damaged compressed bytes raise :class:`FrameError`."""
        try:
            with self._lock:
                stored = self._hdu.section[r0:r1, :]
        except Exception as exc:
            if not decompress_error(exc):
                raise
            raise FrameError(f"{self.path}: cannot decompress rows {r0 + 1}-{r1} ({exc})") from exc
        return np.ascontiguousarray(stored, dtype=self.raw_dtype)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        if self._hdul is not None:
            self._hdul.close()
            self._hdul = None


def open_sources(paths: Sequence[str | os.PathLike[str]]) -> list[FrameSource]:
    """Open and check every input (readable, 2-D, all the same shape); raises :class:`FrameError`/``ValueError``."""
    if not paths:
        raise ValueError("no input frames to integrate (empty list)")
    sources: list[FrameSource] = []
    try:
        for p in paths:
            sources.append(FrameSource(p))
        shapes = {s.shape for s in sources}
        if len(shapes) > 1:
            first = sources[0]
            odd = [f"{s.path.name} {s.shape[1]}x{s.shape[0]}" for s in sources if s.shape != first.shape]
            raise FrameError(f"frames differ in size: {first.path.name} is {first.shape[1]}x{first.shape[0]} "
                             f"but {', '.join(odd[:5])}")
    except BaseException:
        for s in sources:
            s.close()
        raise
    return sources


def plan_band_rows(n_frames: int, shape: tuple[int, int], params: IntegrationParams,
                   extra_bytes: int = 0) -> tuple[int, int]:
    """``(band_rows, workers)`` so that the bands in flight plus the outputs fit in the memory budget.

    Working set ≈ ``BASELINE_BYTES + outputs (H·W·8 B) + extra_bytes + workers·n·band_rows·W·4 B·WORK_FACTOR``.
    Raises ``ValueError`` when not even one row per band fits.
    """
    height, width = shape
    available = params.memory_budget_bytes - BASELINE_BYTES - height * width * 8 - extra_bytes
    per_row = n_frames * width * 4 * WORK_FACTOR
    workers = max(1, params.workers)
    while workers > 1 and available < workers * per_row:
        workers -= 1
    if available < per_row:
        need = BASELINE_BYTES + height * width * 8 + extra_bytes + per_row
        raise ValueError(f"memory budget {params.memory_budget_bytes / 2**20:.0f} MiB is too small for {n_frames} "
                         f"frames of {width}x{height}: at least {need / 2**20:.0f} MiB needed")
    rows = available // (workers * per_row)
    rows = min(rows, params.band_rows or MAX_BAND_ROWS, height)
    return int(max(rows, 1)), workers


SAMPLES_MAX_BUDGET_FRACTION = 8  # rows copied out of the pass for the levels take at most 1/8 of the memory budget


def _plan(n_frames: int, shape: tuple[int, int], params: IntegrationParams,
          extra_bytes: int) -> tuple[int, int, np.ndarray | None]:
    """``(band_rows, workers, sample_rows)``: without normalization the levels are only reported, and are measured on
    the ``sample_rows`` copied out of the band pass (kept until its end, so counted in the memory plan) — unless they
    would take more than 1/8 of the budget (hundreds of frames) or not fit: then ``sample_rows`` is None and the
    levels are read in a pass of their own first, as for a normalization."""
    if params.normalization == "none":
        rows = _sample_rows(shape[0], params.sample_rows)
        sample_bytes = n_frames * rows.size * shape[1] * 4
        if sample_bytes <= params.memory_budget_bytes // SAMPLES_MAX_BUDGET_FRACTION:
            with contextlib.suppress(ValueError):
                return *plan_band_rows(n_frames, shape, params, extra_bytes + sample_bytes), rows
    return *plan_band_rows(n_frames, shape, params, extra_bytes), None


def _sample_rows(height: int, sample_rows: int) -> np.ndarray:
    """The evenly spaced rows on which each frame's level (median, robust scale) is measured."""
    return np.unique(np.linspace(0, height - 1, min(sample_rows, height)).astype(int))


def _level(rows_adu: np.ndarray, rows: np.ndarray, subtract: np.ndarray | None) -> FrameLevel:
    """A frame's level from its decoded ``rows`` (``rows_adu``: one row per entry of ``rows``), after ``subtract``."""
    return robust_level(rows_adu - subtract[rows] if subtract is not None else rows_adu)


def _levels(sources: Sequence[FrameSource], sample_rows: int, subtract: np.ndarray | None) -> list[FrameLevel]:
    """Every frame's level, read before the integration (the normalization factors need them)."""
    height, width = sources[0].shape
    rows = _sample_rows(height, sample_rows)
    levels = []
    buf = np.empty((len(rows), width), dtype=np.float32)
    for src in sources:
        for k, r in enumerate(rows):
            src.read_rows(int(r), int(r) + 1, buf[k:k + 1])
        levels.append(_level(buf, rows, subtract))
    return levels


TAIL_SPLIT = 4  # the last bands are this many times smaller, so that the workers finish at nearly the same time


def _bands(height: int, band_rows: int, workers: int) -> list[tuple[int, int]]:
    """Row bands ``[r0, r1)`` in order: ``band_rows`` rows each, except the last ``workers`` bands' worth of rows,
    cut ``TAIL_SPLIT`` times smaller (a worker that finishes early then waits for at most a small band)."""
    tail_start = height if workers < 2 else max(0, height - workers * band_rows)
    small = max(1, band_rows // TAIL_SPLIT)
    bands = [(r0, min(r0 + band_rows, tail_start)) for r0 in range(0, tail_start, band_rows)]
    return bands + [(r0, min(r0 + small, height)) for r0 in range(tail_start, height, small)]


class _Integrator:
    """The band pass. Created before the frames are read: it starts loading the compiled kernels (numba's disk cache)
    in a thread, which the bands wait for before they read their frames (see the module docstring). ``sample_rows``
    (the rows of :func:`_sample_rows`), when given, are copied out of the bands as they are read, for the frames'
    levels, instead of a separate pass over the files before the integration (possible when no normalization needs
    them first)."""

    def __init__(self, sources: Sequence[FrameSource], params: IntegrationParams, subtract: np.ndarray | None,
                 band_rows: int, sample_rows: np.ndarray | None = None) -> None:
        self.sources, self.params, self.subtract, self.band_rows = sources, params, subtract, band_rows
        self.factors: Sequence[tuple[float, float]] = [(1.0, 0.0)] * len(sources)
        self.rparams = params.rejection_params()
        # the compiled Winsorized kernel when numba is installed (same algorithm; see calib.rejection)
        compiled = numba_available()
        self.use_kernel = params.rejection == "winsorized" and params.max_iterations is None and compiled
        self.use_sigma_kernel = params.rejection == "sigma" and compiled
        self.use_single_pass_kernel = params.rejection in SINGLE_PASS_METHODS and compiled
        height, width = sources[0].shape
        self.data = np.empty((height, width), dtype=np.float32)
        counts = rejection_count_dtype(len(sources))
        self.low = np.empty((height, width), dtype=counts)
        self.high = np.empty((height, width), dtype=counts)
        self.digests: dict[int, list[bytes]] = {}
        self.rejected: dict[int, tuple[int, int]] = {}  # band start row -> values rejected (low, high) in the band
        self.sample_rows = sample_rows
        self.samples: dict[int, np.ndarray] = {}  # band start row -> (n, rows sampled in the band, W) float32
        self.failed = threading.Event()
        # stack buffers of finished bands, reused: a fresh (n, band_rows, W) array per band is a fresh mapping whose
        # pages the kernel faults in and zeroes each time (tens of MB per band)
        self._buffers: queue.SimpleQueue[tuple[np.ndarray, np.ndarray, np.ndarray]] = queue.SimpleQueue()
        self.compiled: Future[None] | None = None
        if compiled:
            loader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="darkd-load-kernels")
            self.compiled = loader.submit(load_compiled, len(sources), winsorized=self.use_kernel,
                                          sigma=self.use_sigma_kernel, single_pass=self.use_single_pass_kernel,
                                          sort=not (self.use_kernel or self.use_single_pass_kernel))
            loader.shutdown(wait=False)

    def levels(self, pool: ThreadPoolExecutor) -> list[FrameLevel]:
        """Every frame's level from the rows sampled during the band pass (the same rows and values as
        :func:`_levels` reads), frames measured in parallel on ``pool``."""
        assert self.sample_rows is not None
        rows, bands = self.sample_rows, sorted(self.samples)

        def level(i: int) -> FrameLevel:
            return _level(np.concatenate([self.samples[r0][i] for r0 in bands]), rows, self.subtract)

        return list(pool.map(level, range(len(self.sources))))

    def band(self, r0: int, r1: int) -> None:
        if self.failed.is_set():
            return
        n = len(self.sources)
        width = self.data.shape[1]
        try:  # a band's stack and the rejection counts of its pixels, reused from band to band (no page faults)
            buffers = self._buffers.get_nowait()
        except queue.Empty:
            pixels = self.band_rows * width
            buffers = (np.empty(n * pixels, dtype=np.float32), np.empty(pixels, dtype=np.int32),
                       np.empty(pixels, dtype=np.int32))
        try:
            stack, low, high = buffers
            pixels = (r1 - r0) * width
            self._band(r0, r1, stack[:n * pixels].reshape(n, r1 - r0, width),
                       (self.data.reshape(-1)[r0 * width:r1 * width], low[:pixels], high[:pixels]))
        finally:
            self._buffers.put(buffers)

    def _band(self, r0: int, r1: int, stack: np.ndarray, out: Outputs) -> None:
        """Read, reject and combine rows ``[r0, r1)``; the compiled kernels write into ``out``: the rows of the
        result and the band's rejection counts."""
        n = len(self.sources)
        width = self.data.shape[1]
        if self.compiled is not None:
            # the compiled kernels are loaded (re-raises what loading raised). Not later: the loading holds the GIL,
            # and reading a band meanwhile (a GIL-releasing sha256 call per row) stretched it from ~0.27 s to
            # 0.31-0.51 s (16 full-size darks) to read ~0.03 s ahead
            self.compiled.result()
        digests = []
        sampled = None
        if self.sample_rows is not None:
            picked = self.sample_rows[(self.sample_rows >= r0) & (self.sample_rows < r1)] - r0
            sampled = np.empty((n, picked.size, width), dtype=np.float32) if picked.size else None
        for i, src in enumerate(self.sources):
            digests.append(src.read_rows(r0, r1, stack[i]))
            if sampled is not None:
                sampled[i] = stack[i, picked]
            if self.subtract is not None:
                stack[i] -= self.subtract[r0:r1]
            mul, add = self.factors[i]
            if mul != 1.0:
                stack[i] *= np.float32(mul)
            if add != 0.0:
                stack[i] += np.float32(add)
            if (src.is_float or self.subtract is not None) and not np.isfinite(stack[i]).all():
                raise FrameError(f"{src.path}: NaN or infinite pixel values in rows {r0 + 1}-{r1}")
        self.digests[r0] = digests
        if sampled is not None:
            self.samples[r0] = sampled
        flat = stack.reshape(n, -1)
        if self.use_kernel:  # the kernel sorts each block of pixels itself, in the L1 cache, fused with the clipping
            combined, rej_low, rej_high = winsorized_combine_numba(
                flat, self.params.sigma_low, self.params.sigma_high, median=self.params.combine == "median",
                presorted=False, out=out)
        elif self.use_single_pass_kernel:  # sorts each block of pixels itself too
            combined, rej_low, rej_high = single_pass_combine_numba(flat, self.rparams,
                                                                    median=self.params.combine == "median", out=out)
        elif self.use_sigma_kernel:
            sort_frames_inplace(flat)
            combined, rej_low, rej_high = sigma_combine_numba(
                flat, self.params.sigma_low, self.params.sigma_high, median=self.params.combine == "median",
                max_iterations=self.params.max_iterations, out=out)
        else:
            sort_frames_inplace(flat)
            lo0 = np.zeros(flat.shape[1], dtype=np.int32)
            hi0 = np.full(flat.shape[1], n, dtype=np.int32)
            lo, hi = reject_sorted(flat, lo0, hi0, self.rparams)
            combined = kept_mean(flat, lo, hi) if self.params.combine == "mean" else kept_median(flat, lo, hi)
            rej_low, rej_high = lo, n - hi
            self.data[r0:r1] = combined.reshape(r1 - r0, width)
        self.low[r0:r1] = rej_low.reshape(r1 - r0, width)
        self.high[r0:r1] = rej_high.reshape(r1 - r0, width)
        self.rejected[r0] = (int(rej_low.sum(dtype=np.int64)), int(rej_high.sum(dtype=np.int64)))

    def run(self, pool: ThreadPoolExecutor | None, workers: int) -> None:
        """Every band, on the ``workers`` threads of ``pool`` (in this thread when ``pool`` is None)."""
        bands = _bands(self.data.shape[0], self.band_rows, 1 if pool is None else workers)
        if pool is None:
            for r0, r1 in bands:
                self.band(r0, r1)
            return
        futures = [pool.submit(self.band, r0, r1) for r0, r1 in bands]
        try:
            for fut in futures:
                fut.result()
        except BaseException:
            self.failed.set()
            for fut in futures:
                fut.cancel()
            wait(futures)
            raise


def _header(sources: Sequence[FrameSource], params: IntegrationParams, digest_hex: str,
            summary: dict[str, Any]) -> fits.Header:
    """Output header: acquisition keys of the first input, CCD-TEMP mean over inputs, algorithm and inputs."""
    header = fits.Header()
    copy_keys(header, sources[0].header)
    temps = [float(s.header["CCD-TEMP"]) for s in sources if isinstance(s.header.get("CCD-TEMP"), int | float)]
    if temps:
        header["CCD-TEMP"] = (round(float(np.mean(temps)), 3), "[C] mean sensor temperature of the inputs")
        header["CCDTMIN"] = (round(min(temps), 3), "[C] lowest input CCD-TEMP")
        header["CCDTMAX"] = (round(max(temps), 3), "[C] highest input CCD-TEMP")
    header["NCOMBINE"] = (len(sources), "number of frames combined")
    header["COMBINE"] = (params.combine, "per-pixel combination of kept values")
    header["REJECT"] = (params.rejection, "pixel rejection algorithm")
    if params.rejection in ("sigma", "winsorized", "linear-fit"):
        header["REJSLOW"] = (params.sigma_low, "[sigma] low rejection threshold")
        header["REJSHIGH"] = (params.sigma_high, "[sigma] high rejection threshold")
    elif params.rejection == "minmax":
        header["REJNLOW"], header["REJNHIGH"] = params.n_low, params.n_high
    elif params.rejection == "percentile":
        header["REJPLOW"], header["REJPHIGH"] = params.pct_low, params.pct_high
    elif params.rejection == "esd":
        header["ESDALPHA"], header["ESDMAXFR"] = params.esd_alpha, params.esd_max_fraction
    header["NORMALIZ"] = (params.normalization, "frame normalization before rejection")
    header["REJFRAC"] = (round(summary["rejected_fraction"], 6), "fraction of input values rejected")
    header["NOISEADU"] = (round(summary["noise_adu"], 4), "[adu] robust sigma (1.4826 MAD) of the result")
    add_inputs(header, [str(s.path) for s in sources], digest_hex,
               digest_comment="")
    add_history(header, f"{SOFTWARE} integrate: combine={params.combine} rejection={params.rejection} "
                        f"sigma_low={params.sigma_low} sigma_high={params.sigma_high} "
                        f"normalization={params.normalization} n={len(sources)}")
    return header


def integrate(paths: Sequence[str | os.PathLike[str]], params: IntegrationParams | None = None, *,
              subtract: np.ndarray | None = None) -> IntegrationResult:
    """Integrate the frames ``paths`` (see the module docstring). ``subtract`` (ADU, full frame) is removed from
    every frame before normalization (e.g. a master bias for flats). Raises :class:`FrameError` or ``ValueError``."""
    params = params or IntegrationParams()
    t0 = time.perf_counter()
    sources = open_sources(paths)
    try:
        shape = sources[0].shape
        if subtract is not None and subtract.shape != shape:
            raise FrameError(f"calibration image is {subtract.shape[1]}x{subtract.shape[0]}, frames are "
                             f"{shape[1]}x{shape[0]}")
        extra = subtract.nbytes if subtract is not None else 0
        band_rows, workers, sample_rows = _plan(len(sources), shape, params, extra)
        measure_first = sample_rows is None
        worker = _Integrator(sources, params, subtract, band_rows, sample_rows)
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="darkd-integrate") as pool:
            if measure_first:
                levels = _levels(sources, params.sample_rows, subtract)
                worker.factors = normalization_factors(levels, params.normalization)
            worker.run(pool if workers > 1 else None, workers)
            noise_level = pool.submit(robust_level, worker.data[::4, ::4])
            if not measure_first:
                levels = worker.levels(pool)
            factors = worker.factors
            noise = noise_level.result().scale_adu
        n = len(sources)
        total = float(n) * shape[0] * shape[1]
        rej_low = sum(low for low, _ in worker.rejected.values()) / total
        rej_high = sum(high for _, high in worker.rejected.values()) / total
        bands = sorted(worker.digests)
        digest = combined_digest([*(str(s.path.name) for s in sources), *(s.header.tostring() for s in sources),
                                  *(b"".join(worker.digests[r0][i] for r0 in bands) for i in range(n))])
        summary: dict[str, Any] = {"n_frames": n, "width_px": shape[1], "height_px": shape[0],
                                       "rejected_low_fraction": rej_low, "rejected_high_fraction": rej_high,
                                       "rejected_fraction": rej_low + rej_high, "noise_adu": noise,
                                       "frame_locations_adu": [lv.location_adu for lv in levels],
                                       "frame_scales_adu": [lv.scale_adu for lv in levels],
                                       "normalization_factors": [list(f) for f in factors], "band_rows": band_rows,
                                       "workers": workers, "elapsed_s": 0.0, "input_digest": digest,
                   "compiled_kernel": worker.use_kernel or worker.use_sigma_kernel or worker.use_single_pass_kernel}
        header = _header(sources, params, digest, summary)
        summary["elapsed_s"] = time.perf_counter() - t0
        log.info("integrated %d frames %dx%d in %.2f s (%d-row bands, %d workers), %.3f%% rejected", n, shape[1],
                 shape[0], summary["elapsed_s"], band_rows, workers, 100 * summary["rejected_fraction"])
        return IntegrationResult(worker.data, worker.low, worker.high, header, summary)
    finally:
        for s in sources:
            s.close()


def write_integration(result: IntegrationResult, path: str | os.PathLike[str],
                      extra_hdus: Sequence[fits.ImageHDU] = (), *, direct_io: bool = True) -> Path:
    """Write the master (float32 primary) with ``REJ_LOW``/``REJ_HIGH`` image extensions, the rejection counts as
    :func:`rejection_count_dtype` gives them (``BITPIX = 8`` up to 255 frames, else 16), then ``extra_hdus`` (e.g. a
    defect map), atomically.

    Same guarantees as :func:`calib.frames.atomic_write_bytes` (temporary file in the target folder, fsync, rename,
    fsync of the folder) but streamed by astropy into the temporary file, so the output is not held twice in memory,
    and written with direct I/O (:class:`calib.frames.DirectWriter`: no copy into the page cache; buffered where the
    file system does not take it, or with ``direct_io=False``, which the benchmarks use for comparison). The arrays
    are written in file order (:func:`calib.frames.in_file_order`) and converted back afterwards.
    """
    target = Path(path)
    arrays = [result.data, result.rejected_low, result.rejected_high]
    # the arrays are converted in place on two cores and restored before the writer's last block and the fsync
    with ThreadPoolExecutor(max_workers=2, thread_name_prefix="darkd-write") as pool, \
            atomic_file(target, direct_io=direct_io) as fh, in_file_order(arrays, pool) as (data, low, high):
        extras = [unsigned_image_hdu(low, "REJ_LOW"), unsigned_image_hdu(high, "REJ_HIGH")]
        for hdu, side in zip(extras, ("low", "high"), strict=True):
            hdu.header["COMMENT"] = f"per-pixel number of input values rejected {side}"
        hdul = to_hdulist(data, result.header, extra_hdus=[*extras, *extra_hdus])
        hdul.writeto(fh, output_verify="silentfix", checksum=True)  # CHECKSUM/DATASUM in every HDU
    return target
