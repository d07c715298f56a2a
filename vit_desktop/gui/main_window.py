"""The main window: gallery on the left, the selected image and its heatmap on the right.

It composes the parts and wires them; it computes nothing itself. Photos come in through
:mod:`.intake`, commands are :mod:`.actions`, the Model menu is :mod:`.model_menu`, the status bar
is :mod:`.run_status`, exports are :mod:`.exporting`, and every slow thing is a job of the
controller (:mod:`.compute`). The window is usable as soon as it is shown; the model loads on the
compute thread meanwhile, and photos dropped before it is ready wait in the intake's queue.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from PySide6.QtCore import QSettings, Qt, QThreadPool, Slot
from PySide6.QtGui import (
    QCloseEvent,
    QDragEnterEvent,
    QDragLeaveEvent,
    QDragMoveEvent,
    QDropEvent,
)
from PySide6.QtWidgets import (
    QMainWindow,
    QMessageBox,
    QSplitter,
    QVBoxLayout,
    QWidget,
)

from vit_desktop.gui import help_dialogs
from vit_desktop.gui.about import about_html
from vit_desktop.gui.actions import build_actions, build_menus
from vit_desktop.gui.category_labels import CategoryLabeller
from vit_desktop.gui.compute import Controller
from vit_desktop.gui.detail_panel import DetailPanel
from vit_desktop.gui.duplicates_view import DuplicateFinder
from vit_desktop.gui.exporting import Exporter
from vit_desktop.gui.gallery_pane import GalleryPane
from vit_desktop.gui.intake import Intake
from vit_desktop.gui.library_part import LibraryPart
from vit_desktop.gui.map_view import PhotoMapper
from vit_desktop.gui.message_bar import MessageBar
from vit_desktop.gui.model_menu import ModelMenu
from vit_desktop.gui.model_switch import ModelSwitch
from vit_desktop.gui.plain_text import as_plain
from vit_desktop.gui.results_model import ResultsModel
from vit_desktop.gui.run_status import RunStatus
from vit_desktop.gui.settings import AppSettings
from vit_desktop.gui.similar_view import SimilarSearch
from vit_desktop.gui.thumbnails import ImageLoader
from vit_desktop.gui.view_state import ViewState

if TYPE_CHECKING:
    from vit_desktop.gui.finetune.dialog import FinetuneDialog

log = logging.getLogger(__name__)


class MainWindow(QMainWindow):
    """The application window. ``settings`` may be injected (tests use a temporary INI file)."""

    def __init__(self, settings: QSettings | None = None, controller: Controller | None = None) -> None:
        super().__init__()
        self.setWindowTitle("vit-desktop")
        self.setAcceptDrops(True)
        self.settings = AppSettings(settings)
        self.controller = controller if controller is not None else Controller(self)
        self.loader = ImageLoader(parent=self)
        self.pool = QThreadPool(self)
        self.pool.setMaxThreadCount(2)
        self.results_model = ResultsModel(self)
        self.view_state = ViewState(self.settings, self)
        #: Images per forward pass, and predictions kept per image.
        self.batch_size = 16
        self.top_k = 5
        self._closing = False
        self.finetune_dialog: FinetuneDialog | None = None
        self._startup_done = False
        #: How many photos of the last session are on their way back (said when their run starts).
        self._restoring = 0

        self._build_widgets()
        self.run_status = RunStatus(self.statusBar(), self.controller, waiting=lambda: len(self.intake.pending),
                                    errors=lambda: self.results_model.counts()[1])
        self.intake = Intake(self, self.settings, self.controller, self.view_state, top_k=self.top_k,
                             batch_size=self.batch_size)
        self.exporter = Exporter(self, self.settings, self.controller.board, self.pool)
        self.library = LibraryPart(self, self.controller.board, self.pool)
        self.commands = build_actions(self, self._handlers())
        menus = build_menus(self.menuBar(), self.commands)
        self.model_menu = ModelMenu(menus["Model"], self.commands.open_weights, self.commands.reload_models, self,
                                    self.commands.open_model_folder)
        self.models = ModelSwitch(self, self.controller, self.settings, self.model_menu, self.message_bar,
                                  self.run_status, self.results_model, self.commands, self.pool)
        self.labeller = CategoryLabeller(self.results_model, self.controller, self.view_state, self.top_k, self)
        self.similar = SimilarSearch(self.controller, self.results_model, self.view_state, self.run_status, self)
        self.duplicates = DuplicateFinder(self.controller, self.loader, self.run_status, self)
        self.mapper = PhotoMapper(self.controller, self.results_model, self.loader, self.run_status, self)
        self._connect()
        self._restore_window()
        self._update_samples()
        self.run_status.show_model(None)

    # ------------------------------------------------------------------------------------------
    # Construction

    def _build_widgets(self) -> None:
        self.message_bar = MessageBar(self)
        self.pane = GalleryPane(self.loader, self.results_model, self.view_state, self.controller, self)
        self.gallery = self.pane.gallery
        self.proxy = self.pane.proxy
        self.detail = DetailPanel(self.controller, self.loader, self.view_state, self)
        self.splitter = QSplitter(Qt.Orientation.Horizontal, self)
        self.splitter.addWidget(self.pane)
        self.splitter.addWidget(self.detail)
        self.splitter.setStretchFactor(0, 3)
        self.splitter.setStretchFactor(1, 2)
        central = QWidget(self)
        cv = QVBoxLayout(central)
        cv.setContentsMargins(0, 0, 0, 0)
        cv.setSpacing(0)
        cv.addWidget(self.message_bar)
        cv.addWidget(self.splitter, 1)
        self.setCentralWidget(central)
        self.resize(1280, 800)

    def _handlers(self) -> dict[str, Callable[[], object]]:
        d, e, s = self.detail, self.exporter, self.view_state
        return {
            "open": lambda: self.intake.open_images_dialog(),
            "open_folder": lambda: self.intake.open_folder_dialog(),
            "paste": lambda: self.intake.paste(),
            "samples": self.open_samples,
            "export": lambda: e.export_results_dialog(self.results_model.results(), self.top_k),
            "export_overlay": lambda: e.export_overlay_dialog(d.result, d.current_heatmap, s.overlay),
            "copy_classes": lambda: e.copy_into_folders_dialog(self.results_model.results()),
            "overlay_caption": lambda: setattr(self.settings, "overlay_caption",
                                               self.commands.overlay_caption.isChecked()),
            "export_model": lambda: e.export_model_dialog(self.controller, self.sample_paths()),
            "write_keywords": lambda: self.library.write_keywords(self.results_model.results()),
            "library": lambda: self.library.show_dialog(),
            "clear": self.clear_results,
            "reclassify": self.reclassify,
            "quit": self.close,
            "copy": self.pane.copy_selected,
            "select_all": self.gallery.selectAll,
            "remove": self.pane.remove_selected,
            "undo_remove": self.pane.undo_remove,
            "cancel": self.escape,
            "overlay": d.toggle_overlay,
            "next_map": d.cycle_map,
            "class_maps_in_runs": lambda: s.set_class_maps_in_runs(self.commands.class_maps_in_runs.isChecked()),
            "fit": d.view.fit,
            "zoom_in": lambda: d.view.zoom_by(1.25),
            "zoom_out": lambda: d.view.zoom_by(0.8),
            "open_weights": lambda: self.models.open_weights_dialog(),
            "open_model_folder": lambda: self.models.open_folder_dialog(),
            "reload_models": lambda: self.models.refresh_models(),
            "finetune": self.open_finetune,
            "find_similar": lambda: self.similar.find(self.pane.current_path()),
            "find_duplicates": lambda: self.duplicates.find(self.listed_photos()),
            "photo_map": lambda: self.mapper.find(self.listed_photos()),
            "about": self.show_about,
            "shortcuts": lambda: help_dialogs.shortcuts_dialog(self).exec(),
            "files": lambda: help_dialogs.files_dialog(self.settings.qsettings, self).exec(),
            "download_default": lambda: self.models.load_model("vit_b_16"),
        }

    def _connect(self) -> None:
        """Parts that talk to each other directly; the window passes nothing on itself."""
        bar, status = self.message_bar, self.run_status
        status.run_failed.connect(bar.show_failure)
        self.controller.library_problem.connect(bar.show_info)
        self.intake.queued.connect(self.models.on_queued)
        self.intake.note.connect(status.say)
        self.intake.problem.connect(bar.show_error)
        self.exporter.note.connect(status.say)
        self.exporter.problem.connect(bar.show_error)
        self.exporter.hint.connect(bar.show_info)
        self.library.note.connect(status.say)
        self.library.problem.connect(bar.show_error)
        self.library.restore_requested.connect(self._on_restore)
        self.controller.run_started.connect(self._on_run_started)
        self.models.demo_changed.connect(self._update_samples)
        self.models.demo_changed.connect(self.detail.set_demo)
        self.pane.categories_entered.connect(self.labeller.apply)
        self.labeller.note.connect(status.say)
        self.labeller.problem.connect(bar.show_error)
        self.labeller.hint.connect(bar.show_info)
        self.labeller.hint_withdrawn.connect(bar.hide_info)
        self.labeller.names_edited.connect(self.pane.set_names)
        self.pane.coverage_requested.connect(self.labeller.edit_coverage)
        self.pane.current_changed.connect(self.detail.show_result)
        self.pane.note.connect(status.say)
        self.pane.undo_available.connect(self.commands.undo_remove.setEnabled)
        self.commands.undo_remove.setEnabled(False)
        self.commands.class_maps_in_runs.setChecked(self.view_state.class_maps_in_runs)
        self.commands.overlay_caption.setChecked(self.settings.overlay_caption)
        self.similar.note.connect(status.say)
        self.similar.problem.connect(bar.show_error)
        self.duplicates.note.connect(status.say)
        self.duplicates.problem.connect(bar.show_error)
        self.duplicates.trashed.connect(self._on_trashed)
        self.mapper.note.connect(status.say)
        self.mapper.problem.connect(bar.show_error)
        self.mapper.photo_clicked.connect(self.pane.show_path)
        self.mapper.select_requested.connect(self.pane.select_paths)
        self.mapper.label_requested.connect(self.label_in_finetune)
        self.mapper.copy_requested.connect(self.exporter.copy_photos_dialog)
        self.pane.set_context_actions([self.commands.find_similar, self.commands.copy, self.commands.export_overlay,
                                       self.commands.remove])
        self.gallery.sample_button.clicked.connect(self.open_samples)
        if self.settings.problem:  # a settings file that had to be cleaned
            bar.show_info(self.settings.problem)

    def _restore_window(self) -> None:
        s = self.settings
        geo = s.geometry()
        if geo is not None:
            self.restoreGeometry(geo)
        state = s.window_state()
        if state is not None:
            self.restoreState(state)
        split = s.splitter_state()
        if split is not None:
            self.splitter.restoreState(split)

    def start(self) -> None:
        """Deferred start-up work; call once the window is shown (``QTimer.singleShot(0, ...)``)."""
        if not self._startup_done:
            self._startup_done = True
            self.models.start()
            if self.results_model.rowCount() == 0:
                self.library.restore()

    @Slot(list)
    def _on_restore(self, paths: list[str]) -> None:
        """The photos listed when the window last closed, read back from the library."""
        if self.results_model.rowCount() or self.intake.pending:
            return  # photos given on the command line (or dropped already) come first
        self._restoring = len(paths)
        self.intake.add_paths(paths)

    @Slot(object)
    def _on_run_started(self, _job: object) -> None:
        # Said once the restored photos' run starts: loading the model clears the bar before that.
        n, self._restoring = self._restoring, 0
        if n:
            self.message_bar.show_message(
                f"The {n} photo{'s' if n != 1 else ''} listed last time {'are' if n != 1 else 'is'} back "
                "(from the library: nothing is classified again unless it changed).", kind="info",
                action=self.commands.clear)

    # ------------------------------------------------------------------------------------------
    # Adding images and runs

    def dragEnterEvent(self, event: QDragEnterEvent) -> None:
        mime = event.mimeData()
        if event.source() is self.gallery:
            event.ignore()  # a photo dragged out of the gallery is already classified here
        elif mime.hasUrls() or mime.hasImage() or mime.hasText():
            event.acceptProposedAction()
            self.statusBar().showMessage("Drop to classify: files, folders or an image")
        else:
            event.ignore()

    def dragLeaveEvent(self, event: QDragLeaveEvent) -> None:
        self.statusBar().clearMessage()
        super().dragLeaveEvent(event)

    def dragMoveEvent(self, event: QDragMoveEvent) -> None:
        event.acceptProposedAction()

    def dropEvent(self, event: QDropEvent) -> None:
        self.statusBar().clearMessage()
        if self.intake.handle_mime(event.mimeData()):
            event.acceptProposedAction()
        else:
            event.ignore()

    def reclassify(self) -> None:
        """Classify every listed photo again with the model in use (rows are updated in place)."""
        paths = [r.path for r in self.results_model.results() if Path(r.path).exists()]
        if paths:
            self.message_bar.hide()
            self.intake.add_paths(paths)

    def listed_photos(self) -> list[str]:
        """The photos of the list that could be read."""
        return [r.path for r in self.results_model.results() if r.ok]

    @Slot(str, list)
    def label_in_finetune(self, name: str, paths: list[str]) -> int:
        """Open the fine-tune dialog with ``paths`` in its class ``name`` (made if new); how many went in."""
        self.open_finetune()
        dialog = self.finetune_dialog
        if dialog is None:
            return 0
        if name not in dialog.labels.data.classes and not dialog.labels.add_class(name):
            return 0
        return dialog.labels.add_files(name, paths)

    @Slot(list)
    def _on_trashed(self, paths: list[str]) -> None:
        """Files moved to the trash leave the list (and the detail panel, if one was shown)."""
        shown = self.detail.result
        self.results_model.remove_paths(paths)
        if shown is not None and shown.path in paths:
            self.detail.show_result(None)
        n = len(paths)
        self.run_status.say(f"Moved {n} file{'s' if n != 1 else ''} to the trash.")

    def escape(self) -> None:
        """Esc: stop what runs (a folder run, a search, a model load); with nothing running, leave
        the "similar to" order."""
        c = self.controller
        if not (c.busy or c.loading or self.run_status.tasks) and self.view_state.similar is not None:
            self.view_state.set_similar(None)
        else:
            self.run_status.cancel()

    def clear_results(self) -> None:
        self.view_state.set_similar(None)
        self.run_status.forget_runs()
        self.controller.abandon_runs()  # a batch in flight must not land in the emptied list
        self.results_model.clear()
        self.pane.forget_removed()
        self.loader.forget()
        self.detail.show_result(None)
        self.run_status.say("Results cleared.")

    # ------------------------------------------------------------------------------------------
    # Gallery and detail

    @Slot()
    def _update_samples(self) -> None:
        self.pane.set_has_samples(bool(self.sample_paths()))

    def sample_paths(self) -> list[str]:
        """Sample photos that suit the current model: clothing for the demo model, else the rest."""
        from vit_desktop.gui.style import RESOURCES

        folder = RESOURCES / "samples"
        if not folder.is_dir():
            return []
        chosen = folder / "clothing" if self.models.demo_model_loaded() else folder
        return sorted(str(p) for p in chosen.iterdir() if p.suffix.lower() in (".png", ".jpg"))

    @Slot()
    def open_samples(self) -> None:
        self.intake.add_paths(self.sample_paths())

    # ------------------------------------------------------------------------------------------
    # Tools and help

    def open_finetune(self) -> None:
        try:
            from vit_desktop.gui.finetune.dialog import FinetuneDialog
        except ImportError as exc:
            self.message_bar.show_message(f"Fine-tuning is not available in this build ({exc}).", "info")
            return
        # One dialog per window, kept when closed: reopening finds the classes and the trained model.
        if self.finetune_dialog is None:
            self.finetune_dialog = FinetuneDialog(self.controller, self, self.settings)
        self.finetune_dialog.show()
        self.finetune_dialog.raise_()
        self.finetune_dialog.activateWindow()

    def about_text(self) -> str:
        return about_html(self.controller.current_model)

    def show_about(self) -> None:
        QMessageBox.about(self, "About vit-desktop", self.about_text())

    # ------------------------------------------------------------------------------------------
    # Closing

    def closeEvent(self, event: QCloseEvent) -> None:
        # Closing the window (Ctrl+Q too) asks before fine-tuning work is lost; SIGTERM and Ctrl+C
        # in the terminal quit the application without closing the window, so they never wait here.
        lost = self.finetune_dialog.unsaved_work() if self.finetune_dialog is not None else []
        if lost and not self._closing and not self.confirm_discard(lost):
            event.ignore()
            assert self.finetune_dialog is not None
            self.finetune_dialog.show()
            self.finetune_dialog.raise_()
            return
        self.shutdown()
        super().closeEvent(event)

    def confirm_discard(self, lost: list[str]) -> bool:
        """Asks whether to quit although ``lost`` would be, or to save it first; True: quit (saved, or
        let go). A save that is cancelled or fails does not quit."""
        dialog = self.finetune_dialog
        text = "; ".join(lost) + "."
        box = QMessageBox(QMessageBox.Icon.Warning, "Quit without saving?", as_plain(text[:1].upper() + text[1:]),
                          parent=self)
        savable = dialog is not None and dialog.can_save_unsaved()
        box.setInformativeText(
            ("Save and quit asks where to save them, as Save model… and Save labels… do. " if savable else "")
            + "Cancel goes back to the fine-tune dialog.")
        save_button = box.addButton("Save and quit", QMessageBox.ButtonRole.AcceptRole) if savable else None
        quit_button = box.addButton("Quit without saving", QMessageBox.ButtonRole.DestructiveRole)
        box.addButton(QMessageBox.StandardButton.Cancel)
        box.setDefaultButton(QMessageBox.StandardButton.Cancel)
        box.exec()
        if save_button is not None and box.clickedButton() is save_button:
            assert dialog is not None
            return dialog.save_unsaved()
        return box.clickedButton() is quit_button

    def shutdown(self) -> None:
        """Save settings, cancel every job and join every thread. Safe to call twice."""
        if self._closing:
            return
        self._closing = True
        try:
            self.settings.save_window(self.saveGeometry(), self.saveState(), self.splitter.saveState())
            self.settings.sync()
        except Exception:
            log.exception("could not save the window settings")
        try:
            self.library.save_session([r.path for r in self.results_model.results() if r.ok])
        except Exception:
            log.exception("could not remember the listed photos")
        self.exporter.cancel_all()
        self.controller.shutdown()
        self.loader.shutdown()
        if self.finetune_dialog is not None:
            self.finetune_dialog.shutdown()
        self.pool.waitForDone()
        self.intake.cleanup()


__all__ = ["MainWindow"]
