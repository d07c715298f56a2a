"""Read Vision Transformer checkpoints of every common layout into the project's ViT module.

Layouts understood:

* torchvision state dicts (``conv_proj``, ``encoder.layers.encoder_layer_N``...), as ``.pth``/``.pt``/``.bin``
  (read with ``torch.load(weights_only=True)``: files are data, never code) or ``.safetensors``;
* timm / DeiT (``patch_embed.proj``, ``blocks.N.attn.qkv``, ``head``...), with the variants
  :class:`~vit_desktop.core.models.vit.ViT` runs (layer scale, register tokens, average pooling), and a
  timm hub ``config.json`` beside it when there is one (its ``pretrained_cfg`` preprocessing,
  labels and input size);
* Hugging Face ``ViTForImageClassification`` / ``DeiTForImageClassification``
  (``vit.encoder.layer.N.attention.attention.query``...), with or without ``config.json`` /
  ``preprocessor_config.json`` beside it (read as that image processor reads it);
* the project's own format: safetensors in torchvision layout with metadata describing the
  architecture, labels and preprocessing (what fine-tuning writes).

The architecture is inferred from tensor shapes; every tensor is then checked against the module it
will be loaded into, so that a mismatched file is refused with one line naming the key and shapes.
"""

from __future__ import annotations

import json
import os
import pickle
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from vit_desktop.core.errors import ModelError, first_line
from vit_desktop.core.types import ModelCard, OpenSetRule

from .hub_configs import (
    default_preprocess,
    hf_labels,
    hf_preprocess,
    is_timm_config,
    timm_config,
    timm_preprocess,
)
from .layouts import default_labels, infer_architecture, shape_text, to_torchvision
from .model_file import (
    architecture_from_metadata,
    check_preprocess,
    describe,
    head_from_metadata,
    is_project_file,
    open_set_from_file,
)
from .vit import ViT, at_resolution, build_module

WEIGHT_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin", ".ckpt")
# Preferred file names inside a model folder, best first (Hugging Face conventions, then ours).
_FOLDER_FILES = ("model.safetensors", "pytorch_model.bin", "model.pth", "weights.safetensors")


def _find_weights_file(folder: Path) -> Path:
    for name in _FOLDER_FILES:
        if (folder / name).is_file():
            return folder / name
    candidates = sorted(p for p in folder.iterdir() if p.suffix.lower() in WEIGHT_SUFFIXES and p.is_file())
    if not candidates:
        raise ModelError(f"{folder}: no weights file in this folder (expected model.safetensors or *.pth)")
    if len(candidates) > 1:
        names = ", ".join(p.name for p in candidates[:4])
        raise ModelError(f"{folder}: several weights files ({names}); open one of them directly")
    return candidates[0]


