"""Quality review of a new master against the master it would replace (see :mod:`calib.compare`).

Review is a decision taken **before** a master becomes selectable: the catalog's ``set_master`` asks :func:`judge`
first and records the master as ``ready`` together with the verdict, in one write transaction. A large change holds the
new entry for review from its first moment as ``ready``: the selection rule skips it (the previous master keeps being
used) until someone accepts it (``darkd library accept ID``) or marks it bad.

The previous master is the one the usable-master rule (:mod:`daemon.library.selection`) would pick for the same key at
the new master's creation time, the new entry excluded: the master in use that the new one replaces.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from daemon.library.keys import LibraryKey
from daemon.library.store import EntryView

if TYPE_CHECKING:  # calib (astropy) is loaded when a master is judged, not by every command that opens the index
    from calib.compare import MasterComparison

log = logging.getLogger(__name__)


class UsableMasters(Protocol):
    """What review needs from the catalog: the usable master of a key at a time (the one rule)."""

    def usable_master(self, key: LibraryKey, *, when: datetime | None = None,
                      exclude_id: int | None = None) -> EntryView | None: ...


@dataclass(frozen=True)
class Verdict:
    """Outcome of :func:`judge`: the comparison (``None``: nothing to compare with) and the review reason, if any."""

    comparison: MasterComparison | None = None
    previous_id: int | None = None
    reason: str | None = None

    def stats(self) -> dict[str, Any]:
        """What goes into the entry's ``master_stats["comparison"]`` (empty without a comparison)."""
        if self.comparison is None:
            return {}
        return {"comparison": {**self.comparison.to_dict(), "previous_entry_id": self.previous_id}}


def previous_master(index: UsableMasters, entry: EntryView, when: datetime) -> EntryView | None:
    """The master in use for ``entry``'s key at ``when`` (the usable-master rule), ``entry`` itself excluded."""
    return index.usable_master(entry.key, when=when, exclude_id=entry.id)


def judge(new_master: str | Path, previous: EntryView | None, *, k_sigma: float,
          max_moved_fraction: float) -> Verdict:
    """Compare a new master file with the previous entry's master; a large change gives a review reason.

    No previous master, or a master that cannot be read (logged), gives an empty verdict (nothing to hold back on)."""
    if previous is None or previous.master is None:
        return Verdict()
    from calib.compare import compare_masters
    from calib.frames import FrameError, read_frame

    try:
        new = read_frame(new_master).data
        old = read_frame(previous.master).data
        comparison = compare_masters(new, old, k_sigma=k_sigma, max_moved_fraction=max_moved_fraction)
    except (FrameError, ValueError) as exc:
        log.warning("review of %s against entry %s skipped: %s", new_master, previous.id, exc)
        return Verdict()
    reason = None
    if comparison.review:
        reason = f"changed from entry {previous.id}: " + "; ".join(comparison.reasons)
    return Verdict(comparison=comparison, previous_id=previous.id, reason=reason)
