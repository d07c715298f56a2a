"""Similar photos and duplicates of files and folders: what the library holds, and what it lacks computed.

A :class:`PrintsRun` scans what the user named, then gathers each photo's prints in two stages, a
step at a time (so that a caller reports progress and cancels between steps, as with a
:class:`~.runs.FolderRun`):

1. perceptual hashes (duplicates only): read from the library, or decoded small and hashed on a
   few threads, and stored;
2. pooled features: read from the library (stored by any earlier run of a model with this
   backbone: ``classify``, the window, a head trained later), or computed by classifying the photo
   through a :class:`~.runs.FolderRun`, which stores its answer and features too.

Then :meth:`PrintsRun.prints` is plain data for :func:`~vit_desktop.core.library.similar.similar_to`
and :func:`~vit_desktop.core.library.duplicates.duplicate_groups`. :func:`find_similar` and
:func:`find_duplicates` do all of it in one call. Nothing here writes to a photo, moves or deletes one.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from vit_desktop.core.errors import CancelToken, ImageError
from vit_desktop.core.io.image_hash import ALGORITHM, CODES, HASH_BYTES, photo_hashes
from vit_desktop.core.io.scan import scan
from vit_desktop.core.library.duplicates import DEFAULT_RULE, DuplicateGroup, DuplicateRule, duplicate_groups
from vit_desktop.core.library.keys import FileStamp
from vit_desktop.core.library.prints import PhotoPrints
from vit_desktop.core.library.similar import Neighbour, similar_to

from .options import ClassifyOptions

if TYPE_CHECKING:
    from vit_desktop.core.library.store import Library

    from .loading import ModelChoice

#: Photos hashed per step (and per transaction of the library).
HASH_STEP = 64
#: Stages of a run, in order.
HASHING = "hashing"
FEATURES = "features"


@dataclass(frozen=True)
class PrintsProgress:
    """A run so far: its stage, and the photos done of that stage's total."""

    stage: str
    done: int
    total: int


