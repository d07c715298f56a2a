"""The map of the photos: each listed photo a thumbnail placed by its features, coloured by label.

:class:`PhotoMapper` gathers the features on the compute thread (the library's where stored) and
lays them out there (:func:`~vit_desktop.core.library.photo_map.layout`: principal components);
:class:`MapWindow` shows the answer. In it the wheel zooms (about the point under the cursor), a drag
pans, a click shows the photo in the gallery and the detail panel, and Shift+drag (or a drag in
lasso mode) draws a lasso round photos, which can then be selected in the gallery, labelled as a
class of the fine-tune dialog, or copied into a folder.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from PySide6.QtCore import QObject, Qt, Signal, Slot
from PySide6.QtGui import (
    QPixmap,
    QResizeEvent,
    QShowEvent,
)
from PySide6.QtWidgets import (
    QDialog,
    QHBoxLayout,
    QInputDialog,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from vit_desktop.core.errors import CancelToken, Failure
from vit_desktop.gui.map_scene import MapScene, MapView
from vit_desktop.gui.plain_text import as_plain

if TYPE_CHECKING:
    from vit_desktop.core.library.prints import PhotoPrints
    from vit_desktop.gui.compute import Controller
    from vit_desktop.gui.jobs import Job
    from vit_desktop.gui.results_model import ResultsModel
    from vit_desktop.gui.run_status import RunStatus
    from vit_desktop.gui.thumbnails import ImageLoader

#: The channel of map jobs: a newer map supersedes one still being made.
CHANNEL = "map"
@dataclass(frozen=True)
class PhotoMap:
    """Where each photo goes: ``xy`` (n, 2) float32, about [-1, 1], row i for ``paths[i]``."""

    paths: tuple[str, ...]
    xy: np.ndarray


def lay_out(prints: PhotoPrints, _first: str | None, report: Callable[[object], None],
            cancel: CancelToken) -> PhotoMap:
    """The map of ``prints`` (runs on the compute thread)."""
    from vit_desktop.core.inference.lookalikes import PrintsProgress
    from vit_desktop.core.library.photo_map import layout

    report(PrintsProgress("layout", 0, len(prints)))
    if prints.features is None or len(prints) == 0:
        return PhotoMap(prints.paths, np.zeros((len(prints), 2), np.float32))
    return PhotoMap(prints.paths, layout(prints.features, cancel=cancel))


class MapWindow(QDialog):
    """The map, its legend and what can be done with the photos lassoed."""

    photo_clicked = Signal(str)
    #: Select these photos in the gallery; label them as this class in the fine-tune dialog; copy them.
    select_requested = Signal(list)
    label_requested = Signal(str, list)
    copy_requested = Signal(list)

    def __init__(self, loader: ImageLoader | None, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Map of the photos")
        self.resize(1000, 720)
        self.scene = MapScene(loader, self)
        self.view = MapView(self.scene, self)
        self.info = QLabel("", self)
        self.info.setWordWrap(True)
        self.selection_label = QLabel("", self)
        self.lasso_button = QPushButton("&Lasso", self)
        self.lasso_button.setCheckable(True)
        self.lasso_button.setToolTip("Drag round photos to select them (Shift+drag does it without this)")
        self.fit_button = QPushButton("&Fit", self)
        self.select_button = QPushButton("&Select in gallery", self)
        self.label_button = QPushButton("La&bel in fine-tune dialog…", self)
        self.label_button.setToolTip("Put the lassoed photos into a class of the fine-tune dialog")
        self.copy_button = QPushButton("&Copy to folder…", self)
        self.copy_button.setToolTip("Copy the lassoed photos into a folder (never moved, never overwritten)")
        self.legend = QListWidget(self)
        self.legend.setMaximumWidth(240)
        self.legend.setToolTip("Click a label to select its photos")
        tools = QHBoxLayout()
        for b in (self.lasso_button, self.fit_button, self.select_button, self.label_button, self.copy_button):
            tools.addWidget(b)
        tools.addStretch(1)
        tools.addWidget(self.selection_label)
        body = QHBoxLayout()
        body.addWidget(self.view, 1)
        body.addWidget(self.legend)
        lay = QVBoxLayout(self)
        lay.addWidget(self.info)
        lay.addLayout(tools)
        lay.addLayout(body, 1)
        self.lasso_button.toggled.connect(self._on_lasso_mode)
        self.fit_button.clicked.connect(self.view.fit)
        self.select_button.clicked.connect(self._on_select)
        self.label_button.clicked.connect(self._on_label)
        self.copy_button.clicked.connect(self._on_copy)
        self.legend.itemClicked.connect(self._on_legend)
        self.view.photo_clicked.connect(self.photo_clicked)
        self.scene.selectionChanged.connect(self._on_selection)
        self._fitted = False
        self._on_selection()

    def set_map(self, photo_map: PhotoMap, labels: Sequence[str], none_label: str) -> None:
        self.scene.place(photo_map.paths, photo_map.xy, labels, none_label)
        n = len(photo_map.paths)
        self.info.setText(f"{n} photo{'s' if n != 1 else ''} placed by their features (principal components): alike "
                          "photos lie near each other, framed in the colour of their label. Wheel: zoom · drag: "
                          "move · click: show the photo · Shift+drag: lasso photos.")
        self.legend.clear()
        counts = Counter(labels)
        for label, colour in self.scene.colours.items():
            pix = QPixmap(14, 14)
            pix.fill(colour)
            item = QListWidgetItem(f"{label} ({counts[label]})")
            item.setIcon(pix)
            item.setData(Qt.ItemDataRole.UserRole, label)
            item.setToolTip(as_plain(label))
            self.legend.addItem(item)
        self._fitted = False
        self.view.fit()

    def showEvent(self, event: QShowEvent) -> None:
        super().showEvent(event)
        if not self._fitted:
            self._fitted = True
            self.view.fit()

    def resizeEvent(self, event: QResizeEvent) -> None:
        super().resizeEvent(event)
        if not self._fitted:
            self.view.fit()

    def selected(self) -> list[str]:
        return self.scene.selected_paths()

    @Slot(bool)
    def _on_lasso_mode(self, on: bool) -> None:
        self.view.lasso_mode = on

    @Slot()
    def _on_selection(self) -> None:
        n = len(self.selected())
        self.selection_label.setText(f"{n} selected" if n else "Lasso photos to label or copy them")
        for b in (self.select_button, self.label_button, self.copy_button):
            b.setEnabled(n > 0)

    @Slot(QListWidgetItem)
    def _on_legend(self, item: QListWidgetItem) -> None:
        label = item.data(Qt.ItemDataRole.UserRole)
        self.scene.select_paths([p for p, it in self.scene.photos.items() if it.label == label])

    @Slot()
    def _on_select(self) -> None:
        self.select_requested.emit(self.selected())

    def ask_class_name(self, n: int, suggestion: str) -> str | None:
        name, ok = QInputDialog.getText(self, "Label in the fine-tune dialog",
                                        f"Class for the {n} photo{'s' if n != 1 else ''} (a new one is made):",
                                        text=suggestion)
        return name.strip() if ok and name.strip() else None

    @Slot()
    def _on_label(self) -> None:
        paths = self.selected()
        if not paths:
            return
        common = Counter(self.scene.photos[p].label for p in paths).most_common(1)[0][0]
        name = self.ask_class_name(len(paths), common)
        if name:
            self.label_requested.emit(name, paths)

    @Slot()
    def _on_copy(self) -> None:
        paths = self.selected()
        if paths:
            self.copy_requested.emit(paths)


class PhotoMapper(QObject):
    """Makes the map of the listed photos on the compute thread and shows it in a :class:`MapWindow`,
    whose requests it passes on."""

    note = Signal(str)
    problem = Signal(str)
    photo_clicked = Signal(str)
    select_requested = Signal(list)
    label_requested = Signal(str, list)
    copy_requested = Signal(list)

    def __init__(self, controller: Controller, model: ResultsModel, loader: ImageLoader, status: RunStatus,
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._controller = controller
        self._model = model
        self._loader = loader
        self._status = status
        self._parent = parent
        self.job: Job | None = None
        self.window: MapWindow | None = None

    def find(self, paths: Sequence[str]) -> Job | None:
        if not paths:
            self.note.emit("Add photos first: the map places the listed photos.")
            return None
        job = self._controller.gather_prints(paths, lay_out, features=True, hashes=False, channel=CHANNEL)
        job.returned.connect(self._on_laid_out)
        job.errored.connect(self._on_failed)
        self._status.track_task(job, "Making the map of the photos")
        self.job = job
        return job

    def make_window(self) -> MapWindow:
        if self.window is None:
            window = MapWindow(self._loader, self._parent)
            window.photo_clicked.connect(self.photo_clicked)
            window.select_requested.connect(self.select_requested)
            window.label_requested.connect(self.label_requested)
            window.copy_requested.connect(self.copy_requested)
            self.window = window
        return self.window

    @Slot(object)
    def _on_laid_out(self, reply: object) -> None:
        photo_map = getattr(reply, "value", None)
        if not isinstance(photo_map, PhotoMap):
            return
        verdict = self._model.verdict
        labels = []
        for path in photo_map.paths:
            r = self._model.result_for(path)
            top = r.top if r is not None else None
            labels.append(verdict if r is None or top is None or r.uncertain else top.label)
        window = self.make_window()
        window.set_map(photo_map, labels, verdict)
        window.show()
        window.raise_()
        n = len(photo_map.paths)
        self.note.emit(f"The map shows {n} photo{'s' if n != 1 else ''}.")

    @Slot(object)
    def _on_failed(self, failure: Failure) -> None:
        self.problem.emit(f"The map could not be made: {failure.message}")


__all__ = ["CHANNEL", "MapWindow", "PhotoMap", "PhotoMapper", "lay_out"]
