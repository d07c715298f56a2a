"""The labelled set being edited: classes with their photos, by hand, by drop, or from files.

The set itself is immutable core data (:class:`~vit_desktop.core.training.labelled_set.LabelledSet`); every edit
makes a new one, so the dialog can hand a snapshot to the compute thread without locks. While
training runs the editor is locked (:meth:`LabelsEditor.set_locked`): the run's classes are the
ones on screen.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from PySide6.QtCore import Qt, Signal, Slot
from PySide6.QtGui import QDragEnterEvent, QDropEvent, QKeySequence, QPainter, QShortcut
from PySide6.QtWidgets import (
    QAbstractItemView,
    QFileDialog,
    QGroupBox,
    QHBoxLayout,
    QInputDialog,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QMessageBox,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from vit_desktop.core.errors import VitDesktopError
from vit_desktop.core.training.labelled_set import PROJECT_SUFFIX, LabelledSet
from vit_desktop.gui.finetune.thumbnail_rows import ROW_THUMBNAIL, ThumbnailRows
from vit_desktop.gui.plain_text import as_plain
from vit_desktop.gui.settings import AppSettings
from vit_desktop.gui.thumbnails import ImageLoader

PHOTO_FILTER = "Images (*.jpg *.jpeg *.png *.bmp *.gif *.tif *.tiff *.webp)"
#: What the empty dialog says to do first.
NO_CLASSES_TEXT = ("No classes yet. Add… a class and drop photos on it, or Import folder… with one subfolder "
                   "per class.")
#: What a change to the set says while training runs.
LOCKED_TEXT = "Training is running: the classes cannot change until it ends (Cancel stops it)"


class ClassList(QListWidget):
    """Classes with their photo counts; photos dropped on a class are labelled with it.

    With ``items_are_classes=False`` (the photo list) every drop goes to the selected class.
    """

    files_dropped = Signal(str, list)  # class name ("" = the selected one), paths

    def __init__(self, parent: QWidget | None = None, *, items_are_classes: bool = True) -> None:
        super().__init__(parent)
        self.items_are_classes = items_are_classes
        #: What the empty list says (what to do to fill it), drawn where the rows would be.
        self.placeholder = ""
        self.setAcceptDrops(True)
        self.setDropIndicatorShown(True)
        self.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)

    def set_placeholder(self, text: str) -> None:
        self.placeholder = text
        self.viewport().update()

    def paintEvent(self, event: Any) -> None:
        super().paintEvent(event)
        if self.count() or not self.placeholder:
            return
        p = QPainter(self.viewport())
        p.setPen(self.palette().placeholderText().color())
        p.drawText(self.viewport().rect().adjusted(12, 12, -12, -12),
                   Qt.AlignmentFlag.AlignCenter | Qt.TextFlag.TextWordWrap, self.placeholder)
        p.end()

    def dragEnterEvent(self, event: QDragEnterEvent) -> None:
        if event.mimeData().hasUrls():
            event.acceptProposedAction()
        else:
            super().dragEnterEvent(event)

    def dragMoveEvent(self, event: Any) -> None:
        if event.mimeData().hasUrls():
            event.acceptProposedAction()
        else:
            super().dragMoveEvent(event)

    def dropEvent(self, event: QDropEvent) -> None:
        urls = [u.toLocalFile() for u in event.mimeData().urls() if u.isLocalFile()]
        if not urls:
            return super().dropEvent(event)
        item = self.itemAt(event.position().toPoint()) if self.items_are_classes else None
        name = item.data(Qt.ItemDataRole.UserRole) if item is not None else ""
        self.files_dropped.emit(name or "", urls)
        event.acceptProposedAction()


class LabelsEditor(QWidget):
    """Classes, the photos of the selected class (with thumbnails), and the buttons that edit them.

    The thumbnails are decoded by the editor's own :class:`ImageLoader`, joined by :meth:`shutdown`.
    """

    #: The labelled set changed (the new LabelledSet).
    changed = Signal(object)
    #: What happened, for the dialog's status line.
    status = Signal(str)

    def __init__(self, settings: AppSettings, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._settings = settings
        self.loader = ImageLoader(thumb_size=ROW_THUMBNAIL, parent=self)
        self.data = LabelledSet()
        #: Labelled by hand since the set was last opened, imported or saved: closing would lose it.
        self.unsaved = False
        #: The sets before each change, newest last, for Ctrl+Z (sets are immutable: no copies).
        self._history: list[tuple[LabelledSet, bool]] = []
        self._locked = False
        self._meaning: Callable[[str], str | None] = lambda _name: None
        lv = QVBoxLayout(self)
        lv.setContentsMargins(0, 0, 0, 0)
        box = QGroupBox("Classes (drop photos on a class)")
        bv = QVBoxLayout(box)
        self.class_list = ClassList()
        self.class_list.files_dropped.connect(self._on_files_dropped)
        self.class_list.currentItemChanged.connect(self._on_class_selected)
        bv.addWidget(self.class_list, 1)
        self.meaning_label = QLabel("")
        self.meaning_label.setWordWrap(True)
        self.meaning_label.setObjectName("classMeaning")
        self.meaning_label.setTextFormat(Qt.TextFormat.PlainText)  # class names: never HTML
        bv.addWidget(self.meaning_label)
        row = QHBoxLayout()
        self.add_class_button = QPushButton("Add…")
        self.rename_class_button = QPushButton("Rename…")
        self.delete_class_button = QPushButton("Delete")
        for b, slot in ((self.add_class_button, self._on_add_class), (self.rename_class_button, self._on_rename_class),
                        (self.delete_class_button, self._on_delete_class)):
            b.clicked.connect(slot)
            row.addWidget(b)
        bv.addLayout(row)
        self.photo_list = ClassList(items_are_classes=False)
        self.photo_list.setSelectionMode(QAbstractItemView.SelectionMode.ExtendedSelection)
        self.photo_list.files_dropped.connect(self._on_files_dropped)
        ThumbnailRows(self.photo_list, self.loader)
        bv.addWidget(QLabel("Photos in the selected class (drop more here):"))
        bv.addWidget(self.photo_list, 2)  # rows with thumbnails are tall: the photos get the room
        row = QHBoxLayout()
        self.add_photos_button = QPushButton("Add photos…")
        self.add_photos_button.clicked.connect(self._on_add_photos)
        self.remove_photos_button = QPushButton("Remove")
        self.remove_photos_button.clicked.connect(self._on_remove_photos)
        row.addWidget(self.add_photos_button)
        row.addWidget(self.remove_photos_button)
        bv.addLayout(row)
        lv.addWidget(box)
        row = QHBoxLayout()
        self.import_button = QPushButton("Import folder…")
        self.import_button.setToolTip("A folder with one subfolder per class")
        self.import_button.clicked.connect(self._on_import_folder)
        self.open_button = QPushButton("Open…")
        self.open_button.clicked.connect(self._on_open_project)
        self.save_project_button = QPushButton("Save labels…")
        self.save_project_button.clicked.connect(self._on_save_project)
        for b in (self.import_button, self.open_button, self.save_project_button):
            row.addWidget(b)
        lv.addLayout(row)
        self._add_shortcuts()
        self._refresh_classes()

    def _add_shortcuts(self) -> None:
        """Keys where the focus is: Delete and F2 on the class list, Delete on the photos; Ctrl+S."""
        keys = (
            (self.class_list, QKeySequence.StandardKey.Delete, self._on_delete_class, self.delete_class_button,
             "Delete the selected class (its photos leave the set; the files stay)"),
            (self.class_list, Qt.Key.Key_F2, self._on_rename_class, self.rename_class_button,
             "Rename the selected class"),
            (self.photo_list, QKeySequence.StandardKey.Delete, self._on_remove_photos, self.remove_photos_button,
             "Take the selected photos out of the class (the files stay)"),
            (self, QKeySequence.StandardKey.Save, self._on_save_project, self.save_project_button,
             "Save the classes and their photos as a labels file"),
        )
        undo = QShortcut(QKeySequence(QKeySequence.StandardKey.Undo), self)
        undo.setContext(Qt.ShortcutContext.WindowShortcut)
        undo.activated.connect(self.undo)
        for widget, key, slot, button, tip in keys:
            shortcut = QShortcut(QKeySequence(key), widget)
            shortcut.setContext(Qt.ShortcutContext.WindowShortcut if widget is self
                                else Qt.ShortcutContext.WidgetWithChildrenShortcut)
            # A locked set (training runs) ignores them as it ignores its disabled buttons.
            shortcut.activated.connect(lambda slot=slot, button=button: button.isEnabled() and slot())
            button.setToolTip(f"{tip} ({shortcut.key().toString(QKeySequence.SequenceFormat.NativeText)})")

    # ---- the set -----------------------------------------------------------------------------

    def set_data(self, data: LabelledSet) -> None:
        self._remember()
        self.data = data
        self.unsaved = False
        self._refresh_classes()
        self.changed.emit(data)

    def shutdown(self) -> None:
        """Stop decoding thumbnails and join the threads that decode them."""
        self.loader.shutdown()

    def set_meaning(self, meaning: Callable[[str], str | None]) -> None:
        """How to say what a class name means to the model (its hierarchy), shown under the list."""
        self._meaning = meaning
        self._refresh_classes()

    def set_locked(self, locked: bool) -> None:
        """While training runs, nothing that changes the set may be used."""
        self._locked = locked
        self._update_buttons()
        self.class_list.setAcceptDrops(not locked)
        self.photo_list.setAcceptDrops(not locked)

    def _selected_class(self) -> str | None:
        item = self.class_list.currentItem()
        return str(item.data(Qt.ItemDataRole.UserRole)) if item is not None else None

    def _refresh_classes(self, select: str | None = None) -> None:
        select = select if select is not None else self._selected_class()
        self.class_list.blockSignals(True)
        self.class_list.clear()
        for name, n in self.data.counts().items():
            item = QListWidgetItem(f"{name}  ({n} photo{'s' if n != 1 else ''})")
            item.setData(Qt.ItemDataRole.UserRole, name)
            self.class_list.addItem(item)
            if name == select:
                self.class_list.setCurrentItem(item)
        if self.class_list.currentItem() is None and self.class_list.count():
            self.class_list.setCurrentRow(0)
        self.class_list.blockSignals(False)
        self._refresh_photos()
        self._update_buttons()
        self._show_meaning()

    def _show_meaning(self) -> None:
        name = self._selected_class()
        if name is None:
            self.meaning_label.setText("")
            return
        meaning = self._meaning(name)
        self.meaning_label.setText(
            f"“{name}” means {meaning}: what the model knows about it counts, even with few photos" if meaning
            else f"“{name}” is not a name the model knows: its photos teach it")

    def _update_buttons(self) -> None:
        has = self._selected_class() is not None
        editable = not self._locked
        for b in (self.rename_class_button, self.delete_class_button, self.add_photos_button,
                  self.remove_photos_button):
            b.setEnabled(has and editable)
        for b in (self.add_class_button, self.import_button, self.open_button):
            b.setEnabled(editable)

    def _refresh_photos(self) -> None:
        self.photo_list.clear()
        name = self._selected_class()
        self.class_list.set_placeholder(NO_CLASSES_TEXT)
        self.photo_list.set_placeholder(
            "" if name is None else f"No photos in “{name}” yet: drop photos here, or Add photos…")
        if name is None:
            return
        for p in self.data.paths_of(name):
            item = QListWidgetItem(p.name)
            item.setData(Qt.ItemDataRole.UserRole, str(p))
            item.setToolTip(as_plain(str(p)))
            self.photo_list.addItem(item)

    def _edit(self, fn: Callable[[], LabelledSet], select: str | None = None) -> bool:
        if self._locked:
            self.status.emit(LOCKED_TEXT)
            return False
        try:
            data = fn()
        except VitDesktopError as exc:
            self.status.emit(str(exc))
            return False
        self._remember()
        self.data = data
        self.unsaved = len(data) > 0
        self._refresh_classes(select)
        self.changed.emit(data)
        return True

    def _remember(self) -> None:
        if len(self.data) or self.data.classes:
            self._history = [*self._history[-49:], (self.data, self.unsaved)]

    def undo(self) -> bool:
        """Ctrl+Z: the set as it was before the last change (an import or opened file too)."""
        if self._locked:
            self.status.emit(LOCKED_TEXT)
            return False
        if not self._history:
            self.status.emit("Nothing to undo")
            return False
        self.data, self.unsaved = self._history.pop()
        self._refresh_classes()
        self.changed.emit(self.data)
        self.status.emit(f"Undone: {len(self.data)} photos in {len(self.data.classes)} classes again")
        return True

    def add_class(self, name: str) -> bool:
        return self._edit(lambda: self.data.with_class(name), name.strip())

    def rename_class(self, old: str, new: str) -> bool:
        return self._edit(lambda: self.data.renamed(old, new), new.strip())

    def delete_class(self, name: str) -> bool:
        return self._edit(lambda: self.data.without_class(name))

    def add_files(self, name: str, paths: list[str]) -> int:
        """Label photos (folders are searched) as ``name``; returns how many were added."""
        from vit_desktop.core.io.scan import scan

        found = scan(paths)
        if self._edit(lambda: self.data.with_items(found.files, name), name):
            msg = f"{len(found.files)} photo{'s' if len(found.files) != 1 else ''} added to {name!r}"
            if found.errors:
                msg += f"; {len(found.errors)} skipped ({found.errors[0][1]})"
            self.status.emit(msg)
            return len(found.files)
        return 0

    def import_folder(self, folder: str | os.PathLike[str]) -> bool:
        if self._locked:
            return False
        try:
            data = LabelledSet.from_folder(folder)
        except VitDesktopError as exc:
            self.status.emit(str(exc))
            return False
        self.set_data(data)
        counts = ", ".join(f"{c} {n}" for c, n in data.counts().items())
        msg = f"Imported {len(data)} photos in {len(data.classes)} classes ({counts})"
        if data.problems:
            msg += f"; {len(data.problems)} unreadable skipped"
        self.status.emit(msg)
        return True

    def open_project(self, path: str | os.PathLike[str]) -> bool:
        if self._locked:
            return False
        try:
            data, missing = LabelledSet.load(path)
        except VitDesktopError as exc:
            self.status.emit(str(exc))
            return False
        self.set_data(data)
        msg = f"Opened {Path(path).name}: {len(data)} photos in {len(data.classes)} classes"
        if missing:
            msg += f"; {len(missing)} missing (first: {missing[0]})"
        self.status.emit(msg)
        return True

    def save_project(self, path: str | os.PathLike[str]) -> bool:
        try:
            self.data.save(path)
        except OSError as exc:
            self.status.emit(f"Could not save {Path(path).name}: {exc.strerror or exc}")
            return False
        self.unsaved = False
        self.status.emit(f"Saved labels to {path}")
        return True

    # ---- user actions ------------------------------------------------------------------------

    @Slot(str, list)
    def _on_files_dropped(self, name: str, paths: list[str]) -> None:
        target = name or self._selected_class()
        if target is None:
            self.status.emit("Add a class first, then drop photos on it")
            return
        self.add_files(target, paths)

    @Slot()
    def _on_class_selected(self, *args: object) -> None:
        self._refresh_photos()
        self._update_buttons()
        self._show_meaning()

    @Slot()
    def _on_add_class(self) -> None:
        name, ok = QInputDialog.getText(self, "Add class", "Class name:")
        if ok and name.strip():
            self.add_class(name)

    @Slot()
    def _on_rename_class(self) -> None:
        old = self._selected_class()
        if old is None:
            return
        new, ok = QInputDialog.getText(self, "Rename class", "New name:", text=old)
        if ok and new.strip():
            self.rename_class(old, new)

    @Slot()
    def _on_delete_class(self) -> None:
        name = self._selected_class()
        if name is None:
            return
        n = self.data.counts().get(name, 0)
        if n and QMessageBox.question(
            self, "Delete class", as_plain(f"Delete class {name!r} and remove its {n} photos from the set?\n"
                                           "(The files themselves are not touched.)")
        ) != QMessageBox.StandardButton.Yes:
            return
        self.delete_class(name)

    @Slot()
    def _on_add_photos(self) -> None:
        name = self._selected_class()
        if name is None:
            return
        files, _ = QFileDialog.getOpenFileNames(self, f"Add photos to {name}", self._settings.folder("photos"),
                                                PHOTO_FILTER)
        if files:
            self._settings.set_folder("photos", str(Path(files[0]).parent))
            self.add_files(name, files)

    @Slot()
    def _on_remove_photos(self) -> None:
        paths = [i.data(Qt.ItemDataRole.UserRole) for i in self.photo_list.selectedItems()]
        if paths and self._edit(lambda: self.data.without_items(paths)):
            self.status.emit(f"{len(paths)} photo{'s' if len(paths) != 1 else ''} taken out of the set "
                             "(Ctrl+Z puts them back)")

    @Slot()
    def _on_import_folder(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Folder with one subfolder per class",
                                                  self._settings.folder("labelled"))
        if folder:
            self._settings.set_folder("labelled", str(Path(folder).parent))
            self.import_folder(folder)

    @Slot()
    def _on_open_project(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Open labels", self._settings.folder("labels"),
                                              f"Label projects (*{PROJECT_SUFFIX} *.json)")
        if path:
            self._settings.set_folder("labels", str(Path(path).parent))
            self.open_project(path)

    @Slot()
    def _on_save_project(self) -> None:
        self.save_project_dialog()

    def save_project_dialog(self) -> bool:
        """Ask where to save the labels, and save them there. True when written."""
        start = Path(self._settings.folder("labels") or Path.home()) / f"labels{PROJECT_SUFFIX}"
        path, _ = QFileDialog.getSaveFileName(self, "Save labels", str(start), f"Label projects (*{PROJECT_SUFFIX})")
        if not path:
            self.status.emit("Labels not saved: no file was chosen")
            return False
        self._settings.set_folder("labels", str(Path(path).parent))
        return self.save_project(path)


__all__ = ["ClassList", "LabelsEditor"]
