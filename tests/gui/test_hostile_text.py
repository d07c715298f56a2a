"""Text from files and models is shown as it is: a model, a label, a photo's or a class folder's name
that looks like HTML is never rendered as HTML (``<img src=/local/file>`` would show that file), and
a model whose name is megabytes long does not freeze the Model menu."""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

import pytest
from PySide6.QtGui import Qt
from PySide6.QtWidgets import QLabel, QListWidget, QWidget

from tests.support import classify, colour_folder, load, tiny_model, write_image

MS = 60_000
IMG = '<img src="/etc/vit-desktop-test.png">'
NAME = f"{IMG}<b>bold</b> model"
LABELS = (f"{IMG} cat", "<b>dog</b>", '<a href="file:///etc/passwd">fox</a>')
DESCRIPTION = '<a href="https://example.com">click</a> <i>described</i>'
#: What the files and the model put in (the window's own markup, such as the bold head summary, is not).
MARKUP = ("<img", "<b>bold", "<b>dog", "<b>two", "<b>x<", "<a href", "<i>")


def hostile_model(path: Path) -> Path:
    from vit_desktop.core.models.model_file import save_model

    module, card = tiny_model(3, labels=LABELS, name=NAME)
    return save_model(path, module, replace(card, description=DESCRIPTION))






def rendered_markup(widget: QWidget) -> list[str]:
    """Every label and tooltip under ``widget`` that Qt would render as HTML although it holds the
    file's or the model's markup."""
    found = []
    for label in [widget, *widget.findChildren(QLabel)]:
        if isinstance(label, QLabel) and any(m in label.text() for m in MARKUP) \
                and label.textFormat() != Qt.TextFormat.PlainText:
            found.append(f"label {label.objectName() or type(label.parent()).__name__}: {label.text()!r}")
    tips = [(w, w.toolTip()) for w in [widget, *widget.findChildren(QWidget)]]
    for lst in widget.findChildren(QListWidget):
        tips += [(lst, lst.item(i).toolTip()) for i in range(lst.count())]
    for owner, tip in tips:
        if any(m in tip for m in MARKUP) and Qt.mightBeRichText(tip):
            found.append(f"tooltip of {type(owner).__name__}: {tip!r}")
    return found


def test_names_that_look_like_html_are_shown_as_text(qtbot, make_window, model_a: Path, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    from vit_desktop.core.paths import user_models_dir
    from vit_desktop.gui.main_window import MainWindow

    monkeypatch.setattr(MainWindow, "confirm_discard", lambda self, lost: True)  # the labels are not saved

    model = hostile_model(user_models_dir() / "hostile.safetensors")
    bold = write_image(tmp_path / "<b>x<" / "b>.png", seed=1)  # a path holding <b>x</b>.png
    img = write_image(tmp_path / '<img src="x.png">.png', seed=2)
    broken = tmp_path / "<i>broken</i>.png".replace("/", "_")
    broken.write_bytes(b"not a photo")
    w = make_window()
    load(qtbot, w, model_a)
    classify(qtbot, w, bold, img, broken)
    load(qtbot, w, model)  # the earlier model's results: the message bar names the new model
    assert NAME in w.message_bar.text
    classify(qtbot, w, bold, img)
    w.models.refresh_models()
    qtbot.waitUntil(lambda: any(i.name == NAME for i in w.model_menu.infos), timeout=MS)
    w.model_menu.rebuild()
    for row in range(w.proxy.rowCount()):  # each photo shown in the detail panel in turn
        w.gallery.setCurrentIndex(w.proxy.index(row, 0))
        assert not rendered_markup(w), rendered_markup(w)
    w.gallery.setCurrentIndex(w.proxy.index_of_path(str(img)))
    assert w.detail.title.text() == '<img src="x.png">.png'
    assert any(IMG in bar.toolTip() or "&lt;img" in bar.toolTip() for bar in w.detail.bars.bars)
    tips = [w.results_model.data(w.results_model.index(r, 0), Qt.ItemDataRole.ToolTipRole)
            for r in range(w.results_model.rowCount())]
    assert all("<img" not in t and "<b>" not in t for t in tips), tips
    assert all("<a href" not in (a.toolTip()) for a in w.model_menu.menu.actions())
    assert w.run_status.model_label.text().startswith(NAME)
    about = w.about_text()  # About is HTML on purpose: the model's name in it is escaped
    assert "<img" not in about and "&lt;img src=&quot;/etc/vit-desktop-test.png&quot;&gt;" in about

    w.open_finetune()
    dialog = w.finetune_dialog
    data = colour_folder(tmp_path / "colours", per_class=4)
    for name, colour in ((f"{IMG}cls", "red"), ("<b>two</b>", "green")):
        assert dialog.labels.add_class(name)
        dialog.labels.add_files(name, [str(data / colour)])
    assert dialog.base_label.text() == NAME
    with qtbot.waitSignal(dialog.trained, timeout=MS):
        dialog.start_training()
    dialog.labels.class_list.setCurrentRow(0)
    assert not rendered_markup(dialog), rendered_markup(dialog)
    assert not rendered_markup(w), rendered_markup(w)
    summary = dialog.results.head_summary.text()  # bold on purpose, class names escaped
    assert "<img" not in summary


def test_a_model_named_with_megabytes_leaves_the_model_menu_fast(qtbot, make_window, tmp_path: Path) -> None:
    from vit_desktop.core.models.model_file import save_model
    from vit_desktop.core.paths import user_models_dir

    module, card = tiny_model(3, name="N" * 10_000_000)
    path = save_model(user_models_dir() / "huge.safetensors", module, replace(card, description="D" * 10_000_000))
    w = make_window()
    w.models.refresh_models()
    qtbot.waitUntil(lambda: any(i.source == str(path) for i in w.model_menu.infos), timeout=MS)
    start = time.perf_counter()
    w.model_menu.rebuild()
    took = time.perf_counter() - start
    assert took < 0.5, f"building the Model menu took {took:.1f} s"
    entry = next(a for a in w.model_menu.menu.actions() if a.data() == str(path))
    assert len(entry.text()) < 200 and len(entry.toolTip()) < 1000
    # Loaded, its name is cut too: the status bar and the About box stay a line.
    start = time.perf_counter()
    load(qtbot, w, path)
    assert len(w.run_status.model_label.text()) < 1200
    assert len(w.about_text()) < 3000
    assert time.perf_counter() - start < 10


@pytest.fixture(autouse=True)
def _no_real_file_shown() -> None:
    assert not Path("/etc/vit-desktop-test.png").exists()
