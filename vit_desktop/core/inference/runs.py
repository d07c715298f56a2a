"""Files and folders -> results, batch by batch: the one loop behind a folder run in the window and
``vit-desktop classify``.

A :class:`FolderRun` scans what the user named, then streams the engine's batches. Each step is a
:class:`RunProgress`, so a caller reports progress and checks for cancellation between steps (the
window's compute thread takes one step per event; the command line loops over them).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from vit_desktop.core.errors import CancelToken
from vit_desktop.core.types import ClassifyResult

from .options import ClassifyOptions

if TYPE_CHECKING:  # the engine imports torch
    from .engine import Engine


@dataclass(frozen=True)
class RunProgress:
    """A run so far: the results of its latest step (possibly none) and the totals."""

    results: tuple[ClassifyResult, ...]
    done: int
    total: int


class FolderRun:
    """One run over files and folders: scanned when made, classified as :meth:`steps` is iterated.

    Raises :class:`~vit_desktop.core.errors.Cancelled` when ``cancel`` is set during the scan;
    after that, cancelling ends :meth:`steps` at the next batch boundary.
    """

    def __init__(self, engine: Engine, paths: Sequence[str | Path], options: ClassifyOptions,
                 *, cancel: CancelToken | None = None) -> None:
        # Here, not at the top: the window imports RunProgress at start-up, and scanning pulls in
        # Pillow and numpy, which it does not need until the first photo arrives.
        from vit_desktop.core.io.scan import scan

        found = scan(paths, cancel=cancel)
        roots = [Path(p) for p in paths]
        folders = [root.is_dir() for root in roots]
        self.options = options
        #: What decides each result's ``uncertain`` in this run (``rule.explain(r.known_score)`` says why).
        self.rule = engine.open_set_rule(options)
        #: The image files found, in the order they are classified.
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
        self._batches = engine.classify_batches(self.files, options, cancel=cancel)

    def relative_path(self, path: str) -> Path:
        """Where a classified file sits under the path it was found in (to mirror folders)."""
        return self._relative[path]

    def steps(self) -> Iterator[RunProgress]:
        """First the scan's errors (possibly none), then one step per batch."""
        self.done = len(self.scan_errors)
        yield RunProgress(self.scan_errors, self.done, self.total)
        for batch in self._batches:
            self.done += len(batch)
            yield RunProgress(tuple(batch), self.done, self.total)

    def close(self) -> None:
        """Stop early: the decoding pool of a half-streamed run is joined."""
        self._batches.close()


__all__ = ["FolderRun", "RunProgress"]
