"""Paths in requests must resolve under ``[api] allowed_roots``: no ``..`` traversal, no symlink escape.

A request path is taken as given when absolute, or relative to the first allowed root. It is resolved with every
symlink followed (``Path.resolve``) and must then lie inside one of the resolved roots; so a symlink inside a root
that points outside it is refused, while a symlink that stays inside is fine. A folder's files are resolved one by
one (:func:`files_inside`): a symlinked file inside an allowed folder that points outside the roots is refused too. A
path component longer than the file system's limit (255 bytes, ``NAME_MAX``) is a 422, not an ``ENAMETOOLONG`` 500.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path

from daemon.api.errors import ApiError

MAX_PATH_CHARS = 4096
#: Longest file or folder name (bytes, UTF-8) Linux file systems take (``NAME_MAX``).
MAX_NAME_BYTES = 255


def resolve_allowed(raw: str, roots: Sequence[Path], *, must_exist: bool = True, what: str = "path") -> Path:
    """The resolved absolute path of ``raw`` if it lies under one of ``roots``; else :class:`ApiError` (4xx).

    Errors: 403 ``no_allowed_roots`` (none configured), 422 ``invalid_path`` (empty, NUL byte, too long),
    403 ``path_not_allowed`` (outside every root after resolving symlinks), 404 ``path_not_found``.
    """
    if not roots:
        raise ApiError(403, "no_allowed_roots", "the daemon has no [api] allowed_roots configured, so it accepts no "
                       "paths in requests; add the folders it may read and write to the configuration")
    if not raw or "\x00" in raw or len(raw) > MAX_PATH_CHARS:
        raise ApiError(422, "invalid_path", f"{what} must be a non-empty path without NUL bytes, "
                       f"at most {MAX_PATH_CHARS} characters")
    long_names = [part for part in Path(raw).parts if len(os.fsencode(part)) > MAX_NAME_BYTES]
    if long_names:
        raise ApiError(422, "invalid_path", f"{what}: a file or folder name is longer than {MAX_NAME_BYTES} bytes "
                       f"({long_names[0][:40]}…)")
    resolved_roots = _resolved_roots(roots)
    candidate = Path(raw)
    if not candidate.is_absolute():
        candidate = resolved_roots[0] / candidate
    try:
        resolved = candidate.resolve(strict=False)
    except (OSError, RuntimeError) as exc:  # symlink loop, permission
        raise ApiError(422, "invalid_path", f"{what} {raw!r} cannot be resolved: {exc}") from exc
    if not _inside(resolved, resolved_roots):
        raise ApiError(403, "path_not_allowed", f"{what} {raw!r} is outside the allowed roots "
                       f"({', '.join(str(r) for r in resolved_roots)})")
    try:
        exists = resolved.exists()
    except OSError as exc:  # e.g. ENAMETOOLONG for the whole path
        raise ApiError(422, "invalid_path", f"{what} {raw!r} cannot be checked: {exc.strerror}") from exc
    if must_exist and not exists:
        raise ApiError(404, "path_not_found", f"{what} {raw!r} does not exist")
    return resolved


def files_inside(files: Iterable[Path], roots: Sequence[Path], *, what: str = "file") -> list[Path]:
    """Each of ``files`` (found inside an allowed folder) resolved on its own; a file that resolves outside every root
    (a symlink pointing out) is refused with 403 ``path_not_allowed`` naming it, before anything reads it."""
    resolved_roots = _resolved_roots(roots)
    out = []
    for path in files:
        try:
            resolved = Path(path).resolve(strict=True)
        except (OSError, RuntimeError) as exc:
            raise ApiError(422, "invalid_path", f"{what} {str(path)!r} cannot be resolved: {exc}") from exc
        if not _inside(resolved, resolved_roots):
            raise ApiError(403, "path_not_allowed", f"{what} {str(path)!r} points outside the allowed roots "
                           f"(to {resolved})")
        out.append(resolved)
    return out


def _resolved_roots(roots: Sequence[Path]) -> list[Path]:
    return [Path(r).expanduser().resolve() for r in roots]


def _inside(resolved: Path, roots: Sequence[Path]) -> bool:
    return any(resolved == root or resolved.is_relative_to(root) for root in roots)
