"""A fast PNG encoder for overlays: one filter for every row and Huffman-only deflate.

Pillow tries all five PNG filters on every row and then runs full deflate; for photo overlays
that costs 2-3x more time than this for the same file size (16.5 ms against 6.4 ms for a 500x375
overlay on a 2-core CPU, 298 KB against 290 KB). The "Up" filter turns a photo's smooth
vertical gradients into small numbers, which Huffman coding alone packs nearly as well as LZ77
matching would; zlib releases the GIL while it compresses, so writer threads run in parallel.

Deflate is zlib-ng's where it is installed (a dependency): the same format, its Huffman-only pass
1.6x faster than zlib's (2.6 against 4.3 ms for that overlay); `classify --heatmaps` on 400 photos
took +22 % over classifying alone instead of +36 % (medians of 7 runs, 2-core CPU). Without it,
zlib writes valid PNGs of the same size, more slowly.
"""

from __future__ import annotations

import struct
import zlib
from types import ModuleType

import numpy as np
from PIL import Image

deflate_module: ModuleType
try:
    from zlib_ng import zlib_ng

    deflate_module = zlib_ng
except ImportError:  # a build without zlib-ng: the same files, written more slowly
    deflate_module = zlib

_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_FILTER_UP = 2
# IDAT chunks are split so that no chunk nears the format's 2**31 - 1 byte limit.
_IDAT_BYTES = 1 << 24


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(data, zlib.crc32(kind)))


def encode_png(image: Image.Image) -> bytes:
    """The PNG bytes of an RGB image (8 bits per channel, no metadata)."""
    if image.mode != "RGB":
        raise ValueError(f"encode_png takes RGB images, not {image.mode}")
    w, h = image.size
    if w == 0 or h == 0:
        raise ValueError("a PNG needs at least one pixel")
    # (h, w, 3) -> (h, 1 + 3w): each row's filter byte, then that row minus the row above
    # (uint8 arithmetic wraps modulo 256, as the format wants).
    rows = np.asarray(image, dtype=np.uint8).reshape(h, 3 * w)
    raw = np.empty((h, 3 * w + 1), dtype=np.uint8)
    raw[:, 0] = _FILTER_UP
    raw[0, 1:] = rows[0]
    np.subtract(rows[1:], rows[:-1], out=raw[1:, 1:])
    deflate = deflate_module.compressobj(1, zlib.DEFLATED, 15, 9, zlib.Z_HUFFMAN_ONLY)
    data = deflate.compress(raw.data.cast("B")) + deflate.flush()
    header = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)  # 8-bit RGB, deflate, no interlace
    parts = [_SIGNATURE, _chunk(b"IHDR", header)]
    parts += [_chunk(b"IDAT", data[i : i + _IDAT_BYTES]) for i in range(0, len(data), _IDAT_BYTES)]
    parts.append(_chunk(b"IEND", b""))
    return b"".join(parts)
