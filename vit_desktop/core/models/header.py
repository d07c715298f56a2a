"""How a model file says photos are prepared, read from its header and configs without torch.

With it, a run decodes its first photos while torch is imported even for a model the library has
not seen yet (:mod:`vit_desktop.core.inference.decoding`). It is a hint, read the way
:func:`~vit_desktop.core.models.checkpoints.load_checkpoint` chooses the preprocessing (the project's
metadata; a Hugging Face layout's processor config; a timm config; else the layout's library
defaults, at the size the patch and position embeddings give): the loaded model's card decides, and
photos decoded for another preprocessing are decoded again. Only safetensors files have a header
to read; anything else, or anything odd, gives None.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

from vit_desktop.core.types import Preprocess

from .hub_configs import default_preprocess, hf_preprocess, is_timm_config, timm_config, timm_preprocess
from .layouts import detect_layout, strip_prefixes
from .model_file import META_PREFIX, is_project_file, preprocess_from_json

#: Per layout: the patch embedding, the position embedding, the class token and the other tokens
#: before the patches (their names before conversion; Hugging Face's under a model prefix).
_STEMS = {
    "torchvision": ("conv_proj.weight", "encoder.pos_embedding", "class_token", ("reg_token",)),
    "timm": ("patch_embed.proj.weight", "pos_embed", "cls_token", ("reg_token",)),
    "huggingface": ("embeddings.patch_embeddings.projection.weight", "embeddings.position_embeddings",
                    "embeddings.cls_token", ("embeddings.distillation_token",)),
}
#: A config larger than this is not read for a hint (the load reads it, and says what is wrong).
_CONFIG_BYTES = 16 << 20


def preprocess_hint(source: str | os.PathLike[str]) -> Preprocess | None:
    """The preprocessing ``source`` (a safetensors file, or a folder with ``model.safetensors``)
    will most likely have once loaded; None where only loading it can tell."""
    try:
        return _hint(Path(source).expanduser())
    except Exception:  # noqa: BLE001 - only a hint: the load says what is wrong with the file
        return None


def _hint(path: Path) -> Preprocess | None:
    folder, weights = (path, path / "model.safetensors") if path.is_dir() else (path.parent, path)
    if weights.suffix.lower() != ".safetensors" or not weights.is_file():
        return None
    from safetensors import safe_open

    with safe_open(str(weights), framework="np") as f:
        meta = dict(f.metadata() or {})
        shapes = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    if is_project_file(meta):
        return preprocess_from_json(meta[META_PREFIX + "preprocess"])
    shapes = strip_prefixes(shapes)
    layout = detect_layout(shapes)
    config = _json(folder / "config.json")
    if layout == "timm" and is_timm_config(config):
        assert config is not None
        return timm_preprocess(timm_config(config))
    size = _image_size(shapes, layout)
    if size is None:
        return None
    if layout == "huggingface":
        return hf_preprocess(_json(folder / "preprocessor_config.json"), config, size)
    return default_preprocess(size, layout)


def _image_size(shapes: dict[str, tuple[int, ...]], layout: str) -> int | None:
    """The input size the patch embedding and the position embedding's rows give."""
    patch_name, pos_name, class_name, others = _STEMS[layout]
    prefix = ""
    if layout == "huggingface":
        key = next(k for k in shapes if k.endswith(patch_name))
        prefix = key[: -len(patch_name)]
    patch, pos = shapes.get(prefix + patch_name), shapes.get(prefix + pos_name)
    if patch is None or pos is None or len(patch) != 4 or len(pos) != 3:
        return None
    tokens = int(prefix + class_name in shapes)
    tokens += sum(shape[1] for name in others if len(shape := shapes.get(prefix + name, ())) == 3)
    rows = pos[1]
    # The position embedding covers the tokens before the patches too, or (timm's no_embed_class) only the patches.
    for patches in (rows - tokens, rows):
        if patches > 0 and math.isqrt(patches) ** 2 == patches:
            return math.isqrt(patches) * patch[2]
    return None


def _json(path: Path) -> dict[str, Any] | None:
    if not path.is_file() or path.stat().st_size > _CONFIG_BYTES:
        return None
    value = json.loads(path.read_text(encoding="utf-8"))
    return value if isinstance(value, dict) else None


__all__ = ["preprocess_hint"]
