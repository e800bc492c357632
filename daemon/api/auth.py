"""Bearer-token authentication with two scopes: ``read`` (GET) and ``control`` (anything that starts, stops or changes).

Tokens come from ``[api] read_tokens`` / ``control_tokens`` and, optionally, the TOML file named by ``tokens_file``
(same two keys). A control token also grants read. With no token configured at all the API is open to loopback
clients only (and a warning is logged at start-up): a daemon bound to 127.0.0.1 by default is then usable locally
without set-up, and a mis-configured ``host = "0.0.0.0"`` does not expose it.

Responses: no or unknown token → 401 (``WWW-Authenticate: Bearer``); valid token without the scope → 403.
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
import tomllib
from collections.abc import Callable, Coroutine, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi import Request

from daemon.api.errors import ApiError
from daemon.settings import ApiSettings

log = logging.getLogger(__name__)

SCOPES = ("read", "control")


class TokenFileError(ValueError):
    """The tokens file is missing or malformed; the message names the file and the problem."""


def _clean(tokens: Iterable[object], source: str) -> list[str]:
    out = []
    for tok in tokens:
        if not isinstance(tok, str) or not tok.strip():
            raise TokenFileError(f"{source}: tokens must be non-empty strings")
        out.append(tok.strip())
    return out


def load_tokens_file(path: Path) -> tuple[list[str], list[str]]:
    """``(read_tokens, control_tokens)`` from a TOML file with keys ``read_tokens`` and ``control_tokens``."""
    try:
        data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise TokenFileError(f"{path}: cannot read tokens file ({exc.strerror})") from exc
    except tomllib.TOMLDecodeError as exc:
        raise TokenFileError(f"{path}: not valid TOML ({exc})") from exc
    unknown = sorted(set(data) - {"read_tokens", "control_tokens"})
    if unknown:
        raise TokenFileError(f"{path}: unknown key(s) {', '.join(unknown)}; expected read_tokens, control_tokens")
    read, control = data.get("read_tokens", []), data.get("control_tokens", [])
    if not isinstance(read, list) or not isinstance(control, list):
        raise TokenFileError(f"{path}: read_tokens and control_tokens must be arrays of strings")
    return _clean(read, str(path)), _clean(control, str(path))


@dataclass(frozen=True)
class Authenticator:
    """Decides whether a request may use a scope. Build with :meth:`from_settings`."""

    read_tokens: tuple[str, ...]
    control_tokens: tuple[str, ...]

    @classmethod
    def from_settings(cls, api: ApiSettings) -> Authenticator:
        read, control = _clean(api.read_tokens, "[api] read_tokens"), _clean(api.control_tokens,
                                                                            "[api] control_tokens")
        if api.tokens_file is not None:
            file_read, file_control = load_tokens_file(api.tokens_file)
            read += file_read
            control += file_control
        auth = cls(tuple(read), tuple(control))
        if auth.open_to_loopback:
            log.warning("no API tokens configured: only loopback clients (127.0.0.1, ::1) are allowed")
        return auth

    @property
    def open_to_loopback(self) -> bool:
        return not self.read_tokens and not self.control_tokens

    @staticmethod
    def _matches(token: str, candidates: tuple[str, ...]) -> bool:
        # compare against every candidate (constant time per comparison, no early exit on a match)
        found = False
        for cand in candidates:
            found |= hmac.compare_digest(token.encode(), cand.encode())
        return found

    def scopes_of(self, token: str) -> frozenset[str]:
        if self._matches(token, self.control_tokens):
            return frozenset(SCOPES)
        if self._matches(token, self.read_tokens):
            return frozenset({"read"})
        return frozenset()

    def check(self, request: Request, scope: str) -> None:
        """Raise :class:`ApiError` (401/403) unless the request may use ``scope``."""
        if self.open_to_loopback:
            host = request.client.host if request.client else ""
            if not is_loopback(host):
                raise ApiError(403, "loopback_only", "no API tokens are configured, so only clients on this machine "
                               "may connect; configure [api] read_tokens/control_tokens to allow remote clients")
            return
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise ApiError(401, "missing_token", "send 'Authorization: Bearer <token>'",
                           headers={"WWW-Authenticate": "Bearer"})
        scopes = self.scopes_of(token)
        if not scopes:
            raise ApiError(401, "invalid_token", "the bearer token is not valid",
                           headers={"WWW-Authenticate": 'Bearer error="invalid_token"'})
        if scope not in scopes:
            raise ApiError(403, "insufficient_scope", f"this token lacks the '{scope}' scope",
                           headers={"WWW-Authenticate": f'Bearer error="insufficient_scope", scope="{scope}"'})


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and IPv4-mapped loopback (``::ffff:127.0.0.1``)."""
    try:
        addr = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return host == "localhost"
    mapped = getattr(addr, "ipv4_mapped", None)
    return bool(addr.is_loopback or (mapped is not None and mapped.is_loopback))


def require(scope: str) -> Callable[[Request], Coroutine[Any, Any, None]]:
    """A FastAPI dependency: ``dependencies=[Depends(require("control"))]``. Async on purpose: FastAPI runs plain
    ``def`` dependencies in the thread pool, a thread hop per request for a check that takes microseconds."""
    if scope not in SCOPES:
        raise ValueError(f"unknown scope {scope!r}")

    async def dependency(request: Request) -> None:
        auth: Authenticator = request.app.state.authenticator
        auth.check(request, scope)

    return dependency
