"""Where photos come in: drops, paste, the open dialogs, and the queue that waits for a model.

Whatever the route, paths go to the controller as one folder run, with the options the view state
holds at that moment; before a model is ready they wait in :attr:`Intake.pending` (the window says
so) and go as soon as one is.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from PySide6.QtCore import QMimeData, QObject, QUrl, Signal, Slot
from PySide6.QtGui import QGuiApplication, QImage
from PySide6.QtWidgets import QFileDialog, QWidget

from vit_desktop.gui.compute import Controller, LoadedModel
from vit_desktop.gui.settings import AppSettings
from vit_desktop.gui.view_state import ViewState

IMAGE_FILTER = (
    "Images (*.jpg *.jpeg *.png *.bmp *.gif *.tif *.tiff *.webp *.ppm *.pgm *.heic);;All files (*)"
)


def paths_from_mime(mime: QMimeData) -> list[str]:
    """Local files and folders named by dropped/pasted URLs, or by lines of plain text."""
    paths: list[str] = []
    if mime.hasUrls():
        paths = [u.toLocalFile() for u in mime.urls() if u.isLocalFile() and u.toLocalFile()]
    if not paths and mime.hasText():
        for line in mime.text().splitlines():
            line = line.strip().strip('"')
            if not line:
                continue
            if line.startswith("file:"):
                line = QUrl(line).toLocalFile()
            if line and os.path.exists(line):
                paths.append(line)
    return paths


class Intake(QObject):
    """Turns what the user gives (files, folders, pasted pixels) into folder runs."""

    #: Paths are waiting for a model: how many are waiting now.
    queued = Signal(int)
    #: A short note for the status bar (nothing usable was given, or the clipboard was empty).
    note = Signal(str)
    #: A problem the user must know about (the pasted image could not be kept).
    problem = Signal(str)

    def __init__(self, window: QWidget, settings: AppSettings, controller: Controller, state: ViewState, *,
                 top_k: int, batch_size: int) -> None:
        super().__init__(window)
        self._window = window
        self._settings = settings
        self._controller = controller
        self._state = state
        #: Predictions kept per photo, and photos per forward pass.
        self.top_k = top_k
        self.batch_size = batch_size
        self.pending: list[str] = []
        self._temp_dir: tempfile.TemporaryDirectory[str] | None = None
        self._paste_count = 0
        controller.model_changed.connect(self._on_model_ready)

    # -- routes in -----------------------------------------------------------------------------

    def add_paths(self, paths: Sequence[str | os.PathLike[str]]) -> None:
        """Classify files and folders; before a model is ready they wait in :attr:`pending`."""
        items = [str(p) for p in paths]
        if not items:
            return
        if self._controller.current_card is None:
            self.pending.extend(items)
            self.queued.emit(len(self.pending))
            return
        self._classify(items)

    def _classify(self, items: list[str]) -> None:
        from vit_desktop.core.inference.options import ClassifyOptions

        s = self._state
        # Every result keeps its probabilities: the names box re-labels them without classifying again.
        options = ClassifyOptions(top_k=self.top_k, batch_size=self.batch_size, explain=s.run_explain,
                                  threshold=s.threshold, categories=s.categories, keep_probabilities=True)
        self._controller.classify(items, options)

    @Slot(object)
    def _on_model_ready(self, _loaded: LoadedModel) -> None:
        """A model is ready: what waited goes now."""
        if self.pending:
            queued, self.pending = self.pending, []
            self._classify(queued)

    def handle_mime(self, mime: QMimeData) -> bool:
        """Files, folders, file paths as text, or image data: classify them. False if nothing usable."""
        paths = paths_from_mime(mime)
        if not paths and mime.hasImage():
            image = mime.imageData()
            if isinstance(image, QImage) and not image.isNull():
                saved = self._save_pasted(image)
                if saved:
                    paths = [saved]
        if not paths:
            self.note.emit("Nothing to classify there: drop image files or folders.")
            return False
        self.add_paths(paths)
        return True

    def paste(self) -> None:
        mime = QGuiApplication.clipboard().mimeData()
        if mime is None or not self.handle_mime(mime):
            self.note.emit("The clipboard holds no image and no file paths.")

    def open_images_dialog(self) -> None:
        files, _ = QFileDialog.getOpenFileNames(self._window, "Open images", self._settings.folder("images"),
                                                IMAGE_FILTER)
        if files:
            self._settings.set_folder("images", str(Path(files[0]).parent))
            self.add_paths(files)

    def open_folder_dialog(self) -> None:
        folder = QFileDialog.getExistingDirectory(self._window, "Open a folder of images",
                                                  self._settings.folder("images"))
        if folder:
            self._settings.set_folder("images", folder)
            self.add_paths([folder])

    # -- pasted pixels -------------------------------------------------------------------------

    def _save_pasted(self, image: QImage) -> str | None:
        """Pasted pixels become a PNG in a private temporary folder, so they behave like a file."""
        if self._temp_dir is None:
            self._temp_dir = tempfile.TemporaryDirectory(prefix="vit-desktop-pasted-")
        self._paste_count += 1
        path = Path(self._temp_dir.name) / f"pasted-{time.strftime('%H%M%S')}-{self._paste_count}.png"
        if not image.save(str(path)):  # the format follows the .png suffix
            self.problem.emit("Could not keep the pasted image: the temporary folder is not writable.")
            return None
        return str(path)

    def cleanup(self) -> None:
        """Delete the pasted images' folder (the window is closing)."""
        if self._temp_dir is not None:
            self._temp_dir.cleanup()
            self._temp_dir = None


__all__ = ["IMAGE_FILTER", "Intake", "paths_from_mime"]
