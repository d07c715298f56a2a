"""The overlay PNG encoder: files any reader opens, with exactly the pixels that were drawn."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from vit_desktop.core.io.png import encode_png


def decoded(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as img:
        assert img.format == "PNG" and img.mode == "RGB"
        img.load()  # also verifies every chunk's CRC and the zlib stream's checksum
        return np.asarray(img)


@pytest.fixture(params=["installed", "zlib"])
def deflate(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Each test runs with the deflate in use (zlib-ng where installed) and with plain zlib."""
    import zlib

    from vit_desktop.core.io import png

    if request.param == "zlib":
        monkeypatch.setattr(png, "deflate_module", zlib)
    return str(request.param)


@pytest.mark.parametrize("size", [(1, 1), (7, 3), (64, 1), (1, 64), (333, 250)])
def test_pixels_survive_exactly(size: tuple[int, int], deflate: str) -> None:
    rng = np.random.default_rng(sum(size))
    pixels = rng.integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)
    assert np.array_equal(decoded(encode_png(Image.fromarray(pixels, "RGB"))), pixels)


def test_photo_like_images_are_compressed(deflate: str) -> None:
    # A smooth gradient with mild noise, like a photo: well under half of the raw size.
    y, x = np.mgrid[0:300, 0:400]
    noise = np.random.default_rng(0).integers(0, 4, size=(300, 400))
    channel = ((x + y) // 3 + noise).astype(np.uint8)
    pixels = np.stack([channel, channel // 2, 255 - channel], axis=-1)
    data = encode_png(Image.fromarray(pixels, "RGB"))
    assert np.array_equal(decoded(data), pixels)
    assert len(data) < 0.5 * pixels.nbytes


def test_large_images_span_several_data_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    from vit_desktop.core.io import png

    monkeypatch.setattr(png, "_IDAT_BYTES", 1000)
    pixels = np.random.default_rng(1).integers(0, 256, size=(50, 60, 3), dtype=np.uint8)
    data = encode_png(Image.fromarray(pixels, "RGB"))
    assert data.count(b"IDAT") > 5
    assert np.array_equal(decoded(data), pixels)


def test_other_modes_are_refused() -> None:
    with pytest.raises(ValueError, match="RGB"):
        encode_png(Image.new("RGBA", (4, 4)))
