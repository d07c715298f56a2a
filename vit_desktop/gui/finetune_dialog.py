"""The fine-tune dialog: make classes, put photos in them, train, look at the results, save.

Training runs on the controller's compute thread as a task (``controller.run_task``); the dialog
only turns its progress reports into curves and labels. What comes back is plain data: the
trained module (handed over, not shared), metrics, and small overlay images (numpy) of the
misclassified validation photos with their heatmaps, rendered on the compute thread.
"""

from __future__ import annotations

import copy
import os
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import numpy as np
from PySide6.QtCore import QPointF, QRectF, Qt, Signal, Slot
from PySide6.QtGui import QColor, QDragEnterEvent, QDropEvent, QImage, QPainter, QPainterPath, QPen, QPixmap
from PySide6.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QDialog,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QHeaderView,
    QInputDialog,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QMessageBox,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QSplitter,
    QTableWidget,
    QTableWidgetItem,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from vit_desktop.core.data import PROJECT_SUFFIX, LabelledSet
from vit_desktop.core.types import CancelToken, VitDesktopError

if TYPE_CHECKING:
    from vit_desktop.core.training import TrainProgress, TrainResult

#: (combo text, mode) in the order offered.
MODE_CHOICES: tuple[tuple[str, str], ...] = (
    ("Head only (fast, best for few photos)", "head"),
    ("Last blocks + head", "partial"),
    ("Full fine-tune", "full"),
)
#: Misclassified photos rendered with their heatmap (more would only slow the end of training).
MAX_MISTAKE_PREVIEWS = 48
PREVIEW_SIDE = 320


@dataclass(frozen=True, eq=False)
class TrainOutcome:
    """What the training task hands back to the GUI thread."""

    result: TrainResult
    #: path -> (h, w, 3) uint8 photo with its heatmap for the predicted class.
    previews: dict[str, np.ndarray]


def _training_task(
    data: LabelledSet, config: Any
) -> Callable[[Any, Callable[[object], None], CancelToken], TrainOutcome]:
    """The job run on the compute thread: train, then render the mistakes' heatmaps."""

    def task(engine: Any, report: Callable[[object], None], cancel: CancelToken) -> TrainOutcome:
        from vit_desktop.core.engine import Engine
        from vit_desktop.core.heatmap import render_overlay
        from vit_desktop.core.images import load_image
        from vit_desktop.core.training import finetune

        if engine is None:
            raise VitDesktopError("load a model first: fine-tuning starts from the current model")
        result = finetune(engine, data, config, progress=report, cancel=cancel)
        previews: dict[str, np.ndarray] = {}
        if result.misclassified:
            # A private engine on a copy: the result's module stays on the CPU for the GUI.
            trained = Engine.from_module(copy.deepcopy(result.module), result.card, device=str(engine.device))
            index = {c: i for i, c in enumerate(result.card.labels)}
            for path, _true, predicted in result.misclassified[:MAX_MISTAKE_PREVIEWS]:
                try:
                    photo = load_image(path, draft_size=PREVIEW_SIDE * 2)
                    heat = trained.explain_class(photo, index[predicted])
                    photo.thumbnail((PREVIEW_SIDE, PREVIEW_SIDE))
                    heat = replace(heat, crop_box=_scaled_box(heat, photo.size), image_size=photo.size)
                    previews[path] = np.asarray(render_overlay(photo, heat, opacity=0.45), dtype=np.uint8).copy()
                except (VitDesktopError, OSError, ValueError):
                    continue  # the list still shows the photo's name and labels
        return TrainOutcome(result, previews)

    return task


def _scaled_box(heat: Any, size: tuple[int, int]) -> tuple[float, float, float, float]:
    """The heatmap's crop box moved from the original's pixels to a thumbnail's."""
    sx = size[0] / heat.image_size[0]
    sy = size[1] / heat.image_size[1]
    left, top, right, bottom = heat.crop_box
    return (left * sx, top * sy, right * sx, bottom * sy)


def _qimage(arr: np.ndarray) -> QImage:
    h, w, _ = arr.shape
    arr = np.ascontiguousarray(arr)
    # QImage only borrows the buffer: copy so it outlives the array.
    return QImage(arr.data, w, h, 3 * w, QImage.Format.Format_RGB888).copy()


