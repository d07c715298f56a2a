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

A file is data from anywhere: whatever is wrong with it (a FIFO given as the model, a zip bomb,
bytes flipped anywhere, a config that declares absurd sizes) ends as one :class:`ModelError` line,
and everything a file declares passes :func:`~vit_desktop.core.models.limits.check_model` before a
module is built.
"""

from __future__ import annotations

import json
import os
import pickle
import stat
import zipfile
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from vit_desktop.core.errors import ModelError, caught_warnings, first_line, one_line, shown
from vit_desktop.core.types import ModelCard, OpenSetRule
from vit_desktop.core.units import format_bytes

from .hub_configs import (
    default_preprocess,
    hf_labels,
    hf_preprocess,
    is_timm_config,
    timm_config,
    timm_preprocess,
)
from .layouts import default_labels, infer_architecture, shape_text, to_torchvision
from .limits import as_float, as_int, check_architecture, check_model
from .model_file import architecture_from_metadata, describe, head_from_metadata, is_project_file, open_set_from_file
from .vit import ViT, at_resolution, build_module

WEIGHT_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin", ".ckpt")
#: A ``.pth`` is a zip archive whose entries torch stores uncompressed; one whose entries unpack to
#: more than this many times the file's size is refused as a zip bomb (a 2.9 MB file held a 3 GB tensor).
MAX_ZIP_EXPANSION = 4
#: Config files beside a checkpoint are a few kilobytes (ImageNet-21k's labels: about 1 MB).
MAX_CONFIG_BYTES = 16 << 20
#: Longest message a file's content can make (key names come from the file).
_MESSAGE_LIMIT = 300
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


def _regular_size(path: Path) -> int:
    """The size of ``path`` when it is a regular file; ModelError otherwise, before anything opens it
    (a FIFO blocks its reader, in safetensors' case holding the GIL: the whole window froze)."""
    try:
        st = path.stat()
    except OSError as exc:
        raise ModelError(f"{path.name}: cannot be read ({exc.strerror or type(exc).__name__})") from None
    if stat.S_ISDIR(st.st_mode):
        raise ModelError(f"{path.name}: is a folder")
    if not stat.S_ISREG(st.st_mode):
        raise ModelError(f"{path.name}: not a regular file (a FIFO, socket or device): not opened")
    return st.st_size


def _read_json(path: Path) -> dict[str, Any] | None:
    """A JSON object beside a checkpoint, None when there is no such file."""
    if not path.exists():
        return None
    size = _regular_size(path)
    if size > MAX_CONFIG_BYTES:
        raise ModelError(f"{path.name}: {format_bytes(size)} is too large for a config file (at most "
                         f"{format_bytes(MAX_CONFIG_BYTES)})")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError) as exc:  # RecursionError: nested thousands deep
        raise ModelError(f"{path}: unreadable JSON ({first_line(exc, 80)})") from None
    if not isinstance(data, dict):
        raise ModelError(f"{path.name}: not a JSON object but {type(data).__name__ if data is not None else 'null'}")
    return data


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


def _check_zip(path: Path, size: int) -> None:
    """Refuse a ``.pth`` whose zip entries unpack to far more than the file holds (torch would
    allocate and inflate them all), before torch reads it."""
    with path.open("rb") as f:
        if f.read(4) != b"PK\x03\x04":  # torch's own test for its zip format
            return  # the legacy format: a pickle stream whose storages are read from the file itself
    try:
        with zipfile.ZipFile(path) as archive:
            declared = sum(info.file_size for info in archive.infolist())
    except Exception as exc:  # noqa: BLE001 - a damaged archive raises struct, Unicode, zlib errors...
        raise ModelError(f"{path.name}: truncated or not a PyTorch weights file ({one_line(exc, 120)})") from None
    if declared > MAX_ZIP_EXPANSION * size + (1 << 20):
        raise ModelError(f"{path.name}: its entries unpack to {format_bytes(declared)} from a {format_bytes(size)} "
                         "file: refused as a zip bomb")


