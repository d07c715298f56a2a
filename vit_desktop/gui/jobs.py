"""One handle per piece of background work, for thread-pool jobs and compute-thread requests alike.

The shape is superqt's worker: a :class:`Job` has its own signals (``progressed``, ``returned``,
``errored``, ``finished``) instead of one broadcast signal carrying ids that every listener
filters. Its signals are only ever emitted on the GUI thread: the side doing the work reports
through a :class:`JobContext`, which posts events to the :class:`JobBoard` (a GUI-thread object)
through a queued signal, and the board emits them on the right job. Whoever asked for the work
connects to the job's signals like to any widget's.

Rules kept here so that nobody re-implements them:

* every job ends exactly once, with ``finished(Outcome)`` as its last signal; after that nothing
  more is delivered for it;
* cancelling is an outcome (:attr:`Outcome.CANCELLED`), never a message to compare by text, and a
  failure is a :class:`~vit_desktop.core.errors.Failure` (a kind and one line), never text searched
  for a word;
* newest wins per channel: a job created on a channel supersedes the one before it there, which
  is cancelled and finishes at once with :attr:`Outcome.SUPERSEDED` (its late replies are dropped).
"""

from __future__ import annotations

import enum
import itertools
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from PySide6.QtCore import QObject, QRunnable, QThreadPool, Signal, Slot

from vit_desktop.core.errors import Cancelled, CancelToken, Failure, FailureKind

log = logging.getLogger(__name__)


class _Event(enum.Enum):
    """What the working side posts to the board."""

    PROGRESS = "progress"
    RETURN = "return"
    ERROR = "error"
    CANCELLED = "cancelled"


class Outcome(enum.Enum):
    DONE = "done"
    CANCELLED = "cancelled"
    FAILED = "failed"
    #: A newer job on the same channel took its place.
    SUPERSEDED = "superseded"


class Job(QObject):
    """The GUI thread's handle on one background job. Signals fire on the GUI thread only."""

    #: A progress report; its type is the job's own (bytes done, a batch of results...).
    progressed = Signal(object)
    #: The job's value, when it completed.
    returned = Signal(object)
    #: Why it failed: a :class:`~vit_desktop.core.errors.Failure`.
    errored = Signal(object)
    #: Always last, exactly once: an :class:`Outcome`.
    finished = Signal(object)

    def __init__(self, job_id: int, name: str, channel: str | None) -> None:
        super().__init__()
        self.id = job_id
        self.name = name
        self.channel = channel
        self.token = CancelToken()
        self.outcome: Outcome | None = None
        #: The last progress report (then the value it returned), for whoever reads it late.
        self.latest: object = None

    @property
    def running(self) -> bool:
        return self.outcome is None

    def cancel(self) -> None:
        """Ask the job to stop at its next cancel point; it finishes with CANCELLED when it does."""
        self.token.cancel()

    def __repr__(self) -> str:
        return f"<Job {self.id} {self.name} {self.outcome.value if self.outcome else 'running'}>"


@dataclass(frozen=True)
class JobContext:
    """What the working side holds: report progress, see cancellation, end the job. Thread-safe."""

    job_id: int
    token: CancelToken
    _post: Callable[[int, _Event, object], None]

    @property
    def cancelled(self) -> bool:
        return self.token.cancelled

    def report(self, value: object) -> None:
        self._post(self.job_id, _Event.PROGRESS, value)

    def done(self, value: object = None) -> None:
        self._post(self.job_id, _Event.RETURN, value)

    def fail(self, failure: Failure) -> None:
        self._post(self.job_id, _Event.ERROR, failure)

    def stopped(self) -> None:
        """The job noticed its token and stopped."""
        self._post(self.job_id, _Event.CANCELLED, None)


def execute(ctx: JobContext, fn: Callable[[], object]) -> None:
    """Run ``fn`` and end the job by its outcome; nothing escapes (a UI stuck in "busy" is a bug)."""
    try:
        ctx.token.raise_if_cancelled()
        value = fn()
    except Cancelled:
        ctx.stopped()
    except BaseException as exc:
        failure = Failure.of(exc)
        if failure.kind is FailureKind.INTERNAL:  # a bug: the traceback goes to the log
            log.exception("job %d failed", ctx.job_id)
        else:  # expected: the message says what to do
            log.warning("job %d failed: %s", ctx.job_id, failure.message)
        ctx.fail(failure)
    else:
        ctx.done(value)


class JobBoard(QObject):
    """Makes jobs and delivers their events on the GUI thread. Lives on the GUI thread."""

    _event = Signal(int, object, object)  # job id, _Event, payload: emitted from any thread

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._ids = itertools.count(1)
        self._jobs: dict[int, Job] = {}
        self._channels: dict[str, Job] = {}
        # Emitted on a worker thread, received here: Qt queues it to this object's (GUI) thread.
        self._event.connect(self._deliver)

    def create(self, name: str, *, channel: str | None = None) -> tuple[Job, JobContext]:
        """A new job and the context its worker reports through; it supersedes ``channel``'s last job."""
        job = Job(next(self._ids), name, channel)
        if channel is not None:
            previous = self._channels.get(channel)
            self._channels[channel] = job
            if previous is not None and previous.running:
                previous.cancel()
                self._end(previous, Outcome.SUPERSEDED)
        self._jobs[job.id] = job
        return job, JobContext(job.id, job.token, self._event.emit)

    def latest(self, channel: str) -> Job | None:
        """The channel's newest job while it runs."""
        job = self._channels.get(channel)
        return job if job is not None and job.running else None

    def running(self) -> list[Job]:
        return list(self._jobs.values())

    def abandon(self, job: Job) -> None:
        """Cancel ``job`` and end it now (CANCELLED): nothing more it sends is delivered, so its
        results cannot land after the caller moved on (a list that was cleared)."""
        job.cancel()
        self._end(job, Outcome.CANCELLED)

    def cancel_all(self) -> None:
        for job in self._jobs.values():
            job.cancel()

    @Slot(int, object, object)
    def _deliver(self, job_id: int, event: _Event, payload: object) -> None:
        job = self._jobs.get(job_id)
        if job is None:  # finished or superseded already: late news is dropped
            return
        if event is _Event.PROGRESS:
            job.latest = payload
            job.progressed.emit(payload)
        elif event is _Event.RETURN:
            job.latest = payload
            job.returned.emit(payload)
            self._end(job, Outcome.DONE)
        elif event is _Event.ERROR:
            job.errored.emit(payload)
            self._end(job, Outcome.FAILED)
        elif event is _Event.CANCELLED:
            self._end(job, Outcome.CANCELLED)

    def _end(self, job: Job, outcome: Outcome) -> None:
        self._jobs.pop(job.id, None)
        if job.outcome is None:
            job.outcome = outcome
            job.finished.emit(outcome)


class _PoolRunnable(QRunnable):
    def __init__(self, ctx: JobContext, fn: Callable[[JobContext], object]) -> None:
        super().__init__()
        self._ctx = ctx
        self._fn = fn

    def run(self) -> None:
        execute(self._ctx, lambda: self._fn(self._ctx))


def run_in_pool(board: JobBoard, pool: QThreadPool, name: str, fn: Callable[[JobContext], Any]) -> Job:
    """Run ``fn(context)`` on ``pool``: small jobs that need no model (listing, saving, copying)."""
    job, ctx = board.create(name)
    pool.start(_PoolRunnable(ctx, fn))
    return job


__all__ = ["Job", "JobBoard", "JobContext", "Outcome", "execute", "run_in_pool"]
