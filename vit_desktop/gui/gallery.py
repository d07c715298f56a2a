"""The gallery: a ``QListView`` in icon mode with a delegate that paints each result card."""

from __future__ import annotations

import collections

from PySide6.QtCore import QModelIndex, QPersistentModelIndex, QRect, QSize, Qt, Slot
from PySide6.QtGui import QColor, QFont, QFontMetrics, QPainter, QPaintEvent, QPalette, QPen, QPixmap, QResizeEvent
from PySide6.QtWidgets import (
    QAbstractItemView,
    QListView,
    QPushButton,
    QStyle,
    QStyledItemDelegate,
    QStyleOptionViewItem,
    QWidget,
)

from vit_desktop.core.types import ClassifyResult
from vit_desktop.gui.results_model import Roles
from vit_desktop.gui.thumbnails import ImageLoader

ERROR_COLOR = QColor("#d9534f")
UNCERTAIN_COLOR = QColor("#e0a526")
BAR_COLOR = QColor("#3d8bd9")
BADGE_COLOR = QColor(20, 60, 110, 215)


class ResultDelegate(QStyledItemDelegate):
    """Thumbnail, file name, best label and a score bar; errors show their reason in red."""

    def __init__(self, loader: ImageLoader, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._loader = loader
        self.card = QSize(loader.thumb_size + 16, loader.thumb_size + 62)
        # Fonts and metrics per base font: building them in every paint call was a measurable
        # share of a gallery repaint.
        self._fonts: dict[str, tuple[QFont, QFont, QFontMetrics, QFontMetrics]] = {}
        self._cards: collections.OrderedDict[tuple[object, ...], tuple[QPixmap, ClassifyResult]] = (
            collections.OrderedDict())
        self._card_capacity = 160  # ~25 MB of cards: a few screens of a large window

    def _fonts_for(self, base: QFont) -> tuple[QFont, QFont, QFontMetrics, QFontMetrics]:
        key = base.key()
        cached = self._fonts.get(key)
        if cached is None:
            bold = QFont(base)
            bold.setBold(True)
            cached = (QFont(base), bold, QFontMetrics(base), QFontMetrics(bold))
            self._fonts[key] = cached
        return cached

    def sizeHint(self, option: QStyleOptionViewItem, index: QModelIndex | QPersistentModelIndex) -> QSize:
        return self.card

    def paint(self, painter: QPainter, option: QStyleOptionViewItem,
              index: QModelIndex | QPersistentModelIndex) -> None:
        result: ClassifyResult | None = index.data(Roles.RESULT)
        if result is None:
            return
        selected = bool(option.state & QStyle.StateFlag.State_Selected)
        pix = self._loader.thumbnail(result.path)
        size = option.rect.size()
        # A card only changes with its result, its thumbnail or its selection: render it once
        # into a pixmap and blit it afterwards. Text layout is the expensive part of a repaint.
        stale = bool(index.data(Roles.STALE))
        verdict = str(index.data(Roles.VERDICT) or "uncertain") if result.uncertain else ""
        badge = similarity_badge(index.data(Roles.SIMILARITY), index.data(Roles.SIMILARITY_KEY))
        key = (result.path, id(result), selected, stale, verdict, badge, pix is not None and pix.cacheKey(),
               self._loader.thumbnail_error(result.path) is not None, size.width(), size.height(),
               option.font.key(), option.palette.cacheKey())
        cached = self._cards.get(key)
        if cached is None:
            dpr = painter.device().devicePixelRatioF() if painter.device() is not None else 1.0
            card = QPixmap(size * dpr)
            card.setDevicePixelRatio(dpr)
            card.fill(Qt.GlobalColor.transparent)
            card_painter = QPainter(card)
            self._paint_card(card_painter, QRect(0, 0, size.width(), size.height()), option, result, pix,
                             selected, index.data(Roles.NAME) or "", stale, verdict, badge)
            card_painter.end()
            # The result rides along: its id is part of the key, so it must outlive the entry.
            self._cards[key] = (card, result)
            while len(self._cards) > self._card_capacity:
                self._cards.popitem(last=False)
        else:
            card = cached[0]
            self._cards.move_to_end(key)
        painter.drawPixmap(option.rect.topLeft(), card)

    def _paint_card(self, painter: QPainter, area: QRect, option: QStyleOptionViewItem, result: ClassifyResult,
                    pix: QPixmap | None, selected: bool, name: str, stale: bool = False, verdict: str = "",
                    badge: str = "") -> None:
        painter.save()
        painter.setRenderHint(QPainter.RenderHint.Antialiasing, True)
        rect = area.adjusted(3, 3, -3, -3)
        pal = option.palette
        # A selected card keeps its light background (the score bar stays readable) and gets a
        # thick highlight frame and a faint tint instead of a solid fill.
        highlight = pal.color(QPalette.ColorRole.Highlight)
        if selected:
            tint = QColor(highlight)
            tint.setAlpha(40)
            painter.setPen(QPen(highlight, 2.5))
            painter.setBrush(pal.color(QPalette.ColorRole.Base))
            painter.drawRoundedRect(rect, 6, 6)
            painter.setBrush(tint)
            painter.drawRoundedRect(rect, 6, 6)
        else:
            painter.setPen(QPen(pal.color(QPalette.ColorRole.Mid), 1))
            painter.setBrush(pal.color(QPalette.ColorRole.Base))
            painter.drawRoundedRect(rect, 6, 6)

        size = self._loader.thumb_size
        thumb_rect = QRect(rect.left() + (rect.width() - size) // 2, rect.top() + 5, size, size)
        if pix is not None:
            scaled = pix.size().scaled(thumb_rect.size(), Qt.AspectRatioMode.KeepAspectRatio)
            target = QRect(0, 0, scaled.width(), scaled.height())
            target.moveCenter(thumb_rect.center())
            painter.drawPixmap(target, pix)
        else:
            painter.fillRect(thumb_rect, pal.color(QPalette.ColorRole.AlternateBase))
            problem = self._loader.thumbnail_error(result.path)
            if problem and not result.error:
                painter.setPen(pal.color(QPalette.ColorRole.PlaceholderText))
                painter.drawText(thumb_rect, Qt.AlignmentFlag.AlignCenter, "no preview")
        if badge:
            self._paint_badge(painter, thumb_rect, badge, option.font)

        text_color = pal.color(QPalette.ColorRole.Text)
        font, bold, fm, bold_fm = self._fonts_for(option.font)
        line_h = fm.height()
        y = thumb_rect.bottom() + 4
        text_rect = QRect(rect.left() + 6, y, rect.width() - 12, line_h)
        painter.setFont(bold)
        if result.error:
            painter.setPen(ERROR_COLOR)
            painter.drawText(text_rect, Qt.AlignmentFlag.AlignLeft, bold_fm.elidedText(
                "Error", Qt.TextElideMode.ElideRight, text_rect.width()))
            painter.setFont(font)
            reason_rect = QRect(text_rect.left(), y + line_h + 3, text_rect.width(), line_h)
            painter.drawText(reason_rect, Qt.AlignmentFlag.AlignLeft,
                             fm.elidedText(result.error, Qt.TextElideMode.ElideRight, text_rect.width()))
            name_rect = QRect(text_rect.left(), y + 2 * line_h + 4, text_rect.width(), line_h)
            painter.setPen(pal.color(QPalette.ColorRole.PlaceholderText))
            painter.drawText(name_rect, Qt.AlignmentFlag.AlignLeft,
                             fm.elidedText(name, Qt.TextElideMode.ElideMiddle, text_rect.width()))
            painter.restore()
            return

        top = result.top
        label = top.label if top else "?"
        score = top.score if top else 0.0
        if stale:  # an earlier model's answer: greyed, and says so
            painter.setPen(pal.color(QPalette.ColorRole.PlaceholderText))
            label = f"{label} (earlier model)"
        else:
            painter.setPen(UNCERTAIN_COLOR if result.uncertain else text_color)
            if verdict:  # "none of these (dog?)", never a bare "dog 3 %"
                label = f"{verdict} ({label}?)"
        painter.drawText(text_rect, Qt.AlignmentFlag.AlignLeft,
                         bold_fm.elidedText(label, Qt.TextElideMode.ElideRight, text_rect.width()))
        painter.setFont(font)
        # Score bar with the percentage at its right.
        bar_y = y + line_h + 3
        pct = f"{score:.0%}"
        pct_w = fm.horizontalAdvance("100%") + 4
        bar = QRect(text_rect.left(), bar_y + (line_h - 6) // 2, text_rect.width() - pct_w, 6)
        painter.setPen(Qt.PenStyle.NoPen)
        painter.setBrush(pal.color(QPalette.ColorRole.Midlight))
        painter.drawRoundedRect(bar, 3, 3)
        filled = QRect(bar)
        filled.setWidth(max(2, int(bar.width() * max(0.0, min(1.0, score)))))
        painter.setBrush(UNCERTAIN_COLOR if result.uncertain else BAR_COLOR)
        painter.drawRoundedRect(filled, 3, 3)
        painter.setPen(text_color)
        painter.drawText(QRect(bar.right() + 4, bar_y, pct_w, line_h), Qt.AlignmentFlag.AlignRight, pct)
        name_rect = QRect(text_rect.left(), bar_y + line_h + 1, text_rect.width(), line_h)
        painter.setPen(pal.color(QPalette.ColorRole.PlaceholderText))
        painter.drawText(name_rect, Qt.AlignmentFlag.AlignLeft,
                         fm.elidedText(name, Qt.TextElideMode.ElideMiddle, text_rect.width()))
        painter.restore()


    def _paint_badge(self, painter: QPainter, thumb_rect: QRect, text: str, base: QFont) -> None:
        """The likeness to the photo of "Find similar", over the thumbnail's top-left corner."""
        _font, bold, _fm, bold_fm = self._fonts_for(base)
        box = QRect(thumb_rect.left() + 4, thumb_rect.top() + 4, bold_fm.horizontalAdvance(text) + 12,
                    bold_fm.height() + 4)
        painter.setPen(Qt.PenStyle.NoPen)
        painter.setBrush(BADGE_COLOR)
        painter.drawRoundedRect(box, 4, 4)
        painter.setFont(bold)
        painter.setPen(QColor("white"))
        painter.drawText(box, Qt.AlignmentFlag.AlignCenter, text)


def similarity_badge(score: object, key: object) -> str:
    """What a card says of its likeness to the photo asked about: "this photo", "0.87", or nothing."""
    if isinstance(key, float) and key > 1.5:
        return "this photo"
    return f"{score:.2f}" if isinstance(score, float) else ""


class GalleryView(QListView):
    """Icon grid of results; says what to do when empty. Drops go to the window."""

    def __init__(self, loader: ImageLoader, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("gallery")
        self.delegate = ResultDelegate(loader, self)
        self.setItemDelegate(self.delegate)
        # Cards wrap into rows: a horizontal scroll bar only ever appeared as a stray after a relayout.
        self.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.setViewMode(QListView.ViewMode.IconMode)
        self.setResizeMode(QListView.ResizeMode.Adjust)
        self.setMovement(QListView.Movement.Static)
        self.setUniformItemSizes(True)  # thousands of rows: no per-item size queries
        self.setLayoutMode(QListView.LayoutMode.Batched)
        self.setBatchSize(200)
        self.setSpacing(4)
        self.setGridSize(self.delegate.card + QSize(8, 8))
        self.setSelectionMode(QAbstractItemView.SelectionMode.ExtendedSelection)
        self.setVerticalScrollMode(QAbstractItemView.ScrollMode.ScrollPerPixel)
        self.setAcceptDrops(False)  # let drops reach the main window, which accepts them anywhere
        self.viewport().setAcceptDrops(False)
        self.setDragEnabled(True)  # photos drag out as file URLs (to the fine-tune dialog)
        self.setDragDropMode(QAbstractItemView.DragDropMode.DragOnly)
        self.setDefaultDropAction(Qt.DropAction.CopyAction)
        self.empty_text = "Drop images or folders here\nor use File ▸ Open images… (Ctrl+O)"
        # A first drop one click away: shown on the empty gallery when sample photos exist.
        self.sample_button = QPushButton("Try the sample photos", self.viewport())
        self.sample_button.hide()
        loader.thumbnail_ready.connect(self._on_thumbnail_ready)

    def set_sample_button_visible(self, visible: bool) -> None:
        self.sample_button.setVisible(visible)
        self._place_sample_button()

    def _place_sample_button(self) -> None:
        hint = self.sample_button.sizeHint()
        rect = self.viewport().rect()
        self.sample_button.setGeometry((rect.width() - hint.width()) // 2, rect.height() // 2 + 40,
                                       hint.width(), hint.height())

    def resizeEvent(self, event: QResizeEvent) -> None:
        super().resizeEvent(event)
        self._fit_columns()
        self._place_sample_button()

    def _fit_columns(self) -> None:
        """Cells share the width out evenly: as many columns as fit, no empty band on the right.

        Qt's icon layout wraps a row once ``spacing + columns * cell`` passes the viewport's widest
        size less a scroll bar's width, reserved whether or not the bar shows; the same sum here
        keeps the columns steady while the bar comes and goes.
        """
        base = self.delegate.card + QSize(8, 8)
        bar = self.style().pixelMetric(QStyle.PixelMetric.PM_ScrollBarExtent, None, self.verticalScrollBar())
        width = self.maximumViewportSize().width() - bar - self.spacing()
        columns = max(1, width // base.width())
        cell = QSize(max(base.width(), width // columns), base.height())
        if cell != self.gridSize():
            self.setGridSize(cell)

    @Slot(str)
    def _on_thumbnail_ready(self, path: str) -> None:
        # Repaint only that card: a whole-viewport repaint per thumbnail stalls a busy gallery.
        model = self.model()
        find = getattr(model, "index_of_path", None)
        index = find(path) if find is not None else QModelIndex()
        if index.isValid():
            self.update(index)
        else:
            self.viewport().update()

    def paintEvent(self, event: QPaintEvent) -> None:
        super().paintEvent(event)
        model = self.model()
        if model is not None and model.rowCount() == 0:
            painter = QPainter(self.viewport())
            painter.setPen(self.palette().color(QPalette.ColorRole.PlaceholderText))
            font = QFont(self.font())
            font.setPointSizeF(font.pointSizeF() * 1.3)
            painter.setFont(font)
            painter.drawText(self.viewport().rect(), Qt.AlignmentFlag.AlignCenter, self.empty_text)
            painter.end()


__all__ = ["GalleryView", "ResultDelegate", "similarity_badge"]
