"""The map of the photos: placed by their features, coloured by label; wheel zoom, drag pan, a click
shows the photo, and a lasso selects photos to label in the fine-tune dialog or copy."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PySide6.QtCore import QPoint, QPointF, Qt
from PySide6.QtGui import QWheelEvent
from PySide6.QtTest import QTest
from PySide6.QtWidgets import QFileDialog

from tests.support import WAIT_MS as MS
from tests.support import classify, load, scene
from vit_desktop.gui.map_view import MapWindow, PhotoMap


def mapped(qtbot, make_window, model_a, tmp_path: Path, n: int = 8):
    folder = tmp_path / "photos"
    folder.mkdir()
    for i in range(n):
        scene(seed=i).save(folder / f"p{i}.png")
    w = make_window()
    load(qtbot, w, model_a)
    classify(qtbot, w, folder)
    w.commands.photo_map.trigger()
    job = w.mapper.job
    assert job is not None
    with qtbot.waitSignal(job.finished, timeout=MS):
        pass
    window = w.mapper.window
    assert isinstance(window, MapWindow) and window.isVisible()
    qtbot.addWidget(window)
    window.resize(900, 700)
    window.view.fit()
    return w, window, folder


def viewport_point(window: MapWindow, x: float, y: float) -> QPoint:
    return window.view.mapFromScene(QPointF(x, y))


def test_each_photo_is_placed_by_its_features_and_coloured_by_its_label(qtbot, make_window, model_a,
                                                                        tmp_path: Path) -> None:
    w, window, _folder = mapped(qtbot, make_window, model_a, tmp_path)
    photos = window.scene.photos
    assert sorted(Path(p).name for p in photos) == [f"p{i}.png" for i in range(8)]
    # Each photo's label is its top-1 class (or the verdict of an uncertain one), and sets its colour.
    for path, item in photos.items():
        r = w.results_model.result_for(path)
        assert item.label == (w.results_model.verdict if r.uncertain else r.top.label)
        assert item.colour == window.scene.colours[item.label]
    counts = {window.legend.item(i).text() for i in range(window.legend.count())}
    labels = [item.label for item in photos.values()]
    assert counts == {f"{label} ({labels.count(label)})" for label in set(labels)}
    # The places are the layout's: photos spread out, not stacked.
    xs = {round(item.pos().x(), 3) for item in photos.values()}
    assert len(xs) == len(photos)
    assert w.commands.photo_map.shortcut().toString() == "Ctrl+Shift+P"


def test_wheel_zooms_about_the_cursor_drag_pans_and_a_click_shows_the_photo(qtbot, make_window, model_a,
                                                                             tmp_path: Path) -> None:
    w, window, _folder = mapped(qtbot, make_window, model_a, tmp_path)
    view = window.view
    before = view.zoom()
    at = QPoint(view.viewport().width() // 3, view.viewport().height() // 3)
    under = view.mapToScene(at)
    wheel = QWheelEvent(QPointF(at), QPointF(view.viewport().mapToGlobal(at)), QPoint(0, 0), QPoint(0, 240),
                        Qt.MouseButton.NoButton, Qt.KeyboardModifier.NoModifier, Qt.ScrollPhase.NoScrollPhase, False)
    view.wheelEvent(wheel)
    assert view.zoom() > before * 1.5
    after = view.mapToScene(at)
    assert abs(after.x() - under.x()) < 20 and abs(after.y() - under.y()) < 20  # the point stays put
    # A drag moves the map with the mouse.
    centre = view.mapToScene(view.viewport().rect().center())
    start, end = QPoint(300, 300), QPoint(200, 250)
    QTest.mousePress(view.viewport(), Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier, start)
    QTest.mouseMove(view.viewport(), end)
    QTest.mouseRelease(view.viewport(), Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier, end)
    moved = view.mapToScene(view.viewport().rect().center()) - centre
    assert moved.x() > 0 and moved.y() > 0
    # A click on a photo selects it there and makes it the gallery's current photo (the detail panel shows it).
    view.fit()
    path, item = sorted(window.scene.photos.items())[3]
    spot = viewport_point(window, item.pos().x(), item.pos().y())
    assert next(i for i in view.items(spot) if hasattr(i, "path")).path == path
    QTest.mouseClick(view.viewport(), Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier, spot)
    assert w.pane.current_path() == path and w.detail.result is not None and w.detail.result.path == path
    assert window.selected() == [path]


def test_a_lasso_selects_the_photos_inside_it_for_labelling_copying_and_the_gallery(qtbot, make_window, model_a,
                                                                                   tmp_path: Path, monkeypatch) -> None:
    w, window, _folder = mapped(qtbot, make_window, model_a, tmp_path)
    items = window.scene.photos
    xs = np.array([i.pos().x() for i in items.values()])
    ys = np.array([i.pos().y() for i in items.values()])
    cut = float(np.median(xs))
    expected = sorted(p for p, i in items.items() if i.pos().x() < cut)
    assert 0 < len(expected) < len(items)
    pad = window.scene.side
    corners = [(xs.min() - pad, ys.min() - pad), (cut, ys.min() - pad), (cut, ys.max() + pad),
               (xs.min() - pad, ys.max() + pad)]
    points = [viewport_point(window, x, y) for x, y in corners]
    vp = window.view.viewport()
    shift = Qt.KeyboardModifier.ShiftModifier
    with qtbot.waitSignal(window.view.lassoed, timeout=MS) as lassoed:
        QTest.mousePress(vp, Qt.MouseButton.LeftButton, shift, points[0])
        for p in points[1:] + points[:1]:
            QTest.mouseMove(vp, p)
        QTest.mouseRelease(vp, Qt.MouseButton.LeftButton, shift, points[0])
    assert sorted(lassoed.args[0]) == expected and sorted(window.selected()) == expected
    assert window.selection_label.text() == f"{len(expected)} selected" and window.label_button.isEnabled()

    # Select in gallery.
    window.select_button.click()
    assert sorted(r.path for r in w.pane.selected_results()) == expected

    # Label in the fine-tune dialog: a new class with exactly those photos.
    monkeypatch.setattr(window, "ask_class_name", lambda n, suggestion: "from the map")
    window.label_button.click()
    dialog = w.finetune_dialog
    assert dialog is not None and dialog.isVisible()
    qtbot.addWidget(dialog)
    data = dialog.labels.data
    assert "from the map" in data.classes
    assert sorted(str(p) for p, c in data.items if c == "from the map") == expected
    monkeypatch.setattr(w, "confirm_discard", lambda _lost: True)  # the labels are unsaved: closing would ask

    # Copy to folder: copies of those photos, the originals stay.
    dest = tmp_path / "copies"
    dest.mkdir()
    monkeypatch.setattr(QFileDialog, "getExistingDirectory", lambda *a, **k: str(dest))
    with qtbot.waitSignal(w.exporter.files_copied, timeout=MS):
        window.copy_button.click()
    assert sorted(p.name for p in dest.iterdir()) == sorted(Path(p).name for p in expected)
    assert all(Path(p).exists() for p in expected)


def test_the_map_needs_photos_and_a_model(qtbot, make_window, tmp_path: Path) -> None:
    w = make_window()
    w.commands.photo_map.trigger()  # nothing listed
    assert "Add photos first" in w.run_status.status_label.text() and w.mapper.job is None
    folder = tmp_path / "p"
    folder.mkdir()
    scene(seed=1).save(folder / "a.png")
    job = w.mapper.find([str(folder / "a.png")])
    with qtbot.waitSignal(job.finished, timeout=MS):
        pass
    assert "The map could not be made: No model loaded" in w.message_bar.text
    assert w.mapper.window is None


def test_the_scene_places_thousands_of_photos(qtbot) -> None:
    window = MapWindow(None)
    qtbot.addWidget(window)
    rng = np.random.default_rng(0)
    n = 3000
    paths = tuple(f"/nowhere/{i}.jpg" for i in range(n))
    labels = [f"class {i % 7}" if i % 5 else "none of these" for i in range(n)]
    window.set_map(PhotoMap(paths, rng.uniform(-1, 1, (n, 2)).astype(np.float32)), labels, "none of these")
    assert len(window.scene.photos) == n and window.legend.count() == 8
    assert window.scene.colours["none of these"].name() == "#9a9a9a"
    window.show()
    window.grab()  # paints every photo (colours only: too small for thumbnails) without decoding
