"""Fixtures for the window tests: isolated settings, a tiny saved model, generated images.

Imported by name into each test module rather than kept in a ``conftest.py``: the suite's
top-level ``conftest`` is imported by that module name, and a second one here would shadow it.
"""

from __future__ import annotations

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from pathlib import Path  # noqa: E402
from typing import Callable, Iterator  # noqa: E402

import pytest  # noqa: E402
from PySide6.QtCore import QSettings  # noqa: E402

from gui_helpers import save_tiny_model, write_image  # noqa: E402


@pytest.fixture(autouse=True)
def _isolated_settings(tmp_path: Path, qapp: object) -> Iterator[None]:
    """Every window in a test reads and writes an INI file under tmp_path, never the user's."""
    QSettings.setDefaultFormat(QSettings.Format.IniFormat)
    QSettings.setPath(QSettings.Format.IniFormat, QSettings.Scope.UserScope, str(tmp_path / "settings"))
    yield


@pytest.fixture
def settings_path(tmp_path: Path) -> Path:
    return tmp_path / "settings" / "window.ini"


@pytest.fixture
def make_window(qtbot, settings_path: Path) -> Iterator[Callable[..., object]]:
    """Build MainWindows on one settings file; every one is shut down and joined afterwards."""
    from vit_desktop.gui.main_window import MainWindow

    made: list[MainWindow] = []

    def make(show: bool = True) -> MainWindow:
        w = MainWindow(settings=QSettings(str(settings_path), QSettings.Format.IniFormat))
        qtbot.addWidget(w)
        if show:
            w.show()
        made.append(w)
        return w

    yield make
    for w in made:
        w.shutdown()
        assert w.controller.compute_thread.isFinished(), "the compute thread must be joined"


@pytest.fixture
def many_images(tmp_path: Path) -> Callable[[int], Path]:
    def make(n: int) -> Path:
        root = tmp_path / f"many{n}"
        for i in range(n):
            write_image(root / f"img{i:04d}.png", size=(24, 20), seed=1000 + i)
        return root

    return make


@pytest.fixture
def model_a(tmp_path: Path) -> Path:
    return save_tiny_model(tmp_path / "models" / "alpha.safetensors", ("apple", "pear", "plum"), "alpha")


@pytest.fixture
def model_b(tmp_path: Path) -> Path:
    return save_tiny_model(tmp_path / "models" / "beta.safetensors", ("cat", "dog", "fox", "owl"), "beta", seed=1)


__all__ = ["_isolated_settings", "make_window", "many_images", "model_a", "model_b", "settings_path"]