def read_weights(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Tensors and string metadata of one weights file; refuses anything that is not plain data, with
    one line, whatever its bytes."""
    size = _regular_size(path)
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        from safetensors import safe_open

        try:
            with safe_open(str(path), framework="pt", device="cpu") as f:
                metadata = dict(f.metadata() or {})
                tensors = {k: f.get_tensor(k) for k in f.keys()}
        except Exception as exc:  # noqa: BLE001 - SafetensorError, and whatever a damaged header makes of the rest
            raise ModelError(f"{path.name}: not a valid safetensors file ({first_line(exc, 120)})") from None
        return tensors, metadata
    _check_zip(path, size)
    try:
        # The unpickler warns about what it finds in a damaged file; the answer is this one line.
        with caught_warnings():
            obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        first = first_line(exc).split(". ")[0]
        raise ModelError(
            f"{path.name}: refused: it holds objects other than tensors, which could run code ({first})"
        ) from None
    except Exception as exc:  # noqa: BLE001 - flipped bytes make the unpickler raise IndexError, AttributeError...
        raise ModelError(f"{path.name}: truncated or not a PyTorch weights file ({one_line(exc, 120)})") from None
    return _unwrap(obj, path), {}


#: Elements checked for NaN at once (64 MB in fp32).
_CHECK_ELEMENTS = 1 << 24


def _not_finite(sd: Mapping[str, torch.Tensor]) -> str | None:
    """The first tensor holding a NaN or an infinity, if any.

    Checked in a few large passes rather than one per tensor: each pass is a parallel region, and
    while photos are decoded during a load (the library knew the model) each region waits for a core
    (DeiT-Tiny's 152 tensors one by one: 0.55 s then, against 10 ms alone)."""
    group: list[str] = []
    size = 0
    for key in [*sd, None]:
        if key is not None and size + sd[key].numel() <= _CHECK_ELEMENTS:
            group.append(key)
            size += sd[key].numel()
            continue
        if group and not torch.isfinite(torch.cat([sd[k].detach().reshape(-1).float() for k in group])).all():
            return next(k for k in group if not torch.isfinite(sd[k]).all())
        group, size = ([key], sd[key].numel()) if key is not None else ([], 0)
    return None


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
    bad = _not_finite(sd)
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
                if config.get("num_attention_heads") is not None:
                    heads = as_int(config["num_attention_heads"], "config.json: num_attention_heads")
                eps = as_float(config.get("layer_norm_eps", 1e-12), "config.json: layer_norm_eps")
            if layout == "timm" and is_timm_config(config):
                assert config is not None
                timm_cfg = timm_config(config)
                pool = timm_cfg.global_pool if timm_cfg.global_pool in ("token", "avg") else ""
                heads = timm_cfg.num_heads
                if timm_cfg.global_pool not in ("", "token", "avg"):
                    raise ModelError(f"unsupported pooling {shown(timm_cfg.global_pool)} (class token or average only)")
            arch = infer_architecture(sd, num_heads=heads, layer_norm_eps=eps, pool=pool)
        # The weights' own shape first: the class count sizes the default labels made next.
        check_architecture(arch)
        size = arch.image_size
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
                # timm builds the model at the config's size and resamples the position embedding.
                size = timm_cfg.input_size[0]
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
        # Everything the files declared, checked before anything is built or allocated.
        check_model(replace(arch, image_size=size), head, pp, labels)
        # Built on the meta device: no random initialisation only to overwrite it (a second
        # for ViT-B), and no second copy of the weights in memory.
        with torch.device("meta"):
            module = build_module(arch, head)
        load_into(module, sd)
        if rule is not None:
            _check_rule(module, rule)
        if size != arch.image_size:
            module = at_resolution(module, size)
            arch = module.arch
    except ModelError as exc:
        msg = first_line(exc, _MESSAGE_LIMIT)
        raise ModelError(msg if msg.startswith(weights.name) else f"{weights.name}: {msg}") from None
    except (KeyError, ValueError, TypeError) as exc:
        raise ModelError(f"{weights.name}: malformed metadata ({first_line(exc, 120)})") from None
    except Exception as exc:  # noqa: BLE001 - a file's bytes must never end in a traceback
        raise ModelError(f"{weights.name}: cannot be used ({one_line(exc, 120)})") from None
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
