"""Plain helpers shared by the tests: generated images and data sets, tiny models, shared data paths.

Fixtures live in the ``conftest.py`` files; this module is imported by name (``tests.support``).
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import numpy as np

if TYPE_CHECKING:  # torch and the project load lazily, inside the helpers that need them
    from vit_desktop.core.inference.engine import Engine
    from vit_desktop.core.labels.hierarchy import Hierarchy
    from vit_desktop.core.models.vit import ViT
    from vit_desktop.core.types import ModelCard

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
DEIT = SHARED / "weights" / "deit_tiny_patch16_224.safetensors"
PHOTOS = SHARED / "photos"
FEWSHOT = SHARED / "fewshot-dev"

T = TypeVar("T")


def kept(value: T | None) -> T:
    """What a run was asked to keep (probabilities, features, a score): the test fails where it is missing."""
    assert value is not None, "not kept"
    return value


def write_image(path: Path, size: tuple[int, int] = (48, 40), *, seed: int = 0, mode: str = "RGB") -> Path:
    """A random-noise picture (different per seed) saved in the format named by the suffix."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr, "RGB").convert(mode).save(path)
    return path


def tiny_card(num_classes: int = 3, *, image_size: int = 32, patch_size: int = 8, name: str = "tiny",
              labels: tuple[str, ...] | None = None) -> ModelCard:
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


def tiny_model(num_classes: int = 3, *, seed: int = 0, **kw) -> tuple[ViT, ModelCard]:
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


def scene(size: tuple[int, int] = (192, 144), *, seed: int = 0):
    """A made-up photo with structure (a smooth sky-to-ground gradient, a few shapes, a little
    grain): perceptual hashes and features behave on it as on photos, unlike on pure noise.
    Returns a Pillow RGB image; different per seed."""
    from PIL import Image, ImageDraw, ImageFilter

    rng = np.random.default_rng(seed)
    w, h = size
    top, bottom = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
    t = np.linspace(0.0, 1.0, h)[:, None, None]
    arr = (top * (1 - t) + bottom * t).repeat(w, axis=1)
    img = Image.fromarray(arr.astype(np.uint8), "RGB")
    draw = ImageDraw.Draw(img)
    for _ in range(6):
        x0, y0 = rng.integers(0, w * 3 // 4), rng.integers(0, h * 3 // 4)
        x1, y1 = x0 + rng.integers(w // 8, w // 2), y0 + rng.integers(h // 8, h // 2)
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)((int(x0), int(y0), int(x1), int(y1)), fill=colour)
    img = img.filter(ImageFilter.GaussianBlur(1.5))
    grain = rng.normal(0, 6, (h, w, 3))
    return Image.fromarray(np.clip(np.asarray(img, np.float32) + grain, 0, 255).astype(np.uint8), "RGB")


def edited_copies(original, folder: Path, stem: str = "copy", *, seed: int = 0) -> dict[str, Path]:
    """Copies of ``original`` (a Pillow image) as people make them, by edit kind: re-encoded,
    resized to 50 % and 25 %, a 160-pixel thumbnail, lightly cropped (8 % off), brightened and
    darkened by 15 %. JPEG at quality 85 unless the kind says otherwise."""
    from PIL import ImageEnhance

    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    w, h = original.size
    cw, ch = round(w * 0.92), round(h * 0.92)
    x0, y0 = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
    thumb = original.copy()
    thumb.thumbnail((160, 160))
    edits = {
        "reencode": (original, 60),
        "resize50": (original.resize((w // 2, h // 2)), 85),
        "resize25": (original.resize((w // 4, h // 4)), 85),
        "thumb160": (thumb, 85),
        "crop": (original.crop((x0, y0, x0 + cw, y0 + ch)), 90),
        "bright+15": (ImageEnhance.Brightness(original).enhance(1.15), 90),
        "bright-15": (ImageEnhance.Brightness(original).enhance(0.85), 90),
    }
    out = {}
    for kind, (img, quality) in edits.items():
        out[kind] = folder / f"{stem}-{kind}.jpg"
        img.save(out[kind], quality=quality)
    return out


# A colour task over a tiny hierarchy: eight colour classes grouped into warm and cool, as ImageNet's
# classes are grouped by WordNet; the few-shot and names tests run on it.
SUBTYPES = ["red", "orange", "yellow", "pink", "blue", "green", "cyan", "purple"]


def tiny_hierarchy() -> Hierarchy:
    from vit_desktop.core.labels.hierarchy import Hierarchy

    nodes: dict[str, tuple[list[str], list[str]]] = {
        "colour": (["colour"], []),
        "warm": (["warm", "warm colour"], ["colour"]),
        "cool": (["cool", "cool colour"], ["colour"]),
    }
    for i, name in enumerate(SUBTYPES):
        nodes[name] = ([name], ["warm" if i < 4 else "cool"])
    return Hierarchy.from_edges(SUBTYPES, nodes)


def tiny_base() -> Engine:
    import torch
    from torchvision.models import VisionTransformer

    from vit_desktop.core.inference.engine import Engine
    from vit_desktop.core.types import Architecture, ModelCard, Preprocess

    torch.manual_seed(0)
    module = VisionTransformer(image_size=32, patch_size=8, num_layers=2, num_heads=2, hidden_dim=16, mlp_dim=32,
                               num_classes=len(SUBTYPES))
    torch.nn.init.normal_(module.heads.head.weight, std=0.5)
    card = ModelCard("tiny colours", "file", "", Architecture(32, 8, 2, 2, 16, 32, len(SUBTYPES)), tuple(SUBTYPES),
                     Preprocess(crop_size=32, resize_size=36))
    return Engine.from_module(module, card, device="cpu")


def warm_cool_folder(folder: Path) -> Path:
    """Two classes of plain colour photos, warm and cool, six each."""
    from PIL import Image

    for name, colour in (("warm", (230, 60, 30)), ("cool", (30, 80, 230))):
        (folder / name).mkdir(parents=True)
        for i in range(6):
            Image.new("RGB", (40, 40), tuple(max(0, v - 8 * i) for v in colour)).save(folder / name / f"{i}.png")
    return folder


#: How long a window test waits for a load or a run: the first load imports torch on a busy 2-core machine.
WAIT_MS = 60_000


def load(qtbot, window, path) -> None:
    """Load the model at ``path`` in ``window`` and wait until it is the window's model."""
    with qtbot.waitSignal(window.controller.model_changed, timeout=WAIT_MS):
        window.models.load_model(str(path))


def classify(qtbot, window, *paths):
    """Classify ``paths`` in ``window`` and wait for the run to end; returns its Outcome."""
    with qtbot.waitSignal(window.run_status.run_finished, timeout=WAIT_MS) as blocker:
        window.intake.add_paths([str(p) for p in paths])
    return blocker.args[0]


def disk_full_for(target: Path, monkeypatch) -> None:
    """Writing results to ``target`` fails as on a full disk (ENOSPC); every other path is written."""
    import errno

    from vit_desktop.core.io import results_files

    real = results_files.write_results

    def full_disk(results, path, **kw):
        if Path(path) == target:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(results, path, **kw)

    monkeypatch.setattr(results_files, "write_results", full_disk)

