"""My categories: the gallery re-labelled with names the user types, without classifying again.

Every result keeps the model's probabilities over its classes, so a category's score (the mass
under its classes, :class:`~vit_desktop.core.labels.categories.Categories`) is a sum away; clearing the
names gives the model's own top classes back the same way.
"""

from __future__ import annotations

import dataclasses

from PySide6.QtCore import QObject, Signal, Slot

from vit_desktop.core.errors import VitDesktopError
from vit_desktop.core.labels.categories import Categories, hierarchy_for, no_hierarchy_reason, parse_names
from vit_desktop.core.types import Prediction
from vit_desktop.gui.compute import Controller, LoadedModel
from vit_desktop.gui.results_model import ResultsModel
from vit_desktop.gui.view_state import ViewState


class CategoryLabeller(QObject):
    """Turns the names the user types into the view state's categories and re-labels results with them."""

    note = Signal(str)
    problem = Signal(str)
    hint = Signal(str)

    def __init__(self, results: ResultsModel, controller: Controller, state: ViewState, top_k: int,
                 parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._results = results
        self._controller = controller
        self._state = state
        self._top_k = top_k
        controller.model_changed.connect(self._on_model_changed)

    @Slot(str)
    def apply(self, text: str) -> bool:
        """Label every result with the categories named in ``text`` ("" for the model's own classes)."""
        names = parse_names(text)
        categories = None
        if names:
            card = self._controller.current_card
            hierarchy = hierarchy_for(card) if card is not None else None
            if hierarchy is None:
                reason = no_hierarchy_reason(card) if card is not None else "no model is loaded"
                self.hint.emit(f"Cannot sort into categories: {reason}.")
                return False
            try:
                categories = Categories.from_names(names, hierarchy)
            except VitDesktopError as exc:
                self.problem.emit(f"{exc}. Change the names and press Enter again.")
                return False
        relabelled = self._relabel(categories)
        self._state.set_categories(categories)
        if categories is not None:
            meanings = ", ".join(f"{n} = {m}" for n, m in zip(categories.names, categories.meanings))
            self.hint.emit(f"Sorted {relabelled} photos into {len(categories.names)} categories ({meanings}). "
                           + " ".join(categories.notes))
        what = "your categories" if categories is not None else "the model's classes"
        self.note.emit(f"{relabelled} photos labelled with {what}")
        return True

    @Slot(object)
    def _on_model_changed(self, loaded: LoadedModel) -> None:
        """A model without the categories' hierarchy drops them (its classes are its own)."""
        card = loaded.card
        if self._state.categories is None or hierarchy_for(card) is not None:
            return
        self._state.set_categories(None)
        self.note.emit(f"{card.name} has classes of its own: back to its labels (categories need ImageNet's)")

    def _relabel(self, categories: Categories | None) -> int:
        card = self._controller.current_card
        labels = card.labels if card is not None else ()
        threshold = self._state.threshold
        relabelled = 0
        for r in self._results.results():
            p = r.probabilities
            if p is None or not r.ok or (categories is None and len(p) != len(labels)):
                continue
            if categories is not None:
                preds = categories.predictions(p, self._top_k)
            else:
                order = p.argsort()[::-1][: self._top_k]
                preds = tuple(Prediction(labels[i], int(i), float(p[i])) for i in order)
            # A class map explained a class of the old labelling: only rollout still holds.
            heatmap = r.heatmap if r.heatmap is not None and r.heatmap.class_index is None else None
            self._results.replace_result(dataclasses.replace(r, predictions=preds, heatmap=heatmap,
                                                             uncertain=preds[0].score < threshold))
            relabelled += 1
        return relabelled


__all__ = ["CategoryLabeller"]
