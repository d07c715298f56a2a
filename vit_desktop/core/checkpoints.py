"""Read Vision Transformer checkpoints of every common layout into torchvision's ``VisionTransformer``.

Layouts understood:

* torchvision state dicts (``conv_proj``, ``encoder.layers.encoder_layer_N``...), as ``.pth``/``.pt``/``.bin``
  (read with ``torch.load(weights_only=True)``: files are data, never code) or ``.safetensors``;
* timm / DeiT (``patch_embed.proj``, ``blocks.N.attn.qkv``, ``head``...);
* Hugging Face ``ViTForImageClassification`` (``vit.encoder.layer.N.attention.attention.query``...),
  with or without ``config.json`` / ``preprocessor_config.json`` beside it;
* the project's own format: safetensors in torchvision layout with metadata describing the
  architecture, labels and preprocessing (what fine-tuning writes).

The architecture is inferred from tensor shapes; every tensor is then checked against the module it
will be loaded into, so that a mismatched file is refused with one line naming the key and shapes.
"""

from __future__ import annotations

import json
import math
import os
import pickle
import re
import tempfile
from dataclasses import asdict
from functools import partial
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn
from torchvision.models import VisionTransformer

from .files import file_mode
from .types import IMAGENET_MEAN, IMAGENET_STD, Architecture, ModelCard, ModelError, Preprocess

FORMAT_KEY = "vit_desktop.format"
FORMAT_VERSION = "1"
_META_PREFIX = "vit_desktop."
_CORE_META = {"format", "name", "description", "arch", "labels", "preprocess"}

WEIGHT_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin", ".ckpt")
# Preferred file names inside a model folder, best first (Hugging Face conventions, then ours).
_FOLDER_FILES = ("model.safetensors", "pytorch_model.bin", "model.pth", "weights.safetensors")

# torchvision's family uses 64-wide heads except ViT-H (80-wide): (hidden, depth) -> heads.
_KNOWN_HEADS = {(1280, 32): 16}


def imagenet_categories() -> tuple[str, ...]:
    """torchvision's 1000 ImageNet class names (shipped in its code: no download)."""
    from torchvision.models import ViT_B_16_Weights

    return tuple(ViT_B_16_Weights.IMAGENET1K_V1.meta["categories"])


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


# --------------------------------------------------------------------------------------------
# Reading files


def _shape(t: torch.Tensor) -> str:
    return "(" + ", ".join(str(s) for s in t.shape) + ")"


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
            raise ModelError(f"{path.name}: not a valid safetensors file ({_one_line(exc)})") from None
        return tensors, metadata
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        first = _one_line(exc).split(". ")[0]
        raise ModelError(
            f"{path.name}: refused: it holds objects other than tensors, which could run code ({first})"
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError, KeyError) as exc:
        raise ModelError(f"{path.name}: truncated or not a PyTorch weights file ({_one_line(exc)})") from None
    return _unwrap(obj, path), {}


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:200] if text else type(exc).__name__


# --------------------------------------------------------------------------------------------
# Key layouts -> torchvision


