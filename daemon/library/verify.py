"""``darkd library verify``: prove that the index and the files on disk agree.

Checks, each reported as a :class:`Problem` with a stable ``code``:

* ``missing-file``   a frame or master recorded in the index does not exist;
* ``checksum``       a file's SHA-256 (or size) differs from the index (corrupted or replaced), or its FITS
                     ``CHECKSUM``/``DATASUM`` do not match its bytes (astropy ``fits.open(checksum=True)`` warns); a
                     file written before darkd wrote those keys only gets a warning that it has none; a
                     Rice tile-compressed frame (``[library] compression = "rice"``) is checked on its compressed
                     table (:func:`calib.frames.fits_checksum_problems`), its header read from the image inside;
* ``header``         a frame's or master's header is unreadable or contradicts its entry's key (kind, exposure,
                     gain, offset, binning, geometry);
* ``count``          a master's ``NCOMBINE`` differs from the accepted frames recorded, or a ready entry has no master;
* ``duplicate``      two accepted frames of one entry share an index or identical content;
* ``orphan-file``    a FITS file under the library root that the index does not know;
* ``partial-file``   a leftover temporary file of an interrupted atomic write (``.*.part``, ``*.tmp``);
* ``outside-root``   an entry's directory, frame or master lies outside the library root;
* ``index``          SQLite's own ``PRAGMA integrity_check`` fails.

Entries still ``planned``/``capturing`` are checked too (their recorded frames must be intact), but frames on disk not
yet recorded in such an entry are reported as ``orphan-file`` only when ``strict``; a capture that was killed between
writing a frame and recording it is resumed by the job engine, which records it.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from calib.frames import FrameError, fits_checksum_problems, has_fits_checksums, read_header
from daemon.library.integrity import sha256_file
from daemon.light_headers import normalise_image_type

if TYPE_CHECKING:
    from daemon.library.store import EntryView, LibraryStore

INDEX_FILE_PREFIX = "index.sqlite3"
FITS_SUFFIXES = (".fits", ".fit", ".fts", ".fz")


@dataclass(frozen=True)
class Problem:
    code: str
    message: str
    path: str | None = None
    entry_id: int | None = None


@dataclass
class VerifyReport:
    problems: list[Problem] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    entries: int = 0
    frames: int = 0
    masters: int = 0
    files_checked: int = 0
    bytes_checked: int = 0

    @property
    def ok(self) -> bool:
        return not self.problems

    def add(self, code: str, message: str, path: str | Path | None = None, entry_id: int | None = None) -> None:
        self.problems.append(Problem(code, message, str(path) if path is not None else None, entry_id))

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "problems": [asdict(p) for p in self.problems], "warnings": self.warnings,
                "entries": self.entries, "frames": self.frames, "masters": self.masters,
                "files_checked": self.files_checked, "bytes_checked": self.bytes_checked}

    def to_text(self) -> str:
        lines = [f"{p.code:13} {('#' + str(p.entry_id)) if p.entry_id is not None else '-':>6}  {p.message}"
                 for p in self.problems]
        lines += [f"warning: {w}" for w in self.warnings]
        lines.append(f"{'OK' if self.ok else 'PROBLEMS'}: {len(self.problems)} problem(s); {self.entries} entries, "
                     f"{self.frames} frames, {self.masters} masters, {self.files_checked} files "
                     f"({self.bytes_checked / 1e6:.1f} MB) checked")
        return "\n".join(lines)


def _check_file(report: VerifyReport, path: Path, sha256: str | None, size_bytes: int | None,
                entry_id: int, what: str) -> bool:
    if not path.is_file():
        report.add("missing-file", f"{what} {path} is recorded in the index but missing", path, entry_id)
        return False
    size = path.stat().st_size
    report.files_checked += 1
    report.bytes_checked += size
    if size_bytes is not None and size != size_bytes:
        report.add("checksum", f"{what} {path} has {size} bytes, the index recorded {size_bytes}", path, entry_id)
        return False
    if sha256 is not None and sha256_file(path) != sha256:
        report.add("checksum", f"{what} {path} does not match its recorded SHA-256 (corrupted or replaced)", path,
                   entry_id)
        return False
    if sha256 is not None:
        return _check_fits_checksums(report, path, entry_id, what)
    return True


def _check_fits_checksums(report: VerifyReport, path: Path, entry_id: int, what: str) -> bool:
    """The FITS ``CHECKSUM``/``DATASUM`` of every HDU against the file's bytes (only where the keywords exist)."""
    try:
        failures = fits_checksum_problems(path)
        complete = has_fits_checksums(path)
    except (OSError, ValueError, TypeError) as exc:
        report.add("header", f"{what} {path}: not a readable FITS file ({exc})", path, entry_id)
        return False
    if failures:
        report.add("checksum", f"{what} {path}: FITS checksum mismatch ({'; '.join(failures)})", path, entry_id)
        return False
    if not complete:
        report.warnings.append(f"{what} {path} has no CHECKSUM/DATASUM (written before darkd recorded them)")
    return True


