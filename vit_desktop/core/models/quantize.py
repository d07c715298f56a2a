"""int8 on the CPU: every linear of the encoder's blocks as a dynamically quantised one.

torch's dynamic quantisation swaps ``nn.Linear`` modules for int8 ones (weights quantised once,
per output channel; activations quantised on the fly). On its own it reaches only the MLP:
attention's input projection is a bare ``in_proj_weight`` that :func:`blocks.attention` multiplies
with ``F.linear``, and its ``out_proj`` is a type the swap skips. :func:`int8_module` gives each
block a ``qkv`` linear holding the same weights (which :func:`blocks.attention` uses when a block
has one) and a plain ``out_proj``, so that all four of a block's products run in int8. The patch
embedding and the classifier stay fp32: they are a few percent of the work, and a head keeps
reading fp32 features the way stored features are read.

The activations' scale is taken over the whole batch (as onnxruntime's dynamic quantisation takes
it), so an int8 answer can move in its last digits with the photos batched with it. int8 costs
DeiT-Tiny 1.1-2.1 points of top-1 on the 187 labelled shared photos: it is a choice, never "auto"'s
(:func:`vit_desktop.core.inference.devices.choose_precision`).
"""

from __future__ import annotations

import copy
import warnings

import torch
from torch import nn

from vit_desktop.core.errors import ModelError

from .vit import ViT


def int8_available() -> bool:
    """Whether this torch can run dynamically quantised linears on this CPU."""
    try:
        from torch.ao.quantization import quantize_dynamic  # noqa: F401 - only whether it imports
    except ImportError:
        return False
    return any(e in torch.backends.quantized.supported_engines for e in ("x86", "fbgemm", "qnnpack", "onednn"))


def int8_module(module: ViT) -> ViT:
    """A copy of ``module`` (left as it is) whose blocks' linears compute in int8; for inference only."""
    if not int8_available():
        raise ModelError("int8 needs torch's dynamic quantisation, which this torch or CPU does not have: "
                         "use fp32 or bf16")
    from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

    quantised = copy.deepcopy(module).cpu().float().eval()
    names = []
    for name, block in quantised.encoder.layers.named_children():
        mha: nn.MultiheadAttention = block.self_attention
        d = mha.embed_dim
        qkv = nn.Linear(d, 3 * d, bias=mha.in_proj_bias is not None)
        with torch.no_grad():
            qkv.weight.copy_(mha.in_proj_weight)
            if qkv.bias is not None:
                qkv.bias.copy_(mha.in_proj_bias)
        block.qkv = qkv
        # The projection lives in qkv now: no second copy of its weights.
        mha.register_parameter("in_proj_weight", None)
        mha.register_parameter("in_proj_bias", None)
        out = nn.Linear(d, d, bias=mha.out_proj.bias is not None)
        out.load_state_dict(mha.out_proj.state_dict())
        mha.out_proj = out  # type: ignore[assignment]  # a plain Linear, so that the swap takes it
        prefix = f"encoder.layers.{name}"
        names += [f"{prefix}.qkv", f"{prefix}.self_attention.out_proj", f"{prefix}.mlp.0", f"{prefix}.mlp.3"]
    with warnings.catch_warnings():
        # torch.ao.quantization says it is deprecated in favour of torchao (not a dependency here),
        # and its quantised tensors likewise; the eager modules still run, and until they go this
        # is the CPU's fast int8 product (a per-token int8 matmul written out in torch ops was 5x
        # slower than fbgemm's fused kernel).
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", UserWarning)
        out_module: ViT = quantize_dynamic(  # type: ignore[no-untyped-call]  # torch leaves it unannotated
            quantised, {n: per_channel_dynamic_qconfig for n in names}, dtype=torch.qint8)
    return out_module.requires_grad_(False)


__all__ = ["int8_available", "int8_module"]
