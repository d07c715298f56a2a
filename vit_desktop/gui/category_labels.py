"""My categories: the gallery re-labelled with names the user types, without classifying again.

Every result keeps the model's probabilities over its classes, so a category's score (the mass
under its classes, :class:`~vit_desktop.core.labels.categories.Categories`) is a sum away; clearing the
names gives the model's own top classes back the same way.
"""

from __future__ import annotations

import dataclasses

from PySide6.QtCore import QObject, Signal, Slot
from PySide6.QtWidgets import QDialog, QWidget

from vit_desktop.core.errors import VitDesktopError
from vit_desktop.core.inference import answers
from vit_desktop.core.inference.open_set import run_rule
from vit_desktop.core.inference.options import ClassifyOptions
from vit_desktop.core.labels.categories import Categories, hierarchy_for, no_hierarchy_reason, parse_names
from vit_desktop.gui.compute import Controller, LoadedModel
from vit_desktop.gui.results_model import ResultsModel
from vit_desktop.gui.view_state import ViewState


class CategoryLabeller(QObject):
    """Turns the names the user types into the view state's categories and re-labels results with them."""

    note = Signal(str)
    problem = Signal(str)
    hint = Signal(str)
    #: The categories' hint no longer holds (the names were cleared): the bar should not keep it.
    hint_withdrawn = Signal()
    #: The names box should read this (the names as edited in the coverage list).
    names_edited = Signal(str)

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
        self._update_rule()
        if categories is not None:
            covered = ", ".join(f"{n} ({len(m)} classes)" for n, m in zip(categories.names, categories.members))
            self.hint.emit(f"Sorted {relabelled} photos into {len(categories.names)} categories: {covered}. "
                           "\"Classes…\" shows and edits what each name covers.")
        else:
            self.hint_withdrawn.emit()
        what = "your categories" if categories is not None else "the model's classes"
        self.note.emit(f"{relabelled} photos labelled with {what}")
        return True

    @Slot(str)
    def edit_coverage(self, text: str) -> None:
        """Show what the names in ``text`` cover as a list to tick; OK puts the edited names in the
        box and sorts into them."""
        from vit_desktop.core.labels.categories import coverage
        from vit_desktop.gui.name_coverage import CoverageDialog

        names = parse_names(text)
        card = self._controller.current_card
        hierarchy = hierarchy_for(card) if card is not None else None
        if not names:
            self.hint.emit("Type the names of your categories first (\"dog, cat, car\"), then Classes… shows "
                           "what each covers.")
            return
        if card is None or hierarchy is None:
            reason = no_hierarchy_reason(card) if card is not None else "no model is loaded"
            self.hint.emit(f"Cannot show what the names cover: {reason}.")
            return
        try:
            covers = coverage(names, hierarchy)
        except VitDesktopError as exc:
            self.problem.emit(f"{exc}. Change the names and press Enter again.")
            return
        parent = self.parent()
        dialog = CoverageDialog(covers, hierarchy, card.labels, parent if isinstance(parent, QWidget) else None)
        if dialog.exec() == QDialog.DialogCode.Accepted:
            edited = ", ".join(dialog.lines())
            self.names_edited.emit(edited)
            self.apply(edited)

    @Slot(object)
    def _on_model_changed(self, loaded: LoadedModel) -> None:
        """A model without the categories' hierarchy drops them (its classes are its own)."""
        card = loaded.card
        if self._state.categories is not None and hierarchy_for(card) is None:
            self._state.set_categories(None)
            self.note.emit(f"{card.name} has classes of its own: back to its labels (categories need ImageNet's)")
        self._update_rule()

    def _update_rule(self) -> None:
        """The rule results are judged by now: the model's own, or named categories' mass."""
        card = self._controller.current_card
        if card is not None:
            self._state.set_rule(run_rule(card, ClassifyOptions(categories=self._state.categories)))

    def _relabel(self, categories: Categories | None) -> int:
        """Every result labelled again from its probabilities, exactly as a run with these
        categories would label it (the same answers, the same open-set scores)."""
        card = self._controller.current_card
        if card is None:
            return 0
        options = ClassifyOptions(top_k=self._top_k, categories=categories, threshold=self._state.threshold)
        rule = run_rule(card, options)
        relabelled = 0
        for r in self._results.results():
            p = r.probabilities
            if p is None or not r.ok or len(p) != card.num_classes:
                continue
            row = p[None, :]
            preds = answers.predictions(row, card.labels, options)[0]
            known = float(answers.known_scores(row, options)[0])
            # A class map explained a class of the old labelling: only rollout still holds.
            heatmap = r.heatmap if r.heatmap is not None and r.heatmap.class_index is None else None
            self._results.replace_result(dataclasses.replace(r, predictions=preds, heatmap=heatmap,
                                                             uncertain=known < rule.threshold, known_score=known))
            relabelled += 1
        return relabelled


__all__ = ["CategoryLabeller"]
