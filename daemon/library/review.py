"""Quality review of a new master against the previous master of the same key (see :mod:`calib.compare`).

A large change flags the new entry for review: it stays ``ready`` but the selection rule skips it (the previous master
keeps being used) until someone accepts it (``darkd library accept ID``) or marks it bad.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from calib.compare import MasterComparison, compare_masters
from calib.frames import FrameError, read_frame

if TYPE_CHECKING:
    from daemon.library.index import EntryView, LibraryIndex

log = logging.getLogger(__name__)


def previous_master(index: LibraryIndex, entry: EntryView) -> EntryView | None:
    """The latest other ready/stale entry of the same key with a master made before ``entry``'s."""
    same = [e for e in index.entries(camera=entry.camera, kind=entry.kind)
            if e.slug == entry.slug and e.id != entry.id and e.status in ("ready", "stale") and e.master
            and not e.review and e.master_created_utc is not None
            and (entry.master_created_utc is None or e.master_created_utc <= entry.master_created_utc)]
    return max(same, key=lambda e: (e.master_created_utc, e.id), default=None)


def review_new_master(index: LibraryIndex, entry_id: int) -> MasterComparison | None:
    """Compare entry ``entry_id``'s master with the previous one; flag it for review on a large change.

    Returns the comparison (also stored in the entry's ``master_stats["comparison"]``), or ``None`` when there is no
    previous master or a master cannot be read (logged).
    """
    entry = index.get(entry_id)
    if entry is None or not entry.master:
        raise ValueError(f"entry {entry_id} has no master to review")
    previous = previous_master(index, entry)
    if previous is None or previous.master is None:
        return None
    try:
        new = read_frame(entry.master).data
        old = read_frame(previous.master).data
        comparison = compare_masters(new, old, k_sigma=index.settings.review_k_sigma,
                                     max_moved_fraction=index.settings.review_max_moved_fraction)
    except (FrameError, ValueError) as exc:
        log.warning("review of entry %s against %s skipped: %s", entry_id, previous.id, exc)
        return None
    index.merge_master_stats(entry_id, {"comparison": {**comparison.to_dict(), "previous_entry_id": previous.id}})
    if comparison.review:
        reason = f"changed from entry {previous.id}: " + "; ".join(comparison.reasons)
        index.flag_review(entry_id, reason)
        log.warning("library entry %s held for review: %s", entry_id, reason)
    return comparison
