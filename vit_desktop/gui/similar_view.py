"""Find similar: the gallery ordered by how alike the model finds each photo to one of them.

:class:`SimilarSearch` gathers the listed photos' features on the compute thread (from the library
where they are stored, which they are once classified) and scores each against the photo asked
about (:func:`~vit_desktop.core.library.similar.similar_to`); the result is the view state's
"similar to" order, which the gallery pane sorts by and whose score each card shows.
:class:`SimilarStrip` says which photo the order is about, and leads back to the usual order.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from PySide6.QtCore import QObject, Signal, Slot
from PySide6.QtWidgets import QFrame, QHBoxLayout, QLabel, QPushButton, QWidget

from vit_desktop.core.errors import CancelToken, Failure
from vit_desktop.gui.plain_text import as_plain, plain
from vit_desktop.gui.results_model import ResultsModel, SimilarOrder

if TYPE_CHECKING:
    from vit_desktop.core.library.prints import PhotoPrints
    from vit_desktop.gui.compute import Controller
    from vit_desktop.gui.jobs import Job
    from vit_desktop.gui.run_status import RunStatus
    from vit_desktop.gui.view_state import ViewState

#: The channel of "Find similar" jobs: a newer search supersedes the one still going.
CHANNEL = "similar"


def similar_order(prints: PhotoPrints, first: str | None, _report: Callable[[object], None],
                  _cancel: CancelToken) -> SimilarOrder | None:
    """Every photo's likeness to ``first`` (runs on the compute thread); None when ``first`` has no
    features (it could not be read)."""
    from vit_desktop.core.library.similar import similar_to

    if first is None or first not in prints:
        return None
    scores = {n.path: n.score for n in similar_to(prints, first, top_k=len(prints))}
    scores[first] = 1.0
    return SimilarOrder(first, scores)


class SimilarSearch(QObject):
    """Runs "Find similar" for a photo of the gallery and puts the answer into the view state."""

    #: A short note for the status bar.
    note = Signal(str)
    #: A problem the user must know about (one line).
    problem = Signal(str)

    def __init__(self, controller: Controller, model: ResultsModel, state: ViewState, status: RunStatus,
                 parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._controller = controller
        self._model = model
        self._state = state
        self._status = status
        self.job: Job | None = None
        # Another model's features say other things: its scores would not be this order's.
        controller.model_changed.connect(self._on_model_changed)

    @Slot(object)
    def _on_model_changed(self, _loaded: object) -> None:
        self._state.set_similar(None)

    def find(self, path: str | None) -> Job | None:
        """Order the listed photos by likeness to the one at ``path``."""
        if path is None:
            self.note.emit("Select a photo first: similar photos are found for the one selected.")
            return None
        paths = [r.path for r in self._model.results() if r.ok]
        if path not in paths:
            self.problem.emit(f"{Path(path).name} could not be read: it has no features to compare.")
            return None
        job = self._controller.gather_prints(paths, similar_order, features=True, hashes=False, first=path,
                                             channel=CHANNEL)
        job.returned.connect(self._on_found)
        job.errored.connect(self._on_failed)
        self._status.track_task(job, f"Finding photos like {Path(path).name}")
        self.job = job
        return job

    @Slot(object)
    def _on_found(self, reply: object) -> None:
        order = getattr(reply, "value", None)
        if not isinstance(order, SimilarOrder):
            self.problem.emit("That photo could not be read again: no similar photos were found.")
            return
        self._state.set_similar(order)
        others = len(order.scores) - 1
        self.note.emit(f"{others} photo{'s' if others != 1 else ''} ordered by likeness to "
                       f"{Path(order.query).name} (1.00: the same to the model).")

    @Slot(object)
    def _on_failed(self, failure: Failure) -> None:
        self.problem.emit(f"Similar photos could not be found: {failure.message}")


class SimilarStrip(QFrame):
    """The line over the gallery while it is in the "similar to" order, with the way back."""

    def __init__(self, state: ViewState, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("similarStrip")
        self._state = state
        self.label = QLabel("", self)
        plain(self.label)  # a file name: never HTML
        self.back_button = QPushButton("Show all", self)
        self.back_button.setToolTip("Leave the similar order: the gallery sorts as chosen before (Esc)")
        self.back_button.clicked.connect(self.back)
        row = QHBoxLayout(self)
        row.setContentsMargins(6, 2, 0, 2)
        row.addWidget(self.label, 1)
        row.addWidget(self.back_button)
        state.similar_changed.connect(self._on_changed)
        self.hide()

    @Slot()
    def back(self) -> None:
        self._state.set_similar(None)

    @Slot(object)
    def _on_changed(self, order: SimilarOrder | None) -> None:
        if order is None:
            self.hide()
            return
        self.label.setText(f"Photos like {Path(order.query).name}, most alike first; each card says how alike "
                           "(1.00: the same to the model).")
        self.label.setToolTip(as_plain(order.query))
        self.show()


__all__ = ["CHANNEL", "SimilarSearch", "SimilarStrip", "similar_order"]
