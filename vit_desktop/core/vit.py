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
from collections import OrderedDict
from collections.abc import Callable
from functools import partial
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models import VisionTransformer

from .errors import CancelToken
from .types import Architecture, HeadSpec

#: Called with (layer index, attention probabilities (n, heads, tokens, tokens)).
AttentionCallback = Callable[[int, torch.Tensor], None]


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


def build_module(arch: Architecture, head: HeadSpec | None = None) -> VisionTransformer:
    """A torchvision ViT of this shape (random weights), with ``head`` instead of its linear one."""
    module = VisionTransformer(
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
    if head is not None:
        set_head(module, FewShotHead(head, feature_size(module), arch.num_classes))
    return module


def feature_size(module: VisionTransformer) -> int:
    """Width of the features a classifier sees (after torchvision's pre-logits layer, if any)."""
    return int(module.representation_size or module.hidden_dim)


def _pre_layers(module: VisionTransformer) -> nn.Module:
    """torchvision's layers between the class token and the classifier (pre_logits, act), if any."""
    heads = module.heads
    if isinstance(heads, FewShotHead):
        return heads.pre
    layers = [layer for name, layer in heads.named_children() if name != "head"]
    return nn.Sequential(*layers) if layers else nn.Identity()


def set_head(module: VisionTransformer, head: nn.Module) -> VisionTransformer:
    """Give ``module`` a new classifier: a ``FewShotHead`` (which keeps the pre-logits layers) or a
    ``Linear`` on the features."""
    if isinstance(head, FewShotHead):
        head.pre = _pre_layers(module)
        module.heads = head
        module.num_classes = head.num_classes
    elif isinstance(head, nn.Linear):
        pre = _pre_layers(module)
        layers = dict(pre.named_children()) if isinstance(pre, nn.Sequential) else {}
        names = ["pre_logits", "act"][: len(layers)]
        module.heads = nn.Sequential(OrderedDict([*zip(names, layers.values()), ("head", head)]))
        module.num_classes = head.out_features
    else:
        raise TypeError(f"not a classifier head: {type(head).__name__}")
    return module


def classifier(module: VisionTransformer) -> nn.Module:
    """What maps :func:`features` to logits: the final Linear, or a FewShotHead's ``classify``."""
    heads = module.heads
    if isinstance(heads, FewShotHead):
        return _Classify(heads)
    head: nn.Module = heads.head
    return head


class _Classify(nn.Module):
    def __init__(self, head: FewShotHead) -> None:
        super().__init__()
        self.head = head

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        return self.head.classify(f)


def head_spec_of(module: VisionTransformer) -> HeadSpec | None:
    heads = module.heads
    return heads.spec if isinstance(heads, FewShotHead) else None


def architecture_of(module: VisionTransformer) -> Architecture:
    """The Architecture of an existing torchvision ViT."""
    first = module.encoder.layers[0]
    eps = float(getattr(first.ln_1, "eps", 1e-6))
    heads = module.heads
    classes = heads.num_classes if isinstance(heads, FewShotHead) else heads.head.out_features
    return Architecture(
        image_size=module.image_size,
        patch_size=module.patch_size,
        num_layers=len(module.encoder.layers),
        num_heads=first.self_attention.num_heads,
        hidden_dim=module.hidden_dim,
        mlp_dim=module.mlp_dim,
        num_classes=int(classes),
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
    x: torch.Tensor = _pre_layers(module)(tokens[:, 0])
    return x


def forward_head(module: VisionTransformer, tokens: torch.Tensor) -> torch.Tensor:
    """(n, tokens, hidden) -> (n, classes) logits."""
    logits: torch.Tensor = module.heads(tokens[:, 0])
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
    "FewShotHead",
    "architecture_of",
    "build_module",
    "features",
    "forward",
    "forward_features",
    "classifier",
    "forward_head",
    "feature_size",
    "head_spec_of",
    "pre_logits",
    "set_head",
]
