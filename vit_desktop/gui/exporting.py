"""File ▸ Export: results as CSV/JSON, the overlay as PNG, photos copied into class folders.

The dialogs and the messages are here; the formats and the copying are core's
(:mod:`vit_desktop.core.export`, :mod:`vit_desktop.core.heatmap`). Slow work runs on the thread
pool as jobs, so the window stays responsive.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

from PySide6.QtCore import QObject, QThreadPool, Signal, Slot
from PySide6.QtWidgets import QFileDialog, QMessageBox, QWidget

from vit_desktop.core.types import ClassifyResult, Heatmap
from vit_desktop.gui.jobs import Job, JobBoard, JobContext, run_in_pool
from vit_desktop.gui.settings import AppSettings, OverlaySettings


class Exporter(QObject):
    """Writes what the user asked for; says what happened through its signals."""

    overlay_saved = Signal(str)  # the PNG's path
    files_copied = Signal(int)  # how many photos
    job_failed = Signal(str)
    #: Status-bar text, and problems the user must act on (for the message bar).
    note = Signal(str)
    problem = Signal(str)
    hint = Signal(str)

    def __init__(self, window: QWidget, settings: AppSettings, board: JobBoard, pool: QThreadPool) -> None:
        super().__init__(window)
        self._window = window
        self._settings = settings
        self._board = board
        self._pool = pool
        self._jobs: set[Job] = set()

    def _start(self, name: str, fn: Callable[[JobContext], object], on_done: Callable[[object], None]) -> Job:
        job = run_in_pool(self._board, self._pool, name, fn)
        self._jobs.add(job)
        job.returned.connect(on_done)
        job.errored.connect(self._on_failed)
        job.finished.connect(self._forget)
        return job

    @Slot(object)
    def _forget(self, _outcome: object) -> None:
        self._jobs = {j for j in self._jobs if j.running}

    def cancel_all(self) -> None:
        for job in self._jobs:
            job.cancel()

    @Slot(str)
    def _on_failed(self, message: str) -> None:
        self.problem.emit(f"{message}. Choose another name or folder and try again.")
        self.job_failed.emit(message)

    # -- results -------------------------------------------------------------------------------

    def export_results_dialog(self, results: Sequence[ClassifyResult], top_k: int) -> None:
        if not results:
            self.hint.emit("There are no results to export yet: drop some images first.")
            return
        start = str(Path(self._settings.folder("export") or Path.home()) / "results.csv")
        path, _ = QFileDialog.getSaveFileName(
            self._window, "Export results", start, "CSV (*.csv);;JSON (*.json);;JSON lines (*.jsonl)")
        if path:
            if not Path(path).suffix:
                path += ".csv"
            # The save dialog already asked before replacing an existing file.
            self.export_results(results, path, top_k=top_k, overwrite=True)

    def export_results(self, results: Sequence[ClassifyResult], path: str | os.PathLike[str], *, top_k: int,
                       overwrite: bool = False) -> bool:
        """Write every result in the command line's format chosen by the suffix (.csv/.json/.jsonl)."""
        from vit_desktop.core.export import write_results

        try:
            written = write_results(results, path, top_k=top_k, overwrite=overwrite)
        except FileExistsError:
            self.problem.emit(f"{path} already exists: choose another name.")
            return False
        except (OSError, ValueError) as exc:
            self.problem.emit(f"Could not export the results: {exc}. Choose another folder or name.")
            return False
        self._settings.set_folder("export", str(Path(written).parent))
        self.note.emit(f"Exported {len(results)} results to {written}")
        return True

    # -- the overlay ---------------------------------------------------------------------------

    def export_overlay_dialog(self, result: ClassifyResult | None, heatmap: Heatmap | None,
                              overlay: OverlaySettings) -> None:
        if result is None or heatmap is None:
            self.hint.emit("Select a classified image first; its overlay is what gets saved.")
            return
        start = str(Path(self._settings.folder("export") or Path.home()) / f"{Path(result.path).stem}-overlay.png")
        path, _ = QFileDialog.getSaveFileName(self._window, "Export overlay", start, "PNG image (*.png)")
        if path:
            if not path.lower().endswith(".png"):
                path += ".png"
            self.export_overlay(result, heatmap, overlay, path, overwrite=True)

    def export_overlay(self, result: ClassifyResult, heatmap: Heatmap, overlay: OverlaySettings,
                       path: str | os.PathLike[str], *, overwrite: bool = False) -> Job:
        """Save the photo with its overlay as a PNG (in the background)."""
        src, dest = result.path, str(path)

        def work(_ctx: JobContext) -> object:
            from vit_desktop.core.heatmap import save_overlay_png
            from vit_desktop.core.images import load_image

            return str(save_overlay_png(dest, load_image(src), heatmap, colormap=overlay.colormap,
                                        opacity=overlay.opacity, overwrite=overwrite))

        return self._start("save overlay", work, self._on_overlay_saved)

    @Slot(object)
    def _on_overlay_saved(self, path: object) -> None:
        self._settings.set_folder("export", str(Path(str(path)).parent))
        self.note.emit(f"Overlay saved to {path}")
        self.overlay_saved.emit(str(path))

    # -- class folders -------------------------------------------------------------------------

    def copy_into_folders_dialog(self, results: Sequence[ClassifyResult]) -> None:
        ok = [r for r in results if r.ok and r.top is not None]
        if not ok:
            self.hint.emit("There are no classified images to sort yet.")
            return
        dest = QFileDialog.getExistingDirectory(self._window, "Copy images into one folder per class",
                                                self._settings.folder("sorted"))
        if not dest:
            return
        answer = QMessageBox.question(
            self._window, "Copy into class folders",
            f"Copy {len(ok)} images into one folder per predicted class under\n{dest}?\n\n"
            "The originals stay where they are; nothing is moved or overwritten.")
        if answer == QMessageBox.StandardButton.Yes:
            self._settings.set_folder("sorted", dest)
            self.copy_into_class_folders(results, dest)

    def copy_into_class_folders(self, results: Sequence[ClassifyResult], dest: str | os.PathLike[str]) -> Job:
        """Copy (never move) each classified image into ``dest/<top label>/``; names never clash."""
        from vit_desktop.core.export import copy_into_class_folders

        items = [(r.path, r.top.label) for r in results if r.ok and r.top is not None]

        def work(ctx: JobContext) -> object:
            return copy_into_class_folders(items, dest, progress=lambda d, t: ctx.report((d, t)), cancel=ctx.token)

        self.note.emit(f"Copying {len(items)} images into {dest}…")
        return self._start("copy into class folders", work, self._on_copied)

    @Slot(object)
    def _on_copied(self, count: object) -> None:
        n = int(count) if isinstance(count, int) else 0
        self.note.emit(f"Copied {n} images into class folders.")
        self.files_copied.emit(n)


__all__ = ["Exporter"]
