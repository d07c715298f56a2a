"""The window's state lives in one observable place: what changes it, whoever it is, shows everywhere."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

from tests.support import load, write_image
from vit_desktop.core.types import ExplainOptions


def test_the_overlay_set_anywhere_moves_the_controls_and_is_remembered(qtbot, make_window) -> None:
    w = make_window()
    state, d = w.view_state, w.detail
    state.set_overlay(dataclasses.replace(state.overlay, opacity=0.2, colormap="jet", map_method="rollout",
                                          head_fusion="max", discard_ratio=0.3))
    assert d.opacity.value() == 20 and d.colormap.currentText() == "jet"
    assert d.map_kind.currentData() == "rollout" and d.fusion.currentText() == "max" and d.discard.value() == 30
    assert d.fusion.isEnabled()  # rollout's own controls are live for rollout
    assert w.settings.overlay() == state.overlay
    # A control writes the state; runs take their map from it.
    d.map_kind.setCurrentIndex(d.map_kind.findData("class"))
    assert state.overlay.map_method == "class" and not d.fusion.isEnabled()
    assert state.run_explain is None  # maps in runs are off: a photo's map comes when it is shown
    w.commands.class_maps_in_runs.trigger()
    assert state.run_explain == ExplainOptions("max", 0.3, "class")


def test_results_replaced_in_place_are_counted_again(qtbot, make_window, model_a, tmp_path: Path) -> None:
    """A re-classified folder replaces its rows in place: the footer's counts must follow (they
    stayed at the first run's "0 uncertain" with orange cards on screen)."""
    w = make_window()
    load(qtbot, w, model_a)
    for i in range(4):
        write_image(tmp_path / "p" / f"{i}.png", seed=i)
    w.view_state.set_threshold(0.0)
    with qtbot.waitSignal(w.run_status.run_finished, timeout=60000):
        w.intake.add_paths([str(tmp_path / "p")])
    assert "4 images · 0 uncertain" in w.pane.summary.text()
    # What a re-classification delivers: the same photos, three of them uncertain now.
    again = [dataclasses.replace(r, uncertain=i < 3) for i, r in enumerate(w.results_model.results())]
    w.pane.add_results(again)
    qtbot.waitUntil(lambda: "4 images · 3 uncertain" in w.pane.summary.text(), timeout=2000)
    # The threshold, set anywhere, marks the listed results again and moves its box.
    w.view_state.set_threshold(1.0)
    assert "4 images · 4 uncertain" in w.pane.summary.text() and w.pane.threshold_spin.value() == 100


def test_clearing_during_a_run_keeps_the_list_empty(qtbot, make_window, model_a, many_images) -> None:
    w = make_window()
    load(qtbot, w, model_a)
    folder = many_images(64)

    def clear_on_first(*_args: object) -> None:
        if w.results_model.rowCount():
            w.commands.clear.trigger()

    w.results_model.rowsInserted.connect(clear_on_first)
    w.intake.add_paths([str(folder)])
    # Hold the GUI thread while the compute thread classifies: several batches are then waiting to
    # be delivered when the first one clears the list, as on a busy desktop.
    time.sleep(1.0)
    qtbot.waitUntil(lambda: not w.controller.busy, timeout=60000)
    # A task queued now returns after anything the compute thread sent before it: a batch that was
    # under way when the list was cleared would have arrived by then.
    with qtbot.waitSignal(w.controller.run_task(lambda engine, report, cancel: None).returned, timeout=60000):
        pass
    assert w.results_model.rowCount() == 0
    assert "Results cleared." in w.run_status.status_label.text()
    assert not w.run_status.progress.isVisible()
