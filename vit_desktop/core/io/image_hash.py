"""Perceptual hashes of photos: the same picture resized, re-encoded, lightly cropped or brightened
hashes (nearly) the same; a different picture does not.

The hash is the standard pHash (Zauner 2010, as the ``imagehash`` package computes it, bit for bit):
grey levels resized to 32x32 with Lanczos, their 2-D DCT-II, the 8x8 lowest frequencies compared
with their median: 64 bits, half of them set. A
photo gets one hash of its whole frame and one of each of 25 *crop windows* (92 % of each side, on
a 5x5 grid of positions from corner to corner): a light crop of a photo (5-10 % off, anywhere)
hashes within a few bits of one of the original's windows, while its whole-frame hash can be 20
bits away, as far as a different shot of the same scene.

Measured on the shared photos (bench/bench_duplicates.py, 134 copies of each kind, two draws):
re-encodes (JPEG quality 60-90), resizes to 50 % and 25 %, 160-pixel thumbnails and brightness
±15 % are within 4 bits of the original's frame, light crops within 8 bits of one of its windows;
two different photos are 14 bits (frames) and 12 bits (windows) or more apart, and two shots of a
scene a tenth of the frame apart 22 bits (frames) and 8 bits (windows) or more.

Photos are decoded small (Pillow's JPEG draft mode, at least 256 pixels on the shorter side), at a
fraction of the time: the whole-frame hash is the full-size photo's for 186 of the 187 shared
photos, and 2 bits from it for the other.
"""

from __future__ import annotations

import os
from functools import lru_cache

import numpy as np
from PIL import Image

from .images import decode

#: Bits of one hash.
HASH_BITS = 64
#: Each hash as bytes (``numpy.packbits`` of the 8x8 bits, row by row: imagehash's hex order).
HASH_BYTES = HASH_BITS // 8
#: The share of each side a crop window keeps, and where windows sit (0: left or top, 1: right or bottom).
WINDOW_SCALE = 0.92
WINDOW_POSITIONS = (0.0, 0.25, 0.5, 0.75, 1.0)
#: Hashes per photo: the whole frame first, then the crop windows row by row.
CODES = 1 + len(WINDOW_POSITIONS) ** 2
#: The decode's shorter side: JPEGs are decoded at 1/2, 1/4 or 1/8 scale down to this.
DECODE_SIZE = 256
#: Names the algorithm where hashes are stored: a different hash must not be read as this one.
ALGORITHM = f"phash-8x8 windows-{len(WINDOW_POSITIONS)}x{len(WINDOW_POSITIONS)}@{WINDOW_SCALE}"

_SIDE = 32  # pHash's grey image: 32x32, of which the 8x8 lowest DCT frequencies are kept
_LOW = 8


@lru_cache(maxsize=1)
def _dct_matrix() -> np.ndarray:
    """(32, 32) DCT-II as scipy's ``dct(type=2, norm=None)`` computes it along one axis."""
    k = np.arange(_SIDE)[:, None]
    n = np.arange(_SIDE)[None, :]
    out: np.ndarray = 2.0 * np.cos(np.pi * (2 * n + 1) * k / (2 * _SIDE))
    return out


def _bits(grey: Image.Image, box: tuple[float, float, float, float] | None = None) -> np.ndarray:
    """pHash bits (64,) bool of ``grey`` (mode L), or of the region ``box`` of it."""
    small = np.asarray(grey.resize((_SIDE, _SIDE), Image.Resampling.LANCZOS, box=box), dtype=np.float64)
    d = _dct_matrix()
    low = (d @ small @ d.T)[:_LOW, :_LOW].ravel()  # (32, 32) -> the (8, 8) lowest frequencies
    bits: np.ndarray = low > np.median(low)
    return bits


def phash(image: Image.Image) -> bytes:
    """The 64-bit pHash of a whole image, as :data:`HASH_BYTES` bytes (imagehash's ``phash``)."""
    return np.packbits(_bits(image.convert("L"))).tobytes()


def image_hashes(image: Image.Image) -> np.ndarray:
    """(:data:`CODES`, :data:`HASH_BYTES`) uint8: the whole frame's pHash, then each crop window's."""
    grey = image.convert("L")
    w, h = grey.size
    rows = [_bits(grey)]
    for py in WINDOW_POSITIONS:
        for px in WINDOW_POSITIONS:
            x0 = (1.0 - WINDOW_SCALE) * px * w
            y0 = (1.0 - WINDOW_SCALE) * py * h
            rows.append(_bits(grey, (x0, y0, x0 + WINDOW_SCALE * w, y0 + WINDOW_SCALE * h)))
    packed: np.ndarray = np.packbits(np.stack(rows), axis=1)
    return packed


def photo_hashes(path: str | os.PathLike[str]) -> tuple[np.ndarray, tuple[int, int]]:
    """:func:`image_hashes` of the photo at ``path`` (upright, as shown) and its full (width, height).

    Raises :class:`~vit_desktop.core.errors.ImageError` for anything that is not a readable image.
    """
    decoded = decode(path, draft_size=DECODE_SIZE)
    return image_hashes(decoded.image), decoded.size


#: Set bits per byte value: Hamming distances without numpy 2's ``bitwise_count``.
_POPCOUNT = np.array([bin(i).count("1") for i in range(256)], dtype=np.uint8)


def hamming(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Bits in which packed hashes differ, over the last axis (broadcast): uint8 (..., 8) -> int."""
    out: np.ndarray = _POPCOUNT[np.bitwise_xor(a, b)].sum(axis=-1, dtype=np.int32)
    return out


def signs(codes: np.ndarray) -> np.ndarray:
    """Packed hashes (n, 8) uint8 -> (n, 64) float32 of ±1: ``64 - a @ b.T`` is twice the Hamming
    distance, so that one matrix product compares thousands of hashes at once."""
    out: np.ndarray = np.unpackbits(codes, axis=-1).astype(np.float32) * 2.0 - 1.0
    return out


__all__ = [
    "ALGORITHM",
    "CODES",
    "DECODE_SIZE",
    "HASH_BITS",
    "HASH_BYTES",
    "WINDOW_POSITIONS",
    "WINDOW_SCALE",
    "hamming",
    "image_hashes",
    "phash",
    "photo_hashes",
    "signs",
]