class CurveWidget(QWidget):
    """Loss and accuracy per epoch, train and validation, painted (no chart library needed)."""

    TRAIN = QColor(70, 130, 220)
    VAL = QColor(230, 120, 40)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.rows: list[dict[str, float]] = []
        self.setMinimumSize(360, 180)

    def set_rows(self, rows: list[dict[str, float]]) -> None:
        self.rows = list(rows)
        self.update()

    def add_row(self, row: dict[str, float]) -> None:
        self.rows.append(row)
        self.update()

    def clear(self) -> None:
        self.rows = []
        self.update()

    def paintEvent(self, event: Any) -> None:  # noqa: N802 - Qt override
        p = QPainter(self)
        p.setRenderHint(QPainter.RenderHint.Antialiasing)
        p.fillRect(self.rect(), self.palette().base())
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
        m = 28.0
        plot = box.adjusted(m, 18, -8, -m)
        p.setPen(self.palette().text().color())
        p.drawText(QRectF(box.left(), box.top() + 2, box.width(), 16), Qt.AlignmentFlag.AlignCenter, title)
        p.setPen(QPen(self.palette().mid().color(), 1))
        p.drawRect(plot)
        values = [r[k] for r in self.rows for k in keys if r.get(k) is not None]
        if not values:
            return
        lo, hi = fixed if fixed else (0.0, max(values) * 1.05 or 1.0)
        epochs = [r["epoch"] for r in self.rows]
        e0, e1 = min(epochs), max(max(epochs), min(epochs) + 1)
        p.setPen(self.palette().text().color())
        p.drawText(QRectF(box.left(), plot.top() - 6, m - 2, 12), Qt.AlignmentFlag.AlignRight, f"{hi:.2g}")
        p.drawText(QRectF(box.left(), plot.bottom() - 6, m - 2, 12), Qt.AlignmentFlag.AlignRight, f"{lo:.2g}")
        p.drawText(QRectF(plot.left(), plot.bottom() + 2, plot.width(), 14), Qt.AlignmentFlag.AlignCenter, "epoch")

        def point(e: float, v: float) -> QPointF:
            x = plot.left() + (e - e0) / (e1 - e0) * plot.width()
            y = plot.bottom() - (min(max(v, lo), hi) - lo) / ((hi - lo) or 1.0) * plot.height()
            return QPointF(x, y)

        for key, colour in zip(keys, (self.TRAIN, self.VAL)):
            pts = [point(r["epoch"], r[key]) for r in self.rows if r.get(key) is not None]
            if not pts:
                continue
            path = QPainterPath(pts[0])
            for q in pts[1:]:
                path.lineTo(q)
            p.setPen(QPen(colour, 2))
            p.drawPath(path)
            if len(pts) == 1:
                p.drawEllipse(pts[0], 2, 2)
        # Legend
        for i, (label, colour) in enumerate((("train", self.TRAIN), ("validation", self.VAL))):
            y = (plot.top() + 4 if legend_top else plot.bottom() - 32) + i * 14
            p.setPen(QPen(colour, 2))
            p.drawLine(QPointF(plot.right() - 80, y + 6), QPointF(plot.right() - 66, y + 6))
            p.setPen(self.palette().text().color())
            p.drawText(QRectF(plot.right() - 62, y, 60, 12), Qt.AlignmentFlag.AlignLeft, label)


class ClassList(QListWidget):
    """Classes with their photo counts; photos dropped on a class are labelled with it.

    With ``items_are_classes=False`` (the photo list) every drop goes to the selected class.
    """

    files_dropped = Signal(str, list)  # class name ("" = the selected one), paths

    def __init__(self, parent: QWidget | None = None, *, items_are_classes: bool = True) -> None:
        super().__init__(parent)
        self.items_are_classes = items_are_classes
        self.setAcceptDrops(True)
        self.setDropIndicatorShown(True)
        self.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)

    def dragEnterEvent(self, event: QDragEnterEvent) -> None:  # noqa: N802 - Qt override
        if event.mimeData().hasUrls():
            event.acceptProposedAction()
        else:
            super().dragEnterEvent(event)

    def dragMoveEvent(self, event: Any) -> None:  # noqa: N802 - Qt override
        if event.mimeData().hasUrls():
            event.acceptProposedAction()
        else:
            super().dragMoveEvent(event)

    def dropEvent(self, event: QDropEvent) -> None:  # noqa: N802 - Qt override
        urls = [u.toLocalFile() for u in event.mimeData().urls() if u.isLocalFile()]
        if not urls:
            return super().dropEvent(event)
        item = self.itemAt(event.position().toPoint()) if self.items_are_classes else None
        name = item.data(Qt.ItemDataRole.UserRole) if item is not None else ""
        self.files_dropped.emit(name or "", urls)
        event.acceptProposedAction()


