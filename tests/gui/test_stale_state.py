"""What the window says holds for what it shows: no banner, map or message outlives its reason."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support import classify, load, write_image
from vit_desktop.core.errors import DownloadError, Failure

MS = 60_000






def test_the_earlier_model_banner_goes_with_the_earlier_results(qtbot, make_window, model_a, model_b,
                                                                tmp_path: Path) -> None:
    w = make_window()
    load(qtbot, w, model_a)
    photo = write_image(tmp_path / "a.png")
    classify(qtbot, w, photo)
    load(qtbot, w, model_b)
    assert "classified by an earlier model" in w.message_bar.text
    # Its map is alpha's rollout: not shown under a Map box that says "Class map".
    w.gallery.setCurrentIndex(w.proxy.index(0, 0))
    assert w.detail.map_method == "class" and w.detail.current_heatmap is None
    classify(qtbot, w, photo)  # classified again: no result of an earlier model is left
    assert w.message_bar.text == ""
    load(qtbot, w, model_a)
    assert "classified by an earlier model" in w.message_bar.text
    w.commands.clear.trigger()
    assert w.message_bar.text == ""


def test_a_long_failure_is_shown_whole(qtbot, make_window) -> None:
    folder = "/tmp/" + "a-long-folder-name/" * 12
    message = (f"vit_b_16: weights not cached and the download failed (offline). "
               f"Put vit_b_16-c867db91.pth into {folder} and try again.")
    failure = Failure.of(DownloadError(message))
    assert failure.message == message and len(message) > 250
    w = make_window()
    w.models._on_model_failed(failure)
    assert folder in w.message_bar.text and w.message_bar.label.wordWrap()


def test_a_model_used_last_that_is_gone_is_said_and_the_demo_model_says_so_on_every_result(
        qtbot, make_window, tmp_path: Path) -> None:
    from vit_desktop.core import state
    from vit_desktop.core.paths import bundled_models_dir

    if not any(bundled_models_dir().glob("*.safetensors")):
        pytest.skip("no bundled demo model in this install")
    state.set_last_model(str(tmp_path / "cats.safetensors"))  # deleted since
    w = make_window()
    with qtbot.waitSignal(w.controller.model_changed, timeout=MS):
        w.start()
    text = w.message_bar.text
    assert "cats.safetensors" in text and "no longer there" in text and "demo model" in text.lower()
    classify(qtbot, w, write_image(tmp_path / "p.png"))
    w.gallery.setCurrentIndex(w.proxy.index(0, 0))
    assert w.detail.demo_note.isVisible() and "demo model" in w.detail.demo_note.text()
