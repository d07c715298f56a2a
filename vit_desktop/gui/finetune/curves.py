"""Loss and accuracy per epoch, train and validation, painted (no chart library in the GUI).

Both panels have epoch ticks and labelled axes, and the best epoch (the one whose weights are
kept) is marked, so that "best epoch 3" can be checked against the curves.
"""

from __future__ import annotations

import math
from typing import Any

from PySide6.QtCore import QPointF, QRectF, Qt
from PySide6.QtGui import QColor, QFontMetrics, QPainter, QPainterPath, QPen
from PySide6.QtWidgets import QWidget

#: One epoch's metrics: epoch, loss, acc, val_loss, val_acc (None where unknown).
Row = dict[str, float | None]


def epoch_ticks(first: int, last: int, room: int) -> list[int]:
    """Whole epochs from ``first`` to ``last`` to label, at most ``room`` of them, evenly spaced."""
    span = max(1, last - first)
    step = max(1, math.ceil(span / max(1, room - 1)))
    # Round the step to 1, 2, 5, 10, 20, 50...: tick labels people can count along.
    magnitude = 10 ** int(math.log10(step))
    step = next(m * magnitude for m in (1, 2, 5, 10) if m * magnitude >= step)
    ticks = list(range(first - first % step if first % step else first, last + 1, step))
    return [t for t in ticks if t >= first] or [first]


