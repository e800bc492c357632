"""Provenance in FITS headers: input lists, digests, copied acquisition keys, HISTORY lines."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

from astropy.io import fits

SOFTWARE = "darkd"
# Acquisition keys a master or calibrated frame keeps from its (first) input.
ACQUISITION_KEYS = ("INSTRUME", "EXPTIME", "EXPOSURE", "DARKTIME", "SET-TEMP", "GAIN", "OFFSET", "XBINNING",
                    "YBINNING", "READMODE", "USBTRAF", "AMPGLOW", "OVSCMODE", "BIASSEC", "DATASEC", "TRIMSEC",
                    "FILTER", "PIXSIZE1", "PIXSIZE2", "XPIXSZ", "YPIXSZ", "ROWORDER", "IMAGETYP")
_HISTORY_WIDTH = 70


def file_sha256(path: str | os.PathLike[str], chunk_bytes: int = 1 << 22) -> str:
    """Hex sha256 of a whole file (the same as ``sha256sum``)."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as fh:
        while chunk := fh.read(chunk_bytes):
            digest.update(chunk)
    return digest.hexdigest()


def copy_keys(target: fits.Header, source: fits.Header, keys: Iterable[str] = ACQUISITION_KEYS) -> None:
    """Copy ``keys`` (value and comment) from ``source`` to ``target`` where present."""
    for key in keys:
        if key in source:
            target[key] = (source[key], source.comments[key])


def add_history(header: fits.Header, text: str) -> None:
    """Append ``text`` as HISTORY cards, wrapped to the card width."""
    words = text.split()
    line = ""
    for word in words:
        if line and len(line) + 1 + len(word) > _HISTORY_WIDTH:
            header.add_history(line)
            line = word
        else:
            line = f"{line} {word}".strip()
    if line:
        header.add_history(line)


def add_inputs(header: fits.Header, names: Sequence[str], digest_hex: str, *, prefix: str = "IMCMB",
               digest_key: str = "INDIGEST", digest_comment: str = "sha256 over the inputs") -> None:
    """Record input file names (``IMCMB001``..., IRAF convention, up to 999) and one digest over all of them."""
    for i, name in enumerate(names[:999], start=1):
        header[f"{prefix}{i:03d}"] = (Path(name).name[-68:], "input frame")
    header[digest_key] = (digest_hex, digest_comment)


def combined_digest(parts: Iterable[bytes | str]) -> str:
    """Hex sha256 of the concatenation of ``parts`` (strings UTF-8 encoded), each length-prefixed."""
    digest = hashlib.sha256()
    for part in parts:
        data = part.encode() if isinstance(part, str) else part
        digest.update(len(data).to_bytes(8, "little"))
        digest.update(data)
    return digest.hexdigest()
