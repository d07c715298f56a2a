"""Checkpoint layouts -> the project's model: key names and architecture.

One converter per foreign layout (timm/DeiT, Hugging Face ``ViTForImageClassification``, older
torchvision names), each moving tensors to the names of :class:`~vit_desktop.core.models.vit.ViT`
(torchvision's, plus the variants' own) and refusing, with one line, any key it does not
understand. The architecture is then read off the tensor shapes; labels and preprocessing come
from the configs beside the file (:mod:`vit_desktop.core.models.hub_configs`).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, TypeVar

from vit_desktop.core.errors import ModelError
from vit_desktop.core.labels.imagenet import imagenet_classes
from vit_desktop.core.types import Architecture

if TYPE_CHECKING:  # the converters import it: naming a layout needs only the keys (.header)
    import torch

# torchvision's family uses 64-wide heads except ViT-H (80-wide): (hidden, depth) -> heads.
_KNOWN_HEADS = {(1280, 32): 16}


# --------------------------------------------------------------------------------------------
# Key layouts -> torchvision


_V = TypeVar("_V")


def strip_prefixes(sd: dict[str, _V]) -> dict[str, _V]:
    """Remove wrappers' prefixes (DataParallel's ``module.``, Lightning's ``model.``)."""
    for prefix in ("module.", "model.", "_orig_mod."):
        if sd and all(k.startswith(prefix) for k in sd):
            sd = {k[len(prefix) :]: v for k, v in sd.items()}
    return sd


def detect_layout(sd: Mapping[str, object]) -> str:
    if "conv_proj.weight" in sd:
        return "torchvision"
    if "patch_embed.proj.weight" in sd:
        return "timm"
    if any(k.endswith("embeddings.patch_embeddings.projection.weight") for k in sd):
        return "huggingface"
    raise ModelError(
        "not a Vision Transformer checkpoint: no patch embedding "
        "(expected conv_proj.weight, patch_embed.proj.weight or vit.embeddings.patch_embeddings.projection.weight)"
    )


# Rename tables, timm's way (a name without .weight/.bias is a layer,
# both move; a tensor of its own, such as a token, is listed in _BARE).

#: Tensors that are neither a weight nor a bias.
_BARE = frozenset({"cls_token", "reg_token", "pos_embed", "embeddings.cls_token", "embeddings.position_embeddings",
                   "gamma_1", "gamma_2", "ls1.gamma", "ls2.gamma"})

_TIMM_OPTIONAL = (("cls_token", "class_token"), ("reg_token", "reg_token"))
_TIMM_STEM = (("pos_embed", "encoder.pos_embedding"), ("patch_embed.proj", "conv_proj"))
_TIMM_BLOCK = (("norm1", "ln_1"), ("attn.proj", "self_attention.out_proj"), ("norm2", "ln_2"),
               ("mlp.fc1", "mlp.0"), ("mlp.fc2", "mlp.3"))
_TIMM_LAYER_SCALE = (("ls1.gamma", "ls1"), ("gamma_1", "ls1"), ("ls2.gamma", "ls2"), ("gamma_2", "ls2"))
_TIMM_NORMS = (("norm", "encoder.ln"), ("fc_norm", "fc_norm"))

_HF_STEM = (("embeddings.cls_token", "class_token"), ("embeddings.position_embeddings", "encoder.pos_embedding"),
            ("embeddings.patch_embeddings.projection", "conv_proj"))
_HF_BLOCK = (("layernorm_before", "ln_1"), ("attention.output.dense", "self_attention.out_proj"),
             ("layernorm_after", "ln_2"), ("intermediate.dense", "mlp.0"), ("output.dense", "mlp.3"))


class _Converter:
    """Moves tensors from a source dict to torchvision names, remembering what was not used."""

    def __init__(self, sd: Mapping[str, torch.Tensor]) -> None:
        self.src = dict(sd)
        self.out: dict[str, torch.Tensor] = {}

    def take(self, src: str, dst: str, *, required: bool = True) -> None:
        if src in self.src:
            self.out[dst] = self.src.pop(src)
        elif required:
            raise ModelError(f"missing key {src}")

    def rename(self, table: tuple[tuple[str, str], ...], src: str = "", dst: str = "", *,
               required: bool = True) -> None:
        """Take every ``(source, destination)`` pair of ``table``, prefixed; a name without a
        ``.weight``/``.bias`` of its own stands for a layer and moves both."""
        for a, b in table:
            if a.endswith((".weight", ".bias")) or a in _BARE:
                self.take(src + a, dst + b, required=required)
            else:
                for part in (".weight", ".bias"):
                    self.take(src + a + part, dst + b + part, required=required)

    def drop(self, pattern: str) -> None:
        for k in [k for k in self.src if re.fullmatch(pattern, k)]:
            del self.src[k]

    def finish(self, layout: str) -> dict[str, torch.Tensor]:
        if self.src:
            extra = sorted(self.src)
            more = f" and {len(extra) - 1} more" if len(extra) > 1 else ""
            raise ModelError(f"unsupported {layout} variant: unexpected key {extra[0]}{more}")
        return self.out


