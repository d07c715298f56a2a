"""The few-shot head: the user's classes read from what the base model's head already knows.

Every few-shot head is a function of the backbone's pooled features (:func:`vit.pooled`), so a
head fitted later answers from stored features without the photo; :mod:`vit` builds modules with
one, and training fits it (:mod:`vit_desktop.core.training.fewshot`).
"""

from __future__ import annotations

import torch
from torch import nn

from vit_desktop.core.types import HeadSpec


class FewShotHead(nn.Module):
    """The user's classes from what a base head knows: see :class:`~vit_desktop.core.types.HeadSpec`.

    ``z_k = s·log(P·M_k + eps) + W_p·(log P - μ_p)/σ_p + W_f·(f - μ_f)/σ_f + b_k``, with ``f`` the
    features after ``pre`` (torchvision's pre-logits layer, when the model has one) and
    ``P = softmax(base(f))``. Plain differentiable tensor maths: rollout, class maps and training
    the backbone all go through it like through a linear head.
    """

    # Buffers (registered in __init__ when their term is used).
    masks: torch.Tensor
    logprob_mean: torch.Tensor
    logprob_std: torch.Tensor
    feature_mean: torch.Tensor
    feature_std: torch.Tensor

    def __init__(self, spec: HeadSpec, features: int, num_classes: int, *, pre: nn.Module | None = None,
                 base: nn.Module | None = None) -> None:
        super().__init__()
        self.spec = spec
        self.num_classes = num_classes
        self.pre = pre if pre is not None else nn.Identity()
        if base is None:
            base = (FewShotHead(spec.base, features, spec.base_classes) if spec.base is not None
                    else nn.Linear(features, spec.base_classes))
        self.base = base
        cb = spec.base_classes
        self.bias = nn.Parameter(torch.zeros(num_classes))
        if spec.mass:
            self.register_buffer("masks", torch.zeros(cb, num_classes))  # 0/1: base class under class k
            self.mass_scale = nn.Parameter(torch.ones(()))
        if spec.logprob:
            self.logprob_weight = nn.Parameter(torch.zeros(num_classes, cb))
            self.register_buffer("logprob_mean", torch.zeros(cb))
            self.register_buffer("logprob_std", torch.ones(cb))
        if spec.features:
            self.feature_weight = nn.Parameter(torch.zeros(num_classes, features))
            self.register_buffer("feature_mean", torch.zeros(features))
            self.register_buffer("feature_std", torch.ones(features))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(n, hidden) class token -> (n, features) before any classifier."""
        out: torch.Tensor = self.pre(x)
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classify(self.features(x))

    def classify(self, f: torch.Tensor) -> torch.Tensor:
        """(n, features) -> (n, classes) logits."""
        # fp32 whatever the autocast: log-masses of small probabilities do not survive half precision.
        with torch.autocast(f.device.type, enabled=False):
            f = f.float()
            z = self.bias.expand(f.shape[0], -1)
            if self.spec.mass or self.spec.logprob:
                # (n, features) -> (n, base classes)
                logp = torch.log_softmax(self.base(f).float(), dim=-1)
                if self.spec.mass:
                    # (n, base) @ (base, K) -> (n, K): probability mass each class owns
                    z = z + self.mass_scale * torch.log(logp.exp() @ self.masks + self.spec.eps)
                if self.spec.logprob:
                    z = z + ((logp - self.logprob_mean) / self.logprob_std) @ self.logprob_weight.T
            if self.spec.features:
                z = z + ((f - self.feature_mean) / self.feature_std) @ self.feature_weight.T
        return z


    def known(self, f: torch.Tensor) -> torch.Tensor:
        """(n, features) -> (n,) the base head's probability summed over every base class some
        class of this head covers: how much of the photo is any of the user's classes.

        :meth:`classify`'s softmax over the user's classes throws this away: a photo of none of
        them still sums to one over them. Needs the mass term (the head is built on a hierarchy).
        """
        if not self.spec.mass:
            raise ValueError("only a head with the mass term knows how much of a photo its classes hold")
        with torch.autocast(f.device.type, enabled=False):
            p = torch.softmax(self.base(f.float()).float(), dim=-1)
            # (base, K) -> (base,): 1 where any class covers the base class
            covered = self.masks.sum(dim=1).clamp(max=1.0)
            out: torch.Tensor = p @ covered
        return out


class ClassifyFeatures(nn.Module):
    """A :class:`FewShotHead`'s ``classify`` as a module: pre-logits features -> logits."""

    def __init__(self, head: FewShotHead) -> None:
        super().__init__()
        self.head = head

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        return self.head.classify(f)


__all__ = ["ClassifyFeatures", "FewShotHead"]
