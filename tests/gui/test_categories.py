"""Sort into my categories (the names box) and "Use without training", in the window, with a tiny
model whose eight classes a tiny hierarchy groups into warm and cool."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.support import SUBTYPES, kept, save_tiny_model, tiny_hierarchy, write_image
from vit_desktop.core.types import Heatmap

MS = 60_000


@pytest.fixture
def colours_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    import vit_desktop.core.labels.categories as categories
    import vit_desktop.core.training as training
    import vit_desktop.gui.category_labels as sorting

    tree = tiny_hierarchy()

    def known(card):
        return tree if card.labels == tuple(SUBTYPES) else None

    monkeypatch.setattr(sorting, "hierarchy_for", known)
    monkeypatch.setattr(categories, "hierarchy_for", known)
    monkeypatch.setattr(training, "hierarchy_for", known)
    return save_tiny_model(tmp_path / "colours.safetensors", tuple(SUBTYPES), "colours")


def test_the_names_box_relabels_the_gallery_without_classifying_again(qtbot, make_window, colours_model,
                                                                        tmp_path: Path) -> None:
    w = make_window()
    with qtbot.waitSignal(w.controller.model_changed, timeout=MS):
        w.models.load_model(str(colours_model))
    images = [write_image(tmp_path / f"i{i}.png", seed=i) for i in range(3)]
    with qtbot.waitSignal(w.run_status.run_finished, timeout=MS):
        w.intake.add_paths([str(p) for p in images])
    before = {r.path: r for r in w.results_model.results()}
    runs: list[object] = []
    w.run_status.run_finished.connect(runs.append)
    w.pane.categories_edit.setText("warm, cool")
    w.pane.categories_edit.returnPressed.emit()
    after = w.results_model.results()
    assert runs == []  # nothing was classified again
    for r in after:
        assert {p.label for p in r.predictions} == {"warm", "cool"}
        p = before[r.path].probabilities
        assert p is not None
        scores = {pred.label: pred.score for pred in r.predictions}
        assert scores["warm"] == pytest.approx(float(p[:4].sum()), abs=1e-5)  # mass, not renormalised
        assert scores["cool"] == pytest.approx(float(p[4:].sum()), abs=1e-5)
    assert "Sorted 3 photos into 2 categories" in w.message_bar.text
    # The class map follows the named category.
    w.gallery.setCurrentIndex(w.proxy.index(0, 0))
    d = w.detail
    shown: list[Heatmap] = []
    d.heatmap_shown.connect(shown.append)
    d.bars.bars[0].click()
    qtbot.waitUntil(lambda: bool(shown), timeout=MS)
    assert shown[0].class_index == d.bars.bars[0].class_index
    assert np.isfinite(shown[0].grid).all()
    # A name nobody knows says so, with the nearest names, and changes nothing.
    w.pane.categories_edit.setText("wrm, cool")
    w.pane.categories_edit.returnPressed.emit()
    assert "nearest known names" in w.message_bar.text and "warm" in w.message_bar.text
    assert {p.label for p in w.results_model.results()[0].predictions} == {"warm", "cool"}
    # Empty: the model's own classes again.
    w.pane.categories_edit.clear()
    assert {p.label for p in w.results_model.results()[0].predictions} <= set(SUBTYPES)


def test_use_without_training_makes_a_model_from_the_names(qtbot, make_window, colours_model) -> None:
    from vit_desktop.gui.finetune.dialog import FinetuneDialog

    w = make_window()
    with qtbot.waitSignal(w.controller.model_changed, timeout=MS):
        w.models.load_model(str(colours_model))
    dialog = FinetuneDialog(w.controller, w, w.settings)
    qtbot.addWidget(dialog)
    assert dialog.labels.add_class("warm") and dialog.labels.add_class("nameless")
    assert "not a name the model knows" in dialog.labels.meaning_label.text()
    dialog.use_names()
    assert "'nameless' is not a name the model knows" in dialog.status_label.text()
    assert dialog.labels.rename_class("nameless", "cool")
    assert "means cool" in dialog.labels.meaning_label.text()
    with qtbot.waitSignal(dialog.trained, timeout=MS) as blocker:
        dialog.names_button.click()
    result = blocker.args[0]
    assert result.metrics.selection.head == "names" and result.card.labels == ("warm", "cool")
    assert "not validated" in dialog.status_label.text()
    assert dialog.use_button.isEnabled()


def test_what_a_name_covers_is_shown_and_unticking_a_class_edits_the_name(qtbot, make_window, colours_model,
                                                                          tmp_path: Path, monkeypatch) -> None:
    from PySide6.QtCore import Qt
    from PySide6.QtWidgets import QDialog

    from vit_desktop.gui.name_coverage import CoverageDialog

    w = make_window()
    with qtbot.waitSignal(w.controller.model_changed, timeout=MS):
        w.models.load_model(str(colours_model))
    with qtbot.waitSignal(w.run_status.run_finished, timeout=MS):
        w.intake.add_paths([str(write_image(tmp_path / f"i{i}.png", seed=i)) for i in range(3)])
    seen: list[list[str]] = []

    def untick_the_first(dialog: CoverageDialog) -> int:
        warm = kept(dialog.tree.topLevelItem(0))
        seen.append([kept(warm.child(i)).text(0) for i in range(warm.childCount())])
        kept(warm.child(0)).setCheckState(0, Qt.CheckState.Unchecked)
        return int(QDialog.DialogCode.Accepted)

    monkeypatch.setattr(CoverageDialog, "exec", untick_the_first)
    w.pane.categories_edit.setText("warm, cool")
    w.pane.coverage_button.click()
    assert seen == [list(SUBTYPES[:4])]  # "warm" offers its four classes, by their labels
    text = w.pane.categories_edit.text()
    assert text.startswith("warm = warm - ") and text.endswith(", cool")
    categories = w.view_state.categories
    assert categories is not None and len(categories.members[0]) == 3 and len(categories.members[1]) == 4
    assert "Sorted 3 photos into 2 categories" in w.message_bar.text
    # Clearing the names takes their hint away with them.
    w.pane.categories_edit.clear()
    assert w.view_state.categories is None and w.message_bar.text == ""


def test_after_use_now_training_starts_from_the_base_and_names_are_read_against_it(qtbot, make_window,
                                                                                   colours_model) -> None:
    """"Use now" made the fine-tuned model the dialog's "Start from": retraining stacked on it, and
    "warm" became a name the model does not know."""
    from vit_desktop.gui.finetune.dialog import FinetuneDialog

    w = make_window()
    with qtbot.waitSignal(w.controller.model_changed, timeout=MS):
        w.models.load_model(str(colours_model))
    dialog = FinetuneDialog(w.controller, w, w.settings)
    qtbot.addWidget(dialog)
    assert dialog.labels.add_class("warm") and dialog.labels.add_class("cool")
    with qtbot.waitSignal(dialog.trained, timeout=MS):
        dialog.names_button.click()
    with qtbot.waitSignal(w.controller.model_changed, timeout=MS):
        dialog.use_button.click()
    assert w.controller.current_card.labels == ("warm", "cool")  # the window classifies with the new model
    assert dialog.base_label.text() == "colours"
    dialog.labels.class_list.setCurrentRow(0)
    assert "means warm" in dialog.labels.meaning_label.text()
    # Trained again, the new model starts from the base (whose names these are), loaded for the run.
    with qtbot.waitSignal(dialog.trained, timeout=MS) as blocker:
        dialog.names_button.click()
    again = blocker.args[0]
    assert again.card.description.startswith("fine-tuned from colours (")
    assert dict(again.card.extra)["base_model"] == str(colours_model)
    assert w.controller.current_card.labels == ("warm", "cool")  # the window's model is left as it was
