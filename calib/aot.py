"""The compiled kernels of :mod:`calib.kernels`, built ahead of time into an extension module for this machine.

A process that integrates frames needs its kernels at once. numba's just-in-time path, even with the machine code in
its disk cache, costs ≈ 0.25–0.4 s of start-up that holds the GIL (importing numba, setting up its CPU target,
linking the cached code): in a whole ``darkd integrate`` of 16 full-size darks, about a seventh of the run.
``python -m calib.aot`` (run by ``make venv``) compiles the same functions with numba's ahead-of-time compiler
(``numba.pycc``), for this machine's CPU, into ``calib/_aot_<key><extension suffix>``: loading it is one
``dlopen``, and numba is not imported at all.

``<key>`` is a digest of the sources the machine code comes from (``calib/kernels.py``; ``calib/rejection.py``,
whose constants the kernels use; this module, which sets how they are built) and of the CPU (model name and feature
flags from ``/proc/cpuinfo``). A module built from other sources or on another CPU has another name and is never
loaded: :func:`load` returns None and :mod:`calib.rejection` uses the just-in-time kernels, which give the same
results (a test compares them).
``DARKD_NO_NUMBA=1`` turns both off.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.machinery
import logging
import os
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

log = logging.getLogger(__name__)

PACKAGE_DIR = Path(__file__).resolve().parent
_SOURCES = ("kernels.py", "rejection.py", "aot.py")  # the code, its constants, how it is built
PREFIX = "_aot_"
# LLVM target features added to the host CPU's own: let loops use 512-bit vectors where the CPU has AVX-512. LLVM's
# tuning for Intel's AVX-512 CPUs keeps loops at 256 bits, for the clock penalty wide vectors cost on 2017-2019
# Xeons; the Winsorized kernel (comparator network, clamped sums, per-lane Winsorization step) ran 2-14 % faster at
# 512 bits on the CI machine's Xeon (2026-12-02, docs/benchmarks.md). No effect on a CPU without AVX-512.
TARGET_FEATURES = "-prefer-256-bit"


def _cpu_identity() -> bytes | None:
    """The model name and feature flags of the first CPU (Linux ``/proc/cpuinfo``); None elsewhere."""
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    first = text.split("\n\n", 1)[0]
    lines = [line for line in first.splitlines() if line.split(":", 1)[0].strip() in ("model name", "flags")]
    return "\n".join(lines).encode() if lines else None


def key() -> str | None:
    """The key of the module built from today's sources for this CPU (None where the CPU cannot be identified)."""
    cpu = _cpu_identity()
    if cpu is None:
        return None
    digest = hashlib.sha256(cpu)
    for name in _SOURCES:
        digest.update((PACKAGE_DIR / name).read_bytes())
    return digest.hexdigest()[:16]


def module_name(build_key: str) -> str:
    return f"{PREFIX}{build_key}"


def load() -> ModuleType | None:
    """The ahead-of-time built kernels for today's sources and this CPU, or None (not built, stale, another CPU, or
    ``DARKD_NO_NUMBA`` set)."""
    if os.environ.get("DARKD_NO_NUMBA"):
        return None
    build_key = key()
    if build_key is None:
        return None
    name = module_name(build_key)
    if not any((PACKAGE_DIR / f"{name}{suffix}").exists() for suffix in importlib.machinery.EXTENSION_SUFFIXES):
        return None
    try:
        return importlib.import_module(f"calib.{name}")
    except ImportError as exc:  # e.g. a truncated file
        log.warning("ignoring the prebuilt kernels %s: %s", name, exc)
        return None


