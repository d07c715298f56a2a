"""What the window reads at start-up is data, never code, and a bad value falls back with a note:
a settings file holding a pickled object, numbers that are not numbers, a state file nested too
deep, a last model that is no longer a model."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from PySide6.QtCore import QSettings

from vit_desktop.gui.settings import AppSettings, unsafe_settings_lines

LOAD_MS = 60_000


class Planted:
    """What a pickled PySide::PyObjectWrapper runs when it is read back: here, makes a folder."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return os.makedirs, (str(self.marker),)


def plant(settings_path: Path, marker: Path) -> None:
    """A settings file with the object in the keys the window reads first, written as Qt writes it,
    escaped, quoted and inside a list, beside plain values."""
    qs = QSettings(str(settings_path), QSettings.Format.IniFormat)
    qs.setValue("model/device", Planted(marker))
    qs.setValue("overlay/opacity", 0.3)
    qs.setValue("folders/weights", "/photos/@Variant, not one")  # plain text that only looks like one
    qs.sync()
    del qs
    text = settings_path.read_text(encoding="latin-1")
    variant = text.split("device=", 1)[1].split("\n", 1)[0]
    assert variant.startswith("@Variant(") and "PyObjectWrapper" in variant
    text += ("[classify]\nthreshold=\\x40" + variant[1:] + "\n"
             'class_maps_in_runs="' + variant + '"\n'
             "[window]\nsplitter=a, " + variant + "\n")
    settings_path.write_text(text, encoding="latin-1")
    assert len(unsafe_settings_lines(settings_path.read_bytes())) == 4


def test_a_pickled_object_in_the_settings_is_never_unpickled(qtbot, make_window, settings_path: Path,
                                                             tmp_path: Path) -> None:
    marker = tmp_path / "it ran"
    plant(settings_path, marker)
    w = make_window()
    assert not marker.exists()
    assert "4 settings that were not a plain value" in w.message_bar.text
    assert w.settings.device == "auto" and w.detail.opacity.value() == 30  # the rest is kept
    w.close()  # saving parses every section of the file: nothing left to run there either
    assert not marker.exists()
    qs = QSettings(str(settings_path), QSettings.Format.IniFormat)
    assert set(qs.allKeys()) >= {"overlay/opacity", "window/geometry"}
    assert not marker.exists()
    assert make_window().settings.problem is None  # what the window writes itself is plain


def test_a_settings_file_that_cannot_be_cleaned_is_not_read(tmp_path: Path, qapp) -> None:
    marker = tmp_path / "it ran"
    folder = tmp_path / "ro"
    folder.mkdir()
    path = folder / "window.ini"
    plant(path, marker)
    folder.chmod(0o500)
    try:
        if os.access(folder, os.W_OK):
            pytest.skip("running as a user who can write anywhere")
        settings = AppSettings(QSettings(str(path), QSettings.Format.IniFormat))
        assert settings.problem is not None and "cannot be cleaned" in settings.problem
        assert settings.device == "auto" and settings.overlay().opacity == 0.5
        settings.qsettings.allKeys()
        settings.sync()
    finally:
        folder.chmod(0o700)
    assert not marker.exists()


def test_numbers_that_are_not_numbers_fall_back_to_the_defaults(settings_path: Path, qapp) -> None:
    settings_path.parent.mkdir(parents=True, exist_ok=True)
    settings_path.write_text("[classify]\nuncertain_below=inf\n[overlay]\nopacity=nan\ndiscard_ratio=-inf\n")
    s = AppSettings(QSettings(str(settings_path), QSettings.Format.IniFormat))
    # No threshold of the user's (each model's own rule decides), the default opacity and discard.
    assert s.threshold is None and s.overlay().opacity == 0.5 and s.overlay().discard_ratio == 0.0


def test_a_state_file_nested_too_deep_is_taken_as_empty(qtbot, make_window) -> None:
    from vit_desktop.core import paths, state

    path = paths.data_dir() / "state.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text('{"last_model": ' + "[" * 100_000 + "]" * 100_000 + "}")
    assert state.last_model() is None
    make_window()  # opens


@pytest.mark.parametrize("last", ["/etc/passwd", "truncated"])
def test_a_last_model_that_no_longer_loads_falls_back_with_a_note(qtbot, make_window, model_a: Path,
                                                                   tmp_path: Path, monkeypatch, last: str) -> None:
    from vit_desktop.core import state
    from vit_desktop.core.models import registry

    if last == "truncated":
        cut = tmp_path / "cut.safetensors"
        cut.write_bytes(model_a.read_bytes()[:3000])
        last = str(cut)
    elif not Path(last).is_file():
        pytest.skip(f"no {last} here")
    bundled = tmp_path / "bundled"
    bundled.mkdir()
    (bundled / "demo.safetensors").write_bytes(model_a.read_bytes())
    monkeypatch.setattr(registry, "bundled_models_dir", lambda: bundled)
    state.set_last_model(last)
    w = make_window()
    with qtbot.waitSignal(w.controller.model_changed, timeout=LOAD_MS) as blocker:
        w.start()
    assert blocker.args[0].source == str(bundled / "demo.safetensors")
    text = w.message_bar.text
    assert f"The model used last, {last}, cannot be loaded (" in text
    assert "falling back to the bundled demo model" in text


def test_settings_under_a_home_folder_that_does_not_exist_do_not_create_it(tmp_path: Path, qapp,
                                                                           monkeypatch) -> None:
    home = tmp_path / "nonexistent"
    monkeypatch.setenv("HOME", str(home))
    settings = AppSettings(QSettings(str(home / ".config" / "vit-desktop" / "vit-desktop.conf"),
                                     QSettings.Format.IniFormat))
    assert settings.problem == f"the home folder {home} does not exist: the window's settings are not kept"
    settings.device = "cpu"
    settings.sync()
    assert settings.device == "cpu"  # kept for this session
    assert not home.exists()
