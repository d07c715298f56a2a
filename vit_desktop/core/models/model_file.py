"""The project's own model format: safetensors in torchvision's key layout, described by metadata.

A file fine-tuning writes carries everything needed to use it again, as string metadata:
``vit_desktop.arch``, ``vit_desktop.labels`` and ``vit_desktop.preprocess`` (JSON), a name, a
description, and free-form extras (training settings, metrics, the base model). Readers of
other layouts live in :mod:`.checkpoints` and :mod:`.layouts`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, cast

import torch
from torch import nn

from vit_desktop.core.errors import ModelError
from vit_desktop.core.files import atomic_path
from vit_desktop.core.types import (
    CROP_ROUNDINGS,
    IMAGENET_MEAN,
    IMAGENET_STD,
    INTERPOLATIONS,
    RESIZE_MODES,
    Architecture,
    HeadSpec,
    ModelCard,
    OpenSetRule,
    Preprocess,
)

from .vit import ViT, architecture_of, head_spec_of

FORMAT_KEY = "vit_desktop.format"
FORMAT_VERSION = "1"
META_PREFIX = "vit_desktop."
META_NAME = META_PREFIX + "name"
META_DESCRIPTION = META_PREFIX + "description"
META_LABELS = META_PREFIX + "labels"
META_HEAD = META_PREFIX + "head"
#: The open-set rule the model was calibrated with (:class:`~vit_desktop.core.types.OpenSetRule`), JSON.
META_OPEN_SET = META_PREFIX + "open_set"
#: The tensor beside the weights that holds a ``nearest_photo`` rule's training features.
REFERENCES_KEY = "vit_desktop.open_set.references"
#: Keys every file has (and "head" and "open_set", which fine-tuned files have); the rest are extras.
_CORE_META = {"format", "name", "description", "arch", "labels", "preprocess", "head", "open_set"}


def is_project_file(meta: Mapping[str, str]) -> bool:
    return meta.get(FORMAT_KEY) is not None


def architecture_from_metadata(meta: Mapping[str, str]) -> Architecture:
    """The architecture a project file declares; ModelError when a newer program wrote it."""
    if meta[FORMAT_KEY] != FORMAT_VERSION:
        raise ModelError(f"made by a newer vit-desktop (format {meta[FORMAT_KEY]}); please update")
    return Architecture(**json.loads(meta[META_PREFIX + "arch"]))


def head_from_metadata(meta: Mapping[str, str]) -> HeadSpec | None:
    """The few-shot head a project file declares, or None for a linear head (every older file)."""
    text = meta.get(META_HEAD)
    return head_from_dict(json.loads(text)) if text else None


def open_set_from_file(meta: Mapping[str, str], tensors: dict[str, torch.Tensor]) -> OpenSetRule | None:
    """The rule a project file stores, or None (files from before rules were stored). Takes the
    rule's tensor out of ``tensors``: it is no weight of the module."""
    references = tensors.pop(REFERENCES_KEY, None)
    text = meta.get(META_OPEN_SET)
    if not text:
        return None
    refs = references.to(torch.float32).numpy() if references is not None else None
    return OpenSetRule.from_json_dict(json.loads(text), refs)


def head_from_dict(d: Mapping[str, Any]) -> HeadSpec:
    base = d.get("base")
    return HeadSpec(
        base_classes=int(d["base_classes"]),
        mass=bool(d.get("mass", False)),
        logprob=bool(d.get("logprob", False)),
        features=bool(d.get("features", False)),
        eps=float(d.get("eps", 1e-3)),
        method=str(d.get("method", "")),
        base=head_from_dict(base) if isinstance(base, Mapping) else None,
    )



@dataclass(frozen=True)
class FileDescription:
    """What a project file's metadata says beyond its architecture."""

    name: str
    description: str
    labels: tuple[str, ...]
    preprocess: Preprocess
    extra: tuple[tuple[str, str], ...]