def signatures() -> dict[str, Any]:
    """The exported functions and their numba signatures: the argument types the wrappers in
    :mod:`calib.rejection` pass (C-contiguous float32 stacks, read-only int64 comparator arrays, C-contiguous
    outputs)."""
    from numba import types

    stack = types.Array(types.float32, 2, "C")
    pairs = types.Array(types.int64, 1, "C", readonly=True)
    out = types.Array(types.float32, 1, "C")
    counts = types.Array(types.int32, 1, "C")
    f8, i8, b1 = types.float64, types.int64, types.boolean
    return {
        "winsorized_kernel": types.void(stack, pairs, pairs, out, counts, counts, f8, f8, b1, i8, i8),
        "single_pass_kernel": types.void(stack, pairs, pairs, out, counts, counts, i8, f8, f8, b1),
        "sigma_kernel": types.void(stack, out, counts, counts, f8, f8, b1, i8),
        "block_sort": types.void(stack, pairs, pairs),
    }


def build(out_dir: Path = PACKAGE_DIR) -> Path:
    """Compile the kernels of :func:`signatures` for this CPU into ``out_dir`` (named by :func:`key`); returns the
    module's path. Needs numba (its ``pycc`` compiler) and a C compiler."""
    import warnings

    build_key = key()
    if build_key is None:
        raise RuntimeError("cannot identify this CPU (/proc/cpuinfo): prebuilt kernels are for Linux hosts")
    from unittest import mock

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # numba.pycc is marked for deprecation in favour of a successor tool
        from numba.core.codegen import AOTCPUCodegen
        from numba.core.compiler import Flags
        from numba.pycc import CC
        from numba.pycc import compiler as pycc_compiler

        from calib import kernels

        options = kernels.winsorized_kernel.targetoptions  # every kernel is declared with the same ``_kernel``

        class KernelFlags(Flags):
            """pycc's compile flags, with the options the kernels are declared with in :mod:`calib.kernels`:
            ``nogil`` (the exported functions release the GIL while they run: the integration runs its bands on
            threads) and ``error_model="numpy"``. pycc's own default is Python's error model, under which a division
            by zero raises ZeroDivisionError where the JIT kernels give inf or nan as NumPy does: the two builds must
            behave alike."""

            def __init__(self, *args: Any, **kwargs: Any) -> None:
                super().__init__(*args, **kwargs)  # type: ignore[no-untyped-call]
                self.release_gil = bool(options["nogil"])  # type: ignore[assignment]
                self.error_model = str(options["error_model"])  # type: ignore[assignment]

        cc = CC(module_name(build_key))  # type: ignore[no-untyped-call]
        cc.output_dir = str(out_dir)
        cc.target_cpu = "host"
        cc.verbose = False
        for name, signature in signatures().items():
            cc.export(name, signature)(getattr(kernels, name).py_func)  # type: ignore[no-untyped-call]
        with (mock.patch.object(pycc_compiler, "Flags", KernelFlags),
              mock.patch.object(AOTCPUCodegen, "_customize_tm_features", lambda _self: TARGET_FEATURES)):
            cc.compile()  # for the host CPU (target_cpu), with its features plus TARGET_FEATURES
    (path,) = [p for p in out_dir.glob(f"{module_name(build_key)}.*") if p.suffix in (".so", ".pyd")]
    return path


def main(argv: list[str] | None = None) -> int:
    """Build the module for today's sources unless it exists; remove modules built from older sources."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if os.environ.get("DARKD_NO_NUMBA"):
        log.info("DARKD_NO_NUMBA is set: no prebuilt kernels")
        return 0
    build_key = key()
    if build_key is None:
        log.info("cannot identify this CPU: no prebuilt kernels (the just-in-time kernels are used)")
        return 0
    current = module_name(build_key)
    for stale in PACKAGE_DIR.glob(f"{PREFIX}*"):
        if not stale.name.startswith(current + "."):
            stale.unlink()
            log.info("removed %s (built from other sources or for another CPU)", stale.name)
    if load() is not None:
        log.info("prebuilt kernels up to date: %s", current)
        return 0
    try:
        path = build()
    except ImportError as exc:
        log.info("numba is not installed (%s): no prebuilt kernels", exc)
        return 0
    log.info("built %s", path.relative_to(PACKAGE_DIR.parent))
    return 0


if __name__ == "__main__":
    sys.exit(main())
