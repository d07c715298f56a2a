"""The GUI thread's handle on the compute thread that owns the model.

One long-lived ``QThread`` runs a :class:`~.worker.ComputeWorker`; every request goes to it as a
frozen dataclass through a queued signal, and every request is a :class:`~vit_desktop.gui.jobs.Job`
that the caller follows through its own signals. Cancelling never waits in the queue: the job's
token is thread-safe, and the worker notices at its next cancel point. Newest wins is decided by
the job board's channels: a model load supersedes the previous load, and a heatmap request the
previous heatmap request.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from PySide6.QtCore import QObject, QThread, Signal, Slot

from vit_desktop.core.types import ExplainOptions, ModelCard
from vit_desktop.gui.jobs import Job, JobBoard, JobContext

from .messages import (
    ExplainRequest,
    HeatmapReply,
    LoadedModel,
    LoadRequest,
    PrintsFn,
    PrintsReply,
    PrintsRequest,
    Request,
    RunProgress,
    RunRequest,
    TaskFn,
    TaskRequest,
    UseModuleRequest,
)
from .worker import ComputeWorker

if TYPE_CHECKING:
    from vit_desktop.core.inference.options import ClassifyOptions

log = logging.getLogger(__name__)

#: Channels on which the newest job wins.
LOAD = "load"
EXPLAIN = "explain"


class Controller(QObject):
    """Posts requests to the compute thread and hands back one :class:`Job` per request."""

    #: The model in use changed (a load or a switch finished): a :class:`LoadedModel`.
    model_changed = Signal(object)
    #: A user model was saved or removed: pickers list the models again.
    models_changed = Signal()
    #: A model load began: its Job and the source being loaded.
    load_started = Signal(object, str)
    #: A folder run was queued: its Job (``progressed``: RunProgress; ``latest`` holds the last one).
    run_started = Signal(object)
    #: The library of stored results could not be used: one line saying why (runs go on without it).
    library_problem = Signal(str)
    _post = Signal(object, object)  # JobContext, Request -> the worker

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.board = JobBoard(self)
        self._thread = QThread()
        self._thread.setObjectName("vit-desktop compute")
        self._worker = ComputeWorker()
        self._worker.moveToThread(self._thread)
        self._post.connect(self._worker.handle)
        self._worker.model_changed.connect(self._on_model_changed)
        self._worker.library_problem.connect(self.library_problem)
        self._thread.start()
        self._shut_down = False
        self._current: LoadedModel | None = None
        # Insertion-ordered: the runs in the order they were queued.
        self._runs: dict[Job, None] = {}

    # -- state ---------------------------------------------------------------------------------

    @property
    def current_model(self) -> LoadedModel | None:
        return self._current

    @property
    def current_card(self) -> ModelCard | None:
        return self._current.card if self._current else None

    @property
    def loading(self) -> bool:
        return self.board.latest(LOAD) is not None

    @property
    def busy(self) -> bool:
        """True while a folder run is queued or streaming."""
        return bool(self._runs)

    @property
    def runs(self) -> tuple[Job, ...]:
        """The folder runs queued or streaming, oldest first."""
        return tuple(self._runs)

    @property
    def compute_thread(self) -> QThread:
        """The thread that owns the engine (QObject.thread() stays this object's own thread)."""
        return self._thread

    # -- requests ------------------------------------------------------------------------------

    def _submit(self, name: str, request: Request, channel: str | None = None) -> Job:
        job, ctx = self.board.create(name, channel=channel)
        self._post.emit(ctx, request)
        return job

    def load_model(self, source: str | Path, device: str = "auto", precision: str = "auto") -> Job:
        """Load a registry name or a weights file; supersedes a load still under way.

        ``progressed``: (bytes done, bytes total) of a download; ``returned``: a LoadedModel.
        """
        job = self._submit("load", LoadRequest(str(source), device, precision), LOAD)
        self.load_started.emit(job, str(source))
        return job

    def use_module(self, module: object, card: ModelCard, device: str = "auto", precision: str = "auto") -> Job:
        """Switch to an in-memory model (e.g. one just fine-tuned); the caller must not keep using it."""
        job = self._submit("use model", UseModuleRequest(module, card, device, precision), LOAD)
        self.load_started.emit(job, card.name)
        return job

    def classify(self, paths: Sequence[str], options: ClassifyOptions) -> Job:
        """Queue a run over files and folders (folders are scanned on the compute thread).

        ``progressed``: a :class:`RunProgress` per batch; ``returned``: the final RunProgress.
        """
        request = RunRequest(tuple(str(p) for p in paths), options)
        job = self._submit("classify", request)
        self._runs[job] = None
        job.finished.connect(self._on_run_finished)
        self.run_started.emit(job)
        return job

    def explain(self, path: str, options: ExplainOptions, class_index: int | None = None,
                members: tuple[int, ...] | None = None) -> Job:
        """One image's map (of a named category with ``members``); a newer request supersedes this
        one. ``returned``: a HeatmapReply."""
        return self._submit("explain", ExplainRequest(path, options, class_index, members), EXPLAIN)

    def run_task(self, fn: TaskFn) -> Job:
        """Run ``fn(engine, report, cancel)`` on the compute thread.

        ``report(obj)`` emits the job's ``progressed(obj)``; the return value its ``returned``.
        """
        return self._submit("task", TaskRequest(fn))

    def gather_prints(self, paths: Sequence[str], then: PrintsFn, *, features: bool, hashes: bool,
                      first: str | None = None, channel: str | None = None) -> Job:
        """The prints of the photos ``paths`` (features of the model in use, perceptual hashes), read
        from the library where it holds them, made into a value by ``then(prints, first, report,
        cancel)`` on the compute thread; a newer job on ``channel`` supersedes this one.

        ``progressed``: a :class:`~vit_desktop.core.inference.lookalikes.PrintsProgress` per batch
        (and what ``then`` reports); ``returned``: a :class:`PrintsReply`. Features without a model
        fail (FailureKind.NO_MODEL's message says to choose one).
        """
        request = PrintsRequest(tuple(str(p) for p in paths), features, hashes, then, first)
        return self._submit("prints", request, channel)

    def cancel_runs(self) -> None:
        """Cancel every queued and active folder run."""
        for job in list(self._runs):
            job.cancel()

    def abandon_runs(self) -> None:
        """Cancel every folder run and end it now: no result of theirs arrives any more."""
        for job in list(self._runs):
            self.board.abandon(job)

    def cancel_load(self) -> None:
        job = self.board.latest(LOAD)
        if job is not None:
            job.cancel()

    def notify_models_changed(self) -> None:
        """Tell pickers that a user model was saved or removed."""
        self.models_changed.emit()

    def shutdown(self, timeout_ms: int = 30000) -> None:
        """Cancel everything, stop the thread and join it. Safe to call more than once."""
        if self._shut_down:
            return
        self._shut_down = True
        self.board.cancel_all()
        self._thread.quit()
        if not self._thread.wait(timeout_ms):
            log.error("compute thread did not stop within %d ms", timeout_ms)
            self._thread.wait()  # never drop a running QThread
        try:
            self._worker.release()
        except Exception:
            log.exception("releasing the compute thread's run failed")

    @property
    def is_shut_down(self) -> bool:
        return self._shut_down

    # -- replies (GUI thread) ------------------------------------------------------------------

    @Slot(object)
    def _on_model_changed(self, loaded: LoadedModel) -> None:
        # Even a superseded load became the worker's engine, so the current model is always the
        # last one loaded.
        self._current = loaded
        self.model_changed.emit(loaded)

    @Slot(object)
    def _on_run_finished(self, _outcome: object) -> None:
        self._runs = {job: None for job in self._runs if job.running}


__all__ = ["Controller", "HeatmapReply", "JobContext", "LoadedModel", "PrintsReply", "RunProgress"]