def _check_header(report: VerifyReport, path: Path, entry: EntryView, what: str, *, master: bool) -> dict[str, Any]:
    try:
        header = read_header(path)
    except FrameError as exc:
        report.add("header", f"{what}: {exc}", path, entry.id)
        return {}
    key = entry.key
    mismatches = []
    image_type = header.get("IMAGETYP")
    if image_type is not None:
        found = normalise_image_type(image_type)
        if found != key.kind and not (key.kind == "flatdark" and found == "dark"):
            mismatches.append(f"IMAGETYP {image_type!r} (expected {key.kind})")
    exposure = header.get("EXPTIME", header.get("EXPOSURE"))
    if exposure is not None and key.kind != "bias" and not math.isclose(float(exposure), key.exposure_s,
                                                                          rel_tol=1e-6, abs_tol=1e-3):
        mismatches.append(f"EXPTIME {exposure} (expected {key.exposure_s:g})")
    for name, expected in (("GAIN", key.gain), ("OFFSET", key.offset), ("XBINNING", key.binning),
                           ("NAXIS1", key.width_px), ("NAXIS2", key.height_px)):
        value = header.get(name)
        if value is not None and expected and float(value) != float(expected):
            mismatches.append(f"{name} {value} (expected {expected})")
    if mismatches:
        report.add("header", f"{what} {path} contradicts its entry: {', '.join(mismatches)}", path, entry.id)
    return dict(header) if master else {}


def verify_library(index: LibraryStore, *, checksums: bool = True, strict: bool = False) -> VerifyReport:
    """Check the whole library (see the module docstring). ``checksums=False`` skips SHA-256 (sizes still checked)."""
    report = VerifyReport()
    root = index.layout.root
    problem = index.integrity_problem()
    if problem is not None:
        report.add("index", f"the index database is damaged: {problem}")
    known: set[Path] = set()
    in_progress_dirs: set[Path] = set()
    entries = index.entries()
    report.entries = len(entries)
    for entry in entries:
        directory = Path(entry.directory)
        outside = [p for p in (directory, entry.master) if p is not None and not index.layout.contains(p)]
        for path in outside:
            report.add("outside-root", f"{path} of entry {entry.id} lies outside the library root {root}", path,
                       entry.id)
        if entry.status in ("planned", "capturing", "integrating"):
            in_progress_dirs.add(directory.resolve())
        frames = index.frames_of(entry.id)
        report.frames += len(frames)
        seen_index: dict[int, str] = {}
        seen_sha: dict[str, str] = {}
        for frame in frames:
            path = Path(frame.path)
            known.add(path.resolve())
            if not index.layout.contains(path):
                report.add("outside-root", f"frame {path} lies outside the library root {root}", path, entry.id)
            intact = _check_file(report, path, frame.sha256 if checksums else None, frame.size_bytes, entry.id,
                                 "frame")
            if intact:
                _check_header(report, path, entry, "frame", master=False)
            if not frame.quality_ok:
                continue
            if frame.index in seen_index:
                report.add("duplicate", f"frames {seen_index[frame.index]} and {path} share index {frame.index}",
                           path, entry.id)
            seen_index[frame.index] = str(path)
            if frame.sha256 in seen_sha:
                report.add("duplicate", f"frames {seen_sha[frame.sha256]} and {path} have identical content", path,
                           entry.id)
            seen_sha[frame.sha256] = str(path)
        if entry.master:
            report.masters += 1
            path = Path(entry.master)
            known.add(path.resolve())
            if _check_file(report, path, entry.master_sha256 if checksums else None, None, entry.id, "master"):
                header = _check_header(report, path, entry, "master", master=True)
                ncombine = header.get("NCOMBINE")
                if ncombine is not None and int(ncombine) != entry.frames:
                    report.add("count", f"master {path} combines {ncombine} frames but the index records "
                               f"{entry.frames} accepted frames", path, entry.id)
        elif entry.status in ("ready", "stale"):
            report.add("count", f"entry {entry.id} is {entry.status} but has no master", None, entry.id)
        if entry.status == "ready" and entry.frames < entry.frames_target:
            report.warnings.append(f"entry {entry.id}: {entry.frames} of {entry.frames_target} frames (retakes "
                                   "exhausted?)")
    _scan_disk(report, root, known, in_progress_dirs, strict=strict)
    return report


def partial_files(root: Path) -> list[Path]:
    """Leftovers of interrupted atomic writes under ``root`` (``.*.part``, ``*.tmp``)."""
    if not root.is_dir():
        return []
    return sorted(p for p in root.rglob("*") if p.is_file() and p.name.endswith((".part", ".tmp")))


def remove_partial_files(root: Path) -> list[Path]:
    """Delete the leftovers of interrupted atomic writes (safe only while nothing is writing: e.g. at start-up,
    before the job engine resumes). Returns the removed paths."""
    removed = []
    for path in partial_files(root):
        path.unlink(missing_ok=True)
        removed.append(path)
    return removed


def _scan_disk(report: VerifyReport, root: Path, known: set[Path], in_progress_dirs: set[Path], *,
               strict: bool) -> None:
    if not root.is_dir():
        report.add("missing-file", f"library root {root} does not exist", root)
        return
    for path in sorted(root.rglob("*")):
        if not path.is_file() or path.name.startswith(INDEX_FILE_PREFIX):
            continue
        name = path.name
        if name.endswith((".part", ".tmp")):
            report.add("partial-file", f"{path} is a leftover of an interrupted write", path)
            continue
        if not name.lower().endswith(FITS_SUFFIXES) or path.resolve() in known:
            continue
        if not strict and any(parent in in_progress_dirs for parent in path.resolve().parents):
            report.warnings.append(f"{path}: not yet recorded (its entry is still in progress)")
            continue
        report.add("orphan-file", f"{path} is not in the index", path)
