"""The window and the library: photos come back at the next start without being classified again,
"none of these" is said instead of a bare best guess, and labels go into XMP sidecars."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from PySide6.QtWidgets import QApplication, QMessageBox

from tests.support import classify, load, write_image
from vit_desktop.core.io.xmp import read_keywords

MS = 60_000






def test_the_last_photos_come_back_from_the_library_at_the_next_start(qtbot, make_window, model_a,
                                                                       tmp_path: Path) -> None:
    folder = tmp_path / "photos"
    for i in range(5):
        write_image(folder / f"p{i}.png", seed=i)
    w = make_window()
    load(qtbot, w, model_a)
    classify(qtbot, w, folder)
    first = {r.path: r.predictions for r in w.results_model.results()}
    w.close()

    w2 = make_window()
    with qtbot.waitSignal(w2.run_status.run_finished, timeout=MS):
        w2.start()  # the last model loads, and the last photos come back
    assert {r.path: r.predictions for r in w2.results_model.results()} == first
    assert "5 from the library, 0 classified" in w2.run_status.status_label.text()
    assert "listed last time" in w2.message_bar.text and w2.message_bar.action_button.text().startswith("Clear")


def test_photos_of_none_of_the_classes_say_so(qtbot, make_window, model_a, tmp_path: Path) -> None:
    w = make_window()
    load(qtbot, w, model_a)
    for i in range(4):
        write_image(tmp_path / f"p{i}.png", seed=i)
    classify(qtbot, w, tmp_path)
    results = w.results_model.results()
    assert all(r.known_score is not None for r in results)
    # A rule nothing passes (as a calibrated model's would for photos of other things).
    rule = dataclasses.replace(w.view_state.rule, threshold=1.01)
    w.view_state.set_rule(rule)
    assert all(r.uncertain for r in w.results_model.results())
    verdict = rule.verdict
    assert f"4 {verdict}" in w.pane.summary.text()
    w.gallery.setCurrentIndex(w.proxy.index(0, 0))
    assert w.detail.verdict.isVisible() and w.detail.verdict.text().lower().startswith(verdict)
    assert verdict in w.proxy.index(0, 0).data(3).lower()  # the card's tooltip says it too
    # The user's own threshold takes over, and the spin box at its bottom gives the rule back.
    w.pane.threshold_spin.setValue(1)
    assert w.view_state.threshold == 0.01 and "0 uncertain" in w.pane.summary.text()
    w.pane.threshold_spin.setValue(0)
    assert w.view_state.threshold is None and f"4 {verdict}" in w.pane.summary.text()


def test_labels_go_into_xmp_sidecars_and_the_library_can_be_emptied(qtbot, make_window, model_a, tmp_path: Path,
                                                                      monkeypatch) -> None:
    w = make_window()
    load(qtbot, w, model_a)
    photo = write_image(tmp_path / "a.jpg")
    classify(qtbot, w, photo)
    r = w.results_model.results()[0]
    job = w.library.write_keywords([dataclasses.replace(r, uncertain=False)])
    assert job is not None
    with qtbot.waitSignal(job.finished, timeout=MS):
        pass
    assert read_keywords(photo).ours == (r.top.label,)
    assert "Wrote keywords into 1 XMP sidecar" in w.run_status.status_label.text()
    # Library ▸ Empty, confirmed: nothing is stored any more.
    def press_empty(box: QMessageBox) -> None:
        assert "1 photos" in box.text()
        next(b for b in box.buttons() if box.buttonRole(b) == QMessageBox.ButtonRole.DestructiveRole).click()

    monkeypatch.setattr(QMessageBox, "exec", press_empty)
    monkeypatch.setattr(QMessageBox, "question", lambda *a, **k: QMessageBox.StandardButton.Yes)
    job = w.library.show_dialog()
    with qtbot.waitSignal(job.finished, timeout=MS):
        pass
    qtbot.waitUntil(lambda: "library is empty" in w.run_status.status_label.text(), timeout=MS)
    classify(qtbot, w, photo)
    assert "Classified 1 image" in w.run_status.status_label.text()
    QApplication.processEvents()