def _strip_prefixes(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Remove wrappers' prefixes (DataParallel's ``module.``, Lightning's ``model.``)."""
    for prefix in ("module.", "model.", "_orig_mod."):
        if sd and all(k.startswith(prefix) for k in sd):
            sd = {k[len(prefix) :]: v for k, v in sd.items()}
    return sd


def detect_layout(sd: Mapping[str, torch.Tensor]) -> str:
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
    if "dist_token" in sd:
        raise ModelError("distilled DeiT (dist_token) is not supported: use the non-distilled checkpoint")
    if "fc_norm.weight" in sd:
        raise ModelError("unsupported timm variant: average-pooled (fc_norm) instead of a class token")
    c = _Converter(sd)
    c.take("cls_token", "class_token")
    c.take("pos_embed", "encoder.pos_embedding")
    c.take("patch_embed.proj.weight", "conv_proj.weight")
    c.take("patch_embed.proj.bias", "conv_proj.bias")
    dim = c.out["conv_proj.weight"].shape[0]
    for i in _layer_indices(sd, r"blocks\.(\d+)\."):
        s, d = f"blocks.{i}.", f"encoder.layers.encoder_layer_{i}."
        c.take(s + "norm1.weight", d + "ln_1.weight")
        c.take(s + "norm1.bias", d + "ln_1.bias")
        c.take(s + "attn.qkv.weight", d + "self_attention.in_proj_weight")
        if s + "attn.qkv.bias" in c.src:
            c.take(s + "attn.qkv.bias", d + "self_attention.in_proj_bias")
        else:  # qkv_bias=False models
            c.out[d + "self_attention.in_proj_bias"] = torch.zeros(3 * dim)
        c.take(s + "attn.proj.weight", d + "self_attention.out_proj.weight")
        c.take(s + "attn.proj.bias", d + "self_attention.out_proj.bias")
        c.take(s + "norm2.weight", d + "ln_2.weight")
        c.take(s + "norm2.bias", d + "ln_2.bias")
        c.take(s + "mlp.fc1.weight", d + "mlp.0.weight")
        c.take(s + "mlp.fc1.bias", d + "mlp.0.bias")
        c.take(s + "mlp.fc2.weight", d + "mlp.3.weight")
        c.take(s + "mlp.fc2.bias", d + "mlp.3.bias")
    c.take("norm.weight", "encoder.ln.weight")
    c.take("norm.bias", "encoder.ln.bias")
    if "pre_logits.fc.weight" in c.src:
        c.take("pre_logits.fc.weight", "heads.pre_logits.weight")
        c.take("pre_logits.fc.bias", "heads.pre_logits.bias")
    c.take("head.weight", "heads.head.weight")
    c.take("head.bias", "heads.head.bias")
    return c.finish("timm")


def _from_huggingface(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    key = next(k for k in sd if k.endswith("embeddings.patch_embeddings.projection.weight"))
    p = key[: -len("embeddings.patch_embeddings.projection.weight")]  # "vit." or ""
    if "classifier.weight" not in sd:
        raise ModelError(
            "Hugging Face ViT without a classification head (classifier.weight): "
            "use a ViTForImageClassification checkpoint"
        )
    c = _Converter(sd)
    c.take(p + "embeddings.cls_token", "class_token")
    c.take(p + "embeddings.position_embeddings", "encoder.pos_embedding")
    c.take(p + "embeddings.patch_embeddings.projection.weight", "conv_proj.weight")
    c.take(p + "embeddings.patch_embeddings.projection.bias", "conv_proj.bias")
    c.drop(re.escape(p) + r"embeddings\.mask_token")
    c.drop(re.escape(p) + r"pooler\..*")  # ViTForImageClassification ignores the pooler
    dim = c.out["conv_proj.weight"].shape[0]
    for i in _layer_indices(sd, re.escape(p) + r"encoder\.layer\.(\d+)\."):
        s, d = f"{p}encoder.layer.{i}.", f"encoder.layers.encoder_layer_{i}."
        c.take(s + "layernorm_before.weight", d + "ln_1.weight")
        c.take(s + "layernorm_before.bias", d + "ln_1.bias")
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
        c.take(s + "attention.output.dense.weight", d + "self_attention.out_proj.weight")
        c.take(s + "attention.output.dense.bias", d + "self_attention.out_proj.bias")
        c.take(s + "layernorm_after.weight", d + "ln_2.weight")
        c.take(s + "layernorm_after.bias", d + "ln_2.bias")
        c.take(s + "intermediate.dense.weight", d + "mlp.0.weight")
        c.take(s + "intermediate.dense.bias", d + "mlp.0.bias")
        c.take(s + "output.dense.weight", d + "mlp.3.weight")
        c.take(s + "output.dense.bias", d + "mlp.3.bias")
    c.take(p + "layernorm.weight", "encoder.ln.weight")
    c.take(p + "layernorm.bias", "encoder.ln.bias")
    c.take("classifier.weight", "heads.head.weight")
    c.take("classifier.bias", "heads.head.bias")
    return c.finish("Hugging Face")


def to_torchvision(sd: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], str]:
    sd = _strip_prefixes(sd)
    layout = detect_layout(sd)
    if layout == "timm":
        return _from_timm(sd), layout
    if layout == "huggingface":
        return _from_huggingface(sd), layout
    return _torchvision_names(sd), layout


# --------------------------------------------------------------------------------------------
# Architecture inference


def infer_architecture(
    sd: Mapping[str, torch.Tensor], *, num_heads: int | None = None, layer_norm_eps: float = 1e-6
) -> Architecture:
    """Read the shape of a ViT off its torchvision-named tensors."""
    proj = sd.get("conv_proj.weight")
    if proj is None or proj.ndim != 4:
        raise ModelError("conv_proj.weight must be a 4-d convolution weight")
    hidden, channels, ph, pw = proj.shape
    if ph != pw:
        raise ModelError(f"patch embedding {_shape(proj)} is not square")
    if channels != 3:
        raise ModelError(f"patch embedding expects {channels} input channels; only 3 (RGB) is supported")
    pos = sd.get("encoder.pos_embedding")
    if pos is None or pos.ndim != 3 or pos.shape[0] != 1:
        raise ModelError("encoder.pos_embedding must have shape (1, tokens, hidden)")
    patches = pos.shape[1] - 1
    grid = math.isqrt(patches)
    if grid * grid != patches:
        raise ModelError(
            f"position embedding {_shape(pos)}: {patches} patch tokens do not form a square grid "
            "(distilled or register-token models are not supported)"
        )
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
    if hidden % num_heads:
        raise ModelError(f"hidden size {hidden} is not divisible by {num_heads} attention heads")
    return Architecture(
        image_size=grid * int(ph),
        patch_size=int(ph),
        num_layers=depth,
        num_heads=int(num_heads),
        hidden_dim=int(hidden),
        mlp_dim=int(mlp.shape[0]),
        num_classes=int(head.shape[0]),
        representation_size=int(pre.shape[0]) if pre is not None else None,
        layer_norm_eps=layer_norm_eps,
    )


def load_into(module: nn.Module, sd: Mapping[str, torch.Tensor]) -> None:
    """Give ``module`` the tensors of ``sd`` after checking every key and shape, with a one-line error."""
    expected = module.state_dict()
    for key, ref in expected.items():
        got = sd.get(key)
        if got is None:
            raise ModelError(f"missing key {key}")
        if tuple(got.shape) != tuple(ref.shape):
            raise ModelError(f"{key} has shape {_shape(got)}, expected {_shape(ref)}")
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


# --------------------------------------------------------------------------------------------
# Labels and preprocessing


def default_labels(num_classes: int) -> tuple[str, ...]:
    if num_classes == 1000:
        return imagenet_categories()
    return tuple(f"class_{i}" for i in range(num_classes))


def _labels_from_config(config: Mapping[str, Any] | None, num_classes: int) -> tuple[str, ...] | None:
    if not config or not isinstance(config.get("id2label"), Mapping):
        return None
    try:
        id2label = {int(k): str(v) for k, v in config["id2label"].items()}
    except (TypeError, ValueError):
        return None
    if sorted(id2label) != list(range(num_classes)):
        return None
    labels = tuple(id2label[i] for i in range(num_classes))
    # Configs without real labels carry LABEL_0...; ImageNet's names are better then.
    if num_classes == 1000 and all(lbl == f"LABEL_{i}" for i, lbl in enumerate(labels)):
        return None
    return labels


def _default_preprocess(image_size: int, layout: str) -> Preprocess:
    # torchvision trains with bilinear resize 256 -> crop 224; timm/DeiT with bicubic and crop_pct 0.875.
    resize = int(round(image_size / 0.875))
    interp = "bilinear" if layout == "torchvision" else "bicubic"
    return Preprocess(crop_size=image_size, resize_size=resize, interpolation=interp)


_HF_RESAMPLE = {0: "nearest", 2: "bilinear", 3: "bicubic"}


def _preprocess_from_hf(pre: Mapping[str, Any] | None, image_size: int) -> Preprocess:
    if not pre:
        # ViTImageProcessor defaults: resize to the model size, mean/std 0.5.
        return Preprocess(image_size, image_size, "bilinear", (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    mean = tuple(float(x) for x in pre.get("image_mean", (0.5, 0.5, 0.5)))
    std = tuple(float(x) for x in pre.get("image_std", (0.5, 0.5, 0.5)))
    interp = _HF_RESAMPLE.get(int(pre.get("resample", 2)), "bilinear")
    return Preprocess(image_size, image_size, interp, mean, std)


def preprocess_from_json(text: str) -> Preprocess:
    d = json.loads(text)
    return Preprocess(
        crop_size=int(d["crop_size"]),
        resize_size=int(d["resize_size"]),
        interpolation=str(d.get("interpolation", "bilinear")),
        mean=tuple(float(x) for x in d.get("mean", IMAGENET_MEAN)),
        std=tuple(float(x) for x in d.get("std", IMAGENET_STD)),
        color_mode=str(d.get("color_mode", "RGB")),
        invert=bool(d.get("invert", False)),
    )


def _check_preprocess(pp: Preprocess) -> None:
    from .types import INTERPOLATIONS

    if pp.interpolation not in INTERPOLATIONS:
        raise ModelError(f"unknown interpolation {pp.interpolation!r} in metadata")
    if pp.color_mode not in ("RGB", "L"):
        raise ModelError(f"unknown colour mode {pp.color_mode!r} in metadata")
    if len(pp.mean) != 3 or len(pp.std) != 3 or min(pp.std) <= 0:
        raise ModelError("preprocessing mean/std must have three values and std > 0")
    if pp.resize_size < pp.crop_size:
        raise ModelError(f"resize size {pp.resize_size} is smaller than crop size {pp.crop_size}")


# --------------------------------------------------------------------------------------------
# Public entry points


def load_checkpoint(path: str | os.PathLike[str]) -> tuple[VisionTransformer, ModelCard]:
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
    try:
        raw, meta = read_weights(weights)
        sd, layout = to_torchvision(raw)
        ours = meta.get(FORMAT_KEY) is not None
        if ours:
            if meta[FORMAT_KEY] != FORMAT_VERSION:
                raise ModelError(f"made by a newer vit-desktop (format {meta[FORMAT_KEY]}); please update")
            arch = Architecture(**json.loads(meta[_META_PREFIX + "arch"]))
        else:
            heads = None
            eps = 1e-6
            if layout == "huggingface" and config:
                heads = config.get("num_attention_heads")
                eps = float(config.get("layer_norm_eps", 1e-12))
            arch = infer_architecture(sd, num_heads=heads, layer_norm_eps=eps)
        # Built on the meta device: no random initialisation only to overwrite it (a second
        # for ViT-B), and no second copy of the weights in memory.
        with torch.device("meta"):
            module = build_module(arch)
        load_into(module, sd)
        if ours:
            labels = tuple(json.loads(meta[_META_PREFIX + "labels"]))
            pp = preprocess_from_json(meta[_META_PREFIX + "preprocess"])
            name = meta.get(_META_PREFIX + "name") or weights.stem
            description = meta.get(_META_PREFIX + "description", "")
            extra = tuple(
                (k[len(_META_PREFIX) :], v)
                for k, v in sorted(meta.items())
                if k.startswith(_META_PREFIX) and k[len(_META_PREFIX) :] not in _CORE_META
            )
        else:
            labels = _labels_from_config(config, arch.num_classes) or default_labels(arch.num_classes)
            if layout == "huggingface":
                pp = _preprocess_from_hf(pre_cfg, arch.image_size)
            else:
                pp = _default_preprocess(arch.image_size, layout)
            name = (path if path.is_dir() else weights).stem
            description = f"{layout} checkpoint"
            extra = ()
    except ModelError as exc:
        msg = str(exc)
        raise ModelError(msg if msg.startswith(weights.name) else f"{weights.name}: {msg}") from None
    except (KeyError, ValueError, TypeError) as exc:
        raise ModelError(f"{weights.name}: malformed metadata ({_one_line(exc)})") from None
    if len(labels) != arch.num_classes:
        raise ModelError(f"{weights.name}: {len(labels)} labels for a {arch.num_classes}-class head")
    _check_preprocess(pp)
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
    )
    return module, card


def card_metadata(card: ModelCard, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The safetensors metadata that describes ``card`` in the project format."""
    meta = {
        FORMAT_KEY: FORMAT_VERSION,
        _META_PREFIX + "name": card.name,
        _META_PREFIX + "description": card.description,
        _META_PREFIX + "arch": json.dumps(asdict(card.arch)),
        _META_PREFIX + "labels": json.dumps(list(card.labels)),
        _META_PREFIX + "preprocess": json.dumps(asdict(card.preprocess)),
    }
    for key, value in (*card.extra, *(extra or {}).items()):
        if key in _CORE_META or key == "format":
            raise ValueError(f"metadata key {key!r} is reserved")
        meta[_META_PREFIX + key] = str(value)
    return meta


def save_model(
    path: str | os.PathLike[str],
    module: nn.Module,
    card: ModelCard,
    *,
    extra: Mapping[str, str] | None = None,
    overwrite: bool = False,
) -> Path:
    """Write ``module`` in the project format: safetensors + metadata, atomically.

    Raises FileExistsError when ``path`` exists and ``overwrite`` is False: a user's file is never
    replaced without asking.
    """
    from safetensors.torch import save_file

    path = Path(path)
    if path.suffix.lower() != ".safetensors":
        raise ValueError(f"{path.name}: model files are saved as .safetensors")
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} already exists")
    arch = architecture_of(module)  # type: ignore[arg-type]
    if arch != card.arch:
        raise ValueError("the card's architecture does not match the module")
    # Plain contiguous fp32 CPU copies: safetensors refuses shared or strided storage.
    tensors = {k: v.detach().to("cpu", torch.float32).contiguous().clone() for k, v in module.state_dict().items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        os.chmod(tmp, file_mode(path))
        save_file(tensors, tmp, metadata=card_metadata(card, extra))
        if path.exists() and not overwrite:  # appeared while we were writing
            raise FileExistsError(f"{path} already exists")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
