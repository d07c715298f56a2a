"""The compute thread's side: one worker that owns the engine and makes every device call.

It lives on the controller's ``QThread``; requests arrive through a queued signal with the
:class:`~vit_desktop.gui.jobs.JobContext` to answer through. A folder run is processed one batch
per event, so that a heatmap asked for while a long run streams (the user clicked a thumbnail) is
answered between two batches instead of after the run.
"""

from __future__ import annotations

import collections
import logging
from collections.abc import Generator
from dataclasses import replace
from typing import TYPE_CHECKING

from PySide6.QtCore import QObject, QTimer, Signal, Slot

from vit_desktop.core.errors import Cancelled, Failure, FailureKind, VitDesktopError
from vit_desktop.gui.jobs import JobContext, execute

from .messages import (
    NO_MODEL_TEXT,
    ExplainRequest,
    HeatmapReply,
    LoadedModel,
    LoadRequest,
    PrintsReply,
    PrintsRequest,
    Request,
    RunRequest,
    TaskRequest,
    UseModuleRequest,
)

if TYPE_CHECKING:
    from vit_desktop.core.inference.engine import Engine
    from vit_desktop.core.inference.runs import FolderRun
    from vit_desktop.core.library.store import Library

log = logging.getLogger(__name__)


class _ActiveRun:
    """A run being streamed: its job, the run and its steps."""

    def __init__(self, ctx: JobContext, run: FolderRun) -> None:
        self.ctx = ctx
        self.run = run
        self.steps = run.steps()


