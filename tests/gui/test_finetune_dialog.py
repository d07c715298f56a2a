"""The fine-tune dialog with the real controller and a tiny model: label, train, inspect, save, use."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from PySide6.QtCore import QMimeData, QPointF, Qt, QUrl
from PySide6.QtGui import QDropEvent
from torchvision.models import VisionTransformer

from tests.support import colour_folder, kept
from vit_desktop.core.inference.engine import Engine
from vit_desktop.core.training.labelled_set import LabelledSet
from vit_desktop.core.types import Architecture, ModelCard, Preprocess
from vit_desktop.gui.compute import Controller
from vit_desktop.gui.finetune.dialog import FinetuneDialog

MS = 60_000
def _colour_folder(root: Path, per_class: int = 8, size: int = 40) -> Path:
    return colour_folder(root, per_class, size, seed=2)


@pytest.fixture
def controller(qtbot) -> Iterator[Controller]:
    c = Controller()
    torch.manual_seed(0)
    module = VisionTransformer(image_size=32, patch_size=8, num_layers=2, num_heads=2, hidden_dim=16, mlp_dim=32,
                               num_classes=4)
    card = ModelCard("tiny base", "file", "", Architecture(32, 8, 2, 2, 16, 32, 4), ("a", "b", "c", "d"),
                     Preprocess(crop_size=32, resize_size=36))
    with qtbot.waitSignal(c.model_changed, timeout=MS):
        c.use_module(module, card, device="cpu")
    yield c
    c.shutdown()
    assert c.compute_thread.isFinished()


@pytest.fixture
def dialog(qtbot, controller: Controller) -> FinetuneDialog:
    d = FinetuneDialog(controller)
    qtbot.addWidget(d)
    return d


def _class_rows(d: FinetuneDialog) -> list[str]:
    return [d.labels.class_list.item(i).text() for i in range(d.labels.class_list.count())]


def test_labelling_classes_by_hand_and_by_drop(qtbot, dialog: FinetuneDialog, tmp_path: Path) -> None:
    data = _colour_folder(tmp_path / "data", per_class=3)
    labels = dialog.labels
    assert labels.add_class("cats") and labels.add_class("dogs")
    assert not labels.add_class("cats")
    assert "already exists" in dialog.status_label.text()
    # Drop two photos from the file manager on the "dogs" row.
    dialog.show()
    row = labels.class_list.item(1)
    pos = labels.class_list.visualItemRect(row).center()
    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(data / "red" / "0.png")), QUrl.fromLocalFile(str(data / "red" / "1.png"))])
    event = QDropEvent(QPointF(pos), Qt.DropAction.CopyAction, mime, Qt.MouseButton.LeftButton,
                       Qt.KeyboardModifier.NoModifier)
    labels.class_list.dropEvent(event)
    assert _class_rows(dialog) == ["cats  (0 photos)", "dogs  (2 photos)"]
    # Dropped on the photo list, photos join the selected class ("dogs").
    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(data / "red" / "2.png"))])
    labels.photo_list.dropEvent(QDropEvent(QPointF(5, 5), Qt.DropAction.CopyAction, mime, Qt.MouseButton.LeftButton,
                                           Qt.KeyboardModifier.NoModifier))
    assert dialog.data.counts() == {"cats": 0, "dogs": 3}
    labels.set_data(dialog.data.without_items([data / "red" / "2.png"]))
    # A dropped folder is searched for photos.
    labels.add_files("cats", [str(data / "green")])
    assert dialog.data.counts() == {"cats": 3, "dogs": 2}
    assert labels.rename_class("dogs", "puppies")
    assert _class_rows(dialog)[1] == "puppies  (2 photos)"
    assert labels.delete_class("cats")
    assert _class_rows(dialog) == ["puppies  (2 photos)"]
    # The labelled set is saved and reopened; a photo that disappeared is reported, not fatal.
    project = tmp_path / "set.vitlabels.json"
    assert labels.save_project(project)
    (data / "red" / "1.png").unlink()
    labels.set_data(LabelledSet())
    assert labels.open_project(project)
    assert dialog.data.counts() == {"puppies": 1}
    assert "1 missing" in dialog.status_label.text()


def test_training_with_too_few_photos_says_why(qtbot, dialog: FinetuneDialog, tmp_path: Path) -> None:
    data = _colour_folder(tmp_path / "data", per_class=3)
    dialog.labels.add_class("only")
    dialog.labels.add_files("only", [str(data / "red")])
    dialog.start_training()
    assert "at least two classes" in dialog.status_label.text()
    assert dialog.train_button.isEnabled() and not dialog.cancel_button.isEnabled()


def test_train_inspect_save_and_use(qtbot, dialog: FinetuneDialog, controller: Controller, tmp_path: Path,
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    data = _colour_folder(tmp_path / "data", per_class=8)
    assert dialog.labels.import_folder(data)
    assert _class_rows(dialog) == ["blue  (8 photos)", "green  (8 photos)", "red  (8 photos)"]
    dialog.epochs_spin.setValue(30)
    assert not dialog.save_model_button.isEnabled()
    assert "appear here epoch by epoch" in dialog.results.curves.placeholder
    with qtbot.waitSignal(dialog.trained, timeout=MS) as blocker:
        dialog.start_training()
        assert dialog.cancel_button.isEnabled() and not dialog.train_button.isEnabled()
    result = blocker.args[0]
    assert result.val_accuracy >= 0.8
    # Curves were drawn live, then the tables filled in.
    view = dialog.results
    # Head mode: no epochs, and the curves panel says why instead of showing empty axes; the heads
    # cross-validation compared are listed, the chosen one named.
    assert result.history == () and len(view.curves.rows) == 0
    head = result.metrics.selection.head
    assert f"the {head} head was fitted in one step" in view.curves.placeholder
    assert view.heads_table.rowCount() == len(result.metrics.selection.scores) >= 2
    assert result.metrics.selection.head in view.head_summary.text()
    assert "flatter this estimate" in view.head_notes.text()
    assert view.confusion_table.rowCount() == 3
    cells = [view.confusion_table.item(i, i) for i in range(3)]
    assert all(cell is not None for cell in cells)
    diagonal = sum(int(cell.text()) for cell in cells if cell is not None)
    assert diagonal == round(result.val_accuracy * result.metrics.val_images)
    assert view.per_class_table.rowCount() == 3
    assert view.mistake_list.count() == len(result.misclassified)
    # Three colours tell apart: no mistakes, and the tab says so rather than inviting a click.
    assert not result.misclassified
    assert view.mistake_view.text() == f"No mistakes: all {result.metrics.val_images} validation photos " \
                                       "were classified right"
    assert "validation accuracy" in dialog.status_label.text()
    assert dialog.save_model_button.isEnabled() and dialog.use_button.isEnabled()

    # Save into the user models folder; the model picker hears about it.
    target = dialog.default_model_path()
    with qtbot.waitSignal(controller.models_changed, timeout=MS):
        assert dialog.save_model_to(target)
    loaded = Engine.load(target, device="cpu")
    assert loaded.card.labels == ("blue", "green", "red")
    assert loaded.card.name == target.stem  # the picker lists it by its file's name
    # Saving again asks first; "No" keeps the file.
    before = target.read_bytes()
    asked: list[Path] = []

    def ask_overwrite(p: Path) -> bool:
        asked.append(p)
        return False

    monkeypatch.setattr(dialog, "_ask_overwrite", ask_overwrite)
    assert not dialog.save_model_to(target)
    assert asked == [target] and target.read_bytes() == before
    monkeypatch.setattr(dialog, "_ask_overwrite", lambda p: True)
    assert dialog.save_model_to(target)

    # Use now: the main window's controller switches to the new model, and it classifies.
    with qtbot.waitSignal(controller.model_changed, timeout=MS) as loaded_blocker:
        dialog.use_button.click()
    assert loaded_blocker.args[0].card.labels == ("blue", "green", "red")
    assert controller.current_card is not None and controller.current_card.labels == ("blue", "green", "red")
    from vit_desktop.core.types import ExplainOptions

    job = controller.explain(str(data / "red" / "0.png"), ExplainOptions())
    with qtbot.waitSignal(job.returned, timeout=MS):
        pass


def test_mistakes_show_the_photo_with_its_heatmap(qtbot, dialog: FinetuneDialog, tmp_path: Path) -> None:
    # Two classes that cannot be told apart (same colour): mistakes are certain.
    data = tmp_path / "data"
    src = _colour_folder(tmp_path / "src", per_class=30)
    (data / "left").mkdir(parents=True)
    (data / "right").mkdir(parents=True)
    for i in range(30):
        (src / "red" / f"{i}.png").rename(data / ("left" if i % 2 else "right") / f"{i}.png")
    dialog.labels.import_folder(data)
    dialog.epochs_spin.setValue(3)
    with qtbot.waitSignal(dialog.trained, timeout=MS) as blocker:
        dialog.start_training()
    result = blocker.args[0]
    if not result.misclassified:
        pytest.skip("the random split happened to be learnable")
    view = dialog.results
    view.setCurrentIndex(3)
    # Each entry says how sure the model was of its wrong answer, and of the right one.
    first = result.misclassified[0]
    assert view.mistake_list.item(0).text().endswith(
        f"\n{first.predicted} {first.predicted_p:.0%}, {first.true} {first.true_p:.0%}")
    view.mistake_list.setCurrentRow(0)
    pix = view.mistake_view.pixmap()
    assert pix is not None and not pix.isNull()
    path = view.mistake_list.item(0).data(Qt.ItemDataRole.UserRole)
    assert path in view.previews
    # The preview is the photo blended with a heatmap, not the bare photo.
    bare = np.asarray(Image.open(path).convert("RGB").resize(view.previews[path].shape[1::-1]))
    assert np.abs(view.previews[path].astype(int) - bare.astype(int)).mean() > 3


def test_unreadable_photos_are_reported_after_training(qtbot, dialog: FinetuneDialog, tmp_path: Path) -> None:
    data = _colour_folder(tmp_path / "data", per_class=4)
    (data / "blue" / "broken.png").write_bytes(b"not a png at all")
    dialog.labels.import_folder(data)
    dialog.epochs_spin.setValue(2)
    with qtbot.waitSignal(dialog.trained, timeout=MS):
        dialog.start_training()
    assert "1 unreadable photo skipped" in dialog.status_label.text()
    assert "broken.png" in dialog.status_label.toolTip()


def test_cancel_keeps_the_best_model(qtbot, dialog: FinetuneDialog, tmp_path: Path) -> None:
    dialog.labels.import_folder(_colour_folder(tmp_path / "data", per_class=6))
    dialog.mode_combo.setCurrentIndex(2)  # full fine-tune: many steps to cancel in
    dialog.epochs_spin.setValue(200)
    seen: list[object] = []

    def on_progress(p: object) -> None:
        seen.append(p)
        if getattr(p, "phase", "") == "val" and getattr(p, "epoch", 0) >= 1:
            dialog.cancel_button.click()

    dialog.progress_reported.connect(on_progress)
    with qtbot.waitSignal(dialog.trained, timeout=MS) as blocker:
        dialog.start_training()
    result = blocker.args[0]
    assert result.cancelled
    assert "Cancelled" in dialog.status_label.text()
    # The head was chosen by cross-validation on the training photos, whatever validated the rest.
    assert "(validation photos, best epoch" in dialog.status_label.text()
    assert "chosen on your photos by 5-fold cross-validation" in dialog.results.head_summary.text()
    assert dialog.save_model_button.isEnabled()
    assert len(result.history) < 20


def test_closing_the_dialog_stops_training(qtbot, dialog: FinetuneDialog, controller: Controller,
                                           tmp_path: Path) -> None:
    dialog.labels.import_folder(_colour_folder(tmp_path / "data", per_class=6))
    dialog.mode_combo.setCurrentIndex(2)
    dialog.epochs_spin.setValue(500)
    dialog.show()
    with qtbot.waitSignal(dialog.progress_reported, timeout=MS,
                          check_params_cb=lambda p: getattr(p, "phase", "") == "train"):
        dialog.start_training()
    with qtbot.waitSignal(dialog.trained, timeout=MS) as blocker:
        dialog.close()
    result = blocker.args[0]
    assert result.cancelled
    assert len(result.history) < 50


def test_training_choices_are_remembered(qtbot, controller: Controller, tmp_path: Path) -> None:
    from PySide6.QtCore import QSettings

    from vit_desktop.gui.settings import AppSettings

    settings = AppSettings(QSettings(str(tmp_path / "s.ini"), QSettings.Format.IniFormat))
    first = FinetuneDialog(controller, settings=settings)
    qtbot.addWidget(first)
    assert first.config().mode == "head" and first.config().epochs is None  # the defaults
    first.mode_combo.setCurrentIndex(first.mode_combo.findData("partial"))
    first.epochs_spin.setValue(7)
    settings.sync()
    again = FinetuneDialog(controller, settings=AppSettings(QSettings(str(tmp_path / "s.ini"),
                                                                      QSettings.Format.IniFormat)))
    qtbot.addWidget(again)
    assert again.config().mode == "partial" and again.config().epochs == 7


def test_keys_edit_the_labelled_set(qtbot, dialog: FinetuneDialog, tmp_path: Path,
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    from PySide6.QtWidgets import QFileDialog, QInputDialog, QMessageBox

    labels = dialog.labels
    assert labels.import_folder(_colour_folder(tmp_path / "data", per_class=4))
    dialog.show()
    dialog.activateWindow()
    qtbot.waitUntil(dialog.isActiveWindow, timeout=5000)
    # Delete on the photo list takes the selected photos out of the class (here "blue").
    labels.photo_list.setFocus()
    labels.photo_list.item(0).setSelected(True)
    labels.photo_list.item(1).setSelected(True)
    qtbot.keyClick(labels.photo_list, Qt.Key.Key_Delete)
    assert dialog.data.counts() == {"blue": 2, "green": 4, "red": 4}
    assert "Ctrl+Z puts them back" in dialog.status_label.text()
    # Ctrl+Z puts them back; an import that replaced the set is undone the same way.
    qtbot.keyClick(labels.photo_list, Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier)
    assert dialog.data.counts() == {"blue": 4, "green": 4, "red": 4}
    assert labels.import_folder(_colour_folder(tmp_path / "other", per_class=2))
    assert dialog.data.counts() == {"blue": 2, "green": 2, "red": 2}
    qtbot.keyClick(labels.class_list, Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier)
    assert dialog.data.counts() == {"blue": 4, "green": 4, "red": 4}
    labels.photo_list.item(0).setSelected(True)
    labels.photo_list.item(1).setSelected(True)
    labels.photo_list.setFocus()
    qtbot.keyClick(labels.photo_list, Qt.Key.Key_Delete)
    assert dialog.data.counts() == {"blue": 2, "green": 4, "red": 4}
    # F2 renames the selected class; Delete deletes it, once confirmed.
    labels.class_list.setFocus()
    monkeypatch.setattr(QInputDialog, "getText", staticmethod(lambda *a, **k: ("navy", True)))
    qtbot.keyClick(labels.class_list, Qt.Key.Key_F2)
    assert list(dialog.data.counts()) == ["navy", "green", "red"]
    monkeypatch.setattr(QMessageBox, "question", staticmethod(lambda *a, **k: QMessageBox.StandardButton.Yes))
    qtbot.keyClick(labels.class_list, Qt.Key.Key_Delete)
    assert dialog.data.counts() == {"green": 4, "red": 4}
    # Ctrl+S saves the labels from anywhere in the dialog.
    target = tmp_path / "keys.vitlabels.json"
    monkeypatch.setattr(QFileDialog, "getSaveFileName", staticmethod(lambda *a, **k: (str(target), "")))
    dialog.epochs_spin.setFocus()
    qtbot.keyClick(dialog.epochs_spin, Qt.Key.Key_S, Qt.KeyboardModifier.ControlModifier)
    assert LabelledSet.load(target)[0].counts() == {"green": 4, "red": 4}
    assert "(Del)" in labels.remove_photos_button.toolTip()


def test_the_window_keeps_answering_while_training_runs(qtbot, dialog: FinetuneDialog, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """Decoding 2,005 photos at Train made Python collect every object of the process while holding
    the GIL: the window stopped answering (0.3 s with DeiT-Tiny, seconds with a gallery of results).
    Here such a collection happens in the job, over a heap the size of a long session's."""
    import gc
    import time

    from PySide6.QtCore import QTimer

    from vit_desktop.core import training

    dialog.labels.import_folder(_colour_folder(tmp_path / "data", per_class=4))
    session = [[i] for i in range(1_500_000)]  # what a window with many results keeps alive
    real = training.finetune
    collections: list[float] = []

    def finetune_collecting(*args, **kwargs):
        start = time.perf_counter()
        gc.collect()  # what thousands of decoded photos trigger, at a known moment
        collections.append(time.perf_counter() - start)
        return real(*args, **kwargs)

    monkeypatch.setattr(training, "finetune", finetune_collecting)
    ticks = [time.perf_counter()]
    timer = QTimer()
    timer.timeout.connect(lambda: ticks.append(time.perf_counter()))
    timer.start(10)
    try:
        with qtbot.waitSignal(dialog.trained, timeout=MS):
            dialog.start_training()
    finally:
        timer.stop()
        gc.unfreeze()
    assert len(session) and collections
    longest = max(b - a for a, b in zip(ticks, ticks[1:]))
    assert longest < 0.15, f"the window did not answer for {longest:.2f} s (the collection took {collections[0]:.2f} s)"


