"""The window under what goes wrong: FIFOs among the photos, a model switch with results shown,
edits during training, signals, a machine without a display or without Qt's X11 libraries."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PySide6.QtCore import Qt

from tests.support import REPO, classify, colour_folder, load, write_image
from vit_desktop.gui.jobs import Outcome

MS = 60_000






@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this platform")
def test_a_fifo_among_the_photos_is_refused_and_quitting_does_not_wait_for_it(qtbot, make_window, model_a,
                                                                               tmp_path: Path) -> None:
    w = make_window()
    load(qtbot, w, model_a)
    fifo = tmp_path / "f.jpg"
    os.mkfifo(fifo)
    photo = write_image(tmp_path / "p.png")
    assert classify(qtbot, w, fifo, photo) is Outcome.DONE
    by_name = {Path(r.path).name: r for r in w.results_model.results()}
    assert "not a regular file" in (by_name["f.jpg"].error or "")
    assert by_name["p.png"].ok
    # Selecting it asks nothing of the FIFO; painting asks for a thumbnail, which must not block.
    w.gallery.setCurrentIndex(w.proxy.index_of_path(str(fifo)))
    w.gallery.viewport().repaint()
    qtbot.waitUntil(lambda: w.loader.thumbnail_error(str(photo)) is not None or
                    w.loader.thumbnail(str(photo)) is not None, timeout=MS)
    t0 = time.monotonic()
    w.close()
    assert time.monotonic() - t0 < 10
    assert w.controller.compute_thread.isFinished()


def test_results_of_an_earlier_model_are_marked_never_mixed_and_can_be_reclassified(
        qtbot, make_window, model_a, model_b, tmp_path: Path) -> None:
    w = make_window()
    load(qtbot, w, model_a)
    img = write_image(tmp_path / "x.png")
    classify(qtbot, w, img)
    first = w.results_model.results()[0]
    assert first.top.label in ("apple", "pear", "plum")
    load(qtbot, w, model_b)
    # The old answer stays, marked as the earlier model's, and the window offers to redo it.
    assert w.results_model.stale_results() == [first]
    assert "classified by an earlier model" in w.message_bar.text
    assert w.message_bar.action_button.text().startswith("Re-classify")
    w.gallery.setCurrentIndex(w.proxy.index(0, 0))
    d = w.detail
    assert d.stale and "earlier model (alpha)" in d.showing.text()
    # A class map of "pear" (alpha's class 1) must not be computed with beta's class 1.
    asked: list[object] = []
    original = w.controller.explain

    def explain(*a, **k):
        asked.append(a)
        return original(*a, **k)

    w.controller.explain = explain
    d.bars.bars[1].click()
    # Nothing is even scheduled: the recompute timer would ask the controller once it fires.
    assert not d._recompute_timer.isActive() and asked == []
    with qtbot.waitSignal(w.run_status.run_finished, timeout=MS):
        w.message_bar.action_button.click()
    again = w.results_model.results()
    assert len(again) == 1 and again[0].top.label in ("cat", "dog", "fox", "owl")
    assert w.results_model.stale_results() == [] and not d.stale


def test_the_labelled_set_cannot_change_while_training_runs(qtbot, make_window, model_a, tmp_path: Path) -> None:
    from vit_desktop.gui.finetune.dialog import FinetuneDialog

    w = make_window()
    load(qtbot, w, model_a)
    dialog = FinetuneDialog(w.controller, w, w.settings)
    qtbot.addWidget(dialog)
    dialog.show()
    dialog.labels.import_folder(colour_folder(tmp_path / "data", per_class=6))
    dialog.mode_combo.setCurrentIndex(2)
    dialog.epochs_spin.setValue(300)
    with qtbot.waitSignal(dialog.progress_reported, timeout=MS,
                          check_params_cb=lambda p: getattr(p, "phase", "") == "train"):
        dialog.start_training()
    before = dialog.data
    assert not dialog.labels.delete_class_button.isEnabled()
    assert not dialog.labels.delete_class("red")
    assert not dialog.labels.add_class("new")
    assert "Training is running" in dialog.status_label.text()
    assert dialog.data == before
    with qtbot.waitSignal(dialog.trained, timeout=MS) as blocker:
        dialog.cancel_training()
    assert blocker.args[0].card.labels == ("blue", "green", "red")  # the classes it was given
    assert dialog.labels.delete_class_button.isEnabled()
    # Saved from the window, a model gets the same permissions as one the command line writes.
    target = tmp_path / "saved.safetensors"
    assert dialog.save_model_to(target)
    assert stat.S_IMODE(target.stat().st_mode) == 0o644


def test_ctrl_q_quits_from_the_fine_tune_dialog(qtbot, make_window) -> None:
    from vit_desktop.gui.finetune.dialog import FinetuneDialog

    w = make_window()
    dialog = FinetuneDialog(w.controller, w, w.settings)
    qtbot.addWidget(dialog)
    dialog.show()
    dialog.activateWindow()
    qtbot.waitUntil(lambda: dialog.isActiveWindow(), timeout=5000)
    qtbot.keyClick(dialog, Qt.Key.Key_Q, Qt.KeyboardModifier.ControlModifier)
    qtbot.waitUntil(lambda: not w.isVisible(), timeout=5000)
    assert w.controller.compute_thread.isFinished()


def _two_labelled_classes(w, tmp_path: Path):
    """The window's fine-tune dialog, open, with two classes of six dropped photos each."""
    w.open_finetune()
    dialog = w.finetune_dialog
    data = colour_folder(tmp_path / "data", per_class=6)
    assert dialog.labels.add_class("reds") and dialog.labels.add_files("reds", [str(data / "red")]) == 6
    assert dialog.labels.add_class("blues") and dialog.labels.add_files("blues", [str(data / "blue")]) == 6
    return dialog


