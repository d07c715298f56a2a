"""The bridge between the window and the single compute thread that owns the model.

One long-lived ``QThread`` runs a :class:`_Worker`; the worker owns the :class:`Engine` and makes
every device call. The GUI thread talks to it only through frozen request dataclasses posted with
a queued signal, and hears back through signals of the worker that are connected to ``@Slot``
methods of the :class:`Controller` (a GUI-thread object). Only immutable data crosses: cards,
results, heatmaps, strings and numbers.

Cancelling never waits in the queue: the GUI thread sets the request's ``CancelToken`` directly
(it is thread-safe), and the job notices at its next batch boundary.

A folder run is processed one batch per event, so that a heatmap asked for while a long run is
streaming (the user clicked a thumbnail) is answered between two batches instead of after the run.
"""

from __future__ import annotations

import collections
import itertools
import logging
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator

from PySide6.QtCore import QObject, QThread, QTimer, Signal, Slot

from vit_desktop.core.types import (
    Cancelled,
    CancelToken,
    ClassifyResult,
    ExplainOptions,
    Heatmap,
    ModelCard,
    VitDesktopError,
)

if TYPE_CHECKING:  # the engine imports torch; the window must not wait for that at start-up
    from vit_desktop.core.engine import Engine

log = logging.getLogger(__name__)

TaskFn = Callable[["Engine | None", Callable[[object], None], CancelToken], object]


# ----------------------------------------------------------------------------------------------
# Requests (GUI thread -> compute thread). Frozen: the GUI never mutates one after posting it.


@dataclass(frozen=True)
class LoadRequest:
    id: int
    source: str
    device: str
    precision: str
    cancel: CancelToken = field(compare=False)


@dataclass(frozen=True)
class UseModuleRequest:
    id: int
    module: Any  # a VisionTransformer handed over for good: the GUI keeps no reference
    card: ModelCard
    device: str
    precision: str


@dataclass(frozen=True)
class RunRequest:
    id: int
    paths: tuple[str, ...]
    top_k: int
    batch_size: int
    explain: ExplainOptions | None
    threshold: float
    cancel: CancelToken = field(compare=False)


@dataclass(frozen=True)
class HeatmapRequest:
    id: int
    path: str
    options: ExplainOptions
    class_index: int | None


@dataclass(frozen=True)
class TaskRequest:
    id: int
    fn: TaskFn
    cancel: CancelToken = field(compare=False)


# ----------------------------------------------------------------------------------------------
# Replies (compute thread -> GUI thread).


@dataclass(frozen=True)
class LoadedModel:
    """What the window shows once a model is ready."""

    card: ModelCard
    device_name: str
    device_key: str
    precision: str
    source: str


@dataclass(frozen=True)
class HeatmapReply:
    path: str
    heatmap: Heatmap


