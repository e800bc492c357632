"""Per-pixel rejection: hand-checked small stacks, injected outliers, properties, agreement with astropy."""

from __future__ import annotations

import math

import numpy as np
import pytest
from astropy.stats import sigma_clip

from calib.rejection import METHODS, RejectionParams, esd_critical, reject, sort_frames_inplace, student_t_ppf

ITERATIVE = ("sigma", "winsorized", "linear-fit", "esd")


def _stack(n: int = 16, rows: int = 40, cols: int = 50, seed: int = 7, level: float = 1000.0,
           sigma: float = 10.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.normal(level, sigma, (n, rows, cols)).astype(np.float32)


def _winsorized_reference(values: np.ndarray, k_low: float, k_high: float) -> np.ndarray:
    """Scalar PixInsight Winsorized sigma clipping for one pixel, written directly from the definition."""
    keep = np.sort(values.astype(np.float64))
    while keep.size >= 3:
        c = float(np.median(keep))
        q1, q3 = np.percentile(keep, [25, 75])
        s = (q3 - q1) / 1.349 or float(keep.std())
        prev = math.inf
        for _ in range(100):
            w = np.clip(keep, c - 1.5 * s, c + 1.5 * s)
            new_s = 1.134 * float(w.std())
            c = float(w.mean())
            # converged, or back to the sigma of two iterations ago (a 2-cycle on quantised data)
            done = abs(new_s - s) < 5e-4 * s or abs(new_s - prev) < 5e-4 * s or new_s <= 0
            prev, s = s, new_s
            if done:
                break
        if s <= 0:
            break
        new = keep[(keep >= c - k_low * s) & (keep <= c + k_high * s)]
        if new.size == keep.size or new.size == 0:
            break
        keep = new
    return keep


def _esd_reference(values: np.ndarray, alpha: float, fraction: float) -> int:
    """Number of outliers by Rosner's generalized ESD, scalar."""
    x = list(values.astype(np.float64))
    m = len(x)
    found = 0
    for i in range(1, math.floor(fraction * m) + 1):
        if len(x) < 3:
            break
        arr = np.array(x)
        mean, std = arr.mean(), arr.std(ddof=1)
        j = int(np.argmax(np.abs(arr - mean)))
        r_stat = abs(arr[j] - mean) / std if std > 0 else 0.0
        if r_stat > esd_critical(m, i, alpha):
            found = i
        x.pop(j)
    return found


@pytest.mark.parametrize("method", METHODS)
def test_constant_stack_is_not_rejected(method: str) -> None:
    stack = np.full((9, 4, 5), 1234.0, dtype=np.float32)
    res = reject(stack, method=method, n_low=0, n_high=0)
    assert not res.mask.any()
    assert res.low.sum() == 0 and res.high.sum() == 0


@pytest.mark.parametrize("method", ["percentile", "sigma", "winsorized", "linear-fit", "esd"])
def test_injected_cosmic_rays_and_cold_values_are_rejected(method: str) -> None:
    stack = _stack()
    rng = np.random.default_rng(11)
    hot = [(int(rng.integers(16)), int(rng.integers(40)), int(rng.integers(50))) for _ in range(30)]
    cold = [(int(rng.integers(16)), int(rng.integers(40)), int(rng.integers(50))) for _ in range(30)]
    for k, y, x in hot:
        stack[k, y, x] = 1000.0 + 3000.0 * rng.random() + 500.0  # cosmic ray / hot value
    for k, y, x in cold:
        stack[k, y, x] = 1000.0 - 400.0 - 100.0 * rng.random()  # dead/cold value
    res = reject(stack, method=method)
    for k, y, x in hot:
        assert res.mask[k, y, x], f"{method}: hot value at frame {k} ({y},{x}) kept"
    for k, y, x in cold:
        assert res.mask[k, y, x], f"{method}: cold value at frame {k} ({y},{x}) kept"
    injected = {*hot, *cold}
    clean = np.ones(stack.shape, dtype=bool)
    for k, y, x in injected:
        clean[k, y, x] = False
    assert res.mask[clean].mean() < 0.03, f"{method} rejects too many clean values"
    assert int(res.low.sum() + res.high.sum()) == int(res.mask.sum())


@pytest.mark.parametrize("method", METHODS)
def test_permutation_invariance(method: str) -> None:
    stack = _stack(n=12, rows=10, cols=12, seed=3)
    stack[4, 2, 3] = 9000.0
    perm = np.random.default_rng(5).permutation(stack.shape[0])
    a = reject(stack, method=method)
    b = reject(stack[perm], method=method)
    np.testing.assert_array_equal(a.mask[perm], b.mask)
    np.testing.assert_array_equal(a.low, b.low)
    np.testing.assert_array_equal(a.high, b.high)


def test_minmax_rejects_exactly_the_extremes() -> None:
    stack = np.array([5, 1, 9, 3, 7], dtype=np.float32).reshape(5, 1, 1)
    res = reject(stack, method="minmax", n_low=1, n_high=2)
    assert res.mask[:, 0, 0].tolist() == [False, True, True, False, True]
    assert (res.low[0, 0], res.high[0, 0]) == (1, 2)


def test_minmax_never_rejects_every_value() -> None:
    stack = np.arange(3, dtype=np.float32).reshape(3, 1, 1)
    assert not reject(stack, method="minmax", n_low=2, n_high=1).mask.any()


def test_percentile_hand_checked() -> None:
    # median 100: 75 is 25 % low (> 20 %) -> rejected; 111 is 11 % high (> 10 %) -> rejected; 85 and 109 kept
    stack = np.array([100, 75, 111, 85, 109, 100, 100], dtype=np.float32).reshape(7, 1, 1)
    res = reject(stack, method="percentile", pct_low=0.2, pct_high=0.1)
    assert res.mask[:, 0, 0].tolist() == [False, True, True, False, False, False, False]


def test_winsorized_hand_checked_single_outlier() -> None:
    values = [10, 11, 9, 10, 12, 8, 10, 11, 9, 100]
    stack = np.array(values, dtype=np.float32).reshape(-1, 1, 1)
    res = reject(stack, method="winsorized")
    assert res.mask[:, 0, 0].tolist() == [False] * 9 + [True]
    assert (res.low[0, 0], res.high[0, 0]) == (0, 1)


@pytest.mark.parametrize("quantum", [0.0, 16.0])
def test_winsorized_matches_scalar_reference(quantum: float) -> None:
    stack = _stack(n=10, rows=12, cols=15, seed=21, sigma=30.0)
    rng = np.random.default_rng(2)
    stack[rng.integers(10, size=40), rng.integers(12, size=40), rng.integers(15, size=40)] += 240.0
    if quantum:  # 12-bit ADC values scaled x16, as the QHY163M writes them
        stack = (np.round(stack / quantum) * quantum).astype(np.float32)
    res = reject(stack, method="winsorized", sigma_low=4.0, sigma_high=3.0)
    for y in range(12):
        for x in range(15):
            kept = np.sort(stack[:, y, x][~res.mask[:, y, x]])
            expected = _winsorized_reference(stack[:, y, x], 4.0, 3.0)
            np.testing.assert_allclose(kept, expected, rtol=0, atol=0, err_msg=f"pixel ({y},{x})")


@pytest.mark.parametrize(("low", "high"), [(3.0, 3.0), (2.0, 2.5)])
def test_sigma_clipping_matches_astropy(low: float, high: float) -> None:
    stack = _stack(n=15, rows=20, cols=20, seed=4)
    stack[3, 5, 5] = 2000.0
    stack[8, 1, 2] = 100.0
    ours = reject(stack, method="sigma", sigma_low=low, sigma_high=high)
    theirs = sigma_clip(stack.astype(np.float64), sigma_lower=low, sigma_upper=high, maxiters=None,
                        cenfunc="median", stdfunc="std", axis=0)
    np.testing.assert_array_equal(ours.mask, np.ma.getmaskarray(theirs))


def test_esd_matches_scalar_reference_and_t_quantile() -> None:
    scipy_stats = pytest.importorskip("scipy.stats")
    for p, df in [(0.975, 3), (0.995, 14), (0.9999, 1)]:
        assert student_t_ppf(p, df) == pytest.approx(float(scipy_stats.t.ppf(p, df)), rel=1e-9)
    stack = _stack(n=12, rows=6, cols=8, seed=9)
    stack[2, 1, 1] = 1300.0
    stack[5, 1, 1] = 700.0
    stack[0, 3, 3] = 1100.0
    res = reject(stack, method="esd", esd_alpha=0.05, esd_max_fraction=0.3)
    for y in range(6):
        for x in range(8):
            assert int(res.mask[:, y, x].sum()) == _esd_reference(stack[:, y, x], 0.05, 0.3)
    assert res.mask[2, 1, 1] and res.mask[5, 1, 1] and res.mask[0, 3, 3]


def test_nan_values_are_excluded_not_counted() -> None:
    stack = _stack(n=8, rows=3, cols=3, seed=1)
    stack[0, 1, 1] = np.nan
    stack[1, 1, 1] = 5000.0
    res = reject(stack, method="winsorized")
    assert res.mask[1, 1, 1]
    assert not res.mask[0, 1, 1]
    assert res.high[1, 1] == 1 and res.low[1, 1] == 0


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="unknown rejection"):
        RejectionParams(method="kappa")
    with pytest.raises(ValueError, match="3-D"):
        reject(np.zeros((4, 4), dtype=np.float32))
    with pytest.raises(ValueError, match="sigma_low"):
        RejectionParams(sigma_low=0)