def _layer_indices(sd: Mapping[str, torch.Tensor], pattern: str) -> list[int]:
    rx = re.compile(pattern)
    found = {int(m.group(1)) for k in sd if (m := rx.match(k))}
    if not found:
        raise ModelError("no transformer blocks found")
    ordered = sorted(found)
    if ordered != list(range(len(ordered))):
        missing = next(i for i in range(len(ordered)) if i not in found)
        raise ModelError(f"transformer block {missing} is missing (found blocks up to {ordered[-1]})")
    return ordered


def _torchvision_names(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    # Older torchvision files name the MLP layers linear_1/linear_2.
    return {k.replace(".mlp.linear_1.", ".mlp.0.").replace(".mlp.linear_2.", ".mlp.3."): v for k, v in sd.items()}


def _from_timm(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    import torch

    if "dist_token" in sd:
        raise ModelError("distilled DeiT (dist_token, two heads averaged) is not supported: use the "
                         "non-distilled checkpoint")
    for key, feature in (("norm_pre.weight", "a norm before the blocks (CLIP-style norm_pre)"),
                         ("attn_pool.latent", "attention pooling (attn_pool)")):
        if key in sd:
            raise ModelError(f"unsupported timm variant: {feature}")
    c = _Converter(sd)
    c.rename(_TIMM_OPTIONAL, required=False)
    c.rename(_TIMM_STEM)
    dim = c.out["conv_proj.weight"].shape[0]
    for i in _layer_indices(sd, r"blocks\.(\d+)\."):
        s, d = f"blocks.{i}.", f"encoder.layers.encoder_layer_{i}."
        c.rename(_TIMM_BLOCK, s, d)
        c.take(s + "attn.qkv.weight", d + "self_attention.in_proj_weight")
        if s + "attn.qkv.bias" in c.src:
            c.take(s + "attn.qkv.bias", d + "self_attention.in_proj_bias")
        else:  # qkv_bias=False models
            c.out[d + "self_attention.in_proj_bias"] = torch.zeros(3 * dim)
        # Layer scale (DeiT III); the original DeiT III files call it gamma_1 / gamma_2.
        c.rename(_TIMM_LAYER_SCALE, s, d, required=False)
    c.rename(_TIMM_NORMS, required=False)
    if "pre_logits.fc.weight" in c.src:
        c.rename((("pre_logits.fc", "heads.pre_logits"),))
    c.rename((("head", "heads.head"),))
    return c.finish("timm")


def _from_huggingface(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    import torch

    key = next(k for k in sd if k.endswith("embeddings.patch_embeddings.projection.weight"))
    p = key[: -len("embeddings.patch_embeddings.projection.weight")]  # "vit." or ""
    if "classifier.weight" not in sd:
        raise ModelError(
            "Hugging Face ViT without a classification head (classifier.weight): "
            "use a ViTForImageClassification checkpoint"
        )
    c = _Converter(sd)
    if "cls_classifier.weight" in sd or "distillation_classifier.weight" in sd:
        raise ModelError("DeiT with a distillation head (DeiTForImageClassificationWithTeacher, two heads "
                         "averaged) is not supported: use DeiTForImageClassification")
    c.rename(_HF_STEM, p)
    # DeiTForImageClassification: the distillation token runs through the blocks, but only the
    # class token is classified: a register token, as far as the forward is concerned.
    c.take(p + "embeddings.distillation_token", "reg_token", required=False)
    c.drop(re.escape(p) + r"embeddings\.mask_token")
    c.drop(re.escape(p) + r"pooler\..*")  # ViTForImageClassification ignores the pooler
    dim = c.out["conv_proj.weight"].shape[0]
    for i in _layer_indices(sd, re.escape(p) + r"encoder\.layer\.(\d+)\."):
        s, d = f"{p}encoder.layer.{i}.", f"encoder.layers.encoder_layer_{i}."
        qkv_w, qkv_b = [], []
        for part in ("query", "key", "value"):
            w = c.src.pop(s + f"attention.attention.{part}.weight", None)
            if w is None:
                raise ModelError(f"missing key {s}attention.attention.{part}.weight")
            qkv_w.append(w)
            qkv_b.append(c.src.pop(s + f"attention.attention.{part}.bias", torch.zeros(dim)))
        # torchvision's in_proj packs query, key, value in that order along dim 0.
        c.out[d + "self_attention.in_proj_weight"] = torch.cat(qkv_w, 0)
        c.out[d + "self_attention.in_proj_bias"] = torch.cat(qkv_b, 0)
        c.rename(_HF_BLOCK, s, d)
    c.rename((("layernorm", "encoder.ln"),), p)
    c.rename((("classifier", "heads.head"),))
    return c.finish("Hugging Face")


def to_torchvision(sd: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], str]:
    sd = strip_prefixes(sd)
    layout = detect_layout(sd)
    if layout == "timm":
        return _from_timm(sd), layout
    if layout == "huggingface":
        return _from_huggingface(sd), layout
    return _torchvision_names(sd), layout


# --------------------------------------------------------------------------------------------
# Architecture inference


def infer_architecture(
    sd: Mapping[str, torch.Tensor], *, num_heads: int | None = None, layer_norm_eps: float = 1e-6,
    pool: str = "",
) -> Architecture:
    """Read the shape of a ViT off its torchvision-named tensors (variants included).

    ``pool`` is the pooling a config names ("token", "avg"); without one, a model without a class
    token or with ``fc_norm`` averages, as timm's do.
    """
    proj = sd.get("conv_proj.weight")
    if proj is None or proj.ndim != 4:
        raise ModelError("conv_proj.weight must be a 4-d convolution weight")
    hidden, channels, ph, pw = proj.shape
    if ph != pw:
        raise ModelError(f"patch embedding {shape_text(proj)} is not square")
    if channels != 3:
        raise ModelError(f"patch embedding expects {channels} input channels; only 3 (RGB) is supported")
    pos = sd.get("encoder.pos_embedding")
    if pos is None or pos.ndim != 3 or pos.shape[0] != 1:
        raise ModelError("encoder.pos_embedding must have shape (1, tokens, hidden)")
    class_token = "class_token" in sd
    reg = sd.get("reg_token")
    reg_tokens = int(reg.shape[1]) if reg is not None and reg.ndim == 3 else 0
    prefix = int(class_token) + reg_tokens
    rows = int(pos.shape[1])
    # The position embedding covers the prefix tokens too, or (timm's no_embed_class) the patches only.
    if math.isqrt(rows - prefix) ** 2 == rows - prefix and rows > prefix:
        patches, pos_embed_prefix = rows - prefix, True
    elif math.isqrt(rows) ** 2 == rows:
        patches, pos_embed_prefix = rows, False
    else:
        raise ModelError(f"position embedding {shape_text(pos)}: its {rows} rows are not {prefix} prefix tokens and "
                         "a square grid of patches")
    grid = math.isqrt(patches)
    depth = len(_layer_indices(sd, r"encoder\.layers\.encoder_layer_(\d+)\."))
    mlp = sd.get("encoder.layers.encoder_layer_0.mlp.0.weight")
    if mlp is None:
        raise ModelError("missing key encoder.layers.encoder_layer_0.mlp.0.weight")
    head = sd.get("heads.head.weight")
    if head is None:
        raise ModelError("missing key heads.head.weight (no classification head)")
    pre = sd.get("heads.pre_logits.weight")
    if num_heads is None:
        num_heads = _KNOWN_HEADS.get((int(hidden), depth), max(1, int(hidden) // 64))
    # Whether the heads divide the hidden size is checked with every other declared value
    # (:func:`vit_desktop.core.models.limits.check_architecture`): a config may say 0 or 7.
    fc_norm = "fc_norm.weight" in sd
    if not pool:
        pool = "avg" if fc_norm or not class_token else "token"
    if pool not in ("token", "avg"):
        raise ModelError(f"unsupported pooling {pool!r} (class token or average only)")
    if pool == "token" and not class_token:
        raise ModelError("the config says class-token pooling, but the weights have no class token")
    return Architecture(
        image_size=grid * int(ph),
        patch_size=int(ph),
        num_layers=depth,
        num_heads=num_heads,
        hidden_dim=int(hidden),
        mlp_dim=int(mlp.shape[0]),
        num_classes=int(head.shape[0]),
        representation_size=int(pre.shape[0]) if pre is not None else None,
        layer_norm_eps=layer_norm_eps,
        class_token=class_token,
        reg_tokens=reg_tokens,
        layer_scale="encoder.layers.encoder_layer_0.ls1" in sd,
        pos_embed_prefix=pos_embed_prefix,
        pool=pool,
        fc_norm=fc_norm,
    )


# --------------------------------------------------------------------------------------------
# Labels and preprocessing


def default_labels(num_classes: int) -> tuple[str, ...]:
    if num_classes == 1000:
        return imagenet_classes()
    return tuple(f"class_{i}" for i in range(num_classes))


def shape_text(t: torch.Tensor) -> str:
    """``(768, 3, 16, 16)``: a tensor's shape as error messages write it."""
    return "(" + ", ".join(str(s) for s in t.shape) + ")"


__all__ = [
    "default_labels",
    "detect_layout",
    "infer_architecture",
    "shape_text",
    "strip_prefixes",
    "to_torchvision",
]
