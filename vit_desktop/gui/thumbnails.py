"""Thumbnails and previews decoded off the GUI thread.

A ``QThreadPool`` decodes with Pillow (which releases the GIL while decoding) and hands back a
``QImage`` copied off its numpy buffer. Only the GUI thread turns it into a ``QPixmap``. Requests
are lazy (the delegate asks while painting) and the results live in a bounded LRU cache, so a
gallery of thousands of images only ever decodes what is on screen.
"""

from __future__ import annotations

import collections
import logging

from PIL import Image
from PySide6.QtCore import QObject, QRunnable, QThreadPool, Signal, Slot
from PySide6.QtGui import QImage, QPixmap

from vit_desktop.core.errors import first_line
from vit_desktop.gui.qimage import pil_to_qimage

log = logging.getLogger(__name__)


def load_scaled(path: str, max_side: int) -> QImage:
    """Decode ``path`` oriented and in RGB, no larger than ``max_side``; raises ImageError."""
    from vit_desktop.core.io.images import load_image

    image = load_image(path, draft_size=max_side)
    if max(image.size) > max_side:
        image.thumbnail((max_side, max_side), Image.Resampling.BILINEAR)
    return pil_to_qimage(image)


class _Emitter(QObject):
    """Lives on the GUI thread; pool threads emit through it (queued to GUI-thread slots)."""

    loaded = Signal(str, int, QImage)
    failed = Signal(str, int, str)


class _LoadJob(QRunnable):
    def __init__(self, emitter: _Emitter, path: str, size: int) -> None:
        super().__init__()
        self._emitter = emitter
        self._path = path
        self._size = size

    def run(self) -> None:
        try:
            image = load_scaled(self._path, self._size)
        except Exception as exc:  # noqa: BLE001 - a bad file must not end the pool thread
            self._emitter.failed.emit(self._path, self._size, first_line(exc) or "cannot read")
            return
        self._emitter.loaded.emit(self._path, self._size, image)


class ImageLoader(QObject):
    """Asynchronous, cached image decoding for the gallery and the detail view.

    ``thumbnail(path)`` returns a cached pixmap or ``None`` (and starts decoding it);
    ``thumbnail_ready(path)`` fires when it arrives. ``request_preview(path)`` decodes a larger
    version for the detail view and answers with ``preview_ready(path, QImage)``.
    """

    thumbnail_ready = Signal(str)
    preview_ready = Signal(str, QImage)
    preview_failed = Signal(str, str)

    def __init__(self, thumb_size: int = 160, preview_size: int = 2048, capacity: int = 500,
                 parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.thumb_size = thumb_size
        self.preview_size = preview_size
        self._capacity = capacity
        self._cache: collections.OrderedDict[str, QPixmap] = collections.OrderedDict()
        self._pending: set[str] = set()
        self._failed: dict[str, str] = {}
        # Newest request first: after a fast scroll the cards now on screen are decoded before
        # the ones scrolled past.
        self._seq = 0
        self._pool = QThreadPool(self)
        # Two cores are shared with the compute thread: decoding must not starve it.
        self._pool.setMaxThreadCount(max(1, QThreadPool.globalInstance().maxThreadCount() // 2))
        self._emitter = _Emitter(self)
        self._emitter.loaded.connect(self._on_loaded)
        self._emitter.failed.connect(self._on_failed)

    def thumbnail(self, path: str) -> QPixmap | None:
        pix = self._cache.get(path)
        if pix is not None:
            self._cache.move_to_end(path)
            return pix
        if path not in self._pending and path not in self._failed:
            self._pending.add(path)
            self._seq += 1
            self._pool.start(_LoadJob(self._emitter, path, self.thumb_size), self._seq)
        return None

    def thumbnail_error(self, path: str) -> str | None:
        return self._failed.get(path)

    def request_preview(self, path: str) -> None:
        # Previews jump the queue: the user is looking at this one now.
        self._seq += 1
        self._pool.start(_LoadJob(self._emitter, path, self.preview_size), (1 << 30) + self._seq)

    def forget(self) -> None:
        """Drop every cached thumbnail and pending request (the results were cleared)."""
        self._pool.clear()
        self._cache.clear()
        self._pending.clear()
        self._failed.clear()

    def shutdown(self) -> None:
        self._pool.clear()
        self._pool.waitForDone()

    @Slot(str, int, QImage)
    def _on_loaded(self, path: str, size: int, image: QImage) -> None:
        if size != self.thumb_size:
            self.preview_ready.emit(path, image)
            return
        self._pending.discard(path)
        self._cache[path] = QPixmap.fromImage(image)
        while len(self._cache) > self._capacity:
            self._cache.popitem(last=False)
        self.thumbnail_ready.emit(path)

    @Slot(str, int, str)
    def _on_failed(self, path: str, size: int, message: str) -> None:
        if size != self.thumb_size:
            self.preview_failed.emit(path, message)
            return
        self._pending.discard(path)
        self._failed[path] = message
        self.thumbnail_ready.emit(path)


__all__ = ["ImageLoader", "load_scaled"]
