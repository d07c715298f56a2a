"""Qt item models over classification results: a flat list, plus a sort/filter proxy.

Thousands of rows arrive in batches; each batch is one ``beginInsertRows`` so views lay out once
per batch, not once per image. A file classified again (dropped twice) updates its row in place.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping, Sequence
from enum import IntEnum
from pathlib import Path
from typing import Any

from PySide6.QtCore import (
    QAbstractListModel,
    QMimeData,
    QModelIndex,
    QObject,
    QPersistentModelIndex,
    QSortFilterProxyModel,
    Qt,
    QUrl,
)

from vit_desktop.core.types import ClassifyResult, OpenSetRule
from vit_desktop.gui.plain_text import as_plain

AnyIndex = QModelIndex | QPersistentModelIndex


class Roles(IntEnum):
    RESULT = int(Qt.ItemDataRole.UserRole) + 1
    PATH = RESULT + 1
    LABEL = RESULT + 2
    SCORE = RESULT + 3
    ERROR = RESULT + 4
    UNCERTAIN = RESULT + 5
    NAME = RESULT + 6
    #: True when an earlier model made the result (its labels are not the current model's).
    STALE = RESULT + 7
    #: What an uncertain result is called now ("none of these", "not sure", "uncertain").
    VERDICT = RESULT + 8
    #: How like the photo of "Find similar" this one is (cosine of features, 0-1); None outside
    #: that order or without features.
    SIMILARITY = RESULT + 9
    #: What the similar order sorts by: the photo asked about above all, then by similarity.
    SIMILARITY_KEY = RESULT + 10


@dataclasses.dataclass(frozen=True)
class SimilarOrder:
    """The gallery ordered by likeness to ``query``: each photo's cosine with it (itself included)."""

    query: str
    scores: Mapping[str, float]


