"""The catalog: the library store plus its policy. This is the class the daemon opens (:class:`LibraryIndex`).

* **Which master may be used** is decided by the one rule in :mod:`daemon.library.selection` (key, temperature,
  validity, status, review, intact file); every user asks it through :meth:`LibraryIndex.select_master`,
  :meth:`~LibraryIndex.usable_master` or :meth:`~LibraryIndex.usable_refusal`.
* **Integrity on use**: a master's file is checked against the SHA-256 in the index each time the rule considers it
  (:class:`daemon.library.integrity.FileCheck`, cached by path, size and mtime). A master whose content changed is
  marked ``bad`` with the reason and never used; a missing file is refused (it may come back) but not marked. Each
  callable in :attr:`LibraryIndex.integrity_listeners` is then told ``(entry, reason)`` (the runtime publishes an
  ``integrity`` event, counts it in a metric and queues the re-integration of the entry's good frames).
* **Review is decided before a master becomes selectable**: :meth:`~LibraryIndex.set_master` compares the new master
  with the one it replaces first, then records it ``ready`` together with the verdict in one write transaction.

Import direction (no cycles): ``keys`` ← ``tables`` ← ``models`` ← ``store`` ← ``selection``, ``review`` ← ``catalog``;
``integrity`` ← ``store``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from daemon.library.integrity import FileCheck, sha256_file
from daemon.library.keys import LibraryKey
from daemon.library.review import judge, previous_master
from daemon.library.selection import Selection, refusal, select_master
from daemon.library.store import EntryView, LibraryStore
from daemon.library.tables import utc_now
from daemon.settings import LibrarySettings

log = logging.getLogger(__name__)


class LibraryIndex(LibraryStore):
    """The library of one root: storage (:class:`LibraryStore`) plus the usable-master rule, integrity on use and
    review. Safe to share between threads."""

    def __init__(self, settings: LibrarySettings) -> None:
        super().__init__(settings)
        self.files = FileCheck()
        #: Called with ``(entry, reason)`` after a master that failed its integrity check was marked ``bad``.
        self.integrity_listeners: list[Callable[[EntryView, str], None]] = []

    # --- integrity ---------------------------------------------------------------------------------------------------
    def master_problem(self, entry: EntryView) -> str | None:
        """Why ``entry``'s master file cannot be used (missing, unreadable, content changed), or ``None``.

        A master whose content no longer matches the index is marked ``bad`` with the reason (logged as an error)."""
        if not entry.master:
            return "no master file"
        damage = self.files.problem(entry.master, entry.master_sha256)
        if damage is None:
            return None
        if damage.corrupt and entry.status != "bad":
            log.error("library entry %s marked bad: %s", entry.id, damage.message)
            bad = self.mark_bad(entry.id, damage.message)
            for listener in list(self.integrity_listeners):
                try:
                    listener(bad, damage.message)
                except Exception:  # a listener (event, metric, re-integration) must not hide the refusal
                    log.exception("integrity listener failed for entry %s", entry.id)
        return damage.message

    # --- the usable-master rule --------------------------------------------------------------------------------------
    def select_master(self, light_key: LibraryKey, *, light_temperature_c: float | None = None,
                      light_time: datetime | None = None, allow_scaled: bool = False,
                      now: datetime | None = None, exclude_id: int | None = None,
                      expired_ok: bool = False) -> Selection:
        """The master for a light by the rule of :mod:`daemon.library.selection`, files checked on use."""
        candidates = [e for e in self.entries(camera=light_key.camera, kind=light_key.kind) if e.id != exclude_id]
        return select_master(light_key, candidates, tolerance_c=self.settings.temperature_tolerance_c,
                             validity_days=self.settings.validity_days, light_temperature_c=light_temperature_c,
                             light_time=light_time, allow_scaled=allow_scaled, now=now,
                             file_problem=self.master_problem, expired_ok=expired_ok)

    def usable_master(self, key: LibraryKey, *, when: datetime | None = None, exclude_id: int | None = None,
                      expired_ok: bool = False) -> EntryView | None:
        """The master a light with exactly ``key`` (at its set point) would use at ``when`` (default now), or ``None``.

        ``expired_ok``: the last master that was usable (stale and expired ones accepted; see ``refusal``)."""
        return self.select_master(key, light_time=when or datetime.now(UTC), exclude_id=exclude_id,
                                  expired_ok=expired_ok).entry

    def usable_refusal(self, entry: EntryView, *, when: datetime | None = None) -> str | None:
        """Why a light with ``entry``'s own key could not use ``entry`` at ``when`` (``None``: it could)."""
        return refusal(entry.key, entry, light_temperature_c=None, light_time=when or datetime.now(UTC),
                       tolerance_c=self.settings.temperature_tolerance_c, validity_days=self.settings.validity_days,
                       file_problem=self.master_problem)

    # --- recording a master (review inside) -------------------------------------------------------------------------
    def set_master(self, entry_id: int, path: str | Path, stats: Mapping[str, Any],
                   valid_until: datetime | None = None, *, sha256: str | None = None,
                   created: datetime | None = None, review: bool = True) -> EntryView:
        """Record the entry's master (the file must exist) and make it ``ready``, already reviewed.

        ``valid_until`` defaults to creation + ``validity_days``. ``stats``: mean_adu, median_adu, noise_adu,
        hot_pixels, rejected_fraction, n_frames … (stored as given, JSON). With ``review`` (default) the master is
        first compared with the master it replaces (:mod:`daemon.library.review`); on a large change it is recorded
        as held for review in the same transaction that makes it ``ready``, so no selector ever sees it usable.
        """
        p = Path(path)
        if not p.is_file():
            raise FileNotFoundError(f"master {p} does not exist")
        digest = sha256 or sha256_file(p)
        created = created or utc_now()
        valid_until = valid_until or created + timedelta(days=self.settings.validity_days)
        extra: dict[str, Any] = {}
        reason = None
        if review:
            entry = self._get_required(entry_id)
            verdict = judge(p, previous_master(self, entry, created), k_sigma=self.settings.review_k_sigma,
                            max_moved_fraction=self.settings.review_max_moved_fraction)
            extra, reason = verdict.stats(), verdict.reason
            if reason is not None:
                log.warning("library entry %s held for review: %s", entry_id, reason)
        return self.record_master(entry_id, p, {**dict(stats), **extra}, sha256=digest, created=created,
                                  valid_until=valid_until, review_reason=reason)
