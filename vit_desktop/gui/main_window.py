"""The main window: gallery on the left, the selected image and its heatmap on the right.

It composes the parts and wires them; it computes nothing itself. Photos come in through
:mod:`.intake`, commands are :mod:`.actions`, the Model menu is :mod:`.model_menu`, the status bar
is :mod:`.run_status`, exports are :mod:`.exporting`, and every slow thing is a job of the
controller (:mod:`.compute`). The window is usable as soon as it is shown; the model loads on the
compute thread meanwhile, and photos dropped before it is ready wait in the intake's queue.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

from PySide6.QtCore import QSettings, Qt, QThreadPool, Slot
from PySide6.QtGui import (
    QCloseEvent,
    QDragEnterEvent,
    QDragLeaveEvent,
    QDragMoveEvent,
    QDropEvent,
)
from PySide6.QtWidgets import (
    QFileDialog,
    QMainWindow,
    QMessageBox,
    QSplitter,
    QVBoxLayout,
    QWidget,
)

from vit_desktop.gui.about import about_html
from vit_desktop.gui.actions import build_actions, build_menus
from vit_desktop.gui.compute import Controller, LoadedModel, RunProgress
from vit_desktop.gui.detail_panel import DetailPanel
from vit_desktop.gui.exporting import Exporter
from vit_desktop.gui.gallery_pane import GalleryPane
from vit_desktop.gui.intake import Intake
from vit_desktop.gui.jobs import Job, JobContext, Outcome, run_in_pool
from vit_desktop.gui.message_bar import MessageBar
from vit_desktop.gui.model_menu import ModelMenu
from vit_desktop.gui.results_model import ResultsModel
from vit_desktop.gui.run_status import NO_MODEL_TEXT, RunStatus
from vit_desktop.gui.settings import AppSettings, OverlaySettings
from vit_desktop.gui.sorting import CategorySorter
from vit_desktop.gui.thumbnails import ImageLoader

if TYPE_CHECKING:
    from vit_desktop.core.models.registry import ModelInfo
    from vit_desktop.core.types import DeviceInfo, ExplainOptions
    from vit_desktop.gui.finetune.dialog import FinetuneDialog

log = logging.getLogger(__name__)

WEIGHT_FILTER = "Model weights (*.safetensors *.pth *.pt *.bin *.ckpt);;All files (*)"


class ModelListing(NamedTuple):
    """What listing the models finds: every model, the devices, and the one to use by default."""

    infos: list[ModelInfo]
    devices: list[DeviceInfo]
    default: tuple[str, str] | None


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
        #: Images per forward pass, and predictions kept per image.
        self.batch_size = 16
        self.top_k = 5
        self._closing = False
        self.finetune_dialog: FinetuneDialog | None = None
        self._startup_done = False

        self._build_widgets()
        self.run_status = RunStatus(self.statusBar(), waiting=lambda: len(self.intake.pending),
                                    errors=lambda: self.results_model.counts()[1])
        self.intake = Intake(self, self.settings, lambda: self.controller.current_card is not None)
        self.exporter = Exporter(self, self.settings, self.controller.board, self.pool)
        self.commands = build_actions(self, self._handlers())
        menus = build_menus(self.menuBar(), self.commands)
        self.model_menu = ModelMenu(menus["Model"], self.commands.open_weights, self.commands.reload_models, self)
        self.overlay = self.settings.overlay()
        self.sorter = CategorySorter(self.results_model, self.controller, lambda: self.pane.threshold,
                                     self.top_k, self)
        self._connect()
        self._restore_settings()
        self._update_samples()
        self.run_status.show_model(None)

    # ------------------------------------------------------------------------------------------
    # Construction

    def _build_widgets(self) -> None:
        self.message_bar = MessageBar(self)
        self.pane = GalleryPane(self.loader, self.results_model, self)
        self.gallery = self.pane.gallery
        self.proxy = self.pane.proxy
        self.detail = DetailPanel(self.controller, self.loader, self)
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
        d, e = self.detail, self.exporter
        return {
            "open": lambda: self.intake.open_images_dialog(),
            "open_folder": lambda: self.intake.open_folder_dialog(),
            "paste": lambda: self.intake.paste(),
            "samples": self.open_samples,
            "export": lambda: e.export_results_dialog(self.results_model.results(), self.top_k),
            "export_overlay": lambda: e.export_overlay_dialog(d.result, d.current_heatmap, self.overlay),
            "copy_classes": lambda: e.copy_into_folders_dialog(self.results_model.results()),
            "export_model": lambda: e.export_model_dialog(self.controller, self.sample_paths()),
            "clear": self.clear_results,
            "reclassify": self.reclassify,
            "quit": self.close,
            "copy": self.pane.copy_selected,
            "select_all": self.gallery.selectAll,
            "remove": self.pane.remove_selected,
            "undo_remove": self.pane.undo_remove,
            "cancel": self.cancel_current,
            "overlay": d.toggle_overlay,
            "next_map": d.cycle_map,
            "class_maps_in_runs": lambda: setattr(self.settings, "class_maps_in_runs",
                                                  self.commands.class_maps_in_runs.isChecked()),
            "fit": d.view.fit,
            "zoom_in": lambda: d.view.zoom_by(1.25),
            "zoom_out": lambda: d.view.zoom_by(0.8),
            "open_weights": self.open_weights_dialog,
            "reload_models": lambda: self.refresh_models(),
            "finetune": self.open_finetune,
            "about": self.show_about,
            "download_default": lambda: self.load_model("vit_b_16"),
        }

    def _connect(self) -> None:
        c = self.controller
        c.model_changed.connect(self._on_model_changed)
        c.models_changed.connect(self.refresh_models)
        self.run_status.cancel_clicked.connect(self.cancel_current)
        self.intake.classify_requested.connect(self._classify)
        self.intake.queued.connect(self._on_queued)
        self.intake.note.connect(self.run_status.say)
        self.intake.problem.connect(self.message_bar.show_error)
        self.exporter.note.connect(self.run_status.say)
        self.exporter.problem.connect(self.message_bar.show_error)
        self.exporter.hint.connect(self.message_bar.show_info)
        self.model_menu.model_chosen.connect(self.load_model)
        self.model_menu.device_chosen.connect(self._on_device_chosen)
        self.model_menu.precision_chosen.connect(self._on_precision_chosen)
        self.pane.threshold_changed.connect(self._on_threshold)
        self.pane.categories_entered.connect(self.sorter.apply)
        self.sorter.changed.connect(self.detail.set_categories)
        self.sorter.changed.connect(self.pane.refresh)
        self.sorter.note.connect(self.run_status.say)
        self.sorter.problem.connect(self.message_bar.show_error)
        self.sorter.hint.connect(self.message_bar.show_info)
        self.pane.current_changed.connect(self.detail.show_result)
        self.pane.note.connect(self.run_status.say)
        self.pane.undo_available.connect(self.commands.undo_remove.setEnabled)
        self.commands.undo_remove.setEnabled(False)
        self.pane.set_context_actions([self.commands.copy, self.commands.export_overlay, self.commands.remove])
        self.gallery.sample_button.clicked.connect(self.open_samples)
        self.detail.settings_changed.connect(self._on_overlay_settings)

    def _restore_settings(self) -> None:
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
        self.detail.apply_settings(self.overlay)
        self.pane.set_threshold(s.threshold)
        self.commands.class_maps_in_runs.setChecked(s.class_maps_in_runs)
        self.model_menu.set_current(s.last_model, s.device, s.precision)

    # ------------------------------------------------------------------------------------------
    # Start-up and models

    def start(self) -> None:
        """Deferred start-up work; call once the window is shown (``QTimer.singleShot(0, ...)``)."""
        if self._startup_done:
            return
        self._startup_done = True
        self.run_status.say("Looking for models…")
        self.refresh_models(choose_default=True)

    def refresh_models(self, choose_default: bool = False) -> Job:
        """List models and devices on the pool (the first call imports torch: keep it off the GUI)."""

        def work(_ctx: JobContext) -> object:
            from vit_desktop.core.inference.devices import available_devices
            from vit_desktop.core.models import registry

            return ModelListing(registry.list_models(), available_devices(), registry.default_model())

        job = run_in_pool(self.controller.board, self.pool, "list models", work)
        job.returned.connect(self._on_models_listed_default if choose_default else self._on_models_listed)
        job.errored.connect(self._on_models_list_failed)
        return job

    @Slot(object)
    def _on_models_listed(self, listing: ModelListing) -> None:
        self.model_menu.set_models(listing.infos, listing.devices)

    @Slot(object)
    def _on_models_listed_default(self, listing: ModelListing) -> None:
        self._on_models_listed(listing)
        if self.controller.current_card is not None or self.controller.loading:
            return
        if listing.default is not None:
            self.load_model(listing.default[0])
        else:
            self.run_status.say("")
            self.run_status.show_model(None)
            self.message_bar.show_message(
                f"{NO_MODEL_TEXT}: pick a torchvision ViT (downloaded once) or open a weights file.",
                kind="info", action=self.commands.open_weights)

    @Slot(str)
    def _on_models_list_failed(self, message: str) -> None:
        self.message_bar.show_message(f"Could not list the models: {message}. "
                                      "Use Model ▸ Open weights file… to load one directly.")

    @Slot(str)
    def load_model(self, source: str) -> Job:
        """Load ``source`` with the remembered device and precision; runs in progress stop."""
        if self.controller.busy:
            self.controller.cancel_runs()
        self.message_bar.hide()
        job = self.controller.load_model(source, self.settings.device, self.settings.precision)
        job.errored.connect(self._on_model_failed)
        job.finished.connect(self._on_load_finished)
        self.run_status.track_load(job, source)
        return job

    @Slot(str)
    def _on_device_chosen(self, key: str) -> None:
        self.settings.device = key
        self._reload_current()

    @Slot(str)
    def _on_precision_chosen(self, key: str) -> None:
        self.settings.precision = key
        self._reload_current()

    def _reload_current(self) -> None:
        cur = self.controller.current_model
        source = cur.source if cur is not None else self.settings.last_model
        if source:
            self.load_model(source)

    def open_weights_dialog(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Open model weights", self.settings.folder("weights"),
                                              WEIGHT_FILTER)
        if path:
            self.settings.set_folder("weights", str(Path(path).parent))
            self.load_model(path)

    @Slot(object)
    def _on_model_changed(self, loaded: LoadedModel) -> None:
        # Remember registry names and files, not in-memory models (e.g. one just fine-tuned and
        # not saved): those cannot be loaded at the next start.
        from vit_desktop.core.models.registry import REGISTRY  # torch is loaded by now: this is cheap

        if loaded.source in REGISTRY or (loaded.source and os.path.exists(loaded.source)):
            self.settings.last_model = loaded.source  # `vit-desktop classify` follows the window
        log.info("%s ready on %s (%s)", loaded.card.name, loaded.device_name, loaded.precision)
        self.run_status.show_model(loaded)
        self.model_menu.set_current(loaded.source, self.settings.device, self.settings.precision)
        self.message_bar.hide_if(NO_MODEL_TEXT)
        self.results_model.set_current_model(loaded.model_id)
        self.detail.set_current_model(loaded.model_id)
        if self.sorter.model_changed(loaded.card):
            self.pane.categories_edit.blockSignals(True)
            self.pane.categories_edit.clear()
            self.pane.categories_edit.blockSignals(False)
        stale = self.results_model.stale_results()
        if stale:
            n = len(stale)
            self.message_bar.show_message(
                f"{n} photo{'s' if n != 1 else ''} {'were' if n != 1 else 'was'} classified by an earlier model: "
                f"{'their' if n != 1 else 'its'} labels and maps are not {loaded.card.name}'s. "
                f"Re-classify to see what {loaded.card.name} says.",
                kind="info", action=self.commands.reclassify)
        elif self._demo_model_loaded():
            self.message_bar.show_message(
                f"Demo model: {loaded.card.num_classes} clothing classes (Fashion-MNIST). For everyday photos, "
                "download ViT-B/16 (ImageNet, 1000 classes, about 330 MB), or use Model ▸ Open weights file… "
                "for a model you have.",
                kind="info",
                action=self.commands.download_default,
            )
        self._update_samples()
        self.intake.release()

    @Slot(str)
    def _on_model_failed(self, message: str) -> None:
        advice = ("Use Model ▸ Open weights file… for a model file you have, or pick another model."
                  if "download" in message.lower() or "offline" in message.lower()
                  else "Pick another model from the Model menu or open a different weights file.")
        card = self.controller.current_card
        keep = f" Still using {card.name}." if card else ""
        self.message_bar.show_message(f"Could not load the model: {message} {advice}{keep}",
                                      action=self.commands.open_weights)

    @Slot(object)
    def _on_load_finished(self, outcome: object) -> None:
        self.run_status.show_model(self.controller.current_model)
        if outcome is Outcome.CANCELLED and self.controller.current_card is None:
            self.message_bar.show_message(f"{NO_MODEL_TEXT}.", kind="info", action=self.commands.open_weights)

    def _demo_model_loaded(self) -> bool:
        cur = self.controller.current_model
        if cur is None or not cur.source:
            return False
        from vit_desktop.core.paths import bundled_models_dir

        return Path(cur.source).resolve().parent == bundled_models_dir().resolve()

    # ------------------------------------------------------------------------------------------
    # Adding images and runs

    def dragEnterEvent(self, event: QDragEnterEvent) -> None:  # noqa: N802
        mime = event.mimeData()
        if event.source() is self.gallery:
            event.ignore()  # a photo dragged out of the gallery is already classified here
        elif mime.hasUrls() or mime.hasImage() or mime.hasText():
            event.acceptProposedAction()
            self.statusBar().showMessage("Drop to classify: files, folders or an image")
        else:
            event.ignore()

    def dragLeaveEvent(self, event: QDragLeaveEvent) -> None:  # noqa: N802
        self.statusBar().clearMessage()
        super().dragLeaveEvent(event)

    def dragMoveEvent(self, event: QDragMoveEvent) -> None:  # noqa: N802
        event.acceptProposedAction()

    def dropEvent(self, event: QDropEvent) -> None:  # noqa: N802
        self.statusBar().clearMessage()
        if self.intake.handle_mime(event.mimeData()):
            event.acceptProposedAction()
        else:
            event.ignore()

    def add_paths(self, paths: Sequence[str | os.PathLike[str]]) -> None:
        """Classify files and folders (before a model is ready they wait)."""
        self.intake.add_paths(paths)

    @Slot(int)
    def _on_queued(self, n: int) -> None:
        what = f"{n} item{'s' if n != 1 else ''}"
        if self.controller.loading:
            self.run_status.say(f"{what} queued: classification starts when the model is loaded.")
        else:
            self.message_bar.show_message(
                f"{NO_MODEL_TEXT}. {what} will be classified as soon as a model is loaded.",
                kind="info", action=self.commands.open_weights)

    @Slot(list)
    def _classify(self, items: list[str]) -> Job:
        from vit_desktop.core.inference.options import ClassifyOptions

        # Every result keeps its probabilities: the names box re-labels them without classifying again.
        options = ClassifyOptions(top_k=self.top_k, batch_size=self.batch_size, explain=self._run_explain(),
                                  threshold=self.pane.threshold, categories=self.sorter.categories,
                                  keep_probabilities=True)
        job = self.controller.classify(items, options)
        job.progressed.connect(self._on_run_progress)
        job.errored.connect(self.message_bar.show_error)
        self.run_status.track_run(job)
        return job

    def _run_explain(self) -> ExplainOptions:
        """The map a run computes with each photo: rollout comes free with classification; class
        maps need a backward pass, so runs compute them only when asked to."""
        opts = self.detail.explain_options()
        if opts.class_specific and not self.commands.class_maps_in_runs.isChecked():
            return dataclasses.replace(opts, method="rollout")
        return opts

    @Slot(object)
    def _on_run_progress(self, progress: object) -> None:
        if isinstance(progress, RunProgress) and progress.results:
            self.pane.add_results(progress.results)

    def cancel_current(self) -> None:
        """Esc / Cancel: stop the folder runs; with none, stop the model load or download."""
        if self.controller.busy:
            self.controller.cancel_runs()
            self.run_status.say("Cancelling…")
        elif self.controller.loading:
            self.controller.cancel_load()
            self.run_status.say("Cancelling…")

    def reclassify(self) -> None:
        """Classify every listed photo again with the model in use (rows are updated in place)."""
        paths = [r.path for r in self.results_model.results() if Path(r.path).exists()]
        if paths:
            self.message_bar.hide()
            self.intake.add_paths(paths)

    def clear_results(self) -> None:
        self.controller.cancel_runs()
        self.run_status.forget_runs()
        self.results_model.clear()
        self.pane.forget_removed()
        self.loader.forget()
        self.detail.show_result(None)
        self.run_status.say("Results cleared.")

    # ------------------------------------------------------------------------------------------
    # Gallery and detail

    @Slot(float)
    def _on_threshold(self, fraction: float) -> None:
        self.settings.threshold = fraction

    def _update_samples(self) -> None:
        self.pane.set_has_samples(bool(self.sample_paths()))

    def sample_paths(self) -> list[str]:
        """Sample photos that suit the current model: clothing for the demo model, else the rest."""
        from vit_desktop.gui.style import RESOURCES

        folder = RESOURCES / "samples"
        if not folder.is_dir():
            return []
        chosen = folder / "clothing" if self._demo_model_loaded() else folder
        return sorted(str(p) for p in chosen.iterdir() if p.suffix.lower() in (".png", ".jpg"))

    @Slot()
    def open_samples(self) -> None:
        self.add_paths(self.sample_paths())

    @Slot(object)
    def _on_overlay_settings(self, overlay: OverlaySettings) -> None:
        self.overlay = overlay
        self.settings.set_overlay(overlay)

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

    def closeEvent(self, event: QCloseEvent) -> None:  # noqa: N802
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
        """Asks whether to quit although ``lost`` would be; True: quit."""
        text = "; ".join(lost) + "."
        box = QMessageBox(QMessageBox.Icon.Warning, "Quit without saving?", text[:1].upper() + text[1:], parent=self)
        box.setInformativeText("Cancel goes back to the fine-tune dialog: Save model… and Save labels… keep them.")
        quit_button = box.addButton("Quit without saving", QMessageBox.ButtonRole.DestructiveRole)
        box.addButton(QMessageBox.StandardButton.Cancel)
        box.setDefaultButton(QMessageBox.StandardButton.Cancel)
        box.exec()
        return box.clickedButton() is quit_button

    def shutdown(self) -> None:
        """Save settings, cancel every job and join every thread. Safe to call twice."""
        if self._closing:
            return
        self._closing = True
        try:
            self.settings.save_window(self.saveGeometry(), self.saveState(), self.splitter.saveState())
            self.settings.set_overlay(self.detail.overlay_settings())
            self.settings.sync()
        except Exception:
            log.exception("could not save the window settings")
        self.exporter.cancel_all()
        self.controller.shutdown()
        self.loader.shutdown()
        self.pool.waitForDone()
        self.intake.cleanup()


__all__ = ["MainWindow"]
