"""Paths in requests must resolve under ``[api] allowed_roots``: no ``..`` traversal, no symlink escape.

A request path is taken as given when absolute, or relative to the first allowed root. It is resolved with every
symlink followed (``Path.resolve``) and must then lie inside one of the resolved roots; so a symlink inside a root
that points outside it is refused, while a symlink that stays inside is fine.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from daemon.api.errors import ApiError

MAX_PATH_CHARS = 4096


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
    resolved_roots = [Path(r).expanduser().resolve() for r in roots]
    candidate = Path(raw)
    if not candidate.is_absolute():
        candidate = resolved_roots[0] / candidate
    try:
        resolved = candidate.resolve(strict=False)
    except (OSError, RuntimeError) as exc:  # symlink loop, permission
        raise ApiError(422, "invalid_path", f"{what} {raw!r} cannot be resolved: {exc}") from exc
    if not any(resolved == root or resolved.is_relative_to(root) for root in resolved_roots):
        raise ApiError(403, "path_not_allowed", f"{what} {raw!r} is outside the allowed roots "
                       f"({', '.join(str(r) for r in resolved_roots)})")
    if must_exist and not resolved.exists():
        raise ApiError(404, "path_not_found", f"{what} {raw!r} does not exist")
    return resolved
