"""Plain helpers shared by the tests: generated images and data sets, tiny models, shared data paths.

Fixtures live in the ``conftest.py`` files; this module is imported by name (``tests.support``).
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
DEIT = SHARED / "weights" / "deit_tiny_patch16_224.safetensors"
PHOTOS = SHARED / "photos"
FEWSHOT = SHARED / "fewshot-dev"


def write_image(path: Path, size: tuple[int, int] = (48, 40), *, seed: int = 0, mode: str = "RGB") -> Path:
    """A random-noise picture (different per seed) saved in the format named by the suffix."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr, "RGB").convert(mode).save(path)
    return path


def tiny_card(num_classes: int = 3, *, image_size: int = 32, patch_size: int = 8, name: str = "tiny",
              labels: tuple[str, ...] | None = None):
    from vit_desktop.core.types import Architecture, ModelCard, Preprocess

    arch = Architecture(
        image_size=image_size,
        patch_size=patch_size,
        num_layers=2,
        num_heads=2,
        hidden_dim=16,
        mlp_dim=32,
        num_classes=num_classes,
    )
    labels = labels or tuple(f"label {i}" for i in range(num_classes))
    pp = Preprocess(crop_size=image_size, resize_size=image_size + image_size // 8, interpolation="bilinear")
    return ModelCard(name=name, kind="file", source="", arch=arch, labels=labels, preprocess=pp)


def tiny_model(num_classes: int = 3, *, seed: int = 0, **kw):
    """A small random ViT (non-zero head, so predictions differ between images) and its card."""
    import torch

    from vit_desktop.core.models.vit import build_module

    card = tiny_card(num_classes, **kw)
    torch.manual_seed(seed)
    module = build_module(card.arch)
    torch.nn.init.normal_(module.heads.head.weight, std=0.5)
    return module.eval(), card


def as_torchvision(module):
    """torchvision's own VisionTransformer with ``module``'s weights: an independent reference
    forward (the project's ViT keeps torchvision's keys)."""
    import torch
    from torchvision.models import VisionTransformer

    from vit_desktop.core.models.vit import architecture_of

    a = architecture_of(module)
    with torch.device("meta"):
        ref = VisionTransformer(image_size=a.image_size, patch_size=a.patch_size, num_layers=a.num_layers,
                                num_heads=a.num_heads, hidden_dim=a.hidden_dim, mlp_dim=a.mlp_dim,
                                num_classes=a.num_classes, representation_size=a.representation_size)
    ref.load_state_dict(module.state_dict(), assign=True)
    return ref.eval()


def save_tiny_model(path: Path, labels: tuple[str, ...], name: str, seed: int = 0) -> Path:
    """A tiny ViT with its own labels, saved in the project format (loads in milliseconds)."""
    from vit_desktop.core.models.model_file import save_model

    module, card = tiny_model(len(labels), seed=seed, labels=labels, name=name)
    return save_model(path, module, card)


COLOURS = {"red": (220, 40, 40), "green": (40, 200, 60), "blue": (40, 70, 220)}


def colour_folder(root: Path, per_class: int = 8, size: int = 40, *, seed: int = 1) -> Path:
    """A class-per-subfolder data set: class = the colour of a disc on grey noise."""
    from PIL import Image, ImageDraw

    rng = random.Random(seed)
    nrng = np.random.default_rng(seed)
    for name, colour in COLOURS.items():
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            img = Image.fromarray(nrng.integers(60, 180, (size, size, 1), dtype=np.uint8).repeat(3, axis=2))
            x0, y0 = rng.randint(0, 12), rng.randint(0, 12)
            ImageDraw.Draw(img).ellipse((x0, y0, x0 + 24, y0 + 24), fill=colour)
            img.save(root / name / f"{i}.png")
    return root


def run_cli(*argv: str) -> tuple[int, str, str]:
    """``vit-desktop ARGV`` in this process: (exit status, stdout, stderr)."""
    import io

    from vit_desktop.cli import main

    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), out=out, err=err)
    return code, out.getvalue(), err.getvalue()
