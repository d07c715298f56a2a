"""What one classification run asks for, besides the photos: one frozen object from the window or the
command line to the engine, unchanged on the way."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from vit_desktop.core.types import ExplainOptions

if TYPE_CHECKING:  # annotations only: the window builds options before numpy is imported
    from vit_desktop.core.labels.categories import Categories


@dataclass(frozen=True)
class ClassifyOptions:
    """How to classify: how many labels, which map, what counts as uncertain, whose categories.

    Built once per request (a drop in the window, one ``classify`` command) and handed through the
    compute thread to :meth:`vit_desktop.core.inference.engine.Engine.classify_batches` as it is.
    """

    #: Labels kept per photo, best first (fewer when the model or the categories have fewer).
    top_k: int = 5
    #: Photos per forward pass; a batch that does not fit in memory is split by the engine.
    batch_size: int = 16
    #: The map computed with each photo; None computes none.
    explain: ExplainOptions | None = None
    #: Results whose best score is below this are marked uncertain; None: the model's own open-set
    #: rule decides (see :mod:`vit_desktop.core.inference.open_set`).
    threshold: float | None = None
    #: Label with these named categories (probability mass over their classes) instead of the
    #: model's own classes.
    categories: Categories | None = None
    #: Keep every result's probabilities over all the model's classes (to re-label without
    #: classifying again, as the window's names box does).
    keep_probabilities: bool = False
    #: Keep each decoded photo, where it is small (to draw its overlay without decoding it again).
    keep_images: bool = False
    #: Keep the pooled features the head read (to store them: any head on the same backbone can
    #: answer from them later, and similar photos are found by them).
    keep_features: bool = False

    def __post_init__(self) -> None:
        if self.top_k < 1:
            raise ValueError("top-k must be at least 1")
        if self.batch_size < 1:
            raise ValueError("batch size must be at least 1")
        if self.threshold is not None and not math.isfinite(self.threshold):  # NaN would mark nothing uncertain
            raise ValueError("the threshold must be a number")


__all__ = ["ClassifyOptions"]
