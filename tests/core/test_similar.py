"""Similar photos: the nearest by the cosine of their features, exact, best first."""

from __future__ import annotations

import numpy as np
import pytest

from vit_desktop.core.library.prints import PhotoPrints, unit_rows
from vit_desktop.core.library.similar import nearest, similar_to


def test_nearest_is_the_exact_top_k_best_first() -> None:
    rng = np.random.default_rng(0)
    features = unit_rows(rng.standard_normal((500, 24)))
    query = rng.standard_normal(24).astype(np.float32)
    got = nearest(query, features, top_k=7)
    scores = features @ (query / np.linalg.norm(query))
    want = np.argsort(-scores)[:7]
    assert [r for r, _ in got] == want.tolist()
    np.testing.assert_allclose([s for _, s in got], scores[want], rtol=1e-6)


def test_the_photo_itself_and_photos_without_features_are_left_out() -> None:
    features = np.array([[1, 0], [0.9, 0.1], [0, 0], [0, 1]], np.float32)
    prints = PhotoPrints.of(["a", "b", "c", "d"], features=features)
    got = similar_to(prints, "a", top_k=10)
    assert [n.path for n in got] == ["b", "d"]  # not a itself, not c (no features)
    assert got[0].path == "b" and got[0].score == pytest.approx(0.9 / np.hypot(0.9, 0.1))
    assert similar_to(prints, "c") == []  # a photo without features is like nothing
    with pytest.raises(KeyError):
        similar_to(prints, "elsewhere")
    with pytest.raises(ValueError):
        nearest(features[0], unit_rows(features), top_k=0)


def test_equal_scores_keep_the_photos_order() -> None:
    features = np.array([[1, 0], [1, 0], [1, 0], [1, 0]], np.float32)
    prints = PhotoPrints.of(["q", "x", "y", "z"], features=features)
    assert [n.path for n in similar_to(prints, "q", top_k=2)] == ["x", "y"]
