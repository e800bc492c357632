"""Encode a simulated frame as the FITS the QHY INDI driver uploads: BITPIX=16, BZERO=32768, the driver's keywords."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
from astropy.io import fits

BLOCK = 2880


def fits_bytes(data: np.ndarray, cards: Iterable[tuple[str, object, str]]) -> bytes:
    """uint16 (height, width) image + (keyword, value, comment) cards → FITS file bytes (one primary HDU).

    The data are written as big-endian int16 with BZERO=32768 (unsigned 16-bit convention), without copying through
    astropy's scaling: x ^ 0x8000 has the bit pattern of int16(x − 32768).
    """
    if data.dtype != np.uint16 or data.ndim != 2:
        raise ValueError(f"expected a 2-D uint16 image, got {data.dtype} with shape {data.shape}")
    header = fits.Header()
    header["SIMPLE"] = (True, "file does conform to FITS standard")
    header["BITPIX"] = (16, "number of bits per data pixel")
    header["NAXIS"] = (2, "number of data axes")
    header["NAXIS1"] = (int(data.shape[1]), "length of data axis 1")
    header["NAXIS2"] = (int(data.shape[0]), "length of data axis 2")
    header["EXTEND"] = (True, "FITS dataset may contain extensions")
    header["BZERO"] = (32768, "offset data range to that of unsigned short")
    header["BSCALE"] = (1, "default scaling factor")
    for key, value, comment in cards:
        header[key] = (value, comment)
    head = header.tostring().encode("ascii")
    head += b" " * (-len(head) % BLOCK)
    body = np.bitwise_xor(data, np.uint16(0x8000)).astype(">u2").tobytes()
    pad = b"\0" * (-len(body) % BLOCK)
    return head + body + pad


# --------------------------------------------------------------------------------------- CFITSIO-formatted headers
#: what CFITSIO's fits_create_img(USHORT_IMG) writes before the driver's keywords (ffphpr + the BZERO/BSCALE pair)
CFITSIO_COMMENTS = ("  FITS (Flexible Image Transport System) format is defined in 'Astronomy",
                    "  and Astrophysics', volume 376, page 359; bibcode: 2001A&A...376..359H")


@dataclass(frozen=True)
class FitsRecord:
    """One INDI::FITSRecord: a string, an integer, a double with ``decimals`` (CFITSIO ``%.*E``) or a COMMENT."""

    key: str
    value: str | int | float | None
    comment: str = ""
    decimals: int | None = None


def _value_field(value: str | int | float | bool) -> str:
    """The value part of a card as CFITSIO's ffmkky writes it (columns 11..30 for non-strings)."""
    if isinstance(value, bool):
        return ("T" if value else "F").rjust(20)
    if isinstance(value, str):
        quoted = "'" + value.replace("'", "''").ljust(8) + "'"
        return quoted.ljust(20)
    return str(value).rjust(20)


def cfitsio_double(value: float, decimals: int) -> str:
    """ffd2e: ``%.*E`` for decimals >= 0 (e.g. 120 with 3 decimals → ``1.200E+02``), ``%.*G`` for negative ones."""
    text = f"{value:.{-decimals}G}" if decimals < 0 else f"{value:.{decimals}E}"
    if "." not in text and "E" not in text:
        text += "."
    return text


def cfitsio_card(record: FitsRecord) -> str:
    """An 80-column header card formatted like fits_update_key_{str,lng,dbl} / fits_write_comment."""
    if record.value is None:
        return f"COMMENT {record.comment}"[:80].ljust(80)
    if isinstance(record.value, float) or record.decimals is not None:
        field = cfitsio_double(float(record.value), 6 if record.decimals is None else record.decimals).rjust(20)
    else:
        field = _value_field(record.value)
    card = f"{record.key:<8}= {field}"
    if record.comment:
        card += f" / {record.comment}"
    return card[:80].ljust(80)


def indi_fits_bytes(data: np.ndarray, records: Iterable[FitsRecord]) -> bytes:
    """uint16 image → FITS bytes with the header CFITSIO writes for an INDI driver (USHORT_IMG, BZERO 32768), then
    ``records`` in order, formatted as CFITSIO formats them (doubles in E notation with the record's decimals)."""
    if data.dtype != np.uint16 or data.ndim != 2:
        raise ValueError(f"expected a 2-D uint16 image, got {data.dtype} with shape {data.shape}")
    head = [FitsRecord("SIMPLE", True, "file does conform to FITS standard"),
            FitsRecord("BITPIX", 16, "number of bits per data pixel"),
            FitsRecord("NAXIS", 2, "number of data axes"),
            FitsRecord("NAXIS1", int(data.shape[1]), "length of data axis 1"),
            FitsRecord("NAXIS2", int(data.shape[0]), "length of data axis 2"),
            FitsRecord("EXTEND", True, "FITS dataset may contain extensions"),
            *(FitsRecord("COMMENT", None, text) for text in CFITSIO_COMMENTS),
            FitsRecord("BZERO", 32768, "offset data range to that of unsigned short"),
            FitsRecord("BSCALE", 1, "default scaling factor")]
    cards = [cfitsio_card(r) for r in (*head, *records)]
    text = "".join(cards) + "END".ljust(80)
    header = text.encode("ascii")
    header += b" " * (-len(header) % BLOCK)
    body = np.bitwise_xor(data, np.uint16(0x8000)).astype(">u2").tobytes()
    return header + body + b"\0" * (-len(body) % BLOCK)
