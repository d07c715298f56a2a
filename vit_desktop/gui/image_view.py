"""A zoomable, pannable photo with the heatmap overlay and the model's crop outlined.

Everything is drawn in the original image's pixel coordinates (after EXIF orientation), which is
the space ``Heatmap.crop_box`` lives in; the preview we paint may be a downscaled decode, so it is
stretched back over the full original size. The heatmap is a tiny patch grid coloured by core and
stretched over the crop box with smooth filtering, so changing opacity or colour map is instant.
"""

from __future__ import annotations

import numpy as np
from PySide6.QtCore import QPointF, QRectF, Qt, Signal
from PySide6.QtGui import (
    QColor,
    QImage,
    QMouseEvent,
    QPainter,
    QPaintEvent,
    QPen,
    QPixmap,
    QResizeEvent,
    QWheelEvent,
)
from PySide6.QtWidgets import QSizePolicy, QWidget

from vit_desktop.core.types import Heatmap
from vit_desktop.gui.qimage import rgb_to_qimage


def heatmap_qimage(heatmap: Heatmap, colormap: str) -> QImage:
    """The heatmap grid coloured by ``vit_desktop.core.io.heatmap.colorize`` as a small RGB QImage."""
    from vit_desktop.core.io.heatmap import colorize

    grid = np.clip(np.asarray(heatmap.grid, dtype=np.float32), 0.0, 1.0)
    return rgb_to_qimage(colorize(grid, colormap))


