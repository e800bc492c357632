"""PHD2's dark library file: one multi-extension FITS per PHD2 profile, one 16-bit image per guide exposure.

The format is what PHD2 itself writes and reads (OpenPHDGuiding/phd2, ``src/myframe.cpp``: ``save_multi_darks``,
``load_multi_darks``, ``MyFrame::DarkLibFileName``, ``MyFrame::DarkLibExists``; ``src/camera.cpp``:
``GuideCamera::AddDark``, ``GuideCamera::SelectDark``; ``src/darks_dialog.cpp``: ``CreateMasterDarkFrame``):

* File ``<PHD2 folder>/darks_defects/PHD2_dark_lib_<profile id>.fit`` (``PHD2_dark_lib_<instance>_<profile id>.fit``
  for a second PHD2 instance).
* HDU 1 is the **primary** HDU and holds the first dark; each further dark is an IMAGE extension. There is no empty
  primary HDU: the loader starts at HDU 1 and refuses any HDU that is not a 2-D image.
* Pixels are unsigned 16-bit (CFITSIO ``USHORT_IMG``: ``BITPIX = 16``, ``BZERO = 32768``) and read back as
  ``TUSHORT``; every dark has the same size, which must equal the guide camera's frame at its hardware binning
  (``DarkFrameSize``), else PHD2 refuses the library.
* Each HDU's ``EXPOSURE`` is the exposure in **seconds** (written as a float, comment "Exposure time in seconds");
  PHD2 keys its darks by whole milliseconds, ``ImgExpDur = round(EXPOSURE * 1000)``, so two darks with the same
  millisecond value would replace each other. HDUs are written in increasing exposure (PHD2's ``std::map`` order).
  An optional ``USERNOTE`` (PHD2's dialog allows 65 characters) is repeated in every HDU.
* PHD2 writes no binning or gain keyword and reads none: a library is matched to the camera by frame size only, and
  the profile is what ties it to a binning and gain. This writer adds ``XBINNING``/``YBINNING`` and ``GAIN`` as
  information for people (PHD2 ignores unknown keywords), plus ``HISTORY`` cards naming each source master.
* PHD2 subtracts the dark with the exposure ``>=`` the guide exposure nearest to it (else the longest one).

Conversion of a darkd master (32-bit float ADU) to PHD2's pixels:
``p = clip(rint(m), 0, 65535)`` as ``uint16`` (round half to even; NaN → 0). PHD2's own master is the integer mean
of its frames, so rounding instead of truncating differs by less than one ADU.
"""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from astropy.io import fits

from calib.frames import atomic_write_bytes
from calib.provenance import add_history

#: PHD2's ``MaxNoteLength`` in ``darks_dialog.cpp``.
MAX_NOTE_CHARS = 65
#: How far from a whole millisecond an exposure may be (s) before the export refuses it.
MS_TOLERANCE_S = 1e-6
EXPOSURE_COMMENT = "Exposure time in seconds"


@dataclass(frozen=True)
class Phd2Dark:
    """One dark for the library: pixel values (ADU, any real dtype), its exposure, and information for people."""

    data: np.ndarray
    exposure_s: float
    binning: int = 1
    gain: int | None = None
    source: str | None = None  # where the master came from (a path), recorded as HISTORY


def dark_library_filename(profile_id: int, instance: int = 1) -> str:
    """PHD2's file name for the dark library of ``profile_id`` (``MyFrame::DarkLibFileName``):
    ``PHD2_dark_lib_<profile>.fit``, or ``PHD2_dark_lib_<instance>_<profile>.fit`` for instance 2 and up."""
    if profile_id < 1 or instance < 1:
        raise ValueError(f"PHD2 profile id and instance start at 1, got profile {profile_id}, instance {instance}")
    middle = f"_{instance}" if instance > 1 else ""
    return f"PHD2_dark_lib{middle}_{profile_id}.fit"


def exposure_ms(exposure_s: float) -> int:
    """The whole milliseconds PHD2 keys a dark by: ``round(exposure_s * 1000)``; refuses a fraction of a millisecond
    (PHD2 would silently round it) and exposures that are not positive."""
    if not exposure_s > 0:
        raise ValueError(f"a PHD2 dark needs an exposure > 0 s, got {exposure_s!r}")
    ms = round(exposure_s * 1000.0)
    if abs(ms / 1000.0 - exposure_s) > MS_TOLERANCE_S:
        raise ValueError(f"PHD2 keys darks by whole milliseconds; {exposure_s!r} s is not one")
    return int(ms)


def to_uint16(data: np.ndarray) -> np.ndarray:
    """``clip(rint(data), 0, 65535)`` as ``uint16`` (NaN → 0): the pixels PHD2 reads as ``TUSHORT``."""
    values = np.nan_to_num(np.asarray(data, dtype=np.float64), nan=0.0, posinf=65535.0, neginf=0.0)
    return np.clip(np.rint(values), 0, 65535).astype(np.uint16)


