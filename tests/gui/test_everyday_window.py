"""The window as people use it: help that says what the keys are and where files live, model folders
and recently used models in the Model menu, a gallery that keeps its place, captioned overlays."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image
from PySide6.QtWidgets import QFileDialog, QMessageBox

from tests.support import classify, load, write_image
from vit_desktop.gui.actions import ACTIONS
from vit_desktop.gui.help_dialogs import file_rows, shortcut_rows

MS = 60_000






def test_help_lists_every_shortcut_and_where_files_live(qtbot, make_window) -> None:
    from vit_desktop.core.library.store import library_path

    w = make_window()
    rows = dict(shortcut_rows())
    with_keys = [s for s in ACTIONS if s.shortcut is not None]
    assert len(rows) >= len(with_keys) - 1  # Ctrl+C and Ctrl+V style keys are listed once each
    assert rows["Ctrl+R"].startswith("Re-classify") and rows["Esc"] == "Cancel" and "F2" in rows
    where = dict(file_rows(w.settings.qsettings))
    assert where["The library of results and features"] == str(library_path())
    assert where["Window settings"] == w.settings.qsettings.fileName()
    assert [a.text() for a in w.menuBar().actions()[-1].menu().actions() if a.text()][:2] == \
        ["&Keyboard shortcuts", "&Where files live"]


def test_a_model_folder_opens_and_models_used_lately_are_offered(qtbot, make_window, model_a, model_b,
                                                                 tmp_path: Path, monkeypatch) -> None:
    folder = tmp_path / "hub"
    folder.mkdir()
    (folder / "model.safetensors").write_bytes(Path(model_b).read_bytes())
    monkeypatch.setattr(QFileDialog, "getExistingDirectory", lambda *a, **k: str(folder))
    w = make_window()
    with qtbot.waitSignal(w.controller.model_changed, timeout=MS) as blocker:
        w.commands.open_model_folder.trigger()
    assert blocker.args[0].card.name == "beta"
    load(qtbot, w, model_a)
    w.model_menu.rebuild()
    recent = [a.data() for a in w.model_menu.menu.actions() if a.data() in (str(folder), str(model_a))]
    assert recent == [str(model_a), str(folder)]  # newest first
    assert w.settings.recent_models[:2] == [str(model_a), str(folder)]


def test_the_gallery_keeps_the_same_photo_across_filter_and_sort(qtbot, make_window, model_a,
                                                                 tmp_path: Path) -> None:
    w = make_window()
    load(qtbot, w, model_a)
    for i in range(30):
        write_image(tmp_path / f"p{i:02d}.png", seed=i)
    classify(qtbot, w, tmp_path)
    w.gallery.setCurrentIndex(w.proxy.index(17, 0))
    path = w.gallery.currentIndex().data(0)
    w.pane.filter_edit.setText("p1")  # p10..p19 remain, p17 among them
    assert w.gallery.currentIndex().data(0) == path == "p17.png"
    assert w.gallery.selectionModel().isSelected(w.gallery.currentIndex())
    assert "10 of 30 shown" in w.pane.summary.text()
    w.pane.filter_edit.clear()
    w.pane.sort_combo.setCurrentIndex(w.pane.sort_combo.count() - 1)
    assert w.gallery.currentIndex().data(0) == "p17.png"
    assert w.gallery.verticalScrollBar().value() == 0  # a new order starts at the top


def test_overlays_can_carry_a_caption_and_class_folders_are_counted(qtbot, make_window, model_a,
                                                                    tmp_path: Path, monkeypatch) -> None:
    w = make_window()
    load(qtbot, w, model_a)
    img = write_image(tmp_path / "o.png", size=(200, 120))
    with qtbot.waitSignal(w.detail.heatmap_shown, timeout=MS):
        classify(qtbot, w, img)
    w.commands.overlay_caption.trigger()
    assert w.settings.overlay_caption
    out = tmp_path / "o-overlay.png"
    d = w.detail
    with qtbot.waitSignal(w.exporter.overlay_saved, timeout=MS):
        w.exporter.export_overlay(d.result, d.current_heatmap, w.view_state.overlay, out)
    saved = Image.open(out)
    assert saved.width == 200 and saved.height > 120  # the strip under the photo
    strip = saved.crop((0, 121, 200, saved.height)).convert("L")
    assert np.asarray(strip).min() < 128  # text drawn on it
    asked: list[str] = []
    monkeypatch.setattr(QFileDialog, "getExistingDirectory", lambda *a, **k: str(tmp_path / "sorted"))

    def question(_w, _t, text: str) -> QMessageBox.StandardButton:
        asked.append(text)
        return QMessageBox.StandardButton.No

    monkeypatch.setattr(QMessageBox, "question", question)
    w.exporter.copy_into_folders_dialog(w.results_model.results())
    assert asked and "into 1 folder, one per predicted class" in asked[0]
