"""The map of the photos: each listed photo a thumbnail placed by its features, coloured by label.

:class:`PhotoMapper` gathers the features on the compute thread (the library's where stored) and
lays them out there (:func:`~vit_desktop.core.library.photo_map.layout`: principal components);
:class:`MapWindow` shows the answer. In it the wheel zooms (about the point under the cursor), a drag
pans, a click shows the photo in the gallery and the detail panel, and Shift+drag (or a drag in
lasso mode) draws a lasso round photos, which can then be selected in the gallery, labelled as a
class of the fine-tune dialog, or copied into a folder.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PySide6.QtCore import QObject, QPoint, QRectF, Qt, Signal, Slot
from PySide6.QtGui import (
    QBrush,
    QColor,
    QMouseEvent,
    QPainter,
    QPainterPath,
    QPen,
    QPixmap,
    QResizeEvent,
    QShowEvent,
    QWheelEvent,
)
from PySide6.QtWidgets import (
    QDialog,
    QGraphicsItem,
    QGraphicsPathItem,
    QGraphicsScene,
    QGraphicsView,
    QHBoxLayout,
    QInputDialog,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QStyleOptionGraphicsItem,
    QVBoxLayout,
    QWidget,
)

from vit_desktop.core.errors import CancelToken, Failure
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
#: Scene units per unit of the layout (which spans about [-1, 1]).
SPREAD = 1000.0


def icon_side(n: int) -> float:
    """A photo's side in scene units: large enough to see a few hundred photos whole at once, small
    enough that thousands do not hide each other (zooming in shows them)."""
    return SPREAD * min(0.15, max(0.02, 2.4 / math.sqrt(max(1, n))))

#: Below this many pixels on screen a photo is drawn as its colour only: no thumbnail is decoded.
THUMB_MIN_PX = 22.0
NONE_COLOUR = QColor("#9a9a9a")
SELECTED_COLOUR = QColor("#1a73e8")


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


def label_colours(labels: Sequence[str], none_label: str) -> dict[str, QColor]:
    """A colour per label, the most frequent first, hues far apart (golden-ratio steps); the
    "none of these" label grey."""
    counts = Counter(labels)
    out: dict[str, QColor] = {}
    for i, (label, _n) in enumerate(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))):
        out[label] = NONE_COLOUR if label == none_label else QColor.fromHsvF((i * 0.618034) % 1.0, 0.7, 0.9)
    return out


class PhotoItem(QGraphicsItem):
    """One photo on the map: its thumbnail framed in its label's colour (a square of that colour
    when too small on screen for a thumbnail to be worth decoding)."""

    def __init__(self, path: str, label: str, colour: QColor, loader: ImageLoader | None, side: float) -> None:
        super().__init__()
        self.side = side
        self.path = path
        self.label = label
        self.colour = colour
        self._loader = loader
        self.setFlag(QGraphicsItem.GraphicsItemFlag.ItemIsSelectable, True)
        self.setToolTip(as_plain(f"{Path(path).name}\n{label}"))

    def boundingRect(self) -> QRectF:
        half = self.side / 2 + 4
        return QRectF(-half, -half, 2 * half, 2 * half)

    def paint(self, painter: QPainter, option: QStyleOptionGraphicsItem, widget: QWidget | None = None) -> None:
        lod = option.levelOfDetailFromTransform(painter.worldTransform())
        side = self.side
        rect = QRectF(-side / 2, -side / 2, side, side)
        pix: QPixmap | None = None
        if self._loader is not None and side * lod >= THUMB_MIN_PX:
            pix = self._loader.thumbnail(self.path)
        selected = self.isSelected()
        if pix is None:
            painter.fillRect(rect, self.colour)
        else:
            fitted = pix.size().scaled(int(side * 4), int(side * 4), Qt.AspectRatioMode.KeepAspectRatio)
            w, h = fitted.width() / 4, fitted.height() / 4
            painter.drawPixmap(QRectF(-w / 2, -h / 2, w, h), pix, QRectF(pix.rect()))
            rect = QRectF(-w / 2, -h / 2, w, h)
        # A frame of a few pixels on screen at any zoom; a selected photo's is white round blue.
        painter.setBrush(Qt.BrushStyle.NoBrush)
        frames = [(QColor("white"), 7.0), (SELECTED_COLOUR, 3.5)] if selected else [(self.colour, 2.5)]
        for colour, width in frames:
            pen = QPen(colour, width)
            pen.setCosmetic(True)
            painter.setPen(pen)
            painter.drawRect(rect)

    def itemChange(self, change: QGraphicsItem.GraphicsItemChange, value: object) -> object:
        if change == QGraphicsItem.GraphicsItemChange.ItemSelectedHasChanged:
            self.setZValue(1.0 if value else 0.0)  # selected photos on top of the others
        return super().itemChange(change, value)


class MapScene(QGraphicsScene):
    """The photos as items; thumbnails are asked of ``loader`` (None: colours only) when drawn."""

    def __init__(self, loader: ImageLoader | None, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._loader = loader
        self.photos: dict[str, PhotoItem] = {}
        self.colours: dict[str, QColor] = {}
        self.side = icon_side(1)
        if loader is not None:
            loader.thumbnail_ready.connect(self._on_thumbnail)

    def place(self, paths: Sequence[str], xy: np.ndarray, labels: Sequence[str], none_label: str = "") -> None:
        """Put each photo at its place (y up, as on a chart), framed in its label's colour."""
        self.clear()
        self.photos = {}
        self.colours = label_colours(labels, none_label)
        self.side = icon_side(len(paths))
        for path, (x, y), label in zip(paths, np.asarray(xy, dtype=np.float64).tolist(), labels):
            item = PhotoItem(path, label, self.colours[label], self._loader, self.side)
            item.setPos(x * SPREAD, -y * SPREAD)
            self.addItem(item)
            self.photos[path] = item
        bounds = self.photos_rect()
        # Room round the photos, so that the map can be dragged about at any zoom.
        self.setSceneRect(bounds.adjusted(-SPREAD, -SPREAD, SPREAD, SPREAD))

    def photos_rect(self) -> QRectF:
        return self.itemsBoundingRect() if self.photos else QRectF(-SPREAD, -SPREAD, 2 * SPREAD, 2 * SPREAD)

    def selected_paths(self) -> list[str]:
        return [p for p, item in self.photos.items() if item.isSelected()]

    def select_paths(self, paths: Sequence[str]) -> None:
        wanted = set(paths)
        for path, item in self.photos.items():
            item.setSelected(path in wanted)

    @Slot(str)
    def _on_thumbnail(self, path: str) -> None:
        item = self.photos.get(path)
        if item is not None:
            item.update()


