"""FITS frame I/O: read with a clear error for bad files, write atomically (temporary file, fsync, rename).

Pixel values are ADU. 16-bit camera frames are stored as ``BITPIX=16`` with ``BZERO=32768``; masters and calibrated
frames as 32-bit float. Tile-compressed FITS (``CompImageHDU``) is read transparently: every reader finds the image
through :func:`image_hdu` (the primary HDU of a plain file; HDU 1 of a compressed one, whose primary is empty).

Library frames may be written Rice tile-compressed (``compression="rice"``, the FITS tiled-image convention with
``ZCMPTYPE = 'RICE_1'``, one tile per row, as ``fpack`` writes by default): integer data only, so the compression is
lossless (quantisation is applied to floating-point images only, and darkd never compresses those — a master is
float32 and is always written uncompressed, since quantising it would change its values).

Every file darkd writes carries ``CHECKSUM``/``DATASUM`` in each HDU (the FITS checksum convention, astropy
``checksum=True``; :func:`fits_checksum_problems` re-checks them), and a header with a string value longer than one
card (continued on ``CONTINUE`` cards) gets ``LONGSTRN = 'OGIP 1.0'``, the keyword of the HEASARC long-string
convention that fitsverify asks for.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import io
import mmap
import os
import tempfile
import warnings
from collections.abc import Iterator
from concurrent.futures import Executor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, cast

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


COMPRESSIONS = ("none", "rice")
#: the FITS tile-compression algorithm of each ``compression`` setting (``None``: a plain, uncompressed image)
_ALGORITHMS: dict[str, str | None] = {"none": None, "rice": "RICE_1"}


def check_compression(compression: str) -> str:
    """``compression`` if it is one of :data:`COMPRESSIONS`, else ``ValueError``."""
    if compression not in _ALGORITHMS:
        raise ValueError(f"unknown compression {compression!r}; choose one of {', '.join(COMPRESSIONS)}")
    return compression


def is_image_hdu(hdu: object) -> bool:
    """True for an HDU holding an image of at least 2 axes: a tile-compressed image, or a primary/image HDU with
    ``NAXIS >= 2`` (decided from the header alone: no pixel data is read)."""
    if isinstance(hdu, fits.CompImageHDU):
        return True
    return isinstance(hdu, fits.PrimaryHDU | fits.ImageHDU) and int(hdu.header.get("NAXIS", 0)) >= 2


def image_hdu_index(hdul: fits.HDUList) -> int:
    """Index in ``hdul`` of the frame's image: the first HDU for which :func:`is_image_hdu` holds.

    0 for a plain file, 1 for a tile-compressed one (its primary HDU has no data). The one place that knows where a
    frame's pixels are: nothing else assumes ``hdul[0]``. Raises :class:`FrameError` when there is no image.
    """
    for i, hdu in enumerate(hdul):
        if is_image_hdu(hdu):
            return i
    raise FrameError(f"{hdul.filename() or 'FITS data'}: no image HDU")


def image_hdu(hdul: fits.HDUList) -> fits.PrimaryHDU | fits.ImageHDU | fits.CompImageHDU:
    """The frame's image HDU (see :func:`image_hdu_index`); for a compressed image, its header is the image's header
    (``NAXIS1``, ``BZERO``, the camera keywords) and its ``data``/``section`` decompress."""
    hdu: fits.PrimaryHDU | fits.ImageHDU | fits.CompImageHDU = hdul[image_hdu_index(hdul)]
    return hdu


def decompress_error(exc: Exception) -> bool:
    """True when ``exc`` is what decompressing a damaged tile raises: astropy's codecs raise a bare ``Exception``
    subclass (``CfitsioException``, e.g. "hit end of compressed byte stream") besides ``OSError``/``ValueError``."""
    return type(exc).__name__ == "CfitsioException" or isinstance(exc, OSError | ValueError | TypeError | IndexError)


def read_header(path: str | os.PathLike[str]) -> fits.Header:
    """Read only the header of the frame's image HDU (:func:`is_image_hdu`; cheap: no pixel data is decoded). For a
    compressed frame this is the image header, as if the file were not compressed."""
    p = Path(path)
    try:
        with fits.open(p, memmap=True, lazy_load_hdus=True) as hdul:
            for hdu in hdul:
                if is_image_hdu(hdu):
                    return hdu.header.copy()
    except FileNotFoundError as exc:
        raise FrameError(f"{p}: file not found") from exc
    except (OSError, ValueError, TypeError) as exc:
        raise FrameError(f"{p}: not a readable FITS file ({exc})") from exc
    raise FrameError(f"{p}: no image HDU")


def read_frame(path: str | os.PathLike[str], dtype: np.dtype | type | None = np.float32) -> Frame:
    """Read the image HDU of ``path`` (:func:`image_hdu`: the primary, or HDU 1 of a tile-compressed file).

    ``dtype`` converts the scaled pixel values (BZERO/BSCALE applied) to that type; ``None`` keeps the stored type.
    Raises :class:`FrameError` for a missing, truncated or image-less file — never a bare astropy exception.
    """
    p = Path(path)
    try:
        with fits.open(p, memmap=False) as hdul:
            hdu = image_hdu(hdul)
            data = hdu.data
            if data is None:
                raise FrameError(f"{p}: no image data")
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
    except Exception as exc:
        if not decompress_error(exc):
            raise
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


def _process_umask() -> int:
    """The process's file-mode creation mask, read without changing it (``os.umask`` can only be read by setting
    it, which would race with other threads creating files); ``0o022`` where ``/proc`` does not tell."""
    try:
        with Path("/proc/self/status").open(encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    return 0o022


def _fsync_dir(folder: Path) -> None:
    dir_fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _set_direct_io(fd: int, direct: bool) -> bool:
    """Turn direct I/O (``O_DIRECT``) on or off for ``fd``; whether it is now on. A file system (or device) that
    does not take it, or a platform without it, leaves it off."""
    flag = getattr(os, "O_DIRECT", 0)
    if not flag:
        return False
    flags = fcntl.fcntl(fd, fcntl.F_GETFL)
    try:
        fcntl.fcntl(fd, fcntl.F_SETFL, flags | flag if direct else flags & ~flag)
    except OSError:
        if direct:
            return False
        raise
    return direct


class DirectWriter:
    """A write-only file object that writes ``fh``'s descriptor with direct I/O (``O_DIRECT``): the bytes go from
    an aligned buffer of :attr:`CHUNK_BYTES` straight to the device instead of being copied into new page-cache
    pages first and synced from there.

    For a large file written once and synced at once (a master: 98 MB at full size with its rejection maps) this
    saves the copy and the page-cache memory, and does not push the frames being integrated out of the page cache.
    On a virtual machine whose free memory goes back to the host (virtio-balloon free-page reporting) it saves much
    more: there the first touch of fresh memory costs ≈ 2 s per GB (docs/benchmarks.md). The file is not left in the
    page cache, so its next read comes from the disk.

    Every write but the last is :attr:`CHUNK_BYTES` long; :meth:`finish` pads the last one to :attr:`ALIGN_BYTES` and
    cuts the file back to its length. Where the descriptor does not take ``O_DIRECT`` (tmpfs on older kernels, some
    network or FUSE file systems, a character device), or takes the flag but refuses the first write with
    ``EINVAL``, the same bytes are written buffered. Astropy sees a plain file-like object (``write``/``tell``), so it
    hands over its arrays' memory as it is (no ``ndarray.tofile`` on the descriptor).
    """

    CHUNK_BYTES = 8 << 20
    #: offsets, lengths and the buffer's address are multiples of this (covers 512- and 4096-byte logical blocks)
    ALIGN_BYTES = 4096

    def __init__(self, fh: BinaryIO) -> None:
        self.name = fh.name  # astropy's error messages name the file
        self.closed = False
        self._fd = fh.fileno()
        self._buffer = mmap.mmap(-1, self.CHUNK_BYTES)  # page-aligned
        self._view = memoryview(self._buffer)
        self._filled = 0
        self._length = 0
        self.direct = _set_direct_io(self._fd, True)

    def write(self, data: Any) -> int:
        """Append ``data`` (bytes or any C-contiguous buffer)."""
        view = memoryview(data).cast("B")
        done = 0
        while done < len(view):
            count = min(len(view) - done, self.CHUNK_BYTES - self._filled)
            self._view[self._filled:self._filled + count] = view[done:done + count]
            self._filled += count
            done += count
            if self._filled == self.CHUNK_BYTES:
                self._drain(self.CHUNK_BYTES)
        self._length += len(view)
        return len(view)

    def tell(self) -> int:
        return self._length

    def flush(self) -> None:
        """Nothing: the buffer's bytes go out when it is full and at :meth:`finish` (direct I/O writes whole blocks)."""

    def _drain(self, size: int) -> None:
        written = 0
        while written < size:
            try:
                count = os.write(self._fd, self._view[written:size])
            except OSError as exc:
                if exc.errno != errno.EINVAL or not self.direct:
                    raise
                self.direct = _set_direct_io(self._fd, False)  # the flag was taken, the write was not
                continue
            if count == 0:  # not seen on regular files (a full disk raises ENOSPC), but never loop on it
                raise OSError(errno.EIO, "the file system took no bytes", self.name)
            written += count
        self._filled = 0

    def finish(self) -> None:
        """Write the rest of the buffer (padded to whole blocks under direct I/O) and cut the file to its length."""
        tail = self._filled
        padded = -(-tail // self.ALIGN_BYTES) * self.ALIGN_BYTES if self.direct else tail
        self._view[tail:padded] = bytes(padded - tail)
        self._drain(padded)
        os.ftruncate(self._fd, self._length)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._view.release()
            self._buffer.close()


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike[str], *, direct_io: bool = False) -> Iterator[BinaryIO]:
    """Open a temporary file next to ``path`` for writing; on success fsync it and rename it to ``path``.

    A crash leaves either the old file or the new one, never half of one (at worst a ``.<name>.*.part`` file that
    ``darkd library verify --remove-partial`` clears). On any error the temporary file is removed and the error
    propagates; a full disk (or quota) is raised as :class:`DiskFullError` naming ``path``, whatever form the writer
    gave it. The file gets the mode ``open()`` would give it (``0o666`` less the umask), not ``mkstemp``'s 0600.
    ``direct_io``: write through a :class:`DirectWriter` (large files written once; buffered where the file system
    does not take direct I/O).
    """
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".part", dir=p.parent)
    try:
        # the mode a plain open() gives (mkstemp's is 0600): a master written by the darkd service user is readable
        # by the observer's Siril or PixInsight, as the umask allows
        os.fchmod(fd, 0o666 & ~_process_umask())
        with _open_part(tmp, fd) as fh:
            if direct_io:
                with contextlib.closing(DirectWriter(fh)) as writer:
                    yield cast(BinaryIO, writer)
                    writer.finish()
            else:
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
    HDUs that carry them match. HDUs without the keywords are not checked (see :func:`has_fits_checksums`).

    A tile-compressed image is checked as what it is on disk, a binary table (``disable_image_compression``): its
    ``CHECKSUM``/``DATASUM`` cover the compressed bytes, so damage is found without decompressing anything (astropy
    does not verify them through ``CompImageHDU``)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with fits.open(path, checksum=True, memmap=False, disable_image_compression=True) as hdul:
            for hdu in hdul:
                _ = hdu.data  # the data checksum (DATASUM) is verified when the data are read
    return [str(w.message) for w in caught if "checksum" in str(w.message).lower()
            or "datasum" in str(w.message).lower()]


