"""The library store: results and features of the user's photos in one SQLite file in the data folder.

WAL mode, so that the window and a ``classify`` read and write at once (one writer at a time,
short transactions, a busy timeout). Paths are stored as the file system's bytes, so names that
are not UTF-8 work too. Every problem (a corrupt file, a lock held past the timeout, a read-only
folder, a full disk) is said once through ``on_problem`` and the run goes on without the store: a
corrupt file is first set aside (renamed, kept for inspection) and a new one started.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from vit_desktop.core.files import make_dirs
from vit_desktop.core.paths import data_dir
from vit_desktop.core.types import ClassifyResult, ModelCard

from .keys import FileStamp, card_from_json, card_to_json
from .sqlite_file import Transaction, connect, is_corrupt, reason, rows_for_paths, set_aside, size_on_disk

log = logging.getLogger(__name__)

FILE_NAME = "library.sqlite3"
#: How long a writer waits for another process's transaction before the run goes on without the store.
BUSY_TIMEOUT_S = 10.0


T = TypeVar("T")


def library_path(folder: Path | None = None) -> Path:
    """Where the store lives: ``library.sqlite3`` in the data folder (``$VIT_DESKTOP_DATA_DIR``)."""
    return (folder if folder is not None else data_dir()) / FILE_NAME


@dataclass(frozen=True)
class StoredPhoto:
    """What the store holds of one photo for one model: each part None where nothing is stored."""

    image_size: tuple[int, int] | None
    notes: tuple[str, ...]
    #: float32 (classes,): the model's answer over all its classes.
    probabilities: np.ndarray | None
    #: float32 (hidden,): the pooled features of the model's backbone.
    features: np.ndarray | None
    #: The model's own open-set score (a nearest-photo similarity, a mass before the head's softmax),
    #: where a run that applies it stored it with the answer.
    known: float | None = None


@dataclass(frozen=True)
class StoredHashes:
    """A photo's stored perceptual hashes, and its size where a decode found it."""

    data: bytes
    image_size: tuple[int, int] | None


@dataclass(frozen=True)
class KnownModel:
    """A model file the store has seen: its card, and the hashes of its tensors (all, backbone)."""

    card: ModelCard
    tensors: tuple[str, str]


@dataclass(frozen=True)
class KnownCompute:
    """What "auto" (or an explicit device and precision) resolved to on this machine last time."""

    device_type: str
    device_name: str
    precision: str
    why: str


@dataclass(frozen=True)
class LibraryStats:
    path: Path
    size_bytes: int
    photos: int
    results: int
    features: int
    models: int


def _ignore(_line: str) -> None:
    pass


def _unchanged(conn: sqlite3.Connection, columns: str, joins: str, params: tuple[object, ...],
               stamps: Sequence[FileStamp]) -> Iterator[tuple[FileStamp, list[Any]]]:
    """Each of ``stamps`` whose file the store knows unchanged (same size, time and quick hash),
    with ``columns`` of its row in ``files f`` and ``joins``. A changed file is left out: it is
    computed again, and what is stored of it replaced when saved."""
    by_path = {os.fsencode(s.path): s for s in stamps}
    query = f"SELECT f.path, f.size, f.mtime_ns, f.quick, {columns} FROM files f {joins} WHERE f.path IN ({{}})"
    for path, size, mtime_ns, quick, *rest in rows_for_paths(conn, query, params, list(by_path)):
        s = by_path[path]
        if (s.size, s.mtime_ns, s.quick) == (size, mtime_ns, quick):
            yield s, rest


