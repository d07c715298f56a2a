"""What the files beside a checkpoint say: Hugging Face processor and model configs, timm hub configs.

Each library preprocesses photos its own way, and a model is only as good as the input it was
trained on, so every rule here is that library's: which keys exist, their defaults per processor
class, how a size is read, how a centre crop is rounded. The result is a
:class:`~vit_desktop.core.types.Preprocess` that :mod:`vit_desktop.core.models.preprocess` runs.

Hugging Face (``preprocessor_config.json``, the PIL processors step for step):

* ``size`` ``{"height", "width"}``: resize to that square, aspect not kept; ``{"shortest_edge"}``:
  the shorter side; a bare number is a square for ViT, DeiT and BEiT and a shortest edge for the
  others (their ``default_to_square``);
* ``do_center_crop`` + ``crop_size``: a centre crop, offsets ``(size - crop) // 2``;
* ConvNeXT's ``crop_pct``: shorter side ``int(shortest_edge / crop_pct)`` then crop, or under 384
  a square resize;
* ``do_resize``, ``do_rescale`` + ``rescale_factor``, ``do_normalize`` + ``image_mean``/``image_std``,
  ``resample`` (PIL's codes); absent keys take the processor class's defaults.

timm (``config.json`` with ``architecture`` and ``pretrained_cfg``): ``input_size``,
``interpolation`` (bicubic when absent), ``crop_pct`` (0.875), ``crop_mode`` center / squash /
border, ``mean``/``std``; the resize is to ``floor(size / crop_pct)`` and the crop rounds half to
even, as torchvision's ``CenterCrop`` does.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from vit_desktop.core.errors import ModelError, shown
from vit_desktop.core.types import IMAGENET_MEAN, IMAGENET_STD, Preprocess

from .limits import as_crop_pct, as_float, as_int, as_size, labels_by_id, labels_from

_HF = "preprocessor_config.json"

_HALF = (0.5, 0.5, 0.5)
_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

#: PIL's resampling codes, as processors store them.
HF_RESAMPLE = {0: "nearest", 1: "lanczos", 2: "bilinear", 3: "bicubic", 4: "box", 5: "hamming"}


@dataclass(frozen=True)
class _ProcessorDefaults:
    """A Hugging Face image processor class's defaults, for the keys its file leaves out."""

    size: Mapping[str, int] | int
    crop_size: Mapping[str, int] | None
    do_center_crop: bool
    resample: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    default_to_square: bool
    crop_pct: float | None = None  # ConvNeXT's resize rule


_PROCESSORS: dict[str, _ProcessorDefaults] = {
    "ViT": _ProcessorDefaults({"height": 224, "width": 224}, None, False, 2, _HALF, _HALF, True),
    "DeiT": _ProcessorDefaults({"height": 256, "width": 256}, {"height": 224, "width": 224}, True, 3, _HALF, _HALF,
                               True),
    "Beit": _ProcessorDefaults({"height": 224, "width": 224}, {"height": 224, "width": 224}, False, 3, _HALF, _HALF,
                               True),
    "ConvNext": _ProcessorDefaults({"shortest_edge": 384}, None, False, 3, _HALF, _HALF, False, 224 / 256),
    "CLIP": _ProcessorDefaults({"shortest_edge": 224}, {"height": 224, "width": 224}, True, 3, _CLIP_MEAN,
                               _CLIP_STD, False),
    "Bit": _ProcessorDefaults({"shortest_edge": 224}, {"height": 224, "width": 224}, True, 3, _CLIP_MEAN,
                              _CLIP_STD, False),
}
# config.json's model_type -> processor, for folders whose preprocessor file names no class.
_MODEL_TYPES = {"vit": "ViT", "deit": "DeiT", "beit": "Beit", "data2vec-vision": "Beit", "dinov2": "Bit"}


def _processor_name(pre: Mapping[str, Any], config: Mapping[str, Any] | None) -> str | None:
    for key, suffix in (("image_processor_type", "ImageProcessor"), ("feature_extractor_type", "FeatureExtractor")):
        name = pre.get(key)
        if isinstance(name, str) and name:
            for tail in ("Fast", "Pil"):  # transformers' fast / PIL backends share one file format
                name = name.removesuffix(tail)
            return name.removesuffix(suffix)
    model_type = (config or {}).get("model_type")
    return _MODEL_TYPES.get(str(model_type)) if model_type else None


def _value(pre: Mapping[str, Any], key: str, default: Any) -> Any:
    """A key's value; absent -> the class default. A present null means "not set" (off)."""
    return pre[key] if key in pre else default


