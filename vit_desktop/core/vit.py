"""The ViT module and the one forward every caller shares: features, then head.

The project's models are torchvision ``VisionTransformer`` modules (checkpoints of every layout are
converted into it). Its own ``forward`` is not used: torchvision's ``EncoderBlock`` calls attention
with ``need_weights=False``, so the attention probabilities never leave the fused kernel, and on the
CPU its native attention path projects QKV with a batched multiply that runs at about 65 % of a
plain matrix multiply. :func:`forward_features` runs the same weights with the attention written
out, and is the single seam (timm's ``forward_features`` -> ``forward_head``) that classification,
rollout, class-specific maps and training all go through:

* without a callback, attention runs fused (``scaled_dot_product_attention``), QKV as one
  ``F.linear``: the fastest path on the CPU and a fused one on GPUs;
* with ``on_attention``, each layer's probabilities softmax(QKᵀ/√d) are computed explicitly and
  handed to the callback, so rollout happens inside the classifying pass.

Numerically both are the module's own forward in eval mode (torchvision's dropouts are 0).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import partial
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models import VisionTransformer

from .errors import CancelToken
from .types import Architecture

#: Called with (layer index, attention probabilities (n, heads, tokens, tokens)).
AttentionCallback = Callable[[int, torch.Tensor], None]


def build_module(arch: Architecture) -> VisionTransformer:
    """A torchvision ViT of this shape (random weights)."""
    return VisionTransformer(
        image_size=arch.image_size,
        patch_size=arch.patch_size,
        num_layers=arch.num_layers,
        num_heads=arch.num_heads,
        hidden_dim=arch.hidden_dim,
        mlp_dim=arch.mlp_dim,
        num_classes=arch.num_classes,
        representation_size=arch.representation_size,
        norm_layer=partial(nn.LayerNorm, eps=arch.layer_norm_eps),
    )


def architecture_of(module: VisionTransformer) -> Architecture:
    """The Architecture of an existing torchvision ViT."""
    first = module.encoder.layers[0]
    eps = float(getattr(first.ln_1, "eps", 1e-6))
    return Architecture(
        image_size=module.image_size,
        patch_size=module.patch_size,
        num_layers=len(module.encoder.layers),
        num_heads=first.self_attention.num_heads,
        hidden_dim=module.hidden_dim,
        mlp_dim=module.mlp_dim,
        num_classes=module.heads.head.out_features,
        representation_size=module.representation_size,
        layer_norm_eps=eps,
    )


def forward_features(
    module: VisionTransformer,
    x: torch.Tensor,
    on_attention: AttentionCallback | None = None,
    *,
    cancel: CancelToken | None = None,
) -> torch.Tensor:
    """(n, 3, h, w) normalised input -> (n, 1 + patches, hidden) tokens after the final norm.

    ``cancel`` is checked before every block (raising :class:`Cancelled`), so a big model on the
    CPU stops within one layer rather than at the end of the batch.
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
        h = h + _attention(block, h, i, on_attention)
        h = h + block.mlp(block.ln_2(h))
    out: torch.Tensor = encoder.ln(h)
    return out


def pre_logits(module: VisionTransformer, tokens: torch.Tensor) -> torch.Tensor:
    """(n, tokens, hidden) -> (n, features): the class token, through ``pre_logits`` if the model has one."""
    x: torch.Tensor = tokens[:, 0]
    for name, layer in module.heads.named_children():
        if name != "head":
            x = layer(x)
    return x


def forward_head(module: VisionTransformer, tokens: torch.Tensor) -> torch.Tensor:
    """(n, tokens, hidden) -> (n, classes) logits."""
    logits: torch.Tensor = module.heads.head(pre_logits(module, tokens))
    return logits


def forward(
    module: VisionTransformer,
    x: torch.Tensor,
    on_attention: AttentionCallback | None = None,
    *,
    cancel: CancelToken | None = None,
) -> torch.Tensor:
    """Logits of ``module`` for ``x``: :func:`forward_features` then :func:`forward_head`."""
    return forward_head(module, forward_features(module, x, on_attention, cancel=cancel))


def features(module: VisionTransformer, x: torch.Tensor) -> torch.Tensor:
    """(n, features) right before the classifier (``heads.head``): what a new head is trained on."""
    return pre_logits(module, forward_features(module, x))


def _attention(
    block: Any, h: torch.Tensor, index: int, on_attention: AttentionCallback | None
) -> torch.Tensor:
    """One block's attention; ``block`` is torchvision's (unannotated) ``EncoderBlock``."""
    mha: nn.MultiheadAttention = block.self_attention
    y: torch.Tensor = block.ln_1(h)
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
    projected: torch.Tensor = mha.out_proj(out.transpose(1, 2).reshape(n, t, d))
    return projected


__all__ = [
    "AttentionCallback",
    "architecture_of",
    "build_module",
    "features",
    "forward",
    "forward_features",
    "forward_head",
    "pre_logits",
]
