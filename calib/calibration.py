"""Light-frame calibration, CMOS-correct (``darkd calibrate``).

The formula is the classical one, with a master dark taken at the light's exposure and temperature::

    calibrated = (Light − MasterDark) / (MasterFlat − MasterBias) × mean(MasterFlat − MasterBias) + pedestal

(without a flat: ``Light − MasterDark + pedestal``). A master flat built by :func:`calib.masters.build_master` is
already ``Flat − Bias`` (each flat had the master bias or flat-dark subtracted before integration; its header has
``CALBIAS``/``CALFDARK``), so the bias is not subtracted from it a second time; a flat without those keys is taken as
raw and needs the master bias. The master dark is **not** bias-subtracted and **not** scaled: it
already contains the bias, the dark signal, the amp glow and whatever the optical-black clamp did to this exposure.
``mean(MasterFlat − MasterBias)`` is taken over ``DATASEC`` when the flat's header has one; pixels where
``MasterFlat − MasterBias ≤ 0`` (overscan, dead pixels) are set to the pedestal. The ``pedestal_adu`` keeps the result
from clipping at zero.

Dark scaling — PixInsight's ``Light − Bias − k·(Dark − Bias)`` with ``k`` chosen to minimise the noise of the result
— is only used when asked for explicitly, and logs a warning: it assumes the dark signal is ``k`` times the dark's,
on top of a stable bias. On CMOS sensors with optical-black clamping the dark's mean can fall *below* the bias (the
clamp over-corrects when amp glow heats the optical-black area), and amp glow grows non-linearly with exposure, so a
scaled dark leaves visible glow and mis-subtracts the dark signal.

Overscan and trimming (``overscan=``/``trim=``, ``darkd calibrate --overscan none|mean|median|rows --trim``) are off by
default: a CMOS camera with optical-black clamping already clamps on chip, and its overscan carries only the bias
pedestal and the ADC reference drift, which a matched master dark contains as well. Subtracting each light's own
overscan level helps when the ADC reference drifts between frames (fast bursts warm the electronics by tens of ADU).
The treatment is applied to each light before the formula, and **the masters must have been built with the same
treatment** (their ``OVSCMETH``/``TRIMMED`` keys, written by :func:`calib.masters.build_master`; a master without them
counts as ``none``/untrimmed); otherwise :class:`CalibrationMismatch` says which master and which treatment.

Output area. ``calibrate_files`` writes only the data area by default (``full_frame=False``): outside ``DATASEC`` the
overscan columns and optical-black rows hold no image (and a flat about zero there would blow them up), so each
calibrated light is cut to ``DATASEC`` (:func:`trim_to_data`) and its header records it the IRAF way: ``TRIM`` = the
section of the raw frame kept, ``DATASEC`` = the whole new frame, ``LTV1``/``LTV2`` = the physical-coordinate offsets,
``BIASSEC``/``TRIMSEC`` (which described the raw frame) removed, and a HISTORY line. With ``full_frame=True``
(``darkd calibrate --full-frame``) the frame keeps its size and every pixel outside ``DATASEC`` is set to the pedestal
(the value a calibrated pixel with no signal has), recorded as ``NDFILL`` (ADU).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from astropy.io import fits

from calib.cosmetic import apply_cosmetic, load_cosmetic_map
from calib.frames import Frame, read_frame, read_header, write_frame
from calib.geometry import Preprocessing, prepare_frame, requested_treatment, treatment_of
from calib.normalization import MAD_TO_SIGMA
from calib.provenance import add_history, file_sha256
from calib.sections import Section, data_region

log = logging.getLogger(__name__)

SCALING_WARNING = ("dark scaling (Light - Bias - k*(Dark - Bias)) requested: this is invalid for CMOS cameras whose "
                   "dark mean falls below the bias (optical-black clamping) or whose dark signal grows non-linearly "
                   "(amp glow); expect glow residuals. Prefer a master dark matched in exposure and temperature.")
_EXPOSURE_KEYS = ("EXPTIME", "EXPOSURE")
_MATCHED = (("gain", ("GAIN",)), ("offset", ("OFFSET",)), ("x binning", ("XBINNING",)), ("y binning", ("YBINNING",)),
            ("read mode", ("READMODE",)), ("width", ("NAXIS1",)), ("height", ("NAXIS2",)))


class CalibrationMismatch(ValueError):
    """A master does not match the light it should calibrate; the message names every differing key."""


def _value(header: fits.Header | dict[str, Any], aliases: Sequence[str]) -> Any:
    for key in aliases:
        if key in header:
            return header[key]
    return None


def check_master_matches(light_header: fits.Header, master_header: fits.Header, temperature_tolerance_c: float = 0.5,
                         *, check_exposure: bool = True, check_temperature: bool = True) -> list[str]:
    """Differences between a light and a master (empty list = they match).

    Compared: exposure (relative 0.1 %), sensor temperature (``CCD-TEMP`` within ``temperature_tolerance_c``, else
    ``SET-TEMP``), gain, offset, binning, read mode and image size. A key missing from either header is not compared.
    """
    problems = []
    if check_exposure:
        a, b = _value(light_header, _EXPOSURE_KEYS), _value(master_header, _EXPOSURE_KEYS)
        if a is not None and b is not None and abs(float(a) - float(b)) > 1e-3 * max(abs(float(a)), 1e-3):
            problems.append(f"exposure: light {float(a):g} s, master {float(b):g} s")
    if check_temperature:
        for key in ("CCD-TEMP", "SET-TEMP"):
            a, b = light_header.get(key), master_header.get(key)
            if isinstance(a, int | float) and isinstance(b, int | float):
                if abs(a - b) > temperature_tolerance_c:
                    problems.append(f"temperature ({key}): light {a:g} C, master {b:g} C, "
                                    f"tolerance {temperature_tolerance_c:g} C")
                break
    for label, aliases in _MATCHED:
        a, b = _value(light_header, aliases), _value(master_header, aliases)
        if a is not None and b is not None and a != b:
            problems.append(f"{label}: light {a!r}, master {b!r}")
    return problems


def _datasec_mean(data: np.ndarray, header: fits.Header | None) -> float:
    return float(data_region(data, header).mean(dtype=np.float64))


def optimal_dark_scale(light: np.ndarray, dark: np.ndarray, bias: np.ndarray, *, k_max: float = 3.0) -> float:
    """``k`` in ``[0, k_max]`` minimising the robust noise (1.4826·MAD) of ``Light − Bias − k(Dark − Bias)``.

    Golden-section search on a subsample (every 4th pixel in both directions).
    """
    lb = (light[::4, ::4] - bias[::4, ::4]).astype(np.float64).ravel()
    db = (dark[::4, ::4] - bias[::4, ::4]).astype(np.float64).ravel()

    def noise(k: float) -> float:
        r = lb - k * db
        return MAD_TO_SIGMA * float(np.median(np.abs(r - np.median(r))))

    lo, hi = 0.0, k_max
    ratio = (np.sqrt(5.0) - 1.0) / 2.0
    for _ in range(40):
        a, b = hi - ratio * (hi - lo), lo + ratio * (hi - lo)
        if noise(a) < noise(b):
            hi = b
        else:
            lo = a
    return 0.5 * (lo + hi)


def calibrate_light(light: np.ndarray, dark: np.ndarray, *, flat: np.ndarray | None = None,
                    bias: np.ndarray | None = None, pedestal_adu: float = 0.0, dark_scale: float | None = None,
                    flat_header: fits.Header | None = None, flat_is_calibrated: bool = False) -> np.ndarray:
    """Calibrate one light (ADU → ADU, float32); see the module docstring for the formula.

    ``dark_scale`` = ``k`` selects the scaled formula ``Light − Bias − k(Dark − Bias)`` (needs ``bias``; warns).
    ``flat_is_calibrated``: ``flat`` is already ``Flat − Bias`` (a darkd master flat), so ``bias`` is not needed.
    """
    shapes = {np.shape(a) for a in (light, dark, flat, bias) if a is not None}
    if len(shapes) != 1:
        raise CalibrationMismatch(f"image sizes differ: {sorted(shapes)}")
    if flat is not None and bias is None and not flat_is_calibrated:
        raise ValueError("flat correction needs the master bias: (Flat - Bias) is the flat's illumination")
    light64 = np.asarray(light, dtype=np.float64)
    if dark_scale is not None:
        if bias is None:
            raise ValueError("the scaled formula Light - Bias - k(Dark - Bias) needs a master bias")
        log.warning("%s (k = %.4f)", SCALING_WARNING, dark_scale)
        signal = light64 - bias - dark_scale * (np.asarray(dark, dtype=np.float64) - bias)
    else:
        signal = light64 - dark
    if flat is not None:
        illum = np.asarray(flat, dtype=np.float64)
        if not flat_is_calibrated:
            assert bias is not None  # refused above
            illum = illum - bias
        norm = _datasec_mean(illum, flat_header)
        good = illum > 0
        out = np.zeros_like(signal)
        np.divide(signal * norm, illum, out=out, where=good)
        if not good.all():
            log.info("%d pixels with Flat - Bias <= 0 set to the pedestal", int(np.count_nonzero(~good)))
        signal = out
    calibrated: np.ndarray = (signal + pedestal_adu).astype(np.float32)
    return calibrated


def _data_section(data: np.ndarray, header: fits.Header) -> Section | None:
    """``DATASEC`` when it is valid, inside the image and smaller than it; else ``None`` (nothing to cut)."""
    text = header.get("DATASEC")
    if not isinstance(text, str):
        return None
    try:
        section = Section.parse(text)
    except ValueError:
        return None
    if not section.fits_in(data.shape) or section.shape == data.shape:
        return None
    return section


def trim_to_data(data: np.ndarray, header: fits.Header) -> tuple[np.ndarray, fits.Header]:
    """Cut a calibrated frame to its ``DATASEC``; returns (data, updated header copy). See the module docstring.

    IRAF convention: ``TRIM`` = kept section in raw-frame coordinates, ``DATASEC = [1:w,1:h]``,
    ``LTV1 = −(x1 − 1)``, ``LTV2 = −(y1 − 1)``; ``BIASSEC``/``TRIMSEC`` removed. A frame without a ``DATASEC`` smaller
    than itself is returned unchanged.
    """
    section = _data_section(data, header)
    if section is None:
        return data, header
    header = header.copy()
    out = np.ascontiguousarray(data[section.slices])
    header["DATASEC"] = (Section(1, out.shape[1], 1, out.shape[0]).iraf, "data area (the whole frame)")
    header["TRIM"] = (section.iraf, "section of the raw frame kept (its DATASEC)")
    header["LTV1"] = (-(section.x1 - 1), "physical x = image x - LTV1")
    header["LTV2"] = (-(section.y1 - 1), "physical y = image y - LTV2")
    for key in ("BIASSEC", "TRIMSEC"):
        header.remove(key, ignore_missing=True, remove_all=True)
    add_history(header, f"darkd calibrate: trimmed to the data area {section.iraf}")
    return out, header


def fill_outside_data(data: np.ndarray, header: fits.Header, value_adu: float) -> int:
    """Set every pixel outside ``DATASEC`` to ``value_adu`` in place; records ``NDFILL``; returns the pixels set."""
    section = _data_section(data, header)
    if section is None:
        return 0
    inside = np.zeros(data.shape, dtype=bool)
    inside[section.slices] = True
    data[~inside] = value_adu
    header["NDFILL"] = (float(value_adu), "[adu] pedestal, set outside DATASEC")
    return int(np.count_nonzero(~inside))


def _master(path: str | os.PathLike[str] | None, what: str) -> tuple[Frame | None, str | None]:
    if path is None:
        return None, None
    frame = read_frame(path)
    if not np.isfinite(frame.data).all():
        raise ValueError(f"{path}: the {what} contains NaN or infinite values")
    return frame, file_sha256(path)


def calibrate_files(lights: Sequence[str | os.PathLike[str]], *, dark: str | os.PathLike[str],
                    output_dir: str | os.PathLike[str], flat: str | os.PathLike[str] | None = None,
                    bias: str | os.PathLike[str] | None = None, pedestal_adu: float = 0.0, scale_dark: bool = False,
                    temperature_tolerance_c: float = 0.5, suffix: str = "_cal", overscan: str = "none",
                    trim: bool = False, biassec: str | None = None, trimsec: str | None = None,
                    overscan_fit_order: int = 0, cosmetic: bool = False, full_frame: bool = False) -> list[Path]:
    """Calibrate ``lights`` into float32 FITS files ``<output_dir>/<stem><suffix>.fits``; returns their paths.

    Every light is checked against the masters first (:func:`check_master_matches`: the dark on everything, the flat
    and bias on gain/offset/binning/read mode/size); any mismatch raises :class:`CalibrationMismatch` naming the
    light, the master and the keys, and nothing is written. ``scale_dark`` selects the scaled formula with ``k`` from
    :func:`optimal_dark_scale` (warns; the dark's exposure is then not required to match). Each output header
    records CALDARK/CALFLAT/CALBIAS names and sha256 digests,
    the pedestal and HISTORY lines. ``overscan``/``trim`` (off by default; see the module docstring and
    :class:`calib.geometry.Preprocessing`) are applied to each light first; a master made with another overscan/trim
    treatment raises :class:`CalibrationMismatch`. The outputs record ``OVSCMETH``, ``OVSCSEC``, ``OVSCLEV``,
    ``TRIMMED`` and HISTORY. ``cosmetic`` (optional, after the arithmetic and before the cut): replace the pixels
    flagged in the masters' defect maps by the median of their good neighbours (:mod:`calib.cosmetic`; records
    ``COSMETIC``, the count). Each output is cut to ``DATASEC`` (:func:`trim_to_data`) unless ``full_frame``, which
    keeps the size and sets the pixels outside ``DATASEC`` to the pedestal (:func:`fill_outside_data`). Outputs carry
    ``BUNIT = 'adu'`` and ``CHECKSUM``/``DATASUM``.
    """
    prep = Preprocessing(overscan, trim, biassec, trimsec, overscan_fit_order)
    if not lights:
        raise ValueError("no light frames to calibrate (empty list)")
    if scale_dark and bias is None:
        raise ValueError("--scale-dark needs --bias (Light - Bias - k(Dark - Bias))")
    dark_f, dark_sha = _master(dark, "master dark")
    flat_f, flat_sha = _master(flat, "master flat")
    bias_f, bias_sha = _master(bias, "master bias")
    flat_done = flat_f is not None and ("CALBIAS" in flat_f.header or "CALFDARK" in flat_f.header)
    if flat_f is not None and not flat_done and bias_f is None:
        raise ValueError(f"{flat}: the flat is not bias-subtracted (no CALBIAS/CALFDARK); --flat needs --bias")
    if dark_f is None:
        raise ValueError("a master dark is required")
    problems = []
    for light in lights:
        header = read_header(light)
        wanted = requested_treatment(prep, header)
        if wanted[1] and wanted[1] != "?":
            header = header.copy()
            header["NAXIS2"], header["NAXIS1"] = Section.parse(wanted[1]).shape
        for label, frame, full in (("dark", dark_f, True), ("flat", flat_f, False), ("bias", bias_f, False)):
            if frame is None:
                continue
            diffs = check_master_matches(header, frame.header, temperature_tolerance_c,
                                         check_exposure=full and not scale_dark, check_temperature=full)
            made = treatment_of(frame.header)
            if made != wanted:
                diffs.append(f"overscan/trim treatment: master made with overscan {made[0]!r}, trim {made[1] or 'no'}; "
                             f"requested for the light overscan {wanted[0]!r}, trim {wanted[1] or 'no'}")
            problems += [f"{Path(light).name} vs master {label} {Path(str(frame.path)).name}: {d}" for d in diffs]
    if problems:
        raise CalibrationMismatch("master does not match the light: " + "; ".join(problems))
    cosmetic_map = load_cosmetic_map([dark, flat, bias]) if cosmetic else None
    if scale_dark:
        log.warning(SCALING_WARNING)
    out_dir = Path(output_dir)
    written = []
    for light in lights:
        frame = read_frame(light)
        if not np.isfinite(frame.data).all():
            raise ValueError(f"{light}: the light contains NaN or infinite values")
        if prep.active:
            prepared, prepared_header, _ = prepare_frame(frame.data, frame.header, prep)
            frame = Frame(prepared, prepared_header, frame.path)
        k = optimal_dark_scale(frame.data, dark_f.data, bias_f.data) if scale_dark and bias_f else None
        data = calibrate_light(frame.data, dark_f.data, flat=flat_f.data if flat_f else None,
                               bias=bias_f.data if bias_f else None, pedestal_adu=pedestal_adu, dark_scale=k,
                               flat_header=flat_f.header if flat_f else None, flat_is_calibrated=flat_done)
        header = frame.header.copy()
        header["BUNIT"] = ("adu", "pixel values are ADU")
        for key, master, sha in (("CALDARK", dark, dark_sha), ("CALFLAT", flat, flat_sha), ("CALBIAS", bias, bias_sha)):
            if master is not None:
                header[key] = (Path(master).name[-68:], "master used for calibration")
                header[key[3:] + "SHA"] = (sha, "")
        header["PEDESTAL"] = (float(pedestal_adu), "[adu] added after calibration")
        if k is not None:
            header["DARKSCAL"] = (round(k, 6), "dark scale k in L - B - k(D - B)")
        formula = ("Light - Bias - k(Dark - Bias)" if k is not None else "Light - Dark") + (
            " / (Flat - Bias) * mean(Flat - Bias)" if flat_f else "") + " + pedestal"
        add_history(header, f"darkd calibrate: {formula}")
        if cosmetic_map is not None:
            data = apply_cosmetic(data, cosmetic_map, header)
        if full_frame:
            fill_outside_data(data, header, pedestal_adu)
        else:
            data, header = trim_to_data(data, header)
        out = out_dir / f"{Path(light).name.removesuffix('.fits').removesuffix('.fit')}{suffix}.fits"
        written.append(write_frame(out, data, header))
        log.info("calibrated %s -> %s", light, out)
    return written