def test_fine_tune_work_survives_closing_the_dialog_and_quitting_asks_first(qtbot, make_window, model_a,
                                                                              tmp_path: Path, monkeypatch) -> None:
    w = make_window()
    load(qtbot, w, model_a)
    dialog = _two_labelled_classes(w, tmp_path)  # labelled by hand: two classes of dropped photos
    with qtbot.waitSignal(dialog.trained, timeout=MS):
        dialog.start_training()
        assert dialog.unsaved_work()[0] == "fine-tuning is still running"
    dialog.close()
    # Tools ▸ Fine-tune again: the same dialog, with its classes and its trained model.
    w.open_finetune()
    assert w.finetune_dialog is dialog and dialog.isVisible()
    assert dialog.data.counts() == {"reds": 6, "blues": 6} and dialog.save_model_button.isEnabled()
    dialog.close()

    asked: list[list[str]] = []

    def confirm_discard(lost: list[str]) -> bool:
        asked.append(lost)
        return False

    monkeypatch.setattr(w, "confirm_discard", confirm_discard)
    w.close()  # as Ctrl+Q does
    assert asked == [["the fine-tuned model (reds, blues) is not saved",
                      "the labelled photos (12 in 2 classes) are not saved"]]
    assert w.isVisible() and dialog.isVisible() and not w.controller.compute_thread.isFinished()
    # Saved, nothing is lost: quitting asks nothing and shuts down.
    assert dialog.save_model_to(tmp_path / "mine.safetensors")
    assert dialog.labels.save_project(tmp_path / "mine.vitlabels.json")
    assert dialog.unsaved_work() == []
    w.close()
    assert len(asked) == 1 and not w.isVisible() and w.controller.compute_thread.isFinished()


def _answer_the_quit_box(button: str, seen: list[list[str]]) -> None:
    """Click ``button`` in the "Quit without saving?" box once it is up; note the buttons it offered."""
    from PySide6.QtCore import QTimer
    from PySide6.QtWidgets import QApplication, QMessageBox

    def click() -> None:
        box = QApplication.activeModalWidget()
        if not isinstance(box, QMessageBox):
            QTimer.singleShot(20, click)
            return
        seen.append([b.text() for b in box.buttons()])
        offered = {b.text(): b for b in box.buttons()}
        # A box without the button is cancelled, so that the test fails rather than waits.
        (offered.get(button) or box.button(QMessageBox.StandardButton.Cancel)).click()

    QTimer.singleShot(0, click)


def test_save_and_quit_saves_the_fine_tuned_model_and_labels_and_stays_when_a_save_does_not_happen(
        qtbot, make_window, model_a, tmp_path: Path, monkeypatch) -> None:
    w = make_window()
    try:
        _save_and_quit(qtbot, w, model_a, tmp_path, monkeypatch)
    except BaseException:
        w.shutdown()  # a window left with unsaved work would ask, at teardown, a box no one answers
        raise


