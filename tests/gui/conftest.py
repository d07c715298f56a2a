"""Fixtures for the window tests: isolated settings, windows that are always joined, tiny models."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from PySide6.QtCore import QSettings, QThread

from tests.support import save_tiny_model, write_image


@pytest.fixture(autouse=True)
def _isolated_settings(tmp_path: Path, qapp: object) -> Iterator[None]:
    """Every window in a test reads and writes an INI file under tmp_path, never the user's."""
    QSettings.setDefaultFormat(QSettings.Format.IniFormat)
    QSettings.setPath(QSettings.Format.IniFormat, QSettings.Scope.UserScope, str(tmp_path / "settings"))
    yield


@pytest.fixture(autouse=True)
def _threads_joined(qapp: object, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Every compute thread a test starts is stopped and joined when it ends, whatever happened."""
    from vit_desktop.gui.compute import Controller

    made: list[Controller] = []
    original = Controller.__init__

    def record(self: Controller, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        made.append(self)

    monkeypatch.setattr(Controller, "__init__", record)
    yield
    for c in made:
        c.shutdown()
        thread: QThread = c.compute_thread
        assert thread.isFinished(), "a compute thread was left running"


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