def _side(size: Any, what: str, *, square: bool) -> tuple[str, int]:
    """("squash", side) for a height/width size, ("shorter", side) for a shortest edge."""
    if isinstance(size, bool) or size is None:
        raise ModelError(f"{_HF}: {what} is missing")
    if isinstance(size, (int, float)):
        return ("squash" if square else "shorter", as_size(size, f"{_HF}: {what}"))
    if isinstance(size, Sequence) and not isinstance(size, str) and len(size) == 2:
        size = {"height": size[0], "width": size[1]}
    if isinstance(size, Mapping):
        if set(size) == {"height", "width"}:
            h, w = as_size(size["height"], f"{_HF}: {what} height"), as_size(size["width"], f"{_HF}: {what} width")
            if h != w:
                raise ModelError(f"{_HF}: {what} {h}x{w} is not square; only square inputs are supported")
            return ("squash", h)
        if set(size) == {"shortest_edge"}:
            return ("shorter", as_size(size["shortest_edge"], f"{_HF}: {what} shortest_edge"))
    raise ModelError(f"{_HF}: unsupported {what} {shown(size)} (expected height and width, or shortest_edge)")


def _floats(values: Any, what: str) -> tuple[float, ...]:
    """Three finite numbers (a mean or std per channel) from a config."""
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence) or len(values) != 3:
        raise ModelError(f"{what} {shown(values)}: three numbers (RGB) expected")
    return tuple(as_float(x, what) for x in values)


def hf_preprocess(pre: Mapping[str, Any] | None, config: Mapping[str, Any] | None, image_size: int) -> Preprocess:
    """The Preprocess of a Hugging Face folder, as its image processor would run."""
    if pre is None:
        # No processor file: ViTImageProcessor's defaults at the model's size.
        return Preprocess(image_size, image_size, "bilinear", _HALF, _HALF, resize_mode="squash", crop_rounding="floor")
    name = _processor_name(pre, config)
    d = _PROCESSORS.get(name or "")
    if d is None:
        # Any other processor: its file must say what it does; a bare-number size is ambiguous.
        d = _ProcessorDefaults({"height": image_size, "width": image_size}, None, False, 2, _HALF, _HALF, True)
        if isinstance(pre.get("size"), (int, float)):
            raise ModelError(f"preprocessor_config.json: image processor {name or '(unnamed)'} is not one this "
                             "program knows, and its size is a bare number (square or shortest edge?)")
    do_resize = _value(pre, "do_resize", True) is not False and _value(pre, "do_resize", True) is not None
    resample = _value(pre, "resample", d.resample)
    interpolation = HF_RESAMPLE.get(as_int(resample, f"{_HF}: resample") if resample is not None else 2)
    if interpolation is None:
        raise ModelError(f"{_HF}: unknown resample code {shown(resample)}")
    mode, side = _side(_value(pre, "size", d.size), "size", square=d.default_to_square)
    crop_pct = _value(pre, "crop_pct", d.crop_pct) if name == "ConvNext" else None
    if crop_pct is not None and do_resize:
        if mode != "shorter":
            raise ModelError("preprocessor_config.json: ConvNeXT processors need size {shortest_edge}")
        if side < 384:  # resize the shorter side to size / crop_pct, then crop size
            mode, resize, crop = "shorter", int(side / as_crop_pct(crop_pct, f"{_HF}: crop_pct")), side
        else:  # a square resize, no crop
            mode, resize, crop = "squash", side, side
    else:
        resize = side
        crop = side
        if _value(pre, "do_center_crop", d.do_center_crop):
            _, crop = _side(_value(pre, "crop_size", d.crop_size), "crop_size", square=True)
        elif mode == "shorter":
            raise ModelError("preprocessor_config.json: a shortest-edge resize without a centre crop gives inputs "
                             "of every shape; only square inputs are supported")
    if not do_resize:
        mode = "none"
    if crop != image_size:
        raise ModelError(f"preprocessor_config.json makes {crop}x{crop} inputs; the weights are for "
                         f"{image_size}x{image_size}")
    rescale = 1.0
    if _value(pre, "do_rescale", True):
        rescale = as_float(_value(pre, "rescale_factor", 1 / 255) or 1 / 255, f"{_HF}: rescale_factor")
    if _value(pre, "do_normalize", True):
        mean = _floats(_value(pre, "image_mean", d.mean) or d.mean, f"{_HF}: image_mean")
        std = _floats(_value(pre, "image_std", d.std) or d.std, f"{_HF}: image_std")
    else:
        mean, std = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)
    return Preprocess(crop_size=crop, resize_size=resize, interpolation=interpolation, mean=mean, std=std,
                      resize_mode=mode, crop_rounding="floor", rescale=rescale)


def hf_labels(config: Mapping[str, Any] | None, num_classes: int) -> tuple[str, ...] | None:
    """``id2label`` of a Hugging Face config.json, when it names every class (ModelError when
    those names are not labels: see :func:`~vit_desktop.core.models.limits.labels_from`)."""
    if not config or not isinstance(config.get("id2label"), Mapping):
        return None
    id2label = labels_by_id(config["id2label"], "config.json id2label")
    if id2label is None or sorted(id2label) != list(range(num_classes)):
        return None
    # Not unique: the Hub's ImageNet configs name two classes "crane", as their library allows.
    labels = labels_from([id2label[i] for i in range(num_classes)], "config.json id2label", unique=False)
    # Configs without real labels carry LABEL_0...; ImageNet's names are better then.
    if num_classes == 1000 and all(lbl == f"LABEL_{i}" for i, lbl in enumerate(labels)):
        return None
    return labels


# --------------------------------------------------------------------------------------------
# timm


