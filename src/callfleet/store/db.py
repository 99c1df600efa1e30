"""Database handle: one SQLAlchemy engine tuned for SQLite (embedded) or PostgreSQL.

SQLite runs in WAL mode with `synchronous=NORMAL`. Every write transaction starts
with `BEGIN IMMEDIATE`, so two writers queue on the busy timeout instead of
failing with "database is locked" when a read lock would have to be upgraded;
read-only connections start a plain deferred transaction and never block writers.
PostgreSQL connections are pre-pinged so that a restarted server is reconnected to.

A SQLite database holds every tenant's calls and transcripts: its file is created
owner-only (0600) before SQLite opens it, an existing one is made so, and SQLite gives
its `-wal` and `-shm` files the database file's permissions. A directory we create
for it is 0700.
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine

__all__ = ["Database"]

_READ_ONLY = "callfleet_read_only"


class Database:
    """The engine plus the two ways in: `write()` and `read()` transactions."""

    def __init__(self, url: str, *, echo: bool = False) -> None:
        self.url = url
        self.is_sqlite = url.startswith("sqlite")
        if self.is_sqlite:
            path = url.split(":///", 1)[1] if ":///" in url else ""
            if path and path != ":memory:" and not path.startswith("file:"):
                _private_file(Path(path.split("?", 1)[0]))
            self.engine: Engine = sa.create_engine(
                url,
                echo=echo,
                connect_args={"check_same_thread": False, "timeout": 30},
                pool_size=20,
                max_overflow=40,
            )
            _tune_sqlite(self.engine)
        else:
            self.engine = sa.create_engine(
                url, echo=echo, pool_pre_ping=True, pool_size=10, max_overflow=20
            )

    @contextmanager
    def write(self) -> Iterator[Connection]:
        """A read-write transaction, committed on success and rolled back on error."""
        with self.engine.begin() as conn:
            yield conn

    @contextmanager
    def read(self) -> Iterator[Connection]:
        """A read-only transaction (a consistent snapshot on both databases)."""
        with self.engine.connect() as raw:
            options: dict[str, Any] = {_READ_ONLY: True}
            if not self.is_sqlite:
                # READ COMMITTED would let one response mix two moments (a batch's
                # counts from after a commit, its completed_at from before it).
                options["isolation_level"] = "REPEATABLE READ"
            conn = raw.execution_options(**options)
            with conn.begin():
                yield conn

    def dispose(self) -> None:
        self.engine.dispose()


def _private_file(path: Path) -> None:
    """Create the database file owner-only, or make it and its WAL files so."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    # Create it only when missing: closing any descriptor of a SQLite file drops every
    # POSIX lock this process holds on it, so an open-and-close while another engine
    # in the process has the database open breaks its locking (disk I/O errors).
    if not path.exists():
        with contextlib.suppress(FileExistsError):
            os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600))
    for each in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        with contextlib.suppress(FileNotFoundError):
            if stat.S_IMODE(each.stat().st_mode) != 0o600:
                each.chmod(0o600)


def _tune_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Take transaction control away from pysqlite so BEGIN is ours to emit.
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute("PRAGMA busy_timeout=30000")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        if conn.get_execution_options().get(_READ_ONLY):
            conn.exec_driver_sql("BEGIN")
        else:
            conn.exec_driver_sql("BEGIN IMMEDIATE")
