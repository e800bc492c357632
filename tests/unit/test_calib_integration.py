"""Banded, memory-bounded integration: agreement with the in-memory algorithm, normalization, I/O, bad input."""

from __future__ import annotations

import hashlib
import itertools
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

from calib.frames import DiskFullError, FrameError, write_frame
from calib.integration import IntegrationParams, integrate, plan_band_rows, rejection_count_dtype, write_integration
from calib.rejection import numba_available, reject, winsorized_combine_numba
from tests.full_disk import simulate_full_disk


def _header(temp_c: float = -10.0) -> fits.Header:
    h = fits.Header()
    for key, value in (("EXPTIME", 60.0), ("GAIN", 100), ("OFFSET", 30), ("XBINNING", 1), ("YBINNING", 1),
                       ("READMODE", 0), ("SET-TEMP", -10.0), ("CCD-TEMP", temp_c), ("IMAGETYP", "Dark Frame")):
        h[key] = value
    return h


def _frames(tmp_path: Path, n: int = 7, shape: tuple[int, int] = (53, 41), seed: int = 0, *,
            bitpix16: bool = True, level: float = 1000.0) -> tuple[list[Path], np.ndarray]:
    rng = np.random.default_rng(seed)
    stack = np.rint(rng.normal(level, 8.0, (n, *shape))).astype(np.float32)
    hits = rng.integers(0, stack.size, 25)
    stack.reshape(-1)[hits] += 3000.0  # cosmic rays
    paths = [write_frame(tmp_path / f"f{i:02d}.fits", stack[i], _header(-10.0 + 0.1 * i), bitpix16=bitpix16)
             for i in range(n)]
    return paths, stack


def _expected(stack: np.ndarray, method: str, combine: str) -> np.ndarray:
    mask = reject(stack, method=method).mask
    masked = np.ma.array(stack.astype(np.float64), mask=mask)
    out = masked.mean(axis=0) if combine == "mean" else np.ma.median(masked, axis=0)
    return np.asarray(out.filled(np.nan))


@pytest.mark.parametrize("combine", ["mean", "median"])
@pytest.mark.parametrize("method", ["none", "winsorized", "sigma", "minmax", "percentile", "esd"])
def test_banded_result_equals_in_memory_algorithm(tmp_path: Path, method: str, combine: str) -> None:
    """Bands (5 rows, 2 workers) give exactly what the same algorithm gives on the whole stack in memory: the NumPy
    reference, or the compiled Winsorized kernel where integration uses it (the kernel's agreement with the reference,
    all but ties at a threshold, is tested in test_calib_rejection)."""
    paths, stack = _frames(tmp_path)
    res = integrate(paths, IntegrationParams(combine=combine, rejection=method, band_rows=5, workers=2))
    if method == "winsorized" and numba_available():
        data, low, high = winsorized_combine_numba(stack.reshape(stack.shape[0], -1), 4.0, 3.0,
                                                   median=combine == "median", presorted=False)
        assert res.summary["compiled_kernel"] is True
        np.testing.assert_array_equal(res.data, data.reshape(stack.shape[1:]))
        np.testing.assert_array_equal(res.rejected_low, low.reshape(stack.shape[1:]))
        np.testing.assert_array_equal(res.rejected_high, high.reshape(stack.shape[1:]))
        return
    np.testing.assert_allclose(res.data, _expected(stack, method, combine), rtol=0, atol=2e-3)
    ref = reject(stack, method=method)
    np.testing.assert_array_equal(res.rejected_low, ref.low)
    np.testing.assert_array_equal(res.rejected_high, ref.high)
    assert res.data.dtype == np.float32 and res.rejected_low.dtype == np.uint8  # 7 frames: counts fit a byte


def test_cosmic_rays_removed_and_constant_stack_unchanged(tmp_path: Path) -> None:
    paths, _ = _frames(tmp_path, n=9)
    res = integrate(paths, IntegrationParams())
    assert float(np.abs(res.data - 1000.0).max()) < 20.0  # a 3000 ADU hit in a 9-frame mean would add > 300
    assert res.summary["rejected_fraction"] > 0
    const = [write_frame(tmp_path / f"c{i}.fits", np.full((10, 12), 777.0), bitpix16=True) for i in range(5)]
    out = integrate(const, IntegrationParams())
    assert np.all(out.data == 777.0) and out.summary["rejected_fraction"] == 0


