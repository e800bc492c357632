"""Master calibration frames: bias, dark, flat and flat-dark (``darkd master``).

* Bias, dark, flat-dark: integrated with no normalization and Winsorized sigma clipping (4σ low, 3σ high). The dark is
  **not** bias-subtracted and not scaled: on CMOS cameras with optical-black clamping and amp glow the dark is only
  valid as a whole, at its own exposure and temperature.
* Flat: each flat has the master bias (or, when given, the matching master flat-dark) subtracted on the fly, then the
  flats are integrated with multiplicative normalization (scaled to the first flat's median).

Inputs must agree on the acquisition keys (exposure — except for flats —, gain, offset, binning, read mode, set point,
and measured temperatures within ``temperature_tolerance_c`` of each other); otherwise ``ValueError`` lists every
mismatch.

Per-frame preprocessing (``overscan=``, ``trim=``; ``darkd master --overscan none|mean|median|rows --trim``) is
off by default and, when asked for, applied to every input before integration (see
:class:`calib.geometry.Preprocessing` for why ``none`` is right for optical-black-clamped CMOS cameras and when the
overscan helps: ADC reference drift during fast bursts). The master's header records ``OVSCMETH``, ``OVSCSEC``,
``TRIMMED`` and the per-frame levels subtracted (``OVSCLEV`` mean, ``OVSCLMIN``/``OVSCLMAX``/``OVSCLSD``, ADU);
lights must later get the same treatment (``calibrate_files`` refuses otherwise).

Every master carries a defect map (``defects=True``, the default): an image extension ``MASK`` of ``uint8`` bit
flags with its thresholds and counts in its header (:mod:`calib.defects`; ``CCDData.read`` takes it as the mask). For
a dark or flat-dark, ``defect_bias`` (a master bias, path or ADU array) makes the hot-pixel test run on ``D − B``; it
is not subtracted from the master. The counts join the statistics (``defects_hot``, ``defects_rts``, …).

Statistics of the master, over ``DATASEC`` when the header has one, else the whole image (ADU):
``mean_adu`` = mean; ``noise_adu`` = 1.4826·MAD (robust σ, includes fixed pattern); ``hot_pixels`` = number of pixels
above ``median + 5·noise_adu``; ``rejected_fraction`` = fraction of input values rejected; ``n_frames``.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
from astropy.io import fits

from calib.defects import DefectThresholds, defect_hdu, defect_stats, master_defect_map, stack_spread_adu
from calib.frames import FrameError, read_frame, read_header, write_frame
from calib.geometry import Preprocessing, prepare_frame, requested_treatment, treatment_of
from calib.integration import IntegrationParams, integrate, write_integration
from calib.normalization import MAD_TO_SIGMA
from calib.provenance import add_history, file_sha256
from calib.sections import Section, data_region

log = logging.getLogger(__name__)

KINDS = ("bias", "dark", "flat", "flat-dark")
# IMAGETYP values PixInsight's WBPP takes as masters: it lower-cases the value, removes the first space and accepts
# "masterbias", "masterdark", "masterflat" (BPP-Helper.js imageTypeFromKeyword / isMasterFromKeyword, WBPP 2.x-3.x).
# "Master Flat Dark" would become "masterflat dark" (unknown), so a flat-dark is a "Master Dark" — WBPP matches darks
# to flats by exposure — and DKMASTER keeps darkd's kind. Siril reads IMAGETYP as free text (src/io/fits_keywords.c)
# and takes masters by path in `preprocess`, so these values suit it too.
IMAGETYP = {"bias": "Master Bias", "dark": "Master Dark", "flat": "Master Flat", "flat-dark": "Master Dark"}
HOT_SIGMA = 5.0
# (label, header aliases) of the keys every input of a master must share.
_SHARED_KEYS = (("exposure", ("EXPTIME", "EXPOSURE")), ("gain", ("GAIN",)), ("offset", ("OFFSET",)),
                ("x binning", ("XBINNING",)), ("y binning", ("YBINNING",)), ("read mode", ("READMODE",)),
                ("set point", ("SET-TEMP",)))


@dataclass
class MasterResult:
    """The written master: its path, header and statistics (see the module docstring)."""

    path: Path
    header: fits.Header
    stats: dict[str, float]
    overscan_levels_adu: list[float] = field(default_factory=list)


def _value(header: fits.Header, aliases: Sequence[str]) -> Any:
    for key in aliases:
        if key in header:
            return header[key]
    return None


def check_inputs_consistent(headers: Sequence[tuple[str, fits.Header]], kind: str,
                            temperature_tolerance_c: float = 1.0) -> None:
    """Raise ``ValueError`` listing every acquisition key on which the inputs of one master disagree."""
    problems = []
    for label, aliases in _SHARED_KEYS:
        if label == "exposure" and kind == "flat":
            continue
        seen: dict[Any, list[str]] = {}
        for name, header in headers:
            value = _value(header, aliases)
            if isinstance(value, float):
                value = round(value, 6)
            seen.setdefault(value, []).append(Path(name).name)
        if len(seen) > 1:
            parts = [f"{v!r} in {', '.join(names[:3])}{' ...' if len(names) > 3 else ''}" for v, names in seen.items()]
            problems.append(f"{label} differs: {'; '.join(parts)}")
    temps = [(Path(n).name, h["CCD-TEMP"]) for n, h in headers if isinstance(h.get("CCD-TEMP"), int | float)]
    if temps:
        lo, hi = min(temps, key=lambda t: t[1]), max(temps, key=lambda t: t[1])
        if hi[1] - lo[1] > temperature_tolerance_c:
            problems.append(f"sensor temperature spread {hi[1] - lo[1]:.2f} C exceeds {temperature_tolerance_c} C "
                            f"({lo[0]} at {lo[1]} C, {hi[0]} at {hi[1]} C)")
    if problems:
        raise ValueError("inputs of the master do not match: " + "; ".join(problems))


def master_stats(data: np.ndarray, header: fits.Header, rejected_fraction: float, n_frames: int) -> dict[str, float]:
    """Statistics of a master (ADU) over DATASEC (or the whole image); see the module docstring."""
    region = data_region(data, header)
    sample = region[::2, ::2].astype(np.float64)
    median = float(np.median(sample))
    noise = MAD_TO_SIGMA * float(np.median(np.abs(sample - median)))
    hot = int(np.count_nonzero(region > median + HOT_SIGMA * noise)) if noise > 0 else 0
    return {"mean_adu": float(region.mean(dtype=np.float64)), "noise_adu": noise, "hot_pixels": hot,
            "rejected_fraction": float(rejected_fraction), "n_frames": int(n_frames)}


def _load_master(master: str | os.PathLike[str] | np.ndarray, what: str) -> tuple[np.ndarray, fits.Header | None, str]:
    if isinstance(master, np.ndarray):
        return master.astype(np.float32, copy=False), None, f"{what} (array)"
    frame = read_frame(master)
    return frame.data, frame.header, str(master)


def _check_calibration_master(master_header: fits.Header | None, flat_header: fits.Header, what: str) -> None:
    if master_header is None:
        return
    problems = []
    for label, aliases in _SHARED_KEYS:
        if label in ("exposure", "set point"):
            continue
        a, b = _value(master_header, aliases), _value(flat_header, aliases)
        if a is not None and b is not None and a != b:
            problems.append(f"{label}: {what} has {a!r}, flats have {b!r}")
    if problems:
        raise ValueError(f"{what} does not match the flats: " + "; ".join(problems))


def _prepare_inputs(paths: Sequence[str | os.PathLike[str]], prep: Preprocessing,
                    tmp_dir: Path) -> tuple[list[Path], list[float]]:
    """Preprocess every input into a float32 file ``tmp_dir/<index>/<name>`` (one frame in memory at a time)."""
    out, levels = [], []
    for i, src in enumerate(paths):
        frame = read_frame(src)
        data, header, level = prepare_frame(frame.data, frame.header, prep)
        target = tmp_dir / f"{i:04d}"
        target.mkdir()
        out.append(write_frame(target / Path(src).name, data, header))
        if level is not None:
            levels.append(level)
    return out, levels


def _record_treatment(header: fits.Header, prep: Preprocessing, first: fits.Header, levels: Sequence[float]) -> None:
    method, trimmed = requested_treatment(prep, first)
    header["OVSCMETH"] = (method, "darkd overscan treatment of each input")
    if trimmed:
        header["TRIMMED"] = (trimmed, "section kept by darkd trim (each input)")
    if prep.overscan != "none":
        header["OVSCSEC"] = (Section.parse(str(prep.biassec or first.get("BIASSEC"))).iraf, "overscan section used")
        lv = np.asarray(levels, dtype=np.float64)
        header["OVSCLEV"] = (round(float(lv.mean()), 4), "[adu] mean overscan level subtracted per input")
        header["OVSCLMIN"] = (round(float(lv.min()), 4), "[adu] lowest per-input overscan level")
        header["OVSCLMAX"] = (round(float(lv.max()), 4), "[adu] highest per-input overscan level")
        header["OVSCLSD"] = (round(float(lv.std()), 4), "[adu] std of the per-input overscan levels")
    if prep.active:
        add_history(header, f"darkd preprocessing of each input: overscan {method}"
                            + (f" from {header['OVSCSEC']}, levels {header['OVSCLMIN']}..{header['OVSCLMAX']} ADU"
                               if prep.overscan != "none" else "") + (f"; trimmed to {trimmed}" if trimmed else ""))


def master_defects_hdu(kind: str, data: np.ndarray, header: fits.Header, paths: Sequence[str | os.PathLike[str]],
                       bias: str | os.PathLike[str] | np.ndarray | None = None,
                       thresholds: DefectThresholds | None = None,
                       ladder: Sequence[tuple[float, str | os.PathLike[str]]] = ()
                       ) -> tuple[fits.ImageHDU, dict[str, int]]:
    """The ``MASK`` extension of a new master and its counts (see the module docstring and :mod:`calib.defects`).

    The stack's spread (RTS test) comes from a subsample of ``paths`` (bias, dark, flat-dark; at least 3 frames,
    untrimmed). ``ladder``: ``(exposure_s, path)`` of master darks of the same key at other exposures (WARM test,
    with ``bias``).
    """
    spread, n_spread = None, 0
    if kind != "flat" and len(paths) >= 3:
        spread, n_spread = stack_spread_adu(paths)
        if spread.shape != data.shape:  # trimmed inputs: the raw frames' spread does not map onto the master
            spread, n_spread = None, 0
    reference = None
    if bias is not None and kind in ("dark", "flat-dark"):
        reference, _, _ = _load_master(bias, "master bias")
        if reference.shape != data.shape:
            log.warning("master bias %s is %s, the %s %s: defect map without D - B", bias, reference.shape, kind,
                        data.shape)
            reference, bias = None, None
    cards: list[tuple[str, object, str]] = [("DFNSPRD", n_spread, "frames sampled for the RTS spread (0: no test)")]
    if bias is not None and not isinstance(bias, np.ndarray):
        cards.append(("DFBIAS", Path(bias).name[-68:], "master bias of the HOT test"))
    steps: list[tuple[float, np.ndarray]] = []
    if kind == "dark" and reference is not None:
        for t_s, other_path in ladder:
            other, _, _ = _load_master(other_path, "ladder dark")
            if other.shape == data.shape:
                steps.append((float(t_s), other))
            else:
                log.warning("ladder dark %s is %s, the dark %s: left out of the WARM test", other_path, other.shape,
                            data.shape)
    exposure = header.get("EXPTIME")
    found = master_defect_map(kind, data, header, bias=reference, spread_adu=spread, thresholds=thresholds,
                              cards=cards, ladder=steps,
                              exposure_s=float(exposure) if isinstance(exposure, int | float) else None)
    return defect_hdu(found), defect_stats(found)


def build_master(kind: str, paths: Sequence[str | os.PathLike[str]], *, output: str | os.PathLike[str],
                 bias: str | os.PathLike[str] | np.ndarray | None = None,
                 flat_dark: str | os.PathLike[str] | np.ndarray | None = None,
                 params: IntegrationParams | None = None, extra_header: Mapping[str, Any] | fits.Header | None = None,
                 temperature_tolerance_c: float = 1.0, overscan: str = "none", trim: bool = False,
                 biassec: str | None = None, trimsec: str | None = None, overscan_fit_order: int = 0,
                 defects: bool = True, defect_bias: str | os.PathLike[str] | np.ndarray | None = None,
                 defect_ladder: Sequence[tuple[float, str | os.PathLike[str]]] = ()) -> MasterResult:
    """Integrate ``paths`` into a master of ``kind`` and write it atomically to ``output``.

    ``bias``/``flat_dark`` (path to a master, or an array in ADU) are used for flats only; darks are never
    bias-subtracted. ``extra_header`` cards (e.g. the library key) are added to the master's header.
    ``overscan`` (``none`` default | ``mean`` | ``median`` | ``rows``) and ``trim`` preprocess every input before
    integration (:class:`calib.geometry.Preprocessing`; ``biassec``/``trimsec`` override the header sections);
    a master bias/flat-dark used for flats must have had the same treatment.
    Raises ``ValueError`` (mismatched inputs, bad arguments) or :class:`~calib.frames.FrameError` (bad files).
    """
    if kind not in KINDS:
        raise ValueError(f"unknown master kind {kind!r}; choose one of {', '.join(KINDS)}")
    if not paths:
        raise ValueError(f"no input frames for the master {kind}")
    if kind != "flat" and (bias is not None or flat_dark is not None):
        raise ValueError(f"a master {kind} is not bias- or dark-subtracted; pass bias/flat_dark only for flats")
    prep = Preprocessing(overscan, trim, biassec, trimsec, overscan_fit_order)
    headers = [(str(p), read_header(p)) for p in paths]
    check_inputs_consistent(headers, kind, temperature_tolerance_c)
    wanted = requested_treatment(prep, headers[0][1])
    shape = (int(headers[0][1]["NAXIS2"]), int(headers[0][1]["NAXIS1"]))
    if wanted[1] and wanted[1] != "?":
        shape = Section.parse(wanted[1]).shape
    subtract = None
    cal_cards: list[tuple[str, str, str]] = []
    if kind == "flat":
        what = "master flat-dark" if flat_dark is not None else "master bias"
        master = flat_dark if flat_dark is not None else bias
        if master is None:
            raise ValueError("a master flat needs a master bias (or a matching master flat-dark) to subtract")
        subtract, master_header, name = _load_master(master, what)
        _check_calibration_master(master_header, headers[0][1], what)
        if master_header is not None and treatment_of(master_header) != wanted:
            raise ValueError(f"{what} {Path(name).name} was made with overscan/trim {treatment_of(master_header)}, "
                             f"the flats get {wanted}: build both with the same --overscan/--trim")
        digest = file_sha256(name) if master_header is not None else "array"
        key = "CALFDARK" if flat_dark is not None else "CALBIAS"
        cal_cards.append((key, Path(name).name[-68:], "subtracted from each flat"))
        cal_cards.append(("FDRKSHA" if flat_dark is not None else "BIASSHA", digest, ""))
        default = IntegrationParams(normalization="multiplicative")
    else:
        default = IntegrationParams()
    params = params or default
    if subtract is not None and subtract.shape != shape:
        raise FrameError(f"{cal_cards[0][1]} is {subtract.shape[1]}x{subtract.shape[0]}, the flats are "
                         f"{shape[1]}x{shape[0]}" + (" after trimming" if wanted[1] else ""))
    levels: list[float] = []
    if prep.active:
        Path(output).parent.mkdir(parents=True, exist_ok=True)  # the preprocessed inputs sit beside the output
        with tempfile.TemporaryDirectory(prefix=".darkd-prep-", dir=Path(output).parent) as tmp:
            prepared, levels = _prepare_inputs(paths, prep, Path(tmp))
            result = integrate(prepared, params, subtract=subtract)
    else:
        result = integrate(paths, params, subtract=subtract)
    header = result.header
    header["IMAGETYP"] = (IMAGETYP[kind], "darkd master frame")
    header["DKMASTER"] = (kind, "darkd master kind: bias, dark, flat, flat-dark")
    for key, value, comment in cal_cards:
        header[key] = (value, comment)
    _record_treatment(header, prep, headers[0][1], levels)
    stats = master_stats(result.data, header, result.summary["rejected_fraction"], len(paths))
    header["MEANADU"] = (round(stats["mean_adu"], 4), "[adu] mean of the master (DATASEC)")
    header["NOISEADU"] = (round(stats["noise_adu"], 4), "[adu] robust sigma 1.4826*MAD (DATASEC)")
    header["HOTPIX"] = (stats["hot_pixels"], f"pixels above median + {HOT_SIGMA:g} sigma")
    for key, value in (extra_header.items() if extra_header is not None else ()):
        header[key] = value
    detail = f"subtracting {cal_cards[0][1]} from each flat, " if cal_cards else ""
    add_history(header, f"darkd master {kind}: {detail}{len(paths)} frames, params "
                        f"{dataclasses.asdict(params)}")
    record_interchange_keys(header, [h for _, h in headers])
    extra_hdus = []
    if defects:
        mask_hdu, counts = master_defects_hdu(kind, result.data, header, paths, defect_bias, ladder=defect_ladder)
        extra_hdus.append(mask_hdu)
        stats.update(counts)
        header["DEFECTS"] = (mask_hdu.header["NDEFECTS"], "flagged pixels in the MASK extension")
    if kind == "flat":
        normalise_flat(result.data, header)
    path = write_integration(result, output, extra_hdus)
    return MasterResult(path, header, stats, levels)


# ------------------------------------------------------------------ header keys other tools read (Siril, WBPP, ccdproc)
def _parse_date(value: object) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value.strip().removesuffix("Z"))
    except ValueError:
        return None


def _fits_date(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3]


def record_interchange_keys(header: fits.Header, inputs: Sequence[fits.Header]) -> None:
    """``BUNIT`` and the observation span of the inputs, for tools that read a master as their own.

    ``DATE-OBS`` = earliest input ``DATE-OBS``; ``DATE-END`` = latest input end (its ``DATE-END``, else
    ``DATE-OBS + EXPTIME``), both UTC ISO 8601. ``BUNIT = 'adu'`` (astropy ``CCDData.read`` needs a unit; the master
    flat is rewritten to ``adu/adu`` by :func:`normalise_flat`).
    """
    header["BUNIT"] = ("adu", "pixel values are ADU")
    starts, ends = [], []
    for h in inputs:
        start = _parse_date(h.get("DATE-OBS"))
        if start is None:
            continue
        starts.append(start)
        exposure = h.get("EXPTIME", h.get("EXPOSURE", 0.0))
        end = _parse_date(h.get("DATE-END"))
        ends.append(end or start + timedelta(seconds=float(exposure) if isinstance(exposure, int | float) else 0.0))
    if starts:
        header["DATE-OBS"] = (_fits_date(min(starts)), "[UTC] start of the first input frame")
        header["DATE-END"] = (_fits_date(max(ends)), "[UTC] end of the last input frame")


def normalise_flat(data: np.ndarray, header: fits.Header) -> float:
    """Scale a master flat (``Flat − Bias``, ADU) in place to mean 1 over ``DATASEC``; returns the mean (ADU).

    ``flat' = (Flat − Bias) / FLATNORM`` with ``FLATNORM = mean(Flat − Bias)`` over ``DATASEC`` (the whole image
    without one); pixels outside ``DATASEC`` (overscan, optical-black rows: no illumination) are set to 1, so the
    whole-frame mean is 1 as well and a tool that normalises over the whole frame (ccdproc ``flat_correct``, Siril)
    gets the same result as darkd. Calibration with it is unchanged in ADU: ``(L − D)/flat' × mean(flat')`` =
    ``(L − D)/(F − B) × mean(F − B)``. Header: ``FLATNORM`` (ADU), ``BUNIT = 'adu/adu'`` (dimensionless, a unit
    astropy parses), HISTORY.
    """
    region = data_region(data, header)
    norm = float(region.mean(dtype=np.float64))
    if not np.isfinite(norm) or norm <= 0:
        raise ValueError(f"the master flat's mean over DATASEC is {norm:g} ADU: cannot normalise it")
    if region.shape != data.shape:  # data_region found a DATASEC smaller than the frame
        inside = np.zeros(data.shape, dtype=bool)
        inside[Section.parse(str(header["DATASEC"])).slices] = True
        data[inside] /= np.float32(norm)
        data[~inside] = 1.0
    else:
        data /= np.float32(norm)
    header["FLATNORM"] = (round(norm, 6), "[adu] DATASEC mean of Flat-Bias, divided out")
    header["BUNIT"] = ("adu/adu", "relative response: mean 1 over DATASEC")
    add_history(header, f"darkd flat: divided by FLATNORM = {norm:.4f} ADU (mean over DATASEC); pixels outside "
                        "DATASEC set to 1")
    return norm