@pytest.mark.parametrize("n", [1, 2, 3, 7, 16, 23, 64, 130])
def test_sorting_network_equals_numpy_sort(n: int) -> None:
    rng = np.random.default_rng(n)
    values = rng.normal(0, 1, (n, 70000)).astype(np.float32)
    values[:, ::5] = np.round(values[:, ::5])  # ties
    expected = np.sort(values, axis=0)
    sort_frames_inplace(values)
    np.testing.assert_array_equal(values, expected)


@pytest.mark.parametrize("n", [4, 5, 7, 16, 33, 64, 65, 80])
def test_compiled_kernel_matches_numpy_path(n: int) -> None:
    """The compiled Winsorized kernel rejects what the NumPy reference rejects (ties at a threshold aside), through
    both of its paths — the pixels of a block in SIMD lanes (n ≤ ``VECTOR_MAX_N``) and one by one in pairs — with
    columns that make each branch work: an IQR of 0 (the start falls back to the standard deviation), constant
    columns (nothing to clip), outliers at both ends (more than one outer pass), and a partial last block."""
    pytest.importorskip("numba")
    from calib.kernels import VECTOR_MAX_N
    from calib.rejection import kept_mean, reject_sorted, winsorized_combine_numba

    assert 16 <= VECTOR_MAX_N < 65, "the cases below are meant to cover both paths"
    rng = np.random.default_rng(17 + n)
    ncols = 30000 if n <= 16 else 8000
    stack = np.round(rng.normal(2000.0, 40.0, (n, ncols)) / 16.0).astype(np.float32) * 16.0  # x16 quantised
    stack.reshape(-1)[rng.integers(0, stack.size, ncols // 40)] += 5000.0
    stack.reshape(-1)[rng.integers(0, stack.size, ncols // 80)] -= 1500.0
    stack[:, :50] = 2000.0  # constant
    stack[:, 50:100] = 2000.0
    stack[0, 50:100] = 2500.0  # IQR 0, one outlier
    stack[: n // 2, 100:150] = 1984.0  # two levels
    sort_frames_inplace(stack)
    lo, hi = reject_sorted(stack, np.zeros(ncols, dtype=np.int32), np.full(ncols, n, dtype=np.int32),
                           RejectionParams())
    out, low, high = winsorized_combine_numba(stack, 4.0, 3.0)
    assert (lo > 0).sum() + (hi < n).sum() > ncols // 100, "the data must give the rejection work"
    same = (low == lo) & (high == n - hi)
    assert np.mean(same) > 0.9999
    np.testing.assert_allclose(out[same], kept_mean(stack, lo, hi)[same], rtol=1e-6)


@pytest.mark.parametrize("combine_median", [False, True])
@pytest.mark.parametrize(("method", "extra"), [("none", {}), ("minmax", {"n_low": 2, "n_high": 1}),
                                               ("percentile", {}), ("percentile", {"pct_low": 0.01, "pct_high": 0.02})])
def test_compiled_single_pass_kernel_matches_numpy_path(method: str, extra: dict[str, float],
                                                        combine_median: bool) -> None:
    """none / minmax / percentile: the compiled one-pass kernel (which sorts the unsorted stack itself) rejects the
    same values as the NumPy reference and gives the same combined value; data around 0 (as after a bias is
    subtracted) covers percentile's 'no rejection where the median is not positive', non-integer data the sums."""
    pytest.importorskip("numba")
    from calib.rejection import kept_mean, kept_median, reject_sorted, single_pass_combine_numba

    rng = np.random.default_rng(23)
    stack = np.round(rng.normal(2000.0, 40.0, (16, 20000)) / 16.0).astype(np.float32) * 16.0
    stack[:, :3000] = rng.normal(0.0, 30.0, (16, 3000)).astype(np.float32)  # medians near 0, non-integer
    stack[:, 3000:6000] += rng.random((16, 3000)).astype(np.float32)
    stack.reshape(-1)[rng.integers(0, stack.size, 400)] += 5000.0
    stack.reshape(-1)[rng.integers(0, stack.size, 400)] -= 1500.0
    params = RejectionParams(method=method, **extra)  # type: ignore[arg-type]
    original = stack.copy()
    out, low, high = single_pass_combine_numba(stack, params, median=combine_median)
    np.testing.assert_array_equal(stack, original)
    sort_frames_inplace(stack)
    lo, hi = reject_sorted(stack, np.zeros(20000, dtype=np.int32), np.full(20000, 16, dtype=np.int32), params)
    np.testing.assert_array_equal(low, lo)
    np.testing.assert_array_equal(high, 16 - hi)
    assert (low + high).sum() > (1000 if method != "none" else -1), "the data must give the method work"
    expected = kept_median(stack, lo, hi) if combine_median else kept_mean(stack, lo, hi)
    np.testing.assert_allclose(out, expected.astype(np.float32), rtol=1e-6, atol=1e-4)


@pytest.mark.parametrize("n", [1, 5, 16, 300])
def test_compiled_kernel_sorts_itself(n: int) -> None:
    """The fused sort (a Batcher network on 64-pixel blocks, or a per-pixel sort above 256 frames) gives the same
    result as the kernel on a stack sorted beforehand, and leaves its input untouched."""
    pytest.importorskip("numba")
    from calib.rejection import winsorized_combine_numba

    rng = np.random.default_rng(n)
    stack = np.round(rng.normal(2000.0, 40.0, (n, 1000)) / 16.0).astype(np.float32) * 16.0
    stack.reshape(-1)[rng.integers(0, stack.size, 20)] += 5000.0
    original = stack.copy()
    fused = winsorized_combine_numba(stack, 4.0, 3.0, presorted=False)
    np.testing.assert_array_equal(stack, original)
    sort_frames_inplace(stack)
    for got, expected in zip(fused, winsorized_combine_numba(stack, 4.0, 3.0), strict=True):
        np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("kernel", ["winsorized", "sigma", "single_pass"])
def test_compiled_kernels_write_into_the_given_outputs(kernel: str) -> None:
    """With ``out``, a kernel fills the caller's arrays (e.g. rows of the master) with what it returns otherwise;
    arrays of the wrong type or length are refused before the kernel runs."""
    pytest.importorskip("numba")
    from calib.rejection import sigma_combine_numba, single_pass_combine_numba, winsorized_combine_numba

    rng = np.random.default_rng(4)
    stack = np.sort(rng.normal(2000.0, 40.0, (9, 300)).astype(np.float32), axis=0)
    run = {"winsorized": lambda **kw: winsorized_combine_numba(stack, 4.0, 3.0, **kw),
           "sigma": lambda **kw: sigma_combine_numba(stack, 4.0, 3.0, **kw),
           "single_pass": lambda **kw: single_pass_combine_numba(stack, RejectionParams(method="percentile"),
                                                                 **kw)}[kernel]
    expected = run()
    master = np.zeros((3, 100), dtype=np.float32)
    out = (master.reshape(-1), np.empty(300, dtype=np.int32), np.empty(300, dtype=np.int32))
    got = run(out=out)
    assert all(g is o for g, o in zip(got, out, strict=True))
    for g, e in zip(got, expected, strict=True):
        np.testing.assert_array_equal(g, e)
    np.testing.assert_array_equal(master.reshape(-1), expected[0])
    with pytest.raises(ValueError, match="C-contiguous int32 array of 300 values"):
        run(out=(out[0], out[1].astype(np.uint16), out[2]))
    with pytest.raises(ValueError, match="float32 array of 300 values"):
        run(out=(out[0][:299], out[1], out[2]))


def test_kept_mean_equals_the_mean_of_the_kept_slice_even_with_nan_excluded() -> None:
    from calib.rejection import kept_mean

    rng = np.random.default_rng(3)
    s = np.sort(rng.normal(100.0, 10.0, (9, 500)).astype(np.float32), axis=0)
    s[8, :7] = np.nan  # excluded NaN (sorted last)
    lo = rng.integers(0, 3, 500).astype(np.int32)
    hi = (9 - rng.integers(1, 4, 500)).astype(np.int32)
    expected = [s[lo[p]:hi[p], p].astype(np.float64).mean() for p in range(500)]
    np.testing.assert_allclose(kept_mean(s, lo, hi), expected, rtol=1e-12)


@pytest.mark.parametrize("n", [16, 130])
def test_numpy_sorting_network_without_numba(n: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DARKD_NO_NUMBA", "1")
    rng = np.random.default_rng(n)
    values = np.round(rng.normal(0, 3, (n, 40000))).astype(np.float32)
    expected = np.sort(values, axis=0)
    sort_frames_inplace(values)
    np.testing.assert_array_equal(values, expected)


@pytest.mark.parametrize(("n", "combine_median", "max_iterations"), [(3, False, None), (16, False, None),
                                                                      (16, True, 1), (40, False, None)])
def test_compiled_sigma_kernel_matches_numpy_path(n: int, combine_median: bool, max_iterations: int | None) -> None:
    pytest.importorskip("numba")
    from calib.rejection import kept_mean, kept_median, reject_sorted, sigma_combine_numba

    rng = np.random.default_rng(n)
    stack = np.round(rng.normal(2000.0, 40.0, (n, 20000)) / 16.0).astype(np.float32) * 16.0
    stack.reshape(-1)[rng.integers(0, stack.size, 400)] += 5000.0
    stack.reshape(-1)[rng.integers(0, stack.size, 100)] -= 1500.0
    sort_frames_inplace(stack)
    lo0, hi0 = np.zeros(20000, dtype=np.int32), np.full(20000, n, dtype=np.int32)
    lo, hi = reject_sorted(stack, lo0, hi0, RejectionParams(method="sigma", max_iterations=max_iterations))
    out, low, high = sigma_combine_numba(stack, 4.0, 3.0, median=combine_median, max_iterations=max_iterations)
    np.testing.assert_array_equal(low, lo)
    np.testing.assert_array_equal(high, n - hi)
    expected = kept_median(stack, lo, hi) if combine_median else kept_mean(stack, lo, hi)
    np.testing.assert_allclose(out, expected, rtol=1e-6)


def test_numba_is_set_up_without_importing_scipy() -> None:
    """numba would import SciPy (≈ 0.1 s of every ``darkd integrate``) for linear algebra none of the kernels uses:
    :func:`load_compiled` sets numba up inside ``_scipy_hidden``. SciPy stays importable afterwards, and is not hidden
    again once numba is set up. (A trivial function stands in for the kernels: compiling those from a cold cache
    would take seconds.)"""
    pytest.importorskip("numba")
    pytest.importorskip("scipy")
    import subprocess
    import sys

    code = "\n".join((
        "import sys, numpy as np",
        "from calib.rejection import _scipy_hidden",
        "with _scipy_hidden():",
        "    import numba",
        "    assert numba.njit(lambda a: a.sum())(np.ones(3)) == 3.0  # sets up numba's CPU target",
        "assert 'scipy' not in sys.modules, sorted(m for m in sys.modules if m.startswith('scipy'))[:5]",
        "with _scipy_hidden():",
        "    import scipy.linalg",
    ))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
