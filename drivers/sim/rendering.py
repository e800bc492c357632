"""A simulated frame as the QHY INDI driver delivers it: sensor model → crop → bin → the driver's FITS cards.

INDI-free, so that both the INDI driver (:mod:`drivers.sim.driver`) and the in-process camera
(:mod:`drivers.sim.inprocess`) render frames, and write their headers, with this one piece of code.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

import numpy as np

from drivers.sim.fits_image import fits_bytes
from drivers.sim.physics import PIXEL_SIZE_UM, SensorModel

IMAGETYP = {"light": "Light Frame", "bias": "Bias Frame", "dark": "Dark Frame", "flat": "Flat Frame"}
FRAME_KEY = {"light": "Light", "bias": "Bias", "dark": "Dark", "flat": "Flat Field"}

Card = tuple[str, object, str]


@dataclass
class ExposureRequest:
    """Everything a frame depends on, frozen at exposure start."""

    frame_type: str
    exposure_s: float
    gain: float
    offset: float
    read_mode: int
    usb_traffic: int
    amp_glow: str
    overscan_include: bool
    binning: int
    roi: tuple[int, int, int, int]
    light_leak_e_per_s: float
    start_utc: datetime
    extra_cards: list[Card] = field(default_factory=list)


def bin_frame(data: np.ndarray, binning: int) -> np.ndarray:
    """Software binning (block mean, rounded, keeps the 16-bit scale); partial blocks at the edges are dropped."""
    if binning <= 1:
        return data
    h, w = (data.shape[0] // binning) * binning, (data.shape[1] // binning) * binning
    blocks = data[:h, :w].reshape(h // binning, binning, w // binning, binning)
    binned: np.ndarray = np.rint(blocks.mean(axis=(1, 3), dtype=np.float32)).astype(np.uint16)
    return binned


def driver_cards(request: ExposureRequest, reported_temperature_c: float, instrument: str) -> list[Card]:
    """The FITS cards the (simulated) QHY driver writes for a frame, in its order."""
    pixel_um = PIXEL_SIZE_UM * request.binning
    return [
        ("ROWORDER", "TOP-DOWN", "Order of the rows in image array"),
        ("INSTRUME", instrument, "CCD Name"),
        ("EXPTIME", float(request.exposure_s), "Total Exposure Time (s)"),
        ("DARKTIME", float(request.exposure_s), "Total Dark Exposure Time (s)"),
        ("CCD-TEMP", round(reported_temperature_c, 2), "CCD Temperature (Celsius)"),
        ("PIXSIZE1", pixel_um, "Pixel Size 1 (microns)"),
        ("PIXSIZE2", pixel_um, "Pixel Size 2 (microns)"),
        ("XBINNING", request.binning, "Binning factor in width"),
        ("YBINNING", request.binning, "Binning factor in height"),
        ("XPIXSZ", pixel_um, "X binned pixel size in microns"),
        ("YPIXSZ", pixel_um, "Y binned pixel size in microns"),
        ("FRAME", FRAME_KEY[request.frame_type], "Frame Type"),
        ("IMAGETYP", IMAGETYP[request.frame_type], "Frame Type"),
        ("GAIN", int(request.gain), "Gain"),
        ("OFFSET", int(request.offset), "Offset"),
        ("READMODE", request.read_mode, "Read mode"),
        ("USBTRAF", request.usb_traffic, "USB traffic"),
        ("AMPGLOW", request.amp_glow, "Amp glow control (auto|on|off)"),
        ("DATE-OBS", request.start_utc.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3], "UTC start date of observation"),
        *request.extra_cards,
    ]


def render_frame(model: SensorModel, request: ExposureRequest, temperature_c: float, drift_adu: float,
                 reported_temperature_c: float, rng: np.random.Generator,
                 instrument: str) -> tuple[np.ndarray, list[Card]]:
    """Sensor model → crop to the ROI → bin; returns the uint16 image and the driver's cards."""
    data = model.expose(request.frame_type, request.exposure_s, temperature_c, request.gain, request.offset,
                        amp_glow=request.amp_glow, overscan_include=request.overscan_include,
                        light_leak_e_per_s=request.light_leak_e_per_s, adc_drift_adu=drift_adu, rng=rng)
    x, y, w, h = request.roi
    if (x, y, w, h) != (0, 0, data.shape[1], data.shape[0]):
        data = data[y:y + h, x:x + w]
    data = bin_frame(data, request.binning)
    return np.ascontiguousarray(data), driver_cards(request, reported_temperature_c, instrument)


def render_fits(model: SensorModel, request: ExposureRequest, temperature_c: float, drift_adu: float,
                reported_temperature_c: float, rng: np.random.Generator, instrument: str) -> bytes:
    """:func:`render_frame` encoded as the FITS BLOB the driver uploads."""
    data, cards = render_frame(model, request, temperature_c, drift_adu, reported_temperature_c, rng, instrument)
    return fits_bytes(data, cards)
