"""Files and folders -> results, batch by batch: the one loop behind a folder run in the window and
``vit-desktop classify``.

A :class:`FolderRun` scans what the user named, then answers each photo the cheapest way that
gives the same answer: from the library when the model's answer for the unchanged file is stored;
from the stored features through the model's head when only the backbone's features are (a head
trained later); else by classifying it, in the engine's batches, and storing what that gives.
Each step is a :class:`RunProgress` in the order the photos were found, so a caller reports progress
and checks for cancellation between steps (the window's compute thread takes one step per event;
the command line loops over them).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from vit_desktop.core.errors import CancelToken
from vit_desktop.core.types import ClassifyResult, model_rule

from . import answers
from .open_set import run_rule
from .options import ClassifyOptions

if TYPE_CHECKING:  # the engine imports torch
    import numpy as np

    from vit_desktop.core.io.scan import ScanResult
    from vit_desktop.core.library.keys import FileStamp
    from vit_desktop.core.library.store import Library, StoredPhoto

    from .decoding import Decoding
    from .engine import Engine
    from .loading import ModelChoice

#: Photos per step when they come from the library: cheap, so bigger steps, fewer events.
STORED_STEP = 256


@dataclass(frozen=True)
class RunProgress:
    """A run so far: the results of its latest step (possibly none) and the totals."""

    results: tuple[ClassifyResult, ...]
    done: int
    total: int
    #: How the photos so far were answered: read from the library, from stored features, classified.
    from_library: int = 0
    from_features: int = 0
    classified: int = 0


class FolderRun:
    """One run over files and folders: scanned when made, answered as :meth:`steps` is iterated.

    ``library`` (optional) is read for what is stored and written with what is computed;
    ``reuse=False`` computes every photo again (and refreshes the store), as maps need the photo.
    Raises :class:`~vit_desktop.core.errors.Cancelled` when ``cancel`` is set during the scan;
    after that, cancelling ends :meth:`steps` at the next batch boundary. ``found`` is the scan
    of ``paths`` when the caller made it already. ``decoding`` (of the scan's files, from
    :func:`decoding_before_load`) is used if the photos to classify are those, and is closed with
    the run either way.
    """

    def __init__(self, model: ModelChoice, paths: Sequence[str | Path], options: ClassifyOptions,
                 *, cancel: CancelToken | None = None, library: Library | None = None, reuse: bool = True,
                 found: ScanResult | None = None, decoding: Decoding | None = None) -> None:
        if found is None:
            # Here, not at the top: the window imports RunProgress at start-up, and scanning pulls
            # in Pillow and numpy, which it does not need until the first photo arrives.
            from vit_desktop.core.io.scan import scan

            found = scan(paths, cancel=cancel)
        roots = [Path(p) for p in paths]
        folders = [root.is_dir() for root in roots]
        self.model = model
        self.options = options
        self.cancel = cancel
        self.library = library if model.keys is not None else None
        self.reuse = reuse
        #: What decides each result's ``uncertain`` in this run (``rule.explain(r.known_score)`` says why).
        self.rule = run_rule(model.card, options)
        #: The run applies the model's own score, which reads the pooled token: the library keeps it
        #: with each answer (a nearest-photo similarity cannot be had from the probabilities).
        self._own_score = (options.threshold is None and options.categories is None
                           and model_rule(model.card).score != "max_probability")
        #: The image files found, in the order they are answered.
        self.files: tuple[Path, ...] = found.files
        #: Per file, its path relative to the folder it was found under (its name for a named file).
        self._relative = {
            str(f): f.relative_to(roots[origin]) if folders[origin] else Path(f.name)
            for f, origin in zip(found.files, found.origins)
        }
        #: Paths that could not be scanned, as results carrying the reason.
        self.scan_errors = tuple(ClassifyResult(path=p, error=reason) for p, reason in found.errors)
        #: Files skipped because they had been found already (given twice, reached through a link).
        self.duplicates = found.duplicates
        self.total = len(self.files) + len(self.scan_errors)
        self.done = 0
        #: How the photos were answered: from stored answers, from stored features, classified; and
        #: how many files could not be read (whatever the scan found that the decoder refused).
        self.from_library = 0
        self.from_features = 0
        self.classified = 0
        self.unreadable = 0
        self._batches: Iterator[list[ClassifyResult]] | None = None
        self._early = decoding

    def relative_path(self, path: str) -> Path:
        """Where a classified file sits under the path it was found in (to mirror folders)."""
        return self._relative[path]

    def steps(self) -> Iterator[RunProgress]:
        """First the scan's errors (possibly none), then the photos in order, a batch at a time."""
        self.done = len(self.scan_errors)
        yield self.progress(self.scan_errors)
        if self.cancel is not None and self.cancel.cancelled:
            return
        paths = [str(f) for f in self.files]
        try:
            stamps, stored = self._stored(paths)
            answered = self._answer_stored(paths, stamps, stored)
        except BaseException:
            self._close_early()
            raise
        to_compute = [p for p in paths if p not in answered]
        if not to_compute:
            self._close_early()
        pending = 0  # the index in ``paths`` of the next photo to hand out
        if to_compute:
            engine, decoding = self._engine(to_compute)
            keep = self.library is not None
            wanted = replace(self.options, keep_probabilities=self.options.keep_probabilities or keep,
                             keep_features=self.options.keep_features or keep)
            self._batches = engine.classify_batches(to_compute, wanted, cancel=self.cancel, decoding=decoding)
            for batch in self._batches:
                failed = sum(1 for r in batch if not r.ok)
                self.classified += len(batch) - failed
                self.unreadable += failed
                self._save(stamps, batch)
                for r in batch:
                    answered[r.path] = self._as_asked(r)
                # Everything up to this batch's last photo is known now: hand it out in order.
                last = paths.index(batch[-1].path, pending) + 1 if batch else pending
                out = tuple(answered.pop(p) for p in paths[pending:last])
                pending = last
                self.done += len(out)
                yield self.progress(out)
            if self.cancel is not None and self.cancel.cancelled:
                return
        for start in range(pending, len(paths), STORED_STEP):
            out = tuple(answered.pop(p) for p in paths[start : start + STORED_STEP])
            self.done += len(out)
            yield self.progress(out)

    def _engine(self, paths: list[str]) -> tuple[Engine, Decoding | None]:
        """The model's engine, loaded now if it is not yet; then the first photos are decoded
        meanwhile, on the core that importing torch leaves idle (their preprocessing is the card's,
        which the library knew without loading anything)."""
        early, self._early = self._early, None
        if self.model.loaded:
            if early is not None and [str(p) for p in early.paths] != paths:
                early.close()  # some photos were answered from the library: not the photos to classify
                early = None
            return self.model.engine(), early
        if early is not None:
            early.close()
        from .decoding import Decoding, loading, loading_ahead

        pp = self.model.card.preprocess
        keep = self.options.keep_images  # photos kept whole for maps: no more than a batch ahead
        ahead = self.options.batch_size if keep else loading_ahead(pp)
        decoding = Decoding(paths, pp, keep_images=keep, ahead=ahead, while_loading=True)
        try:
            with loading(decoding):
                return self.model.engine(), decoding
        except BaseException:
            decoding.close()
            raise

    def progress(self, results: tuple[ClassifyResult, ...] = ()) -> RunProgress:
        """Where the run stands, with these results as its latest step."""
        return RunProgress(results, self.done, self.total, self.from_library, self.from_features, self.classified)

    def close(self) -> None:
        """Stop early: the decoding pool of a half-streamed run is joined."""
        self._close_early()
        if self._batches is not None:
            close = getattr(self._batches, "close", None)
            if close is not None:
                close()

    def _close_early(self) -> None:
        if self._early is not None:
            self._early.close()
            self._early = None

    # -- the library --------------------------------------------------------------------------------

    def _stored(self, paths: list[str]) -> tuple[dict[str, FileStamp], dict[str, StoredPhoto]]:
        if self.library is None or not paths:
            return {}, {}
        from vit_desktop.core.library.keys import FileStamp

        stamps = {p: s for p in paths if (s := FileStamp.of(p)) is not None}
        if not self.reuse:
            return stamps, {}
        keys = self.model.keys
        assert keys is not None
        return stamps, self.library.lookup(list(stamps.values()), model=keys.model, backbone=keys.backbone)

    def _answer_stored(self, paths: list[str], stamps: dict[str, FileStamp],
                       stored: dict[str, StoredPhoto]) -> dict[str, ClassifyResult]:
        """Results for the photos whose answer, or whose features, are stored."""
        import numpy as np

        answered: dict[str, ClassifyResult] = {}
        # An answer is usable when it carries what the run's rule judges (the model's own score,
        # where that is not a matter of the probabilities).
        with_answer = [p for p in paths if (s := stored.get(p)) is not None and s.probabilities is not None
                       and (s.known is not None or not self._own_score)]
        with_features = [p for p in paths if p not in with_answer and (s := stored.get(p)) is not None
                         and s.features is not None]
        if with_answer:
            probs = np.stack([_array(stored[p].probabilities) for p in with_answer])
            known = np.array([stored[p].known for p in with_answer], dtype=np.float32) if self._own_score else None
            answered.update(self._results(with_answer, probs, known, stored))
            self.from_library = len(with_answer)
        if with_features:
            # A model whose backbone made these features (a head trained since): its head alone.
            feats = np.stack([_array(stored[p].features) for p in with_features])
            probs, known = self.model.engine().answer_features(feats, own_score=self._own_score)
            results = self._results(with_features, probs, known, stored, features=feats)
            answered.update(results)
            self.from_features = len(with_features)
            keys = self.model.keys
            if self.library is not None and keys is not None:
                self.library.save([(stamps[p], replace(r, features=None)) for p, r in results.items() if p in stamps],
                                  model=keys.model, backbone=None, own_score=self._own_score)
        return answered

    def _results(self, paths: list[str], probs: np.ndarray, own_known: np.ndarray | None,
                 stored: dict[str, StoredPhoto], features: np.ndarray | None = None) -> dict[str, ClassifyResult]:
        preds = answers.predictions(probs, self.model.card.labels, self.options)
        known = answers.known_scores(probs, self.options, own_known)
        out = {}
        for i, (p, pr) in enumerate(zip(paths, preds)):
            s = stored[p]
            out[p] = ClassifyResult(
                path=p,
                predictions=pr,
                uncertain=bool(known[i] < self.rule.threshold),
                known_score=float(known[i]),
                image_size=s.image_size,
                notes=s.notes,
                model=self.model.model_id,
                probabilities=probs[i].copy() if self.options.keep_probabilities else None,
                features=(s.features if features is None else features[i]) if self.options.keep_features else None,
            )
        return out

    def _save(self, stamps: dict[str, FileStamp], batch: list[ClassifyResult]) -> None:
        keys = self.model.keys
        if self.library is None or keys is None:
            return
        self.library.save([(stamps[r.path], r) for r in batch if r.path in stamps],
                          model=keys.model, backbone=keys.backbone, own_score=self._own_score)

    def _as_asked(self, r: ClassifyResult) -> ClassifyResult:
        """What the library needed kept and the caller did not ask for is dropped."""
        if (r.probabilities is not None and not self.options.keep_probabilities) or (
                r.features is not None and not self.options.keep_features):
            return replace(r, probabilities=r.probabilities if self.options.keep_probabilities else None,
                           features=r.features if self.options.keep_features else None)
        return r


def decoding_before_load(source: str, files: Sequence[Path], *, library: Library | None, device: str,
                         precision: str) -> Decoding | None:
    """``files`` (a run's scan) decoded, from now on, for model ``source`` as its file's header says
    (:mod:`vit_desktop.core.models.header`): call it before a model the library does not know is
    loaded (importing torch leaves a core idle), and give it to the :class:`FolderRun`. None when
    the library knows the model (the run decodes during the load itself) or the header does not say."""
    from vit_desktop.core.models.header import preprocess_hint

    from .decoding import Decoding, loading_ahead
    from .loading import is_known

    if not files or (library is not None and is_known(library, source, device=device, precision=precision)):
        return None
    pp = preprocess_hint(source)
    return Decoding(files, pp, ahead=loading_ahead(pp), while_loading=True) if pp is not None else None


def _array(a: np.ndarray | None) -> np.ndarray:
    assert a is not None  # the callers chose photos for which it is stored
    return a


__all__ = ["STORED_STEP", "FolderRun", "RunProgress", "decoding_before_load"]
