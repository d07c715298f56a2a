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
from dataclasses import dataclass, replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from vit_desktop.core.errors import CancelToken
from vit_desktop.core.types import Architecture, HeadSpec

from .blocks import (
    AttentionCallback,
    attention,
    fusable,
    fusable_block,
    fused_block,
    fused_cpu_available,
    should_pack,
)
from .heads import ClassifyFeatures, FewShotHead


def _normal_(t: torch.Tensor, std: float) -> torch.Tensor:
    """``normal_``, skipped on the meta device (a model built there is about to be loaded): on meta
    tensors torch routes it through its Python references, which import torch._dynamo (1.5 s)."""
    return t if t.is_meta else nn.init.normal_(t, std=std)


class _MLP(nn.Sequential):
    """The block's MLP with torchvision's layout (``mlp.0`` and ``mlp.3`` are the linears) and init."""

    def __init__(self, hidden: int, mlp: int) -> None:
        super().__init__(nn.Linear(hidden, mlp), nn.GELU(), nn.Dropout(0.0), nn.Linear(mlp, hidden), nn.Dropout(0.0))
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                _normal_(m.bias, std=1e-6)


class _Block(nn.Module):
    """One encoder block, named as torchvision names it (``ln_1``, ``self_attention``, ``ln_2``, ``mlp``)."""

    def __init__(self, arch: Architecture) -> None:
        super().__init__()
        d = arch.hidden_dim
        self.ln_1 = nn.LayerNorm(d, eps=arch.layer_norm_eps)
        self.self_attention = nn.MultiheadAttention(d, arch.num_heads, dropout=0.0, batch_first=True)
        self.dropout = nn.Dropout(0.0)
        self.ln_2 = nn.LayerNorm(d, eps=arch.layer_norm_eps)
        self.mlp = _MLP(d, arch.mlp_dim)
        if arch.layer_scale:
            self.ls1 = nn.Parameter(torch.ones(d))
            self.ls2 = nn.Parameter(torch.ones(d))


class _Encoder(nn.Module):
    def __init__(self, arch: Architecture, rows: int) -> None:
        super().__init__()
        self.pos_embedding = nn.Parameter(_normal_(torch.empty(1, rows, arch.hidden_dim), std=0.02))
        self.dropout = nn.Dropout(0.0)
        self.layers = nn.Sequential(OrderedDict((f"encoder_layer_{i}", _Block(arch)) for i in range(arch.num_layers)))
        self.ln: nn.Module = nn.LayerNorm(arch.hidden_dim, eps=arch.layer_norm_eps)


