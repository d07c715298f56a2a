"""Help ▸ Keyboard shortcuts and Help ▸ Where files live: read off the actions and the paths the
program really uses, so that they cannot drift from what it does."""

from __future__ import annotations

from collections.abc import Sequence

from PySide6.QtCore import QSettings, Qt, QUrl
from PySide6.QtGui import QDesktopServices, QKeySequence
from PySide6.QtWidgets import (
    QDialog,
    QDialogButtonBox,
    QHeaderView,
    QLabel,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from vit_desktop.gui.actions import ACTIONS

#: Keys of the fine-tune dialog, which has no menu of its own.
FINETUNE_KEYS: tuple[tuple[str, str], ...] = (
    ("Delete", "Fine-tune dialog: delete a class, or take the selected photos out of it"),
    ("F2", "Fine-tune dialog: rename a class"),
    ("Ctrl+S", "Fine-tune dialog: save the labels"),
    ("Ctrl+Z", "Fine-tune dialog: undo the last change to the labels"),
)


def shortcut_rows() -> list[tuple[str, str]]:
    """(keys, what they do) for every action with a shortcut, in menu order, then the dialog's keys."""
    rows = []
    for spec in ACTIONS:
        if spec.shortcut is None:
            continue
        keys = QKeySequence(spec.shortcut).toString(QKeySequence.SequenceFormat.NativeText)
        if keys:
            rows.append((keys, spec.text.replace("&", "").rstrip("…")))
    return rows + list(FINETUNE_KEYS)


def file_rows(settings: QSettings) -> list[tuple[str, str]]:
    """(what, where) for every place the program reads or writes on its own."""
    from vit_desktop.core.library.store import library_path
    from vit_desktop.core.paths import bundled_models_dir, data_dir, hub_checkpoints_dir, user_models_dir

    return [
        ("Your fine-tuned models", str(user_models_dir(create=False))),
        ("The library of results and features", str(library_path())),
        ("The model used last, and what was measured of this machine", str(data_dir() / "state.json")),
        ("Results that could not be written where asked", str(data_dir() / "unsaved results")),
        ("Window settings", settings.fileName()),
        ("Downloaded torchvision weights", str(hub_checkpoints_dir())),
        ("Bundled models", str(bundled_models_dir())),
    ]


class TableDialog(QDialog):
    """A read-only two-column table with a title line; the text can be selected and copied."""

    def __init__(self, title: str, intro: str, header: Sequence[str], rows: Sequence[tuple[str, str]],
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle(title)
        label = QLabel(intro, self)
        label.setWordWrap(True)
        label.setTextFormat(Qt.TextFormat.PlainText)
        self.table = QTableWidget(len(rows), 2, self)
        self.table.setHorizontalHeaderLabels(list(header))
        self.table.verticalHeader().hide()
        self.table.verticalHeader().setDefaultSectionSize(self.fontMetrics().height() + 8)
        self.table.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)
        for r, (a, b) in enumerate(rows):
            self.table.setItem(r, 0, QTableWidgetItem(a))
            self.table.setItem(r, 1, QTableWidgetItem(b))
        self.table.horizontalHeader().setSectionResizeMode(0, QHeaderView.ResizeMode.ResizeToContents)
        self.table.horizontalHeader().setStretchLastSection(True)
        self.buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close, self)
        self.buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addWidget(label)
        layout.addWidget(self.table, 1)
        layout.addWidget(self.buttons)
        self.resize(760, 480)


def shortcuts_dialog(parent: QWidget | None = None) -> TableDialog:
    return TableDialog("Keyboard shortcuts", "Every shortcut works while the window is active; Ctrl+Q from the "
                       "fine-tune dialog too.", ("Keys", "Does"), shortcut_rows(), parent)


def files_dialog(settings: QSettings, parent: QWidget | None = None) -> TableDialog:
    from vit_desktop.core.paths import data_dir

    dialog = TableDialog("Where files live", "The data folder is set by $VIT_DESKTOP_DATA_DIR, else the "
                         "platform's; nothing else is written outside the folders you choose.",
                         ("What", "Where"), file_rows(settings), parent)
    open_button = QPushButton("Open the data folder", dialog)
    dialog.buttons.addButton(open_button, QDialogButtonBox.ButtonRole.ActionRole)
    open_button.clicked.connect(lambda: QDesktopServices.openUrl(QUrl.fromLocalFile(str(data_dir()))))
    return dialog


__all__ = ["FINETUNE_KEYS", "files_dialog", "file_rows", "shortcut_rows", "shortcuts_dialog"]
