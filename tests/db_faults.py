"""Make the library database refuse statements, the way a read-only or malformed SQLite file does, on demand.

A listener on the real engine raises the driver's own exception, so SQLAlchemy wraps it exactly as it wraps a real
failure (``sqlalchemy.exc.OperationalError``/``DatabaseError``): the code under test cannot tell the difference.
"""

from __future__ import annotations

import sqlite3
from typing import Any

from sqlalchemy import Engine, event

WRITES = ("INSERT", "UPDATE", "DELETE")
READS = ("SELECT", "PRAGMA")


class DatabaseFault:
    """``read_only()``: writes fail with "attempt to write a readonly database"; ``malformed()``: every read and write
    fails with "database disk image is malformed"; ``heal()``: back to normal. ``remove()`` detaches the listener."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.failing: tuple[str, ...] = ()
        self.error: Exception = sqlite3.OperationalError("attempt to write a readonly database")
        self.refused = 0
        event.listen(engine, "before_cursor_execute", self._check)

    def _check(self, _conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        words = statement.lstrip().split(None, 1)
        if words and words[0].upper() in self.failing:
            self.refused += 1
            raise self.error

    def read_only(self) -> DatabaseFault:
        self.failing, self.error = WRITES, sqlite3.OperationalError("attempt to write a readonly database")
        return self

    def malformed(self) -> DatabaseFault:
        self.failing, self.error = WRITES + READS, sqlite3.DatabaseError("database disk image is malformed")
        return self

    def heal(self) -> None:
        self.failing = ()

    def remove(self) -> None:
        event.remove(self.engine, "before_cursor_execute", self._check)