def describe(meta: Mapping[str, str], default_name: str) -> FileDescription:
    """Labels, preprocessing, name and extras of a project file (KeyError/ValueError when malformed)."""
    extra = tuple(
        (k[len(META_PREFIX) :], v)
        for k, v in sorted(meta.items())
        if k.startswith(META_PREFIX) and k[len(META_PREFIX) :] not in _CORE_META
    )
    return FileDescription(
        name=meta.get(META_NAME) or default_name,
        description=meta.get(META_DESCRIPTION, ""),
        labels=tuple(json.loads(meta[META_LABELS])),
        preprocess=preprocess_from_json(meta[META_PREFIX + "preprocess"]),
        extra=extra,
    )


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
        resize_mode=str(d.get("resize_mode", "shorter")),
        crop_rounding=str(d.get("crop_rounding", "round")),
        rescale=float(d.get("rescale", 1.0 / 255.0)),
    )


def check_preprocess(pp: Preprocess) -> None:
    """ModelError when a preprocessing description cannot be followed."""
    if pp.interpolation not in INTERPOLATIONS:
        raise ModelError(f"unknown interpolation {pp.interpolation!r} in metadata")
    if pp.color_mode not in ("RGB", "L"):
        raise ModelError(f"unknown colour mode {pp.color_mode!r} in metadata")
    if len(pp.mean) != 3 or len(pp.std) != 3 or min(pp.std) <= 0:
        raise ModelError("preprocessing mean/std must have three values and std > 0")
    if pp.resize_mode not in RESIZE_MODES:
        raise ModelError(f"unknown resize mode {pp.resize_mode!r} (expected {', '.join(RESIZE_MODES)})")
    if pp.crop_rounding not in CROP_ROUNDINGS:
        raise ModelError(f"unknown crop rounding {pp.crop_rounding!r}")
    if pp.crop_size < 1 or pp.resize_size < 1 or not pp.rescale > 0:
        raise ModelError("preprocessing sizes and the rescale factor must be positive")


def card_metadata(card: ModelCard, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The safetensors metadata that describes ``card`` in the project format."""
    meta = {
        FORMAT_KEY: FORMAT_VERSION,
        META_NAME: card.name,
        META_DESCRIPTION: card.description,
        META_PREFIX + "arch": json.dumps(asdict(card.arch)),
        META_LABELS: json.dumps(list(card.labels)),
        META_PREFIX + "preprocess": json.dumps(asdict(card.preprocess)),
    }
    if card.head is not None:
        meta[META_HEAD] = json.dumps(asdict(card.head))
    if card.open_set is not None:
        meta[META_OPEN_SET] = json.dumps(card.open_set.to_json_dict())
    for key, value in (*card.extra, *(extra or {}).items()):
        if key in _CORE_META:
            raise ValueError(f"metadata key {key!r} is reserved")
        meta[META_PREFIX + key] = str(value)
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
    if not hasattr(module, "conv_proj") or not hasattr(module, "encoder"):
        raise TypeError(f"not a Vision Transformer: {type(module).__name__}")
    vit_module = cast(ViT, module)  # the project's ViT, or torchvision's: the same keys
    if architecture_of(vit_module) != card.arch:
        raise ValueError("the card's architecture does not match the module")
    if head_spec_of(vit_module) != card.head:
        raise ValueError("the card's head does not match the module's")
    # Plain contiguous fp32 CPU copies: safetensors refuses shared or strided storage.
    tensors = {k: v.detach().to("cpu", torch.float32).contiguous().clone() for k, v in module.state_dict().items()}
    rule = card.open_set
    if rule is not None and rule.references is not None:
        tensors[REFERENCES_KEY] = torch.as_tensor(rule.references, dtype=torch.float32).contiguous().clone()
    metadata = card_metadata(card, extra)
    with atomic_path(path, overwrite=overwrite) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)
    return path


__all__ = [
    "FORMAT_KEY",
    "FORMAT_VERSION",
    "META_DESCRIPTION",
    "META_LABELS",
    "META_NAME",
    "META_OPEN_SET",
    "REFERENCES_KEY",
    "FileDescription",
    "architecture_from_metadata",
    "card_metadata",
    "check_preprocess",
    "describe",
    "head_from_metadata",
    "is_project_file",
    "open_set_from_file",
    "preprocess_from_json",
    "save_model",
]