class ResultsModel(QAbstractListModel):
    """One row per image, in the order results arrived."""

    #: Beyond this many separate removals or insertions, one reset is cheaper than row signals.
    MAX_STEPS = 16

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._rows: list[ClassifyResult] = []
        self._row_of: dict[str, int] = {}
        #: The model in use now (``LoadedModel.model_id``); results of another one are stale.
        self.current_model = ""
        #: What an uncertain result is called: "none of these", "not sure", "uncertain".
        self.verdict = "uncertain"
        #: The "similar to" order shown, if any.
        self.similar: SimilarOrder | None = None

    # -- Qt API --------------------------------------------------------------------------------

    def rowCount(self, parent: AnyIndex = QModelIndex()) -> int:  # noqa: B008 - Qt's signature
        return 0 if parent.isValid() else len(self._rows)

    def data(self, index: AnyIndex, role: int = int(Qt.ItemDataRole.DisplayRole)) -> Any:
        if not index.isValid() or not 0 <= index.row() < len(self._rows):
            return None
        r = self._rows[index.row()]
        if role == Qt.ItemDataRole.DisplayRole or role == Roles.NAME:
            return Path(r.path).name
        if role == Qt.ItemDataRole.ToolTipRole:
            stale = "\nClassified by an earlier model: Model ▸ re-classify to compare" if self.is_stale(r) else ""
            return as_plain(tooltip(r, self.verdict) + stale)
        if role == Roles.RESULT:
            return r
        if role == Roles.PATH:
            return r.path
        if role == Roles.LABEL:
            return r.top.label if r.top else ""
        if role == Roles.SCORE:
            # Errors sort below every real score.
            return r.top.score if r.top else -1.0
        if role == Roles.ERROR:
            return r.error or ""
        if role == Roles.UNCERTAIN:
            return r.uncertain
        if role == Roles.VERDICT:
            return self.verdict
        if role == Roles.STALE:
            return self.is_stale(r)
        if role == Roles.SIMILARITY or role == Roles.SIMILARITY_KEY:
            return self._similarity(r.path, key=role == Roles.SIMILARITY_KEY)
        return None

    def _similarity(self, path: str, *, key: bool) -> float | None:
        order = self.similar
        score = order.scores.get(path) if order is not None else None
        if not key:
            return None if score is None else min(1.0, max(0.0, score))
        if order is not None and path == order.query:
            return 3.0  # above any cosine: the photo asked about comes first
        return -3.0 if score is None else score  # photos without features last

    def flags(self, index: AnyIndex) -> Qt.ItemFlag:
        base = super().flags(index)
        # Photos can be dragged out: onto a class of the fine-tune dialog, or a file manager.
        return base | Qt.ItemFlag.ItemIsDragEnabled if index.isValid() else base

    def mimeTypes(self) -> list[str]:
        return ["text/uri-list"]

    def mimeData(self, indexes: Sequence[QModelIndex]) -> QMimeData:
        mime = QMimeData()
        rows = sorted({i.row() for i in indexes if i.isValid()})
        mime.setUrls([QUrl.fromLocalFile(self._rows[r].path) for r in rows if Path(self._rows[r].path).exists()])
        return mime

    # -- our API -------------------------------------------------------------------------------

    def add_results(self, results: Iterable[ClassifyResult]) -> None:
        """Append new files in one insert; files seen before are updated in place."""
        fresh: list[ClassifyResult] = []
        for r in results:
            row = self._row_of.get(r.path)
            if row is not None:
                self._rows[row] = r
                idx = self.index(row)
                self.dataChanged.emit(idx, idx)
            else:
                fresh.append(r)
        if not fresh:
            return
        # The same path twice inside one batch: keep the last.
        unique: dict[str, ClassifyResult] = {}
        for r in fresh:
            unique[r.path] = r
        first = len(self._rows)
        self.beginInsertRows(QModelIndex(), first, first + len(unique) - 1)
        for r in unique.values():
            self._row_of[r.path] = len(self._rows)
            self._rows.append(r)
        self.endInsertRows()

    def replace_result(self, result: ClassifyResult) -> None:
        """Swap in a newer result for a file already listed (e.g. with a recomputed heatmap)."""
        row = self._row_of.get(result.path)
        if row is None:
            return
        self._rows[row] = result
        idx = self.index(row)
        self.dataChanged.emit(idx, idx)

    def apply_rule(self, threshold: float | None, rule: OpenSetRule, verdict: str) -> int:
        """Mark each result uncertain by the user's ``threshold`` on its best score, or without one
        by ``rule`` on the score the run judged it by; ``verdict`` names them ("none of these").
        Returns how many changed."""
        self.verdict = verdict

        def uncertain(r: ClassifyResult) -> bool:
            if threshold is not None:
                return r.top is not None and r.top.score < threshold
            return r.known_score is not None and r.known_score < rule.threshold

        changed = [i for i, r in enumerate(self._rows) if r.top is not None and r.uncertain != uncertain(r)]
        for i in changed:
            r = self._rows[i]
            self._rows[i] = dataclasses.replace(r, uncertain=not r.uncertain)
        if self._rows:  # one signal for the span: views repaint once, not once per card
            first, last = (changed[0], changed[-1]) if changed else (0, len(self._rows) - 1)
            self.dataChanged.emit(self.index(first), self.index(last))
        return len(changed)

    def remove_paths(self, paths: Iterable[str]) -> list[tuple[int, ClassifyResult]]:
        """Take these files off the list (the files themselves are not touched).

        Returns what was removed as (row, result), rows ascending: :meth:`restore` puts it back.
        """
        rows = sorted({row for p in paths if (row := self._row_of.get(p)) is not None})
        removed = [(row, self._rows[row]) for row in rows]
        # Runs of adjacent rows, removed from the bottom up so that the rows above keep their numbers;
        # a selection scattered over a long list is one reset instead (each removal renumbers the rest).
        runs: list[list[int]] = []
        for row in rows:
            if runs and runs[-1][1] == row - 1:
                runs[-1][1] = row
            else:
                runs.append([row, row])
        if len(runs) > self.MAX_STEPS:
            gone = set(rows)
            self._reset([r for i, r in enumerate(self._rows) if i not in gone])
            return removed
        for first, last in reversed(runs):
            self.beginRemoveRows(QModelIndex(), first, last)
            for r in self._rows[first : last + 1]:
                del self._row_of[r.path]
            del self._rows[first : last + 1]
            self._renumber(first)
            self.endRemoveRows()
        return removed

    def restore(self, removed: Sequence[tuple[int, ClassifyResult]]) -> list[str]:
        """Put back what :meth:`remove_paths` took, at its rows; files listed again since are skipped."""
        back = [(row, r) for row, r in sorted(removed, key=lambda e: e[0]) if r.path not in self._row_of]
        if len(back) > self.MAX_STEPS:
            rows = list(self._rows)
            for row, r in back:
                rows.insert(min(row, len(rows)), r)
            self._reset(rows)
            return [r.path for _, r in back]
        for row, r in back:
            row = min(row, len(self._rows))
            self.beginInsertRows(QModelIndex(), row, row)
            self._rows.insert(row, r)
            self._renumber(row)
            self.endInsertRows()
        return [r.path for _, r in back]

    def _reset(self, rows: list[ClassifyResult]) -> None:
        self.beginResetModel()
        self._rows = rows
        self._row_of = {r.path: i for i, r in enumerate(rows)}
        self.endResetModel()

    def _renumber(self, first: int) -> None:
        for i in range(first, len(self._rows)):
            self._row_of[self._rows[i].path] = i

    def clear(self) -> None:
        self.beginResetModel()
        self._rows.clear()
        self._row_of.clear()
        self.endResetModel()

    def results(self) -> list[ClassifyResult]:
        return list(self._rows)

    def result_for(self, path: str) -> ClassifyResult | None:
        row = self._row_of.get(path)
        return self._rows[row] if row is not None else None

    def row_of(self, path: str) -> int | None:
        return self._row_of.get(path)

    def is_stale(self, r: ClassifyResult) -> bool:
        return bool(r.ok and r.model and self.current_model and r.model != self.current_model)

    def set_current_model(self, model_id: str) -> None:
        """Results made by another model are marked stale (views repaint them)."""
        self.current_model = model_id
        if self._rows:
            self.dataChanged.emit(self.index(0), self.index(len(self._rows) - 1), [int(Roles.STALE)])

    def set_similar(self, order: SimilarOrder | None) -> None:
        """Show each photo's likeness to ``order.query`` (None: no more)."""
        self.similar = order
        if self._rows:
            self.dataChanged.emit(self.index(0), self.index(len(self._rows) - 1),
                                  [int(Roles.SIMILARITY), int(Roles.SIMILARITY_KEY)])

    def stale_results(self) -> list[ClassifyResult]:
        return [r for r in self._rows if self.is_stale(r)]

    def counts(self) -> tuple[int, int, int]:
        """(images, errors, uncertain)."""
        errors = sum(1 for r in self._rows if r.error)
        uncertain = sum(1 for r in self._rows if r.uncertain and not r.error)
        return len(self._rows), errors, uncertain


