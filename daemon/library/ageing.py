"""Ageing: a ready master becomes ``stale`` once its validity window (``library.validity_days``) has passed.

Stale entries are never selected; planning schedules their key again (a new entry, the old one is kept).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from daemon.library.store import EntryView, LibraryStore


def is_expired(entry: EntryView, now: datetime) -> bool:
    """True when a ready entry's ``valid_until_utc`` lies in the past."""
    return entry.status == "ready" and entry.valid_until_utc is not None and entry.valid_until_utc < now


def refresh_ageing(index: LibraryStore, now: datetime | None = None) -> list[int]:
    """Mark every expired ready entry stale; returns their ids. Idempotent; run at start-up and before planning."""
    return index.mark_stale(now or datetime.now(UTC))
