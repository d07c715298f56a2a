"""The GUI entry point: ``vit-desktop`` with no subcommand, or ``python -m vit_desktop``."""

from __future__ import annotations

import logging
import signal
import sys
import time
from collections.abc import Sequence

_T0 = time.perf_counter()

if sys.platform == "win32":
    # torch >= 2.9 and Qt ship clashing DLLs on Windows: torch must be loaded first. Elsewhere the
    # import (1-2 s) is left to the compute thread so that the window appears at once.
    import torch  # noqa: F401


def main(argv: Sequence[str] | None = None) -> int:
    """Create the application and the main window, show it, then start loading the model."""
    from PySide6.QtCore import QTimer
    from PySide6.QtGui import QIcon
    from PySide6.QtWidgets import QApplication

    from vit_desktop.gui.main_window import MainWindow
    from vit_desktop.gui.style import app_icon_path, apply_style

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = list(sys.argv if argv is None else [sys.argv[0] if sys.argv else "vit-desktop", *argv])
    app = QApplication.instance() or QApplication(args)
    assert isinstance(app, QApplication)
    app.setOrganizationName("vit-desktop")
    app.setApplicationName("vit-desktop")
    app.setApplicationDisplayName("vit-desktop")
    icon = app_icon_path()
    if icon is not None:
        app.setWindowIcon(QIcon(str(icon)))
    apply_style(app)

    window = MainWindow()
    app.aboutToQuit.connect(window.shutdown)
    # Ctrl+C in the terminal quits cleanly (runs, loads and downloads are cancelled and joined).
    # Python only sees the signal when it runs bytecode, so a slow timer gives it the chance.
    signal.signal(signal.SIGINT, _quit_on_signal)
    wake = QTimer(window)
    wake.timeout.connect(_noop)
    wake.start(250)
    window.show()
    # Heavy work (torch import, model load) starts only once the window is on screen.
    QTimer.singleShot(0, window.start)
    logging.getLogger(__name__).info("window shown %.0f ms after start", 1000 * (time.perf_counter() - _T0))
    paths = [a for a in args[1:] if not a.startswith("-")]
    if paths:
        window.add_paths(paths)
    return app.exec()


def _quit_on_signal(_signum: int, _frame: object) -> None:
    from PySide6.QtWidgets import QApplication

    QApplication.quit()


def _noop() -> None:
    """Lets the interpreter run pending signal handlers between Qt events."""


if __name__ == "__main__":
    raise SystemExit(main())
