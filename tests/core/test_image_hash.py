"""Perceptual hashes: the standard pHash, decoded small, and what edits do to them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.support import edited_copies, scene
from vit_desktop.core.errors import ImageError
from vit_desktop.core.io.image_hash import CODES, HASH_BYTES, hamming, image_hashes, phash, photo_hashes, signs
from vit_desktop.core.io.images import load_image


def test_phash_is_the_standard_one() -> None:
    # The values imagehash.phash gives for these pictures (imagehash 4.3): pinned, so that the hash
    # stored in the library never changes without its algorithm's name changing too.
    assert phash(scene(seed=0)).hex() == "90f87a9f39d8c470"
    assert phash(scene(seed=1)).hex() == "e1e91e1e6df06990"


def test_phash_equals_imagehash_where_it_is_installed() -> None:
    imagehash = pytest.importorskip("imagehash", reason="imagehash is not installed (the pinned values stand in)")
    for seed in range(5):
        image = scene((300, 200), seed=seed)
        assert phash(image).hex() == str(imagehash.phash(image))


def test_a_big_jpeg_decoded_small_hashes_as_the_full_photo(tmp_path: Path) -> None:
    path = tmp_path / "big.jpg"
    scene((2400, 1800), seed=3).save(path, quality=92)
    codes, size = photo_hashes(path)
    assert size == (2400, 1800)
    assert codes.shape == (CODES, HASH_BYTES) and codes.dtype == np.uint8
    full = image_hashes(load_image(path))
    assert hamming(codes, full).max() <= 2


def test_copies_stay_near_and_other_shots_far(tmp_path: Path) -> None:
    original = scene((640, 480), seed=4)
    original.save(tmp_path / "original.jpg", quality=95)
    base = photo_hashes(tmp_path / "original.jpg")[0]
    for kind, path in edited_copies(original, tmp_path / "copies", seed=4).items():
        codes = photo_hashes(path)[0]
        frame = int(hamming(base[0], codes[0]))
        window = int(min(hamming(codes[0], base[1:]).min(), hamming(base[0], codes[1:]).min()))
        if kind == "crop":
            assert window <= 6, (kind, frame, window)
        else:
            assert frame <= 4, (kind, frame, window)
    # Another scene, and a second shot of this one a fifth of the frame aside, are far from it.
    other = scene((640, 480), seed=5)
    other.save(tmp_path / "other.jpg")
    shot = original.crop((128, 0, 640, 432))
    shot.save(tmp_path / "shot.jpg")
    first = original.crop((0, 0, 512, 432))
    first.save(tmp_path / "first.jpg")
    for a, b in (("original", "other"), ("first", "shot")):
        ca, cb = photo_hashes(tmp_path / f"{a}.jpg")[0], photo_hashes(tmp_path / f"{b}.jpg")[0]
        assert hamming(ca[0], cb[0]) >= 14
        assert min(hamming(ca[0], cb[1:]).min(), hamming(cb[0], ca[1:]).min()) >= 12


def test_signs_give_the_hamming_distance_by_a_product() -> None:
    rng = np.random.default_rng(0)
    codes = rng.integers(0, 256, (20, HASH_BYTES), dtype=np.uint8)
    s = signs(codes)
    by_product = (64 - s @ s.T) / 2
    np.testing.assert_array_equal(by_product, hamming(codes[:, None, :], codes[None, :, :]))


def test_an_unreadable_file_is_an_image_error(tmp_path: Path) -> None:
    (tmp_path / "not.jpg").write_bytes(b"not a photo")
    with pytest.raises(ImageError):
        photo_hashes(tmp_path / "not.jpg")
