"""How a trained model did: curves, confusion matrix, per-class accuracy, and its mistakes."""

from __future__ import annotations

import html
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PySide6.QtCore import Qt, Slot
from PySide6.QtGui import QColor, QPixmap
from PySide6.QtWidgets import (
    QAbstractItemView,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QTableWidget,
    QTableWidgetItem,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from vit_desktop.core.training.results import CAVEAT
from vit_desktop.gui.finetune.curves import CurveWidget
from vit_desktop.gui.plain_text import as_plain, plain
from vit_desktop.gui.qimage import rgb_to_qimage

if TYPE_CHECKING:
    from vit_desktop.core.training import TrainResult
    from vit_desktop.core.training.results import Mistake

#: The side of a mistake's preview (core renders them at this size).
PREVIEW_SIDE = 320
MISTAKES_HINT = "Click a photo to see it with the heatmap of the predicted class"
#: The narrowest a confusion matrix column gets (a count still shows), and the widest its row names.
MIN_CONFUSION_COLUMN = 36
MAX_CONFUSION_ROW_HEADER = 160


def _scores(m: Mistake) -> str:
    """"\ndog 71%, cat 22%": how sure the model was of its wrong answer, and of the right one, on a
    line of its own (after the names, on one line, it was cut off at the list's edge)."""
    if m.predicted_p is None or m.true_p is None:
        return ""
    return f"\n{m.predicted} {m.predicted_p:.0%}, {m.true} {m.true_p:.0%}"


class ResultsView(QTabWidget):
    """Four tabs: curves (live while training), confusion matrix, per class, mistakes."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.previews: dict[str, np.ndarray] = {}
        self.curves = CurveWidget()
        self.addTab(self.curves, "Curves")
        confusion = QWidget()
        cv = QVBoxLayout(confusion)
        cv.addWidget(QLabel("Rows: the true class. Columns: the class the model predicted."))
        self.confusion_table = QTableWidget()
        self.confusion_table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        # The columns share the tab's width (names too long are cut short, whole in their tooltip):
        # at 5 classes, columns sized to "predicted: <name>" left two behind a scroll bar.
        self.confusion_table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Stretch)
        self.confusion_table.horizontalHeader().setMinimumSectionSize(MIN_CONFUSION_COLUMN)
        self.confusion_table.verticalHeader().setMaximumWidth(MAX_CONFUSION_ROW_HEADER)
        self.confusion_table.setTextElideMode(Qt.TextElideMode.ElideRight)
        cv.addWidget(self.confusion_table, 1)
        self.addTab(confusion, "Confusion matrix")
        self.per_class_table = QTableWidget(0, 2)
        self.per_class_table.setHorizontalHeaderLabels(["Class", "Validation accuracy"])
        self.per_class_table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.per_class_table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Stretch)
        self.addTab(self.per_class_table, "Per class")
        mistakes = QWidget()
        mv = QHBoxLayout(mistakes)
        self.mistake_list = QListWidget()
        self.mistake_list.setAlternatingRowColors(True)  # entries of two lines each, told apart
        self.mistake_list.currentItemChanged.connect(self._on_mistake_selected)
        self.mistake_view = QLabel(MISTAKES_HINT)
        self.mistake_view.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.mistake_view.setMinimumWidth(PREVIEW_SIDE)
        self.mistake_view.setWordWrap(True)
        mv.addWidget(self.mistake_list, 1)
        mv.addWidget(self.mistake_view, 1)
        self.addTab(mistakes, "Mistakes")
        heads = QWidget()
        hv = QVBoxLayout(heads)
        self.head_summary = QLabel("Train to see which head your photos choose")
        self.head_summary.setWordWrap(True)
        self.heads_table = QTableWidget(0, 3)
        self.heads_table.setHorizontalHeaderLabels(["Head", "CV accuracy", "CV log-loss"])
        self.heads_table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.heads_table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Stretch)
        self.head_notes = QLabel("")
        self.head_notes.setWordWrap(True)
        self.head_notes.setObjectName("headNotes")
        plain(self.mistake_view, self.head_notes)  # file and class names: never HTML
        hv.addWidget(self.head_summary)
        hv.addWidget(self.heads_table, 1)
        hv.addWidget(self.head_notes)
        self.heads_tab = self.addTab(heads, "Head")

    def clear_results(self) -> None:
        self.previews = {}
        self.curves.clear()
        self.confusion_table.clear()
        self.per_class_table.setRowCount(0)
        self.mistake_list.clear()
        self.heads_table.setRowCount(0)
        self.head_notes.setText("")

    def show_result(self, r: TrainResult, previews: dict[str, np.ndarray]) -> None:
        self.previews = previews
        self.curves.set_rows(list(r.history), r.best_epoch)
        if not r.history:
            head = r.metrics.selection.head if r.metrics.selection is not None else None
            self.curves.set_placeholder(
                f"No epochs to draw: the {head + ' ' if head else ''}head was fitted in one step, the model "
                "itself left as it was (the Head tab says how the head was chosen). “Last blocks + head” "
                "and “Full fine-tune” train over epochs, drawn here.")
        labels = list(r.card.labels)
        n = len(labels)
        self.confusion_table.setRowCount(n)
        self.confusion_table.setColumnCount(n)
        for i, c in enumerate(labels):
            for header, set_header in (("true", self.confusion_table.setVerticalHeaderItem),
                                       ("predicted", self.confusion_table.setHorizontalHeaderItem)):
                item = QTableWidgetItem(c)
                item.setToolTip(as_plain(f"{header}: {c}"))
                set_header(i, item)
        peak = max((v for row in r.confusion for v in row), default=0) or 1
        for i, row in enumerate(r.confusion):
            for j, v in enumerate(row):
                item = QTableWidgetItem(str(v))
                item.setTextAlignment(Qt.AlignmentFlag.AlignCenter)
                if v:
                    # Shade by count: the diagonal should be the dark one.
                    tint = QColor(60, 140, 60) if i == j else QColor(200, 70, 50)
                    tint.setAlpha(int(40 + 160 * v / peak))
                    item.setBackground(tint)
                self.confusion_table.setItem(i, j, item)
        self.per_class_table.setRowCount(n)
        for i, (c, acc) in enumerate(zip(labels, r.per_class_accuracy)):
            self.per_class_table.setItem(i, 0, QTableWidgetItem(c))
            self.per_class_table.setItem(i, 1, QTableWidgetItem(f"{acc:.0%}"))
        self._show_selection(r)
        self.mistake_list.clear()
        for m in r.misclassified:
            entry = QListWidgetItem(f"{Path(m.path).name}: {m.true} → {m.predicted}{_scores(m)}")
            entry.setData(Qt.ItemDataRole.UserRole, m.path)
            sure = (f"\nthe model gave {m.predicted} {m.predicted_p:.0%}, {m.true} (the true class) {m.true_p:.0%}"
                    if m.predicted_p is not None and m.true_p is not None else "")
            entry.setToolTip(as_plain(m.path + sure))
            self.mistake_list.addItem(entry)
        checked = r.metrics.val_images
        self.mistake_view.setPixmap(QPixmap())
        self.mistake_view.setText(
            MISTAKES_HINT if r.misclassified
            else f"No mistakes: all {checked} validation photos were classified right" if checked
            else "No validation photos, so no mistakes to show")

    def _show_selection(self, r: TrainResult) -> None:
        """Which head cross-validation chose, how every head did, and what the names meant."""
        selection = r.metrics.selection
        if selection is None:
            self.head_summary.setText("")
            self.heads_table.setRowCount(0)
            return
        chosen = f" (chosen on your photos by {selection.method})" if selection.method else ""
        # Bold on purpose; the summary names the classes, which are the user's text.
        self.head_summary.setText(f"<b>{html.escape(selection.summary)}</b>{html.escape(chosen)}")
        self.heads_table.setRowCount(len(selection.scores))
        bold = self.font()
        bold.setBold(True)
        for i, score in enumerate(selection.scores):
            cells = (score.name, f"{score.accuracy:.0%}", f"{score.loss:.3f}")
            for j, text in enumerate(cells):
                item = QTableWidgetItem(text)
                if score.name == selection.head:
                    item.setFont(bold)
                self.heads_table.setItem(i, j, item)
        lines = []
        for c in selection.classes:
            what = c.meaning or "a name the model does not know: its photos teach it"
            lines.append(f"“{c.name}”: {what}" + (f"; the photos chose {', '.join(c.nodes)}" if c.nodes else ""))
        lines.append(f"{CAVEAT[0].upper()}{CAVEAT[1:]}.")
        self.head_notes.setText("\n".join(lines))

    @Slot()
    def _on_mistake_selected(self, *args: object) -> None:
        item = self.mistake_list.currentItem()
        if item is None:
            return
        path = item.data(Qt.ItemDataRole.UserRole)
        arr = self.previews.get(path)
        if arr is None:
            pix = QPixmap(path)
            if pix.isNull():
                self.mistake_view.setText(f"{Path(path).name}: cannot be shown")
                return
            self.mistake_view.setPixmap(pix.scaled(PREVIEW_SIDE, PREVIEW_SIDE, Qt.AspectRatioMode.KeepAspectRatio))
            return
        self.mistake_view.setPixmap(QPixmap.fromImage(rgb_to_qimage(arr)))


__all__ = ["ResultsView"]
