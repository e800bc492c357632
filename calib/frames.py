"""FITS frame I/O: read with a clear error for bad files, write atomically (temporary file, fsync, rename).

Pixel values are ADU. 16-bit camera frames are stored as ``BITPIX=16`` with ``BZERO=32768``; masters and calibrated
frames as 32-bit float. Tile-compressed FITS (``CompImageHDU``) is read transparently.

Every file darkd writes carries ``CHECKSUM``/``DATASUM`` in each HDU (the FITS checksum convention, astropy
``checksum=True``; :func:`fits_checksum_problems` re-checks them), and a header with a string value longer than one
card (continued on ``CONTINUE`` cards) gets ``LONGSTRN = 'OGIP 1.0'``, the keyword of the HEASARC long-string
convention that fitsverify asks for.
"""

from __future__ import annotations

import contextlib
import errno
import io
import os
import tempfile
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
from astropy.io import fits


class FrameError(ValueError):
    """A FITS file that cannot be used as a frame (missing, truncated, no image, wrong shape)."""


@dataclass
class Frame:
    """An image (ADU) with its FITS header and where it came from."""

    data: np.ndarray
    header: fits.Header
    path: Path | None = None

    @property
    def shape(self) -> tuple[int, int]:
        rows, cols = self.data.shape
        return int(rows), int(cols)


def _image_hdu(hdul: fits.HDUList, path: Path) -> fits.ImageHDU | fits.PrimaryHDU | fits.CompImageHDU:
    for hdu in hdul:
        if isinstance(hdu, fits.PrimaryHDU | fits.ImageHDU | fits.CompImageHDU) and hdu.data is not None:
            return hdu
    raise FrameError(f"{path}: no image data in any HDU")


def read_header(path: str | os.PathLike[str]) -> fits.Header:
    """Read only the header of the first image HDU (cheap: no pixel data is decoded)."""
    p = Path(path)
    try:
        with fits.open(p, memmap=True, lazy_load_hdus=True) as hdul:
            for hdu in hdul:
                if hdu.header.get("NAXIS", 0) >= 2 or isinstance(hdu, fits.CompImageHDU):
                    return hdu.header.copy()
    except FileNotFoundError as exc:
        raise FrameError(f"{p}: file not found") from exc
    except (OSError, ValueError, TypeError) as exc:
        raise FrameError(f"{p}: not a readable FITS file ({exc})") from exc
    raise FrameError(f"{p}: no image HDU")


def read_frame(path: str | os.PathLike[str], dtype: np.dtype | type | None = np.float32) -> Frame:
    """Read the first image HDU of ``path``.

    ``dtype`` converts the scaled pixel values (BZERO/BSCALE applied) to that type; ``None`` keeps the stored type.
    Raises :class:`FrameError` for a missing, truncated or image-less file — never a bare astropy exception.
    """
    p = Path(path)
    try:
        with fits.open(p, memmap=False) as hdul:
            hdu = _image_hdu(hdul, p)
            data = hdu.data
            if data.ndim != 2:
                raise FrameError(f"{p}: expected a 2-D image, found {data.ndim}-D with shape {data.shape}")
            expected = int(abs(hdu.header.get("BITPIX", 16)) // 8) * data.size
            if not isinstance(hdu, fits.CompImageHDU) and data.nbytes < expected:
                raise FrameError(f"{p}: truncated image data")
            out = np.array(data, dtype=dtype) if dtype is not None else np.array(data)
            header = hdu.header.copy()
    except FrameError:
        raise
    except FileNotFoundError as exc:
        raise FrameError(f"{p}: file not found") from exc
    except (OSError, ValueError, TypeError, IndexError) as exc:
        raise FrameError(f"{p}: not a readable FITS image ({exc})") from exc
    return Frame(out, header, p)


class DiskFullError(OSError):
    """No space left on the device (``ENOSPC``, or ``EDQUOT`` for a quota) while writing ``filename``.

    Raised by :func:`atomic_file`, after it has removed its temporary file: nothing was written and an older file at
    the target path, if any, is unchanged.
    """


_DISK_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})


def _disk_full_cause(exc: BaseException) -> OSError | None:
    """The ``ENOSPC``/``EDQUOT`` error behind ``exc``, if any.

    Walks ``__cause__``/``__context__`` because writers re-raise it in other forms: astropy turns it into a plain
    ``OSError`` without ``errno``, and a file closed after a failed write raises a second one.
    """
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno in _DISK_FULL_ERRNOS:
            return current
        current = current.__cause__ or current.__context__
    return None


def _open_part(tmp: str, fd: int) -> BinaryIO:
    """The writable file object over ``fd``, the descriptor of the temporary file ``tmp``.

    Opened under its path name (``os.fdopen`` would name it by the descriptor number), so writers that look at the
    name find the folder: astropy's disk-full handler otherwise fails with ``'list' object has no attribute '_file'``.
    """
    return open(tmp, "wb", opener=lambda _path, _flags: fd)


