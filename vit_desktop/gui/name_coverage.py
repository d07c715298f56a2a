"""What each of the user's category names covers, as a list to tick: "cat" is the house cats and the
big cats; untick the tiger and the name becomes "cat = cat - tiger", which the names box, the
command line's ``--classes`` and the fine-tune dialog all read the same way."""

from __future__ import annotations

from collections.abc import Sequence

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QDialog,
    QDialogButtonBox,
    QLabel,
    QTreeWidget,
    QTreeWidgetItem,
    QVBoxLayout,
    QWidget,
)

from vit_desktop.core.labels.categories import Coverage
from vit_desktop.core.labels.hierarchy import Hierarchy

#: The ImageNet class index each ticked row stands for.
_CLASS = int(Qt.ItemDataRole.UserRole) + 1


class CoverageDialog(QDialog):
    """One branch per name, one tickable row per class it can cover; :meth:`lines` reads the result."""

    def __init__(self, covers: Sequence[Coverage], hierarchy: Hierarchy, labels: Sequence[str],
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("What your names cover")
        self._covers = list(covers)
        self._hierarchy = hierarchy
        intro = QLabel("Each name counts the model's classes ticked under it. Untick what you do not mean "
                       "(the tigers under \"cat\"); the names box then reads \"cat = cat - tiger\".", self)
        intro.setWordWrap(True)
        intro.setTextFormat(Qt.TextFormat.PlainText)
        self.tree = QTreeWidget(self)
        self.tree.setHeaderHidden(True)
        self.tree.setUniformRowHeights(True)
        for cov in self._covers:
            branch = QTreeWidgetItem([f"{cov.name} — {cov.meaning}, {len(cov.classes)} of {len(cov.offered)} "
                                      "classes"])
            branch.setToolTip(0, "\n".join(cov.notes))
            for c in cov.offered:
                row = QTreeWidgetItem([labels[c] if c < len(labels) else str(c)])
                row.setData(0, _CLASS, c)
                row.setFlags(row.flags() | Qt.ItemFlag.ItemIsUserCheckable)
                row.setCheckState(0, Qt.CheckState.Checked if cov.ticked(c) else Qt.CheckState.Unchecked)
                branch.addChild(row)
            self.tree.addTopLevelItem(branch)
        if len(self._covers) <= 3:
            self.tree.expandAll()
        self.problem = QLabel("", self)
        self.problem.setObjectName("detailError")
        self.problem.setTextFormat(Qt.TextFormat.PlainText)
        self.problem.hide()
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel, self)
        buttons.accepted.connect(self._accept)
        buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addWidget(intro)
        layout.addWidget(self.tree, 1)
        layout.addWidget(self.problem)
        layout.addWidget(buttons)
        self.resize(520, 560)

    def ticked(self, index: int) -> list[int]:
        """The classes ticked under the ``index``-th name."""
        branch = self.tree.topLevelItem(index)
        rows = [branch.child(i) for i in range(branch.childCount())] if branch is not None else []
        return [int(row.data(0, _CLASS)) for row in rows
                if row is not None and row.checkState(0) == Qt.CheckState.Checked]

    def lines(self) -> list[str]:
        """The name lines that mean what is ticked; ClassNameError when a name would cover nothing."""
        return [cov.line_with(self.ticked(i), self._hierarchy) for i, cov in enumerate(self._covers)]

    def _accept(self) -> None:
        from vit_desktop.core.errors import VitDesktopError

        try:
            self.lines()
        except VitDesktopError as exc:
            self.problem.setText(f"{exc}: tick at least one class under every name.")
            self.problem.show()
            return
        self.accept()


__all__ = ["CoverageDialog"]
