"""Find duplicates: groups of listed photos that are one picture, and the copies moved to the trash.

:class:`DuplicateFinder` gathers the listed photos' perceptual hashes (and the model's features,
which find light crops, when a model is loaded) on the compute thread and groups them there with
:func:`~vit_desktop.core.library.duplicates.duplicate_groups`, as ``vit-desktop duplicates`` does.
:class:`DuplicatesDialog` shows each group side by side, the best copy first (most pixels, then the
oldest) and chosen to be kept; the user may keep another. "Move N others to the trash" asks first,
saying how many files, and only then moves them with :meth:`QFile.moveToTrash`: nothing is deleted,
and a file that cannot be moved is named with the reason.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from PySide6.QtCore import QFile, QObject, Qt, Signal, Slot
from PySide6.QtWidgets import (
    QButtonGroup,
    QDialog,
    QDialogButtonBox,
    QFrame,
    QHBoxLayout,
    QLabel,
    QMessageBox,
    QPushButton,
    QRadioButton,
    QScrollArea,
    QVBoxLayout,
    QWidget,
)

from vit_desktop.core.errors import CancelToken, Failure
from vit_desktop.core.units import format_bytes
from vit_desktop.gui.plain_text import as_plain, plain

if TYPE_CHECKING:
    from vit_desktop.core.library.duplicates import DuplicateGroup
    from vit_desktop.core.library.prints import PhotoPrints
    from vit_desktop.gui.compute import Controller
    from vit_desktop.gui.jobs import Job
    from vit_desktop.gui.run_status import RunStatus
    from vit_desktop.gui.thumbnails import ImageLoader

#: The channel of "Find duplicates" jobs: a newer search supersedes the one still going.
CHANNEL = "duplicates"
THUMB = 150


@dataclass(frozen=True)
class CopyFacts:
    """What the dialog says of one copy: its size in pixels (0 x 0: unknown), bytes and time."""

    width: int
    height: int
    size: int
    mtime_ns: int


@dataclass(frozen=True)
class DuplicatesFound:
    """The groups found among ``searched`` photos, and the facts of each photo in a group."""

    groups: tuple[DuplicateGroup, ...]
    facts: dict[str, CopyFacts]
    searched: int


def group_duplicates(prints: PhotoPrints, _first: str | None, report: Callable[[object], None],
                     cancel: CancelToken) -> DuplicatesFound:
    """The duplicate groups of ``prints`` (runs on the compute thread)."""
    from vit_desktop.core.inference.lookalikes import PrintsProgress
    from vit_desktop.core.library.duplicates import duplicate_groups

    report(PrintsProgress("grouping", 0, len(prints)))
    groups = tuple(duplicate_groups(prints, cancel=cancel))
    facts = {}
    for g in groups:
        for p in g.paths:
            row = prints.index(p)
            w, h = (int(v) for v in prints.shapes[row])
            facts[p] = CopyFacts(w, h, int(prints.sizes[row]), int(prints.mtimes[row]))
    return DuplicatesFound(groups, facts, len(prints))


def move_to_trash(paths: Sequence[str]) -> tuple[list[str], list[tuple[str, str]]]:
    """Move each file to the system's trash: (moved, [(path, why) of each that could not be])."""
    moved: list[str] = []
    failed: list[tuple[str, str]] = []
    for path in paths:
        f = QFile(path)
        if not f.exists():
            failed.append((path, "it is no longer there"))
        elif f.moveToTrash():
            moved.append(path)
        else:
            failed.append((path, f.errorString() or "the system would not move it"))
    return moved, failed


