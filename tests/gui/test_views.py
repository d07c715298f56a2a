"""Pieces of the window a user handles directly: sorting and filtering, zoom and pan, start-up."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from PySide6.QtCore import QPoint, QPointF, Qt
from PySide6.QtGui import QImage

from vit_desktop.core.types import ClassifyResult, Heatmap, Prediction
from vit_desktop.gui.results_model import FilterMode, ResultsFilter, ResultsModel, Roles

REPO = Path(__file__).resolve().parents[2]


def result(name: str, label: str, score: float, *, uncertain: bool = False) -> ClassifyResult:
    return ClassifyResult(path=f"/photos/{name}", predictions=(Prediction(label, 0, score),), uncertain=uncertain)


@pytest.fixture
def models(qapp) -> tuple[ResultsModel, ResultsFilter]:
    model = ResultsModel()
    proxy = ResultsFilter()
    proxy.setSourceModel(model)
    model.add_results([
        result("b.jpg", "tabby cat", 0.91),
        result("a.jpg", "golden retriever", 0.42, uncertain=True),
        ClassifyResult(path="/photos/c.jpg", error="cannot identify image file"),
        result("d.jpg", "Tabby cat", 0.65),
    ])
    return model, proxy


def names(proxy: ResultsFilter) -> list[str]:
    return [proxy.index(r, 0).data() for r in range(proxy.rowCount())]


def test_sort_by_score_name_and_back_to_arrival(models) -> None:
    _model, proxy = models
    proxy.set_sort_key(3)  # score, high first; errors last
    assert names(proxy) == ["b.jpg", "d.jpg", "a.jpg", "c.jpg"]
    proxy.set_sort_key(1)
    assert names(proxy) == ["a.jpg", "b.jpg", "c.jpg", "d.jpg"]
    proxy.set_sort_key(0)
    assert names(proxy) == ["b.jpg", "a.jpg", "c.jpg", "d.jpg"]


def test_filter_by_label_state_and_score(models) -> None:
    model, proxy = models
    proxy.set_text("TABBY")  # case-insensitive, on the label
    assert names(proxy) == ["b.jpg", "d.jpg"]
    proxy.set_text("")
    proxy.set_mode(FilterMode.UNCERTAIN)
    assert names(proxy) == ["a.jpg"]
    proxy.set_mode(FilterMode.ERRORS)
    assert names(proxy) == ["c.jpg"]
    proxy.set_mode(FilterMode.CONFIDENT)
    assert names(proxy) == ["b.jpg", "d.jpg"]
    proxy.set_mode(FilterMode.ALL)
    proxy.set_min_score(0.6)
    assert names(proxy) == ["b.jpg", "d.jpg"]
    # Rows arriving later are filtered as they come.
    model.add_results([result("e.jpg", "tabby cat", 0.99), result("f.jpg", "tabby cat", 0.1)])
    assert names(proxy) == ["b.jpg", "d.jpg", "e.jpg"]


def test_a_file_seen_again_updates_its_row(models) -> None:
    model, _proxy = models
    model.add_results([result("a.jpg", "labrador", 0.8)])
    assert model.rowCount() == 4
    assert model.data(model.index(1), Roles.LABEL) == "labrador"


def test_removed_rows_go_back_where_they_were(models) -> None:
    model, proxy = models
    paths = [r.path for r in model.results()]
    removed = model.remove_paths([paths[0], paths[2], "/not/listed.jpg"])
    assert [row for row, _ in removed] == [0, 2]
    assert [r.path for r in model.results()] == [paths[1], paths[3]]
    assert model.row_of(paths[3]) == 1 and proxy.rowCount() == 2
    # A photo listed again in the meantime keeps its new row; the other goes back to its place.
    model.add_results([result("c.jpg", "new", 0.5)])
    assert model.restore(removed) == [paths[0]]
    assert [r.path for r in model.results()] == [paths[0], paths[1], paths[3], paths[2]]
    assert [model.row_of(p) for p in paths] == [0, 1, 3, 2]


def test_a_scattered_removal_of_a_long_list_goes_back_in_order(qapp) -> None:
    model = ResultsModel()
    model.add_results([result(f"p{i:03d}.jpg", "tabby cat", 0.5) for i in range(100)])
    before = [r.path for r in model.results()]
    removed = model.remove_paths(before[::3])  # 34 separate rows: one reset, not 34 row removals
    assert len(removed) == 34 and [r.path for r in model.results()] == [p for i, p in enumerate(before) if i % 3]
    assert all(model.row_of(r.path) == i for i, r in enumerate(model.results()))
    assert model.restore(removed) == before[::3]
    assert [r.path for r in model.results()] == before
    assert all(model.row_of(p) == i for i, p in enumerate(before))


def test_zoom_keeps_the_point_under_the_cursor_and_drag_pans(qtbot) -> None:
    from vit_desktop.gui.image_view import ImageView

    view = ImageView()
    qtbot.addWidget(view)
    view.resize(400, 300)
    view.show()
    image = QImage(200, 100, QImage.Format.Format_RGB888)
    image.fill(Qt.GlobalColor.darkGreen)
    view.set_image(image, (2000, 1000))  # a preview of a photo ten times larger
    heat = Heatmap(grid=np.eye(4, dtype=np.float32), crop_box=(500.0, 0.0, 1500.0, 1000.0), image_size=(2000, 1000))
    view.set_heatmap(heat, "inferno")
    fit = view.zoom
    assert fit == pytest.approx((400 - 16) / 2000)

    anchor = QPointF(100, 120)
    before = (anchor - view._offset) / view.zoom
    view.zoom_by(2.0, anchor)
    after = (anchor - view._offset) / view.zoom
    assert view.zoom == pytest.approx(2 * fit)
    assert (after.x(), after.y()) == pytest.approx((before.x(), before.y()))

    offset = QPointF(view._offset)
    qtbot.mousePress(view, Qt.MouseButton.LeftButton, pos=QPoint(200, 150))
    qtbot.mouseMove(view, QPoint(230, 140))
    qtbot.mouseRelease(view, Qt.MouseButton.LeftButton, pos=QPoint(230, 140))
    assert view._offset - offset == QPointF(30, -10)

    qtbot.mouseDClick(view, Qt.MouseButton.LeftButton, pos=QPoint(10, 10))
    assert view.zoom == pytest.approx(fit)
    # The overlay really is painted over the crop: its centre turns from green to the colour map.
    grabbed = view.grab().toImage()
    centre = grabbed.pixelColor(200, 150)
    view.set_overlay_visible(False)
    plain = view.grab().toImage().pixelColor(200, 150)
    assert centre != plain


def test_window_appears_without_importing_torch() -> None:
    """Start-up stays fast: torch is imported by the compute thread, after the window is up."""
    code = textwrap.dedent(f"""
        import os, sys
        os.environ["QT_QPA_PLATFORM"] = "offscreen"
        sys.path.insert(0, {str(REPO)!r})
        from PySide6.QtCore import QSettings
        from PySide6.QtWidgets import QApplication
        from vit_desktop.gui.main_window import MainWindow
        app = QApplication([])
        w = MainWindow(settings=QSettings(os.devnull, QSettings.Format.IniFormat))
        w.show()
        app.processEvents()
        print("torch" in sys.modules, "torchvision" in sys.modules)
        w.shutdown()
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split()[-2:] == ["False", "False"]