def _header(dark: Phd2Dark, ms: int, note: str | None) -> fits.Header:
    header = fits.Header()
    header["EXPOSURE"] = (ms / 1000.0, EXPOSURE_COMMENT)
    if note:
        header["USERNOTE"] = note
    header["XBINNING"] = (dark.binning, "binning (information; PHD2 does not read it)")
    header["YBINNING"] = (dark.binning, "binning (information; PHD2 does not read it)")
    if dark.gain is not None:
        header["GAIN"] = (dark.gain, "gain (information; PHD2 does not read it)")
    source = f" from {dark.source}" if dark.source else ""
    add_history(header, f"darkd: PHD2 dark {ms} ms{source}; pixels = clip(rint(master), 0, 65535) as uint16")
    return header


def build_dark_library(darks: Sequence[Phd2Dark], *, note: str | None = None) -> fits.HDUList:
    """The HDU list of a PHD2 dark library: darks in increasing exposure, the first in the primary HDU.

    Refuses (``ValueError``) an empty list, darks of different sizes or not 2-D, two darks with the same whole
    millisecond exposure, and a note longer than :data:`MAX_NOTE_CHARS` or not printable ASCII.
    """
    if not darks:
        raise ValueError("a PHD2 dark library needs at least one dark")
    if note is not None and (len(note) > MAX_NOTE_CHARS or not note.isascii() or not note.isprintable()):
        raise ValueError(f"USERNOTE must be printable ASCII of at most {MAX_NOTE_CHARS} characters")
    keyed = sorted(((exposure_ms(d.exposure_s), d) for d in darks), key=lambda item: item[0])
    ms_values = [ms for ms, _ in keyed]
    duplicates = sorted({ms for ms in ms_values if ms_values.count(ms) > 1})
    if duplicates:
        raise ValueError(f"two darks with the same exposure ({', '.join(f'{ms} ms' for ms in duplicates)}): PHD2 keeps "
                         "one dark per millisecond value")
    shapes = {np.shape(d.data) for _, d in keyed}
    if len(shapes) != 1 or len(next(iter(shapes))) != 2:
        raise ValueError(f"PHD2 needs 2-D darks of one size, got shapes {sorted(shapes)}")
    hdus: list[fits.PrimaryHDU | fits.ImageHDU] = []
    for i, (ms, dark) in enumerate(keyed):
        pixels = to_uint16(dark.data)
        header = _header(dark, ms, note)
        hdu_type = fits.PrimaryHDU if i == 0 else fits.ImageHDU
        hdus.append(hdu_type(pixels, header=header, uint=True))
    return fits.HDUList(hdus)


def write_dark_library(path: str | os.PathLike[str], darks: Sequence[Phd2Dark], *, note: str | None = None) -> Path:
    """Write :func:`build_dark_library` to ``path`` atomically (an older library stays whole until replaced)."""
    buf = io.BytesIO()
    build_dark_library(darks, note=note).writeto(buf, output_verify="exception")
    return atomic_write_bytes(path, buf.getvalue())


@dataclass(frozen=True)
class LoadedDark:
    """One dark as PHD2's loader sees it."""

    exposure_ms: int
    pixels: np.ndarray  # uint16
    note: str | None


def read_dark_library(path: str | os.PathLike[str]) -> list[LoadedDark]:
    """Read a dark library the way PHD2's ``load_multi_darks`` does: from HDU 1 on, each HDU must be a 2-D image of
    the same size as the first; pixels as unsigned 16-bit; ``ImgExpDur = round(float32(EXPOSURE) * 1000)`` ms.
    Raises ``ValueError`` where PHD2 would refuse the file. (PHD2 falls back to its current exposure when
    ``EXPOSURE`` is missing; here that is an error, since darkd always writes it.)"""
    out: list[LoadedDark] = []
    with fits.open(path, memmap=False, uint=True) as hdul:
        size: tuple[int, int] | None = None
        for number, hdu in enumerate(hdul, start=1):
            if not isinstance(hdu, fits.PrimaryHDU | fits.ImageHDU) or hdu.header.get("NAXIS") != 2:
                raise ValueError(f"HDU {number} is not a 2-D image: PHD2 refuses the library")
            shape = (int(hdu.header["NAXIS1"]), int(hdu.header["NAXIS2"]))
            if size is not None and shape != size:
                raise ValueError(f"HDU {number} is {shape[0]}x{shape[1]}, HDU 1 {size[0]}x{size[1]}: PHD2 refuses "
                                 "the library (incompatible frame sizes)")
            size = shape
            if "EXPOSURE" not in hdu.header:
                raise ValueError(f"HDU {number} has no EXPOSURE")
            ms = round(float(np.float32(hdu.header["EXPOSURE"])) * 1000.0)
            pixels = np.clip(np.asarray(hdu.data), 0, 65535).astype(np.uint16)
            out.append(LoadedDark(int(ms), pixels, hdu.header.get("USERNOTE")))
    return out


def select_dark(darks: Sequence[LoadedDark], exposure_ms_wanted: int) -> LoadedDark | None:
    """The dark PHD2 subtracts at a guide exposure (``GuideCamera::SelectDark``): the shortest one whose exposure is
    ``>=`` the guide exposure, else the longest; ``None`` for an empty library."""
    ordered = sorted(darks, key=lambda d: d.exposure_ms)
    for dark in ordered:
        if dark.exposure_ms >= exposure_ms_wanted:
            return dark
    return ordered[-1] if ordered else None
