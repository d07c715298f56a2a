"""A model's probabilities -> what a result says: its top-k labels and whether it is uncertain.

One function for a photo classified now and one read back from the library, so that the two give
the same answer to the last digit: top-k by a stable sort (ties go to the lower class index), the
named categories' masses where the run has categories.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from vit_desktop.core.types import Prediction

from .options import ClassifyOptions


def predictions(
    probabilities: np.ndarray, labels: Sequence[str], options: ClassifyOptions
) -> list[tuple[Prediction, ...]]:
    """(n, classes) float32 probabilities -> per photo its predictions, best first."""
    if options.categories is not None:
        return [options.categories.predictions(row, options.top_k) for row in probabilities]
    k = max(1, min(options.top_k, probabilities.shape[1]))
    # A stable sort of the negated scores: equal scores keep class order, on every machine.
    order = np.argsort(-probabilities, axis=1, kind="stable")[:, :k]
    return [
        tuple(Prediction(labels[i], int(i), float(row[i])) for i in idx)
        for row, idx in zip(probabilities, order)
    ]


def known_scores(probabilities: np.ndarray, options: ClassifyOptions, in_pass: np.ndarray | None = None) -> np.ndarray:
    """(n,) the score the run's open-set rule judges (:func:`~vit_desktop.core.inference.open_set.run_rule`):
    ``in_pass`` where the model's own score reads the pooled token (the pass, or the library, has
    it); else from the probabilities: with categories, the best one's score when a threshold is
    given and the mass over all of them otherwise; without, the best class's probability."""
    if in_pass is not None:
        return in_pass
    if options.categories is not None:
        out: np.ndarray = (options.categories.scores(probabilities).max(axis=1) if options.threshold is not None
                           else options.categories.known_scores(probabilities))
        return out
    best: np.ndarray = probabilities.max(axis=1)
    return best


__all__ = ["known_scores", "predictions"]
