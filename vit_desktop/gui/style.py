"""The look: Fusion style plus the project's style sheet and icon from ``resources/``."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtWidgets import QApplication

from vit_desktop.core.paths import shipped_dir

RESOURCES: Path = shipped_dir("resources")


def app_icon_path() -> Path | None:
    path = RESOURCES / "vit-desktop.png"
    return path if path.is_file() else None


def apply_style(app: QApplication) -> None:
    """Fusion looks the same on every platform; the sheet only adds a few accents."""
    app.setStyle("Fusion")
    sheet = RESOURCES / "style.qss"
    try:
        app.setStyleSheet(sheet.read_text(encoding="utf-8"))
    except OSError:
        pass  # an installed copy without resources/ keeps plain Fusion


__all__ = ["RESOURCES", "app_icon_path", "apply_style"]
