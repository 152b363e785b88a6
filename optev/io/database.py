"""Opening the project's embedded databases (the ledger, the dispatch service's store, consent and
alarms): one rule for every SQLite file optev writes, through SQLAlchemy.

A target is an SQLAlchemy engine (used as it is), a URL (``dialect://...``: a server database such
as PostgreSQL) or a path to an SQLite file, which is created if absent. An existing file that is
not an SQLite database, a folder, or a path whose folder does not exist is refused with one line:
optev never overwrites a file it did not write. SQLite connections use the write-ahead log
(readers do not block the writer; a crash loses no committed transaction), ``synchronous=NORMAL``,
a page cache of :data:`SQLITE_CACHE_KIB` and enforced foreign keys.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import sqlalchemy as sa

from optev.errors import DataError

SQLITE_MAGIC = b"SQLite format 3\x00"
"""The first 16 bytes of every SQLite database file."""

SQLITE_CACHE_KIB = 262_144
"""SQLite page cache per connection (256 MiB; the default 2 MiB makes the index inserts of a city's
day of settlement lines miss the cache and grow slower with every day in the file)."""


def engine_for(target: str | Path | sa.Engine, what: str = "database") -> sa.Engine:
    """An engine for ``target`` (module docstring); ``what`` names it in errors (``ledger``, ...)."""
    if isinstance(target, sa.Engine):
        return target
    text = str(target)
    if "://" in text:
        return sa.create_engine(text)
    path = Path(text)
    if path.is_dir():
        raise DataError(f"{what} {path} is a folder, not a file")
    if path.is_file() and path.stat().st_size and not is_sqlite(path):
        raise DataError(f"{what} {path} exists and is not an SQLite database file (optev will not overwrite it)")
    if not path.parent.is_dir():
        raise DataError(f"{what} {path}: no such folder {str(path.parent)!r}")
    engine = sa.create_engine(f"sqlite:///{path}")
    sa.event.listen(engine, "connect", _sqlite_pragmas)
    return engine


def is_sqlite(path: Path) -> bool:
    """Whether the file at ``path`` starts as an SQLite database does."""
    with path.open("rb") as fh:
        return fh.read(16) == SQLITE_MAGIC


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cur = dbapi_connection.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute(f"PRAGMA cache_size=-{SQLITE_CACHE_KIB}")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()
