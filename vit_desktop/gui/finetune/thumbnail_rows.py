"""List rows that show their photo as a small thumbnail before the text.

The thumbnails come from an :class:`~vit_desktop.gui.thumbnails.ImageLoader`, the gallery's: decoded
on its pool, never on the GUI thread, and asked for while a row is painted, so a class of hundreds of
photos decodes only the rows on screen. A row waits with an empty square until its thumbnail arrives;
a photo that cannot be read gets a warning sign, and its tooltip says why.
"""

from __future__ import annotations

from PySide6.QtCore import QEvent, QModelIndex, QPersistentModelIndex, QSize, Qt, Slot
from PySide6.QtGui import QHelpEvent, QIcon, QPixmap
from PySide6.QtWidgets import (
    QAbstractItemView,
    QListWidget,
    QStyle,
    QStyledItemDelegate,
    QStyleOptionViewItem,
    QToolTip,
)

from vit_desktop.gui.plain_text import as_plain
from vit_desktop.gui.thumbnails import ImageLoader

#: The side of a thumbnail in a list row, in pixels.
ROW_THUMBNAIL = 48


class ThumbnailRows(QStyledItemDelegate):
    """Draws each row of ``view`` with the thumbnail of the photo whose path its ``role`` holds."""

    def __init__(self, view: QListWidget, loader: ImageLoader, *, side: int = ROW_THUMBNAIL,
                 role: int = Qt.ItemDataRole.UserRole) -> None:
        super().__init__(view)
        self._view = view
        self._loader = loader
        self._side = side
        self._role = role
        blank = QPixmap(side, side)
        blank.fill(Qt.GlobalColor.transparent)
        self._waiting = QIcon(blank)
        self._unreadable = view.style().standardIcon(QStyle.StandardPixmap.SP_MessageBoxWarning)
        view.setIconSize(QSize(side, side))
        view.setUniformItemSizes(True)  # hundreds of rows: no per-row size queries
        view.setItemDelegate(self)
        loader.thumbnail_ready.connect(self._on_thumbnail_ready)

    def initStyleOption(self, option: QStyleOptionViewItem, index: QModelIndex | QPersistentModelIndex) -> None:
        super().initStyleOption(option, index)
        path = index.data(self._role)
        if not path:
            return
        pix = self._loader.thumbnail(str(path))  # None: asked for, decoding on the loader's pool
        if pix is not None:
            icon = QIcon(pix)
        else:
            icon = self._unreadable if self._loader.thumbnail_error(str(path)) is not None else self._waiting
        option.features |= QStyleOptionViewItem.ViewItemFeature.HasDecoration
        option.decorationSize = QSize(self._side, self._side)
        option.icon = icon

    def helpEvent(self, event: QHelpEvent, view: QAbstractItemView, option: QStyleOptionViewItem,
                  index: QModelIndex | QPersistentModelIndex) -> bool:
        path = index.data(self._role) if index.isValid() else None
        problem = self._loader.thumbnail_error(str(path)) if path else None
        if event.type() == QEvent.Type.ToolTip and problem is not None:
            QToolTip.showText(event.globalPos(), as_plain(f"{path}\ncannot be read: {problem}"), view)
            return True
        return super().helpEvent(event, view, option, index)

    @Slot(str)
    def _on_thumbnail_ready(self, _path: str) -> None:
        # Rows on screen are few: repainting them is cheaper than finding the one that changed.
        self._view.viewport().update()


__all__ = ["ROW_THUMBNAIL", "ThumbnailRows"]