class PrintsRun:
    """The prints of the photos under ``paths``: hashes when ``hashes``, features when ``model``.

    ``library`` (optional) is read for what is stored and written with what is computed.
    ``first``: the photo similar photos are asked for; listed where the scan finds it under ``paths``,
    or first when it is elsewhere. Raises :class:`~vit_desktop.core.errors.Cancelled` when ``cancel``
    is set during the scan.
    """

    def __init__(self, paths: Sequence[str | Path], *, model: ModelChoice | None, hashes: bool,
                 library: Library | None = None, cancel: CancelToken | None = None, batch_size: int = 16,
                 first: str | Path | None = None) -> None:
        found = scan(paths, cancel=cancel)
        files = [str(f) for f in found.files]
        errors = list(found.errors)
        #: The file ``first`` named, as it is listed (None when it could not be scanned).
        self.first: str | None = None
        if first is not None:
            # Inside the folders given (however its path is spelled): listed once, where it was found.
            listed = {os.path.normcase(os.path.abspath(f)): f for f in files}
            self.first = listed.get(os.path.normcase(os.path.abspath(first)))
            if self.first is None:
                alone = scan([first], cancel=cancel)
                errors = list(alone.errors) + errors
                if alone.files:
                    self.first = str(alone.files[0])
                    files.insert(0, self.first)
        self.model = model
        self.want_hashes = hashes
        self.library = library
        self.cancel = cancel
        self.batch_size = batch_size
        #: The image files found, in order; and (display path, reason) for what could not be scanned.
        self.files: tuple[str, ...] = tuple(files)
        self.scan_errors: tuple[tuple[str, str], ...] = tuple(errors)
        #: Files found twice (given twice, inside a folder given too, through a link): listed once.
        self.repeated = found.duplicates
        #: Why each photo that could not be read could not be, by path, in the order found.
        self.unreadable: dict[str, str] = {}
        #: How the prints were had: hashes read from the library or computed; features read from
        #: the library or computed by classifying.
        self.hashes_from_library = 0
        self.hashed = 0
        self.features_from_library = 0
        self.classified = 0
        self._stamps: dict[str, FileStamp] = {}
        self._hashes: dict[str, np.ndarray] = {}
        self._sizes: dict[str, tuple[int, int]] = {}
        self._features: dict[str, np.ndarray] = {}
        self._done = False

    # -- the steps -----------------------------------------------------------------------------------

    def steps(self) -> Iterator[PrintsProgress]:
        """Hashing (where asked), then features (where a model is given), a batch at a time.

        Raises :class:`~vit_desktop.core.errors.Cancelled` between batches once ``cancel`` is set.
        """
        for i, path in enumerate(self.files):
            if self.cancel is not None and i % 256 == 0:
                self.cancel.raise_if_cancelled()
            stamp = FileStamp.of(path)
            if stamp is None:
                self.unreadable[path] = "cannot be read"
            else:
                self._stamps[path] = stamp
        if self.want_hashes:
            yield from self._hash_steps()
        if self.model is not None:
            yield from self._feature_steps(self.model)
        self._done = True

    def _readable(self) -> list[str]:
        return [p for p in self.files if p in self._stamps and p not in self.unreadable]

    def _hash_steps(self) -> Iterator[PrintsProgress]:
        paths = self._readable()
        stamps = [self._stamps[p] for p in paths]
        stored = self.library.hashes(ALGORITHM, stamps) if self.library is not None else {}
        for path, row in stored.items():
            codes = np.frombuffer(row.data, dtype=np.uint8)
            if codes.size == CODES * HASH_BYTES:
                self._hashes[path] = codes.reshape(CODES, HASH_BYTES)
                if row.image_size is not None:
                    self._sizes[path] = row.image_size
        self.hashes_from_library = len(self._hashes)
        missing = [p for p in paths if p not in self._hashes]
        done = len(paths) - len(missing)
        yield PrintsProgress(HASHING, done, len(paths))
        if not missing:
            return
        # Decoding releases the GIL: a few threads hash several photos at once.
        workers = max(1, min(8, os.cpu_count() or 1))
        with ThreadPoolExecutor(workers, thread_name_prefix="vit-hash") as pool:
            for start in range(0, len(missing), HASH_STEP):
                if self.cancel is not None:
                    self.cancel.raise_if_cancelled()
                chunk = missing[start : start + HASH_STEP]
                computed = []
                for path, outcome in zip(chunk, pool.map(_hash_one, chunk)):
                    if isinstance(outcome, str):
                        self.unreadable[path] = outcome
                        continue
                    codes, size = outcome
                    self._hashes[path] = codes
                    self._sizes[path] = size
                    computed.append((self._stamps[path], codes.tobytes(), size))
                    self.hashed += 1
                if self.library is not None:
                    self.library.save_hashes(ALGORITHM, computed)
                done += len(chunk)
                yield PrintsProgress(HASHING, done, len(paths))

    def _feature_steps(self, model: ModelChoice) -> Iterator[PrintsProgress]:
        from .runs import FolderRun

        paths = self._readable()
        keys = model.keys
        if self.library is not None and keys is not None:
            stored = self.library.lookup([self._stamps[p] for p in paths], model=None, backbone=keys.backbone)
            for path, photo in stored.items():
                if photo.features is not None:
                    self._features[path] = photo.features
                    if photo.image_size is not None:
                        self._sizes.setdefault(path, photo.image_size)
        self.features_from_library = len(self._features)
        missing = [p for p in paths if p not in self._features]
        yield PrintsProgress(FEATURES, len(paths) - len(missing), len(paths))
        if not missing:
            return
        # Classified again where only an answer is stored (a class-map run keeps no features).
        run = FolderRun(model, missing, ClassifyOptions(batch_size=self.batch_size, keep_features=True),
                        cancel=self.cancel, library=self.library, reuse=False)
        try:
            for step in run.steps():
                for r in step.results:
                    if r.ok and r.features is not None:
                        self._features[r.path] = r.features
                        if r.image_size is not None:
                            self._sizes.setdefault(r.path, r.image_size)
                    elif r.error:
                        self.unreadable.setdefault(r.path, r.error)
                self.classified = run.classified
                yield PrintsProgress(FEATURES, len(paths) - len(missing) + step.done, len(paths))
        finally:
            run.close()
        if self.cancel is not None:  # a folder run ends early when cancelled: prints are not half made
            self.cancel.raise_if_cancelled()

    # -- the answer ----------------------------------------------------------------------------------

    def prints(self) -> PhotoPrints:
        """The prints of every photo that could be read (after :meth:`steps`), in the order found:
        with hashes (and features where they could be had) when hashes were asked for, else the
        photos with features."""
        if not self._done:
            raise RuntimeError("the run's steps have not all been taken")
        if self.want_hashes:
            paths = [p for p in self.files if p in self._hashes]
        else:
            paths = [p for p in self.files if p in self._features]
        features = None
        if self.model is not None:
            dims = next((f.shape[0] for f in self._features.values()), 0)
            features = np.zeros((len(paths), dims), np.float32)
            for i, p in enumerate(paths):
                if p in self._features:
                    features[i] = self._features[p]
        hashes = np.stack([self._hashes[p] for p in paths]) if self.want_hashes and paths else None
        if self.want_hashes and hashes is None:
            hashes = np.zeros((0, CODES, HASH_BYTES), np.uint8)
        stamps = [self._stamps[p] for p in paths]
        sizes = [self._sizes.get(p) for p in paths]
        return PhotoPrints.of(
            paths, hashes=hashes, features=features,
            shapes=[s if s is not None else (0, 0) for s in sizes],
            sizes=[s.size for s in stamps], mtimes=[s.mtime_ns for s in stamps],
            digests=_digests(stamps, self.cancel) if self.want_hashes else None,
        )

    def image_size(self, path: str) -> tuple[int, int] | None:
        """(width, height) of a photo as shown, where a decode found it."""
        return self._sizes.get(path)

    def close(self) -> None:
        """Nothing is held between steps; here for symmetry with :class:`~.runs.FolderRun`."""