class ImageView(QWidget):
    """Paints photo + overlay; wheel zooms around the cursor, drag pans, double-click fits."""

    zoom_changed = Signal(float)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)
        self.setMinimumSize(200, 160)
        self.setMouseTracking(False)
        self.setFocusPolicy(Qt.FocusPolicy.StrongFocus)
        self._pixmap: QPixmap | None = None
        self._image_size: tuple[int, int] | None = None
        self._overlay: QPixmap | None = None
        self._heatmap: Heatmap | None = None
        self._overlay_visible = True
        self._opacity = 0.5
        self._show_crop = True
        self._scale = 1.0
        self._offset = QPointF(0, 0)
        self._fit = True
        self._drag_from: QPointF | None = None
        self.message = ""

    # -- content -------------------------------------------------------------------------------

    def set_image(self, image: QImage | None, original_size: tuple[int, int] | None = None) -> None:
        """Show a (possibly downscaled) decode of a photo whose oriented size is ``original_size``."""
        same_photo = original_size is not None and original_size == self._image_size and self._pixmap is not None
        self._pixmap = QPixmap.fromImage(image) if image is not None and not image.isNull() else None
        if self._pixmap is not None:
            self._image_size = original_size or (self._pixmap.width(), self._pixmap.height())
        else:
            self._image_size = original_size
        if not same_photo:
            self._fit = True
        self._refit()
        self.update()

    def set_heatmap(self, heatmap: Heatmap | None, colormap: str) -> None:
        self._heatmap = heatmap
        self._overlay = QPixmap.fromImage(heatmap_qimage(heatmap, colormap)) if heatmap is not None else None
        if heatmap is not None and self._image_size is None:
            self._image_size = heatmap.image_size
        self.update()

    def set_colormap(self, colormap: str) -> None:
        self.set_heatmap(self._heatmap, colormap)

    def set_opacity(self, opacity: float) -> None:
        self._opacity = max(0.0, min(1.0, opacity))
        self.update()

    def set_overlay_visible(self, visible: bool) -> None:
        self._overlay_visible = visible
        self.update()

    def set_show_crop(self, show: bool) -> None:
        self._show_crop = show
        self.update()

    def set_message(self, message: str) -> None:
        self.message = message
        self.update()

    @property
    def overlay_visible(self) -> bool:
        return self._overlay_visible

    @property
    def heatmap(self) -> Heatmap | None:
        return self._heatmap

    @property
    def has_image(self) -> bool:
        return self._pixmap is not None

    # -- zoom and pan --------------------------------------------------------------------------

    @property
    def zoom(self) -> float:
        return self._scale

    def fit(self) -> None:
        self._fit = True
        self._refit()
        self.update()

    def zoom_by(self, factor: float, anchor: QPointF | None = None) -> None:
        if self._image_size is None:
            return
        anchor = anchor if anchor is not None else QPointF(self.width() / 2, self.height() / 2)
        new_scale = max(0.02, min(40.0, self._scale * factor))
        # Keep the image point under the anchor where it is.
        img_pt = (anchor - self._offset) / self._scale
        self._scale = new_scale
        self._offset = anchor - img_pt * new_scale
        self._fit = False
        self.zoom_changed.emit(self._scale)
        self.update()

    def _refit(self) -> None:
        if not self._fit or self._image_size is None:
            return
        w, h = self._image_size
        if w <= 0 or h <= 0:
            return
        margin = 8
        s = min((self.width() - 2 * margin) / w, (self.height() - 2 * margin) / h)
        self._scale = max(s, 0.01)
        self._offset = QPointF((self.width() - w * self._scale) / 2, (self.height() - h * self._scale) / 2)
        self.zoom_changed.emit(self._scale)

    # -- Qt events -----------------------------------------------------------------------------

    def resizeEvent(self, event: QResizeEvent) -> None:
        self._refit()
        super().resizeEvent(event)

    def wheelEvent(self, event: QWheelEvent) -> None:
        steps = event.angleDelta().y() / 120.0
        if steps:
            self.zoom_by(1.25 ** steps, event.position())
        event.accept()

    def mousePressEvent(self, event: QMouseEvent) -> None:
        if event.button() == Qt.MouseButton.LeftButton:
            self._drag_from = event.position()
            self.setCursor(Qt.CursorShape.ClosedHandCursor)
        super().mousePressEvent(event)

    def mouseMoveEvent(self, event: QMouseEvent) -> None:
        if self._drag_from is not None:
            delta = event.position() - self._drag_from
            self._drag_from = event.position()
            self._offset += delta
            self._fit = False
            self.update()
        super().mouseMoveEvent(event)

    def mouseReleaseEvent(self, event: QMouseEvent) -> None:
        self._drag_from = None
        self.unsetCursor()
        super().mouseReleaseEvent(event)

    def mouseDoubleClickEvent(self, event: QMouseEvent) -> None:
        self.fit()

    def paintEvent(self, event: QPaintEvent) -> None:
        painter = QPainter(self)
        painter.fillRect(self.rect(), QColor("#1e1f22"))
        if self._pixmap is None or self._image_size is None:
            painter.setPen(QColor("#9a9ca3"))
            painter.drawText(self.rect(), Qt.AlignmentFlag.AlignCenter | Qt.TextFlag.TextWordWrap,
                             self.message or "Select an image to see where the model looked")
            painter.end()
            return
        painter.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform, True)
        painter.translate(self._offset)
        painter.scale(self._scale, self._scale)
        w, h = self._image_size
        painter.drawPixmap(QRectF(0, 0, w, h), self._pixmap, QRectF(self._pixmap.rect()))
        if self._heatmap is not None:
            left, top, right, bottom = self._heatmap.crop_box
            crop = QRectF(left, top, right - left, bottom - top)
            if self._overlay_visible and self._overlay is not None:
                painter.setOpacity(self._opacity)
                painter.drawPixmap(crop, self._overlay, QRectF(self._overlay.rect()))
                painter.setOpacity(1.0)
            if self._show_crop:
                pen = QPen(QColor(255, 255, 255, 220), 0)  # cosmetic: 1 px at any zoom
                pen.setStyle(Qt.PenStyle.DashLine)
                painter.setPen(pen)
                painter.setBrush(Qt.BrushStyle.NoBrush)
                painter.drawRect(crop)
        painter.end()


__all__ = ["ImageView", "heatmap_qimage"]
