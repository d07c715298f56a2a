"""Which model the window uses: the choice at start-up, loads from the Model menu or a file, and what
the window says about them (a model that failed, an earlier model's results, the demo model).

The Model menu only shows and offers; this part loads what is chosen through the controller and
remembers the choice. Everything it says goes to the message bar with the action that helps.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

from PySide6.QtCore import QObject, QThreadPool, Signal, Slot
from PySide6.QtWidgets import QFileDialog, QWidget

from vit_desktop.core.errors import Failure, FailureKind
from vit_desktop.gui.actions import Actions
from vit_desktop.gui.compute import Controller, LoadedModel
from vit_desktop.gui.compute.messages import NO_MODEL_TEXT
from vit_desktop.gui.jobs import Job, JobContext, Outcome, run_in_pool
from vit_desktop.gui.message_bar import MessageBar
from vit_desktop.gui.model_menu import ModelMenu
from vit_desktop.gui.results_model import ResultsModel
from vit_desktop.gui.run_status import RunStatus
from vit_desktop.gui.settings import AppSettings

if TYPE_CHECKING:  # the registry imports torch: the window must not wait for that at start-up
    from vit_desktop.core.models.registry import ModelInfo
    from vit_desktop.core.types import DeviceInfo

log = logging.getLogger(__name__)

#: What the banner about results of an earlier model says (and how it is recognised to withdraw it).
STALE_TEXT = "classified by an earlier model"

WEIGHT_FILTER = "Model weights (*.safetensors *.pth *.pt *.bin *.ckpt);;All files (*)"


class ModelListing(NamedTuple):
    """What listing the models finds: every model, the devices, and the one to use by default."""

    infos: list[ModelInfo]
    devices: list[DeviceInfo]
    default: tuple[str, str] | None
    #: Why the model used last was passed over, if it was.
    passed_over: str | None = None


class ModelSwitch(QObject):
    """Loads the model the user picks and keeps the window's word about models up to date."""

    #: The model in use is now the demo model, or no longer is (the samples offered follow it).
    demo_changed = Signal(bool)

    def __init__(self, window: QWidget, controller: Controller, settings: AppSettings, menu: ModelMenu,
                 bar: MessageBar, status: RunStatus, results: ResultsModel, commands: Actions,
                 pool: QThreadPool) -> None:
        super().__init__(window)
        self._window = window
        self._controller = controller
        self._settings = settings
        self._menu = menu
        self._bar = bar
        self._status = status
        self._results = results
        self._commands = commands
        self._pool = pool
        self._passed_over: str | None = None
        controller.model_changed.connect(self._on_model_changed)
        controller.models_changed.connect(self.refresh_models)
        menu.model_chosen.connect(self.load_model)
        menu.device_chosen.connect(self._on_device_chosen)
        menu.precision_chosen.connect(self._on_precision_chosen)
        menu.set_current(settings.last_model, settings.device, settings.precision)
        menu.set_recent(settings.recent_models)
        # The earlier model's banner goes once no result of an earlier model is listed.
        results.modelReset.connect(self._withdraw_stale_banner)
        results.dataChanged.connect(self._withdraw_stale_banner)
        results.rowsRemoved.connect(self._withdraw_stale_banner)

    # -- listing -------------------------------------------------------------------------------

    def start(self) -> None:
        """Find the models and load the one to use by default (the last one, or a cached one)."""
        self._status.say("Looking for models…")
        self.refresh_models(choose_default=True)

    def refresh_models(self, choose_default: bool = False) -> Job:
        """List models and devices on the pool (the first call imports torch: keep it off the GUI)."""

        def work(_ctx: JobContext) -> object:
            from vit_desktop.core.inference.devices import available_devices
            from vit_desktop.core.models import registry

            return ModelListing(registry.list_models(), available_devices(), registry.default_model(),
                                registry.last_model_problem())

        job = run_in_pool(self._controller.board, self._pool, "list models", work)
        job.returned.connect(self._on_models_listed_default if choose_default else self._on_models_listed)
        job.errored.connect(self._on_models_list_failed)
        return job

    @Slot(object)
    def _on_models_listed(self, listing: ModelListing) -> None:
        self._menu.set_models(listing.infos, listing.devices)

    @Slot(object)
    def _on_models_listed_default(self, listing: ModelListing) -> None:
        self._on_models_listed(listing)
        if self._controller.current_card is not None or self._controller.loading:
            return
        if listing.default is not None:
            self.load_model(listing.default[0])
            self._passed_over = listing.passed_over  # said once the replacement is ready
        else:
            self._status.say("")
            self._status.show_model(None)
            self._bar.show_message(f"{NO_MODEL_TEXT}: pick a torchvision ViT (downloaded once) or open a weights file.",
                                   kind="info", action=self._commands.open_weights)

    @Slot(object)
    def _on_models_list_failed(self, failure: Failure) -> None:
        self._bar.show_message(f"Could not list the models: {failure.message}. "
                               "Use Model ▸ Open weights file… to load one directly.")

    # -- loading -------------------------------------------------------------------------------

    @Slot(str)
    def load_model(self, source: str) -> Job:
        """Load ``source`` with the remembered device and precision; runs in progress stop."""
        if self._controller.busy:
            self._controller.cancel_runs()
        self._bar.hide()
        job = self._controller.load_model(source, self._settings.device, self._settings.precision)
        job.errored.connect(self._on_model_failed)
        job.finished.connect(self._on_load_finished)
        return job

    @Slot(str)
    def _on_device_chosen(self, key: str) -> None:
        self._settings.device = key
        self._reload_current()

    @Slot(str)
    def _on_precision_chosen(self, key: str) -> None:
        self._settings.precision = key
        self._reload_current()

    def _reload_current(self) -> None:
        cur = self._controller.current_model
        source = cur.source if cur is not None else self._settings.last_model
        if source:
            self.load_model(source)

    def open_weights_dialog(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self._window, "Open model weights", self._settings.folder("weights"),
                                              WEIGHT_FILTER)
        if path:
            self._settings.set_folder("weights", str(Path(path).parent))
            self.load_model(path)

    def open_folder_dialog(self) -> None:
        """A model that is a folder: timm's hub layout or Hugging Face's (weights and configs)."""
        path = QFileDialog.getExistingDirectory(self._window, "Open a model folder (timm or Hugging Face)",
                                                self._settings.folder("weights"))
        if path:
            self._settings.set_folder("weights", str(Path(path).parent))
            self.load_model(path)

    @Slot(int)
    def on_queued(self, n: int) -> None:
        """Photos wait for a model: say whether one is coming."""
        what = f"{n} item{'s' if n != 1 else ''}"
        if self._controller.loading:
            self._status.say(f"{what} queued: classification starts when the model is loaded.")
        else:
            self._bar.show_message(f"{NO_MODEL_TEXT}. {what} will be classified as soon as a model is loaded.",
                                   kind="info", action=self._commands.open_weights)

    # -- what the window says ------------------------------------------------------------------

    @Slot(object)
    def _on_model_changed(self, loaded: LoadedModel) -> None:
        # Remember registry names and files, not in-memory models (e.g. one just fine-tuned and
        # not saved): those cannot be loaded at the next start.
        from vit_desktop.core.models.registry import REGISTRY  # torch is loaded by now: this is cheap

        if loaded.source in REGISTRY or (loaded.source and os.path.exists(loaded.source)):
            self._settings.last_model = loaded.source  # `vit-desktop classify` follows the window
            self._menu.set_recent(self._settings.add_recent_model(loaded.source))
        log.info("%s ready on %s (%s)", loaded.card.name, loaded.device_name, loaded.precision)
        self._menu.set_current(loaded.source, self._settings.device, self._settings.precision)
        self._bar.hide_if(NO_MODEL_TEXT)
        self._results.set_current_model(loaded.model_id)
        stale = self._results.stale_results()
        demo = self.demo_model_loaded()
        passed, self._passed_over = self._passed_over, None
        if passed:  # loudly: a window that silently swapped the user's model for another misleads
            instead = (f"the demo model ({loaded.card.num_classes} clothing classes only)" if demo
                       else loaded.card.name)
            self._bar.show_message(f"{passed[:1].upper()}{passed[1:]}: using {instead} instead. Pick a model "
                                   "from the Model menu or open a weights file.", action=self._commands.open_weights)
        elif stale:
            n, name = len(stale), loaded.card.name
            self._bar.show_message(
                f"{n} photo{'s' if n != 1 else ''} {'were' if n != 1 else 'was'} {STALE_TEXT}: "
                f"{'their' if n != 1 else 'its'} labels and maps are not {name}'s. "
                f"Re-classify to see what {name} says.",
                kind="info", action=self._commands.reclassify)
        elif demo:
            self._bar.show_message(
                f"Demo model: {loaded.card.num_classes} clothing classes (Fashion-MNIST). For everyday photos, "
                "download ViT-B/16 (ImageNet, 1000 classes, about 330 MB), or use Model ▸ Open weights file… "
                "for a model you have.",
                kind="info", action=self._commands.download_default)
        self.demo_changed.emit(demo)

    @Slot()
    def _withdraw_stale_banner(self, *_args: object) -> None:
        if STALE_TEXT in self._bar.text and not self._results.stale_results():
            self._bar.hide()

    @Slot(object)
    def _on_model_failed(self, failure: Failure) -> None:
        advice = ("Use Model ▸ Open weights file… for a model file you have, or pick another model."
                  if failure.kind is FailureKind.DOWNLOAD
                  else "Pick another model from the Model menu or open a different weights file.")
        card = self._controller.current_card
        keep = f" Still using {card.name}." if card else ""
        self._bar.show_message(f"Could not load the model: {failure.message} {advice}{keep}",
                               action=self._commands.open_weights)

    @Slot(object)
    def _on_load_finished(self, outcome: object) -> None:
        if outcome is Outcome.CANCELLED and self._controller.current_card is None:
            self._bar.show_message(f"{NO_MODEL_TEXT}.", kind="info", action=self._commands.open_weights)

    def demo_model_loaded(self) -> bool:
        cur = self._controller.current_model
        if cur is None or not cur.source:
            return False
        from vit_desktop.core.paths import bundled_models_dir

        return Path(cur.source).resolve().parent == bundled_models_dir().resolve()


__all__ = ["WEIGHT_FILTER", "ModelListing", "ModelSwitch"]
