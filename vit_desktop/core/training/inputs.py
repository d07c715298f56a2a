"""Training's inputs: photos decoded once, augmented crops, cached backbone features, tensors.

Evaluation tensors are made exactly as classification makes them
(:func:`vit_desktop.core.models.preprocess.normalized_tensor`), so validation scores what the saved model
will later predict.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Collection, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from PIL import Image
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional as TF

from vit_desktop.core.errors import CancelToken, ImageError, VitDesktopError
from vit_desktop.core.inference.devices import autocast
from vit_desktop.core.io.images import load_image
from vit_desktop.core.models import vit
from vit_desktop.core.models.preprocess import apply_colour, normalized_tensor
from vit_desktop.core.models.vit import ViT
from vit_desktop.core.types import Preprocess

from .config import ProgressFn, TrainConfig, TrainProgress
from .labelled_set import LabelledSet, stratified_split

_INTERP = {
    "nearest": InterpolationMode.NEAREST,
    "bilinear": InterpolationMode.BILINEAR,
    "bicubic": InterpolationMode.BICUBIC,
    "box": InterpolationMode.BOX,
    "hamming": InterpolationMode.HAMMING,
    "lanczos": InterpolationMode.LANCZOS,
}


# --------------------------------------------------------------------------------------------
# Photos


def _shrink(img: Image.Image, side: int) -> Image.Image:
    """Keep decoded photos small: training never looks at more than the resize size."""
    w, h = img.size
    short = min(w, h)
    if short <= side:
        return img
    scale = side / short
    return img.resize((max(side, round(w * scale)), max(side, round(h * scale))), Image.Resampling.BILINEAR)


def eval_tensor(img: Image.Image, pp: Preprocess) -> torch.Tensor:
    """(3, crop, crop) float tensor, exactly as the engine prepares a photo for classification."""
    return normalized_tensor(img, pp)


def train_tensor(img: Image.Image, pp: Preprocess, gen: torch.Generator, *, hflip: bool = True) -> torch.Tensor:
    """Light augmentation: random resized crop (35-100 % of the area) and a horizontal flip."""
    img = apply_colour(img.convert("RGB"), pp).convert("RGB")
    w, h = img.size
    area = w * h
    for _ in range(10):
        target = area * float(torch.empty(1).uniform_(0.35, 1.0, generator=gen))
        ratio = math.exp(float(torch.empty(1).uniform_(math.log(3 / 4), math.log(4 / 3), generator=gen)))
        cw = int(round(math.sqrt(target * ratio)))
        ch = int(round(math.sqrt(target / ratio)))
        if 0 < cw <= w and 0 < ch <= h:
            left = int(torch.randint(0, w - cw + 1, (1,), generator=gen))
            top = int(torch.randint(0, h - ch + 1, (1,), generator=gen))
            break
    else:  # fall back to the centre square
        cw = ch = min(w, h)
        left, top = (w - cw) // 2, (h - ch) // 2
    img = TF.resized_crop(
        img, top, left, ch, cw, [pp.crop_size, pp.crop_size], interpolation=_INTERP[pp.interpolation], antialias=True
    )
    if hflip and bool(torch.rand(1, generator=gen) < 0.5):
        img = TF.horizontal_flip(img)
    t = TF.to_dtype(TF.to_image(img), torch.float32, scale=True)
    if abs(pp.rescale * 255.0 - 1.0) > 1e-12:  # a model fed 0-255 (Hugging Face's do_rescale false)
        t = t * (pp.rescale * 255.0)
    normalised: torch.Tensor = TF.normalize(t, list(pp.mean), list(pp.std))
    return normalised


def decode_images(
    data: LabelledSet,
    pp: Preprocess,
    *,
    progress: Callable[[int, int], None] | None = None,
    cancel: CancelToken | None = None,
) -> tuple[list[Image.Image | None], list[tuple[str, str]]]:
    """Decode every photo of ``data`` in a thread pool (Pillow releases the GIL while decoding).

    Unreadable photos come back as None and are listed with their one-line reason.
    """
    keep = max(pp.resize_size, pp.crop_size)

    def one(path: os.PathLike[str]) -> Image.Image | str:
        try:
            return _shrink(load_image(path, draft_size=keep), keep)
        except ImageError as exc:
            return str(exc)
        except (OSError, ValueError) as exc:  # anything a broken file throws that images.py missed
            return f"{os.fspath(path)}: {exc}"

    images: list[Image.Image | None] = []
    skipped: list[tuple[str, str]] = []
    total = len(data.items)
    with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:
        for i, out in enumerate(pool.map(one, (p for p, _ in data.items))):
            if isinstance(out, str):
                images.append(None)
                skipped.append((str(data.items[i][0]), out))
            else:
                images.append(out)
            if progress is not None:
                progress(i + 1, total)
            if cancel is not None and cancel.cancelled:
                pool.shutdown(wait=False, cancel_futures=True)
                break
    return images, skipped


@dataclass
class Photos:
    """The readable photos of a labelled set, split into training and validation."""

    classes: tuple[str, ...]
    train_images: list[Image.Image] = field(default_factory=list)
    train_y: list[int] = field(default_factory=list)
    train_paths: list[str] = field(default_factory=list)
    val_images: list[Image.Image] = field(default_factory=list)
    val_y: list[int] = field(default_factory=list)
    val_paths: list[str] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)


def read_photos(
    data: LabelledSet,
    config: TrainConfig,
    pp: Preprocess,
    progress: ProgressFn | None,
    cancel: CancelToken | None,
    val_data: LabelledSet | None = None,
    *,
    split: bool = True,
    named: Collection[str] = (),
) -> Photos:
    """Decode ``data``: split into training and validation photos (stratified, unless ``val_data``
    is given), every class keeping a photo on each side after unreadable files are skipped; or,
    with ``split=False``, every photo for training (cross-validation holds photos out itself)."""
    if val_data is not None:
        if tuple(val_data.classes) != tuple(data.classes):
            raise VitDesktopError("the validation set must have the same classes as the training set")
        train, val = data, val_data
    elif split:
        data.validate()
        train, val = data.split(config.val_fraction, config.seed)
    else:
        train, val = data, LabelledSet(data.classes)

    def report(done: int, total: int) -> None:
        if progress is not None and (done == total or done % 8 == 0):
            progress(TrainProgress("decode", 0, 0, done, total, message=f"reading photos {done}/{total}"))

    both = LabelledSet(data.classes, (*train.items, *val.items))
    images, skipped = decode_images(both, pp, progress=report, cancel=cancel)
    if cancel is not None:
        cancel.raise_if_cancelled()
    index = {c: i for i, c in enumerate(data.classes)}
    photos = Photos(data.classes, skipped=skipped)
    for k, ((path, name), img) in enumerate(zip(both.items, images)):
        if img is None:
            continue
        if k < len(train.items):
            photos.train_images.append(img)
            photos.train_y.append(index[name])
            photos.train_paths.append(str(path))
        else:
            photos.val_images.append(img)
            photos.val_y.append(index[name])
            photos.val_paths.append(str(path))
    for c, name in enumerate(data.classes):
        n_tr = photos.train_y.count(c)
        n_val = photos.val_y.count(c)
        if not split and val_data is None:
            if n_tr < 2 and name not in named:
                bad = len(skipped)
                raise VitDesktopError(
                    f"class {name!r} has too few readable images ({n_tr}) after skipping {bad} unreadable"
                    f" {'file' if bad == 1 else 'files'}; each class needs at least 2"
                )
            continue
        if n_tr == 0 or n_val == 0:
            bad = len(skipped)
            raise VitDesktopError(
                f"class {name!r} has too few readable images ({n_tr + n_val}) after skipping {bad} unreadable"
                f" {'file' if bad == 1 else 'files'}; each class needs at least 2"
            )
    return photos


# --------------------------------------------------------------------------------------------
# Cached features


@torch.no_grad()
def features_of(
    module: ViT,
    tensors: Iterator[torch.Tensor],
    total: int,
    device: torch.device,
    precision: str,
    phase_msg: str,
    progress: ProgressFn | None,
    cancel: CancelToken | None,
    batch_size: int,
) -> torch.Tensor:
    """Backbone features (:func:`vit_desktop.core.models.vit.features`) of a stream of preprocessed
    images, batched; float32 on the CPU."""
    module.eval()
    out: list[torch.Tensor] = []
    batch: list[torch.Tensor] = []
    done = 0

    def flush() -> None:
        nonlocal done
        x = torch.stack(batch).to(device)
        with autocast(device, precision):
            out.append(vit.features(module, x).float().cpu())
        done += len(batch)
        batch.clear()
        if progress is not None:
            progress(TrainProgress("features", 0, 0, done, total, message=f"{phase_msg} {done}/{total}"))

    for t in tensors:
        if cancel is not None:
            cancel.raise_if_cancelled()
        batch.append(t)
        if len(batch) >= batch_size:
            flush()
    if batch:
        flush()
    return torch.cat(out) if out else torch.zeros(0, module.hidden_dim)


# --------------------------------------------------------------------------------------------
# Small images as tensors (training from scratch)


def as_unit(images: torch.Tensor, size: int, grayscale: bool) -> torch.Tensor:
    """(n, 1|3, h, w) uint8 or float -> (n, 1 or 3, size, size) float in [0, 1]."""
    x = torch.as_tensor(images)
    if x.ndim == 3:
        x = x.unsqueeze(1)
    x = x.float() / 255.0 if x.dtype == torch.uint8 else x.float()
    if grayscale and x.shape[1] == 3:
        x = (0.299 * x[:, :1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3])
    # Grayscale stays one channel here (a third of the memory for 60k images); batches are
    # repeated to three channels as they are made.
    if x.shape[-1] != size or x.shape[-2] != size:
        x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return x.contiguous()


def shift_flip(x: torch.Tensor, gen: torch.Generator, *, hflip: bool) -> torch.Tensor:
    """Small-image augmentation: random shift by up to 1/8 of the side (padding by edge), flip."""
    n, _, h, w = x.shape
    pad = max(1, h // 8)
    padded = F.pad(x, (pad, pad, pad, pad), mode="replicate")
    out = torch.empty_like(x)
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=gen)
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=gen)
    flip = torch.rand(n, generator=gen) < 0.5
    for i in range(n):
        crop = padded[i, :, dy[i] : dy[i] + h, dx[i] : dx[i] + w]
        out[i] = crop.flip(-1) if hflip and flip[i] else crop
    return out


def split_indices(
    targets: Sequence[int], num_classes: int, val_fraction: float | None, seed: int
) -> tuple[list[int], list[int]]:
    """Training and validation indices of a labelled tensor set: the one stratified split."""
    members = [[i for i, t in enumerate(targets) if t == c] for c in range(num_classes)]
    return stratified_split(members, val_fraction, seed)


__all__ = [
    "Photos",
    "as_unit",
    "decode_images",
    "eval_tensor",
    "features_of",
    "read_photos",
    "shift_flip",
    "split_indices",
    "train_tensor",
]
