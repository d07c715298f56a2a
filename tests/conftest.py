"""Shared fixtures. Qt runs offscreen: set before anything imports PySide6."""

from __future__ import annotations

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
DEIT = SHARED / "weights" / "deit_tiny_patch16_224.safetensors"
PHOTOS = SHARED / "photos"


@pytest.fixture(autouse=True)
def _isolated_dirs(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """User models and downloaded weights go to a temporary folder in every test."""
    base = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("VIT_DESKTOP_DATA_DIR", str(base / "data"))
    monkeypatch.setenv("TORCH_HOME", str(base / "torch"))


@pytest.fixture
def deit_path() -> Path:
    if not DEIT.is_file():
        pytest.skip(f"real DeiT-Tiny weights not found at {DEIT} (shared data is only on the development machine)")
    return DEIT


@pytest.fixture
def photos_dir() -> Path:
    if not (PHOTOS / "labels.csv").is_file():
        pytest.skip(f"shared photos not found at {PHOTOS} (shared data is only on the development machine)")
    return PHOTOS


def tiny_card(num_classes: int = 3, *, image_size: int = 32, patch_size: int = 8, name: str = "tiny"):
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
    labels = tuple(f"label {i}" for i in range(num_classes))
    pp = Preprocess(crop_size=image_size, resize_size=image_size + image_size // 8, interpolation="bilinear")
    return ModelCard(name=name, kind="file", source="", arch=arch, labels=labels, preprocess=pp)


def tiny_model(num_classes: int = 3, *, seed: int = 0, **kw):
    """A small random ViT (non-zero head, so predictions differ between images) and its card."""
    import torch

    from vit_desktop.core.checkpoints import build_module

    card = tiny_card(num_classes, **kw)
    torch.manual_seed(seed)
    module = build_module(card.arch)
    torch.nn.init.normal_(module.heads.head.weight, std=0.5)
    return module.eval(), card


@pytest.fixture
def tiny() -> tuple[object, object]:
    return tiny_model()


@pytest.fixture
def tiny_model_file(tmp_path: Path) -> Path:
    from vit_desktop.core.checkpoints import save_model

    module, card = tiny_model()
    return save_model(tmp_path / "tiny.safetensors", module, card)


def write_image(path: Path, size: tuple[int, int] = (48, 40), *, seed: int = 0, mode: str = "RGB") -> Path:
    """A random-noise picture (different per seed) saved in the format named by the suffix."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr, "RGB").convert(mode).save(path)
    return path


@pytest.fixture
def image_folder(tmp_path: Path) -> Path:
    """photos/ with 5 images in two levels and one corrupt file."""
    root = tmp_path / "photos"
    for i in range(3):
        write_image(root / f"img{i}.png", seed=i)
    for i in range(2):
        write_image(root / "sub" / f"deep{i}.jpg", seed=10 + i)
    (root / "sub" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    return root


COLOURS = {"red": (220, 40, 40), "green": (40, 200, 60), "blue": (40, 70, 220)}


def colour_folder(root: Path, per_class: int = 8, size: int = 40, *, seed: int = 1) -> Path:
    """A class-per-subfolder data set: class = the colour of a disc on grey noise."""
    import random

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
