"""Compatibility names for code written before the store/catalog split (import from the new homes instead).

``LibraryIndex`` → :mod:`daemon.library.catalog`; ``EntryView``, ``FrameView``, ``JobRow``, ``EntryNotFound``,
``JobNotFoundError``, ``STATUSES``, ``IN_PROGRESS``, ``migrate``, ``make_engine`` → :mod:`daemon.library.store`;
``sha256_file`` → :mod:`daemon.library.integrity`; ``KEY_FIELDS`` → :mod:`daemon.library.keys`.
"""

from daemon.library.catalog import LibraryIndex
from daemon.library.integrity import sha256_file
from daemon.library.keys import KEY_FIELDS
from daemon.library.store import (
    IN_PROGRESS,
    JOB_FIELDS,
    JOB_STATES,
    STATUSES,
    EntryNotFound,
    EntryView,
    FrameView,
    JobNotFoundError,
    JobRow,
    LibraryStore,
    alembic_config,
    make_engine,
    migrate,
)

__all__ = ["IN_PROGRESS", "JOB_FIELDS", "JOB_STATES", "KEY_FIELDS", "STATUSES", "EntryNotFound", "EntryView",
           "FrameView", "JobNotFoundError", "JobRow", "LibraryIndex", "LibraryStore", "alembic_config", "make_engine",
           "migrate", "sha256_file"]
