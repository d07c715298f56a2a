"""Attention rollout (Abnar & Zuidema 2020) and class maps, gradient-weighted rollout (Chefer et al. 2021).

The attention probabilities come from :func:`vit_desktop.core.models.vit.forward` with a callback, so
rollout is computed in the classifying forward pass itself and the product is accumulated layer by
layer: memory stays O(batch·N²) rather than O(layers·heads·batch·N²).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

from vit_desktop.core.errors import CancelToken
from vit_desktop.core.labels.categories import Categories
from vit_desktop.core.models.vit import Readout, ViT, forward_features, pooled, readout


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
    """Folds one layer at a time into the rollout product R ← Â·R, Â = rownorm(½A + ½I).

    ``readout`` says which rows and columns of the product are the map (the model's
    :func:`~vit_desktop.core.models.vit.readout`): register tokens take part in the product, not in the grid.
    """

    def __init__(self, head_fusion: str = "mean", discard_ratio: float = 0.0, readout: Readout | None = None) -> None:
        self.head_fusion = head_fusion
        self.discard_ratio = discard_ratio
        self.readout = readout or Readout(prefix=1)
        self.product: torch.Tensor | None = None

    def __call__(self, index: int, probs: torch.Tensor) -> None:
        fused = discard_lowest(fuse_heads(probs.float(), self.head_fusion), self.discard_ratio)
        # Â = rownorm(½A + ½I), in place: fusing the heads made a fresh tensor.
        a = fused.mul_(0.5)
        a.diagonal(dim1=-2, dim2=-1).add_(0.5)
        a.div_(a.sum(dim=-1, keepdim=True))
        self.product = a if self.product is None else layer_product(a, self.product)

    def grid(self) -> torch.Tensor:
        """(n, g, g): the head's row(s) over the patch tokens, each map scaled to max 1."""
        if self.product is None:
            raise RuntimeError("no attention layers were seen")
        return self.readout.grid(self.product)


def cls_row_to_grid(product: torch.Tensor) -> torch.Tensor:
    """(n, t, t) -> (n, g, g) from the CLS row over the patches (one prefix token), max 1."""
    return Readout(prefix=1).grid(product)


#: A refined class map's second pass runs with this fraction of the patches, those the first
#: pass ranked highest, removed.
REFINE_FRACTION = 0.1

#: (detached logits (n, classes)) -> (n, classes) 0/1: which classes each sample's map explains.
TargetPicker = Callable[[torch.Tensor], torch.Tensor]


def top1_target(logits: torch.Tensor) -> torch.Tensor:
    """Each sample's own top-1 class, as the 0/1 target rows :func:`class_relevance` takes."""
    return F.one_hot(logits.argmax(dim=1), logits.shape[1]).to(logits.dtype)