class ViT(nn.Module):
    """The project's Vision Transformer: torchvision's ``VisionTransformer``, plus timm's variants.

    A plain :class:`~vit_desktop.core.types.Architecture` gives torchvision's module exactly: the
    same submodules, state dict keys and initialisation (drawn in the same order), so torchvision's
    weights load as they are, without importing torchvision (which takes seconds at start-up).
    The variants add register tokens (``reg_token``), layer scale
    (``encoder.layers.encoder_layer_N.ls1``/``ls2``), a position embedding over the patches only,
    no class token, and average pooling with ``fc_norm``. ``forward`` is :func:`forward`.
    """

    # Read by the functions below whatever the variant: typed loosely, as torchvision leaves them.
    encoder: Any
    heads: Any
    class_token: Any
    reg_token: Any
    fc_norm: Any

    def __init__(self, arch: Architecture) -> None:
        super().__init__()
        if arch.pool not in ("token", "avg"):
            raise ValueError(f"unknown pooling {arch.pool!r}")
        if arch.pool == "token" and not arch.class_token:
            raise ValueError("class-token pooling needs a class token")
        if arch.image_size % arch.patch_size:
            raise ValueError(f"input size {arch.image_size} is not a multiple of the patch size {arch.patch_size}")
        self.arch = arch
        d = arch.hidden_dim
        self.image_size = arch.image_size
        self.patch_size = arch.patch_size
        self.hidden_dim = d
        self.mlp_dim = arch.mlp_dim
        self.num_classes = arch.num_classes
        self.representation_size = arch.representation_size
        self.conv_proj = nn.Conv2d(3, d, kernel_size=arch.patch_size, stride=arch.patch_size)
        self.class_token = nn.Parameter(torch.zeros(1, 1, d)) if arch.class_token else None
        rows = arch.grid_size**2 + (arch.prefix_tokens if arch.pos_embed_prefix else 0)
        self.seq_length = arch.grid_size**2 + 1
        self.encoder = _Encoder(arch, rows)
        self.reg_token = nn.Parameter(torch.zeros(1, arch.reg_tokens, d)) if arch.reg_tokens else None
        layers: OrderedDict[str, nn.Module] = OrderedDict()
        if arch.representation_size is None:
            layers["head"] = nn.Linear(d, arch.num_classes)
        else:
            layers["pre_logits"] = nn.Linear(d, arch.representation_size)
            layers["act"] = nn.Tanh()
            layers["head"] = nn.Linear(arch.representation_size, arch.num_classes)
        self.heads = nn.Sequential(layers)
        self.fc_norm = nn.LayerNorm(d, eps=arch.layer_norm_eps) if arch.fc_norm else None
        if arch.fc_norm:
            self.encoder.ln = nn.Identity()
        # torchvision's initialisation, after its modules' own.
        fan_in = 3 * arch.patch_size**2
        nn.init.trunc_normal_(self.conv_proj.weight, std=math.sqrt(1 / fan_in))
        assert self.conv_proj.bias is not None
        nn.init.zeros_(self.conv_proj.bias)
        if arch.representation_size is not None:
            pre = self.heads.pre_logits
            nn.init.trunc_normal_(pre.weight, std=math.sqrt(1 / pre.in_features))
            nn.init.zeros_(pre.bias)
        nn.init.zeros_(self.heads.head.weight)
        nn.init.zeros_(self.heads.head.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return forward(self, x)


def build_module(arch: Architecture, head: HeadSpec | None = None) -> ViT:
    """A ViT of this shape (random weights), with ``head`` instead of its linear one."""
    module = ViT(arch)
    if head is not None:
        set_head(module, FewShotHead(head, feature_size(module), arch.num_classes))
    return module


def resample_pos_embed(pos: torch.Tensor, old_grid: int, new_grid: int, prefix: int, *,
                       antialias: bool = True) -> torch.Tensor:
    """(1, prefix + old², d) -> (1, prefix + new², d): bicubic over the patch grid, as timm's
    ``resample_abs_pos_embed`` does (``antialias`` on); the prefix rows are kept as they are."""
    if old_grid == new_grid:
        return pos
    head, grid = pos[:, :prefix], pos[:, prefix:]
    d = grid.shape[-1]
    # (1, old², d) -> (1, d, old, old) -> (1, d, new, new) -> (1, new², d)
    image = grid.float().reshape(1, old_grid, old_grid, d).permute(0, 3, 1, 2)
    image = F.interpolate(image, size=(new_grid, new_grid), mode="bicubic", antialias=antialias, align_corners=False)
    grid = image.permute(0, 2, 3, 1).reshape(1, new_grid * new_grid, d).to(pos.dtype)
    return torch.cat([head, grid], dim=1)


def at_resolution(module: ViT, image_size: int) -> ViT:
    """Run ``module`` on ``image_size`` inputs: its position embedding resampled the way timm
    loads a checkpoint into a model of another size."""
    arch = module.arch
    if image_size % arch.patch_size:
        raise ValueError(f"{image_size} is not a multiple of the patch size {arch.patch_size}")
    new_grid = image_size // arch.patch_size
    prefix = arch.prefix_tokens if arch.pos_embed_prefix else 0
    pos = resample_pos_embed(module.encoder.pos_embedding.detach(), arch.grid_size, new_grid, prefix)
    module.encoder.pos_embedding = nn.Parameter(pos)
    module.image_size = image_size
    module.seq_length = new_grid**2 + 1
    module.arch = replace(arch, image_size=image_size)
    return module


def feature_size(module: ViT) -> int:
    """Width of the features a classifier sees (after torchvision's pre-logits layer, if any)."""
    return int(module.representation_size or module.hidden_dim)


def _pre_layers(module: ViT) -> nn.Module:
    """torchvision's layers between the class token and the classifier (pre_logits, act), if any."""
    heads = module.heads
    if isinstance(heads, FewShotHead):
        return heads.pre
    layers = [layer for name, layer in heads.named_children() if name != "head"]
    return nn.Sequential(*layers) if layers else nn.Identity()


def set_head(module: ViT, head: nn.Module) -> ViT:
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


def head_features(module: ViT, pooled: torch.Tensor) -> torch.Tensor:
    """(n, hidden) pooled token -> (n, features): what the classifier reads (after pre-logits, if any)."""
    out: torch.Tensor = _pre_layers(module)(pooled)
    return out


def classifier(module: ViT) -> nn.Module:
    """What maps :func:`features` to logits: the final Linear, or a FewShotHead's ``classify``."""
    heads = module.heads
    if isinstance(heads, FewShotHead):
        return ClassifyFeatures(heads)
    head: nn.Module = heads.head
    return head


def head_spec_of(module: ViT) -> HeadSpec | None:
    heads = module.heads
    return heads.spec if isinstance(heads, FewShotHead) else None


def architecture_of(module: ViT) -> Architecture:
    """The Architecture of an existing ViT (a :class:`ViT`, or torchvision's own)."""
    heads = module.heads
    classes = heads.num_classes if isinstance(heads, FewShotHead) else heads.head.out_features
    if isinstance(module, ViT):
        return replace(module.arch, num_classes=int(classes))
    first = module.encoder.layers[0]
    eps = float(getattr(first.ln_1, "eps", 1e-6))
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


def _variant_fields(module: ViT) -> Architecture:
    """Whose variant fields (class token, register tokens, pooling...) shape the forward: the
    module's own, or for torchvision's module the plain ones. Only those fields are meaningful here;
    :func:`architecture_of` gives a module's whole architecture."""
    arch: Architecture | None = getattr(module, "arch", None)
    return arch if arch is not None else _PLAIN


_PLAIN = Architecture(image_size=0, patch_size=1, num_layers=0, num_heads=1, hidden_dim=1, mlp_dim=1, num_classes=1)


def forward_features(
    module: ViT,
    x: torch.Tensor,
    on_attention: AttentionCallback | None = None,
    *,
    cancel: CancelToken | None = None,
    fused: bool = False,
) -> torch.Tensor:
    """(n, 3, h, w) normalised input -> (n, prefix + patches, hidden) tokens after the final norm.

    Token order is timm's: [class] [registers] [patches]. ``cancel`` is checked before every
    block (raising :class:`Cancelled`), so a big model on the CPU stops within one layer rather
    than at the end of the batch. ``fused`` lets an fp32 CPU pass without gradients run the
    blocks' linears through oneDNN with their bias, GELU and residual add fused in (see
    :func:`fused_cpu_available`); elsewhere, and where it is not available, it is ignored.
    """
    arch = _variant_fields(module)
    # (n, c, h, w) -> (n, hidden, n_h, n_w) -> (n, n_h * n_w, hidden)
    tokens = module.conv_proj(x).flatten(2).transpose(1, 2)
    n = tokens.shape[0]
    pos = module.encoder.pos_embedding
    if tokens.shape[1] + (arch.prefix_tokens if arch.pos_embed_prefix else 0) != pos.shape[1]:
        raise ValueError(f"a {x.shape[-2]}x{x.shape[-1]} input does not match this model's position embedding")
    if not arch.pos_embed_prefix:
        tokens = tokens + pos  # the prefix tokens get no position (timm's no_embed_class)
    prefix = []
    if arch.class_token:
        prefix.append(module.class_token.expand(n, -1, -1))
    reg = getattr(module, "reg_token", None)
    if reg is not None:
        prefix.append(reg.expand(n, -1, -1))
    h = torch.cat([*prefix, tokens], dim=1) if prefix else tokens
    if arch.pos_embed_prefix:
        h = h + pos
    encoder = module.encoder
    fuse = fused and fusable(h)
    pack = fuse and should_pack(encoder.layers)
    for i, block in enumerate(encoder.layers):
        if cancel is not None:
            cancel.raise_if_cancelled()
        if fuse and fusable_block(block):
            h = fused_block(block, h, i, on_attention, arch.layer_scale, pack=pack)
            continue
        a = attention(block, h, i, on_attention)
        h = h + (a * block.ls1 if arch.layer_scale else a)
        m = block.mlp(block.ln_2(h))
        h = h + (m * block.ls2 if arch.layer_scale else m)
    out: torch.Tensor = encoder.ln(h)
    return out


def pooled(module: ViT, tokens: torch.Tensor) -> torch.Tensor:
    """(n, tokens, hidden) -> (n, hidden): what the head reads (the class token, or the mean of
    the patch tokens through fc_norm)."""
    arch = _variant_fields(module)
    if arch.pool == "avg":
        mean = tokens[:, arch.prefix_tokens :].mean(dim=1)
        fc_norm = getattr(module, "fc_norm", None)
        return fc_norm(mean) if fc_norm is not None else mean
    return tokens[:, 0]


def pre_logits(module: ViT, tokens: torch.Tensor) -> torch.Tensor:
    """(n, tokens, hidden) -> (n, features): the pooled token, through ``pre_logits`` if the model has one."""
    x: torch.Tensor = _pre_layers(module)(pooled(module, tokens))
    return x


def forward_head(module: ViT, tokens: torch.Tensor) -> torch.Tensor:
    """(n, tokens, hidden) -> (n, classes) logits."""
    logits: torch.Tensor = module.heads(pooled(module, tokens))
    return logits


def forward(
    module: ViT,
    x: torch.Tensor,
    on_attention: AttentionCallback | None = None,
    *,
    cancel: CancelToken | None = None,
    fused: bool = False,
) -> torch.Tensor:
    """Logits of ``module`` for ``x``: :func:`forward_features` then :func:`forward_head`."""
    return forward_head(module, forward_features(module, x, on_attention, cancel=cancel, fused=fused))


def forward_pooled(
    module: ViT,
    x: torch.Tensor,
    on_attention: AttentionCallback | None = None,
    *,
    cancel: CancelToken | None = None,
    fused: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(pooled features (n, hidden), logits (n, classes)): what the head reads, and its answer.

    The same operations as :func:`forward`; the pooled features are what any head on this
    backbone reads, so a head fitted later can answer from them without the photo.
    """
    f = pooled(module, forward_features(module, x, on_attention, cancel=cancel, fused=fused))
    logits: torch.Tensor = module.heads(f)
    return f, logits


def features(module: ViT, x: torch.Tensor) -> torch.Tensor:
    """(n, features) right before the classifier (``heads.head``): what a new head is trained on."""
    return pre_logits(module, forward_features(module, x))


@dataclass(frozen=True)
class Readout:
    """Which tokens a map is read from: the rows the head reads, the columns of the patches."""

    #: Tokens before the patches (the class and register tokens).
    prefix: int
    #: "token": the class token's row; "avg": the mean of the patch tokens' rows.
    pool: str = "token"

    def grid(self, product: torch.Tensor) -> torch.Tensor:
        """(n, t, t) token-to-token relevance -> (n, g, g) over the patches, each map's max 1."""
        if self.pool == "avg":
            row = product[:, self.prefix :, self.prefix :].mean(dim=1)
        else:
            row = product[:, 0, self.prefix :]
        g = math.isqrt(row.shape[1])
        grid = row.reshape(-1, g, g)
        peak = grid.flatten(1).amax(dim=1).clamp_min(1e-12)
        return grid / peak[:, None, None]


def readout(module: ViT) -> Readout:
    arch = _variant_fields(module)
    return Readout(arch.prefix_tokens, arch.pool)


__all__ = [
    "AttentionCallback",
    "FewShotHead",
    "Readout",
    "ViT",
    "at_resolution",
    "architecture_of",
    "build_module",
    "features",
    "forward",
    "forward_features",
    "classifier",
    "forward_head",
    "forward_pooled",
    "feature_size",
    "fused_cpu_available",
    "head_features",
    "head_spec_of",
    "pooled",
    "pre_logits",
    "readout",
    "resample_pos_embed",
    "set_head",
]
