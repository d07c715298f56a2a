"""The library's SQLite file: its tables, opening it in WAL mode, transactions, and a damaged one set aside.

:mod:`store` keeps what it means (results, features, hashes, models); this module keeps how the
file is opened and what is done when it cannot be.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

#: Bumped when the tables change; a store of another version is set aside and started anew (it is a cache).
SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS files (
    id INTEGER PRIMARY KEY,
    path BLOB NOT NULL UNIQUE,
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    quick BLOB NOT NULL,
    width INTEGER,
    height INTEGER,
    notes TEXT NOT NULL DEFAULT '[]'
);
CREATE TABLE IF NOT EXISTS features (
    file_id INTEGER NOT NULL REFERENCES files(id) ON DELETE CASCADE,
    backbone TEXT NOT NULL,
    data BLOB NOT NULL,
    PRIMARY KEY (backbone, file_id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS results (
    file_id INTEGER NOT NULL REFERENCES files(id) ON DELETE CASCADE,
    model TEXT NOT NULL,
    probabilities BLOB NOT NULL,
    -- the model's own open-set score, where it reads the pooled token (not the probabilities)
    known REAL,
    PRIMARY KEY (model, file_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS features_of_file ON features(file_id);
CREATE INDEX IF NOT EXISTS results_of_file ON results(file_id);
CREATE TABLE IF NOT EXISTS models (
    path BLOB PRIMARY KEY,
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    tensors TEXT NOT NULL,
    backbone TEXT NOT NULL,
    card TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS aliases (source TEXT PRIMARY KEY, path BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS computes (
    request TEXT PRIMARY KEY,
    fingerprint TEXT NOT NULL,
    device TEXT NOT NULL,
    device_name TEXT NOT NULL,
    precision TEXT NOT NULL,
    why TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS session (position INTEGER PRIMARY KEY, path BLOB NOT NULL);
-- Perceptual hashes (duplicates): per photo and algorithm (which names the hash and its windows).
CREATE TABLE IF NOT EXISTS hashes (
    file_id INTEGER NOT NULL REFERENCES files(id) ON DELETE CASCADE,
    algorithm TEXT NOT NULL,
    data BLOB NOT NULL,
    PRIMARY KEY (algorithm, file_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS hashes_of_file ON hashes(file_id);
"""
#: Tables added since version 1 without changing the others: a store that lacks one gets it when
#: opened (every statement of the schema is "IF NOT EXISTS"), and keeps everything else.
_ADDED_TABLES = ("hashes",)

def connect(path: Path, timeout: float) -> sqlite3.Connection:
    # isolation_level None: transactions are begun explicitly (BEGIN IMMEDIATE takes the write
    # lock at once, so a busy store waits at the start instead of failing at the commit).
    # One thread at a time uses a connection, but not always the one that opened it: the window
    # closes its compute thread's connection once that thread has been joined.
    conn = sqlite3.connect(str(path), timeout=timeout, isolation_level=None, check_same_thread=False)
    try:
        _wal_mode(conn, timeout)
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA foreign_keys=ON")
        version = schema_version(conn)
        if version is None:
            with Transaction(conn):
                for statement in _SCHEMA.split(";"):
                    if statement.strip():
                        conn.execute(statement)
                conn.execute("INSERT OR REPLACE INTO meta(key, value) VALUES ('schema', ?)", (str(SCHEMA_VERSION),))
        elif version != SCHEMA_VERSION:
            raise sqlite3.DatabaseError(f"file is not a database of this version (schema {version}, "
                                        f"this program writes {SCHEMA_VERSION})")
        elif missing_tables(conn):
            try:
                with Transaction(conn):
                    for statement in _SCHEMA.split(";"):
                        if statement.strip():
                            conn.execute(statement)
            except sqlite3.OperationalError as exc:
                # A read-only or busy store still answers what it holds; what needs the new table
                # says so when it is asked for, and goes on without the store.
                log.info("library %s: tables not added (%s)", path, exc)
    except BaseException:
        conn.close()
        raise
    return conn


def _wal_mode(conn: sqlite3.Connection, timeout: float) -> None:
    """Put the file in WAL mode, waiting up to ``timeout`` for the other processes opening it.

    Switching a new file to WAL takes an exclusive lock, and SQLite gives up on that one at once
    instead of calling its busy handler: the window and a ``classify`` opening a new library
    together saw "database is locked" (3 processes at once: 12 of 180 opens).
    """
    deadline = time.monotonic() + timeout
    pause = 0.005
    while True:
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() + pause > deadline:
                raise
        time.sleep(pause)
        pause = min(2 * pause, 0.1)


def missing_tables(conn: sqlite3.Connection) -> bool:
    names = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    return not names.issuperset(_ADDED_TABLES)


def schema_version(conn: sqlite3.Connection) -> int | None:
    has_meta = conn.execute("SELECT name FROM sqlite_master WHERE type = 'table' AND name = 'meta'").fetchone()
    if not has_meta:
        return None
    row = conn.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()
    try:
        return int(row[0]) if row else None
    except ValueError:
        return -1


class Transaction:
    """BEGIN IMMEDIATE ... COMMIT, or ROLLBACK on any way out that is not a success."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def __enter__(self) -> sqlite3.Connection:
        self.conn.execute("BEGIN IMMEDIATE")
        return self.conn

    def __exit__(self, kind: type[BaseException] | None, *_rest: object) -> None:
        if kind is None:
            self.conn.execute("COMMIT")
        else:
            try:
                self.conn.execute("ROLLBACK")
            except sqlite3.Error:
                pass


#: Paths per query: well under SQLite's limit on bound parameters.
CHUNK = 500


def rows_for_paths(conn: sqlite3.Connection, query: str, params: tuple[object, ...],
                   paths: Sequence[bytes]) -> Iterator[tuple[Any, ...]]:
    """The rows of ``query`` for ``paths``: its ``{}`` (in ``f.path IN ({})``) takes the paths
    :data:`CHUNK` at a time, after ``params``."""
    for i in range(0, len(paths), CHUNK):
        chunk = paths[i : i + CHUNK]
        yield from conn.execute(query.format(",".join("?" * len(chunk))), (*params, *chunk))


def is_corrupt(exc: sqlite3.DatabaseError) -> bool:
    """A damaged or foreign file, as opposed to a lock, a full disk or a read-only folder."""
    if isinstance(exc, sqlite3.OperationalError):
        return False
    text = str(exc).lower()
    return any(word in text for word in ("not a database", "malformed", "corrupt", "of this version"))


def set_aside(path: Path) -> Path:
    """Rename a damaged store (and its WAL files) out of the way; returns the new name."""
    aside = path.with_name(f"{path.name}.broken-{time.strftime('%Y%m%d-%H%M%S')}")
    for suffix in ("", "-wal", "-shm"):
        try:
            os.replace(f"{path}{suffix}", f"{aside}{suffix}")
        except OSError:
            pass
    return aside


def size_on_disk(path: Path) -> int:
    total = 0
    for suffix in ("", "-wal", "-shm"):
        try:
            total += os.stat(f"{path}{suffix}").st_size
        except OSError:
            pass
    return total


def reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if isinstance(exc, OSError) and exc.strerror:
        text = exc.strerror
    return text[:1].lower() + text[1:]



__all__ = ["SCHEMA_VERSION", "CHUNK", "Transaction", "connect", "is_corrupt", "reason", "rows_for_paths", "set_aside",
           "size_on_disk"]
