"""Pixels to ``QImage``: the one conversion from numpy arrays and Pillow images.

A ``QImage`` built on a numpy buffer only borrows it, so every image made here is copied: it owns
its pixels and may cross threads. (``QPixmap`` is made from it on the GUI thread only.)
"""

from __future__ import annotations

import numpy as np
from PIL import Image
from PySide6.QtGui import QImage


def rgb_to_qimage(rgb: np.ndarray) -> QImage:
    """(h, w, 3) uint8 RGB -> a QImage that owns its pixels."""
    arr = np.ascontiguousarray(rgb, dtype=np.uint8)
    h, w, _ = arr.shape
    return QImage(arr.data, w, h, 3 * w, QImage.Format.Format_RGB888).copy()


def pil_to_qimage(image: Image.Image) -> QImage:
    """A Pillow image of any mode, as RGB."""
    return rgb_to_qimage(np.asarray(image.convert("RGB"), dtype=np.uint8))


__all__ = ["pil_to_qimage", "rgb_to_qimage"]
