"""Find similar in the window: the gallery ordered by likeness to a photo, each card with its score,
and the way back to the usual order."""

from __future__ import annotations

import threading
from pathlib import Path

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QMenu

from tests.support import WAIT_MS as MS
from tests.support import classify, edited_copies, load, scene
from vit_desktop.gui.gallery import similarity_badge
from vit_desktop.gui.jobs import Outcome
from vit_desktop.gui.results_model import Roles


def shown(w) -> list[str]:
    return [Path(w.proxy.index(i, 0).data(Roles.PATH)).name for i in range(w.proxy.rowCount())]


def photos(folder: Path) -> Path:
    """Five different scenes and a re-encoded copy of the first: the copy is the one most alike."""
    folder.mkdir(parents=True)
    first = scene(seed=0)
    first.save(folder / "a-original.png")
    for i in range(1, 5):
        scene(seed=i).save(folder / f"b-other{i}.png")
    copies = edited_copies(first, folder / "copies", "z")
    for kind, path in copies.items():
        if kind != "reencode":
            path.unlink()
    return copies["reencode"]


def test_find_similar_orders_the_gallery_shows_scores_and_esc_goes_back(qtbot, make_window, model_a,
                                                                         tmp_path: Path) -> None:
    folder = tmp_path / "photos"
    copy = photos(folder)
    w = make_window()
    load(qtbot, w, model_a)
    classify(qtbot, w, folder)
    usual = shown(w)
    assert usual[0] == "a-original.png" and usual[-1] == "z-reencode.jpg" and len(usual) == 6

    w.gallery.setCurrentIndex(w.proxy.index(0, 0))  # a-original
    with qtbot.waitSignal(w.view_state.similar_changed, timeout=MS):
        w.commands.find_similar.trigger()
    order = shown(w)
    assert order[:2] == ["a-original.png", copy.name], order
    assert sorted(order) == sorted(usual)
    # Every card says how alike it is; the photo asked about says so instead of a number.
    badges = [similarity_badge(w.proxy.index(i, 0).data(Roles.SIMILARITY),
                               w.proxy.index(i, 0).data(Roles.SIMILARITY_KEY)) for i in range(w.proxy.rowCount())]
    assert badges[0] == "this photo"
    scores = [float(b) for b in badges[1:]]
    assert scores == sorted(scores, reverse=True) and scores[0] > 0.9
    strip = w.pane.similar_strip
    assert strip.isVisible() and "Photos like a-original.png" in strip.label.text()
    assert w.pane.sort_combo.currentText() == "Similar to a-original.png"
    assert "ordered by likeness" in w.run_status.status_label.text()

    # Esc, with nothing running, goes back to the order chosen before.
    w.commands.cancel.trigger()
    assert shown(w) == usual and not strip.isVisible()
    assert w.proxy.index(0, 0).data(Roles.SIMILARITY) is None
    assert w.pane.sort_combo.currentText() == "Order added"

    # So does the strip's button, and choosing another order in the box.
    with qtbot.waitSignal(w.view_state.similar_changed, timeout=MS):
        w.similar.find(str(copy))
    assert shown(w)[:2] == [copy.name, "a-original.png"]
    qtbot.mouseClick(strip.back_button, Qt.MouseButton.LeftButton)
    assert shown(w) == usual and w.view_state.similar is None
    with qtbot.waitSignal(w.view_state.similar_changed, timeout=MS):
        w.similar.find(str(copy))
    w.pane.sort_combo.setCurrentIndex(1)  # Name
    assert w.view_state.similar is None and w.pane.sort_combo.currentText() == "Name"


def test_find_similar_is_on_the_card_menu_and_needs_a_photo(qtbot, make_window, model_a, tmp_path: Path,
                                                            monkeypatch) -> None:
    folder = tmp_path / "photos"
    photos(folder)
    w = make_window()
    w.commands.find_similar.trigger()  # nothing selected: says what to do, starts nothing
    assert "Select a photo first" in w.run_status.status_label.text() and w.view_state.similar is None
    load(qtbot, w, model_a)
    classify(qtbot, w, folder)
    assert w.commands.find_similar.shortcut().toString() == "Ctrl+Shift+F"
    menus: list[QMenu] = []
    monkeypatch.setattr(QMenu, "popup", lambda self, *_a: menus.append(self))
    w.pane._on_context_menu(w.gallery.visualRect(w.proxy.index(2, 0)).center())
    assert menus and w.commands.find_similar in menus[0].actions()


def test_a_search_can_be_cancelled_with_esc(qtbot, make_window, model_a, tmp_path: Path) -> None:
    folder = tmp_path / "photos"
    photos(folder)
    w = make_window()
    load(qtbot, w, model_a)
    classify(qtbot, w, folder)
    # The compute thread is held until Esc has been pressed: the search cannot end before.
    gate = threading.Event()
    w.controller.run_task(lambda *_a: gate.wait(MS / 1000))
    job = w.similar.find(str(folder / "a-original.png"))
    assert job is not None and w.run_status.cancel_button.isVisible()
    with qtbot.waitSignal(job.finished, timeout=MS) as ended:
        w.commands.cancel.trigger()
        gate.set()
    assert ended.args == [Outcome.CANCELLED]
    assert "cancelled" in w.run_status.status_label.text()
    assert w.view_state.similar is None and not w.run_status.cancel_button.isVisible()


def test_another_model_ends_the_similar_order(qtbot, make_window, model_a, model_b, tmp_path: Path) -> None:
    folder = tmp_path / "photos"
    photos(folder)
    w = make_window()
    load(qtbot, w, model_a)
    classify(qtbot, w, folder)
    with qtbot.waitSignal(w.view_state.similar_changed, timeout=MS):
        w.similar.find(str(folder / "a-original.png"))
    load(qtbot, w, model_b)
    assert w.view_state.similar is None and not w.pane.similar_strip.isVisible()