class ComputeWorker(QObject):
    """Owns the engine. Every slot catches everything: a UI stuck in "busy" is a bug."""

    #: The engine changed (a load finished, superseded or not): the current model is this one.
    model_changed = Signal(object)
    #: The library could not be used (one line saying why); runs go on without it.
    library_problem = Signal(str)

    def __init__(self, use_library: bool = True) -> None:
        super().__init__()
        self._engine: Engine | None = None
        self._use_library = use_library
        self._library: Library | None = None
        self._library_opened = False
        self._runs: collections.deque[tuple[JobContext, RunRequest]] = collections.deque()
        self._active: _ActiveRun | None = None
        #: Prints being gathered, oldest first: each takes one step per event, as folder runs do.
        self._gathering: collections.deque[tuple[JobContext, Generator[None, None, None]]] = collections.deque()
        self._step_scheduled = False

    @Slot(object, object)
    def handle(self, ctx: JobContext, request: Request) -> None:
        try:
            if isinstance(request, LoadRequest):
                execute(ctx, lambda: self._load(ctx, request))
            elif isinstance(request, UseModuleRequest):
                execute(ctx, lambda: self._use_module(request))
            elif isinstance(request, RunRequest):
                self._runs.append((ctx, request))
                self._schedule_step()
            elif isinstance(request, ExplainRequest):
                execute(ctx, lambda: self._explain(request))
            elif isinstance(request, TaskRequest):
                execute(ctx, lambda: request.fn(self._engine, ctx.report, ctx.token))
            elif isinstance(request, PrintsRequest):
                if request.features and self._engine is None:
                    ctx.fail(Failure(FailureKind.NO_MODEL, f"{NO_MODEL_TEXT}, then try again."))
                    return
                self._gathering.append((ctx, self._gather(ctx, request)))
                self._schedule_step()
            else:  # pragma: no cover - a programming error, still never fatal
                ctx.fail(Failure(FailureKind.INTERNAL, f"unknown request {type(request).__name__}"))
        except BaseException as exc:
            log.exception("compute thread request failed")
            ctx.fail(Failure.of(exc))

    # -- models --------------------------------------------------------------------------------

    def _load(self, ctx: JobContext, req: LoadRequest) -> LoadedModel:
        from vit_desktop.core.inference.engine import Engine  # first use imports torch, off the GUI thread

        def progress(done: int, total: int) -> None:
            ctx.report((int(done), int(total)))

        engine = Engine.load(req.source, device=req.device, precision=req.precision, progress=progress,
                             cancel=ctx.token)
        library = self._open_library()
        if library is not None:
            from vit_desktop.core.inference.loading import remember_model

            remember_model(library, req.source, engine, device=req.device, precision=req.precision)
        return self._set_engine(engine, req.source)

    def _open_library(self) -> Library | None:
        """The library, opened on this thread at first need (a connection serves one thread)."""
        if self._use_library and not self._library_opened:
            from vit_desktop.core.library.store import Library

            self._library_opened = True
            self._library = Library.open(on_problem=self.library_problem.emit)
        return self._library if self._library is not None and self._library.usable else None

    def _use_module(self, req: UseModuleRequest) -> LoadedModel:
        from vit_desktop.core.inference.engine import Engine

        engine = Engine.from_module(req.module, req.card, device=req.device, precision=req.precision)
        return self._set_engine(engine, req.card.source)

    def _set_engine(self, engine: Engine, source: str) -> LoadedModel:
        self._engine = engine
        loaded = LoadedModel(
            card=engine.card,
            device_name=str(engine.device_name),
            device_key=str(engine.device),
            precision=str(engine.precision),
            source=source,
            model_id=engine.model_id,
            precision_why=engine.precision_why,
        )
        self.model_changed.emit(loaded)
        return loaded

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
        except BaseException as exc:
            log.exception("classification step failed")
            run, self._active = self._active, None
            if run is not None:
                failure = Failure.of(exc)
                run.ctx.fail(replace(failure, message=f"Classification stopped: {failure.message}"))
        self._step_gathering()
        if self._active is not None or self._runs or self._gathering:
            self._schedule_step()

    def _step_inner(self) -> None:
        if self._active is None:
            if self._runs:
                self._start_run(*self._runs.popleft())
            return
        run = self._active
        if run.ctx.cancelled:
            self._active = None
            run.ctx.stopped()
            return
        step = next(run.steps, None)
        if step is None:
            self._active = None
            if run.ctx.cancelled:
                run.ctx.stopped()
            else:
                run.ctx.done(run.run.progress())
            return
        run.ctx.report(step)

    def _start_run(self, ctx: JobContext, req: RunRequest) -> None:
        if ctx.cancelled:
            ctx.stopped()
            return
        if self._engine is None:
            ctx.fail(Failure(FailureKind.NO_MODEL, f"{NO_MODEL_TEXT}, then drop the images again."))
            return
        from vit_desktop.core.inference.loading import ModelChoice
        from vit_desktop.core.inference.runs import FolderRun

        library = self._open_library()
        try:
            folder_run = FolderRun(ModelChoice.of(self._engine, keys=library is not None), req.paths, req.options,
                                   cancel=ctx.token, library=library)
        except Cancelled:  # during the scan of a large folder
            ctx.stopped()
            return
        self._active = _ActiveRun(ctx, folder_run)
        # The scan's errors are the run's first step: the next event takes it, then the batches.
        self._step_inner()

    # -- prints (similar photos, duplicates, the map) -------------------------------------------

    def _step_gathering(self) -> None:
        """One step of the oldest gathering; it ends the job itself when it is through."""
        if not self._gathering:
            return
        ctx, steps = self._gathering[0]
        try:
            if ctx.cancelled:
                raise Cancelled("cancelled")
            if next(steps, StopIteration) is StopIteration:
                self._gathering.popleft()
        except Cancelled:
            self._gathering.popleft()
            steps.close()
            ctx.stopped()
        except BaseException as exc:
            self._gathering.popleft()
            steps.close()
            failure = Failure.of(exc)
            if failure.kind is FailureKind.INTERNAL:
                log.exception("gathering prints failed")
            ctx.fail(failure)

    def _gather(self, ctx: JobContext, req: PrintsRequest) -> Generator[None, None, None]:
        """The steps of a :class:`PrintsRequest`: a batch of features or hashes each, then ``then``."""
        from vit_desktop.core.inference.loading import ModelChoice
        from vit_desktop.core.inference.lookalikes import PrintsRun

        library = self._open_library()
        model = ModelChoice.of(self._engine, keys=library is not None) if req.features and self._engine else None
        run = PrintsRun(req.paths, model=model, hashes=req.hashes, library=library, cancel=ctx.token,
                        first=req.first)
        try:
            for progress in run.steps():
                ctx.report(progress)
                yield
            prints = run.prints()
        finally:
            run.close()
        yield  # what comes next may take a while too: a heatmap asked for meanwhile goes first
        value = req.then(prints, run.first, ctx.report, ctx.token)
        ctx.done(PrintsReply(value, from_library=run.features_from_library + run.hashes_from_library,
                             computed=run.classified + run.hashed, unreadable=tuple(run.unreadable.items())))

    # -- explain -------------------------------------------------------------------------------

    def _explain(self, req: ExplainRequest) -> HeatmapReply:
        if self._engine is None:
            raise VitDesktopError(f"{NO_MODEL_TEXT}.")
        heatmap = self._engine.explain(req.path, req.options, req.class_index, members=req.members)
        return HeatmapReply(req.path, heatmap)

    def release(self) -> None:
        """Close a half-streamed run (its decode pool joins) and drop the model.

        Only called once the thread has stopped, so nothing runs here concurrently.
        """
        run, self._active = self._active, None
        self._runs.clear()
        if run is not None:
            run.run.close()
        while self._gathering:
            self._gathering.popleft()[1].close()
        self._engine = None
        if self._library is not None:
            self._library.close()
            self._library = None


__all__ = ["ComputeWorker"]
