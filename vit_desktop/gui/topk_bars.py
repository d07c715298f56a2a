"""The top-k predictions as bars: label, score bar and percentage; clicking one asks for its class map."""

from __future__ import annotations

from PySide6.QtCore import QRectF, QSize, Qt, Signal, Slot
from PySide6.QtGui import QColor, QFontMetrics, QPainter, QPaintEvent, QPalette
from PySide6.QtWidgets import QAbstractButton, QButtonGroup, QSizePolicy, QVBoxLayout, QWidget

from vit_desktop.core.types import ClassifyResult
from vit_desktop.gui.plain_text import as_plain


class ClassBar(QAbstractButton):
    """One class: its label, a bar for its score and the percentage. Checkable."""

    def __init__(self, label: str, index: int, score: float, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.label = label
        self.class_index = index
        self.score = score
        self.setCheckable(True)
        self.setCursor(Qt.CursorShape.PointingHandCursor)
        self.setToolTip(as_plain(f"Show what “{label}” rests on (its class map)"))
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)

    def sizeHint(self) -> QSize:
        return QSize(200, QFontMetrics(self.font()).height() * 2 + 6)

    def paintEvent(self, event: QPaintEvent) -> None:
        p = QPainter(self)
        p.setRenderHint(QPainter.RenderHint.Antialiasing, True)
        pal = self.palette()
        r = self.rect().adjusted(1, 1, -1, -1)
        if self.isChecked():
            p.setPen(pal.color(QPalette.ColorRole.Highlight))
            p.setBrush(pal.color(QPalette.ColorRole.Highlight).lighter(170))
            p.drawRoundedRect(r, 4, 4)
        elif self.underMouse():
            p.setPen(Qt.PenStyle.NoPen)
            p.setBrush(pal.color(QPalette.ColorRole.AlternateBase))
            p.drawRoundedRect(r, 4, 4)
        fm = QFontMetrics(self.font())
        pct = f"{self.score:.1%}"
        pct_w = fm.horizontalAdvance("100.0%") + 6
        text_r = r.adjusted(6, 2, -6 - pct_w, -(r.height() // 2))
        p.setPen(pal.color(QPalette.ColorRole.Text) if not self.isChecked() else QColor("#102040"))
        p.drawText(text_r, Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter,
                   fm.elidedText(self.label, Qt.TextElideMode.ElideRight, text_r.width()))
        p.drawText(r.adjusted(0, 2, -6, -(r.height() // 2)),
                   Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter, pct)
        bar = QRectF(r.left() + 6, r.top() + r.height() * 0.62, r.width() - 12, 6)
        p.setPen(Qt.PenStyle.NoPen)
        p.setBrush(pal.color(QPalette.ColorRole.Midlight))
        p.drawRoundedRect(bar, 3, 3)
        bar.setWidth(max(2.0, bar.width() * max(0.0, min(1.0, self.score))))
        p.setBrush(QColor("#3d8bd9"))
        p.drawRoundedRect(bar, 3, 3)
        p.end()


class TopKBars(QWidget):
    """The top-k predictions as clickable bars; clicking one asks for its class map."""

    class_clicked = Signal(int)  # the class (or category) index of the bar clicked

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._layout = QVBoxLayout(self)
        self._layout.setContentsMargins(0, 0, 0, 0)
        self._layout.setSpacing(2)
        self._group = QButtonGroup(self)
        self._group.setExclusive(False)
        self._group.buttonClicked.connect(self._on_clicked)
        self.bars: list[ClassBar] = []

    def set_result(self, result: ClassifyResult | None) -> None:
        for bar in self.bars:
            self._group.removeButton(bar)
            # Out of the layout now: deleteLater only acts once control is back in the event loop.
            self._layout.removeWidget(bar)
            bar.hide()
            bar.deleteLater()
        self.bars = []
        if result is None or not result.predictions:
            return
        for pred in result.predictions:
            bar = ClassBar(pred.label, pred.index, pred.score, self)
            self._group.addButton(bar)
            self._layout.addWidget(bar)
            self.bars.append(bar)

    def set_checked_class(self, class_index: int | None) -> None:
        for bar in self.bars:
            bar.setChecked(bar.class_index == class_index)

    @Slot(QAbstractButton)
    def _on_clicked(self, button: QAbstractButton) -> None:
        assert isinstance(button, ClassBar)
        # The panel checks the bar whose map it shows (set_checked_class); a click only asks.
        button.setChecked(not button.isChecked())
        self.class_clicked.emit(button.class_index)


__all__ = ["ClassBar", "TopKBars"]