def tooltip(r: ClassifyResult, verdict: str = "uncertain") -> str:
    if r.error:
        return f"{r.path}\n{r.error}"
    lines = [r.path]
    if r.uncertain:
        lines.append(f"{verdict[:1].upper()}{verdict[1:]}: the best guesses are")
    lines += [f"{p.label}: {p.score:.1%}" for p in r.predictions]
    lines += r.notes
    return "\n".join(lines)


class FilterMode(IntEnum):
    ALL = 0
    CONFIDENT = 1
    UNCERTAIN = 2
    ERRORS = 3


FILTER_TITLES: dict[FilterMode, str] = {
    FilterMode.ALL: "All images",
    FilterMode.CONFIDENT: "Confident",
    FilterMode.UNCERTAIN: "Uncertain",
    FilterMode.ERRORS: "Errors",
}

#: Title, role, order.
SORT_KEYS: Sequence[tuple[str, Roles | None, Qt.SortOrder]] = (
    ("Order added", None, Qt.SortOrder.AscendingOrder),
    ("Name", Roles.NAME, Qt.SortOrder.AscendingOrder),
    ("Label", Roles.LABEL, Qt.SortOrder.AscendingOrder),
    ("Score, high first", Roles.SCORE, Qt.SortOrder.DescendingOrder),
    ("Score, low first", Roles.SCORE, Qt.SortOrder.AscendingOrder),
)


