"""The map's canvas: photos as items placed on a scene, and the view that zooms, pans and draws a lasso.

:mod:`map_view` fills it (:class:`~vit_desktop.gui.map_view.MapWindow`) with a layout the compute
thread made. A photo is its label's colour until it is large enough on screen to show its
thumbnail, which is only then decoded.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
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
    QWheelEvent,
)
from PySide6.QtWidgets import (
    QGraphicsItem,
    QGraphicsPathItem,
    QGraphicsScene,
    QGraphicsView,
    QStyleOptionGraphicsItem,
    QWidget,
)

from vit_desktop.gui.plain_text import as_plain

if TYPE_CHECKING:
    from vit_desktop.gui.thumbnails import ImageLoader

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


__all__ = ["MapScene", "MapView", "PhotoItem", "icon_side", "label_colours"]
