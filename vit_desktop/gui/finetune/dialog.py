"""The fine-tune dialog: make classes, put photos in them, train, look at the results, save.

Training runs on the controller's compute thread as a task; the dialog turns its progress into
curves and labels. What comes back is plain data: the trained module (handed over, not shared),
metrics, and the mistakes' previews that core renders (:mod:`vit_desktop.core.training.review`).
"""

from __future__ import annotations

import copy
import os
import re
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PySide6.QtCore import Qt, Signal, Slot
from PySide6.QtWidgets import (
    QComboBox,
    QDialog,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QMessageBox,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QSplitter,
    QVBoxLayout,
    QWidget,
)

from vit_desktop.core.errors import Failure, VitDesktopError
from vit_desktop.core.training.labelled_set import LabelledSet
from vit_desktop.core.training.results import describe
from vit_desktop.core.types import ModelCard
from vit_desktop.core.units import format_duration
from vit_desktop.gui.compute import Controller, LoadedModel
from vit_desktop.gui.finetune.labels_editor import LabelsEditor
from vit_desktop.gui.finetune.results_view import ResultsView
from vit_desktop.gui.finetune.training_job import TrainOutcome, training_task
from vit_desktop.gui.jobs import Job
from vit_desktop.gui.plain_text import as_plain, plain
from vit_desktop.gui.settings import AppSettings

if TYPE_CHECKING:
    from vit_desktop.core.training import TrainConfig, TrainProgress, TrainResult

#: (combo text, mode) in the order offered.
MODE_CHOICES: tuple[tuple[str, str], ...] = (
    ("Head only (fast, best for few photos)", "head"),
    ("Last blocks + head", "partial"),
    ("Full fine-tune", "full"),
)

#: What the progress bar counts in each phase of a run (its text: "training 75%").
PHASES = {"decode": "reading photos", "features": "computing features", "select": "choosing the head",
          "train": "training", "val": "training"}

TRAIN_TIP = "Train on the photos of the classes, as deep as Training says"
NAMES_TIP = ("A classifier from the class names alone (\"dog\", \"musical instrument\"): needs names the model "
             "knows, no photos")
NO_CLASSES_TIP = ("Add classes first: Add… a class and drop photos on it, or Import folder… with one subfolder per "
                  "class")


