"""File ▸ Export: results as CSV/JSON, the overlay as PNG, photos copied into class folders, the
model as ONNX.

The dialogs and the messages are here; the formats and the copying are core's
(:mod:`vit_desktop.core.io.results_files`, :mod:`vit_desktop.core.io.heatmap`). Slow work runs on the thread
pool as jobs, so the window stays responsive.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from PySide6.QtCore import QObject, QThreadPool, Signal, Slot
from PySide6.QtWidgets import QFileDialog, QMessageBox, QWidget

from vit_desktop.core.errors import CancelToken, Failure, VitDesktopError
from vit_desktop.core.files import os_reason
from vit_desktop.core.types import ClassifyResult, Heatmap
from vit_desktop.gui.jobs import Job, JobBoard, JobContext, run_in_pool
from vit_desktop.gui.plain_text import as_plain
from vit_desktop.gui.settings import AppSettings, OverlaySettings

if TYPE_CHECKING:
    from vit_desktop.core.inference.engine import Engine
    from vit_desktop.core.models.vit import ViT
    from vit_desktop.core.types import ModelCard
    from vit_desktop.gui.compute import Controller


class Exporter(QObject):
    """Writes what the user asked for; says what happened through its signals."""

    overlay_saved = Signal(str)  # the PNG's path
    model_exported = Signal(object)  # an ExportReport
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

    @Slot(object)
    def _on_failed(self, failure: Failure) -> None:
        self.problem.emit(f"{failure.message}. Choose another name or folder and try again.")
        self.job_failed.emit(failure.message)

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
        from vit_desktop.core.io.results_files import write_results

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
        """Save the photo with its overlay as a PNG (in the background); with the caption setting on,
        a strip under it says what the map shows ("Class map for “jay” 89.5 %")."""
        src, dest = result.path, str(path)
        caption = _caption(result, heatmap) if self._settings.overlay_caption else None

        def work(_ctx: JobContext) -> object:
            from vit_desktop.core.io.heatmap import save_overlay_png
            from vit_desktop.core.io.images import load_image

            return str(save_overlay_png(dest, load_image(src), heatmap, colormap=overlay.colormap,
                                        opacity=overlay.opacity, overwrite=overwrite, caption=caption))

        return self._start("save overlay", work, self._on_overlay_saved)

    @Slot(object)
    def _on_overlay_saved(self, path: object) -> None:
        self._settings.set_folder("export", str(Path(str(path)).parent))
        self.note.emit(f"Overlay saved to {path}")
        self.overlay_saved.emit(str(path))

    # -- the model as ONNX ----------------------------------------------------------------------

    def export_model_dialog(self, controller: Controller, photos: Sequence[str]) -> None:
        card = controller.current_card
        if card is None:
            self.hint.emit("Load a model first: the model in use is what gets exported.")
            return
        from vit_desktop.core.models.onnx import INSTALL_HINT, missing_modules

        missing = missing_modules()
        if missing:
            self.problem.emit(f"Exporting a model needs {', '.join(missing)}, which are not installed: {INSTALL_HINT}")
            return
        start = str(Path(self._settings.folder("export_model") or Path.home()) / f"{card.name}.onnx")
        path, _ = QFileDialog.getSaveFileName(self._window, "Export model as ONNX", start, "ONNX model (*.onnx)")
        if not path:
            return
        if not path.lower().endswith(".onnx"):
            path += ".onnx"
        sidecar = Path(path).with_suffix(".json")
        if sidecar.exists():
            answer = QMessageBox.question(
                self._window, "Export model", as_plain(f"{sidecar.name} already exists beside it: replace it with "
                                                       "the model's labels and preprocessing?"))
            if answer != QMessageBox.StandardButton.Yes:
                return
        # The save dialog already asked before replacing the .onnx file.
        self.export_model(controller, path, photos, overwrite=True)

    def export_model(self, controller: Controller, path: str | os.PathLike[str], photos: Sequence[str], *,
                     overwrite: bool = False) -> Job:
        """Export the model in use: copied on the compute thread (where it lives), exported and
        checked in onnxruntime on the thread pool, so classifying goes on meanwhile."""
        dest = str(path)

        def copy_model(engine: Engine | None, _report: Callable[[object], None], _cancel: CancelToken) -> object:
            if engine is None:
                raise VitDesktopError("No model loaded")
            return copy.deepcopy(engine.module).float().cpu(), engine.card

        first = controller.run_task(copy_model)
        self._jobs.add(first)
        first.returned.connect(lambda copied: self._export_copy(copied, dest, list(photos), overwrite))
        first.errored.connect(self._on_model_export_failed)
        self.note.emit("Exporting the model…")
        return first

    def _export_copy(self, copied: object, dest: str, photos: list[str], overwrite: bool) -> None:
        assert isinstance(copied, tuple)  # what copy_model returned
        module: ViT = copied[0]
        card: ModelCard = copied[1]

        def work(ctx: JobContext) -> object:
            from vit_desktop.core.models.onnx import export_onnx

            return export_onnx(module, card, dest, photos=photos, overwrite=overwrite, progress=ctx.report,
                               cancel=ctx.token)

        job = run_in_pool(self._board, self._pool, "export model", work)
        self._jobs.add(job)
        job.progressed.connect(lambda text: self.note.emit(f"Exporting the model: {text}…"))
        job.returned.connect(self._on_model_exported)
        job.errored.connect(self._on_model_export_failed)
        job.finished.connect(self._forget)

    @Slot(object)
    def _on_model_exported(self, report: object) -> None:
        from vit_desktop.core.models.onnx import ExportReport

        assert isinstance(report, ExportReport)
        self._settings.set_folder("export_model", str(report.path.parent))
        self.note.emit(f"Model exported: {report.short()}")
        self.model_exported.emit(report)

    @Slot(object)
    def _on_model_export_failed(self, failure: Failure) -> None:
        self.problem.emit(f"Could not export the model: {failure.message}")
        self.job_failed.emit(failure.message)

    # -- class folders -------------------------------------------------------------------------

    def copy_into_folders_dialog(self, results: Sequence[ClassifyResult]) -> None:
        ok = [r for r in results if r.ok and r.top is not None]
        if not ok:
            self.hint.emit("There are no classified images to sort yet.")
            return
        # Qt's own folder dialog: it has "Create New Folder" on every desktop (some native ones do not).
        own = QFileDialog.Option.ShowDirsOnly | QFileDialog.Option.DontUseNativeDialog
        dest = QFileDialog.getExistingDirectory(self._window, "Copy images into one folder per class",
                                                self._settings.folder("sorted"), own)
        if not dest:
            return
        from vit_desktop.core.io.class_folders import UNCERTAIN_FOLDER, class_folder_of

        unsure = sum(1 for r in ok if r.uncertain)
        folders = len({class_folder_of(r) for r in ok})
        aside = (f"\n\n{unsure} uncertain one{'s' if unsure != 1 else ''} go into “{UNCERTAIN_FOLDER}”, not into "
                 "the class they barely lean to." if unsure else "")
        answer = QMessageBox.question(
            self._window, "Copy into class folders",
            as_plain(f"Copy {len(ok)} images into {folders} folder{'s' if folders != 1 else ''}, one per predicted "
                     f"class, under\n{dest}?{aside}\n\nThe originals stay where they are; nothing is moved or "
                     "overwritten."))
        if answer == QMessageBox.StandardButton.Yes:
            self._settings.set_folder("sorted", dest)
            self.copy_into_class_folders(results, dest)

    def copy_into_class_folders(self, results: Sequence[ClassifyResult], dest: str | os.PathLike[str]) -> Job:
        """Copy (never move) each classified image into ``dest/<top label>/``; names never clash.

        An uncertain result goes into ``dest/uncertain/``: a turtle sorted into "dog, cat" at 1 %
        is not a dog photo.
        """
        from vit_desktop.core.io.class_folders import class_folder_of, copy_into_class_folders

        items = [(r.path, folder) for r in results if (folder := class_folder_of(r)) is not None]

        def work(ctx: JobContext) -> object:
            failed: list[tuple[str, OSError]] = []
            copied = copy_into_class_folders(items, dest, progress=lambda d, t: ctx.report((d, t)), cancel=ctx.token,
                                             on_error=lambda src, exc: failed.append((src, exc)))
            return copied, failed

        self.note.emit(f"Copying {len(items)} images into {dest}…")
        return self._start("copy into class folders", work, self._on_copied)

    @Slot(list)
    def copy_photos_dialog(self, paths: Sequence[str]) -> None:
        """Ask for a folder, then copy ``paths`` into it (never moved, never overwritten)."""
        if not paths:
            return
        own = QFileDialog.Option.ShowDirsOnly | QFileDialog.Option.DontUseNativeDialog
        dest = QFileDialog.getExistingDirectory(self._window, f"Copy {len(paths)} photos into a folder",
                                                self._settings.folder("copies"), own)
        if dest:
            self._settings.set_folder("copies", dest)
            self.copy_photos(paths, dest)

    def copy_photos(self, paths: Sequence[str], dest: str | os.PathLike[str]) -> Job:
        """Copy (never move) each photo into ``dest``; a name already taken there gets a number."""
        from vit_desktop.core.io.class_folders import copy_photos_into

        items = list(paths)

        def work(ctx: JobContext) -> object:
            failed: list[tuple[str, OSError]] = []
            copied = copy_photos_into(items, dest, progress=lambda d, t: ctx.report((d, t)), cancel=ctx.token,
                                      on_error=lambda src, exc: failed.append((src, exc)))
            return copied, failed, str(dest)

        self.note.emit(f"Copying {len(items)} photos into {dest}…")
        return self._start("copy photos", work, self._on_copied)

    @Slot(object)
    def _on_copied(self, outcome: object) -> None:
        n, failed, *into = outcome if isinstance(outcome, tuple) else (0, [])
        self.note.emit(f"Copied {n} images into {into[0] if into else 'class folders'}.")
        if failed:
            src, exc = failed[0]
            self.problem.emit(f"{len(failed)} image{'s' if len(failed) != 1 else ''} could not be copied "
                              f"(first: {Path(src).name}: {os_reason(exc)}); the others were.")
        self.files_copied.emit(n)


def _caption(result: ClassifyResult, heatmap: Heatmap) -> str:
    """What an overlay shows, in words, for its caption."""
    preds = {p.index: p for p in result.predictions}
    shown = preds.get(heatmap.class_index) if heatmap.class_index is not None else None
    if shown is None:
        top = result.top
        best = f" (best: {top.label} {top.score:.1%})" if top is not None else ""
        return f"Attention rollout{best} — {Path(result.path).name}"
    kind = "Refined class map" if heatmap.method == "refined" else "Class map"
    return f"{kind} for {shown.label} {shown.score:.1%} — {Path(result.path).name}"


__all__ = ["Exporter"]