@dataclass(frozen=True)
class TimmConfig:
    """What a timm hub ``config.json`` says about its model."""

    architecture: str
    #: The pretrained_cfg (or the whole dict in the legacy format).
    pretrained: Mapping[str, Any]
    num_classes: int | None
    labels: tuple[str, ...] | None
    #: "token", "avg", ... ("" when the file does not say).
    global_pool: str
    #: (height, width) the model runs at.
    input_size: tuple[int, int]
    #: Attention heads, when ``model_args`` says (the weights cannot).
    num_heads: int | None = None


def is_timm_config(config: Mapping[str, Any] | None) -> bool:
    return config is not None and isinstance(config.get("architecture"), str)


def timm_config(config: Mapping[str, Any]) -> TimmConfig:
    """Read a timm hub config.json (the current format, or the legacy single dictionary)."""
    cfg = config.get("pretrained_cfg")
    if not isinstance(cfg, Mapping):
        cfg = config  # legacy: the whole file is the pretrained cfg
    size = cfg.get("input_size") or (3, 224, 224)
    model_args = config.get("model_args") if isinstance(config.get("model_args"), Mapping) else {}
    img_size = model_args.get("img_size") if model_args else None
    if isinstance(img_size, int):
        h = w = as_size(img_size, "config.json: img_size")
    elif isinstance(img_size, Sequence) and not isinstance(img_size, str) and len(img_size) == 2:
        h, w = as_size(img_size[0], "config.json: img_size"), as_size(img_size[1], "config.json: img_size")
    elif isinstance(size, Sequence) and not isinstance(size, str) and len(size) >= 2:
        h, w = as_size(size[-2], "config.json: input_size"), as_size(size[-1], "config.json: input_size")
    else:
        raise ModelError(f"config.json: unreadable input_size {shown(size)}")
    if h != w:
        raise ModelError(f"config.json: input size {h}x{w} is not square; only square inputs are supported")
    labels = _timm_labels(config.get("label_names", cfg.get("label_names", config.get("labels"))))
    num = config.get("num_classes", cfg.get("num_classes"))
    pool = config.get("global_pool", (model_args or {}).get("global_pool", ""))
    heads = (model_args or {}).get("num_heads")
    return TimmConfig(str(config["architecture"]), cfg, as_int(num, "config.json: num_classes") if num is not None
                      else None, labels, str(pool or ""), (h, w), int(heads) if isinstance(heads, int) else None)


def _timm_labels(names: Any) -> tuple[str, ...] | None:
    if isinstance(names, Sequence) and not isinstance(names, str):
        return labels_from(names, "config.json labels", unique=False)
    if isinstance(names, Mapping):  # {"0": "cat", ...} where some ids are missing
        by_id = labels_by_id(names, "config.json labels")
        if by_id is not None and sorted(by_id) == list(range(len(by_id))):
            return labels_from([by_id[i] for i in range(len(by_id))], "config.json labels", unique=False)
    return None


def timm_preprocess(cfg: TimmConfig) -> Preprocess:
    """timm's eval transform (``transforms_imagenet_eval``) for this config."""
    pc = cfg.pretrained
    side = cfg.input_size[0]
    crop_pct = as_crop_pct(pc.get("crop_pct") or 0.875, "config.json: crop_pct")
    interpolation = pc.get("interpolation") or "bicubic"
    if interpolation not in HF_RESAMPLE.values():
        raise ModelError(f"config.json: unknown interpolation {shown(interpolation)}")
    crop_mode = pc.get("crop_mode") or "center"
    modes = {"center": "shorter", "squash": "squash", "border": "border"}
    mode = modes.get(crop_mode) if isinstance(crop_mode, str) else None
    if mode is None:
        raise ModelError(f"config.json: unknown crop_mode {shown(crop_mode)} (expected center, squash or border)")
    mean = _floats(pc.get("mean") or IMAGENET_MEAN, "config.json: mean")
    std = _floats(pc.get("std") or IMAGENET_STD, "config.json: std")
    return Preprocess(crop_size=side, resize_size=math.floor(side / crop_pct), interpolation=interpolation,
                      mean=mean, std=std, resize_mode=mode, crop_rounding="round")


def default_preprocess(image_size: int, layout: str) -> Preprocess:
    """A checkpoint with no config beside it: its library's usual evaluation transform.

    torchvision: bilinear, shorter side to 256 for a 224 crop (its weights' transforms); timm and
    DeiT: bicubic and crop_pct 0.875, ``floor(size / crop_pct)``; Hugging Face: ViTImageProcessor's
    defaults (a square resize, mean and std 0.5).
    """
    if layout == "huggingface":
        return hf_preprocess(None, None, image_size)
    if layout == "torchvision":
        return Preprocess(crop_size=image_size, resize_size=math.floor(image_size / 0.875), interpolation="bilinear")
    return Preprocess(crop_size=image_size, resize_size=math.floor(image_size / 0.875), interpolation="bicubic")


__all__ = [
    "HF_RESAMPLE",
    "TimmConfig",
    "default_preprocess",
    "hf_labels",
    "hf_preprocess",
    "is_timm_config",
    "timm_config",
    "timm_preprocess",
]