def _fsync_dir(folder: Path) -> None:
    dir_fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike[str]) -> Iterator[BinaryIO]:
    """Open a temporary file next to ``path`` for writing; on success fsync it and rename it to ``path``.

    A crash leaves either the old file or the new one, never half of one (at worst a ``.<name>.*.part`` file that
    ``darkd library verify --remove-partial`` clears). On any error the temporary file is removed and the error
    propagates; a full disk (or quota) is raised as :class:`DiskFullError` naming ``path``, whatever form the writer
    gave it.
    """
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".part", dir=p.parent)
    try:
        with _open_part(tmp, fd) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        Path(tmp).replace(p)
        _fsync_dir(p.parent)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        full = _disk_full_cause(exc)
        if full is None or isinstance(exc, DiskFullError):
            raise
        assert full.errno is not None  # narrowed by _disk_full_cause
        raise DiskFullError(full.errno, f"{os.strerror(full.errno).lower()}; nothing was written", str(p)) from exc


def atomic_write_bytes(path: str | os.PathLike[str], payload: bytes) -> Path:
    """Write ``payload`` to ``path`` atomically (see :func:`atomic_file`)."""
    with atomic_file(path) as fh:
        fh.write(payload)
    return Path(path)


# A string value longer than this many characters does not fit on one card and is continued on CONTINUE cards.
_CARD_STRING_CHARS = 68
LONGSTRN = ("OGIP 1.0", "The HEASARC Long String Convention may be used")


def mark_long_strings(header: fits.Header) -> None:
    """Add ``LONGSTRN`` (the long-string convention keyword) when a string value needs ``CONTINUE`` cards."""
    long_value = any(isinstance(value, str) and len(value.replace("'", "''")) > _CARD_STRING_CHARS
                     for key, value in header.items() if key not in ("HISTORY", "COMMENT", ""))
    if long_value and "LONGSTRN" not in header:
        header.insert(0, ("LONGSTRN", *LONGSTRN))


def fits_checksum_problems(path: str | os.PathLike[str]) -> list[str]:
    """The FITS checksum warnings for ``path`` (``CHECKSUM``/``DATASUM`` that do not match the bytes); ``[]`` if all
    HDUs that carry them match. HDUs without the keywords are not checked (see :func:`has_fits_checksums`)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with fits.open(path, checksum=True, memmap=False) as hdul:
            for hdu in hdul:
                _ = hdu.data  # the data checksum (DATASUM) is verified when the data are read
    return [str(w.message) for w in caught if "checksum" in str(w.message).lower()
            or "datasum" in str(w.message).lower()]


def has_fits_checksums(path: str | os.PathLike[str]) -> bool:
    """True when every HDU of ``path`` has ``CHECKSUM`` and ``DATASUM``."""
    with fits.open(path, memmap=True, lazy_load_hdus=True) as hdul:
        return all("CHECKSUM" in hdu.header and "DATASUM" in hdu.header for hdu in hdul)


def to_hdulist(data: np.ndarray, header: fits.Header | None = None, *, bitpix16: bool = False,
               extra_hdus: list[fits.ImageHDU] | None = None) -> fits.HDUList:
    """Build an HDUList. ``bitpix16`` stores ADU as unsigned 16-bit (``BITPIX=16``, ``BZERO=32768``), else float32.

    Adds ``LONGSTRN`` when needed (:func:`mark_long_strings`). Write it with ``checksum=True`` (as
    :func:`write_frame` and :func:`fits_bytes` do)."""
    hdr = header.copy() if header is not None else fits.Header()
    for key in ("BITPIX", "NAXIS", "NAXIS1", "NAXIS2", "BZERO", "BSCALE", "EXTEND", "SIMPLE", "CHECKSUM", "DATASUM"):
        hdr.remove(key, ignore_missing=True, remove_all=True)
    mark_long_strings(hdr)
    if bitpix16 and data.dtype == np.uint16:
        primary = fits.PrimaryHDU(data, header=hdr, uint=True)
    elif bitpix16:
        arr = np.clip(np.rint(data), 0, 65535).astype(np.uint16)
        primary = fits.PrimaryHDU(arr, header=hdr, uint=True)
    else:
        primary = fits.PrimaryHDU(np.asarray(data, dtype=np.float32), header=hdr)
    return fits.HDUList([primary, *(extra_hdus or [])])


def write_frame(path: str | os.PathLike[str], data: np.ndarray, header: fits.Header | None = None, *,
                bitpix16: bool = False, extra_hdus: list[fits.ImageHDU] | None = None) -> Path:
    """Write a frame atomically (see :func:`atomic_write_bytes`). Returns the final path."""
    return atomic_write_bytes(path, fits_bytes(data, header, bitpix16=bitpix16, extra_hdus=extra_hdus))


def fits_bytes(data: np.ndarray, header: fits.Header | None = None, *, bitpix16: bool = False,
               extra_hdus: list[fits.ImageHDU] | None = None) -> bytes:
    """The FITS file :func:`write_frame` writes, as bytes (with ``CHECKSUM``/``DATASUM`` in every HDU)."""
    buf = io.BytesIO()
    to_hdulist(data, header, bitpix16=bitpix16, extra_hdus=extra_hdus).writeto(buf, output_verify="silentfix",
                                                                              checksum=True)
    return buf.getvalue()
