"""What the window shows and how, in one observable place (napari's way: models with events).

The overlay (opacity, colour map, which map, head fusion, discard ratio), the "uncertain below"
threshold, the user's categories and whether folder runs compute class maps live here. Controls
write it; everything that depends on it listens to its signals instead of reading another
widget's sliders. It remembers itself in the settings as it changes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from PySide6.QtCore import QObject, Signal

from vit_desktop.core.types import BASE_RULE, ExplainOptions, OpenSetRule
from vit_desktop.gui.settings import AppSettings, OverlaySettings

if TYPE_CHECKING:
    from vit_desktop.core.labels.categories import Categories
    from vit_desktop.gui.results_model import SimilarOrder


#: (key, menu text, tooltip): the maps the detail panel offers, the default first.
MAP_KINDS: tuple[tuple[str, str, str], ...] = (
    ("class", "Class map",
     "What the answer rests on: gradient-weighted rollout for the class shown (click a bar for another class)"),
    ("refined", "Class map, refined",
     "A class map in two passes: the second finds what the answer still rests on once the strongest "
     "evidence is removed. More faithful; twice the time"),
    ("rollout", "Attention rollout", "Where the model looked, whatever it answered: the same for every class"),
)


class ViewState(QObject):
    """One instance per window. Each setter emits its signal only when the value really changed."""

    #: The overlay settings changed: an :class:`OverlaySettings`.
    overlay_changed = Signal(object)
    #: The "uncertain below" threshold changed: a fraction in (0, 1], or None for the model's own rule.
    threshold_changed = Signal(object)
    #: The open-set rule results are judged by when no threshold is set changed: an OpenSetRule.
    rule_changed = Signal(object)
    #: The categories results are labelled with changed: a Categories, or None for the model's classes.
    categories_changed = Signal(object)
    #: Whether folder runs compute every photo's class map changed.
    class_maps_in_runs_changed = Signal(bool)
    #: The gallery's "similar to" order changed: a SimilarOrder, or None for the usual order.
    similar_changed = Signal(object)

    def __init__(self, settings: AppSettings, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._settings = settings
        self._overlay = settings.overlay()
        self._threshold = settings.threshold
        self._class_maps_in_runs = settings.class_maps_in_runs
        self._categories: Categories | None = None
        self._rule: OpenSetRule = BASE_RULE
        self._similar: SimilarOrder | None = None

    # -- the overlay ---------------------------------------------------------------------------

    @property
    def overlay(self) -> OverlaySettings:
        return self._overlay

    def set_overlay(self, overlay: OverlaySettings) -> None:
        if overlay != self._overlay:
            self._overlay = overlay
            self._settings.set_overlay(overlay)
            self.overlay_changed.emit(overlay)

    @property
    def explain(self) -> ExplainOptions:
        """The map the detail view shows, as the engine is asked for it."""
        o = self._overlay
        return ExplainOptions(head_fusion=o.head_fusion, discard_ratio=o.discard_ratio, method=o.map_method)

    @property
    def run_explain(self) -> ExplainOptions | None:
        """The map a folder run computes with each photo: none unless asked to ("Class maps in
        folder runs"); the detail view computes the shown photo's map when it is selected, as for
        answers read from the library. Even rollout is not free: computing it with every photo
        made a DeiT-Tiny folder run on 2 cores 18 % slower than the command line's
        (bench/bench_gui_latency.py --cli)."""
        return self.explain if self._class_maps_in_runs else None

    # -- classification ------------------------------------------------------------------------

    @property
    def threshold(self) -> float | None:
        """The user's "uncertain below" score; None: the model's own rule decides (:attr:`rule`)."""
        return self._threshold

    def set_threshold(self, fraction: float | None) -> None:
        if fraction != self._threshold:
            self._threshold = fraction
            self._settings.threshold = fraction
            self.threshold_changed.emit(fraction)

    @property
    def rule(self) -> OpenSetRule:
        """What makes a result "none of these" (or "not sure") for the model in use and the
        categories: its own calibrated rule, named categories' mass, or the default."""
        return self._rule

    def set_rule(self, rule: OpenSetRule) -> None:
        if rule != self._rule:
            self._rule = rule
            self.rule_changed.emit(rule)

    def verdict(self) -> str:
        """What an uncertain result is called now: "none of these", "not sure", or with a
        threshold of the user's, "uncertain"."""
        return "uncertain" if self._threshold is not None else self._rule.verdict

    def why_uncertain(self, known_score: float | None, best: float) -> str:
        """Why a result is (or is not) uncertain, in a few words."""
        if self._threshold is not None:
            side = "under" if best < self._threshold else "at or above"
            return f"best score {best:.0%}, {side} your {self._threshold:.0%}"
        return self._rule.explain(known_score)

    @property
    def categories(self) -> Categories | None:
        return self._categories

    def set_categories(self, categories: Categories | None) -> None:
        if categories is not self._categories:
            self._categories = categories
            self.categories_changed.emit(categories)

    @property
    def class_maps_in_runs(self) -> bool:
        return self._class_maps_in_runs

    def set_class_maps_in_runs(self, on: bool) -> None:
        if on != self._class_maps_in_runs:
            self._class_maps_in_runs = on
            self._settings.class_maps_in_runs = on
            self.class_maps_in_runs_changed.emit(on)

    # -- the gallery's order -------------------------------------------------------------------

    @property
    def similar(self) -> SimilarOrder | None:
        """The photos ordered by likeness to one of them ("Find similar"); None: the usual order."""
        return self._similar

    def set_similar(self, order: SimilarOrder | None) -> None:
        if order is not self._similar:
            self._similar = order
            self.similar_changed.emit(order)


__all__ = ["MAP_KINDS", "ViewState"]