def class_targets(class_indices: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(n,) class indices -> (n, classes) 0/1 target rows."""
    return F.one_hot(class_indices.long(), num_classes).float()


class TopPicker:
    """Targets each sample's best class, or with ``categories`` its best category's members, from
    the logits of the pass itself; appends to ``picked`` what each map explains."""

    def __init__(self, categories: Categories | None, picked: list[int | None]) -> None:
        self.categories = categories
        self.picked = picked

    def __call__(self, logits: torch.Tensor) -> torch.Tensor:
        if self.categories is None:
            best = logits.argmax(dim=1)
            self.picked.extend(best.tolist())
            return class_targets(best, logits.shape[1]).to(logits.device)
        # (classes, categories) 0/1: a category's probability is its members' summed mass
        m = torch.from_numpy(self.categories.matrix()).to(logits.device)
        best = (logits.float().softmax(dim=1) @ m).argmax(dim=1)
        self.picked.extend(best.tolist())
        return m.T[best]


def class_relevance(
    module: ViT,
    x: torch.Tensor,
    target: torch.Tensor | TargetPicker = top1_target,
    *,
    refine: bool = False,
    cancel: CancelToken | None = None,
    on_pooled: Callable[[torch.Tensor], None] | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Class-specific relevance maps: gradient-weighted rollout (Chefer et al. 2021).

    ``target`` gives, per sample, the classes the map explains as a (n, classes) 0/1 matrix (one
    class; or a named category's members: "dog" is 118 breeds), or picks them from the logits of
    this same forward pass (by default each sample's top-1), so one forward and one backward per
    batch make every sample's map. The score explained is the target's log-probability,
    log Σ_{c∈target} softmax(z)_c: what sets it apart from the other classes, which the
    perturbation test finds more faithful than the raw logit (bench/bench_explain.py).

    Per layer Ā = mean over heads of max(0, ∇A ⊙ A); R ← R + Ā·R from I; the map is R's CLS row
    over the patches. With ``refine`` a second pass runs with the first map's top
    :data:`REFINE_FRACTION` of patches removed (set to the mean colour) and ranks the rest: what
    the answer still rests on once the most obvious evidence is gone (a second face, the other
    wheel). Those patches keep their first-pass values; the rest rank below them. Twice the cost.

    ``on_pooled`` is handed the first pass's pooled token (n, hidden), detached: what the head
    read, for scores of the same pass (whether the photo is one of the model's classes).

    Returns (logits, (n, classes) targets, (n, g, g) maps scaled to max 1).
    """
    logits, targets, grid = _relevance_pass(module, x, target, cancel, on_pooled)
    if not refine:
        return logits, targets, grid
    n, g, _ = grid.shape
    first = grid.flatten(1)
    k = max(1, round(REFINE_FRACTION * g * g))
    top = first.topk(k, dim=1).indices
    keep = torch.ones_like(first).scatter_(1, top, 0.0)
    patch = x.shape[-1] // g
    # (n, g²) -> (n, 1, h, w): 0 over each removed patch's pixels (the mean after normalisation)
    pixels = keep.view(n, 1, g, g).repeat_interleave(patch, dim=2).repeat_interleave(patch, dim=3)
    _, _, again = _relevance_pass(module, x * pixels.to(x.dtype), targets, cancel)
    # Everything ranked in the second pass stays below every patch the first pass chose.
    ceiling = first.gather(1, top).amin(dim=1, keepdim=True) * 0.999
    rest = again.flatten(1) * keep
    rest = rest / rest.amax(dim=1, keepdim=True).clamp_min(1e-12) * ceiling
    combined = torch.where(keep.bool(), rest, first)
    return logits, targets, combined.view(n, g, g) / combined.amax(dim=1).clamp_min(1e-12)[:, None, None]


def _relevance_pass(
    module: ViT, x: torch.Tensor, target: torch.Tensor | TargetPicker, cancel: CancelToken | None,
    on_pooled: Callable[[torch.Tensor], None] | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    kept: list[torch.Tensor] = []
    with torch.enable_grad():
        # The input carries the graph even when the weights are frozen; only the attention
        # probabilities' gradients are computed, the weights' .grad is left untouched.
        x = x.detach().requires_grad_(True)
        # forward(), with the pooled token in hand.
        pooled_token = pooled(module, forward_features(module, x, lambda _, probs: kept.append(probs), cancel=cancel))
        if on_pooled is not None:
            on_pooled(pooled_token.detach())
        logits: torch.Tensor = module.heads(pooled_token)
        targets = (target(logits.detach()) if callable(target) else target).to(logits.device).float()
        if targets.shape != logits.shape:
            raise ValueError(f"targets of shape {tuple(targets.shape)} for logits of {tuple(logits.shape)}")
        logp = logits.float().log_softmax(dim=1)
        # log(0) for the classes outside the target: they drop out of the log-sum-exp.
        score = torch.logsumexp(logp + torch.log(targets), dim=1).sum()
        # Samples do not interact in a ViT: one backward of the summed scores gives each its own.
        grads = torch.autograd.grad(score, kept)
    # The identity's CLS→CLS entry carries no information; the patch row is what we show.
    return logits.detach(), targets, readout(module).grid(relevance(kept, grads))