class ResultsFilter(QSortFilterProxyModel):
    """Filters by text in the label or file name, by state, and by a minimum score."""

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._mode = FilterMode.ALL
        self._text = ""
        self._min_score = 0.0
        self.setSortCaseSensitivity(Qt.CaseSensitivity.CaseInsensitive)
        self.setSortLocaleAware(True)
        self.setDynamicSortFilter(True)

    def _refilter(self, change: Callable[[], None]) -> None:
        # Qt 6.9 replaced invalidateFilter() with a begin/end pair around the change.
        if hasattr(self, "beginFilterChange"):
            self.beginFilterChange()
            change()
            self.endFilterChange(QSortFilterProxyModel.Direction.Rows)
        else:  # pragma: no cover - older Qt
            change()
            self.invalidateFilter()

    def set_mode(self, mode: FilterMode) -> None:
        def change() -> None:
            self._mode = FilterMode(mode)

        self._refilter(change)

    def set_text(self, text: str) -> None:
        def change() -> None:
            self._text = text.strip().casefold()

        self._refilter(change)

    def set_min_score(self, score: float) -> None:
        def change() -> None:
            self._min_score = float(score)

        self._refilter(change)

    def refilter(self) -> None:
        """Re-apply the filter after the rows' data changed underneath (e.g. the threshold)."""
        self._refilter(lambda: None)

    def set_sort_key(self, key: int) -> None:
        _title, role, order = SORT_KEYS[key]
        if role is None:
            self.setSortRole(int(Qt.ItemDataRole.UserRole))
            self.sort(-1)  # back to the source order
            return
        self.setSortRole(int(role))
        self.sort(0, order)

    def sort_by_similarity(self) -> None:
        """The "similar to" order: the photo asked about first, then the most alike."""
        self.setSortRole(int(Roles.SIMILARITY_KEY))
        self.sort(0, Qt.SortOrder.DescendingOrder)

    def index_of_path(self, path: str) -> QModelIndex:
        """The proxy index showing ``path``, or an invalid index if it is filtered out or absent."""
        source = self.sourceModel()
        row = source.row_of(path) if isinstance(source, ResultsModel) else None
        if row is None:
            return QModelIndex()
        return self.mapFromSource(source.index(row, 0))

    def filterAcceptsRow(self, source_row: int, source_parent: AnyIndex) -> bool:
        model = self.sourceModel()
        idx = model.index(source_row, 0, source_parent)
        r: ClassifyResult | None = model.data(idx, Roles.RESULT)
        if r is None:
            return False
        if self._mode == FilterMode.ERRORS and not r.error:
            return False
        if self._mode == FilterMode.UNCERTAIN and (r.error or not r.uncertain):
            return False
        if self._mode == FilterMode.CONFIDENT and (r.error or r.uncertain):
            return False
        if self._min_score > 0.0 and (r.top is None or r.top.score < self._min_score):
            return False
        if self._text:
            hay = " ".join([Path(r.path).name, *(p.label for p in r.predictions[:1])]).casefold()
            if self._text not in hay:
                return False
        return True


__all__ = ["FILTER_TITLES", "SORT_KEYS", "FilterMode", "ResultsFilter", "ResultsModel", "Roles", "SimilarOrder"]
