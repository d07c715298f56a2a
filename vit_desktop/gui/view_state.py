"""What the window shows and how, in one observable place (napari's way: models with events).

The overlay (opacity, colour map, which map, head fusion, discard ratio), the "uncertain below"
threshold, the user's categories and whether folder runs compute class maps live here. Controls
write it; everything that depends on it listens to its signals instead of reading another
widget's sliders. It remembers itself in the settings as it changes.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from PySide6.QtCore import QObject, Signal

from vit_desktop.core.types import ExplainOptions
from vit_desktop.gui.settings import AppSettings, OverlaySettings

if TYPE_CHECKING:
    from vit_desktop.core.labels.categories import Categories


class ViewState(QObject):
    """One instance per window. Each setter emits its signal only when the value really changed."""

    #: The overlay settings changed: an :class:`OverlaySettings`.
    overlay_changed = Signal(object)
    #: The "uncertain below" threshold changed: a fraction in [0, 1].
    threshold_changed = Signal(float)
    #: The categories results are labelled with changed: a Categories, or None for the model's classes.
    categories_changed = Signal(object)
    #: Whether folder runs compute every photo's class map changed.
    class_maps_in_runs_changed = Signal(bool)

    def __init__(self, settings: AppSettings, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._settings = settings
        self._overlay = settings.overlay()
        self._threshold = settings.threshold
        self._class_maps_in_runs = settings.class_maps_in_runs
        self._categories: Categories | None = None

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
    def run_explain(self) -> ExplainOptions:
        """The map a folder run computes with each photo: rollout comes free with classification;
        class maps need a backward pass, so runs compute them only when asked to."""
        opts = self.explain
        if opts.class_specific and not self._class_maps_in_runs:
            return dataclasses.replace(opts, method="rollout")
        return opts

    # -- classification ------------------------------------------------------------------------

    @property
    def threshold(self) -> float:
        return self._threshold

    def set_threshold(self, fraction: float) -> None:
        if fraction != self._threshold:
            self._threshold = fraction
            self._settings.threshold = fraction
            self.threshold_changed.emit(fraction)

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


__all__ = ["ViewState"]
