"""Independent re-implementations the tests hold the program against: checkpoint layouts written
from torchvision's names, and attention rollout from torchvision's own attention, loop by loop."""

from __future__ import annotations

import numpy as np
import torch
from torchvision.models import VisionTransformer

#: The tiny architecture the layout conversions are written for.
ARCH = dict(image_size=32, patch_size=8, num_layers=2, num_heads=2, hidden_dim=128, mlp_dim=96, num_classes=4)


def to_timm(m: VisionTransformer) -> dict[str, torch.Tensor]:
    """Written independently of the loader: torchvision names -> timm names."""
    sd = m.state_dict()
    out = {
        "cls_token": sd["class_token"],
        "pos_embed": sd["encoder.pos_embedding"],
        "patch_embed.proj.weight": sd["conv_proj.weight"],
        "patch_embed.proj.bias": sd["conv_proj.bias"],
        "norm.weight": sd["encoder.ln.weight"],
        "norm.bias": sd["encoder.ln.bias"],
        "head.weight": sd["heads.head.weight"],
        "head.bias": sd["heads.head.bias"],
    }
    names = {
        "ln_1": "norm1",
        "ln_2": "norm2",
        "self_attention.in_proj": "attn.qkv",
        "self_attention.out_proj": "attn.proj",
        "mlp.0": "mlp.fc1",
        "mlp.3": "mlp.fc2",
    }
    for i in range(ARCH["num_layers"]):
        for tv, timm in names.items():
            for kind in ("weight", "bias"):
                src = f"encoder.layers.encoder_layer_{i}.{tv}{'_' if tv.endswith('in_proj') else '.'}{kind}"
                out[f"blocks.{i}.{timm}.{kind}"] = sd[src]
    return {k: v.clone() for k, v in out.items()}


def to_hf(m: VisionTransformer) -> dict[str, torch.Tensor]:
    sd = m.state_dict()
    d = ARCH["hidden_dim"]
    out = {
        "vit.embeddings.cls_token": sd["class_token"],
        "vit.embeddings.position_embeddings": sd["encoder.pos_embedding"],
        "vit.embeddings.patch_embeddings.projection.weight": sd["conv_proj.weight"],
        "vit.embeddings.patch_embeddings.projection.bias": sd["conv_proj.bias"],
        "vit.layernorm.weight": sd["encoder.ln.weight"],
        "vit.layernorm.bias": sd["encoder.ln.bias"],
        "classifier.weight": sd["heads.head.weight"],
        "classifier.bias": sd["heads.head.bias"],
    }
    for i in range(ARCH["num_layers"]):
        s, h = f"encoder.layers.encoder_layer_{i}.", f"vit.encoder.layer.{i}."
        w, b = sd[s + "self_attention.in_proj_weight"], sd[s + "self_attention.in_proj_bias"]
        for j, part in enumerate(("query", "key", "value")):
            out[h + f"attention.attention.{part}.weight"] = w[j * d : (j + 1) * d]
            out[h + f"attention.attention.{part}.bias"] = b[j * d : (j + 1) * d]
        pairs = {
            "layernorm_before": "ln_1",
            "layernorm_after": "ln_2",
            "attention.output.dense": "self_attention.out_proj",
            "intermediate.dense": "mlp.0",
            "output.dense": "mlp.3",
        }
        for hf, tv in pairs.items():
            out[h + hf + ".weight"] = sd[s + tv + ".weight"]
            out[h + hf + ".bias"] = sd[s + tv + ".bias"]
    return {k: v.clone().contiguous() for k, v in out.items()}


def attention_by_hooks(module: VisionTransformer, x: torch.Tensor) -> tuple[torch.Tensor, list[np.ndarray]]:
    """Per-layer attention probabilities from torchvision's own MultiheadAttention (need_weights=True)."""
    maps: list[np.ndarray] = []
    handles = []
    for block in module.encoder.layers:
        mha = block.self_attention

        def pre(mod, args, kwargs):
            kwargs = dict(kwargs, need_weights=True, average_attn_weights=False)
            return args, kwargs

        def post(mod, args, kwargs, output):
            maps.append(output[1].detach().double().numpy())

        handles.append(mha.register_forward_pre_hook(pre, with_kwargs=True))
        handles.append(mha.register_forward_hook(post, with_kwargs=True))
    try:
        with torch.no_grad():
            out = VisionTransformer.forward(module, x)  # torchvision's own forward, through its MHA
    finally:
        for h in handles:
            h.remove()
    return out, maps


def plain_rollout(maps: list[np.ndarray], fusion: str = "mean", discard: float = 0.0) -> np.ndarray:
    """Abnar & Zuidema, written loop by loop, one sample at a time."""
    n, _, t, _ = maps[0].shape
    out = []
    for s in range(n):
        r = np.eye(t)
        for layer in maps:
            a = {"mean": layer[s].mean(0), "max": layer[s].max(0), "min": layer[s].min(0)}[fusion]
            if discard > 0:
                a = a.copy()
                order = [(a[i, j], i, j) for i in range(t) for j in range(t) if j != 0]
                order.sort()
                for _, i, j in order[: int(t * t * discard)]:
                    a[i, j] = 0.0
            a = 0.5 * a + 0.5 * np.eye(t)
            a = a / a.sum(axis=1, keepdims=True)
            r = a @ r
        row = r[0, 1:]
        g = int(round(len(row) ** 0.5))
        out.append((row / row.max()).reshape(g, g))
    return np.stack(out)