class FinetuneDialog(QDialog):
    """Label photos into classes, train on the current model, inspect, save and use the result."""

    trained = Signal(object)  # TrainResult, once training ends (also when cancelled)

    def __init__(self, controller: Any, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Fine-tune")
        self.resize(980, 640)
        self.controller = controller
        self.data = LabelledSet()
        self.result: TrainResult | None = None
        self.previews: dict[str, np.ndarray] = {}
        self.saved_path: Path | None = None
        self._task_id: int | None = None
        self._build()
        controller.task_progress.connect(self._on_task_progress)
        controller.task_finished.connect(self._on_task_finished)
        controller.task_failed.connect(self._on_task_failed)
        controller.model_loaded.connect(self._on_model_loaded)
        self._refresh_classes()
        self._set_training(False)

    # ---- layout ------------------------------------------------------------------------------

    def _build(self) -> None:
        root = QHBoxLayout(self)
        split = QSplitter(Qt.Orientation.Horizontal)
        root.addWidget(split)

        left = QWidget()
        lv = QVBoxLayout(left)
        lv.setContentsMargins(0, 0, 0, 0)
        box = QGroupBox("Classes (drop photos on a class)")
        bv = QVBoxLayout(box)
        self.class_list = ClassList()
        self.class_list.files_dropped.connect(self._on_files_dropped)
        self.class_list.currentItemChanged.connect(self._on_class_selected)
        bv.addWidget(self.class_list)
        row = QHBoxLayout()
        self.add_class_button = QPushButton("Add…")
        self.rename_class_button = QPushButton("Rename…")
        self.delete_class_button = QPushButton("Delete")
        for b, slot in ((self.add_class_button, self._on_add_class), (self.rename_class_button, self._on_rename_class),
                        (self.delete_class_button, self._on_delete_class)):
            b.clicked.connect(slot)
            row.addWidget(b)
        bv.addLayout(row)
        self.photo_list = ClassList(items_are_classes=False)
        self.photo_list.setSelectionMode(QAbstractItemView.SelectionMode.ExtendedSelection)
        self.photo_list.files_dropped.connect(self._on_files_dropped)
        bv.addWidget(QLabel("Photos in the selected class (drop more here):"))
        bv.addWidget(self.photo_list)
        row = QHBoxLayout()
        self.add_photos_button = QPushButton("Add photos…")
        self.add_photos_button.clicked.connect(self._on_add_photos)
        self.remove_photos_button = QPushButton("Remove")
        self.remove_photos_button.clicked.connect(self._on_remove_photos)
        row.addWidget(self.add_photos_button)
        row.addWidget(self.remove_photos_button)
        bv.addLayout(row)
        lv.addWidget(box)
        row = QHBoxLayout()
        self.import_button = QPushButton("Import folder…")
        self.import_button.setToolTip("A folder with one subfolder per class")
        self.import_button.clicked.connect(self._on_import_folder)
        self.open_button = QPushButton("Open…")
        self.open_button.clicked.connect(self._on_open_project)
        self.save_project_button = QPushButton("Save labels…")
        self.save_project_button.clicked.connect(self._on_save_project)
        for b in (self.import_button, self.open_button, self.save_project_button):
            row.addWidget(b)
        lv.addLayout(row)
        split.addWidget(left)

        right = QWidget()
        rv = QVBoxLayout(right)
        rv.setContentsMargins(0, 0, 0, 0)
        form = QFormLayout()
        self.base_label = QLabel()
        form.addRow("Start from:", self.base_label)
        self.mode_combo = QComboBox()
        for text, mode in MODE_CHOICES:
            self.mode_combo.addItem(text, mode)
        form.addRow("Training:", self.mode_combo)
        self.epochs_spin = QSpinBox()
        self.epochs_spin.setRange(0, 500)
        self.epochs_spin.setSpecialValueText("automatic")
        form.addRow("Epochs:", self.epochs_spin)
        rv.addLayout(form)
        row = QHBoxLayout()
        self.train_button = QPushButton("Train")
        self.train_button.setDefault(True)
        self.train_button.clicked.connect(self.start_training)
        self.cancel_button = QPushButton("Cancel training")
        self.cancel_button.clicked.connect(self.cancel_training)
        self.progress_bar = QProgressBar()
        row.addWidget(self.train_button)
        row.addWidget(self.cancel_button)
        row.addWidget(self.progress_bar, 1)
        rv.addLayout(row)
        self.status_label = QLabel()
        self.status_label.setWordWrap(True)
        rv.addWidget(self.status_label)

        self.tabs = QTabWidget()
        self.curves = CurveWidget()
        self.tabs.addTab(self.curves, "Curves")
        self.confusion_table = QTableWidget()
        self.confusion_table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.tabs.addTab(self.confusion_table, "Confusion matrix")
        self.per_class_table = QTableWidget(0, 2)
        self.per_class_table.setHorizontalHeaderLabels(["Class", "Validation accuracy"])
        self.per_class_table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.per_class_table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Stretch)
        self.tabs.addTab(self.per_class_table, "Per class")
        mistakes = QWidget()
        mv = QHBoxLayout(mistakes)
        self.mistake_list = QListWidget()
        self.mistake_list.currentItemChanged.connect(self._on_mistake_selected)
        self.mistake_view = QLabel("Click a photo to see it with the heatmap of the predicted class")
        self.mistake_view.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.mistake_view.setMinimumWidth(PREVIEW_SIDE)
        self.mistake_view.setWordWrap(True)
        mv.addWidget(self.mistake_list, 1)
        mv.addWidget(self.mistake_view, 1)
        self.tabs.addTab(mistakes, "Mistakes")
        rv.addWidget(self.tabs, 1)

        row = QHBoxLayout()
        self.save_model_button = QPushButton("Save model…")
        self.save_model_button.clicked.connect(self._on_save_model)
        self.use_button = QPushButton("Use now")
        self.use_button.setToolTip("Classify with the new model in the main window")
        self.use_button.clicked.connect(self.use_now)
        close = QPushButton("Close")
        close.clicked.connect(self.reject)
        row.addWidget(self.save_model_button)
        row.addWidget(self.use_button)
        row.addStretch(1)
        row.addWidget(close)
        rv.addLayout(row)
        split.addWidget(right)
        split.setStretchFactor(1, 2)

    # ---- classes and photos ------------------------------------------------------------------

    def set_data(self, data: LabelledSet) -> None:
        self.data = data
        self._refresh_classes()

    def _selected_class(self) -> str | None:
        item = self.class_list.currentItem()
        return item.data(Qt.ItemDataRole.UserRole) if item is not None else None

    def _refresh_classes(self, select: str | None = None) -> None:
        select = select if select is not None else self._selected_class()
        self.class_list.blockSignals(True)
        self.class_list.clear()
        for name, n in self.data.counts().items():
            item = QListWidgetItem(f"{name}  ({n} photo{'s' if n != 1 else ''})")
            item.setData(Qt.ItemDataRole.UserRole, name)
            self.class_list.addItem(item)
            if name == select:
                self.class_list.setCurrentItem(item)
        if self.class_list.currentItem() is None and self.class_list.count():
            self.class_list.setCurrentRow(0)
        self.class_list.blockSignals(False)
        self._refresh_photos()
        has = self._selected_class() is not None
        for b in (self.rename_class_button, self.delete_class_button, self.add_photos_button,
                  self.remove_photos_button):
            b.setEnabled(has)

    def _refresh_photos(self) -> None:
        self.photo_list.clear()
        name = self._selected_class()
        if name is None:
            return
        for p in self.data.paths_of(name):
            item = QListWidgetItem(p.name)
            item.setData(Qt.ItemDataRole.UserRole, str(p))
            item.setToolTip(str(p))
            self.photo_list.addItem(item)

    def _edit(self, fn: Callable[[], LabelledSet], select: str | None = None) -> bool:
        try:
            self.data = fn()
        except VitDesktopError as exc:
            self.status_label.setText(str(exc))
            return False
        self._refresh_classes(select)
        return True

    def add_class(self, name: str) -> bool:
        return self._edit(lambda: self.data.with_class(name), name.strip())

    def rename_class(self, old: str, new: str) -> bool:
        return self._edit(lambda: self.data.renamed(old, new), new.strip())

    def delete_class(self, name: str) -> bool:
        return self._edit(lambda: self.data.without_class(name))

    def add_files(self, name: str, paths: list[str]) -> int:
        """Label photos (folders are searched) as ``name``; returns how many were added."""
        from vit_desktop.core.images import scan

        found = scan(paths)
        if self._edit(lambda: self.data.with_items(found.files, name), name):
            msg = f"{len(found.files)} photo{'s' if len(found.files) != 1 else ''} added to {name!r}"
            if found.errors:
                msg += f"; {len(found.errors)} skipped ({found.errors[0][1]})"
            self.status_label.setText(msg)
            return len(found.files)
        return 0

    @Slot(str, list)
    def _on_files_dropped(self, name: str, paths: list[str]) -> None:
        target = name or self._selected_class()
        if target is None:
            self.status_label.setText("Add a class first, then drop photos on it")
            return
        self.add_files(target, paths)

    @Slot()
    def _on_class_selected(self, *args: object) -> None:
        self._refresh_photos()

    @Slot()
    def _on_add_class(self) -> None:
        name, ok = QInputDialog.getText(self, "Add class", "Class name:")
        if ok and name.strip():
            self.add_class(name)

    @Slot()
    def _on_rename_class(self) -> None:
        old = self._selected_class()
        if old is None:
            return
        new, ok = QInputDialog.getText(self, "Rename class", "New name:", text=old)
        if ok and new.strip():
            self.rename_class(old, new)

    @Slot()
    def _on_delete_class(self) -> None:
        name = self._selected_class()
        if name is None:
            return
        n = self.data.counts().get(name, 0)
        if n and QMessageBox.question(
            self, "Delete class", f"Delete class {name!r} and remove its {n} photos from the set?\n"
            "(The files themselves are not touched.)"
        ) != QMessageBox.StandardButton.Yes:
            return
        self.delete_class(name)

    @Slot()
    def _on_add_photos(self) -> None:
        name = self._selected_class()
        if name is None:
            return
        files, _ = QFileDialog.getOpenFileNames(self, f"Add photos to {name}", "",
                                                "Images (*.jpg *.jpeg *.png *.bmp *.gif *.tif *.tiff *.webp)")
        if files:
            self.add_files(name, files)

    @Slot()
    def _on_remove_photos(self) -> None:
        paths = [i.data(Qt.ItemDataRole.UserRole) for i in self.photo_list.selectedItems()]
        if paths:
            self._edit(lambda: self.data.without_items(paths))

    def import_folder(self, folder: str | os.PathLike[str]) -> bool:
        try:
            data = LabelledSet.from_folder(folder)
        except VitDesktopError as exc:
            self.status_label.setText(str(exc))
            return False
        self.set_data(data)
        counts = ", ".join(f"{c} {n}" for c, n in data.counts().items())
        msg = f"Imported {len(data)} photos in {len(data.classes)} classes ({counts})"
        if data.problems:
            msg += f"; {len(data.problems)} unreadable skipped"
        self.status_label.setText(msg)
        return True

    def open_project(self, path: str | os.PathLike[str]) -> bool:
        try:
            data, missing = LabelledSet.load(path)
        except VitDesktopError as exc:
            self.status_label.setText(str(exc))
            return False
        self.set_data(data)
        msg = f"Opened {Path(path).name}: {len(data)} photos in {len(data.classes)} classes"
        if missing:
            msg += f"; {len(missing)} missing (first: {missing[0]})"
        self.status_label.setText(msg)
        return True

    def save_project(self, path: str | os.PathLike[str]) -> bool:
        try:
            self.data.save(path)
        except OSError as exc:
            self.status_label.setText(f"Could not save {Path(path).name}: {exc.strerror or exc}")
            return False
        self.status_label.setText(f"Saved labels to {path}")
        return True

    @Slot()
    def _on_import_folder(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Folder with one subfolder per class")
        if folder:
            self.import_folder(folder)

    @Slot()
    def _on_open_project(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Open labels", "", f"Label projects (*{PROJECT_SUFFIX} *.json)")
        if path:
            self.open_project(path)

    @Slot()
    def _on_save_project(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self, "Save labels", f"labels{PROJECT_SUFFIX}",
                                              f"Label projects (*{PROJECT_SUFFIX})")
        if path:
            self.save_project(path)

    # ---- training ----------------------------------------------------------------------------

    def config(self) -> Any:
        from vit_desktop.core.training import TrainConfig

        epochs = self.epochs_spin.value() or None
        return TrainConfig(mode=self.mode_combo.currentData(), epochs=epochs)

    def _set_training(self, running: bool) -> None:
        self.train_button.setEnabled(not running)
        self.cancel_button.setEnabled(running)
        has_result = self.result is not None and not running
        self.save_model_button.setEnabled(has_result)
        self.use_button.setEnabled(has_result)
        for w in (self.mode_combo, self.epochs_spin, self.import_button, self.open_button, self.class_list):
            w.setEnabled(not running)
        card = self.controller.current_card
        self.base_label.setText(card.name if card is not None else "no model loaded")

    @Slot()
    def start_training(self) -> None:
        if self._task_id is not None:
            return
        if self.controller.current_card is None:
            self.status_label.setText("Load a model first: fine-tuning starts from the current model")
            return
        try:
            self.data.validate()
            config = self.config()
        except VitDesktopError as exc:
            self.status_label.setText(str(exc))
            return
        self.result = None
        self.previews = {}
        self.saved_path = None
        self.curves.clear()
        self.confusion_table.clear()
        self.per_class_table.setRowCount(0)
        self.mistake_list.clear()
        self.progress_bar.setRange(0, 0)
        self.status_label.setText("Starting…")
        self._task_id = self.controller.run_task(_training_task(self.data, config))
        self._set_training(True)

    @Slot(object)
    def _on_model_loaded(self, loaded: object) -> None:
        card = self.controller.current_card
        self.base_label.setText(card.name if card is not None else "no model loaded")

    @Slot()
    def cancel_training(self) -> None:
        if self._task_id is not None:
            self.controller.cancel_task(self._task_id)
            self.status_label.setText("Cancelling: the best model so far will be kept…")

    @Slot(int, object)
    def _on_task_progress(self, task_id: int, p: object) -> None:
        if task_id != self._task_id:
            return
        prog: TrainProgress = p  # type: ignore[assignment]
        if prog.steps:
            self.progress_bar.setRange(0, prog.steps)
            self.progress_bar.setValue(prog.step)
        eta = f" — about {_duration(prog.eta_s)} left" if prog.eta_s is not None and prog.eta_s > 1 else ""
        if prog.phase == "val":
            self.curves.add_row({"epoch": prog.epoch, "loss": prog.loss, "acc": prog.acc,
                                 "val_loss": prog.val_loss, "val_acc": prog.val_acc})
            self.status_label.setText(
                f"Epoch {prog.epoch}/{prog.epochs}: loss {prog.loss:.3f}, accuracy {prog.acc:.0%}, "
                f"validation loss {prog.val_loss:.3f}, validation accuracy {prog.val_acc:.0%}{eta}"
            )
        else:
            detail = f", loss {prog.loss:.3f}" if prog.loss is not None else ""
            self.status_label.setText(f"{prog.message}{detail}{eta}")

    @Slot(int, object)
    def _on_task_finished(self, task_id: int, value: object) -> None:
        if task_id != self._task_id:
            return
        self._task_id = None
        outcome: TrainOutcome = value  # type: ignore[assignment]
        self.result = outcome.result
        self.previews = outcome.previews
        self.progress_bar.setRange(0, 1)
        self.progress_bar.setValue(1)
        self._show_result(outcome.result)
        self._set_training(False)
        self.trained.emit(outcome.result)

    @Slot(int, str)
    def _on_task_failed(self, task_id: int, message: str) -> None:
        if task_id != self._task_id:
            return
        self._task_id = None
        self.progress_bar.setRange(0, 1)
        self.progress_bar.setValue(0)
        self.status_label.setText(message)
        self._set_training(False)

    def _show_result(self, r: TrainResult) -> None:
        self.curves.set_rows(list(r.history))
        labels = list(r.card.labels)
        n = len(labels)
        self.confusion_table.setRowCount(n)
        self.confusion_table.setColumnCount(n)
        self.confusion_table.setVerticalHeaderLabels([f"true: {c}" for c in labels])
        self.confusion_table.setHorizontalHeaderLabels([f"predicted: {c}" for c in labels])
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
        self.confusion_table.resizeColumnsToContents()
        self.per_class_table.setRowCount(n)
        for i, (c, acc) in enumerate(zip(labels, r.per_class_accuracy)):
            self.per_class_table.setItem(i, 0, QTableWidgetItem(c))
            self.per_class_table.setItem(i, 1, QTableWidgetItem(f"{acc:.0%}"))
        self.mistake_list.clear()
        for path, true, predicted in r.misclassified:
            item = QListWidgetItem(f"{Path(path).name}: {true} → {predicted}")
            item.setData(Qt.ItemDataRole.UserRole, path)
            item.setToolTip(path)
            self.mistake_list.addItem(item)
        state = "Cancelled; kept the best model so far" if r.cancelled else "Done"
        n_bad = len(r.skipped)
        skipped = f"; {n_bad} unreadable photo{'s' if n_bad != 1 else ''} skipped (hover for the list)" if n_bad else ""
        self.status_label.setToolTip("\n".join(f"{p}: {why}" for p, why in r.skipped[:50]))
        self.status_label.setText(
            f"{state}: validation accuracy {r.val_accuracy:.0%} on {r.metrics.get('val_images')} photos "
            f"(best epoch {r.best_epoch}){skipped}"
        )

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
        self.mistake_view.setPixmap(QPixmap.fromImage(_qimage(arr)))

    # ---- saving and using --------------------------------------------------------------------

    def default_model_path(self) -> Path:
        from vit_desktop.core.paths import user_models_dir

        names = "-".join(self.result.card.labels[:3]) if self.result else "model"
        stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", names).strip("_")[:60] or "model"
        return user_models_dir() / f"{stem}.safetensors"

    def _ask_overwrite(self, path: Path) -> bool:
        return QMessageBox.question(
            self, "Replace model?", f"{path.name} already exists. Replace it?"
        ) == QMessageBox.StandardButton.Yes

    def save_model_to(self, path: str | os.PathLike[str]) -> bool:
        """Save the trained model; asks before replacing an existing file. True when written."""
        from vit_desktop.core.checkpoints import save_model

        if self.result is None:
            return False
        path = Path(path)
        if path.suffix.lower() != ".safetensors":
            path = path.with_name(path.name + ".safetensors")
        overwrite = path.exists()
        if overwrite and not self._ask_overwrite(path):
            self.status_label.setText("Not saved: the existing model was kept")
            return False
        card = replace(self.result.card, name=path.stem, source=str(path))
        try:
            save_model(path, self.result.module, card, overwrite=overwrite)
        except (OSError, ValueError) as exc:
            self.status_label.setText(f"Could not save {path.name}: {exc}")
            return False
        self.result = replace_result_card(self.result, card)
        self.saved_path = path
        self.status_label.setText(f"Saved {path}")
        self.controller.notify_models_changed()
        return True

    @Slot()
    def _on_save_model(self) -> None:
        if self.result is None:
            return
        path, _ = QFileDialog.getSaveFileName(
            self, "Save model", str(self.default_model_path()), "Models (*.safetensors)",
            options=QFileDialog.Option.DontConfirmOverwrite,  # we ask ourselves, with the same words everywhere
        )
        if path:
            self.save_model_to(path)

    @Slot()
    def use_now(self) -> None:
        """Switch the main window to the new model (a copy: this dialog may still save it)."""
        if self.result is None:
            return
        self.controller.use_module(copy.deepcopy(self.result.module), self.result.card)
        self.status_label.setText(f"Now classifying with {self.result.card.name}")

    # ---- closing -----------------------------------------------------------------------------

    def done(self, code: int) -> None:
        # Closing the dialog stops training; the compute thread notices at its next step.
        if self._task_id is not None:
            self.controller.cancel_task(self._task_id)
            self._task_id = None
        super().done(code)

    def closeEvent(self, event: Any) -> None:  # noqa: N802 - Qt override
        if self._task_id is not None:
            self.controller.cancel_task(self._task_id)
            self._task_id = None
        super().closeEvent(event)


def replace_result_card(result: TrainResult, card: Any) -> TrainResult:
    """The same result under a new card (its name and file after saving)."""
    return replace(result, card=card)


def _duration(seconds: float) -> str:
    s = int(round(seconds))
    return f"{s // 60} min {s % 60:02d} s" if s >= 60 else f"{s} s"