class DuplicateFinder(QObject):
    """Runs "Find duplicates" over the listed photos and shows what it found in a dialog."""

    note = Signal(str)
    problem = Signal(str)
    #: Files moved to the trash: they leave the list.
    trashed = Signal(list)

    def __init__(self, controller: Controller, loader: ImageLoader, status: RunStatus,
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._controller = controller
        self._loader = loader
        self._status = status
        self._parent = parent
        self.job: Job | None = None
        self.dialog: DuplicatesDialog | None = None

    def find(self, paths: Sequence[str]) -> Job | None:
        if len(paths) < 2:
            self.note.emit("Add photos first: duplicates are looked for among the listed photos.")
            return None
        # Light crops need the features; without a model the hashes still find resized and re-encoded copies.
        features = self._controller.current_model is not None
        job = self._controller.gather_prints(paths, group_duplicates, features=features, hashes=True,
                                             channel=CHANNEL)
        job.returned.connect(self._on_found)
        job.errored.connect(self._on_failed)
        self._status.track_task(job, "Finding duplicates")
        self.job = job
        return job

    @Slot(object)
    def _on_found(self, reply: object) -> None:
        found = getattr(reply, "value", None)
        if not isinstance(found, DuplicatesFound):
            return
        unreadable = len(getattr(reply, "unreadable", ()))
        skipped = f" ({unreadable} could not be read)" if unreadable else ""
        if not found.groups:
            self.note.emit(f"No duplicates among the {found.searched} photos{skipped}.")
            return
        copies = sum(len(g.paths) for g in found.groups)
        self.note.emit(f"{len(found.groups)} group{'s' if len(found.groups) != 1 else ''} of duplicates, "
                       f"{copies} photos, among {found.searched}{skipped}.")
        if self.dialog is not None:
            self.dialog.close()
            self.dialog.deleteLater()
        self.dialog = DuplicatesDialog(found, self._loader, self._parent)
        self.dialog.trashed.connect(self.trashed)
        self.dialog.show()

    @Slot(object)
    def _on_failed(self, failure: Failure) -> None:
        self.problem.emit(f"Duplicates could not be found: {failure.message}")


def _facts_text(facts: CopyFacts | None) -> str:
    if facts is None:
        return ""
    parts = [f"{facts.width} × {facts.height}" if facts.width and facts.height else "size unknown",
             format_bytes(facts.size)]
    if facts.mtime_ns:
        parts.append(datetime.fromtimestamp(facts.mtime_ns / 1e9).strftime("%Y-%m-%d %H:%M"))
    return " · ".join(parts)


class _CopyCard(QFrame):
    """One copy: thumbnail, name, size and date, and whether it is kept."""

    def __init__(self, path: str, facts: CopyFacts | None, best: bool, parent: QWidget) -> None:
        super().__init__(parent)
        self.path = path
        self.setObjectName("duplicateCopy")
        self.setFrameShape(QFrame.Shape.StyledPanel)
        self.setFixedWidth(THUMB + 24)
        self.thumb = QLabel(self)
        self.thumb.setFixedSize(THUMB, THUMB)
        self.thumb.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.name = QLabel(self)
        plain(self.name)  # a file name: never HTML
        # A long name is shortened in the middle (its end tells copies apart); the tooltip has all of it.
        self.name.setText(self.name.fontMetrics().elidedText(Path(path).name, Qt.TextElideMode.ElideMiddle, THUMB + 8))
        self.name.setToolTip(as_plain(path))
        self.facts = QLabel(_facts_text(facts) + ("\nbest copy" if best else ""), self)
        plain(self.facts)
        self.facts.setWordWrap(True)
        self.keep = QRadioButton("Keep", self)
        self.keep.setToolTip("Keep this copy; the others of the group go to the trash")
        lay = QVBoxLayout(self)
        lay.setContentsMargins(6, 6, 6, 6)
        lay.addWidget(self.thumb, 0, Qt.AlignmentFlag.AlignHCenter)
        lay.addWidget(self.name)
        lay.addWidget(self.facts)
        lay.addWidget(self.keep)
        lay.addStretch(1)


class DuplicatesDialog(QDialog):
    """The groups side by side; one copy of each kept (the best unless chosen otherwise), the others
    moved to the trash after a confirmation that says how many."""

    trashed = Signal(list)

    def __init__(self, found: DuplicatesFound, loader: ImageLoader, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Duplicates")
        self.resize(900, 640)
        self._loader = loader
        self._facts = found.facts
        self.groups: list[tuple[str, ...]] = [g.paths for g in found.groups]
        self._kinds = {g.paths: g.kind for g in found.groups}
        self._choices: list[QButtonGroup] = []
        self._cards: dict[str, _CopyCard] = {}
        self.intro = QLabel(self)
        self.intro.setWordWrap(True)
        self.area = QScrollArea(self)
        self.area.setWidgetResizable(True)
        self.move_button = QPushButton("", self)
        self.move_button.clicked.connect(self.move_others)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close, self)
        buttons.rejected.connect(self.reject)
        buttons.addButton(self.move_button, QDialogButtonBox.ButtonRole.ActionRole)
        lay = QVBoxLayout(self)
        lay.addWidget(self.intro)
        lay.addWidget(self.area, 1)
        lay.addWidget(buttons)
        loader.thumbnail_ready.connect(self._on_thumbnail)
        self._build()

    # -- what is shown --------------------------------------------------------------------------

    def _build(self) -> None:
        self._choices = []
        self._cards = {}
        body = QWidget()
        col = QVBoxLayout(body)
        for number, paths in enumerate(self.groups, 1):
            kind = self._kinds.get(paths, "")
            what = "identical files" if kind == "identical" else "copies of one picture"
            head = QLabel(f"Group {number}: {len(paths)} {what}", body)
            head.setStyleSheet("font-weight: bold")
            col.addWidget(head)
            row = QHBoxLayout()
            choice = QButtonGroup(self)
            for i, path in enumerate(paths):
                card = _CopyCard(path, self._facts.get(path), i == 0, body)
                choice.addButton(card.keep, i)
                card.keep.setChecked(i == 0)
                card.keep.toggled.connect(self._update)
                self._cards[path] = card
                self._set_thumbnail(card)
                row.addWidget(card)
            row.addStretch(1)
            col.addLayout(row)
            self._choices.append(choice)
        col.addStretch(1)
        self.area.setWidget(body)
        self._update()

    def _set_thumbnail(self, card: _CopyCard) -> None:
        pix = self._loader.thumbnail(card.path)
        if pix is not None:
            card.thumb.setPixmap(pix.scaled(THUMB, THUMB, Qt.AspectRatioMode.KeepAspectRatio,
                                            Qt.TransformationMode.SmoothTransformation))
        else:
            card.thumb.setText("no preview" if self._loader.thumbnail_error(card.path) else "…")

    @Slot(str)
    def _on_thumbnail(self, path: str) -> None:
        card = self._cards.get(path)
        if card is not None:
            self._set_thumbnail(card)

    @Slot()
    def _update(self) -> None:
        n = len(self.to_move())
        groups = len(self.groups)
        self.intro.setText(
            f"{groups} group{'s' if groups != 1 else ''} of photos that are one picture (the same file, "
            "re-encoded, resized or lightly cropped), the best copy first: most pixels, then the oldest. "
            "One copy of each is kept; the others can go to the trash (from where they can be restored).")
        self.move_button.setText(f"Move {n} other{'s' if n != 1 else ''} to the trash…")
        self.move_button.setEnabled(n > 0)

    # -- choosing and moving ------------------------------------------------------------------

    def kept(self) -> list[str]:
        """The copy kept of each group."""
        return [paths[max(0, choice.checkedId())] for paths, choice in zip(self.groups, self._choices)]

    def keep(self, path: str) -> None:
        """Keep ``path`` in its group (the others of the group go)."""
        self._cards[path].keep.setChecked(True)

    def to_move(self) -> list[str]:
        kept = set(self.kept())
        return [p for paths in self.groups for p in paths if p not in kept]

    def confirm(self, paths: Sequence[str]) -> bool:
        """Asks before anything moves; True: move them."""
        n = len(paths)
        box = QMessageBox(QMessageBox.Icon.Warning, "Move to the trash?",
                          f"Move {n} file{'s' if n != 1 else ''} to the trash?", parent=self)
        box.setTextFormat(Qt.TextFormat.PlainText)
        box.setInformativeText(f"One copy of each of the {len(self.groups)} groups stays where it is. "
                               "The files moved can be restored from the trash.")
        box.setDetailedText("\n".join(paths))
        box.setStandardButtons(QMessageBox.StandardButton.Ok | QMessageBox.StandardButton.Cancel)
        box.button(QMessageBox.StandardButton.Ok).setText(f"Move {n} to the trash")
        box.setDefaultButton(QMessageBox.StandardButton.Cancel)
        box.exec()
        return box.clickedButton() is box.button(QMessageBox.StandardButton.Ok)

    @Slot()
    def move_others(self) -> None:
        paths = self.to_move()
        if not paths or not self.confirm(paths):
            return
        moved, failed = move_to_trash(paths)
        if moved:
            gone = set(moved)
            self.groups = self._left(gone)
            self.trashed.emit(moved)
        if failed:
            lines = "\n".join(f"{p}: {why}" for p, why in failed)
            box = QMessageBox(QMessageBox.Icon.Warning, "Some files were not moved",
                              f"{len(failed)} of {len(paths)} files could not be moved to the trash; they are "
                              "where they were.", parent=self)
            box.setTextFormat(Qt.TextFormat.PlainText)
            box.setInformativeText(as_plain(lines))
            box.exec()
        self._build()

    def _left(self, gone: set[str]) -> list[tuple[str, ...]]:
        """The groups without the moved files; a group of one is a group no more."""
        out = []
        for paths in self.groups:
            left = tuple(p for p in paths if p not in gone)
            if len(left) > 1:
                self._kinds[left] = self._kinds.get(paths, "")
                out.append(left)
        return out


__all__ = ["CHANNEL", "CopyFacts", "DuplicateFinder", "DuplicatesDialog", "DuplicatesFound", "group_duplicates",
           "move_to_trash"]
