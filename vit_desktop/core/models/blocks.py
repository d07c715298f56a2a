"""One encoder block's attention, and the block as a whole with oneDNN's fused linears on the CPU.

:func:`vit.forward_features` runs every block through :func:`attention` (or, for fp32 on the CPU
without gradients, :func:`fused_block`): QKV as one product, the attention fused
(``scaled_dot_product_attention``) unless a callback wants each layer's probabilities for rollout.
``block`` is torchvision's (unannotated) ``EncoderBlock`` throughout.
"""

from __future__ import annotations

import functools
import math
import weakref
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

#: Called with (layer index, attention probabilities (n, heads, tokens, tokens)).
AttentionCallback = Callable[[int, torch.Tensor], None]


def attention(
    block: Any, h: torch.Tensor, index: int, on_attention: AttentionCallback | None
) -> torch.Tensor:
    """One block's attention; ``block`` is torchvision's (unannotated) ``EncoderBlock``."""
    mha: nn.MultiheadAttention = block.self_attention
    y: torch.Tensor = block.ln_1(h)
    # (n, t, d) -> (n, t, 3d); an int8 copy has the projection as a linear of its own (models.quantize)
    own = getattr(block, "qkv", None)
    qkv = own(y) if own is not None else F.linear(y, mha.in_proj_weight, mha.in_proj_bias)
    projected: torch.Tensor = mha.out_proj(attention_heads(qkv, mha.num_heads, index, on_attention))
    return projected