def _read_json(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelError(f"{path}: unreadable JSON ({exc})") from None
    return data if isinstance(data, dict) else None


def _unwrap(obj: Any, path: Path) -> dict[str, torch.Tensor]:
    """Find the state dict inside what torch.load returned (training checkpoints nest it)."""
    if isinstance(obj, nn.Module):  # pragma: no cover - weights_only refuses modules already
        raise ModelError(f"{path}: holds a whole pickled model, not a state dict")
    if not isinstance(obj, Mapping):
        raise ModelError(f"{path}: not a state dict (found {type(obj).__name__})")
    for key in ("state_dict", "model_state_dict", "model", "module", "state_dict_ema", "model_ema"):
        inner = obj.get(key)
        if isinstance(inner, Mapping) and inner and all(isinstance(v, torch.Tensor) for v in inner.values()):
            obj = inner
            break
    tensors = {str(k): v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise ModelError(f"{path}: contains no tensors")
    return tensors


def read_weights(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Tensors and string metadata of one weights file; refuses anything that is not plain data."""
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        from safetensors import SafetensorError, safe_open

        try:
            with safe_open(str(path), framework="pt", device="cpu") as f:
                metadata = dict(f.metadata() or {})
                tensors = {k: f.get_tensor(k) for k in f.keys()}
        except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
            raise ModelError(f"{path.name}: not a valid safetensors file ({first_line(exc)})") from None
        return tensors, metadata
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        first = first_line(exc).split(". ")[0]
        raise ModelError(
            f"{path.name}: refused: it holds objects other than tensors, which could run code ({first})"
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError, KeyError) as exc:
        raise ModelError(f"{path.name}: truncated or not a PyTorch weights file ({first_line(exc)})") from None
    return _unwrap(obj, path), {}


def load_into(module: nn.Module, sd: Mapping[str, torch.Tensor]) -> None:
    """Give ``module`` the tensors of ``sd`` after checking every key and shape, with a one-line error."""
    expected = module.state_dict()
    for key, ref in expected.items():
        got = sd.get(key)
        if got is None:
            raise ModelError(f"missing key {key}")
        if tuple(got.shape) != tuple(ref.shape):
            raise ModelError(f"{key} has shape {shape_text(got)}, expected {shape_text(ref)}")
        if not got.is_floating_point():
            raise ModelError(f"{key} has dtype {got.dtype}, expected floating point")
    unexpected = sorted(set(sd) - set(expected))
    if unexpected:
        raise ModelError(f"unexpected key {unexpected[0]}")
    bad = next((k for k, v in sd.items() if not torch.isfinite(v).all()), None)
    if bad is not None:
        raise ModelError(f"{bad} contains NaN or infinite values")
    # assign=True: a module built on the meta device takes these tensors as its parameters. Each is
    # copied: tensors read from a file can sit at unaligned offsets, which slows matrix multiplies.
    module.load_state_dict({k: v.to(torch.float32, copy=True) for k, v in sd.items()}, strict=True, assign=True)


def _check_rule(module: ViT, rule: OpenSetRule) -> None:
    """ModelError when a stored open-set rule does not fit the model it came with."""
    from .open_set import KnownScore
    from .vit import feature_size

    if rule.references is not None and (rule.references.ndim != 2 or rule.references.shape[1] != feature_size(module)):
        raise ModelError(f"the open-set rule's features have shape {tuple(rule.references.shape)}; the model's "
                         f"classifier reads {feature_size(module)}")
    try:
        KnownScore(module, rule)
    except ValueError as exc:
        raise ModelError(f"the open-set rule does not fit the model: {exc}") from None


def load_checkpoint(path: str | os.PathLike[str]) -> tuple[ViT, ModelCard]:
    """Open a checkpoint file or folder as a torchvision ViT plus its card.

    Raises ModelError with a one-line reason for anything that is not a usable ViT.
    """
    path = Path(path)
    if not path.exists():
        raise ModelError(f"{path}: no such file or folder")
    folder = path if path.is_dir() else path.parent
    weights = _find_weights_file(path) if path.is_dir() else path
    config = _read_json(folder / "config.json")
    pre_cfg = _read_json(folder / "preprocessor_config.json")
    timm_cfg = None
    try:
        raw, meta = read_weights(weights)
        ours = is_project_file(meta)
        rule = open_set_from_file(meta, raw) if ours else None
        sd, layout = to_torchvision(raw)
        head = None
        if ours:
            arch = architecture_from_metadata(meta)
            head = head_from_metadata(meta)
        else:
            heads, eps, pool = None, 1e-6, ""
            if layout == "huggingface" and config:
                heads = config.get("num_attention_heads")
                eps = float(config.get("layer_norm_eps", 1e-12))
            if layout == "timm" and is_timm_config(config):
                assert config is not None
                timm_cfg = timm_config(config)
                pool = timm_cfg.global_pool if timm_cfg.global_pool in ("token", "avg") else ""
                heads = timm_cfg.num_heads
                if timm_cfg.global_pool not in ("", "token", "avg"):
                    raise ModelError(f"unsupported pooling {timm_cfg.global_pool!r} (class token or average only)")
            arch = infer_architecture(sd, num_heads=heads, layer_norm_eps=eps, pool=pool)
        # Built on the meta device: no random initialisation only to overwrite it (a second
        # for ViT-B), and no second copy of the weights in memory.
        with torch.device("meta"):
            module = build_module(arch, head)
        load_into(module, sd)
        if rule is not None:
            _check_rule(module, rule)
        if ours:
            about = describe(meta, weights.stem)
            labels, pp, name = about.labels, about.preprocess, about.name
            description, extra = about.description, about.extra
        else:
            named: tuple[str, ...] | None = None
            if layout == "huggingface":
                named = hf_labels(config, arch.num_classes)
                pp = hf_preprocess(pre_cfg, config, arch.image_size)
                source = "Hugging Face folder" if pre_cfg is not None else "Hugging Face checkpoint"
            elif timm_cfg is not None:
                if timm_cfg.num_classes is not None and timm_cfg.num_classes != arch.num_classes:
                    raise ModelError(f"config.json says {timm_cfg.num_classes} classes; the head has "
                                     f"{arch.num_classes}")
                named = timm_cfg.labels
                size = timm_cfg.input_size[0]
                if size != arch.image_size:
                    # timm builds the model at the config's size and resamples the position embedding.
                    module = at_resolution(module, size)
                    arch = module.arch
                pp = timm_preprocess(timm_cfg)
                source = f"timm {timm_cfg.architecture}"
            else:
                pp = default_preprocess(arch.image_size, layout)
                source = f"{layout} checkpoint"
            labels = named or default_labels(arch.num_classes)
            name = (path if path.is_dir() else weights).stem
            variants = arch.variants()
            description = source + (f" ({', '.join(variants)})" if variants else "")
            extra = ()
    except ModelError as exc:
        msg = str(exc)
        raise ModelError(msg if msg.startswith(weights.name) else f"{weights.name}: {msg}") from None
    except (KeyError, ValueError, TypeError) as exc:
        raise ModelError(f"{weights.name}: malformed metadata ({first_line(exc)})") from None
    if len(labels) != arch.num_classes:
        raise ModelError(f"{weights.name}: {len(labels)} labels for a {arch.num_classes}-class head")
    check_preprocess(pp)
    if pp.crop_size != arch.image_size:
        raise ModelError(f"{weights.name}: crop size {pp.crop_size} differs from the model's {arch.image_size}")
    module.eval()
    card = ModelCard(
        name=name,
        kind="file",
        source=str(path),
        arch=arch,
        labels=labels,
        preprocess=pp,
        description=description,
        extra=extra,
        head=head,
        open_set=rule,
    )
    return module, card


__all__ = ["WEIGHT_SUFFIXES", "load_checkpoint", "load_into", "read_weights"]
