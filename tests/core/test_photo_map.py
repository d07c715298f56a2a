"""The map's layout: alike photos near each other, the same map every time, fast for thousands."""

from __future__ import annotations

import time

import numpy as np
import pytest

from vit_desktop.core.library.photo_map import fit_square, layout, neighbours_kept, pca_2d


def two_kinds(n: int = 40, dims: int = 192, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((2, dims)) * 3
    kind = np.arange(n) % 2
    return (centres[kind] + rng.standard_normal((n, dims))).astype(np.float32), kind


def test_photos_of_one_kind_lie_together_apart_from_the_other_kind() -> None:
    features, kind = two_kinds()
    xy = layout(features)
    assert xy.shape == (40, 2) and xy.dtype == np.float32
    # The kinds are the main difference, so the first axis parts them.
    a, b = xy[kind == 0, 0], xy[kind == 1, 0]
    assert a.max() < b.min() or b.max() < a.min()
    assert neighbours_kept(features, xy, 5) > 0.3


def test_the_same_photos_give_the_same_map_and_it_fits_the_square() -> None:
    features, _ = two_kinds(seed=3)
    first = layout(features)
    np.testing.assert_array_equal(first, layout(features.copy()))
    # A feature vector scaled is the same photo to the map (cosine).
    np.testing.assert_allclose(pca_2d(features * 7), pca_2d(features), atol=1e-5)
    inside = np.all(np.abs(first) <= 1.0 + 1e-6, axis=1)
    assert inside.mean() >= 0.95


def test_small_and_degenerate_inputs() -> None:
    assert layout(np.zeros((0, 8), np.float32)).shape == (0, 2)
    one = layout(np.ones((1, 8), np.float32))
    assert one.shape == (1, 2) and np.all(np.isfinite(one))
    same = layout(np.ones((5, 8), np.float32))
    assert np.all(np.isfinite(same))
    assert fit_square(np.array([[0.0, 0.0], [2.0, 1.0]])).shape == (2, 2)
    with pytest.raises(ValueError):
        layout(np.zeros(8, np.float32))


def test_five_thousand_photos_are_laid_out_in_well_under_a_second() -> None:
    features = np.random.default_rng(0).standard_normal((5000, 192)).astype(np.float32)
    t = time.perf_counter()
    xy = layout(features)
    assert xy.shape == (5000, 2)
    assert time.perf_counter() - t < 2.0  # 0.05 s measured (bench/bench_map.py); slack for a busy machine
