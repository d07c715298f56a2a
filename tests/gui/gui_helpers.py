"""Helpers shared by the window tests: generated images and tiny saved models."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def write_image(path: Path, size: tuple[int, int] = (48, 40), seed: int = 0) -> Path:
    """A random-noise picture, different per seed, in the format named by the suffix."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr, "RGB").save(path)
    return path


def save_tiny_model(path: Path, labels: tuple[str, ...], name: str, seed: int = 0) -> Path:
    """A tiny ViT with its own labels, saved in the project format (loads in milliseconds)."""
    import dataclasses

    import torch

    from vit_desktop.core.checkpoints import build_module, save_model
    from vit_desktop.core.types import Architecture, ModelCard, Preprocess

    arch = Architecture(image_size=32, patch_size=8, num_layers=2, num_heads=2, hidden_dim=16, mlp_dim=32,
                        num_classes=len(labels))
    card = ModelCard(name=name, kind="file", source="", arch=arch, labels=labels,
                     preprocess=Preprocess(crop_size=32, resize_size=36))
    torch.manual_seed(seed)
    module = build_module(arch)
    torch.nn.init.normal_(module.heads.head.weight, std=0.5)
    return save_model(path, module.eval(), dataclasses.replace(card))