def test_the_progress_bar_counts_the_whole_run_and_the_result_names_the_backbone_kept(
        qtbot, dialog: FinetuneDialog, tmp_path: Path) -> None:
    """At the end of epoch 6 of 8 the bar read 100 %: it counted the steps of one epoch."""
    from vit_desktop.core.training import TrainProgress

    dialog.labels.import_folder(_colour_folder(tmp_path / "data", per_class=6))
    dialog.mode_combo.setCurrentIndex(dialog.mode_combo.findData("partial"))
    dialog.epochs_spin.setValue(4)
    bar = dialog.progress_bar
    at_epoch_end: list[tuple[int, int, float, str]] = []

    def on_progress(p: TrainProgress) -> None:
        if p.phase == "val":
            at_epoch_end.append((p.epoch, p.epochs, bar.value() / bar.maximum(), bar.text()))

    dialog.progress_reported.connect(on_progress)
    with qtbot.waitSignal(dialog.trained, timeout=MS) as blocker:
        dialog.start_training()
    result = blocker.args[0]
    assert at_epoch_end and all(share == pytest.approx(epoch / epochs) for epoch, epochs, share, _ in at_epoch_end)
    assert at_epoch_end[0][3] == "training 25%"
    assert bar.value() == bar.maximum() and bar.text() == "100%"  # done
    # Which backbone the saved model has, in the words the command line prints.
    from vit_desktop.core.training.results import describe

    backbone = describe(result).backbone
    assert backbone is not None and backbone.startswith("kept" if result.best_epoch else "discarded")
    assert f"backbone {backbone}" in dialog.status_label.text()
    # The same counting when the run stops early: epoch 6 of 8 done is 75 %, whatever its steps.
    dialog._on_progress(TrainProgress("train", 6, 8, 2, 4, 0.5, 0.9))
    assert (bar.value(), bar.maximum()) == (22, 32)
    dialog._on_progress(TrainProgress("val", 6, 8, 4, 4, 0.5, 0.9, 0.4, 0.97))
    assert bar.value() / bar.maximum() == 0.75 and bar.text() == "training 75%"
    dialog._on_progress(TrainProgress("decode", 0, 0, 3, 12, message="reading photos 3/12"))
    assert bar.text() == "reading photos 25%"


