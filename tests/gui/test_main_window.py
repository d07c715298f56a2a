"""The main window end to end, offscreen, with tiny models saved to disk and generated images."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from PySide6.QtCore import QMimeData, QUrl
from PySide6.QtGui import QColor, QImage

from tests.support import load, write_image
from vit_desktop.gui.jobs import Outcome
from vit_desktop.gui.results_model import FilterMode, Roles

LOAD_MS = 60_000  # the first load imports torch on a loaded 2-core machine
RUN_MS = 60_000


def url_mime(*paths: Path) -> QMimeData:
    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(p)) for p in paths])
    return mime




def run(qtbot, window, mime: QMimeData) -> Outcome:
    with qtbot.waitSignal(window.run_status.run_finished, timeout=RUN_MS) as blocker:
        assert window.intake.handle_mime(mime)
    return blocker.args[0]


def labels_in_model(window) -> list[str]:
    m = window.results_model
    return [m.data(m.index(i), Roles.LABEL) for i in range(m.rowCount())]


def test_drop_files_and_folder_fills_the_gallery(qtbot, make_window, model_a, tmp_path) -> None:
    w = make_window()
    load(qtbot, w, model_a)
    assert "alpha" in w.run_status.model_label.text()
    loose = [write_image(tmp_path / "loose" / f"l{i}.jpg", seed=50 + i) for i in range(2)]
    folder = tmp_path / "folder"
    for i in range(3):
        write_image(folder / "sub" / f"f{i}.png", seed=i)
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not a jpeg")

    outcome = run(qtbot, w, url_mime(*loose, folder))

    assert outcome is Outcome.DONE
    results = w.results_model.results()
    assert sorted(Path(r.path).name for r in results) == ["broken.jpg", "f0.png", "f1.png", "f2.png", "l0.jpg", "l1.jpg"]
    good = [r for r in results if r.ok]
    assert len(good) == 5
    assert all(r.top.label in ("apple", "pear", "plum") for r in good)
    # No maps in a run unless asked for: the shown photo's map is computed when it is selected.
    assert all(r.heatmap is None for r in good)
    broken = next(r for r in results if r.path.endswith("broken.jpg"))
    assert broken.error and not broken.predictions
    # Filtering by state shows exactly the failed file, with its reason in the tooltip.
    w.pane.filter_mode.setCurrentIndex(w.pane.filter_mode.findData(int(FilterMode.ERRORS)))
    assert w.proxy.rowCount() == 1
    assert broken.error in w.proxy.index(0, 0).data(0x03)  # ToolTipRole
    assert "Classified 6 images" in w.run_status.status_label.text()
    assert "1 errors" in w.pane.summary.text()


def test_images_dropped_before_a_model_wait_for_it(qtbot, make_window, model_a, tmp_path) -> None:
    w = make_window()
    img = write_image(tmp_path / "early.png")
    assert w.intake.handle_mime(url_mime(img))
    assert w.results_model.rowCount() == 0
    assert w.intake.pending == [str(img)]
    assert "No model loaded" in w.message_bar.text
    with qtbot.waitSignal(w.run_status.run_finished, timeout=LOAD_MS + RUN_MS):
        w.models.load_model(str(model_a))
    assert labels_in_model(w)[0] in ("apple", "pear", "plum")
    assert w.intake.pending == []


def test_switching_model_changes_labels(qtbot, make_window, model_a, model_b, tmp_path) -> None:
    w = make_window()
    img = write_image(tmp_path / "x.png")
    load(qtbot, w, model_a)
    run(qtbot, w, url_mime(img))
    assert labels_in_model(w)[0] in ("apple", "pear", "plum")
    load(qtbot, w, model_b)
    assert "beta" in w.run_status.model_label.text()
    assert w.settings.last_model == str(model_b)
    run(qtbot, w, url_mime(img))  # same file again: its row is updated in place
    assert w.results_model.rowCount() == 1
    assert labels_in_model(w)[0] in ("cat", "dog", "fox", "owl")
    assert len(w.results_model.results()[0].predictions) == 4


def test_bad_weights_file_is_reported_in_the_window(qtbot, make_window, model_a, tmp_path) -> None:
    w = make_window()
    load(qtbot, w, model_a)
    bad = tmp_path / "garbage.safetensors"
    bad.write_bytes(b"this is not a model")
    job = w.models.load_model(str(bad))
    with qtbot.waitSignal(job.errored, timeout=LOAD_MS):
        pass
    text = w.message_bar.text
    assert "Could not load the model" in text and "garbage.safetensors" in text
    assert "Still using alpha" in text
    assert w.controller.current_card.name == "alpha"


def test_offline_download_says_what_to_do(qtbot, make_window, monkeypatch) -> None:
    # Port 9 (discard) on localhost refuses connections at once: a machine with no network.
    monkeypatch.setenv("VIT_DESKTOP_WEIGHTS_BASE_URL", "http://127.0.0.1:9/weights")
    w = make_window()
    job = w.models.load_model("vit_b_16")
    with qtbot.waitSignal(job.finished, timeout=LOAD_MS):
        pass
    text = w.message_bar.text
    assert "vit_b_16" in text
    assert "Open weights file" in text
    assert w.message_bar.action_button.isVisible()
    assert not w.run_status.cancel_button.isVisible()


def test_cancel_stops_a_folder_run(qtbot, make_window, model_a, many_images) -> None:
    w = make_window()
    load(qtbot, w, model_a)
    folder = many_images(300)
    w.batch_size = 1

    first: list[int] = []

    def cancel_on_first(*_args: object) -> None:
        if not first:
            first.append(w.results_model.rowCount())
            w.run_status.cancel()

    w.results_model.rowsInserted.connect(cancel_on_first)
    with qtbot.waitSignal(w.run_status.run_finished, timeout=RUN_MS) as blocker:
        w.intake.handle_mime(url_mime(folder))
    assert blocker.args[0] is Outcome.CANCELLED
    assert 0 < w.results_model.rowCount() < 300
    assert "Cancelled after" in w.run_status.status_label.text()
    assert not w.run_status.cancel_button.isVisible()


def test_export_csv_and_json(qtbot, make_window, model_a, tmp_path) -> None:
    w = make_window()
    load(qtbot, w, model_a)
    imgs = [write_image(tmp_path / "in" / f"e{i}.png", seed=i) for i in range(3)]
    run(qtbot, w, url_mime(*imgs))

    out_csv = tmp_path / "out" / "results.csv"
    assert w.exporter.export_results(w.results_model.results(), out_csv, top_k=w.top_k)
    with out_csv.open(encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    assert sorted(Path(r["path"]).name for r in rows) == ["e0.png", "e1.png", "e2.png"]
    by_name = {Path(r.path).name: r for r in w.results_model.results()}
    for row in rows:
        assert by_name[Path(row["path"]).name].top.label in row.values()

    out_json = tmp_path / "out" / "results.json"
    assert w.exporter.export_results(w.results_model.results(), out_json, top_k=w.top_k)
    data = json.loads(out_json.read_text(encoding="utf-8"))
    assert len(data) == 3
    assert {Path(d["path"]).name for d in data} == {"e0.png", "e1.png", "e2.png"}

    # An existing file is never replaced without asking.
    before = out_csv.read_bytes()
    assert not w.exporter.export_results(w.results_model.results(), out_csv, top_k=w.top_k)
    assert "already exists" in w.message_bar.text
    assert out_csv.read_bytes() == before


def test_copy_into_class_folders_copies_never_moves(qtbot, make_window, model_a, tmp_path) -> None:
    w = make_window()
    load(qtbot, w, model_a)
    imgs = [write_image(tmp_path / "in" / f"c{i}.png", seed=i) for i in range(4)]
    run(qtbot, w, url_mime(*imgs))
    # The threshold between the scores: the photos under it are uncertain.
    scores = sorted(r.top.score for r in w.results_model.results())
    w.pane.threshold_spin.setValue(100 * (scores[1] + scores[2]) / 2)
    unsure = [r for r in w.results_model.results() if r.uncertain]
    assert len(unsure) == 2
    dest = tmp_path / "sorted"
    with qtbot.waitSignal(w.exporter.files_copied, timeout=RUN_MS) as blocker:
        w.exporter.copy_into_class_folders(w.results_model.results(), dest)
    assert blocker.args == [4]
    assert all(p.exists() for p in imgs)  # originals untouched
    # Sure ones under their class, the uncertain ones apart rather than under the class they lean to.
    for r in w.results_model.results():
        folder = "uncertain" if r.uncertain else r.top.label
        assert (dest / folder / Path(r.path).name).is_file()
    # A second copy does not overwrite: it adds numbered names.
    with qtbot.waitSignal(w.exporter.files_copied, timeout=RUN_MS):
        w.exporter.copy_into_class_folders(w.results_model.results(), dest)
    assert len(list(dest.rglob("*.png"))) == 8
    # Photos that cannot be copied are reported, and the others are copied all the same.
    other = tmp_path / "other"
    other.mkdir()
    (other / "uncertain").write_text("a file, where the folder would go")
    with qtbot.waitSignal(w.exporter.files_copied, timeout=RUN_MS) as blocker:
        w.exporter.copy_into_class_folders(w.results_model.results(), other)
    assert blocker.args == [2]
    assert "2 images could not be copied (first: " in w.message_bar.text


def test_paste_image_and_paths(qtbot, make_window, model_a, tmp_path) -> None:
    w = make_window()
    load(qtbot, w, model_a)
    image = QImage(64, 48, QImage.Format.Format_RGB888)
    image.fill(QColor("#3377aa"))
    mime = QMimeData()
    mime.setImageData(image)
    run(qtbot, w, mime)
    pasted = w.results_model.results()[0]
    assert pasted.ok and Path(pasted.path).name.startswith("pasted-")
    assert pasted.image_size == (64, 48)

    text_mime = QMimeData()
    img = write_image(tmp_path / "as text.png")
    text_mime.setText(f"{img}\n/no/such/file.png\n")
    run(qtbot, w, text_mime)
    assert w.results_model.rowCount() == 2


def test_selected_image_shows_its_top1_class_map_and_rollout_one_choice_away(qtbot, make_window, model_a,
                                                                            tmp_path) -> None:
    w = make_window()
    load(qtbot, w, model_a)
    img = write_image(tmp_path / "d.png", size=(80, 40))
    d = w.detail
    with qtbot.waitSignal(d.heatmap_shown, timeout=RUN_MS):
        run(qtbot, w, url_mime(img))
    assert d.result is not None and d.result.path == str(img)
    # The run computed no map (a map with every photo slows a run); the class map came on selection.
    assert d.result.heatmap is None
    hm = d.current_heatmap
    top = d.result.predictions[0]
    assert hm is not None and hm.method == "class" and hm.class_index == top.index
    assert f"Class map for “{top.label}”, the top-1" in d.showing.text()
    assert [b.isChecked() for b in d.bars.bars] == [True, False, False]
    assert not d.fusion.isEnabled() and not d.discard.isEnabled()  # they shape rollout only
    # The crop the model saw is a centred square of the wide photo (resize 36, crop 32: 8/9 of it).
    left, top_, right, bottom = hm.crop_box
    assert ((left + right) / 2, (top_ + bottom) / 2) == (pytest.approx(40), pytest.approx(20))
    assert right - left == pytest.approx(bottom - top_) == pytest.approx(40 * 32 / 36)
    assert d.view.has_image

    second = d.bars.bars[1]
    with qtbot.waitSignal(d.heatmap_shown, timeout=RUN_MS):
        second.click()
    assert d.current_heatmap.class_index == second.class_index
    assert [b.isChecked() for b in d.bars.bars] == [False, True, False]
    assert "the top-1 is" in d.showing.text()
    second.click()  # clicking the class shown keeps it
    assert d.bars.bars[1].isChecked() and d.current_heatmap.class_index == second.class_index

    # M: the refined class map, then rollout, whose controls come back.
    with qtbot.waitSignal(d.heatmap_shown, timeout=RUN_MS):
        w.commands.next_map.trigger()
    assert d.current_heatmap.method == "refined" and d.current_heatmap.class_index == second.class_index
    with qtbot.waitSignal(d.heatmap_shown, timeout=RUN_MS):
        w.commands.next_map.trigger()
    assert d.map_method == "rollout" and d.fusion.isEnabled()
    assert d.current_heatmap.method == "rollout"  # computed on the switch: the run kept no map
    assert not any(b.isChecked() for b in d.bars.bars)
    assert "Attention rollout" in d.showing.text()
    with qtbot.waitSignal(d.heatmap_shown, timeout=RUN_MS):
        d.discard.setValue(30)
    assert d.current_heatmap.class_index is None and d.current_heatmap.method == "rollout"
    assert d.current_heatmap.discard_ratio == pytest.approx(0.3)
    assert w.settings.overlay().map_method == "rollout"  # remembered

    # A bar click while rollout is shown asks for that class's map.
    with qtbot.waitSignal(d.heatmap_shown, timeout=RUN_MS):
        d.bars.bars[2].click()
    assert d.map_method == "class" and d.current_heatmap.class_index == d.bars.bars[2].class_index

    # H toggles the overlay.
    assert d.view.overlay_visible
    w.commands.overlay.trigger()
    assert not d.view.overlay_visible


def test_a_folder_run_can_compute_every_photos_class_map(qtbot, make_window, model_a, tmp_path) -> None:
    w = make_window()
    load(qtbot, w, model_a)
    w.commands.class_maps_in_runs.trigger()
    assert w.settings.class_maps_in_runs
    folder = tmp_path / "photos"
    folder.mkdir()
    for i in range(3):
        write_image(folder / f"{i}.png", seed=i)
    run(qtbot, w, url_mime(folder))
    results = w.results_model.results()
    assert len(results) == 3
    for r in results:
        assert r.heatmap is not None and r.heatmap.method == "class"
        assert r.heatmap.class_index == r.predictions[0].index
    # Selecting one shows its stored map at once: no request goes to the compute thread.
    w.detail.show_result(results[1])
    assert w.detail.current_heatmap is results[1].heatmap and w.detail._pending is None


def test_settings_survive_a_restart(qtbot, make_window, model_a) -> None:
    w = make_window()
    load(qtbot, w, model_a)
    d = w.detail
    d.opacity.setValue(30)
    d.colormap.setCurrentText("viridis")
    d.fusion.setCurrentText("max")
    d.discard.setValue(20)
    d.overlay_box.setChecked(False)
    w.pane.threshold_spin.setValue(70)
    w.resize(780, 520)
    w.close()
    assert w.controller.compute_thread.isFinished()

    w2 = make_window()
    d2 = w2.detail
    assert d2.opacity.value() == 30
    assert d2.colormap.currentText() == "viridis"
    assert d2.fusion.currentText() == "max"
    assert d2.discard.value() == 20
    assert not d2.overlay_box.isChecked()
    assert w2.pane.threshold_spin.value() == 70
    assert (w2.width(), w2.height()) == (780, 520)
    # The last model comes back by itself once the window is up.
    with qtbot.waitSignal(w2.controller.model_changed, timeout=LOAD_MS) as blocker:
        w2.start()
    assert blocker.args[0].card.name == "alpha"


def test_close_during_a_run_is_clean(qtbot, make_window, model_a, many_images) -> None:
    w = make_window()
    load(qtbot, w, model_a)
    folder = many_images(200)
    w.batch_size = 2
    with qtbot.waitSignal(w.results_model.rowsInserted, timeout=RUN_MS):
        w.intake.handle_mime(url_mime(folder))
    assert w.controller.busy
    w.close()
    assert w.controller.compute_thread.isFinished()
    assert w.results_model.rowCount() < 200


def test_close_during_a_model_load_is_clean(qtbot, make_window, model_a) -> None:
    w = make_window()
    w.models.load_model(str(model_a))
    assert w.controller.loading
    w.close()
    assert w.controller.compute_thread.isFinished()


def test_model_menu_lists_models_and_picks_a_default(qtbot, make_window) -> None:
    from vit_desktop.core.models import registry

    expected = registry.list_models()
    w = make_window()
    w.start()
    qtbot.waitUntil(lambda: bool(w.model_menu.infos), timeout=LOAD_MS)
    w.model_menu.rebuild()
    texts = [a.text() for a in w.model_menu.menu.actions()]
    assert any(t.startswith("ViT-B/16") and "download" in t for t in texts)  # not cached here
    assert "Open &weights file…" in texts
    bundled = [i for i in expected if i.kind == "bundled"]
    if bundled:  # a bundled model ships: it is the default when nothing is cached
        qtbot.waitUntil(lambda: w.controller.current_model is not None, timeout=LOAD_MS)
        assert w.controller.current_model.source == bundled[0].source
    else:
        qtbot.waitUntil(lambda: "No model loaded" in w.message_bar.text, timeout=LOAD_MS)
        assert w.run_status.model_label.text().startswith("No model loaded")


def test_device_and_precision_choices_reload_and_persist(qtbot, make_window, model_a) -> None:
    w = make_window()
    load(qtbot, w, model_a)
    cpu = next(a for a in w.model_menu.device_group.actions() if a.data() == "cpu")
    with qtbot.waitSignal(w.controller.model_changed, timeout=LOAD_MS) as blocker:
        cpu.trigger()
    assert blocker.args[0].device_key == "cpu"
    bf16 = next(a for a in w.model_menu.precision_group.actions() if a.data() == "bf16")
    with qtbot.waitSignal(w.controller.model_changed, timeout=LOAD_MS) as blocker:
        bf16.trigger()
    assert blocker.args[0].precision == "bf16"
    assert "bf16" in w.run_status.model_label.text()
    assert (w.settings.device, w.settings.precision) == ("cpu", "bf16")
    int8 = next(a for a in w.model_menu.precision_group.actions() if a.data() == "int8")
    with qtbot.waitSignal(w.controller.model_changed, timeout=LOAD_MS) as blocker:
        int8.trigger()
    assert blocker.args[0].precision == "int8" and "int8" in w.run_status.model_label.text()
    assert w.settings.precision == "int8"


def test_about_names_versions_and_device(qtbot, make_window, model_a) -> None:
    w = make_window()
    load(qtbot, w, model_a)
    text = w.about_text()
    assert "vit-desktop" in text and "PySide6" in text and "PyTorch" in text
    assert "alpha on CPU" in text


def test_keyboard_copy_and_overlay_toggle(qtbot, make_window, model_a, tmp_path) -> None:
    from PySide6.QtCore import Qt
    from PySide6.QtGui import QGuiApplication

    w = make_window()
    load(qtbot, w, model_a)
    img = write_image(tmp_path / "k.png")
    run(qtbot, w, url_mime(img))
    w.activateWindow()
    w.gallery.setFocus()
    qtbot.waitUntil(lambda: w.gallery.hasFocus(), timeout=5000)
    QGuiApplication.clipboard().clear()
    qtbot.keyClick(w.gallery, Qt.Key.Key_C, Qt.KeyboardModifier.ControlModifier)
    copied = QGuiApplication.clipboard().text()
    r = w.results_model.results()[0]
    assert copied.startswith(f"{img}\t{r.top.label}\t")
    assert w.detail.view.overlay_visible
    qtbot.keyClick(w.gallery, Qt.Key.Key_H)
    assert not w.detail.view.overlay_visible
    # Typing in the filter field is text, not a shortcut.
    w.pane.filter_edit.setFocus()
    qtbot.waitUntil(lambda: w.pane.filter_edit.hasFocus(), timeout=5000)
    qtbot.keyClick(w.pane.filter_edit, Qt.Key.Key_H)
    assert w.pane.filter_edit.text() == "h"
    assert not w.detail.view.overlay_visible


def test_delete_takes_photos_off_the_list_and_leaves_the_files(qtbot, make_window, model_a, tmp_path) -> None:
    from PySide6.QtCore import QItemSelectionModel, Qt

    w = make_window()
    load(qtbot, w, model_a)
    imgs = [write_image(tmp_path / f"d{i}.png", seed=i) for i in range(4)]
    run(qtbot, w, url_mime(*imgs))
    w.activateWindow()
    w.gallery.setFocus()
    qtbot.waitUntil(lambda: w.gallery.hasFocus(), timeout=5000)
    # Select the first and third photos (the first is the one shown), then Delete.
    select = w.gallery.selectionModel()
    w.gallery.setCurrentIndex(w.proxy.index(0, 0))
    select.select(w.proxy.index(2, 0), QItemSelectionModel.SelectionFlag.Select)
    assert w.detail.result.path == str(imgs[0])
    qtbot.keyClick(w.gallery, Qt.Key.Key_Delete)
    assert [Path(r.path).name for r in w.results_model.results()] == ["d1.png", "d3.png"]
    assert all(p.exists() for p in imgs)
    assert "Removed 2 photos from the list (the files are untouched" in w.run_status.status_label.text()
    assert w.pane.summary.text().startswith("2 images")
    # The photo that followed the first removed one is shown and selected.
    assert w.detail.result is not None and w.detail.result.path == str(imgs[1])
    assert [i.data(Roles.PATH) for i in select.selectedIndexes()] == [str(imgs[1])]
    # Ctrl+Z puts them back where they were, selected, with their results; then there is no more to undo.
    assert w.commands.undo_remove.isEnabled()
    before = {r.path: r for r in w.results_model.results()}
    qtbot.keyClick(w.gallery, Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier)
    assert [Path(r.path).name for r in w.results_model.results()] == ["d0.png", "d1.png", "d2.png", "d3.png"]
    assert sorted(i.data(Roles.PATH) for i in select.selectedIndexes()) == [str(imgs[0]), str(imgs[2])]
    assert w.results_model.result_for(str(imgs[1])) is before[str(imgs[1])]
    assert w.pane.summary.text().startswith("4 images") and not w.commands.undo_remove.isEnabled()
    qtbot.keyClick(w.gallery, Qt.Key.Key_Delete)
    assert len(w.results_model.results()) == 2
    # Delete while typing in the filter field edits the text, not the list.
    w.pane.filter_edit.setFocus()
    qtbot.waitUntil(lambda: w.pane.filter_edit.hasFocus(), timeout=5000)
    w.pane.filter_edit.setText("d")
    w.pane.filter_edit.setCursorPosition(0)
    qtbot.keyClick(w.pane.filter_edit, Qt.Key.Key_Delete)
    assert w.pane.filter_edit.text() == "" and len(w.results_model.results()) == 2
    # A removed photo dropped again is classified again; removing everything empties the detail view.
    run(qtbot, w, url_mime(imgs[0]))
    assert len(w.results_model.results()) == 3
    w.gallery.selectAll()
    w.commands.remove.trigger()
    assert w.results_model.rowCount() == 0 and w.detail.result is None
    assert w.pane.summary.text() == ""


def test_fine_tune_menu_says_so_when_the_dialog_is_missing(qtbot, make_window, monkeypatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "vit_desktop.gui.finetune.dialog", None)  # import fails
    w = make_window()
    w.commands.finetune.trigger()
    assert "Fine-tuning is not available" in w.message_bar.text


def test_an_unsaved_in_memory_model_is_not_remembered(qtbot, make_window, model_a) -> None:
    import dataclasses

    from vit_desktop.core.models.checkpoints import load_checkpoint

    w = make_window()
    load(qtbot, w, model_a)
    module, card = load_checkpoint(model_a)
    with qtbot.waitSignal(w.controller.model_changed, timeout=LOAD_MS):
        w.controller.use_module(module, dataclasses.replace(card, name="fresh", source="memory:fresh"))
    assert "fresh" in w.run_status.model_label.text()
    assert w.settings.last_model == str(model_a)  # the next start loads something that exists


def test_export_overlay_png(qtbot, make_window, model_a, tmp_path) -> None:
    from PIL import Image

    w = make_window()
    load(qtbot, w, model_a)
    img = write_image(tmp_path / "o.png", size=(90, 60))
    with qtbot.waitSignal(w.detail.heatmap_shown, timeout=RUN_MS):
        run(qtbot, w, url_mime(img))
    assert w.detail.current_heatmap is not None and w.detail.current_heatmap.method == "class"
    out = tmp_path / "out" / "o-overlay.png"
    d = w.detail
    with qtbot.waitSignal(w.exporter.overlay_saved, timeout=RUN_MS) as blocker:
        w.exporter.export_overlay(d.result, d.current_heatmap, w.view_state.overlay, out)
    assert blocker.args == [str(out)]
    saved = Image.open(out)
    assert saved.size == (90, 60)
    original = Image.open(img).convert("RGB")
    centre = (45, 30)
    assert saved.getpixel(centre) != original.getpixel(centre)  # tinted inside the crop
    assert saved.getpixel((0, 0)) == original.getpixel((0, 0))  # untouched outside it
    # Never replaced without asking.
    before = out.read_bytes()
    with qtbot.waitSignal(w.exporter.job_failed, timeout=RUN_MS):
        w.exporter.export_overlay(d.result, d.current_heatmap, w.view_state.overlay, out)
    assert out.read_bytes() == before
    assert "already exists" in w.message_bar.text


def test_two_drops_in_a_row_count_as_one_busy_spell(qtbot, make_window, model_a, tmp_path) -> None:
    w = make_window()
    load(qtbot, w, model_a)
    first = [write_image(tmp_path / "one" / f"a{i}.png", seed=i) for i in range(6)]
    second = [write_image(tmp_path / "two" / f"b{i}.png", seed=20 + i) for i in range(4)]
    w.batch_size = 2
    finished: list[Outcome] = []
    w.run_status.run_finished.connect(finished.append)
    w.intake.handle_mime(url_mime(*first))
    w.intake.handle_mime(url_mime(*second))
    qtbot.waitUntil(lambda: len(finished) == 2, timeout=RUN_MS)
    assert w.results_model.rowCount() == 10
    assert w.run_status.status_label.text().startswith("Classified 10 images")
    assert not w.run_status.progress.isVisible()


def test_a_real_drop_event_on_the_detail_view_classifies(qtbot, make_window, model_a, tmp_path) -> None:
    """Drops land anywhere on the window: here on the photo view, which passes them up."""
    from PySide6.QtCore import QPoint, QPointF, Qt
    from PySide6.QtGui import QDragEnterEvent, QDropEvent
    from PySide6.QtWidgets import QApplication

    w = make_window()
    load(qtbot, w, model_a)
    img = write_image(tmp_path / "dropped.png")
    mime = url_mime(img)
    target = w.detail.view
    pos = QPoint(target.width() // 2, target.height() // 2)
    enter = QDragEnterEvent(pos, Qt.DropAction.CopyAction, mime, Qt.MouseButton.LeftButton,
                            Qt.KeyboardModifier.NoModifier)
    QApplication.sendEvent(target, enter)
    assert enter.isAccepted()
    assert "Drop to classify" in w.statusBar().currentMessage()
    drop = QDropEvent(QPointF(pos), Qt.DropAction.CopyAction, mime, Qt.MouseButton.LeftButton,
                      Qt.KeyboardModifier.NoModifier)
    with qtbot.waitSignal(w.run_status.run_finished, timeout=RUN_MS):
        QApplication.sendEvent(target, drop)
    assert [r.path for r in w.results_model.results()] == [str(img)]


def test_gallery_photos_drag_out_as_files_onto_a_fine_tune_class(qtbot, make_window, model_a, tmp_path) -> None:
    from PySide6.QtCore import QPointF, Qt
    from PySide6.QtGui import QDropEvent

    from vit_desktop.gui.finetune.dialog import FinetuneDialog

    w = make_window()
    load(qtbot, w, model_a)
    a, b = write_image(tmp_path / "a.png"), write_image(tmp_path / "b.png", seed=1)
    run(qtbot, w, url_mime(a, b))
    rows = [w.proxy.index(r, 0) for r in range(w.proxy.rowCount())]
    assert all(w.proxy.flags(i) & Qt.ItemFlag.ItemIsDragEnabled for i in rows)
    mime = w.proxy.mimeData(rows)
    assert sorted(u.toLocalFile() for u in mime.urls()) == [str(a), str(b)]
    assert w.gallery.dragEnabled()
    dialog = FinetuneDialog(w.controller, w)
    qtbot.addWidget(dialog)
    dialog.show()
    assert dialog.labels.add_class("mine")
    item = dialog.labels.class_list.item(0)
    drop = QDropEvent(QPointF(dialog.labels.class_list.visualItemRect(item).center()), Qt.DropAction.CopyAction,
                      mime, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier)
    dialog.labels.class_list.dropEvent(drop)
    assert dialog.data.counts() == {"mine": 2}


def test_first_run_with_the_demo_model_offers_samples_and_a_download(qtbot, make_window, model_a, tmp_path,
                                                                     monkeypatch) -> None:
    from vit_desktop.core import paths

    bundled = tmp_path / "bundled"
    bundled.mkdir()
    demo = bundled / "demo.safetensors"
    demo.write_bytes(Path(model_a).read_bytes())
    monkeypatch.setattr(paths, "bundled_models_dir", lambda: bundled)
    w = make_window()
    assert w.gallery.sample_button.isVisible()  # one click from an empty window to a result
    load(qtbot, w, demo)
    assert "Demo model" in w.message_bar.text and "ViT-B/16" in w.message_bar.text
    assert w.message_bar.action_button.text() == "Download ViT-B/16"
    samples = w.sample_paths()
    assert samples and all("clothing" in s for s in samples)
    with qtbot.waitSignal(w.run_status.run_finished, timeout=RUN_MS):
        w.gallery.sample_button.click()
    assert w.results_model.rowCount() == len(samples)
    assert not w.gallery.sample_button.isVisible()
    from vit_desktop.core import state

    assert state.last_model() == str(demo)  # the command line follows the window's choice