def has_fits_checksums(path: str | os.PathLike[str]) -> bool:
    """True when every HDU of ``path`` has ``CHECKSUM`` and ``DATASUM`` (a compressed image's: its table header's)."""
    with fits.open(path, memmap=True, lazy_load_hdus=True, disable_image_compression=True) as hdul:
        return all("CHECKSUM" in hdu.header and "DATASUM" in hdu.header for hdu in hdul)


def _uint16_adu(data: np.ndarray) -> np.ndarray:
    """``data`` as unsigned 16-bit ADU: kept as is when already ``uint16``, else rounded and clipped to 0…65535."""
    if data.dtype == np.uint16:
        return data
    adu: np.ndarray = np.clip(np.rint(data), 0, 65535).astype(np.uint16)
    return adu


_FLOAT32_BE = np.dtype(">f4")
# the native types in_file_order takes, each with its view in the file's layout
_FILE_ORDER: dict[np.dtype[Any], np.dtype[Any]] = {
    np.dtype(np.float32): _FLOAT32_BE, np.dtype(np.uint16): np.dtype(">i2"), np.dtype(np.uint8): np.dtype(np.uint8)}


def _to_file_order(array: np.ndarray) -> None:
    if array.dtype == np.uint8:  # one byte, unsigned in FITS (BITPIX = 8): stored as it is
        return
    if array.dtype == np.uint16:
        np.bitwise_xor(array, np.uint16(0x8000), out=array)  # u − 32768 as int16 is u XOR 0x8000
    array.byteswap(inplace=True)