def _hash_one(path: str) -> tuple[np.ndarray, tuple[int, int]] | str:
    """A photo's hashes and size, or why it could not be read (runs on a pool thread)."""
    try:
        return photo_hashes(path)
    except ImageError as exc:
        return str(exc)


def _digests(stamps: Sequence[FileStamp], cancel: CancelToken | None) -> list[bytes | None]:
    """BLAKE2b of the whole file, for the files whose size and quick hash another file shares:
    byte-for-byte copies are confirmed, not guessed; the others are never read again."""
    by_key: dict[tuple[int, bytes], list[int]] = {}
    for i, s in enumerate(stamps):
        by_key.setdefault((s.size, s.quick), []).append(i)
    out: list[bytes | None] = [None] * len(stamps)
    for rows in by_key.values():
        if len(rows) < 2:
            continue
        if cancel is not None:
            cancel.raise_if_cancelled()
        for i in rows:
            out[i] = _content_hash(stamps[i].path)
    return out


def _content_hash(path: str) -> bytes | None:
    h = hashlib.blake2b(digest_size=32)
    try:
        with open(path, "rb") as f:
            while chunk := f.read(1 << 20):
                h.update(chunk)
    except OSError:
        return None
    return h.digest()


# ------------------------------------------------------------------------------------------------
# One call each: what the command line does, and what the window's compute thread may do.


def run_to_end(run: PrintsRun, progress: Callable[[PrintsProgress], None] | None = None) -> PhotoPrints:
    """Take every step of ``run`` (reporting each to ``progress``) and return its prints."""
    try:
        for step in run.steps():
            if progress is not None:
                progress(step)
    finally:
        run.close()
    return run.prints()


@dataclass(frozen=True)
class SimilarAnswer:
    """The photos most like ``photo``, best first (cosine of features); empty when it could not be read."""

    photo: str | None
    neighbours: tuple[Neighbour, ...]


def find_similar(model: ModelChoice, photo: str | Path, paths: Sequence[str | Path], *, top_k: int = 10,
                 library: Library | None = None, cancel: CancelToken | None = None,
                 progress: Callable[[PrintsProgress], None] | None = None,
                 batch_size: int = 16) -> tuple[SimilarAnswer, PrintsRun]:
    """The ``top_k`` photos under ``paths`` most like ``photo`` (which may be among them or not),
    and the run that gathered their features (its counts and unreadable photos)."""
    run = PrintsRun(paths, model=model, hashes=False, library=library, cancel=cancel, batch_size=batch_size,
                    first=photo)
    prints = run_to_end(run, progress)
    query = run.first
    if query is None or query not in prints:
        return SimilarAnswer(None, ()), run
    return SimilarAnswer(query, tuple(similar_to(prints, query, top_k=top_k))), run


def find_duplicates(model: ModelChoice | None, paths: Sequence[str | Path], *, rule: DuplicateRule = DEFAULT_RULE,
                    library: Library | None = None, cancel: CancelToken | None = None,
                    progress: Callable[[PrintsProgress], None] | None = None,
                    batch_size: int = 16) -> tuple[list[DuplicateGroup], PrintsRun]:
    """The groups of photos under ``paths`` that are one picture, and the run that gathered their
    prints. Without a model, light crops are not found (they need the features)."""
    run = PrintsRun(paths, model=model, hashes=True, library=library, cancel=cancel, batch_size=batch_size)
    prints = run_to_end(run, progress)
    return duplicate_groups(prints, rule, cancel=cancel), run


__all__ = [
    "FEATURES",
    "HASHING",
    "HASH_STEP",
    "PrintsProgress",
    "PrintsRun",
    "SimilarAnswer",
    "find_duplicates",
    "find_similar",
    "run_to_end",
]
