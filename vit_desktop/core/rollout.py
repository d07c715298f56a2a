"""Attention rollout (Abnar & Zuidema 2020) and gradient-weighted rollout (Chefer et al. 2021).

torchvision's ``EncoderBlock`` calls its attention with ``need_weights=False``, so the probabilities
never leave the fused kernel. :func:`forward_with_attention` runs the same modules with the
attention written out (softmax(QKᵀ/√d)·V from ``in_proj_weight``), handing each layer's
probabilities to a callback, so rollout is computed in the classifying forward pass itself and the
product is accumulated layer by layer: memory stays O(batch·N²) rather than O(layers·heads·batch·N²).
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torchvision.models import VisionTransformer

from .types import CancelToken

AttentionCallback = Callable[[int, torch.Tensor], None]


def forward_with_attention(
    module: VisionTransformer,
    x: torch.Tensor,
    on_attention: AttentionCallback | None = None,
    *,
    cancel: CancelToken | None = None,
) -> torch.Tensor:
    """Logits of ``module`` for ``x``; with ``on_attention``, it gets ``(layer, probs)`` per block.

    ``cancel`` is checked before every block (raising :class:`Cancelled`), so a big model on the
    CPU stops within one layer rather than at the end of the batch.

    ``probs`` is (n, heads, tokens, tokens). Numerically this is the module's own forward (eval
    mode: dropout is off). Without a callback the attention runs fused (scaled_dot_product_attention)
    and the QKV projection is one plain matrix multiply: on the CPU that is faster than the
    module's own forward, whose native attention path projects QKV with a batched multiply
    (bench/bench_classify.py measures both).
    """
    # (n, c, h, w) -> (n, n_h * n_w, hidden)
    tokens = module._process_input(x)
    n = tokens.shape[0]
    # (n, 1 + n_h * n_w, hidden)
    h = torch.cat([module.class_token.expand(n, -1, -1), tokens], dim=1)
    encoder = module.encoder
    h = h + encoder.pos_embedding
    for i, block in enumerate(encoder.layers):
        if cancel is not None:
            cancel.raise_if_cancelled()
        h = h + _attention_block(block, h, i, on_attention)
        h = h + block.mlp(block.ln_2(h))
    h = encoder.ln(h)
    return module.heads(h[:, 0])


def _attention_block(
    block: torch.nn.Module, h: torch.Tensor, index: int, on_attention: AttentionCallback | None
) -> torch.Tensor:
    mha = block.self_attention
    y = block.ln_1(h)
    n, t, d = y.shape
    heads = mha.num_heads
    # (n, t, d) -> (n, t, 3d) -> 3 x (n, heads, t, d / heads)
    qkv = F.linear(y, mha.in_proj_weight, mha.in_proj_bias)
    q, k, v = qkv.view(n, t, 3, heads, d // heads).permute(2, 0, 3, 1, 4)
    if on_attention is None:
        out = F.scaled_dot_product_attention(q, k, v)
    else:
        # Scaling q (t x d/heads) rather than the scores (t x t) is the cheaper of the two.
        scores = (q * (1.0 / math.sqrt(d // heads))) @ k.transpose(-2, -1)
        # Softmax in fp32 even under autocast: rollout multiplies these a dozen times.
        probs = scores.float().softmax(dim=-1)
        on_attention(index, probs)
        # (n, heads, t, t) @ (n, heads, t, dh) -> (n, heads, t, dh)
        out = probs.to(v.dtype) @ v
    # (n, heads, t, dh) -> (n, t, d)
    return mha.out_proj(out.transpose(1, 2).reshape(n, t, d))


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
    module: VisionTransformer, x: torch.Tensor, class_indices: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Class-specific relevance (Chefer et al. 2021) for ``class_indices[i]`` of sample ``i``.

    Per layer Ā = mean over heads of max(0, ∇A ⊙ A); R ← R + Ā·R starting from I. Samples do not
    interact in a ViT, so one backward of the summed target scores gives every sample's gradients.
    Returns (logits, (n, g, g) maps scaled to max 1).
    """
    kept: list[torch.Tensor] = []

    with torch.enable_grad():
        # The input carries the graph even when the weights are frozen; only the attention
        # probabilities' gradients are computed, the weights' .grad is left untouched.
        x = x.detach().requires_grad_(True)
        logits = forward_with_attention(module, x, lambda _, probs: kept.append(probs))
        target = logits.gather(1, class_indices.view(-1, 1)).sum()
        grads = torch.autograd.grad(target, kept)
    # The identity's CLS→CLS entry carries no information; the patch row is what we show.
    return logits.detach(), cls_row_to_grid(relevance(kept, grads))