class MapView(QGraphicsView):
    """Wheel: zoom about the cursor; drag: pan; click: a photo; Shift+drag or lasso mode: a lasso."""

    photo_clicked = Signal(str)
    lassoed = Signal(list)

    def __init__(self, scene: MapScene, parent: QWidget | None = None) -> None:
        super().__init__(scene, parent)
        self.map_scene = scene
        self.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform, True)
        # Zooming keeps the point under the wheel event itself in place (see zoom_by), not the
        # point under wherever the system cursor is.
        self.setTransformationAnchor(QGraphicsView.ViewportAnchor.NoAnchor)
        self.setResizeAnchor(QGraphicsView.ViewportAnchor.AnchorViewCenter)
        self.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.setVerticalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.setDragMode(QGraphicsView.DragMode.NoDrag)
        self.setBackgroundBrush(QBrush(QColor("#2b2b2b")))
        self.lasso_mode = False
        self._lasso: QPainterPath | None = None
        self._lasso_item: QGraphicsPathItem | None = None
        self._press: QPoint | None = None
        self._last: QPoint | None = None

    def fit(self) -> None:
        pad = self.map_scene.side / 2
        self.fitInView(self.map_scene.photos_rect().adjusted(-pad, -pad, pad, pad),
                       Qt.AspectRatioMode.KeepAspectRatio)

    def zoom(self) -> float:
        return float(self.transform().m11())

    def zoom_by(self, factor: float, at: QPoint | None = None) -> None:
        """Zoom by ``factor`` keeping the scene point under ``at`` (viewport pixels; the middle by
        default) where it is."""
        at = self.viewport().rect().center() if at is None else at
        fixed = self.mapToScene(at)
        # Between a whole map of 100,000 photos and one photo filling the window.
        target = min(40.0, max(0.005, self.zoom() * factor))
        self.scale(target / self.zoom(), target / self.zoom())
        drift = self.mapFromScene(fixed) - at
        self.horizontalScrollBar().setValue(self.horizontalScrollBar().value() + drift.x())
        self.verticalScrollBar().setValue(self.verticalScrollBar().value() + drift.y())

    def wheelEvent(self, event: QWheelEvent) -> None:
        steps = event.angleDelta().y() / 120
        if steps:
            self.zoom_by(math.pow(1.25, steps), event.position().toPoint())
        event.accept()

    def mousePressEvent(self, event: QMouseEvent) -> None:
        if event.button() != Qt.MouseButton.LeftButton:
            super().mousePressEvent(event)
            return
        pos = event.position().toPoint()
        if self.lasso_mode or event.modifiers() & Qt.KeyboardModifier.ShiftModifier:
            self._lasso = QPainterPath(self.mapToScene(pos))
            self._lasso_item = self.map_scene.addPath(self._lasso, QPen(QColor("white"), 0, Qt.PenStyle.DashLine),
                                                      QBrush(QColor(26, 115, 232, 50)))
        else:
            self._press = self._last = pos
            self.viewport().setCursor(Qt.CursorShape.ClosedHandCursor)
        event.accept()

    def mouseMoveEvent(self, event: QMouseEvent) -> None:
        pos = event.position().toPoint()
        if self._lasso is not None and self._lasso_item is not None:
            self._lasso.lineTo(self.mapToScene(pos))
            self._lasso_item.setPath(self._lasso)
        elif self._last is not None:
            delta = pos - self._last
            self._last = pos
            self.horizontalScrollBar().setValue(self.horizontalScrollBar().value() - delta.x())
            self.verticalScrollBar().setValue(self.verticalScrollBar().value() - delta.y())
        else:
            super().mouseMoveEvent(event)

    def mouseReleaseEvent(self, event: QMouseEvent) -> None:
        pos = event.position().toPoint()
        if self._lasso is not None:
            path, self._lasso = self._lasso, None
            path.closeSubpath()
            if self._lasso_item is not None:
                self.map_scene.removeItem(self._lasso_item)
                self._lasso_item = None
            inside = [p for p, item in self.map_scene.photos.items() if path.contains(item.pos())]
            self.map_scene.select_paths(inside)
            self.lassoed.emit(inside)
        elif self._press is not None:
            moved = (pos - self._press).manhattanLength()
            self._press = self._last = None
            self.viewport().unsetCursor()
            if moved < 4:
                self.click_at(pos)
        event.accept()

    def click_at(self, pos: QPoint) -> None:
        """A click at ``pos`` (viewport pixels): the photo there is selected and shown."""
        item = next((i for i in self.items(pos) if isinstance(i, PhotoItem)), None)
        if item is not None:
            self.map_scene.select_paths([item.path])
            self.photo_clicked.emit(item.path)


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


__all__ = ["CHANNEL", "MapScene", "MapView", "MapWindow", "PhotoItem", "PhotoMap", "PhotoMapper", "label_colours",
           "lay_out"]