def test_the_status_line_lets_go_of_the_model_in_use_when_the_window_switches(
        qtbot, dialog: FinetuneDialog, controller: Controller, tmp_path: Path) -> None:
    dialog.labels.import_folder(_colour_folder(tmp_path / "data", per_class=4))
    with qtbot.waitSignal(dialog.trained, timeout=MS):
        dialog.start_training()
    with qtbot.waitSignal(controller.model_changed, timeout=MS):
        dialog.use_button.click()
    assert dialog.status_label.text().startswith("Now classifying with tiny base (3 classes) in the main window")
    assert dialog.base_label.text() == "tiny base"  # what training starts from: not the model in use
    # The window switches to another model: the line no longer says the dialog's model is in use.
    module = VisionTransformer(image_size=32, patch_size=8, num_layers=2, num_heads=2, hidden_dim=16, mlp_dim=32,
                               num_classes=2)
    card = ModelCard("other base", "file", "", Architecture(32, 8, 2, 2, 16, 32, 2), ("x", "y"),
                     Preprocess(crop_size=32, resize_size=36))
    with qtbot.waitSignal(controller.model_changed, timeout=MS):
        controller.use_module(module, card, device="cpu")
    assert "Now classifying" not in dialog.status_label.text()
    assert dialog.status_label.text() == "The main window now classifies with other base; training starts from it"
    assert dialog.base_label.text() == "other base"
    # That base was made in memory: with the window on the dialog's model again, it cannot be loaded to
    # start from, and training says so rather than starting from the model in use.
    with qtbot.waitSignal(controller.model_changed, timeout=MS):
        dialog.use_button.click()
    dialog.start_training()
    qtbot.waitUntil(lambda: dialog._job is None, timeout=MS)
    assert "other base is no longer loaded and has no file to load it from" in dialog.status_label.text()


