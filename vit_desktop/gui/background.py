"""Small jobs that do not need the model (listing models, saving an overlay, copying files).

They run on a ``QThreadPool`` so that they neither stall the GUI thread nor wait behind a long
folder run on the compute thread. The result comes back through a GUI-thread ``QObject``'s
signal, so receivers are ordinary ``@Slot`` methods on the GUI thread.
"""

from __future__ import annotations

import logging
import traceback
from typing import Callable

from PySide6.QtCore import QObject, QRunnable, QThreadPool, Signal

from vit_desktop.core.types import CancelToken

log = logging.getLogger(__name__)


class Job(QObject):
    """One background call. Connect ``finished``/``failed`` before calling :meth:`start`."""

    finished = Signal(object)
    failed = Signal(str)
    progress_changed = Signal(int, int)

    def __init__(self, fn: Callable[["Job"], object], parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._fn = fn
        self.cancel = CancelToken()

    def report(self, done: int, total: int) -> None:
        """Callable from the pool thread: queued to the GUI thread."""
        self.progress_changed.emit(done, total)

    def start(self, pool: QThreadPool) -> None:
        pool.start(_JobRunnable(self))


class _JobRunnable(QRunnable):
    def __init__(self, job: Job) -> None:
        super().__init__()
        self._job = job

    def run(self) -> None:
        try:
            value = self._job._fn(self._job)
        except Exception as exc:  # noqa: BLE001 - reported to the window, never lost
            log.error("background job failed:\n%s", traceback.format_exc())
            text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            self._job.failed.emit(text)
            return
        self._job.finished.emit(value)


__all__ = ["Job"]
