"""A dismissable strip above the gallery for errors and hints, each saying what to do."""

from __future__ import annotations

from PySide6.QtCore import Qt, Slot
from PySide6.QtGui import QAction
from PySide6.QtWidgets import QFrame, QHBoxLayout, QLabel, QPushButton, QToolButton, QWidget

from vit_desktop.core.errors import Failure


class MessageBar(QFrame):
    """One message at a time, "error" or "info", with an optional action button."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("messageBar")
        self.label = QLabel(self)
        self.label.setWordWrap(True)
        self.label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.action_button = QPushButton(self)
        self.action_button.hide()
        close = QToolButton(self)
        close.setText("✕")
        close.setToolTip("Dismiss")
        close.setAutoRaise(True)
        close.clicked.connect(self.hide)
        layout = QHBoxLayout(self)
        layout.setContentsMargins(10, 6, 6, 6)
        layout.addWidget(self.label, 1)
        layout.addWidget(self.action_button)
        layout.addWidget(close)
        self._action: QAction | None = None
        self.action_button.clicked.connect(self._on_action)
        self.hide()

    def show_message(self, text: str, kind: str = "error", action: QAction | None = None) -> None:
        self.setProperty("kind", kind)
        self.style().unpolish(self)
        self.style().polish(self)
        self.label.setText(text)
        self._action = action
        if action is not None:
            self.action_button.setText(action.text().replace("&", "").rstrip("…."))
            self.action_button.show()
        else:
            self.action_button.hide()
        self.show()

    @Slot(str)
    def show_error(self, text: str) -> None:
        self.show_message(text, "error")

    @Slot(object)
    def show_failure(self, failure: Failure) -> None:
        """A job's failure, as it says it (the message is one line meant for a person)."""
        self.show_message(failure.message, "error")

    @Slot(str)
    def show_info(self, text: str) -> None:
        self.show_message(text, "info")

    @Slot()
    def hide_info(self) -> None:
        """An information that no longer holds goes; an error stays until dismissed."""
        if self.isVisible() and self.property("kind") == "info":
            self.hide()

    def hide_if(self, fragment: str) -> None:
        """Hide the bar when the message it shows contains ``fragment``."""
        if self.isVisible() and fragment in self.label.text():
            self.hide()

    @property
    def text(self) -> str:
        return self.label.text() if self.isVisible() else ""

    @Slot()
    def _on_action(self) -> None:
        if self._action is not None:
            self._action.trigger()


__all__ = ["MessageBar"]