def test_an_empty_dialog_says_what_to_do_first(qtbot, dialog: FinetuneDialog) -> None:
    labels = dialog.labels
    assert not dialog.train_button.isEnabled() and not dialog.names_button.isEnabled()
    assert dialog.train_button.toolTip().startswith("Add classes first: Add… a class and drop photos on it, "
                                                    "or Import folder…")
    assert labels.class_list.placeholder.startswith("No classes yet. Add… a class")
    dialog.show()
    qtbot.waitExposed(dialog)

    def colours_of(widget) -> set[int]:
        image = widget.grab().toImage()
        return {image.pixel(x, y) for x in range(0, image.width(), 2) for y in range(0, image.height(), 2)}

    assert len(colours_of(labels.class_list.viewport())) > 2  # the words are drawn, not an empty white box
    assert labels.add_class("cats")
    assert dialog.train_button.isEnabled() and dialog.names_button.isEnabled()
    assert "Add classes first" not in dialog.train_button.toolTip()
    assert labels.photo_list.placeholder == "No photos in “cats” yet: drop photos here, or Add photos…"
    assert len(colours_of(labels.photo_list.viewport())) > 2
    assert labels.delete_class("cats")
    assert not dialog.train_button.isEnabled()



def _decodes(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The thread each thumbnail decode runs on ("gui" or "pool"), recorded as they happen."""
    import threading

    from vit_desktop.gui import thumbnails

    threads: list[str] = []
    real = thumbnails.load_scaled

    def recording(path: str, side: int):
        threads.append("gui" if threading.current_thread() is threading.main_thread() else "pool")
        return real(path, side)

    monkeypatch.setattr(thumbnails, "load_scaled", recording)
    return threads


def _thumbnail_area(rows, row: int):
    """What the user sees where the row's thumbnail goes (the square at its left end)."""
    rect = rows.visualItemRect(rows.item(row))
    side = rows.iconSize().width()
    return rows.viewport().grab().toImage().copy(rect.left(), rect.top(), side + 8, rect.height())


def _reds(image) -> int:
    return sum(1 for x in range(image.width()) for y in range(image.height())
               if image.pixelColor(x, y).red() > 180 and image.pixelColor(x, y).green() < 90)


def test_the_photo_list_shows_thumbnails_decoded_off_the_gui_thread(qtbot, dialog: FinetuneDialog, tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    from PySide6.QtCore import QEvent
    from PySide6.QtGui import QHelpEvent
    from PySide6.QtWidgets import QApplication, QToolTip

    threads = _decodes(monkeypatch)
    data = _colour_folder(tmp_path / "data", per_class=3)
    (data / "red" / "broken.png").write_bytes(b"not a png")
    labels = dialog.labels
    labels.import_folder(data)
    labels.class_list.setCurrentRow(2)  # red
    dialog.show()
    qtbot.waitExposed(dialog)
    rows = labels.photo_list
    by_name = {rows.item(i).text(): i for i in range(rows.count())}
    assert set(by_name) == {"0.png", "1.png", "2.png", "broken.png"}
    # Each photo's red disc shows in its row: the thumbnail is the photo, not a stand-in.
    qtbot.waitUntil(lambda: all(_reds(_thumbnail_area(rows, by_name[f"{i}.png"])) > 20 for i in range(3)),
                    timeout=MS)
    assert threads and set(threads) == {"pool"}  # never decoded on the GUI thread
    # A photo that cannot be read shows a warning sign where its thumbnail would be, and says why.
    broken = by_name["broken.png"]
    qtbot.waitUntil(lambda: labels.loader.thumbnail_error(rows.item(broken).data(Qt.ItemDataRole.UserRole))
                    is not None, timeout=MS)
    sign = _thumbnail_area(rows, broken)
    base = rows.palette().base().color().rgb()
    drawn = sum(1 for x in range(sign.width()) for y in range(sign.height()) if sign.pixel(x, y) != base)
    assert drawn > 100 and _reds(sign) < 20  # not the empty square of a row still waiting, not a photo
    centre = rows.visualItemRect(rows.item(broken)).center()
    QApplication.sendEvent(rows.viewport(), QHelpEvent(QEvent.Type.ToolTip, centre, rows.viewport().mapToGlobal(centre)))
    assert "broken.png" in QToolTip.text() and "cannot be read" in QToolTip.text()
    QToolTip.hideText()


def test_a_class_of_hundreds_of_photos_decodes_only_the_rows_on_screen(
        qtbot, dialog: FinetuneDialog, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import shutil

    threads = _decodes(monkeypatch)
    source = _colour_folder(tmp_path / "src", per_class=1) / "red" / "0.png"
    many = tmp_path / "data" / "red"
    many.mkdir(parents=True)
    for i in range(400):
        shutil.copy(source, many / f"{i:03d}.png")
    labels = dialog.labels
    labels.import_folder(tmp_path / "data")
    dialog.show()
    qtbot.waitExposed(dialog)
    rows = labels.photo_list
    assert rows.count() == 400
    qtbot.waitUntil(lambda: _reds(_thumbnail_area(rows, 0)) > 20, timeout=MS)
    on_screen = sum(1 for i in range(rows.count()) if rows.visualItemRect(rows.item(i)).intersects(rows.viewport().rect()))
    assert 0 < len(threads) <= on_screen + 5 < 400  # the rest wait until they are scrolled to
    rows.scrollToBottom()
    qtbot.waitUntil(lambda: _reds(_thumbnail_area(rows, 399)) > 20, timeout=MS)
    assert len(threads) < 100 and set(threads) == {"pool"}


def _result_of(classes: tuple[str, ...], mistakes: int = 0):
    """A trained model's result on a made-up validation: two photos per class, the first ``mistakes``
    of them taken for the next class."""
    import time

    from tests.support import tiny_model
    from vit_desktop.core.training import TrainConfig
    from vit_desktop.core.training.results import Validation, finish

    module, card = tiny_model(len(classes), labels=classes, name="tiny")
    y_true = [i // 2 for i in range(2 * len(classes))]
    y_pred = [(t + 1) % len(classes) if i < mistakes else t for i, t in enumerate(y_true)]
    paths = [f"/photos/{classes[t]}/{i}.png" for i, t in enumerate(y_true)]
    # Sure of each answer, right or wrong: 70 % on it, 20 % on the true class when wrong.
    proba = np.full((len(y_true), len(classes)), 0.1 / max(1, len(classes) - 2))
    for i, (t, p) in enumerate(zip(y_true, y_pred)):
        proba[i, p], proba[i, t] = (0.7, 0.2) if t != p else (0.9, 0.9)
    return finish(module, card, TrainConfig(), Validation(classes, y_true, y_pred, paths, proba=proba), history=[],
                  best_epoch=0, skipped=(), cancelled=False, started=time.perf_counter(), n_train=10)


BREEDS = ("Labrador retriever", "golden retriever", "German shepherd", "Bernese mountain dog", "Siberian husky",
          "border collie", "Yorkshire terrier", "Shetland sheepdog", "French bulldog", "Chihuahua")


@pytest.mark.parametrize("n", [5, 10])
def test_the_confusion_matrix_fits_its_tab(qtbot, dialog: FinetuneDialog, n: int) -> None:
    """At 5 classes two columns were cut behind a horizontal scroll bar."""
    from PySide6.QtWidgets import QApplication

    dialog.show()
    qtbot.waitExposed(dialog)
    view = dialog.results
    view.show_result(_result_of(BREEDS[:n]), {})
    view.setCurrentIndex(1)
    QApplication.processEvents()
    table = view.confusion_table
    assert table.columnCount() == n
    assert not table.horizontalScrollBar().isVisible()
    width = table.viewport().width()
    header = table.horizontalHeader()
    counts = table.fontMetrics().horizontalAdvance("100")
    for j in range(n):  # every column whole on screen, wide enough for a count
        assert 0 <= header.sectionViewportPosition(j) and header.sectionViewportPosition(j) + header.sectionSize(j) <= width
        assert header.sectionSize(j) > counts
    # Each header names its class (cut short at most), the tooltip in full.
    assert kept(table.horizontalHeaderItem(3)).toolTip() == f"predicted: {BREEDS[3]}"
    assert table.verticalHeaderItem(3).toolTip() == f"true: {BREEDS[3]}"


def test_mistakes_say_how_sure_the_model_was(qtbot, dialog: FinetuneDialog) -> None:
    view = dialog.results
    view.show_result(_result_of(BREEDS[:3], mistakes=2), {})
    assert [view.mistake_list.item(i).text() for i in range(view.mistake_list.count())] == [
        "0.png: Labrador retriever → golden retriever\ngolden retriever 70%, Labrador retriever 20%",
        "1.png: Labrador retriever → golden retriever\ngolden retriever 70%, Labrador retriever 20%",
    ]
    assert view.mistake_list.item(0).toolTip() == ("/photos/Labrador retriever/0.png\nthe model gave golden "
                                                   "retriever 70%, Labrador retriever (the true class) 20%")
    # Both lines show whole in the list at the dialog's size: the scores are not cut off at its edge.
    dialog.show()
    qtbot.waitExposed(dialog)
    view.setCurrentIndex(3)
    rect = view.mistake_list.visualItemRect(view.mistake_list.item(0))
    assert rect.right() <= view.mistake_list.viewport().width()
    assert rect.height() >= 2 * view.mistake_list.fontMetrics().height()