class CurveWidget(QWidget):
    """Two panels: loss (left) and accuracy (right), train in blue and validation in orange."""

    TRAIN = QColor(70, 130, 220)
    VAL = QColor(230, 120, 40)
    WAITING = "Loss and accuracy appear here epoch by epoch while training runs"

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.rows: list[Row] = []
        self.best_epoch: int | None = None
        #: What the panel says while it has no epoch to draw.
        self.placeholder = self.WAITING
        self.setMinimumSize(420, 200)

    def set_rows(self, rows: list[Row], best_epoch: int | None = None) -> None:
        self.rows = list(rows)
        self.best_epoch = best_epoch
        self.update()

    def add_row(self, row: Row) -> None:
        self.rows.append(row)
        self.update()

    def clear(self) -> None:
        self.rows = []
        self.best_epoch = None
        self.placeholder = self.WAITING
        self.update()

    def set_placeholder(self, text: str) -> None:
        self.placeholder = text
        self.update()

    def paintEvent(self, event: Any) -> None:
        p = QPainter(self)
        p.setRenderHint(QPainter.RenderHint.Antialiasing)
        p.fillRect(self.rect(), self.palette().base())
        if not any(r.get("epoch") is not None for r in self.rows):
            # Empty axes would look like a failed run: say what will be here, or why nothing is.
            p.setPen(self.palette().placeholderText().color())
            p.drawText(self.rect().adjusted(20, 20, -20, -20),
                       Qt.AlignmentFlag.AlignCenter | Qt.TextFlag.TextWordWrap, self.placeholder)
            p.end()
            return
        w, h = self.width(), self.height()
        half = w / 2
        # Legends where the curves are not: loss falls towards the bottom, accuracy rises to the top.
        self._panel(p, QRectF(0, 0, half, h), "loss", ("loss", "val_loss"), None, legend_top=True)
        self._panel(p, QRectF(half, 0, half, h), "accuracy", ("acc", "val_acc"), (0.0, 1.0), legend_top=False)
        p.end()

    def _panel(
        self,
        p: QPainter,
        box: QRectF,
        title: str,
        keys: tuple[str, str],
        fixed: tuple[float, float] | None,
        *,
        legend_top: bool,
    ) -> None:
        fm = QFontMetrics(self.font())
        text = self.palette().text().color()
        left_margin = fm.horizontalAdvance("100%") + fm.height() + 10
        plot = box.adjusted(left_margin, fm.height() + 6, -10, -(2 * fm.height() + 8))
        p.setPen(text)
        p.drawText(QRectF(box.left(), box.top() + 2, box.width(), fm.height()), Qt.AlignmentFlag.AlignCenter, title)
        p.setPen(QPen(self.palette().mid().color(), 1))
        p.drawRect(plot)
        # The y-axis label, turned to read upwards.
        p.save()
        p.setPen(text)
        p.translate(box.left() + 2, plot.center().y())
        p.rotate(-90)
        p.drawText(QRectF(-plot.height() / 2, 0, plot.height(), fm.height()), Qt.AlignmentFlag.AlignCenter, title)
        p.restore()
        p.setPen(text)
        p.drawText(QRectF(plot.left(), plot.bottom() + fm.height() + 4, plot.width(), fm.height()),
                   Qt.AlignmentFlag.AlignCenter, "epoch")
        values = [v for r in self.rows for k in keys if (v := r.get(k)) is not None]
        epochs = [int(e) for r in self.rows if (e := r.get("epoch")) is not None]
        if not values or not epochs:
            return
        lo, hi = fixed if fixed else (0.0, max(values) * 1.05 or 1.0)
        e0, e1 = min(epochs), max(max(epochs), min(epochs) + 1)

        def x_of(e: float) -> float:
            return plot.left() + (e - e0) / (e1 - e0) * plot.width()

        def y_of(v: float) -> float:
            return plot.bottom() - (min(max(v, lo), hi) - lo) / ((hi - lo) or 1.0) * plot.height()

        grid = QPen(self.palette().midlight().color(), 1, Qt.PenStyle.DotLine)
        for frac in (0.0, 0.5, 1.0):
            v = lo + frac * (hi - lo)
            y = y_of(v)
            p.setPen(grid)
            p.drawLine(QPointF(plot.left(), y), QPointF(plot.right(), y))
            p.setPen(text)
            label = f"{v:.0%}" if fixed else f"{v:.2g}"
            p.drawText(QRectF(box.left() + fm.height(), y - fm.height() / 2, left_margin - fm.height() - 4,
                              fm.height()), Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter, label)
        room = max(2, int(plot.width() // (fm.horizontalAdvance("000") + 6)))
        for e in epoch_ticks(e0, e1, room):
            x = x_of(e)
            p.setPen(QPen(text, 1))
            p.drawLine(QPointF(x, plot.bottom()), QPointF(x, plot.bottom() + 4))
            p.drawText(QRectF(x - 20, plot.bottom() + 4, 40, fm.height()), Qt.AlignmentFlag.AlignCenter, str(e))
        if self.best_epoch is not None and e0 <= self.best_epoch <= e1:
            x = x_of(self.best_epoch)
            p.setPen(QPen(QColor(60, 150, 60), 1, Qt.PenStyle.DashLine))
            p.drawLine(QPointF(x, plot.top()), QPointF(x, plot.bottom()))
            # Inside the plot (the best epoch is often the last one), where no curve and no legend is.
            width = fm.horizontalAdvance("best") + 2
            at_best = [y_of(v) for r in self.rows if r.get("epoch") == self.best_epoch
                       for k in keys if (v := r.get(k)) is not None]
            middle = plot.center().y() + 2  # just below the 50 % grid line
            places = [middle, plot.bottom() - fm.height() - 2 if legend_top else plot.top() + 2]
            y = max(places, key=lambda top: min((abs(top + fm.height() / 2 - c) for c in at_best), default=0.0))
            if x + 3 + width <= plot.right():
                p.drawText(QRectF(x + 3, y, width, fm.height()), Qt.AlignmentFlag.AlignLeft, "best")
            else:
                p.drawText(QRectF(x - 3 - width, y, width, fm.height()), Qt.AlignmentFlag.AlignRight, "best")

        for key, colour in zip(keys, (self.TRAIN, self.VAL)):
            pts = [QPointF(x_of(e), y_of(v)) for r in self.rows
                   if (v := r.get(key)) is not None and (e := r.get("epoch")) is not None]
            if not pts:
                continue
            path = QPainterPath(pts[0])
            for q in pts[1:]:
                path.lineTo(q)
            p.setPen(QPen(colour, 2))
            p.drawPath(path)
            if len(pts) == 1:
                p.drawEllipse(pts[0], 2, 2)
        for i, (label, colour) in enumerate((("train", self.TRAIN), ("validation", self.VAL))):
            y = (plot.top() + 4 if legend_top else plot.bottom() - 2 * fm.height() - 4) + i * fm.height()
            p.setPen(QPen(colour, 2))
            p.drawLine(QPointF(plot.right() - 90, y + fm.height() / 2), QPointF(plot.right() - 76, y + fm.height() / 2))
            p.setPen(text)
            p.drawText(QRectF(plot.right() - 72, y, 70, fm.height()), Qt.AlignmentFlag.AlignLeft, label)


__all__ = ["CurveWidget", "epoch_ticks"]