class FinetuneDialog(QDialog):
    """Label photos into classes, train on the current model, inspect, save and use the result."""

    trained = Signal(object)  # TrainResult, once training ends (also when cancelled)
    #: Each progress report of the running training (a TrainProgress).
    progress_reported = Signal(object)

    def __init__(self, controller: Controller, parent: QWidget | None = None,
                 settings: AppSettings | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Fine-tune")
        self.resize(980, 640)
        self.controller = controller
        self.settings = settings if settings is not None else AppSettings()
        self.trained_result: TrainResult | None = None
        self.saved_path: Path | None = None
        self._job: Job | None = None
        #: The model training starts from and class names are read against: the window's model, except
        #: while the window classifies with this dialog's own ("Use now"), which must not become its base.
        self.base: LoadedModel | None = controller.current_model
        #: The card of the model handed to the window by "Use now", while the window uses it.
        self._in_use: ModelCard | None = None
        #: What the status line said when the window switched to this dialog's model.
        self._in_use_text = ""
        self._build()
        controller.model_changed.connect(self._on_model_changed)
        self._set_training(False)
        self.labels.set_meaning(self._meaning)

    # ---- layout ------------------------------------------------------------------------------

    def _build(self) -> None:
        root = QHBoxLayout(self)
        split = QSplitter(Qt.Orientation.Horizontal)
        root.addWidget(split)
        self.labels = LabelsEditor(self.settings)
        split.addWidget(self.labels)

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
        mode, epochs = self.settings.training()
        self.mode_combo.setCurrentIndex(max(0, self.mode_combo.findData(mode)))
        self.epochs_spin.setValue(min(epochs, self.epochs_spin.maximum()))
        self.mode_combo.currentIndexChanged.connect(self._remember_training)
        self.epochs_spin.valueChanged.connect(self._remember_training)
        rv.addLayout(form)
        row = QHBoxLayout()
        self.train_button = QPushButton("Train")
        self.train_button.setDefault(True)
        self.train_button.clicked.connect(self.start_training)
        self.cancel_button = QPushButton("Cancel training")
        self.cancel_button.clicked.connect(self.cancel_training)
        self.progress_bar = QProgressBar()
        self.names_button = QPushButton("Use without training")
        self.names_button.clicked.connect(self.use_names)
        row.addWidget(self.train_button)
        row.addWidget(self.names_button)
        row.addWidget(self.cancel_button)
        row.addWidget(self.progress_bar, 1)
        rv.addLayout(row)
        self.status_label = QLabel()
        self.status_label.setWordWrap(True)
        plain(self.base_label, self.status_label)  # model, class and file names: never HTML
        rv.addWidget(self.status_label)
        self.labels.status.connect(self.status_label.setText)
        self.labels.changed.connect(self._on_set_changed)

        self.results = ResultsView()
        rv.addWidget(self.results, 1)

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

    @property
    def data(self) -> LabelledSet:
        return self.labels.data

    # ---- training ----------------------------------------------------------------------------

    def config(self) -> TrainConfig:
        from vit_desktop.core.training import TrainConfig

        epochs = self.epochs_spin.value() or None
        return TrainConfig(mode=self.mode_combo.currentData(), epochs=epochs)

    @Slot()
    def _remember_training(self, *_args: object) -> None:
        self.settings.set_training(self.mode_combo.currentData(), self.epochs_spin.value())

    def _set_training(self, running: bool) -> None:
        # Nothing to train on before the first class: the buttons say so rather than fail when pressed.
        has_classes = bool(self.data.classes)
        self.train_button.setEnabled(not running and has_classes)
        self.names_button.setEnabled(not running and has_classes)
        self.train_button.setToolTip(TRAIN_TIP if has_classes else NO_CLASSES_TIP)
        self.names_button.setToolTip(NAMES_TIP if has_classes else NO_CLASSES_TIP)
        self.cancel_button.setEnabled(running)
        has_result = self.trained_result is not None and not running
        self.save_model_button.setEnabled(has_result)
        self.use_button.setEnabled(has_result)
        self.mode_combo.setEnabled(not running)
        self.epochs_spin.setEnabled(not running)
        self.labels.set_locked(running)
        self._show_base()

    def _show_base(self) -> None:
        card = self.base.card if self.base is not None else None
        self.base_label.setText(card.name if card is not None else "no model loaded")

    def _named(self) -> set[str]:
        """The classes whose names the current model knows (they may have no photos)."""
        return {c for c in self.data.classes if self._meaning(c)}

    def _meaning(self, name: str) -> str | None:
        """What the base model takes ``name`` to mean ("dog.n.01, 118 ImageNet classes"), if anything."""
        from vit_desktop.core.labels.categories import hierarchy_for

        card = self.base.card if self.base is not None else None
        tree = hierarchy_for(card) if card is not None else None
        if tree is None:
            return None
        try:
            r = tree.resolve(name)
        except VitDesktopError:
            return None
        return f"{r.display}, {len(r.classes)} ImageNet classes"

    @Slot()
    def start_training(self, *, data: LabelledSet | None = None, head: str | None = None) -> None:
        if self._job is not None:
            return
        base = self.base
        if base is None:
            self.status_label.setText("Load a model first: fine-tuning starts from the current model")
            return
        data = data if data is not None else self.data
        try:
            config = self.config()
            if head is not None:
                config = replace(config, mode="head", head=head)
            data.validate(named=self._named() if config.mode == "head" else ())
        except VitDesktopError as exc:
            self.status_label.setText(str(exc))
            return
        self.trained_result = None
        self.saved_path = None
        self.results.clear_results()
        self.progress_bar.setRange(0, 0)
        self.status_label.setText("Starting…")
        job = self.controller.run_task(training_task(data, config, base))
        job.progressed.connect(self._on_progress)
        job.returned.connect(self._on_trained)
        job.errored.connect(self._on_failed)
        job.finished.connect(self._on_finished)
        self._job = job
        self._set_training(True)

    @Slot(object)
    def _on_set_changed(self, _data: object) -> None:
        self._set_training(self._job is not None)

    @Slot()
    def use_names(self) -> None:
        """A model from the class names alone: no photos, no training (the names head)."""
        unknown = [c for c in self.data.classes if not self._meaning(c)]
        if unknown or len(self.data.classes) < 2:
            what = f"{', '.join(repr(c) for c in unknown)} {'is' if len(unknown) == 1 else 'are'} not a name " \
                   "the model knows" if unknown else "it needs at least two classes"
            self.status_label.setText(f"Cannot use the names alone: {what}")
            return
        self.start_training(data=LabelledSet(self.data.classes), head="names")

    @Slot(object)
    def _on_model_changed(self, loaded: LoadedModel) -> None:
        if self._in_use is not None and loaded.card is self._in_use:
            return  # "Use now" arrived: the base stays what this model was trained from
        if self._in_use is not None and self.status_label.text() == self._in_use_text:
            # The line would say the window classifies with this dialog's model: it no longer does.
            self.status_label.setText(f"The main window now classifies with {loaded.card.name}; training starts "
                                      "from it")
        self._in_use = None
        self.base = loaded
        self._show_base()
        self.labels.set_meaning(self._meaning)

    @Slot()
    def cancel_training(self) -> None:
        if self._job is not None:
            self._job.cancel()
            self.status_label.setText("Cancelling: the best model so far will be kept…")

    @Slot(object)
    def _on_progress(self, prog: TrainProgress) -> None:
        self._show_progress(prog)
        eta = f" — about {format_duration(prog.eta_s)} left" if prog.eta_s is not None and prog.eta_s > 1 else ""
        if prog.phase == "val":
            self.results.curves.add_row({"epoch": prog.epoch, "loss": prog.loss, "acc": prog.acc,
                                         "val_loss": prog.val_loss, "val_acc": prog.val_acc})
            self.status_label.setText(
                f"Epoch {prog.epoch}/{prog.epochs}: loss {prog.loss or 0:.3f}, accuracy {prog.acc or 0:.0%}, "
                f"validation loss {prog.val_loss or 0:.3f}, validation accuracy {prog.val_acc or 0:.0%}{eta}"
            )
        else:
            detail = f", loss {prog.loss:.3f}" if prog.loss is not None else ""
            self.status_label.setText(f"{prog.message}{detail}{eta}")
        self.progress_reported.emit(prog)

    def _show_progress(self, prog: TrainProgress) -> None:
        """The bar measures what its text names: the epochs as a whole while the backbone trains (epoch
        6 of 8 done is 75 %, not the 100 % of that epoch's last step), else the phase under way."""
        if not prog.steps:
            return
        if prog.phase in ("train", "val") and prog.epochs:
            # Steps per epoch are the same in every epoch (but after an out-of-memory halving).
            self.progress_bar.setRange(0, prog.epochs * prog.steps)
            self.progress_bar.setValue(min(prog.epochs * prog.steps, (prog.epoch - 1) * prog.steps + prog.step))
        else:
            self.progress_bar.setRange(0, prog.steps)
            self.progress_bar.setValue(prog.step)
        self.progress_bar.setFormat(f"{PHASES.get(prog.phase, 'working')} %p%")

    def _end_progress(self, done: bool) -> None:
        self.progress_bar.setRange(0, 1)
        self.progress_bar.setValue(1 if done else 0)
        self.progress_bar.setFormat("%p%")

    @Slot(object)
    def _on_trained(self, outcome: TrainOutcome) -> None:
        self.trained_result = outcome.result
        self._end_progress(True)
        self._show_result(outcome.result, outcome.previews)
        self.trained.emit(outcome.result)

    @Slot(object)
    def _on_failed(self, failure: Failure) -> None:
        self._end_progress(False)
        self.status_label.setText(failure.message)

    @Slot(object)
    def _on_finished(self, _outcome: object) -> None:
        self._job = None
        self._set_training(False)

    def _show_result(self, r: TrainResult, previews: dict[str, np.ndarray]) -> None:
        self.results.show_result(r, previews)
        state = "Cancelled; kept the best model so far" if r.cancelled else "Done"
        n_bad = len(r.skipped)
        skipped = f"; {n_bad} unreadable photo{'s' if n_bad != 1 else ''} skipped (hover for the list)" if n_bad else ""
        self.status_label.setToolTip(as_plain("\n".join(f"{p}: {why}" for p, why in r.skipped[:50])))
        self.status_label.setText(f"{state}: {describe(r).status()}{skipped}")
        if not r.history:  # head mode: no epochs to plot, the heads compared instead
            self.results.setCurrentIndex(self.results.heads_tab)

    # ---- saving and using --------------------------------------------------------------------

    def default_model_path(self) -> Path:
        from vit_desktop.core.paths import user_models_dir

        names = "-".join(self.trained_result.card.labels[:3]) if self.trained_result else "model"
        stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", names).strip("_")[:60] or "model"
        return user_models_dir() / f"{stem}.safetensors"

    def _ask_overwrite(self, path: Path) -> bool:
        return QMessageBox.question(
            self, "Replace model?", as_plain(f"{path.name} already exists. Replace it?")
        ) == QMessageBox.StandardButton.Yes

    def save_model_to(self, path: str | os.PathLike[str]) -> bool:
        """Save the trained model; asks before replacing an existing file. True when written."""
        if self.trained_result is None:
            return False
        path = Path(path)
        if path.suffix.lower() != ".safetensors":
            path = path.with_name(path.name + ".safetensors")
        overwrite = path.exists()
        if overwrite and not self._ask_overwrite(path):
            self.status_label.setText("Not saved: the existing model was kept")
            return False
        try:
            self.trained_result.save(path, name=path.stem, overwrite=overwrite)
        except (OSError, ValueError) as exc:
            self.status_label.setText(f"Could not save {path.name}: {exc}")
            return False
        # "Use now" after saving classifies with the model as the picker will list it.
        card = replace(self.trained_result.card, name=path.stem, source=str(path))
        self.trained_result = replace(self.trained_result, card=card)
        self.saved_path = path
        self.status_label.setText(f"Saved {path}")
        self.controller.notify_models_changed()
        return True

    @Slot()
    def _on_save_model(self) -> None:
        self.save_model_dialog()

    def save_model_dialog(self) -> bool:
        """Ask where to save the trained model, and save it there. True when written."""
        if self.trained_result is None:
            return False
        start = self.default_model_path()
        remembered = self.settings.folder("models")
        if remembered:
            start = Path(remembered) / start.name
        path, _ = QFileDialog.getSaveFileName(
            self, "Save model", str(start), "Models (*.safetensors)",
            options=QFileDialog.Option.DontConfirmOverwrite,  # we ask ourselves, with the same words everywhere
        )
        if not path:
            self.status_label.setText("Not saved: no file was chosen")
            return False
        self.settings.set_folder("models", str(Path(path).parent))
        return self.save_model_to(path)

    @Slot()
    def use_now(self) -> None:
        """Switch the main window to the new model (a copy: this dialog may still save it)."""
        if self.trained_result is None:
            return
        self._in_use = self.trained_result.card
        self.controller.use_module(copy.deepcopy(self.trained_result.module), self._in_use)
        self._in_use_text = (f"Now classifying with {self._in_use.name} in the main window; training still starts "
                             f"from {self.base.card.name if self.base is not None else 'the model it came from'}")
        self.status_label.setText(self._in_use_text)

    def can_save_unsaved(self) -> bool:
        """Whether something that quitting would lose can be saved now (the model, the labels)."""
        return (self.trained_result is not None and self.saved_path is None) or self.labels.unsaved

    def save_unsaved(self) -> bool:
        """Save the unsaved model and labels, asking where as Save model… and Save labels… do.
        True when nothing savable is left unsaved; False when a save was cancelled or failed (the
        status line says which)."""
        if self.trained_result is not None and self.saved_path is None and not self.save_model_dialog():
            return False
        return not self.labels.unsaved or self.labels.save_project_dialog()

    def unsaved_work(self) -> list[str]:
        """What quitting now would lose, in words (empty: nothing)."""
        lost = ["fine-tuning is still running"] if self._job is not None else []
        r = self.trained_result
        if r is not None and self.saved_path is None:
            lost.append(f"the fine-tuned model ({', '.join(r.card.labels[:4])}"
                        f"{', …' if len(r.card.labels) > 4 else ''}) is not saved")
        if self.labels.unsaved:
            n, k = len(self.data), len(self.data.classes)
            lost.append(f"the labelled photos ({n} in {k} class{'es' if k != 1 else ''}) are not saved")
        return lost

    # ---- closing -----------------------------------------------------------------------------

    def done(self, code: int) -> None:
        # Closing the dialog stops training; the compute thread notices at its next step. The
        # dialog is only hidden: Tools ▸ Fine-tune brings it back with its classes and model.
        if self._job is not None:
            self._job.cancel()
        super().done(code)

    def closeEvent(self, event: Any) -> None:
        if self._job is not None:
            self._job.cancel()
        super().closeEvent(event)

    def shutdown(self) -> None:
        """Join the threads that decode the photo list's thumbnails (the window is quitting)."""
        self.labels.shutdown()


__all__ = ["FinetuneDialog", "TrainOutcome"]