class Library:
    """One connection to the store; use it from the thread that opened it."""

    def __init__(self, path: Path, conn: sqlite3.Connection, on_problem: Callable[[str], None]) -> None:
        self.path = path
        self._conn: sqlite3.Connection | None = conn
        self._on_problem = on_problem
        #: Why the store stopped being used during this run, if it did.
        self.problem = ""

    # -- opening ---------------------------------------------------------------------------------

    @classmethod
    def open(cls, folder: Path | None = None, *, on_problem: Callable[[str], None] = _ignore,
             timeout: float = BUSY_TIMEOUT_S) -> Library | None:
        """The store in ``folder`` (the data folder by default), created when missing; None, after
        one line to ``on_problem``, when it cannot be used. A corrupt store is set aside first."""
        path = library_path(folder)
        try:
            make_dirs(path.parent)
        except OSError as exc:
            on_problem(f"library {path} cannot be created ({reason(exc)}): this run goes on without it")
            return None
        for attempt in (1, 2):
            try:
                return cls(path, connect(path, timeout), on_problem)
            except sqlite3.DatabaseError as exc:
                if is_corrupt(exc) and attempt == 1:
                    aside = set_aside(path)
                    on_problem(f"library {path} is damaged ({reason(exc)}): kept as {aside.name}, starting a new one")
                    continue
                on_problem(f"library {path} cannot be used ({reason(exc)}): this run goes on without it")
                return None
            except OSError as exc:
                on_problem(f"library {path} cannot be used ({reason(exc)}): this run goes on without it")
                return None
        return None  # pragma: no cover - the loop returns

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    @property
    def usable(self) -> bool:
        return self._conn is not None

    def _guard(self, what: str, default: T, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn`` on the connection; any database problem says one line, ends the store's use
        for this run and returns ``default``."""
        conn = self._conn
        if conn is None:
            return default
        try:
            return fn(conn)
        except (sqlite3.Error, OSError) as exc:
            self._give_up(what, exc)
            return default

    def _give_up(self, what: str, exc: BaseException) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.close()
            except sqlite3.Error:
                pass
        corrupt = isinstance(exc, sqlite3.DatabaseError) and is_corrupt(exc)
        where = self.path
        if corrupt:
            where = set_aside(self.path)
        self.problem = reason(exc)
        kept = f"; kept as {where.name}, the next run starts a new one" if corrupt else ""
        self._on_problem(f"library {self.path}: could not {what} ({self.problem}){kept}: "
                         "this run goes on without it")

    # -- photos ----------------------------------------------------------------------------------

    def lookup(self, stamps: Sequence[FileStamp], *, model: str | None, backbone: str | None) -> dict[str, StoredPhoto]:
        """What is stored of each photo for ``model`` (its answer) or ``backbone`` (its features), by
        path, for the photos whose file has not changed since."""

        def run(conn: sqlite3.Connection) -> dict[str, StoredPhoto]:
            found: dict[str, StoredPhoto] = {}
            rows = _unchanged(conn, "f.width, f.height, f.notes, r.probabilities, x.data, r.known",
                              "LEFT JOIN results r ON r.file_id = f.id AND r.model = ? "
                              "LEFT JOIN features x ON x.file_id = f.id AND x.backbone = ?",
                              (model or "", backbone or ""), stamps)
            for s, (width, height, notes, probs, feats, known) in rows:
                if probs is None and feats is None:
                    continue  # known, but nothing of this model or backbone
                found[s.path] = StoredPhoto(
                    image_size=(width, height) if width is not None else None,
                    notes=tuple(json.loads(notes)),
                    probabilities=None if probs is None else np.frombuffer(probs, dtype=np.float32),
                    features=None if feats is None else np.frombuffer(feats, dtype=np.float32),
                    known=known,
                )
            return found

        return self._guard("read it", {}, run)

    def save(self, items: Iterable[tuple[FileStamp, ClassifyResult]], *, model: str | None,
             backbone: str | None, own_score: bool = False) -> None:
        """Keep each result (its probabilities, and its features where it has them), in one short
        transaction; a file whose stamp changed loses what was stored for its old content.
        ``own_score``: the results' ``known_score`` is the model's own open-set score, kept too."""
        rows = [(s, r) for s, r in items if r.ok]
        if not rows:
            return

        def run(conn: sqlite3.Connection) -> None:
            with Transaction(conn):
                for stamp, r in rows:
                    file_id = _file_row(conn, stamp, r)
                    if model is not None and r.probabilities is not None:
                        # The same model's probabilities are the same numbers: a run that had no
                        # own score to give keeps the one stored before.
                        conn.execute("INSERT INTO results(file_id, model, probabilities, known) VALUES (?, ?, ?, ?) "
                                     "ON CONFLICT(model, file_id) DO UPDATE SET "
                                     "probabilities = excluded.probabilities, "
                                     "known = coalesce(excluded.known, results.known)",
                                     (file_id, model, _blob(r.probabilities), r.known_score if own_score else None))
                    if backbone is not None and r.features is not None:
                        conn.execute("INSERT OR REPLACE INTO features(file_id, backbone, data) VALUES (?, ?, ?)",
                                     (file_id, backbone, _blob(r.features)))

        self._guard("write to it", None, run)

    def features(self, backbone: str, paths: Sequence[str] | None = None) -> dict[str, np.ndarray]:
        """Stored features of ``backbone`` by path (all of them, or those of ``paths``), whatever
        the files look like now: the caller checks stamps where it matters."""

        def run(conn: sqlite3.Connection) -> dict[str, np.ndarray]:
            query = "SELECT f.path, x.data FROM features x JOIN files f ON f.id = x.file_id WHERE x.backbone = ?"
            if paths is None:
                rows: Iterable[tuple[bytes, bytes]] = conn.execute(query, (backbone,))
            else:
                rows = rows_for_paths(conn, query + " AND f.path IN ({})", (backbone,), [os.fsencode(p) for p in paths])
            return {os.fsdecode(p): np.frombuffer(d, dtype=np.float32) for p, d in rows}

        return self._guard("read it", {}, run)

    def hashes(self, algorithm: str, stamps: Sequence[FileStamp]) -> dict[str, StoredHashes]:
        """The stored hashes of ``algorithm`` by path, for the photos whose file has not changed since."""

        def run(conn: sqlite3.Connection) -> dict[str, StoredHashes]:
            rows = _unchanged(conn, "f.width, f.height, h.data",
                              "JOIN hashes h ON h.file_id = f.id AND h.algorithm = ?", (algorithm,), stamps)
            return {s.path: StoredHashes(bytes(data), (width, height) if width is not None else None)
                    for s, (width, height, data) in rows}

        return self._guard("read it", {}, run)

    def save_hashes(self, algorithm: str, items: Iterable[tuple[FileStamp, bytes, tuple[int, int] | None]]) -> None:
        """Keep each photo's hashes (and its size), in one short transaction; a file whose stamp
        changed loses what was stored for its old content, as :meth:`save` does."""
        rows = list(items)
        if not rows:
            return

        def run(conn: sqlite3.Connection) -> None:
            with Transaction(conn):
                for stamp, data, size in rows:
                    file_id = _file_row_of(conn, stamp, size)
                    conn.execute("INSERT OR REPLACE INTO hashes(file_id, algorithm, data) VALUES (?, ?, ?)",
                                 (file_id, algorithm, data))

        self._guard("write to it", None, run)

    # -- models and machines ------------------------------------------------------------------------

    def known_model(self, path: Path, stamp: tuple[int, int]) -> KnownModel | None:
        """The card and tensor hashes of the model file at ``path``, if it has not changed since."""

        def run(conn: sqlite3.Connection) -> KnownModel | None:
            row = conn.execute("SELECT size, mtime_ns, tensors, backbone, card FROM models WHERE path = ?",
                               (os.fsencode(str(path)),)).fetchone()
            if row is None or (row[0], row[1]) != stamp:
                return None
            try:
                return KnownModel(card_from_json(row[4]), (row[2], row[3]))
            except (ValueError, KeyError, TypeError):
                return None

        return self._guard("read it", None, run)

    def remember_model(self, path: Path, stamp: tuple[int, int], card: ModelCard, tensors: tuple[str, str]) -> None:
        def run(conn: sqlite3.Connection) -> None:
            with Transaction(conn):
                conn.execute("INSERT OR REPLACE INTO models(path, size, mtime_ns, tensors, backbone, card) "
                             "VALUES (?, ?, ?, ?, ?, ?)",
                             (os.fsencode(str(path)), stamp[0], stamp[1], tensors[0], tensors[1], card_to_json(card)))

        self._guard("write to it", None, run)

    def alias(self, source: str) -> Path | None:
        """The file a model name ("vit_b_16", a saved model's name) stood for last time."""

        def run(conn: sqlite3.Connection) -> Path | None:
            row = conn.execute("SELECT path FROM aliases WHERE source = ?", (source,)).fetchone()
            return Path(os.fsdecode(row[0])) if row else None

        return self._guard("read it", None, run)

    def set_alias(self, source: str, path: Path) -> None:
        def run(conn: sqlite3.Connection) -> None:
            with Transaction(conn):
                conn.execute("INSERT OR REPLACE INTO aliases(source, path) VALUES (?, ?)",
                             (source, os.fsencode(str(path))))

        self._guard("write to it", None, run)

    def known_compute(self, request: str, fingerprint: str) -> KnownCompute | None:
        def run(conn: sqlite3.Connection) -> KnownCompute | None:
            row = conn.execute("SELECT fingerprint, device, device_name, precision, why FROM computes "
                               "WHERE request = ?", (request,)).fetchone()
            if row is None or row[0] != fingerprint:
                return None
            return KnownCompute(*row[1:])

        return self._guard("read it", None, run)

    def remember_compute(self, request: str, fingerprint: str, compute: KnownCompute) -> None:
        def run(conn: sqlite3.Connection) -> None:
            with Transaction(conn):
                conn.execute("INSERT OR REPLACE INTO computes VALUES (?, ?, ?, ?, ?, ?)",
                             (request, fingerprint, compute.device_type, compute.device_name, compute.precision,
                              compute.why))

        self._guard("write to it", None, run)

    # -- the window's last list ---------------------------------------------------------------------

    def session(self) -> list[str]:
        """The photos the window listed when it last closed, in their order."""

        def run(conn: sqlite3.Connection) -> list[str]:
            return [os.fsdecode(p) for (p,) in conn.execute("SELECT path FROM session ORDER BY position")]

        return self._guard("read it", [], run)

    def set_session(self, paths: Sequence[str]) -> None:
        def run(conn: sqlite3.Connection) -> None:
            with Transaction(conn):
                conn.execute("DELETE FROM session")
                conn.executemany("INSERT INTO session(position, path) VALUES (?, ?)",
                                 ((i, os.fsencode(p)) for i, p in enumerate(paths)))

        self._guard("write to it", None, run)

    # -- upkeep -------------------------------------------------------------------------------------

    def stats(self) -> LibraryStats | None:
        def run(conn: sqlite3.Connection) -> LibraryStats:
            counts = [conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
                      for table in ("files", "results", "features", "models")]
            return LibraryStats(self.path, size_on_disk(self.path), *counts)

        return self._guard("read it", None, run)

    def clear(self) -> None:
        """Empty the store (every photo, model and machine it knew) and give the space back."""

        def run(conn: sqlite3.Connection) -> None:
            with Transaction(conn):
                for table in ("results", "features", "hashes", "files", "models", "aliases", "computes", "session"):
                    conn.execute(f"DELETE FROM {table}")
            conn.execute("VACUUM")
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")

        self._guard("empty it", None, run)


# ------------------------------------------------------------------------------------------------
# Rows


def _file_row(conn: sqlite3.Connection, stamp: FileStamp, r: ClassifyResult) -> int:
    """The id of the photo's row, made or brought up to date; what was stored for an older
    content of the file is dropped."""
    path = os.fsencode(stamp.path)
    width, height = r.image_size if r.image_size is not None else (None, None)
    notes = json.dumps(list(r.notes), ensure_ascii=False)
    row = conn.execute("SELECT id, size, mtime_ns, quick FROM files WHERE path = ?", (path,)).fetchone()
    if row is None:
        cur = conn.execute("INSERT INTO files(path, size, mtime_ns, quick, width, height, notes) "
                           "VALUES (?, ?, ?, ?, ?, ?, ?)",
                           (path, stamp.size, stamp.mtime_ns, stamp.quick, width, height, notes))
        assert cur.lastrowid is not None
        return cur.lastrowid
    file_id = int(row[0])
    if (row[1], row[2], row[3]) != (stamp.size, stamp.mtime_ns, stamp.quick):
        _forget_content(conn, file_id)
    conn.execute("UPDATE files SET size = ?, mtime_ns = ?, quick = ?, width = ?, height = ?, notes = ? WHERE id = ?",
                 (stamp.size, stamp.mtime_ns, stamp.quick, width, height, notes, file_id))
    return file_id


def _file_row_of(conn: sqlite3.Connection, stamp: FileStamp, image_size: tuple[int, int] | None) -> int:
    """Like :func:`_file_row`, for what is known of a photo without classifying it (its size); the
    notes a classification kept stay while the file is unchanged."""
    path = os.fsencode(stamp.path)
    width, height = image_size if image_size is not None else (None, None)
    row = conn.execute("SELECT id, size, mtime_ns, quick FROM files WHERE path = ?", (path,)).fetchone()
    if row is None:
        cur = conn.execute("INSERT INTO files(path, size, mtime_ns, quick, width, height) VALUES (?, ?, ?, ?, ?, ?)",
                           (path, stamp.size, stamp.mtime_ns, stamp.quick, width, height))
        assert cur.lastrowid is not None
        return cur.lastrowid
    file_id = int(row[0])
    if (row[1], row[2], row[3]) != (stamp.size, stamp.mtime_ns, stamp.quick):
        _forget_content(conn, file_id)
        conn.execute("UPDATE files SET size = ?, mtime_ns = ?, quick = ?, notes = '[]' WHERE id = ?",
                     (stamp.size, stamp.mtime_ns, stamp.quick, file_id))
    if width is not None:
        conn.execute("UPDATE files SET width = ?, height = ? WHERE id = ?", (width, height, file_id))
    return file_id


def _forget_content(conn: sqlite3.Connection, file_id: int) -> None:
    """What was stored for an older content of a file."""
    for table in ("results", "features", "hashes"):
        conn.execute(f"DELETE FROM {table} WHERE file_id = ?", (file_id,))


def _blob(array: np.ndarray) -> bytes:
    return np.ascontiguousarray(array, dtype=np.float32).tobytes()


__all__ = [
    "BUSY_TIMEOUT_S",
    "FILE_NAME",
    "KnownCompute",
    "KnownModel",
    "Library",
    "LibraryStats",
    "StoredHashes",
    "StoredPhoto",
    "library_path",
]
