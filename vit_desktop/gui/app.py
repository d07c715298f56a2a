"""The GUI entry point: ``vit-desktop`` with no command (or with photos to open), ``python -m vit_desktop``."""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import sys
import time
from collections.abc import Sequence

_T0 = time.perf_counter()

if sys.platform == "win32":
    # torch >= 2.9 and Qt ship clashing DLLs on Windows: torch must be loaded first. Elsewhere the
    # import (1-2 s) is left to the compute thread so that the window appears at once.
    import torch  # noqa: F401 - imported for its DLLs, before Qt's

#: The libraries Qt's xcb platform plugin loads (X11 on Linux), with the Debian/Ubuntu package of each.
XCB_LIBRARIES: tuple[tuple[str, str], ...] = (
    ("libxcb-cursor.so.0", "libxcb-cursor0"),
    ("libxkbcommon-x11.so.0", "libxkbcommon-x11-0"),
    ("libxcb-icccm.so.4", "libxcb-icccm4"),
    ("libxcb-keysyms.so.1", "libxcb-keysyms1"),
    ("libxcb-shape.so.0", "libxcb-shape0"),
    ("libxcb-randr.so.0", "libxcb-randr0"),
    ("libxcb-render-util.so.0", "libxcb-render-util0"),
    ("libxcb-image.so.0", "libxcb-image0"),
    ("libxcb-xinerama.so.0", "libxcb-xinerama0"),
)
APT_LINE = "sudo apt-get install -y " + " ".join(pkg for _, pkg in XCB_LIBRARIES)

#: The exit status a signal asked for (128 + its number), once one arrived.
_exit_status: list[int] = []


def display_problem(environ: dict[str, str] | os._Environ[str] | None = None) -> str | None:
    """Why no window can open here, in words a person can act on; None when it can.

    Qt's own message for a missing xcb library is an abort naming only "the xcb plugin", so the
    libraries are looked for before Qt tries (Linux only; other platforms have no such step).
    """
    env = os.environ if environ is None else environ
    platform_name = env.get("QT_QPA_PLATFORM", "")
    if not sys.platform.startswith("linux") or platform_name not in ("", "xcb"):
        return None  # offscreen, wayland, eglfs... chosen on purpose: Qt reports for itself
    if platform_name == "" and env.get("WAYLAND_DISPLAY"):
        return None  # Qt uses Wayland there
    if not env.get("DISPLAY"):
        return ("no display to open the window on (DISPLAY is not set): run vit-desktop in a desktop "
                "session, or use the command line, which needs none: vit-desktop classify --help")
    missing = []
    for soname, package in XCB_LIBRARIES:
        try:
            ctypes.CDLL(soname)
        except OSError:
            missing.append((soname, package))
    if not missing:
        return None
    names = ", ".join(soname for soname, _ in missing)
    return (f"the window cannot open: Qt's X11 (xcb) plugin needs {names}, which "
            f"{'is' if len(missing) == 1 else 'are'} not installed. On Debian or Ubuntu: {APT_LINE}")


def main(argv: Sequence[str] | None = None) -> int:
    """Create the application and the main window, show it, then start loading the model.

    Non-option arguments are photos or folders to classify (what a file manager's "Open with" runs).
    """
    problem = display_problem()
    if problem is not None:
        print(f"vit-desktop: {problem}", file=sys.stderr)
        return 1
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
    app.setDesktopFileName("vit-desktop")
    icon = app_icon_path()
    if icon is not None:
        app.setWindowIcon(QIcon(str(icon)))
    apply_style(app)

    window = MainWindow()
    app.aboutToQuit.connect(window.shutdown)
    # Ctrl+C in the terminal and SIGTERM (a logout, `kill`) quit as Ctrl+Q does: settings are
    # saved, runs, loads and downloads are cancelled and joined. Python only sees a signal when it
    # runs bytecode, so a slow timer gives it the chance.
    signal.signal(signal.SIGINT, _quit_on_signal)
    signal.signal(signal.SIGTERM, _quit_on_signal)
    wake = QTimer(window)
    wake.timeout.connect(_noop)
    wake.start(250)
    window.show()
    # Heavy work (torch import, model load) starts only once the window is on screen.
    QTimer.singleShot(0, window.start)
    logging.getLogger(__name__).info("window shown %.0f ms after start", 1000 * (time.perf_counter() - _T0))
    paths = [a for a in args[1:] if not a.startswith("-")]
    if paths:
        window.intake.add_paths(paths)
    status = app.exec()
    return _exit_status[0] if _exit_status else status


def _quit_on_signal(signum: int, _frame: object) -> None:
    from PySide6.QtWidgets import QApplication

    if signum == signal.SIGTERM:
        _exit_status.append(128 + signum)
    QApplication.quit()


def _noop() -> None:
    """Lets the interpreter run pending signal handlers between Qt events."""


if __name__ == "__main__":
    raise SystemExit(main())