@pytest.mark.parametrize("method", ["multiplicative", "additive"])
def test_normalization_brings_frames_to_the_reference_level(tmp_path: Path, method: str) -> None:
    rng = np.random.default_rng(3)
    pattern = 1.0 + 0.05 * rng.standard_normal((40, 30))
    factors = [1.0, 1.3, 0.8, 1.1, 0.95]
    paths = []
    for i, f in enumerate(factors):
        img = 10000.0 * pattern * f if method == "multiplicative" else 10000.0 * pattern + 500.0 * (f - 1) * 10
        paths.append(write_frame(tmp_path / f"n{i}.fits", img.astype(np.float32)))
    res = integrate(paths, IntegrationParams(normalization=method, rejection="none"))
    expected = 10000.0 * pattern
    np.testing.assert_allclose(res.data, expected, rtol=2e-4 if method == "multiplicative" else 0, atol=0.05)


def test_rejection_counts_take_one_byte_up_to_255_frames_and_two_above(tmp_path: Path) -> None:
    """A byte counts to 255, so the counts are bytes up to 255 inputs (``BITPIX = 8``) and uint16 above, whatever
    the counts are: written as FITS 16-bit with ``BZERO = 32768`` and read back equal (here 255 rejected high)."""
    assert rejection_count_dtype(255) == np.uint8 and rejection_count_dtype(256) == np.uint16
    paths, _ = _frames(tmp_path, n=8, shape=(6, 5))
    res = integrate(paths * 32, IntegrationParams(rejection="minmax", n_low=0, n_high=255))
    assert res.rejected_high.dtype == np.uint16 and int(res.rejected_high.max()) == 255
    out = write_integration(res, tmp_path / "out" / "master.fits")
    with fits.open(out) as hdul:
        assert hdul["REJ_HIGH"].header["BITPIX"] == 16 and hdul["REJ_HIGH"].header["BZERO"] == 32768
        np.testing.assert_array_equal(hdul["REJ_HIGH"].data, res.rejected_high)
    fewer = integrate(paths * 32, IntegrationParams(rejection="minmax", n_low=0, n_high=254))
    assert fewer.rejected_high.dtype == np.uint16  # the type follows the number of inputs, not the counts
    assert integrate(paths[:5] * 51, IntegrationParams()).rejected_low.dtype == np.uint8


def test_header_provenance_and_extensions(tmp_path: Path) -> None:
    paths, _ = _frames(tmp_path, n=5)
    res = integrate(paths, IntegrationParams())
    out = write_integration(res, tmp_path / "out" / "master.fits")
    with fits.open(out) as hdul:
        assert [h.name for h in hdul] == ["PRIMARY", "REJ_LOW", "REJ_HIGH"]
        hdr = hdul[0].header
        assert hdr["NCOMBINE"] == 5 and hdr["REJECT"] == "winsorized" and hdr["COMBINE"] == "mean"
        assert hdr["IMCMB001"] == "f00.fits" and hdr["IMCMB005"] == "f04.fits"
        assert hdr["CCD-TEMP"] == pytest.approx(-9.8, abs=1e-6)  # mean of -10.0 ... -9.6
        assert hdr["CCDTMIN"] == -10.0 and hdr["SET-TEMP"] == -10.0 and hdr["GAIN"] == 100
        assert hdr["EXPTIME"] == 60.0
        np.testing.assert_array_equal(hdul["REJ_HIGH"].data, res.rejected_high)
        assert hdul[0].data.dtype.kind == "f"
        assert hdul["REJ_LOW"].header["BITPIX"] == 8 and "BZERO" not in hdul["REJ_LOW"].header  # counts ≤ 255
    again = integrate(paths, IntegrationParams(band_rows=3))
    assert again.header["INDIGEST"] == res.header["INDIGEST"]
    other = integrate(paths[:4], IntegrationParams())
    assert other.header["INDIGEST"] != res.header["INDIGEST"]


def test_float_and_compressed_inputs(tmp_path: Path) -> None:
    paths, stack = _frames(tmp_path, n=5, bitpix16=False)
    comp = tmp_path / "comp.fits"
    fits.HDUList([fits.PrimaryHDU(), fits.CompImageHDU(stack[0].astype(np.int32))]).writeto(comp)
    res = integrate([*paths, comp], IntegrationParams(rejection="none"))
    expected = np.concatenate([stack, stack[:1]]).astype(np.float64).mean(axis=0)
    np.testing.assert_allclose(res.data, expected, atol=1e-3)


