"""The window's side of the library: the last session's photos back at start, the store's size and
emptying it, and labels written as keywords into XMP sidecars.

The compute thread answers runs from the library itself (:mod:`vit_desktop.core.inference.runs`);
what happens here is small and runs on the thread pool, except saving the list of photos when the
window closes, which is one short transaction.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence

from PySide6.QtCore import QObject, QThreadPool, Signal, Slot
from PySide6.QtWidgets import QMessageBox, QWidget

from vit_desktop.core.types import ClassifyResult
from vit_desktop.gui.jobs import Job, JobBoard, JobContext, run_in_pool

log = logging.getLogger(__name__)


class LibraryPart(QObject):
    """Session restore, the library's size and emptying, XMP keywords."""

    #: Photos of the last session to list again (they come from the library, not classified again).
    restore_requested = Signal(list)
    #: A short note for the status bar.
    note = Signal(str)
    #: A problem the user must know about (one line).
    problem = Signal(str)

    def __init__(self, window: QWidget, board: JobBoard, pool: QThreadPool) -> None:
        super().__init__(window)
        self._window = window
        self._board = board
        self._pool = pool
        self._jobs: set[Job] = set()

    def _start(self, name: str, work: Callable[[JobContext], object], done: Callable[[object], None]) -> Job:
        job = run_in_pool(self._board, self._pool, name, work)
        job.returned.connect(done)
        job.errored.connect(self._on_failed)
        job.finished.connect(self._forget)
        self._jobs.add(job)
        return job

    @Slot(object)
    def _forget(self, _outcome: object) -> None:
        self._jobs = {j for j in self._jobs if j.running}

    @Slot(object)
    def _on_failed(self, failure: object) -> None:
        self.problem.emit(str(failure))

    # -- the last session ------------------------------------------------------------------------

    def restore(self) -> Job:
        """List again the photos the window showed when it was last closed (those still there)."""

        def work(_ctx: JobContext) -> object:
            from vit_desktop.core.library.store import Library

            library = Library.open(on_problem=log.warning)
            if library is None:
                return []
            try:
                return [p for p in library.session() if os.path.isfile(p)]
            finally:
                library.close()

        return self._start("restore session", work, self._on_session)

    @Slot(object)
    def _on_session(self, paths: object) -> None:
        if isinstance(paths, list) and paths:
            self.restore_requested.emit(paths)

    @staticmethod
    def save_session(paths: Sequence[str]) -> None:
        """Remember the listed photos for the next start (the window is closing: synchronous, short)."""
        from vit_desktop.core.library.store import Library

        library = Library.open(on_problem=log.warning)
        if library is not None:
            library.set_session(list(paths))
            library.close()

    # -- size and emptying -------------------------------------------------------------------------

    def show_dialog(self) -> Job:
        """Where the library is, how big, and a button that empties it (after asking)."""

        def work(_ctx: JobContext) -> object:
            from vit_desktop.core.library.store import Library

            problems: list[str] = []
            library = Library.open(on_problem=problems.append)
            if library is None:
                return problems[0] if problems else "The library cannot be opened."
            try:
                return library.stats()
            finally:
                library.close()

        return self._start("library size", work, self._on_stats)

    @Slot(object)
    def _on_stats(self, stats: object) -> None:
        from vit_desktop.core.library.store import LibraryStats
        from vit_desktop.core.units import format_bytes

        if not isinstance(stats, LibraryStats):
            self.problem.emit(str(stats))
            return
        box = QMessageBox(QMessageBox.Icon.Information, "Library", "", parent=self._window)
        box.setText(f"{stats.photos} photos, {stats.results} answers and {stats.features} feature sets of "
                    f"{stats.models} models: {format_bytes(stats.size_bytes)}.")
        box.setInformativeText(f"{stats.path}\n\nWhat is stored is read instead of classified again when a "
                               "photo comes back unchanged. Emptying it loses no result you saved: photos are "
                               "simply classified again.")
        empty = box.addButton("Empty the library…", QMessageBox.ButtonRole.DestructiveRole)
        box.addButton(QMessageBox.StandardButton.Close)
        box.exec()
        if box.clickedButton() is empty and self.confirm_empty(stats.photos):
            self.empty()

    def confirm_empty(self, photos: int) -> bool:
        answer = QMessageBox.question(self._window, "Empty the library?",
                                      f"Forget what is stored of {photos} photos? They will be classified "
                                      "again when they are opened next.")
        return answer == QMessageBox.StandardButton.Yes

    def empty(self) -> Job:
        def work(_ctx: JobContext) -> object:
            from vit_desktop.core.library.store import Library

            library = Library.open(on_problem=log.warning)
            if library is None:
                return "The library cannot be opened."
            try:
                library.clear()
                return library.problem or None
            finally:
                library.close()

        return self._start("empty library", work, self._on_emptied)

    @Slot(object)
    def _on_emptied(self, problem: object) -> None:
        if problem:
            self.problem.emit(str(problem))
        else:
            self.note.emit("The library is empty: photos are classified again when next opened.")

    # -- keywords ----------------------------------------------------------------------------------

    def write_keywords(self, results: Sequence[ClassifyResult]) -> Job | None:
        """Each listed photo's label as a keyword in its XMP sidecar (uncertain ones: none)."""
        items = [(r.path, None if r.uncertain else r.top.label) for r in results if r.ok and r.top is not None]
        if not items:
            self.note.emit("No classified photos to write keywords for.")
            return None

        def work(ctx: JobContext) -> object:
            from vit_desktop.core.io.xmp import write_keyword

            failed: list[tuple[str, str]] = []
            for i, (path, label) in enumerate(items):
                ctx.token.raise_if_cancelled()
                try:
                    write_keyword(path, label)
                except (OSError, ValueError) as exc:
                    failed.append((path, str(exc)))
                ctx.report((i + 1, len(items)))
            return failed

        def done(failed: object) -> None:
            bad = failed if isinstance(failed, list) else []
            n = len(items) - len(bad)
            self.note.emit(f"Wrote keywords into {n} XMP sidecar{'s' if n != 1 else ''}"
                           + (f"; {len(bad)} could not be written" if bad else "") + ".")
            if bad:
                path, reason = bad[0]
                self.problem.emit(f"Could not write the keywords of {os.path.basename(path)}: {reason}"
                                  + (f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""))

        return self._start("write keywords", work, done)


__all__ = ["LibraryPart"]
