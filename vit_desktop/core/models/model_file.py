"""The project's own model format: safetensors in torchvision's key layout, described by metadata.

A file fine-tuning writes carries everything needed to use it again, as string metadata:
``vit_desktop.arch``, ``vit_desktop.labels`` and ``vit_desktop.preprocess`` (JSON), a name, a
description, and free-form extras (training settings, metrics, the base model). Readers of
other layouts live in :mod:`.checkpoints` and :mod:`.layouts`. Reading the metadata needs no torch
(:mod:`.header` reads a file's preprocessing before torch is imported); saving imports it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from vit_desktop.core.errors import ModelError, first_line, shown
from vit_desktop.core.files import atomic_path
from vit_desktop.core.types import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    Architecture,
    HeadSpec,
    ModelCard,
    OpenSetRule,
    Preprocess,
)

from .limits import (
    MAX_DESCRIPTION_LENGTH,
    MAX_HEAD_DEPTH,
    MAX_NAME_LENGTH,
    as_float,
    as_size,
    check_preprocess,
    cut_text,
    labels_from,
)

if TYPE_CHECKING:
    import torch
    from torch import nn

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


def _json_object(meta: Mapping[str, str], key: str) -> dict[str, Any]:
    """The JSON object in metadata ``key``; ModelError (naming the key) for anything else."""
    try:
        value = json.loads(meta[key])
    except (ValueError, RecursionError) as exc:  # RecursionError: nested thousands deep
        raise ModelError(f"{key}: unreadable JSON ({first_line(exc, 80)})") from None
    if not isinstance(value, dict):
        raise ModelError(f"{key}: {shown(value)} is not a JSON object")
    return value


_ARCH_FIELDS = frozenset(f.name for f in fields(Architecture))


def architecture_from_metadata(meta: Mapping[str, str]) -> Architecture:
    """The architecture a project file declares; ModelError when a newer program wrote it.

    The values are as the file has them: :func:`~vit_desktop.core.models.limits.check_architecture`
    checks their types and ranges before anything is built.
    """
    if meta[FORMAT_KEY] != FORMAT_VERSION:
        raise ModelError(f"made by a newer vit-desktop (format {shown(meta[FORMAT_KEY])}); please update")
    key = META_PREFIX + "arch"
    d = _json_object(meta, key)
    unknown = sorted(set(d) - _ARCH_FIELDS)
    if unknown:
        raise ModelError(f"{key}: unknown field {shown(unknown[0])}")
    try:
        return Architecture(**d)
    except TypeError:  # a required field is missing
        missing = sorted(f.name for f in fields(Architecture) if f.name not in d)
        raise ModelError(f"{key}: {', '.join(missing)} missing") from None


def head_from_metadata(meta: Mapping[str, str]) -> HeadSpec | None:
    """The few-shot head a project file declares, or None for a linear head (every older file)."""
    return head_from_dict(_json_object(meta, META_HEAD)) if meta.get(META_HEAD) else None


def open_set_from_file(meta: Mapping[str, str], tensors: dict[str, torch.Tensor]) -> OpenSetRule | None:
    """The rule a project file stores, or None (files from before rules were stored). Takes the
    rule's tensor out of ``tensors``: it is no weight of the module."""
    references = tensors.pop(REFERENCES_KEY, None)
    if not meta.get(META_OPEN_SET):
        return None
    refs = references.float().numpy() if references is not None else None
    return OpenSetRule.from_json_dict(_json_object(meta, META_OPEN_SET), refs)


def head_from_dict(d: Mapping[str, Any], depth: int = 1) -> HeadSpec:
    """A HeadSpec as the file has it; :func:`~vit_desktop.core.models.limits.check_head` checks it."""
    if depth > MAX_HEAD_DEPTH:
        raise ModelError(f"{META_HEAD}: the head nests more than {MAX_HEAD_DEPTH} base heads")
    base = d.get("base")
    return HeadSpec(
        base_classes=d["base_classes"],
        mass=d.get("mass", False),
        logprob=d.get("logprob", False),
        features=d.get("features", False),
        eps=d.get("eps", 1e-3),
        method=d.get("method", ""),
        base=head_from_dict(base, depth + 1) if isinstance(base, Mapping) else None,
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
    """Labels, preprocessing, name and extras of a project file (ModelError, or KeyError for a
    missing key, when malformed)."""
    extra = tuple(
        (k[len(META_PREFIX) :], v)
        for k, v in sorted(meta.items())
        if k.startswith(META_PREFIX) and k[len(META_PREFIX) :] not in _CORE_META
    )
    return FileDescription(
        name=cut_text(meta.get(META_NAME) or default_name, MAX_NAME_LENGTH),
        description=cut_text(meta.get(META_DESCRIPTION, ""), MAX_DESCRIPTION_LENGTH),
        labels=_labels(meta),
        preprocess=preprocess_from_json(meta[META_PREFIX + "preprocess"]),
        extra=extra,
    )


def _labels(meta: Mapping[str, str]) -> tuple[str, ...]:
    try:
        values = json.loads(meta[META_LABELS])
    except (ValueError, RecursionError) as exc:
        raise ModelError(f"{META_LABELS}: unreadable JSON ({first_line(exc, 80)})") from None
    # Unique: the program writes a labelled set's classes, which are.
    return labels_from(values, META_LABELS, unique=True)


def preprocess_from_json(text: str) -> Preprocess:
    """The preprocessing of a project file's metadata (ModelError, or KeyError for a missing size)."""
    key = META_PREFIX + "preprocess"
    d = _json_object({key: text}, key)

    def floats(name: str, default: tuple[float, ...]) -> tuple[float, ...]:
        values = d.get(name, default)
        if not isinstance(values, list | tuple) or len(values) != 3:
            raise ModelError(f"{key}: {name} {shown(values)}: three numbers (RGB) expected")
        return tuple(as_float(x, f"{key}: {name}") for x in values)

    return Preprocess(
        crop_size=as_size(d["crop_size"], f"{key}: crop_size"),
        resize_size=as_size(d["resize_size"], f"{key}: resize_size"),
        interpolation=str(d.get("interpolation", "bilinear")),
        mean=floats("mean", IMAGENET_MEAN),
        std=floats("std", IMAGENET_STD),
        color_mode=str(d.get("color_mode", "RGB")),
        invert=bool(d.get("invert", False)),
        resize_mode=str(d.get("resize_mode", "shorter")),
        crop_rounding=str(d.get("crop_rounding", "round")),
        rescale=as_float(d.get("rescale", 1.0 / 255.0), f"{key}: rescale"),
    )


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
    import torch
    from safetensors.torch import save_file

    from .vit import ViT, architecture_of, head_spec_of

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
