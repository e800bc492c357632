"""Encode a simulated frame as the FITS the QHY INDI driver uploads: BITPIX=16, BZERO=32768, the driver's keywords."""

from __future__ import annotations

from collections.abc import Iterable

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