def test_painting_for_a_long_time_does_not_exhaust_none() -> None:
    """Hundreds of thousands of void Qt calls (a gallery scrolled for a while) must not abort."""
    code = textwrap.dedent(f"""
        import os, sys
        os.environ["QT_QPA_PLATFORM"] = "offscreen"
        sys.path.insert(0, {str(REPO)!r})
        import vit_desktop.gui
        from PySide6.QtGui import QColor, QGuiApplication, QImage, QPainter
        app = QGuiApplication([])
        image = QImage(8, 8, QImage.Format.Format_RGB32)
        painter = QPainter(image)
        for _ in range(300_000):
            painter.setBrush(QColor("red"))
        painter.end()
        print("done")
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-500:]
    assert out.stdout.strip() == "done"


def test_thumbnails_are_decoded_off_the_gui_thread_cached_and_bounded(qtbot, tmp_path: Path) -> None:
    from tests.support import write_image
    from vit_desktop.gui.thumbnails import ImageLoader

    loader = ImageLoader(thumb_size=32, capacity=2)
    paths = [str(write_image(tmp_path / f"t{i}.png", size=(120, 60), seed=i)) for i in range(3)]
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"nope")
    try:
        ready: list[str] = []
        loader.thumbnail_ready.connect(ready.append)
        assert loader.thumbnail(paths[0]) is None  # not decoded yet: requested
        qtbot.waitUntil(lambda: ready == [paths[0]], timeout=30_000)
        pix = loader.thumbnail(paths[0])
        assert pix is not None and (pix.width(), pix.height()) == (32, 16)
        for p in paths[1:]:
            loader.thumbnail(p)
        qtbot.waitUntil(lambda: all(loader.thumbnail(p) is not None for p in paths[1:]), timeout=30_000)
        assert loader.thumbnail(paths[0]) is None  # evicted: capacity 2, least recently used
        loader.thumbnail(str(bad))
        qtbot.waitUntil(lambda: loader.thumbnail_error(str(bad)) is not None, timeout=30_000)
    finally:
        loader.shutdown()


def test_gallery_columns_share_the_width_out(qtbot, models) -> None:
    from PySide6.QtWidgets import QStyleFactory

    from vit_desktop.gui.gallery import GalleryView
    from vit_desktop.gui.thumbnails import ImageLoader

    model, proxy = models
    loader = ImageLoader()
    try:
        view = GalleryView(loader)
        qtbot.addWidget(view)
        # As the window shows it: Fusion and the sheet's frameless list (see gui/style.py).
        fusion = QStyleFactory.create("Fusion")
        fusion.setParent(view)  # the view owns its style: Python must not free it first
        view.setStyle(fusion)
        view.setStyleSheet((REPO / "resources" / "style.qss").read_text(encoding="utf-8"))
        view.setModel(proxy)
        view.resize(640, 600)
        view.show()
        qtbot.waitExposed(view)
        card = view.delegate.card.width()
        # Four photos (no scroll bar), then more (the bar appears and narrows the viewport only).
        for width in [*range(300, 1400, 23), -1, *range(300, 1400, 23)]:
            if width < 0:
                model.add_results([result(f"x{i}.jpg", "tabby cat", 0.9) for i in range(40)])
                qtbot.waitUntil(lambda: view.verticalScrollBar().isVisible(), timeout=5000)
                continue
            view.resize(width, 600)
            qtbot.wait(10)
            rects = [view.visualRect(proxy.index(r, 0)) for r in range(proxy.rowCount())]
            first_row = [r for r in rects if r.top() == rects[0].top()]
            # Cards are spread over the row, and the band left on the right has no room for one more.
            spare = view.viewport().width() - first_row[-1].right()
            assert spare < card or len(first_row) == len(rects), (width, len(first_row), spare)
            if len(first_row) > 1:
                gaps = {b.left() - a.right() for a, b in zip(first_row, first_row[1:])}
                assert len(gaps) == 1, (width, gaps)
    finally:
        loader.shutdown()
