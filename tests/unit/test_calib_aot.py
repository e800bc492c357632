"""calib.aot: the kernels built ahead of time for this CPU (by ``make venv``) give what numba's JIT kernels give, load
without numba, and are never loaded when built from other sources or for another CPU."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from calib import aot

pytest.importorskip("numba")


def _prebuilt():  # type: ignore[no-untyped-def]
    module = aot.load()
    if module is None:
        pytest.skip("no prebuilt kernels for today's sources: run `make venv` (python -m calib.aot)")
    return module


def test_prebuilt_kernels_give_what_the_jit_kernels_give() -> None:
    """Every exported function, on the same stack: same combined values, same rejections, same sorted values."""
    from calib import kernels
    from calib.rejection import SINGLE_PASS_METHODS, _kernel_network

    prebuilt = _prebuilt()
    rng = np.random.default_rng(8)
    for n in (5, 16, 64, 80):
        stack = np.round(rng.normal(2000.0, 40.0, (n, 3000)) / 16.0).astype(np.float32) * 16.0
        stack.reshape(-1)[rng.integers(0, stack.size, 200)] += 5000.0
        pair_a, pair_b = _kernel_network(n)
        calls = {
            "winsorized_kernel": lambda m, s, o, a=pair_a, b=pair_b: m.winsorized_kernel(
                s, a, b, *o, 4.0, 3.0, False, 100, 100),
            "single_pass_kernel": lambda m, s, o, a=pair_a, b=pair_b: m.single_pass_kernel(
                s, a, b, *o, SINGLE_PASS_METHODS.index("percentile"), 0.2, 0.1, True),
            "sigma_kernel": lambda m, s, o: m.sigma_kernel(np.sort(s, axis=0), *o, 4.0, 3.0, False, 100),
        }
        for name, call in calls.items():
            results = []
            for module in (prebuilt, kernels):
                out = (np.empty(3000, np.float32), np.empty(3000, np.int32), np.empty(3000, np.int32))
                call(module, stack.copy(), out)
                results.append(out)
            for got, expected in zip(*results, strict=True):
                np.testing.assert_array_equal(got, expected, err_msg=f"{name}, n = {n}")
        sorted_aot, sorted_jit = stack.copy(), stack.copy()
        prebuilt.block_sort(sorted_aot, pair_a, pair_b)
        kernels.block_sort(sorted_jit, pair_a, pair_b)
        np.testing.assert_array_equal(sorted_aot, sorted_jit)
        np.testing.assert_array_equal(sorted_aot, np.sort(stack, axis=0))


def test_every_exported_kernel_is_declared_with_the_options_the_prebuilt_build_copies() -> None:
    """calib.aot compiles every exported function with one set of options, read from ``winsorized_kernel``'s
    declaration (the GIL released, NumPy's error model): a kernel declared otherwise would behave differently
    prebuilt and just in time."""
    from calib import kernels

    for name in aot.signatures():
        options = getattr(kernels, name).targetoptions
        assert (options["nogil"], options["error_model"]) == (True, "numpy"), name


def test_a_process_integrating_with_the_prebuilt_kernels_never_imports_numba(tmp_path: Path) -> None:
    _prebuilt()
    code = ("import sys, numpy as np\n"
            "from calib.rejection import winsorized_combine_numba, load_compiled\n"
            "load_compiled(16, winsorized=True, sort=True, sigma=True, single_pass=True)\n"
            "out = winsorized_combine_numba(np.ones((16, 100), np.float32), 4.0, 3.0, presorted=False)\n"
            "assert out[0][0] == 1.0\n"
            "print('numba' in sys.modules)\n")
    env = {k: v for k, v in os.environ.items() if k != "DARKD_NO_NUMBA"}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env,
                            cwd=tmp_path)
    assert result.stdout.strip() == "False"


def test_prebuilt_kernels_release_the_gil_while_they_run() -> None:
    """The bands of an integration run on threads: while a prebuilt kernel runs in one, Python code runs in another
    (as with the JIT kernels' nogil=True). Holding the GIL, the kernel would stop this thread's loop for its whole
    run: the longest gap between two steps of the loop would be about the kernel's time."""
    prebuilt = _prebuilt()
    from calib.rejection import _kernel_network

    stack = np.random.default_rng(2).normal(2000.0, 40.0, (16, 400_000)).astype(np.float32)
    pair_a, pair_b = _kernel_network(16)
    out = (np.empty(400_000, np.float32), np.empty(400_000, np.int32), np.empty(400_000, np.int32))
    done = threading.Event()
    kernel_s: list[float] = []

    def run() -> None:
        for _ in range(3):
            t0 = time.perf_counter()
            prebuilt.winsorized_kernel(stack, pair_a, pair_b, *out, 4.0, 3.0, False, 100, 100)
            kernel_s.append(time.perf_counter() - t0)
        done.set()

    thread = threading.Thread(target=run)
    thread.start()
    last = time.perf_counter()
    longest_gap_s = 0.0
    while not done.is_set():
        now = time.perf_counter()
        longest_gap_s = max(longest_gap_s, now - last)
        last = now
    thread.join()
    assert longest_gap_s < 0.5 * min(kernel_s), (longest_gap_s, kernel_s)


def test_the_key_names_the_sources_and_the_cpu(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Editing a source changes the key, so a module built before the edit is not loaded (the JIT kernels are used
    until ``make venv`` builds the new one); without a CPU identity there is no key, and DARKD_NO_NUMBA turns the
    prebuilt kernels off."""
    for name in ("kernels.py", "rejection.py", "aot.py"):
        shutil.copy(aot.PACKAGE_DIR / name, tmp_path / name)
    monkeypatch.setattr(aot, "PACKAGE_DIR", tmp_path)
    before = aot.key()
    assert before is not None and aot.load() is None  # nothing built in tmp_path
    (tmp_path / "kernels.py").write_text((tmp_path / "kernels.py").read_text() + "\n# edited\n")
    assert aot.key() not in (None, before)
    (tmp_path / "kernels.py").write_text((aot.PACKAGE_DIR / "kernels.py").read_text().replace("\n# edited\n", ""))
    assert aot.key() == before
    monkeypatch.setattr(aot, "_cpu_identity", lambda: b"model name\t: another CPU\nflags\t\t: fpu")
    assert aot.key() not in (None, before)
    monkeypatch.setattr(aot, "_cpu_identity", lambda: None)
    assert aot.key() is None and aot.load() is None


def test_darkd_no_numba_turns_the_prebuilt_kernels_off(monkeypatch: pytest.MonkeyPatch) -> None:
    _prebuilt()
    monkeypatch.setenv("DARKD_NO_NUMBA", "1")
    assert aot.load() is None
