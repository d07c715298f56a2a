"""Photos that look like this one: the nearest by the cosine of the backbone's pooled features.

Exact search: one matrix-vector product over every stored vector. Measured (bench/bench_similar.py),
it answers over 100,000 vectors of DeiT-Tiny (192 numbers) in about 10 milliseconds. The
nearest-neighbour libraries tried (faiss-cpu, hnswlib, usearch) answer in under a millisecond once
their index exists, but building it takes 20 seconds to two minutes and the answer then misses
some of the true nearest, so no index is kept: the answer is exact, with nothing to keep up to date.

"Similar" is not "duplicate": two shots of one scene, or two guitars, are similar; whether a photo
is a copy of another is :mod:`.duplicates`' question, with its own rule.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from .prints import PhotoPrints, unit_rows


@dataclass(frozen=True)
class Neighbour:
    """A photo near the one asked about: its path and the cosine of their features (1: the same)."""

    path: str
    score: float


def nearest(query: np.ndarray, features: np.ndarray, *, top_k: int, exclude: Iterable[int] = (),
            usable: np.ndarray | None = None) -> list[tuple[int, float]]:
    """(row, cosine) of the ``top_k`` rows of ``features`` (unit rows, (n, d)) nearest ``query``
    (d,), best first; rows in ``exclude``, and rows that ``usable`` (n,) bool marks False (photos
    without features), are never answered."""
    if top_k < 1:
        raise ValueError("top-k must be at least 1")
    if features.shape[0] == 0:
        return []
    q = unit_rows(np.asarray(query, dtype=np.float32).reshape(1, -1))[0]
    scores = features @ q  # (n, d) @ (d,) -> (n,)
    # Left-out rows score below any cosine, so that one partition finds the best of the rest.
    scores[list(exclude)] = -np.inf
    if usable is not None:
        scores[~usable] = -np.inf
    k = min(top_k, int(np.count_nonzero(scores > -np.inf)))
    if k == 0:
        return []
    picked = np.argpartition(-scores, k - 1)[:k] if k < scores.size else np.arange(scores.size)
    # Best first; equal scores in the order of the photos, so that answers are stable.
    order = sorted((int(r) for r in picked if scores[r] > -np.inf), key=lambda r: (-float(scores[r]), r))
    return [(r, float(scores[r])) for r in order[:k]]


def similar_to(prints: PhotoPrints, path: str, *, top_k: int = 10) -> list[Neighbour]:
    """The ``top_k`` photos of ``prints`` most like the photo at ``path`` (one of them), best first,
    itself left out. Empty when it has no features."""
    if prints.features is None:
        raise ValueError("similar photos need the photos' features")
    row = prints.index(path)
    query = prints.features[row]
    if not np.any(query):
        return []
    found = nearest(query, prints.features, top_k=top_k, exclude=(row,), usable=prints.has_features)
    return [Neighbour(prints.paths[r], s) for r, s in found]


__all__ = ["Neighbour", "nearest", "similar_to"]