def one_line(exc: BaseException) -> str:
    """A person-readable single line for an exception (core errors already are one line)."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if isinstance(exc, VitDesktopError):
        return text
    return f"{type(exc).__name__}: {text}"


class _ActiveRun:
    """A run being streamed on the compute thread: its request and its batch generator."""

    def __init__(self, request: RunRequest, batches: Iterator[list[ClassifyResult]], total: int) -> None:
        self.request = request
        self.batches = batches
        self.total = total
        self.done = 0


class _Worker(QObject):
    """Lives on the compute thread. Every slot catches everything: a UI stuck in "busy" is a bug."""

    model_loading = Signal(int, str)
    model_progress = Signal(int, int, int)  # load id, done, total
    model_loaded = Signal(int, object)  # load id, LoadedModel
    model_failed = Signal(int, str)
    run_started = Signal(int, int)  # run id, total files
    results_ready = Signal(int, object)  # run id, list[ClassifyResult]
    run_progress = Signal(int, int, int)  # run id, done, total
    run_finished = Signal(int, bool)  # run id, cancelled
    heatmap_ready = Signal(int, object)  # request id, HeatmapReply
    heatmap_failed = Signal(int, str)
    task_progress = Signal(int, object)
    task_finished = Signal(int, object)
    task_failed = Signal(int, str)
    failed = Signal(str)

    def __init__(self) -> None:
        super().__init__()
        self._engine: Engine | None = None
        self._runs: collections.deque[RunRequest] = collections.deque()
        self._active: _ActiveRun | None = None
        self._step_scheduled = False
        # Written by the GUI thread, read here: a plain int assignment is atomic under the GIL.
        self.latest_heatmap_id = 0

    # -- dispatch ------------------------------------------------------------------------------

    @Slot(object)
    def handle(self, request: object) -> None:
        try:
            if isinstance(request, LoadRequest):
                self._load(request)
            elif isinstance(request, UseModuleRequest):
                self._use_module(request)
            elif isinstance(request, RunRequest):
                self._runs.append(request)
                self._schedule_step()
            elif isinstance(request, HeatmapRequest):
                self._heatmap(request)
            elif isinstance(request, TaskRequest):
                self._task(request)
            else:  # pragma: no cover - a programming error, still never fatal
                self.failed.emit(f"Unknown request {type(request).__name__}")
        except BaseException as exc:  # noqa: BLE001 - a slot must never let anything escape
            log.exception("compute thread request failed")
            self.failed.emit(one_line(exc))

    # -- models --------------------------------------------------------------------------------

    def _load(self, req: LoadRequest) -> None:
        self.model_loading.emit(req.id, req.source)
        if req.cancel.cancelled:
            self.model_failed.emit(req.id, "Loading cancelled.")
            return

        def progress(done: int, total: int) -> None:
            self.model_progress.emit(req.id, int(done), int(total))

        try:
            from vit_desktop.core.engine import Engine  # first use imports torch, off the GUI thread

            engine = Engine.load(
                req.source, device=req.device, precision=req.precision, progress=progress, cancel=req.cancel
            )
        except Cancelled:
            self.model_failed.emit(req.id, "Loading cancelled.")
            return
        except VitDesktopError as exc:  # expected: a bad file, offline; the message says it all
            log.warning("loading %s failed: %s", req.source, one_line(exc))
            self.model_failed.emit(req.id, one_line(exc))
            return
        except BaseException as exc:  # noqa: BLE001
            log.exception("loading %s failed", req.source)
            self.model_failed.emit(req.id, one_line(exc))
            return
        self._set_engine(req.id, engine, req.source)

    def _use_module(self, req: UseModuleRequest) -> None:
        self.model_loading.emit(req.id, req.card.name)
        try:
            from vit_desktop.core.engine import Engine

            engine = Engine.from_module(req.module, req.card, device=req.device, precision=req.precision)
        except BaseException as exc:  # noqa: BLE001
            log.exception("switching to an in-memory model failed")
            self.model_failed.emit(req.id, one_line(exc))
            return
        self._set_engine(req.id, engine, req.card.source)

    def _set_engine(self, load_id: int, engine: Engine, source: str) -> None:
        self._engine = engine
        self.model_loaded.emit(
            load_id,
            LoadedModel(
                card=engine.card,
                device_name=str(engine.device_name),
                device_key=str(engine.device),
                precision=str(engine.precision),
                source=source,
            ),
        )

    # -- folder runs ---------------------------------------------------------------------------

    def _schedule_step(self) -> None:
        if not self._step_scheduled:
            self._step_scheduled = True
            # A zero timer lets requests already queued (a heatmap for the clicked image) go first.
            QTimer.singleShot(0, self._step)

    @Slot()
    def _step(self) -> None:
        self._step_scheduled = False
        try:
            self._step_inner()
        except BaseException as exc:  # noqa: BLE001
            log.exception("classification step failed")
            run = self._active
            self._active = None
            if run is not None:
                self.failed.emit(f"Classification stopped: {one_line(exc)}")
                self.run_finished.emit(run.request.id, run.request.cancel.cancelled)
        if self._active is not None or self._runs:
            self._schedule_step()

    def _step_inner(self) -> None:
        if self._active is None:
            if not self._runs:
                return
            req = self._runs.popleft()
            self._start_run(req)
            return
        run = self._active
        if run.request.cancel.cancelled:
            self._active = None
            self.run_finished.emit(run.request.id, True)
            return
        try:
            batch = next(run.batches)
        except StopIteration:
            self._active = None
            self.run_finished.emit(run.request.id, run.request.cancel.cancelled)
            return
        run.done += len(batch)
        self.results_ready.emit(run.request.id, list(batch))
        self.run_progress.emit(run.request.id, run.done, run.total)

    def _start_run(self, req: RunRequest) -> None:
        if req.cancel.cancelled:
            self.run_finished.emit(req.id, True)
            return
        if self._engine is None:
            self.failed.emit("No model loaded — choose one from the Model menu, then drop the images again.")
            self.run_finished.emit(req.id, False)
            return
        from vit_desktop.core.images import scan

        found = scan([Path(p) for p in req.paths], cancel=req.cancel)
        errors = [ClassifyResult(path=str(p), error=reason) for p, reason in found.errors]
        files = [str(p) for p in found.files]
        total = len(files) + len(errors)
        self.run_started.emit(req.id, total)
        if errors:
            self.results_ready.emit(req.id, errors)
        batches = self._engine.classify_batches(
            files,
            top_k=req.top_k,
            batch_size=req.batch_size,
            explain=req.explain,
            threshold=req.threshold,
            cancel=req.cancel,
        )
        self._active = _ActiveRun(req, batches, total)
        self._active.done = len(errors)
        self.run_progress.emit(req.id, self._active.done, total)

    # -- explain -------------------------------------------------------------------------------

    def _heatmap(self, req: HeatmapRequest) -> None:
        if req.id < self.latest_heatmap_id:
            return  # superseded by a newer request for the selected image: skip the work
        if self._engine is None:
            self.heatmap_failed.emit(req.id, "No model loaded.")
            return
        try:
            if req.class_index is None:
                heatmap = self._engine.rollout(req.path, req.options)
            else:
                heatmap = self._engine.explain_class(req.path, req.class_index)
        except VitDesktopError as exc:
            log.warning("heatmap for %s failed: %s", req.path, one_line(exc))
            self.heatmap_failed.emit(req.id, one_line(exc))
            return
        except BaseException as exc:  # noqa: BLE001
            log.exception("heatmap for %s failed", req.path)
            self.heatmap_failed.emit(req.id, one_line(exc))
            return
        self.heatmap_ready.emit(req.id, HeatmapReply(req.path, heatmap))

    # -- generic tasks -------------------------------------------------------------------------

    def _task(self, req: TaskRequest) -> None:
        def report(obj: object) -> None:
            self.task_progress.emit(req.id, obj)

        try:
            req.cancel.raise_if_cancelled()
            value = req.fn(self._engine, report, req.cancel)
        except Cancelled:
            self.task_failed.emit(req.id, "Cancelled.")
            return
        except BaseException as exc:  # noqa: BLE001
            log.error("task %d failed:\n%s", req.id, traceback.format_exc())
            self.task_failed.emit(req.id, one_line(exc))
            return
        self.task_finished.emit(req.id, value)

    def release(self) -> None:
        """Close a half-streamed run (its decode pool joins) and drop the model.

        Only called once the thread has stopped, so nothing runs here concurrently.
        """
        run, self._active = self._active, None
        self._runs.clear()
        if run is not None:
            close = getattr(run.batches, "close", None)
            if close is not None:
                close()
        self._engine = None


class Controller(QObject):
    """GUI-thread facade over the compute thread. Every signal here is emitted on the GUI thread.

    Stale replies (a run the user cleared, a heatmap for an image no longer selected, a model load
    superseded by a newer choice) are dropped here, so views only ever see current data.
    """

    model_loading = Signal(str)
    model_progress = Signal(int, int)
    model_loaded = Signal(object)  # LoadedModel
    model_failed = Signal(str)
    run_started = Signal(int, int)
    results_ready = Signal(int, object)
    run_progress = Signal(int, int, int)
    run_finished = Signal(int, bool)
    heatmap_ready = Signal(int, object)  # request id, HeatmapReply
    heatmap_failed = Signal(int, str)
    task_progress = Signal(int, object)
    task_finished = Signal(int, object)
    task_failed = Signal(int, str)
    models_changed = Signal()
    failed = Signal(str)
    _post = Signal(object)

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._ids = itertools.count(1)
        self._thread = QThread()
        self._thread.setObjectName("vit-desktop compute")
        self._worker = _Worker()
        self._worker.moveToThread(self._thread)
        self._post.connect(self._worker.handle)
        w = self._worker
        w.model_loading.connect(self._on_model_loading)
        w.model_progress.connect(self._on_model_progress)
        w.model_loaded.connect(self._on_model_loaded)
        w.model_failed.connect(self._on_model_failed)
        w.run_started.connect(self._on_run_started)
        w.results_ready.connect(self._on_results_ready)
        w.run_progress.connect(self._on_run_progress)
        w.run_finished.connect(self._on_run_finished)
        w.heatmap_ready.connect(self._on_heatmap_ready)
        w.heatmap_failed.connect(self._on_heatmap_failed)
        w.task_progress.connect(self._on_task_progress)
        w.task_finished.connect(self._on_task_finished)
        w.task_failed.connect(self._on_task_failed)
        w.failed.connect(self._on_failed)
        self._thread.start()
        self._shut_down = False
        self._current: LoadedModel | None = None
        self._load_id = 0
        self._load_cancel: CancelToken | None = None
        self._runs: dict[int, CancelToken] = {}
        self._tasks: dict[int, CancelToken] = {}
        self._heatmap_id = 0

    # -- state ---------------------------------------------------------------------------------

    @property
    def current_card(self) -> ModelCard | None:
        return self._current.card if self._current else None

    @property
    def current_model(self) -> LoadedModel | None:
        return self._current

    @property
    def loading(self) -> bool:
        return self._load_cancel is not None

    @property
    def busy(self) -> bool:
        """True while a folder run is queued or streaming."""
        return bool(self._runs)

    @property
    def compute_thread(self) -> QThread:
        """The thread that owns the engine (QObject.thread() stays this object's own thread)."""
        return self._thread

    # -- requests ------------------------------------------------------------------------------

    def load_model(self, source: str | Path, device: str = "auto", precision: str = "auto") -> int:
        """Load a registry name or a weights file on the compute thread; supersedes a pending load."""
        if self._load_cancel is not None:
            self._load_cancel.cancel()
        token = CancelToken()
        self._load_id = next(self._ids)
        self._load_cancel = token
        self._post.emit(LoadRequest(self._load_id, str(source), device, precision, token))
        return self._load_id

    def use_module(self, module: object, card: ModelCard, device: str = "auto", precision: str = "auto") -> int:
        """Switch to an in-memory model (e.g. one just fine-tuned); the caller must not keep using it."""
        if self._load_cancel is not None:
            self._load_cancel.cancel()
        self._load_id = next(self._ids)
        self._load_cancel = CancelToken()
        self._post.emit(UseModuleRequest(self._load_id, module, card, device, precision))
        return self._load_id

    def cancel_load(self) -> None:
        if self._load_cancel is not None:
            self._load_cancel.cancel()

    def classify(
        self,
        paths: list[str] | tuple[str, ...],
        *,
        top_k: int = 5,
        batch_size: int = 16,
        explain: ExplainOptions | None = None,
        threshold: float = 0.0,
    ) -> int:
        """Queue a run over files and folders (folders are scanned on the compute thread)."""
        run_id = next(self._ids)
        token = CancelToken()
        self._runs[run_id] = token
        self._post.emit(RunRequest(run_id, tuple(str(p) for p in paths), top_k, batch_size, explain, threshold, token))
        return run_id

    def cancel_run(self, run_id: int | None = None) -> None:
        """Cancel one run, or every queued and active run."""
        for rid, token in list(self._runs.items()):
            if run_id is None or rid == run_id:
                token.cancel()

    def forget_runs(self) -> None:
        """Cancel every run and drop whatever they still send (the user cleared the results)."""
        self.cancel_run()
        self._runs.clear()

    def request_heatmap(self, path: str, options: ExplainOptions, class_index: int | None = None) -> int:
        """Ask for one image's map; only the newest request's answer is delivered."""
        self._heatmap_id = next(self._ids)
        self._worker.latest_heatmap_id = self._heatmap_id
        self._post.emit(HeatmapRequest(self._heatmap_id, path, options, class_index))
        return self._heatmap_id

    def run_task(self, fn: TaskFn) -> int:
        """Run ``fn(engine, report, cancel)`` on the compute thread.

        ``report(obj)`` emits ``task_progress(task_id, obj)``; the return value emits
        ``task_finished(task_id, value)``; an exception emits ``task_failed(task_id, message)``.
        """
        task_id = next(self._ids)
        token = CancelToken()
        self._tasks[task_id] = token
        self._post.emit(TaskRequest(task_id, fn, token))
        return task_id

    def cancel_task(self, task_id: int) -> None:
        token = self._tasks.get(task_id)
        if token is not None:
            token.cancel()

    def notify_models_changed(self) -> None:
        """Tell pickers that a user model was saved or removed."""
        self.models_changed.emit()

    def shutdown(self, timeout_ms: int = 30000) -> None:
        """Cancel everything, stop the thread and join it. Safe to call more than once."""
        if self._shut_down:
            return
        self._shut_down = True
        self.cancel_load()
        self.cancel_run()
        for token in self._tasks.values():
            token.cancel()
        self._thread.quit()
        if not self._thread.wait(timeout_ms):
            log.error("compute thread did not stop within %d ms", timeout_ms)
            self._thread.wait()  # never drop a running QThread
        try:
            self._worker.release()
        except Exception:  # noqa: BLE001 - closing must go on
            log.exception("releasing the compute thread's run failed")

    @property
    def is_shut_down(self) -> bool:
        return self._shut_down

    # -- replies (GUI thread) ------------------------------------------------------------------

    @Slot(int, str)
    def _on_model_loading(self, load_id: int, source: str) -> None:
        if load_id == self._load_id:
            self.model_loading.emit(source)

    @Slot(int, int, int)
    def _on_model_progress(self, load_id: int, done: int, total: int) -> None:
        if load_id == self._load_id:
            self.model_progress.emit(done, total)

    @Slot(int, object)
    def _on_model_loaded(self, load_id: int, loaded: object) -> None:
        assert isinstance(loaded, LoadedModel)
        # Even a superseded load became the worker's engine, so the current model is always the
        # last one loaded; only the newest load clears the "loading" state.
        self._current = loaded
        if load_id == self._load_id:
            self._load_cancel = None
        self.model_loaded.emit(loaded)

    @Slot(int, str)
    def _on_model_failed(self, load_id: int, message: str) -> None:
        if load_id == self._load_id:
            self._load_cancel = None
            self.model_failed.emit(message)

    @Slot(int, int)
    def _on_run_started(self, run_id: int, total: int) -> None:
        if run_id in self._runs:
            self.run_started.emit(run_id, total)

    @Slot(int, object)
    def _on_results_ready(self, run_id: int, results: object) -> None:
        if run_id in self._runs:
            self.results_ready.emit(run_id, results)

    @Slot(int, int, int)
    def _on_run_progress(self, run_id: int, done: int, total: int) -> None:
        if run_id in self._runs:
            self.run_progress.emit(run_id, done, total)

    @Slot(int, bool)
    def _on_run_finished(self, run_id: int, cancelled: bool) -> None:
        if self._runs.pop(run_id, None) is not None:
            self.run_finished.emit(run_id, cancelled)

    @Slot(int, object)
    def _on_heatmap_ready(self, request_id: int, reply: object) -> None:
        if request_id == self._heatmap_id:
            self.heatmap_ready.emit(request_id, reply)

    @Slot(int, str)
    def _on_heatmap_failed(self, request_id: int, message: str) -> None:
        if request_id == self._heatmap_id:
            self.heatmap_failed.emit(request_id, message)

    @Slot(int, object)
    def _on_task_progress(self, task_id: int, obj: object) -> None:
        self.task_progress.emit(task_id, obj)

    @Slot(int, object)
    def _on_task_finished(self, task_id: int, value: object) -> None:
        self._tasks.pop(task_id, None)
        self.task_finished.emit(task_id, value)

    @Slot(int, str)
    def _on_task_failed(self, task_id: int, message: str) -> None:
        self._tasks.pop(task_id, None)
        self.task_failed.emit(task_id, message)

    @Slot(str)
    def _on_failed(self, message: str) -> None:
        self.failed.emit(message)


__all__ = ["Controller", "HeatmapReply", "LoadedModel", "one_line"]