def attention_heads(
    qkv: torch.Tensor, heads: int, index: int, on_attention: AttentionCallback | None
) -> torch.Tensor:
    """(n, t, 3d) projected queries, keys and values -> (n, t, d) attention output, before ``out_proj``."""
    n, t, d3 = qkv.shape
    d = d3 // 3
    # (n, t, 3d) -> 3 x (n, heads, t, d / heads)
    q, k, v = qkv.view(n, t, 3, heads, d // heads).permute(2, 0, 3, 1, 4)
    if on_attention is None:
        out = F.scaled_dot_product_attention(q, k, v)
    else:
        # Scaling q (t x d/heads) rather than the scores (t x t) is the cheaper of the two.
        scores = (q * (1.0 / math.sqrt(d // heads))) @ k.transpose(-2, -1)
        # Softmax in fp32 even under autocast: rollout multiplies these a dozen times.
        probs = scores.float().softmax(dim=-1)
        on_attention(index, probs)
        # The block's output is the fused kernel's, as without a map: a photo gets the same scores
        # to the last digit whether or not its map was computed (maps are computed when asked for,
        # in runs or for one photo, and every run shares the library's answers).
        out = F.scaled_dot_product_attention(q, k, v)
        if probs.requires_grad:
            # Class maps: the same value, with the gradient flowing through the probabilities.
            # (n, heads, t, t) @ (n, heads, t, dh) -> (n, heads, t, dh)
            explicit = probs.to(v.dtype) @ v
            out = out.detach() + (explicit - explicit.detach())
    # (n, heads, t, dh) -> (n, t, d)
    return out.transpose(1, 2).reshape(n, t, d)


# The fused CPU block
#
# Eager PyTorch runs a block's linears as ``addmm``, which first copies the bias into every row
# of the output and only then multiplies (DeiT-Tiny fp32 on 2 cores: 16 % of the forward), and
# GELU and the residual adds as separate passes over memory (another 13 %). oneDNN's linear
# (``torch.ops.mkldnn._linear_pointwise``, what torch.compile's CPU backend calls) adds the bias,
# GELU or the residual while each tile of the product is still in cache. Same weights, same
# order of operations; only the matrix multiply's summation order differs (a few 1e-6 in the
# logits). Inference only: these ops have no gradients.


@functools.lru_cache(maxsize=1)
def fused_cpu_available() -> bool:
    """Whether this torch has oneDNN's fused linear and it computes what ``F.linear`` computes here
    (checked once on a small product, so a build or CPU where it misbehaves falls back)."""
    try:
        if not torch.backends.mkldnn.is_available():  # type: ignore[no-untyped-call]  # torch leaves it unannotated
            return False
        op = torch.ops.mkldnn._linear_pointwise
        g = torch.Generator().manual_seed(0)
        x, w, b, r = (torch.randn(*shape, generator=g) for shape in ((5, 3, 16), (24, 16), (24,), (5, 3, 24)))
        with torch.inference_mode():
            plain = F.linear(x, w, b)
            ok = torch.allclose(op(x, w, b, "none", [], ""), plain, atol=1e-4)
            ok = ok and torch.allclose(op(x, w, b, "gelu", [], "none"), F.gelu(plain), atol=1e-4)
            ok = ok and torch.allclose(op.binary(x, r, w, b, "add"), plain + r, atol=1e-4)
        return bool(ok)
    except (AttributeError, RuntimeError, NotImplementedError):  # no oneDNN, or an op it lacks
        return False


def _autocast_on() -> bool:
    try:
        return torch.is_autocast_enabled("cpu")
    except TypeError:  # torch < 2.4 takes no device type
        return torch.is_autocast_cpu_enabled()


def fusable(h: torch.Tensor) -> bool:
    """Whether this pass may use the fused block: fp32 on the CPU, no gradients, no autocast."""
    return (h.device.type == "cpu" and h.dtype == torch.float32 and not torch.is_grad_enabled()
            and not _autocast_on() and fused_cpu_available())


def fusable_block(block: Any) -> bool:
    """A block of plain float linears and exact GELU (a quantised or altered block runs as it is)."""
    mlp = block.mlp
    out_proj = block.self_attention.out_proj
    return (block.self_attention.in_proj_weight is not None
            and block.self_attention.in_proj_weight.dtype == torch.float32
            and len(mlp) == 5 and type(mlp[0]) is nn.Linear and type(mlp[3]) is nn.Linear
            and isinstance(mlp[1], nn.GELU) and mlp[1].approximate == "none"
            and isinstance(out_proj, nn.Linear) and out_proj.weight.dtype == torch.float32)


# Packed weights
#
# Given a plain (out, in) weight, oneDNN reorders it into its blocked layout on every call. Kept
# packed instead, DeiT-Tiny's forward runs 5 % faster on 2 cores (89.0 against 84.6 images/s),
# with the same answers to the last bit (the product is the one oneDNN computes anyway). The copy
# doubles the blocks' weights in memory, so a model whose blocks weigh more than PACK_LIMIT_BYTES
# (ViT-L and up) is not packed.

#: Block weights (fp32 bytes) up to which a packed copy is kept: ViT-B's 340 MB, not ViT-L's 1.2 GB.
PACK_LIMIT_BYTES = 512 << 20
#: Rows the packed layout is chosen for (a batch of 32 at 197 tokens); any other count computes the same.
_PACK_ROWS = 32 * 197
#: id(weight) -> (the weight, weakly; its version when packed; the packed copy).
_packed: dict[int, tuple[weakref.ref[torch.Tensor], int, torch.Tensor]] = {}


@functools.lru_cache(maxsize=1)
def packing_available() -> bool:
    """Whether this torch packs linear weights for oneDNN and the packed product is the plain one."""
    try:
        g = torch.Generator().manual_seed(0)
        x, w, b = (torch.randn(*shape, generator=g) for shape in ((5, 3, 16), (24, 16), (24,)))
        op = torch.ops.mkldnn._linear_pointwise
        with torch.inference_mode():
            packed = torch.ops.mkldnn._reorder_linear_weight(w, 15)
            return bool(torch.equal(op(x, packed, b, "none", [], ""), op(x, w, b, "none", [], "")))
    except (AttributeError, RuntimeError, NotImplementedError):
        return False


def packed_weights(weight: torch.Tensor) -> torch.Tensor:
    """``weight`` in oneDNN's layout, packed once and again only after the weight changes (training
    updates it in place, which bumps its version); the copy goes when the weight does."""
    key = id(weight)
    held = _packed.get(key)
    if held is not None and held[0]() is weight and held[1] == weight._version:
        return held[2]
    packed: torch.Tensor = torch.ops.mkldnn._reorder_linear_weight(weight.detach(), _PACK_ROWS)

    def forget(_ref: weakref.ref[torch.Tensor]) -> None:
        _packed.pop(key, None)

    _packed[key] = (weakref.ref(weight, forget), weight._version, packed)
    return packed


def should_pack(blocks: Any) -> bool:
    """Whether to keep these blocks' linear weights packed (see :data:`PACK_LIMIT_BYTES`)."""
    size = sum(p.numel() * 4 for p in blocks.parameters() if p.dim() == 2)
    return size <= PACK_LIMIT_BYTES and packing_available()


def fused_block(block: Any, h: torch.Tensor, index: int, on_attention: AttentionCallback | None,
                 layer_scale: bool, *, pack: bool = False) -> torch.Tensor:
    """One encoder block, as :func:`forward_features` runs it, with oneDNN's fused linears (and with
    ``pack``, their weights packed: :func:`packed_weights`)."""
    linear = torch.ops.mkldnn._linear_pointwise

    def weight(w: torch.Tensor) -> torch.Tensor:
        return packed_weights(w) if pack else w

    mha = block.self_attention
    y = block.ln_1(h)
    # (n, t, d) -> (n, t, 3d) -> (n, t, d)
    qkv = linear(y, weight(mha.in_proj_weight), mha.in_proj_bias, "none", [], "")
    a = attention_heads(qkv, mha.num_heads, index, on_attention)
    out_proj = mha.out_proj
    if layer_scale:
        h = h + linear(a, weight(out_proj.weight), out_proj.bias, "none", [], "") * block.ls1
    else:
        h = linear.binary(a, h, weight(out_proj.weight), out_proj.bias, "add")  # h + out_proj(a)
    fc1, fc2 = block.mlp[0], block.mlp[3]
    # (n, t, d) -> (n, t, mlp) -> (n, t, d)
    z = linear(block.ln_2(h), weight(fc1.weight), fc1.bias, "gelu", [], "none")
    if layer_scale:
        out: torch.Tensor = h + linear(z, weight(fc2.weight), fc2.bias, "none", [], "") * block.ls2
    else:
        out = linear.binary(z, h, weight(fc2.weight), fc2.bias, "add")  # h + fc2(gelu(fc1(ln_2(h))))
    return out


__all__ = ["PACK_LIMIT_BYTES", "AttentionCallback", "attention", "attention_heads", "fusable", "fusable_block",
           "fused_block", "fused_cpu_available", "packed_weights", "packing_available", "should_pack"]
