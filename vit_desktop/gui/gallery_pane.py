"""The left-hand side: the filter bar, the gallery of results and the one-line summary under it.

It owns how results are filtered, sorted and counted. Its threshold box and categories box write
the window's view state; when the threshold changes, whoever changed it, the results already
listed are marked again and counted again.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from PySide6.QtCore import QItemSelectionModel, QModelIndex, QPoint, Qt, QTimer, QUrl, Signal, Slot
from PySide6.QtGui import QAction, QDesktopServices, QGuiApplication
from PySide6.QtWidgets import (
    QComboBox,
    QDoubleSpinBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QMenu,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from vit_desktop.core.types import ClassifyResult
from vit_desktop.gui.compute import Controller, RunProgress
from vit_desktop.gui.gallery import GalleryView
from vit_desktop.gui.jobs import Job
from vit_desktop.gui.results_model import (
    FILTER_TITLES,
    SORT_KEYS,
    FilterMode,
    ResultsFilter,
    ResultsModel,
    Roles,
    SimilarOrder,
)
from vit_desktop.gui.similar_view import SimilarStrip
from vit_desktop.gui.thumbnails import ImageLoader
from vit_desktop.gui.view_state import ViewState

EMPTY_TEXT = "Drop images or folders here\nor use File ▸ Open images… (Ctrl+O)"


class GalleryPane(QWidget):
    """Filter text and state, sort order, threshold; the gallery; the counts."""

    #: The current result changed (a ClassifyResult, or None).
    current_changed = Signal(object)
    #: Text for the status bar.
    note = Signal(str)
    #: The "my categories" box was confirmed: its text (empty: back to the model's own classes).
    categories_entered = Signal(str)
    #: "Classes…" was clicked: the box's text, to show what its names cover.
    coverage_requested = Signal(str)
    #: Whether Undo has a removal to put back.
    undo_available = Signal(bool)

    def __init__(self, loader: ImageLoader, model: ResultsModel, state: ViewState, controller: Controller,
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.results_model = model
        self._state = state
        self.proxy = ResultsFilter(self)
        self.proxy.setSourceModel(model)
        self.filter_edit = QLineEdit(self)
        self.filter_edit.setPlaceholderText("Filter by label or file name")
        self.filter_edit.setClearButtonEnabled(True)
        self.filter_mode = QComboBox(self)
        for mode, title in FILTER_TITLES.items():
            self.filter_mode.addItem(title, int(mode))
        self.sort_combo = QComboBox(self)
        for title, _role, _order in SORT_KEYS:
            self.sort_combo.addItem(title)
        self.threshold_spin = QDoubleSpinBox(self)
        self.threshold_spin.setRange(0, 100)
        self.threshold_spin.setDecimals(0)
        self.threshold_spin.setSuffix(" %")
        self.threshold_spin.setPrefix("Uncertain below ")
        # 0 % would mark nothing: at the bottom of the range, each model's own rule decides.
        self.threshold_spin.setSpecialValueText("Uncertain: by model")
        self.threshold_spin.setToolTip(
            "As the model says: a photo is \"none of these\" when the model's own rule says so (a fine-tuned "
            "model's rule was calibrated on your photos). Set a score to mark instead every photo whose best "
            "score is below it.")
        self.categories_edit = QLineEdit(self)
        self.categories_edit.setPlaceholderText("Sort into my categories: dog, cat, car…")
        self.categories_edit.setClearButtonEnabled(True)
        self.categories_edit.setToolTip(
            "Names of your own categories, comma-separated (Enter applies, empty goes back to the model's "
            "classes). A photo's score is the model's probability summed over the category: photos of none "
            "of them score low and show as uncertain. Needs a model with ImageNet's classes.")
        self.categories_edit.setAcceptDrops(False)
        self.coverage_button = QPushButton("Classes…", self)
        self.coverage_button.setToolTip("Show what each name covers, and untick what you do not mean")
        # Text fields would swallow dropped files as text: drops belong to the window.
        self.filter_edit.setAcceptDrops(False)
        self.threshold_spin.setAcceptDrops(False)
        self.threshold_spin.lineEdit().setAcceptDrops(False)

        self.gallery = GalleryView(loader, self)
        self.gallery.setModel(self.proxy)
        self.gallery.setContextMenuPolicy(Qt.ContextMenuPolicy.CustomContextMenu)
        self.summary = QLabel("", self)
        self.summary.setObjectName("summary")
        bar = QHBoxLayout()
        bar.addWidget(self.filter_edit, 2)
        bar.addWidget(self.filter_mode)
        bar.addWidget(self.sort_combo)
        bar.addWidget(self.threshold_spin)
        lv = QVBoxLayout(self)
        lv.setContentsMargins(6, 6, 0, 6)
        lv.addLayout(bar)
        names = QHBoxLayout()
        names.addWidget(self.categories_edit, 1)
        names.addWidget(self.coverage_button)
        lv.addLayout(names)
        self.similar_strip = SimilarStrip(state, self)
        lv.addWidget(self.similar_strip)
        lv.addWidget(self.gallery, 1)
        lv.addWidget(self.summary)
        self._context_actions: list[QAction] = []
        #: What each removal took off the list, newest last, for Undo.
        self._removed: list[list[tuple[int, ClassifyResult]]] = []
        self._has_samples = False
        #: The sort chosen in the box before a "similar to" order took its place.
        self._usual_sort = 0

        self.filter_edit.textChanged.connect(self._on_filter_text)
        self.filter_mode.currentIndexChanged.connect(self._on_filter_mode)
        self.sort_combo.currentIndexChanged.connect(self._on_sort)
        self._show_threshold(state.threshold)
        self.threshold_spin.valueChanged.connect(self._on_threshold_spin)
        state.threshold_changed.connect(self._on_threshold_changed)
        state.rule_changed.connect(self._on_rule_changed)
        self.results_model.verdict = state.verdict()
        state.categories_changed.connect(self._on_categories_changed)
        state.similar_changed.connect(self._on_similar_changed)
        controller.run_started.connect(self._on_run_started)
        self.categories_edit.returnPressed.connect(self._on_categories)
        self.categories_edit.textChanged.connect(self._on_categories_cleared)
        self.coverage_button.clicked.connect(self._on_coverage_clicked)
        self.gallery.selectionModel().currentChanged.connect(self._on_current_changed)
        self.gallery.customContextMenuRequested.connect(self._on_context_menu)
        model.dataChanged.connect(self._on_data_changed)
        # Results replaced in place (a re-classified folder, a new threshold) change the counts too;
        # a run replaces them a batch at a time, so count once the batch is in.
        self._summary_timer = QTimer(self)
        self._summary_timer.setSingleShot(True)
        self._summary_timer.setInterval(0)
        self._summary_timer.timeout.connect(self.update_summary)
        model.rowsInserted.connect(self.update_summary)
        model.rowsRemoved.connect(self.update_summary)
        model.modelReset.connect(self.update_summary)
        self.proxy.layoutChanged.connect(self.update_empty_text)

    # -- what the window sets ------------------------------------------------------------------

    def set_context_actions(self, actions: list[QAction]) -> None:
        """What the right-click menu offers for a photo, before "Show in folder"."""
        self._context_actions = list(actions)

    def set_has_samples(self, has: bool) -> None:
        self._has_samples = has
        self.update_empty_text()

    def add_results(self, results: tuple[ClassifyResult, ...] | list[ClassifyResult]) -> None:
        self.results_model.add_results(results)
        if not self.gallery.currentIndex().isValid() and self.proxy.rowCount() > 0:
            self.gallery.setCurrentIndex(self.proxy.index(0, 0))

    @Slot(object)
    def _on_run_started(self, job: Job) -> None:
        job.progressed.connect(self._on_run_progress)

    @Slot(object)
    def _on_run_progress(self, progress: RunProgress) -> None:
        if progress.results:
            self.add_results(progress.results)

    # -- what the window asks ------------------------------------------------------------------

    def _selected_indexes(self) -> list[QModelIndex]:
        """The selected cards in view order; with none selected, the current one."""
        rows = self.gallery.selectionModel().selectedIndexes()
        if not rows and self.gallery.currentIndex().isValid():
            rows = [self.gallery.currentIndex()]
        return sorted(rows, key=lambda i: i.row())

    def selected_results(self) -> list[ClassifyResult]:
        return [i.data(Roles.RESULT) for i in self._selected_indexes()]

    def current_path(self) -> str | None:
        """The photo the detail panel shows (the one right-clicked last), if any."""
        cur = self.gallery.currentIndex()
        return str(cur.data(Roles.PATH)) if cur.isValid() else None

    @Slot(str)
    def show_path(self, path: str) -> None:
        """Make ``path`` the current photo (the detail panel shows it), even where the filter hides it."""
        index = self.proxy.index_of_path(path)
        if index.isValid():
            self.gallery.selectionModel().setCurrentIndex(index, QItemSelectionModel.SelectionFlag.ClearAndSelect)
            self.gallery.scrollTo(index)
        else:
            result = self.results_model.result_for(path)
            if result is not None:
                self.current_changed.emit(result)

    @Slot(list)
    def select_paths(self, paths: list[str]) -> int:
        """Select these photos in the gallery (those the filter shows), the first current; returns how many."""
        selection = self.gallery.selectionModel()
        shown = [i for i in (self.proxy.index_of_path(p) for p in paths) if i.isValid()]
        selection.clearSelection()
        for index in shown:
            selection.select(index, QItemSelectionModel.SelectionFlag.Select)
        if shown:
            first = min(shown, key=lambda i: i.row())
            selection.setCurrentIndex(first, QItemSelectionModel.SelectionFlag.NoUpdate)
            self.gallery.scrollTo(first)
        hidden = len(paths) - len(shown)
        self.note.emit(f"Selected {len(shown)} photo{'s' if len(shown) != 1 else ''} in the gallery"
                       + (f"; {hidden} hidden by the filter" if hidden else "") + ".")
        return len(shown)

    def copy_selected(self) -> None:
        """Copy the selected results as tab-separated lines: path, label, score (or the error)."""
        lines = []
        for r in self.selected_results():
            if r.error:
                lines.append(f"{r.path}\terror\t{r.error}")
            else:
                lines.append("\t".join([r.path] + [f"{p.label}\t{p.score:.4f}" for p in r.predictions]))
        if lines:
            QGuiApplication.clipboard().setText("\n".join(lines) + "\n")
            self.note.emit(f"Copied {len(lines)} result{'s' if len(lines) != 1 else ''}.")

    def remove_selected(self) -> None:
        """Take the selected photos off the list; the files stay where they are (Undo puts them back)."""
        rows = self._selected_indexes()
        if not rows:
            return
        first = rows[0].row()
        removed = self.results_model.remove_paths([i.data(Roles.PATH) for i in rows])
        self._removed.append(removed)
        self.undo_available.emit(True)
        n = len(removed)
        self.note.emit(f"Removed {n} photo{'s' if n != 1 else ''} from the list (the files are untouched; "
                       "Undo puts them back).")
        # The photo that followed the first removed one is shown next, as in a file manager.
        left = self.proxy.rowCount()
        if left:
            self.gallery.setCurrentIndex(self.proxy.index(min(first, left - 1), 0))
        else:
            self.current_changed.emit(None)

    def undo_remove(self) -> None:
        """Put back the photos the last removal took off the list, and select them."""
        if not self._removed:
            return
        back = self.results_model.restore(self._removed.pop())
        self.undo_available.emit(bool(self._removed))
        if back:
            selection = self.gallery.selectionModel()
            selection.clearSelection()
            for path in back:
                selection.select(self.proxy.index_of_path(path), QItemSelectionModel.SelectionFlag.Select)
            selection.setCurrentIndex(self.proxy.index_of_path(back[0]), QItemSelectionModel.SelectionFlag.NoUpdate)
        self.note.emit(f"Put back {len(back)} photo{'s' if len(back) != 1 else ''}.")

    def forget_removed(self) -> None:
        """The list was cleared: there is nothing left to put back into."""
        self._removed.clear()
        self.undo_available.emit(False)

    # -- slots ---------------------------------------------------------------------------------

    def _keeping_current(self, change: Callable[[], None], *, to_top: bool) -> None:
        """Apply a filter or sort ``change`` with the same photo current and selected after it (when
        it still passes the filter): a new order starts at the top, a new filter at that photo."""
        cur = self.gallery.currentIndex()
        path = cur.data(Roles.PATH) if cur.isValid() else None
        change()
        again = self.proxy.index_of_path(path) if path is not None else QModelIndex()
        if again.isValid():
            self.gallery.selectionModel().setCurrentIndex(
                again, QItemSelectionModel.SelectionFlag.ClearAndSelect)
        if to_top or not again.isValid():
            self.gallery.scrollToTop()
        else:
            self.gallery.scrollTo(again)
        self.update_summary()

    @Slot(str)
    def _on_filter_text(self, text: str) -> None:
        self._keeping_current(lambda: self.proxy.set_text(text), to_top=False)

    @Slot(int)
    def _on_sort(self, i: int) -> None:
        if i >= len(SORT_KEYS):  # the "similar to" entry
            self._keeping_current(self.proxy.sort_by_similarity, to_top=True)
            return
        self._usual_sort = i
        if self._state.similar is not None:
            self._state.set_similar(None)  # choosing an order leaves "similar to"
            return
        self._keeping_current(lambda: self.proxy.set_sort_key(i), to_top=True)

    @Slot(object)
    def _on_similar_changed(self, order: SimilarOrder | None) -> None:
        """The gallery in the "similar to" order (the photo asked about first, current), or back."""
        self.results_model.set_similar(order)
        combo = self.sort_combo
        combo.blockSignals(True)
        while combo.count() > len(SORT_KEYS):
            combo.removeItem(len(SORT_KEYS))
        if order is not None:
            combo.addItem(f"Similar to {Path(order.query).name}")
            combo.setCurrentIndex(len(SORT_KEYS))
        else:
            combo.setCurrentIndex(self._usual_sort)
        combo.blockSignals(False)
        if order is None:
            self._keeping_current(lambda: self.proxy.set_sort_key(self._usual_sort), to_top=False)
            return
        self.proxy.sort_by_similarity()
        self.show_path(order.query)
        self.gallery.scrollToTop()
        self.update_summary()

    @Slot(int)
    def _on_filter_mode(self, i: int) -> None:
        self._keeping_current(lambda: self.proxy.set_mode(FilterMode(self.filter_mode.itemData(i))), to_top=False)
        self.update_empty_text()

    @Slot(float)
    def _on_threshold_spin(self, value: float) -> None:
        self._state.set_threshold(value / 100.0 if value > 0 else None)

    def _show_threshold(self, fraction: float | None) -> None:
        self.threshold_spin.blockSignals(True)
        self.threshold_spin.setValue(0 if fraction is None else round(fraction * 100))
        self.threshold_spin.blockSignals(False)

    @Slot(object)
    def _on_threshold_changed(self, fraction: float | None) -> None:
        self._show_threshold(fraction)
        self._judge_again()

    @Slot(object)
    def _on_rule_changed(self, _rule: object) -> None:
        self._judge_again()

    def _judge_again(self) -> None:
        """The results already listed are marked again by the threshold or rule in force now."""
        s = self._state
        self.results_model.apply_rule(s.threshold, s.rule, s.verdict())
        self.refresh()

    @Slot(object)
    def _on_categories_changed(self, categories: object) -> None:
        if categories is None and self.categories_edit.text():
            # Dropped elsewhere (a model without ImageNet's classes): the box says so by emptying.
            self.categories_edit.blockSignals(True)
            self.categories_edit.clear()
            self.categories_edit.blockSignals(False)
        self.refresh()

    @Slot()
    def _on_categories(self) -> None:
        self.categories_entered.emit(self.categories_edit.text().strip())

    @Slot()
    def _on_coverage_clicked(self) -> None:
        self.coverage_requested.emit(self.categories_edit.text().strip())

    @Slot(str)
    def set_names(self, text: str) -> None:
        """The names box reads ``text`` (the names as edited elsewhere), without sorting again."""
        self.categories_edit.blockSignals(True)
        self.categories_edit.setText(text)
        self.categories_edit.blockSignals(False)

    @Slot(str)
    def _on_categories_cleared(self, text: str) -> None:
        if not text:  # the clear button: straight back to the model's classes
            self.categories_entered.emit("")

    @Slot(QModelIndex, QModelIndex)
    def _on_current_changed(self, current: QModelIndex, _previous: QModelIndex) -> None:
        self.current_changed.emit(current.data(Roles.RESULT) if current.isValid() else None)

    @Slot(QModelIndex, QModelIndex, list)
    def _on_data_changed(self, top_left: QModelIndex, bottom_right: QModelIndex, _roles: list[int]) -> None:
        self._summary_timer.start()
        cur = self.gallery.currentIndex()
        if cur.isValid() and top_left.row() <= self.proxy.mapToSource(cur).row() <= bottom_right.row():
            self.current_changed.emit(cur.data(Roles.RESULT))

    @Slot(object)
    def refresh(self, _changed: object = None) -> None:
        """The results' labels or states changed underneath: filter and count again."""
        self.proxy.refilter()
        self.update_summary()

    @Slot()
    def update_summary(self) -> None:
        n, errors, uncertain = self.results_model.counts()
        shown = self.proxy.rowCount()
        of = f"{shown} of {n} shown · " if shown != n else ""
        verdict = self.results_model.verdict
        self.summary.setText(f"{of}{n} image{'s' if n != 1 else ''} · {uncertain} {verdict} · {errors} errors"
                             if n else "")
        self.update_empty_text()

    @Slot()
    def update_empty_text(self) -> None:
        empty = self.results_model.rowCount() == 0
        self.gallery.empty_text = EMPTY_TEXT if empty else "No image matches the filter"
        self.gallery.set_sample_button_visible(empty and self._has_samples)
        self.gallery.viewport().update()

    @Slot(QPoint)
    def _on_context_menu(self, pos: QPoint) -> None:
        index = self.gallery.indexAt(pos)
        if not index.isValid():
            return
        r: ClassifyResult = index.data(Roles.RESULT)
        menu = QMenu(self)
        for act in self._context_actions:
            menu.addAction(act)
        show = menu.addAction("Show in folder")
        show.triggered.connect(self._show_current_in_folder)
        show.setEnabled(Path(r.path).exists())
        menu.popup(self.gallery.viewport().mapToGlobal(pos))

    @Slot()
    def _show_current_in_folder(self) -> None:
        index = self.gallery.currentIndex()
        if index.isValid():
            QDesktopServices.openUrl(QUrl.fromLocalFile(str(Path(index.data(Roles.PATH)).parent)))


__all__ = ["GalleryPane"]