def _from_file_order(array: np.ndarray) -> None:
    if array.dtype == np.uint8:
        return
    array.byteswap(inplace=True)
    if array.dtype == np.uint16:
        np.bitwise_xor(array, np.uint16(0x8000), out=array)


@contextlib.contextmanager
def in_file_order(arrays: list[np.ndarray], pool: Executor | None = None) -> Iterator[list[np.ndarray]]:
    """Views of ``arrays`` (native float32, uint16 or uint8, C-contiguous) laid out as a FITS file stores them:
    big-endian float32; for uint16 big-endian int16 ``u − 32768`` (read back with ``BZERO = 32768``); uint8 as it is
    (FITS bytes are unsigned). Their memory is converted in place (one array per thread of ``pool``) and converted
    back when the block ends, even on error, as astropy does itself for one array at a time: astropy then writes the
    views, and sums them for ``DATASUM``, without any byteswapped or converted copy (:func:`to_hdulist` takes a
    big-endian float32 image as is; uint16 and uint8 views go into :func:`unsigned_image_hdu`). The arrays must not
    be used elsewhere meanwhile. Arrays that cannot be converted in place (another float type, not C-contiguous,
    read-only, sharing memory with an earlier one) are copied."""
    own: list[np.ndarray] = []  # converted in place, except copies of those that cannot be
    for array in arrays:
        if array.dtype.kind == "f" and array.dtype != np.float32:
            array = np.asarray(array, dtype=np.float32)
        if array.dtype not in _FILE_ORDER:
            raise ValueError(f"a FITS image written in file order is float32, uint16 or uint8, not {array.dtype}")
        if not array.flags.c_contiguous or not array.flags.writeable or any(np.may_share_memory(array, o)
                                                                             for o in own):
            array = array.copy()
        own.append(array)
    arrays = own
    run = pool.map if pool is not None else map
    list(run(_to_file_order, arrays))
    try:
        yield [a.view(_FILE_ORDER[a.dtype]) for a in arrays]
    finally:
        list(run(_from_file_order, arrays))


