"""Whether a photo is one of a model's classes: the score an open-set rule judges, as tensor maths.

A rule (:class:`~vit_desktop.core.types.OpenSetRule`) names a score and a threshold; :class:`KnownScore`
computes the score from what one forward pass already has (the pooled token and the logits), for a
whole batch at once, so that the engine and an ONNX export give every result the same answer:

* ``known_mass``: a head built on the base model's probabilities (names, hierarchy, blend) keeps
  the probability its classes hold before its softmax renormalises over them
  (:meth:`~vit_desktop.core.models.vit.FewShotHead.known`);
* ``nearest_photo``: the cosine similarity of the classifier's features to the nearest training photo
  (heads on features alone: a linear head has nothing else that says "unlike anything I was shown");
* ``max_probability``: the best class's probability, for models that carry no rule.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from vit_desktop.core.types import BASE_RULE, BASE_THRESHOLD, OpenSetRule, model_rule

from . import vit


class KnownScore(nn.Module):
    """(pooled (n, hidden), logits (n, classes)) -> (n,) the score of ``rule`` for ``module``.

    Shares the module's head (no copy): build it for the module that classifies.
    """

    references: torch.Tensor

    def __init__(self, module: vit.ViT, rule: OpenSetRule) -> None:
        super().__init__()
        self.kind = rule.score
        heads = module.heads
        if self.kind == "known_mass" and not (isinstance(heads, vit.FewShotHead) and heads.spec.mass):
            raise ValueError("a known_mass rule needs a head built on a label hierarchy")
        self.head = heads if self.kind == "known_mass" else None
        self.pre = vit._pre_layers(module) if self.kind == "nearest_photo" else None
        if self.kind == "nearest_photo":
            assert rule.references is not None
            self.register_buffer("references", torch.as_tensor(rule.references, dtype=torch.float32).clone())

    @property
    def needs_pooled(self) -> bool:
        """Whether the score reads the pooled token (else the logits are enough)."""
        return self.kind != "max_probability"

    def forward(self, pooled: torch.Tensor | None, logits: torch.Tensor) -> torch.Tensor:
        # fp32 whatever the autocast: small masses and similarities near the threshold.
        with torch.autocast(logits.device.type, enabled=False):
            if self.kind == "max_probability":
                return logits.float().softmax(dim=-1).amax(dim=-1)
            assert pooled is not None
            if self.kind == "known_mass":
                assert isinstance(self.head, vit.FewShotHead)
                return self.head.known(self.head.features(pooled.float()))
            assert self.pre is not None
            # (n, features) @ (features, photos) -> (n, photos) -> (n,)
            f = F.normalize(self.pre(pooled.float()), dim=-1)
            return (f @ self.references.T).amax(dim=-1)


__all__ = ["BASE_RULE", "BASE_THRESHOLD", "KnownScore", "model_rule"]