@pytest.mark.parametrize(("dtype", "bscale", "bzero"), [(">i2", 0.25, -3.5), (">i2", 1.0, 32768.0), (">i4", 3.0, 0.0),
                                                      (">f4", 1.0, 0.125), (">f8", 0.5, 7.0), (">i2", 1.0, 0.0)])
def test_scaled_inputs_decode_in_float32(tmp_path: Path, dtype: str, bscale: float, bzero: float) -> None:
    """Stored values with BSCALE/BZERO are decoded as float32(v)·BSCALE + BZERO in float32 (BSCALE first), as astropy
    scales them; one frame with no rejection gives them back bit for bit, and writing leaves the result unchanged."""
    stored = np.random.default_rng(3).normal(0, 3000, (23, 17)).astype(dtype)
    path = tmp_path / "scaled.fits"
    hdu = fits.PrimaryHDU(stored)
    hdu.header["BSCALE"], hdu.header["BZERO"] = bscale, bzero
    hdu.writeto(path)
    res = integrate([path], IntegrationParams(rejection="none", band_rows=4))
    expected = stored.astype(np.float32) * np.float32(bscale) + np.float32(bzero)
    np.testing.assert_array_equal(res.data, expected)
    np.testing.assert_allclose(res.data, fits.getdata(path).astype(np.float64), rtol=1e-6)
    before = res.data.copy()
    write_integration(res, tmp_path / "master.fits")
    np.testing.assert_array_equal(res.data, before)  # converted back to native order after the write
    np.testing.assert_array_equal(fits.getdata(tmp_path / "master.fits"), before)


def test_memory_plan_respects_the_budget() -> None:
    params = IntegrationParams(memory_budget_bytes=1 << 30)
    rows16, workers16 = plan_band_rows(16, (3522, 4656), params)
    rows100, _ = plan_band_rows(100, (3522, 4656), params)
    assert workers16 == 2 and rows100 < rows16
    used = 160 * 2**20 + 3522 * 4656 * 8 + workers16 * 100 * rows100 * 4656 * 16
    assert used <= 1 << 30
    with pytest.raises(ValueError, match="too small"):
        plan_band_rows(100, (3522, 4656), IntegrationParams(memory_budget_bytes=200 << 20))


def test_bad_inputs_give_clear_errors(tmp_path: Path) -> None:
    paths, _ = _frames(tmp_path, n=3)
    with pytest.raises(ValueError, match="empty"):
        integrate([], IntegrationParams())
    odd = write_frame(tmp_path / "odd.fits", np.zeros((10, 10)), bitpix16=True)
    with pytest.raises(FrameError, match="differ in size"):
        integrate([*paths, odd], IntegrationParams())
    truncated = tmp_path / "trunc.fits"
    truncated.write_bytes(paths[0].read_bytes()[:4000])
    with pytest.raises(FrameError, match="trunc"):
        integrate([*paths, truncated], IntegrationParams())
    nan = np.full((53, 41), 1000.0, dtype=np.float32)
    nan[7, 9] = np.nan
    nan_path = write_frame(tmp_path / "nan.fits", nan)
    with pytest.raises(FrameError, match="NaN"):
        integrate([*paths, nan_path], IntegrationParams())
    with pytest.raises(FrameError, match="not found"):
        integrate([*paths, tmp_path / "missing.fits"], IntegrationParams())
    junk = tmp_path / "junk.fits"
    junk.write_text("not a fits file")
    with pytest.raises(FrameError):
        integrate([*paths, junk], IntegrationParams())
    with pytest.raises(ValueError, match="unknown combine"):
        IntegrationParams(combine="sum")


