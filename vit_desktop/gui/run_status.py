"""The status bar: what is happening now (loading, downloading, classifying), totals, Cancel.

It observes the controller: every model load and folder run it starts shows here, with the totals
of one busy spell (drops that follow each other count together). The controller keeps which runs
are going; this keeps only how far the spell's finished runs got. It says what happened; what to
do about a failure is the window's message bar.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

from PySide6.QtCore import QObject, QTimer, Signal, Slot
from PySide6.QtWidgets import QLabel, QProgressBar, QPushButton, QStatusBar

from vit_desktop.core.units import format_bytes, format_duration
from vit_desktop.gui.compute import Controller, LoadedModel, RunProgress
from vit_desktop.gui.compute.messages import NO_MODEL_TEXT
from vit_desktop.gui.jobs import Job, Outcome
from vit_desktop.gui.plain_text import as_plain, plain

#: What a stage of gathering prints is called on the status line (and the stages views add).
STAGES = {"hashing": "hashing photos", "features": "features of photos", "grouping": "comparing photos",
          "layout": "placing photos"}


def _progress(job: Job) -> tuple[int, int]:
    """(done, total) of a run as far as it reported."""
    latest = job.latest
    return (latest.done, latest.total) if isinstance(latest, RunProgress) else (0, 0)


class RunStatus(QObject):
    """Owns the status bar's label, progress bar, Cancel button and model label."""

    #: A folder run ended (the status line already says how): its Outcome.
    run_finished = Signal(object)
    #: A folder run failed: its Failure, for the message bar.
    run_failed = Signal(object)

    def __init__(self, bar: QStatusBar, controller: Controller, *, waiting: Callable[[], int],
                 errors: Callable[[], int]) -> None:
        super().__init__(bar)
        self._controller = controller
        self._waiting = waiting
        self._errors = errors
        self.status_label = QLabel("", bar)
        self.progress = QProgressBar(bar)
        self.progress.setMaximumWidth(220)
        self.progress.setTextVisible(True)
        self.progress.hide()
        self.cancel_button = QPushButton("Cancel", bar)
        self.cancel_button.setToolTip("Stop the folder run, the search or the model download (Esc)")
        self.cancel_button.hide()
        self.cancel_button.clicked.connect(self.cancel)
        self.model_label = QLabel("", bar)
        self.model_label.setObjectName("modelLabel")
        plain(self.status_label, self.model_label)  # model and file names: never HTML
        bar.addWidget(self.status_label, 1)
        bar.addPermanentWidget(self.progress)
        bar.addPermanentWidget(self.cancel_button)
        bar.addPermanentWidget(self.model_label)
        self._load: Job | None = None
        #: Other slow jobs shown here (similar photos, duplicates, the map): what each is doing.
        self._tasks: dict[Job, str] = {}
        self._load_started = 0.0
        self._spell_started = 0.0
        # Runs that ended while others of the same busy spell go on still count in its totals.
        self._finished_done = 0
        self._finished_total = 0
        # At most ten refreshes a second: QProgressBar repaints synchronously on every value.
        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.setInterval(100)
        self._timer.timeout.connect(self._show_runs)
        controller.load_started.connect(self.track_load)
        controller.run_started.connect(self.track_run)
        controller.model_changed.connect(self.show_model)

    def say(self, text: str) -> None:
        self.status_label.setText(text)

    @property
    def loading(self) -> bool:
        return self._load is not None

    def cancel(self) -> None:
        """Esc / Cancel: stop the folder runs and the searches; with none, stop the model load or download."""
        c = self._controller
        if c.busy or self._tasks:
            for job in self._tasks:
                job.cancel()
            c.cancel_runs()
            self.say("Cancelling…")
        elif c.loading:
            c.cancel_load()
            self.say("Cancelling…")

    # -- the model -----------------------------------------------------------------------------

    @Slot(object)
    def show_model(self, loaded: LoadedModel | None) -> None:
        if loaded is None:
            self.model_label.setText("Loading model…" if self._load is not None else NO_MODEL_TEXT)
            self.model_label.setToolTip("")
            return
        self.model_label.setText(f"{loaded.card.name} · {loaded.device_name} · {loaded.precision}")
        card = loaded.card
        why = f": {loaded.precision_why}" if loaded.precision_why else ""
        self.model_label.setToolTip(as_plain(f"{card.description or card.source}\nInput {card.arch.image_size} px: "
                                             f"{card.preprocess.describe()}\nPrecision {loaded.precision}{why}"))

    @Slot(object, str)
    def track_load(self, job: Job, source: str) -> None:
        self._load = job
        self._load_started = time.monotonic()
        name = Path(source).name if os.sep in source else source
        self.say(f"Loading {name}…" + self._waiting_note())
        self.progress.setRange(0, 0)
        self.progress.show()
        self.cancel_button.show()
        self.model_label.setText("Loading model…")
        job.progressed.connect(self._on_load_progress)
        job.returned.connect(self._on_loaded)
        job.finished.connect(self._on_load_finished)

    @Slot(object)
    def _on_load_progress(self, value: object) -> None:
        if self.sender() is not self._load or not isinstance(value, tuple):
            return
        done, total = value
        elapsed = max(1e-3, time.monotonic() - self._load_started)
        rate = done / elapsed
        if total > 0:
            self.progress.setRange(0, 1000)
            self.progress.setValue(int(1000 * done / total))
            left = (total - done) / rate if rate > 0 else 0
            text = (f"Downloading weights: {format_bytes(done)} of {format_bytes(total)}, "
                    f"{format_bytes(rate)}/s, {format_duration(left)} left")
        else:
            text = f"Downloading weights: {format_bytes(done)}, {format_bytes(rate)}/s"
        self.say(text + self._waiting_note())

    @Slot(object)
    def _on_loaded(self, loaded: object) -> None:
        if isinstance(loaded, LoadedModel):
            why = f": {loaded.precision_why}" if loaded.precision_why else ""
            self.say(f"{loaded.card.name} ready on {loaded.device_name} in {loaded.precision}{why}")

    @Slot(object)
    def _on_load_finished(self, outcome: object) -> None:
        if self.sender() is not self._load or outcome is Outcome.SUPERSEDED:
            return
        self._load = None
        self.show_model(self._controller.current_model)
        if outcome is Outcome.CANCELLED:
            self.say("Model loading cancelled.")
        elif outcome is Outcome.FAILED:
            self.say("The model could not be loaded.")
        self._end_busy()

    def _waiting_note(self) -> str:
        n = self._waiting()
        return f" · {n} item{'s' if n != 1 else ''} waiting for the model" if n else ""

    # -- folder runs ---------------------------------------------------------------------------

    @Slot(object)
    def track_run(self, job: Job) -> None:
        if self._controller.runs == (job,):  # the first run of a busy spell
            self._spell_started = time.monotonic()
            self._finished_done = self._finished_total = 0
        job.progressed.connect(self._on_run_progress)
        job.errored.connect(self.run_failed)
        job.finished.connect(self._on_run_finished)
        self.say("Scanning…")
        self.progress.setRange(0, 0)
        self.progress.show()
        self.cancel_button.show()

    def forget_runs(self) -> None:
        """The results are being cleared: the runs going now end without a word (the caller
        abandons them next)."""
        for job in self._controller.runs:
            job.progressed.disconnect(self._on_run_progress)
            job.errored.disconnect(self.run_failed)
            job.finished.disconnect(self._on_run_finished)
        self._timer.stop()
        if self._load is None and not self._tasks:
            self.progress.hide()
            self.progress.setFormat("%p%")
            self.cancel_button.hide()

    @Slot(object)
    def _on_run_progress(self, _value: object) -> None:
        if not self._timer.isActive():
            self._timer.start()

    @Slot()
    def _show_runs(self) -> None:
        running = [_progress(job) for job in self._controller.runs]
        done = self._finished_done + sum(d for d, _ in running)
        total = self._finished_total + sum(t for _, t in running)
        if total <= 0:
            return
        self.progress.setRange(0, total)
        self.progress.setValue(done)
        self.progress.setFormat(f"{done} / {total}")
        elapsed = max(1e-3, time.monotonic() - self._spell_started)
        rate = done / elapsed
        text = f"Classifying {done} of {total} images"
        if rate > 0 and done > 0:
            text += f" · {rate:.1f} images/s · {format_duration((total - done) / rate)} left"
        self.say(text)

    @Slot(object)
    def _on_run_finished(self, outcome: object) -> None:
        job = self.sender()
        if not isinstance(job, Job):
            return
        run_done, run_total = _progress(job)
        cancelled = outcome is not Outcome.DONE
        self._finished_done += run_done
        # A cancelled run never reached its total: it counts as far as it got.
        self._finished_total += run_done if cancelled else run_total
        done = self._finished_done
        self._timer.stop()
        if self._controller.busy:
            self._show_runs()
        else:
            elapsed = time.monotonic() - self._spell_started
            self._end_busy()
            errors = self._errors()
            if outcome is Outcome.CANCELLED:
                self.say(f"Cancelled after {done} of {done + run_total - run_done} images.")
            elif outcome is Outcome.FAILED:
                self.say(f"Stopped after {done} images.")
            else:
                latest = job.latest
                stored = latest.from_library + latest.from_features if isinstance(latest, RunProgress) else 0
                if stored:  # "24 images in 0.1 s: 23 from the library, 1 classified"
                    assert isinstance(latest, RunProgress)
                    text = (f"{done} image{'s' if done != 1 else ''} in {format_duration(elapsed)}: "
                            f"{stored} from the library, {latest.classified} classified")
                else:
                    text = f"Classified {done} image{'s' if done != 1 else ''} in {format_duration(elapsed)}"
                self.say(text + (f" · {errors} could not be read (filter: Errors)" if errors else ""))
        self.run_finished.emit(outcome)

    # -- other slow jobs -----------------------------------------------------------------------------

    @property
    def tasks(self) -> tuple[Job, ...]:
        """The jobs :meth:`track_task` shows that are still going."""
        return tuple(self._tasks)

    def track_task(self, job: Job, title: str) -> None:
        """Show ``job`` ("Finding similar photos") with its progress and Cancel (Esc) until it ends.

        Its reports are read as :class:`~vit_desktop.core.inference.lookalikes.PrintsProgress`
        (stage, done, total); the part that started it says how it ended.
        """
        self._tasks[job] = title
        job.progressed.connect(self._on_task_progress)
        job.finished.connect(self._on_task_finished)
        self.say(f"{title}…")
        if not self._controller.busy:  # a folder run's figures keep the bar while it streams
            self.progress.setRange(0, 0)
            self.progress.setFormat("%p%")
            self.progress.show()
        self.cancel_button.show()

    @Slot(object)
    def _on_task_progress(self, value: object) -> None:
        job = self.sender()
        title = self._tasks.get(job) if isinstance(job, Job) else None
        stage, done, total = (getattr(value, name, None) for name in ("stage", "done", "total"))
        if title is None or not isinstance(done, int) or not isinstance(total, int) or total <= 0:
            return
        self.say(f"{title}: {STAGES.get(str(stage), str(stage))} {done} of {total}")
        if not self._controller.busy:
            self.progress.setRange(0, total)
            self.progress.setValue(done)
            self.progress.setFormat(f"{done} / {total}")

    @Slot(object)
    def _on_task_finished(self, outcome: object) -> None:
        job = self.sender()
        title = self._tasks.pop(job, None) if isinstance(job, Job) else None
        if title is None:
            return
        if outcome is Outcome.CANCELLED:
            self.say(f"{title}: cancelled.")
        elif outcome is Outcome.FAILED:
            self.say(f"{title}: stopped.")
        self._end_busy()

    def _end_busy(self) -> None:
        if self._controller.busy or self._load is not None or self._tasks:
            return
        self.progress.hide()
        self.progress.setFormat("%p%")
        self.cancel_button.hide()


__all__ = ["RunStatus"]
