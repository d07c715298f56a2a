"""Attention rollout (Abnar & Zuidema 2020) and gradient-weighted rollout (Chefer et al. 2021).

The attention probabilities come from :func:`vit_desktop.core.vit.forward` with a callback, so
rollout is computed in the classifying forward pass itself and the product is accumulated layer by
layer: memory stays O(batch·N²) rather than O(layers·heads·batch·N²).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torchvision.models import VisionTransformer

from .vit import forward


def fuse_heads(probs: torch.Tensor, head_fusion: str) -> torch.Tensor:
    """(n, heads, t, t) -> (n, t, t)."""
    if head_fusion == "mean":
        return probs.mean(dim=1)
    if head_fusion == "max":
        return probs.amax(dim=1)
    if head_fusion == "min":
        return probs.amin(dim=1)
    raise ValueError(f"unknown head fusion {head_fusion!r}")


def discard_lowest(fused: torch.Tensor, ratio: float) -> torch.Tensor:
    """Zero the lowest ``ratio`` of each sample's attention entries, never the CLS column."""
    if ratio <= 0.0:
        return fused
    n, t, _ = fused.shape
    flat = fused.reshape(n, t * t)
    k = int(flat.shape[1] * ratio)
    if k == 0:
        return fused
    # Rank with the CLS column pushed to the top so it is never chosen.
    ranked = fused.clone()
    ranked[:, :, 0] = float("inf")
    idx = ranked.reshape(n, t * t).topk(k, dim=1, largest=False).indices
    return flat.scatter(1, idx, 0.0).reshape(n, t, t)


def layer_product(a: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    """(n, t, t) a·r in fp32 even under autocast: half precision over a dozen or more layers drifts."""
    with torch.autocast(a.device.type, enabled=False):
        return torch.bmm(a.float(), r.float())


def relevance(kept: Sequence[torch.Tensor], grads: Sequence[torch.Tensor]) -> torch.Tensor:
    """Chefer et al.'s R ← R + Ā·R from I, Ā = mean over heads of max(0, ∇A ⊙ A): (n, t, t)."""
    n, _, t, _ = kept[0].shape
    r = torch.eye(t, device=kept[0].device).expand(n, t, t).clone()
    for probs, grad in zip(kept, grads):
        cam = (grad.float() * probs.detach().float()).clamp(min=0).mean(dim=1)
        r = r + layer_product(cam, r)
    return r


class RolloutAccumulator:
    """Folds one layer at a time into the rollout product R ← Â·R, Â = rownorm(½A + ½I)."""

    def __init__(self, head_fusion: str = "mean", discard_ratio: float = 0.0) -> None:
        self.head_fusion = head_fusion
        self.discard_ratio = discard_ratio
        self.product: torch.Tensor | None = None

    def __call__(self, index: int, probs: torch.Tensor) -> None:
        fused = discard_lowest(fuse_heads(probs.float(), self.head_fusion), self.discard_ratio)
        # Â = rownorm(½A + ½I), in place: fusing the heads made a fresh tensor.
        a = fused.mul_(0.5)
        a.diagonal(dim1=-2, dim2=-1).add_(0.5)
        a.div_(a.sum(dim=-1, keepdim=True))
        self.product = a if self.product is None else layer_product(a, self.product)

    def grid(self) -> torch.Tensor:
        """(n, g, g): the CLS row over the patch tokens, each map scaled to max 1."""
        if self.product is None:
            raise RuntimeError("no attention layers were seen")
        return cls_row_to_grid(self.product)


def cls_row_to_grid(product: torch.Tensor) -> torch.Tensor:
    """(n, t, t) -> (n, g, g) from the CLS row over the patches, scaled so each max is 1."""
    row = product[:, 0, 1:]
    g = math.isqrt(row.shape[1])
    grid = row.reshape(-1, g, g)
    peak = grid.flatten(1).amax(dim=1).clamp_min(1e-12)
    return grid / peak[:, None, None]


def gradient_rollout(
    module: VisionTransformer, x: torch.Tensor, class_indices: torch.Tensor | None = None,
    *, groups: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Class-specific relevance (Chefer et al. 2021) for ``class_indices[i]`` of sample ``i``.

    With ``groups`` ((n, classes) 0/1) instead, the target is a group of classes (a named
    category: "dog" is 118 breeds): its log-sum-exp of logits, whose gradient weighs each member
    by its share of the group's probability.

    Per layer Ā = mean over heads of max(0, ∇A ⊙ A); R ← R + Ā·R starting from I. Samples do not
    interact in a ViT, so one backward of the summed target scores gives every sample's gradients.
    Returns (logits, (n, g, g) maps scaled to max 1).
    """
    if (class_indices is None) == (groups is None):
        raise ValueError("give class_indices or groups")
    kept: list[torch.Tensor] = []

    with torch.enable_grad():
        # The input carries the graph even when the weights are frozen; only the attention
        # probabilities' gradients are computed, the weights' .grad is left untouched.
        x = x.detach().requires_grad_(True)
        logits = forward(module, x, lambda _, probs: kept.append(probs))
        if groups is not None:
            # log(0) for non-members: they drop out of the log-sum-exp.
            target = torch.logsumexp(logits.float() + torch.log(groups.float()), dim=1).sum()
        else:
            assert class_indices is not None
            target = logits.gather(1, class_indices.view(-1, 1)).sum()
        grads = torch.autograd.grad(target, kept)
    # The identity's CLS→CLS entry carries no information; the patch row is what we show.
    return logits.detach(), cls_row_to_grid(relevance(kept, grads))
