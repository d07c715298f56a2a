"""Which open-set rule a classification run applies, and how a rule is calibrated.

Every result says whether it is one of the model's classes (``ClassifyResult.uncertain``), by a rule
(:class:`~vit_desktop.core.types.OpenSetRule`): a score and a threshold. A run applies, first match:

1. ``ClassifyOptions.threshold`` given (``--threshold S``): the best score under S, as asked;
2. named categories (``--classes``, the names box): the probability summed over all of them under
   :data:`NAMES_THRESHOLD` ("none of these");
3. the model's own rule, stored in its file when it was fine-tuned, else the program's default
   for models without one (:data:`vit_desktop.core.models.open_set.BASE_RULE`).

Fine-tuning calibrates a model's rule on the user's own photos: the threshold that keeps
:data:`KEEP` of the held-out photos of their classes (:func:`calibrate`).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from vit_desktop.core.types import ModelCard, OpenSetRule, model_rule

from .options import ClassifyOptions

if TYPE_CHECKING:
    import numpy as np

#: Named categories: a photo whose probability summed over all of them is under this is none of
#: them. On fewshot-dev with three of its five categories named and the other two (and unrelated
#: shared photos) left out, it keeps 96.8 % of the named ones right and marks 98.6 % of the others
#: (0.1: 98.1 % and 96.0 %; 0.3: 95.0 % and 99.7 %), AUROC 0.996 (bench/bench_open_set.py).
NAMES_THRESHOLD = 0.2
NAMES_RULE = OpenSetRule("known_mass", NAMES_THRESHOLD,
                         calibrated_on="the program's default for named categories, measured on fewshot-dev")
#: A fine-tuned model's threshold keeps this share of its classes' held-out photos: on the same task
#: the default head then keeps 96.7 % of known photos right and marks 97.8 % of the others (0.95:
#: 94.7 % and 99.4 %; 0.99: 97.6 % and 90.8 %).
KEEP = 0.97


def run_rule(card: ModelCard, options: ClassifyOptions) -> OpenSetRule:
    """The rule a run with ``options`` applies to ``card``'s model (see the module's order)."""
    if options.threshold is not None:
        return OpenSetRule("max_probability", options.threshold, calibrated_on="given by hand")
    if options.categories is not None:
        return NAMES_RULE
    return model_rule(card)


def calibrate(scores: np.ndarray, keep: float = KEEP) -> float:
    """The threshold under which no more than ``1 - keep`` of these held-out known photos' scores
    lie: halfway between the last score let go and the first kept (the lowest score when none may go)."""
    import numpy as np

    s = np.sort(np.asarray(scores, dtype=np.float64))
    if not len(s):
        raise ValueError("no scores to calibrate on")
    let_go = int(math.floor((1.0 - keep) * len(s) + 1e-9))
    if let_go == 0:
        return float(s[0])
    return float((s[let_go - 1] + s[let_go]) / 2)


__all__ = ["KEEP", "NAMES_RULE", "NAMES_THRESHOLD", "calibrate", "run_rule"]