def _save_and_quit(qtbot, w, model_a, tmp_path: Path, monkeypatch) -> None:
    from PySide6.QtWidgets import QFileDialog

    from vit_desktop.core.inference.engine import Engine
    from vit_desktop.core.training.labelled_set import LabelledSet

    load(qtbot, w, model_a)
    dialog = _two_labelled_classes(w, tmp_path)
    with qtbot.waitSignal(dialog.trained, timeout=MS):
        dialog.start_training()
    dialog.close()
    answers: dict[str, str] = {}
    monkeypatch.setattr(QFileDialog, "getSaveFileName",
                        staticmethod(lambda parent, caption, *a, **k: (answers.get(caption, ""), "")))
    offered: list[list[str]] = []
    # The file dialog is cancelled: nothing is saved, and the window stays.
    _answer_the_quit_box("Save and quit", offered)
    w.close()
    assert sorted(offered[0]) == ["Cancel", "Quit without saving", "Save and quit"]
    assert w.isVisible() and dialog.isVisible() and not w.controller.compute_thread.isFinished()
    assert dialog.status_label.text() == "Not saved: no file was chosen"
    # The save fails (the folder is a file): the window stays, and the dialog says why.
    (tmp_path / "not a folder").write_text("x")
    answers["Save model"] = str(tmp_path / "not a folder" / "mine.safetensors")
    _answer_the_quit_box("Save and quit", offered)
    w.close()
    assert w.isVisible() and dialog.status_label.text().startswith("Could not save mine.safetensors")
    assert len(dialog.unsaved_work()) == 2
    # Both saved where asked: the window quits, and the model and the labels load back.
    answers["Save model"] = str(tmp_path / "mine.safetensors")
    answers["Save labels"] = str(tmp_path / "mine.vitlabels.json")
    _answer_the_quit_box("Save and quit", offered)
    w.close()
    assert not w.isVisible() and w.controller.compute_thread.isFinished()
    assert Engine.load(tmp_path / "mine.safetensors", device="cpu").card.labels == ("reds", "blues")
    assert LabelledSet.load(tmp_path / "mine.vitlabels.json")[0].counts() == {"reds": 6, "blues": 6}


def test_sigterm_quits_like_ctrl_q_and_keeps_the_settings(tmp_path: Path, model_a: Path) -> None:
    config = tmp_path / "config"
    data = tmp_path / "data"
    data.mkdir()
    (data / "state.json").write_text(json.dumps({"last_model": str(model_a)}), encoding="utf-8")
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen", XDG_CONFIG_HOME=str(config),
               VIT_DESKTOP_DATA_DIR=str(data), PYTHONPATH=str(REPO))
    proc = subprocess.Popen([sys.executable, "-m", "vit_desktop"], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    assert proc.stdout is not None
    try:
        for line in proc.stdout:
            lines.append(line)
            if "ready on CPU" in line:
                break
        proc.send_signal(signal.SIGTERM)
        rest, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 143, "".join(lines)
    saved = (config / "vit-desktop" / "vit-desktop.conf").read_text(encoding="utf-8")
    assert "geometry" in saved  # what closing the window saves


def test_without_a_display_or_with_qts_x11_libraries_missing_it_says_what_to_do(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from vit_desktop.gui import app

    monkeypatch.setattr(sys, "platform", "linux")
    for name in ("QT_QPA_PLATFORM", "DISPLAY", "WAYLAND_DISPLAY"):
        monkeypatch.delenv(name, raising=False)
    assert app.main([]) == 1  # before Qt is even asked, so no abort
    assert "no display to open the window on" in capsys.readouterr().err
    assert "no display" in (app.display_problem({}) or "")
    assert app.display_problem({"QT_QPA_PLATFORM": "offscreen"}) is None
    monkeypatch.setattr(app, "XCB_LIBRARIES", (("libvit-desktop-missing.so.7", "libvit-desktop-missing7"),
                                               *app.XCB_LIBRARIES))
    monkeypatch.setattr(app, "APT_LINE", "sudo apt-get install -y libvit-desktop-missing7")
    problem = app.display_problem({"DISPLAY": ":0"}) or ""
    assert "libvit-desktop-missing.so.7" in problem and "sudo apt-get install -y libvit-desktop-missing7" in problem


def test_the_desktop_file_opens_photos_with_the_program() -> None:
    import configparser

    entry = configparser.ConfigParser(interpolation=None)
    entry.read(REPO / "resources" / "vit-desktop.desktop", encoding="utf-8")
    desktop = entry["Desktop Entry"]
    assert desktop["Exec"].split() == ["vit-desktop", "%F"]
    assert desktop["Icon"] == "vit-desktop" and "image/jpeg" in desktop["MimeType"]
    assert (REPO / "resources" / "vit-desktop.png").is_file()