def test_numpy_fallback_and_compiled_kernel_agree(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    paths, stack = _frames(tmp_path, n=12, seed=5)
    default = integrate(paths, IntegrationParams(combine="mean", rejection="winsorized"))
    monkeypatch.setenv("DARKD_NO_NUMBA", "1")
    fallback = integrate(paths, IntegrationParams(combine="mean", rejection="winsorized"))
    assert fallback.summary["compiled_kernel"] is False
    np.testing.assert_array_equal(default.rejected_high, fallback.rejected_high)
    np.testing.assert_array_equal(default.rejected_low, fallback.rejected_low)
    np.testing.assert_allclose(default.data, fallback.data, rtol=1e-6)
    np.testing.assert_allclose(fallback.data, _expected(stack, "winsorized", "mean"), atol=2e-3)


def test_full_disk_during_master_write_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 15 item 5: astropy's disk-full handling used to end in ``'list' object has no attribute '_file'``."""
    paths, _ = _frames(tmp_path, n=5, shape=(300, 200))
    digests = {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in paths}
    result = integrate(paths, IntegrationParams(rejection="winsorized"))
    simulate_full_disk(monkeypatch)
    out = tmp_path / "masters" / "master.fits"
    with pytest.raises(DiskFullError, match="no space left on device") as info:
        write_integration(result, out)
    assert info.value.filename == str(out)
    assert not out.exists()
    assert list(out.parent.iterdir()) == [], "no partial file may be left"
    assert {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in paths} == digests, "inputs must be untouched"
    monkeypatch.undo()
    write_integration(result, out)  # the same result writes once there is room again
    assert fits.getdata(out).shape == (300, 200)


def test_sigma_clipping_compiled_and_numpy_agree(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("numba")
    paths, _ = _frames(tmp_path, n=12, seed=9)
    params = IntegrationParams(combine="mean", rejection="sigma")
    compiled = integrate(paths, params)
    assert compiled.summary["compiled_kernel"] is True
    monkeypatch.setenv("DARKD_NO_NUMBA", "1")
    fallback = integrate(paths, params)
    assert fallback.summary["compiled_kernel"] is False
    np.testing.assert_array_equal(compiled.rejected_low, fallback.rejected_low)
    np.testing.assert_array_equal(compiled.rejected_high, fallback.rejected_high)
    assert compiled.rejected_high.sum() > 0, "the frames must give the clipping something to reject"
    np.testing.assert_allclose(compiled.data, fallback.data, rtol=1e-6)


def test_levels_measured_during_the_pass_equal_a_pass_before(tmp_path: Path) -> None:
    """Without normalization the frames' levels are taken from rows copied out of the bands (no pass over the files
    before the integration): the same values as reading those rows first, whatever the band size."""
    from calib.integration import _levels, open_sources

    paths, _ = _frames(tmp_path, n=5, shape=(70, 33))
    sources = open_sources(paths)
    try:
        expected = _levels(sources, 16, None)
    finally:
        for s in sources:
            s.close()
    for band_rows in (3, 70):
        summary = integrate(paths, IntegrationParams(band_rows=band_rows, sample_rows=16, workers=2)).summary
        assert summary["frame_locations_adu"] == [lv.location_adu for lv in expected]
        assert summary["frame_scales_adu"] == [lv.scale_adu for lv in expected]


def test_bands_cover_every_row_once_and_end_small() -> None:
    from calib.integration import TAIL_SPLIT, _bands

    for height, band_rows, workers in ((3522, 128, 2), (53, 5, 2), (7, 128, 2), (100, 7, 1), (1, 1, 2)):
        bands = _bands(height, band_rows, workers)
        assert bands[0][0] == 0 and bands[-1][1] == height
        assert all(a[1] == b[0] for a, b in itertools.pairwise(bands))
        assert all(0 < r1 - r0 <= band_rows for r0, r1 in bands)
        if workers > 1 and height > workers * band_rows:
            assert all(r1 - r0 <= max(1, band_rows // TAIL_SPLIT) for r0, r1 in bands[-workers * TAIL_SPLIT:])


def test_levels_are_read_first_when_the_sampled_rows_would_take_too_much_memory() -> None:
    """The rows kept for the levels count in the memory plan; with hundreds of frames (more than 1/8 of the budget) or
    a tight budget the levels are read in a pass of their own, so no budget that worked before is refused."""
    from calib.integration import _plan

    full = (3522, 4656)
    rows16, workers16, sampled16 = _plan(16, full, IntegrationParams(), 0)
    assert sampled16 is not None and (rows16, workers16) <= plan_band_rows(16, full, IntegrationParams())
    for n, budget in ((256, 1 << 30), (256, 512 << 20), (64, 400 << 20)):
        params = IntegrationParams(memory_budget_bytes=budget)
        band_rows, workers, sampled = _plan(n, full, params, 0)
        assert sampled is None and (band_rows, workers) == plan_band_rows(n, full, params)
    assert _plan(16, full, IntegrationParams(normalization="additive"), 0)[2] is None