def unsigned_image_hdu(stored: np.ndarray, name: str) -> fits.ImageHDU:
    """Image extension ``name`` for a uint16 or uint8 image given as :func:`in_file_order` lays it out (``stored``:
    big-endian int16, or the uint8 image itself): written, byte for byte the file of ``fits.ImageHDU(image,
    name=name)`` (for uint16 astropy's ``BSCALE = 1``, ``BZERO = 32768`` cards, in astropy's place before
    ``EXTNAME``; uint8 is ``BITPIX = 8`` with no scaling), read back as the image."""
    hdu = fits.ImageHDU(stored, name=name)
    if stored.dtype == np.uint8:
        return hdu
    hdu.header.insert("EXTNAME", ("BSCALE", 1))
    hdu.header.insert("EXTNAME", ("BZERO", 32768))
    return hdu


def to_hdulist(data: np.ndarray, header: fits.Header | None = None, *, bitpix16: bool = False,
               extra_hdus: list[fits.ImageHDU] | None = None, compression: str = "none") -> fits.HDUList:
    """Build an HDUList. ``bitpix16`` stores ADU as unsigned 16-bit (``BITPIX=16``, ``BZERO=32768``), else float32.

    ``compression="rice"`` (16-bit frames only) puts the image, with all of ``header``, in a Rice tile-compressed
    extension (HDU 1, ``ZCMPTYPE='RICE_1'``, one tile per row) after an empty primary HDU: lossless, since integer
    pixels are never quantised. A float image is never compressed (``ValueError``): quantising a master would change
    its values. Adds ``LONGSTRN`` when needed (:func:`mark_long_strings`). Write it with ``checksum=True`` (as
    :func:`write_frame` and :func:`fits_bytes` do)."""
    algorithm = _ALGORITHMS[check_compression(compression)]
    if algorithm is not None and not bitpix16:
        raise ValueError(f"compression {compression!r} is for 16-bit integer frames only: a float image (a master) "
                         "would be quantised, i.e. changed")
    hdr = header.copy() if header is not None else fits.Header()
    for key in ("BITPIX", "NAXIS", "NAXIS1", "NAXIS2", "BZERO", "BSCALE", "EXTEND", "SIMPLE", "CHECKSUM", "DATASUM",
                "XTENSION", "PCOUNT", "GCOUNT"):
        hdr.remove(key, ignore_missing=True, remove_all=True)
    mark_long_strings(hdr)
    if algorithm is not None:
        image = fits.CompImageHDU(_uint16_adu(data), header=hdr, compression_type=algorithm)
        return fits.HDUList([fits.PrimaryHDU(), image, *(extra_hdus or [])])
    if bitpix16:
        primary = fits.PrimaryHDU(_uint16_adu(data), header=hdr, uint=True)
    else:
        # float32 as is in either byte order (big-endian from in_file_order: written without a byteswap)
        primary = fits.PrimaryHDU(data if data.dtype == _FLOAT32_BE else np.asarray(data, dtype=np.float32),
                                  header=hdr)
    return fits.HDUList([primary, *(extra_hdus or [])])


def write_frame(path: str | os.PathLike[str], data: np.ndarray, header: fits.Header | None = None, *,
                bitpix16: bool = False, extra_hdus: list[fits.ImageHDU] | None = None,
                compression: str = "none") -> Path:
    """Write a frame atomically (see :func:`atomic_write_bytes`; ``compression``: see :func:`to_hdulist`). Returns
    the final path."""
    return atomic_write_bytes(path, fits_bytes(data, header, bitpix16=bitpix16, extra_hdus=extra_hdus,
                                               compression=compression))


def fits_bytes(data: np.ndarray, header: fits.Header | None = None, *, bitpix16: bool = False,
               extra_hdus: list[fits.ImageHDU] | None = None, compression: str = "none") -> bytes:
    """The FITS file :func:`write_frame` writes, as bytes (with ``CHECKSUM``/``DATASUM`` in every HDU)."""
    buf = io.BytesIO()
    hdul = to_hdulist(data, header, bitpix16=bitpix16, extra_hdus=extra_hdus, compression=compression)
    hdul.writeto(buf, output_verify="silentfix", checksum=True)
    return buf.getvalue()
