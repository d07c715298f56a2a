"""A photo -> the model's input: one implementation for classification, explanations and training.

The model sees the centre crop of the photo resized so its shorter side is ``resize_size``
(:meth:`Preprocess.crop_box`); :func:`model_input` samples exactly that region in one resampling
step, so the heatmap's crop box and the pixels the model saw are the same rectangle.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from PIL import Image, ImageOps

from . import images
from .types import Preprocess

RESAMPLE = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
}

class Prepared(NamedTuple):
    """A photo ready for the model."""

    #: (crop, crop, 3) uint8.
    pixels: np.ndarray
    #: The original's (width, height) after EXIF orientation.
    size: tuple[int, int]
    #: What was odd about the file but did not stop it (damaged metadata).
    notes: tuple[str, ...] = ()


def apply_colour(image: Image.Image, pp: Preprocess) -> Image.Image:
    """The model's colour handling: grayscale ("L") and/or inverted, as ``pp`` says."""
    if pp.color_mode == "L":
        image = image.convert("L")
    if pp.invert:
        image = ImageOps.invert(image)
    return image


def model_input(image: Image.Image, pp: Preprocess) -> np.ndarray:
    """(crop, crop, 3) uint8: resize the shorter side to ``resize_size`` and centre-crop, in one step.

    PIL's ``resize(box=...)`` samples exactly the crop region of the (possibly draft-decoded)
    image, so no intermediate full-size resize is made and the region matches ``Preprocess.crop_box``.
    """
    image = apply_colour(image, pp)
    box = pp.crop_box(*image.size)
    out = image.resize((pp.crop_size, pp.crop_size), RESAMPLE[pp.interpolation], box=box)
    if out.mode != "RGB":
        out = out.convert("RGB")
    return np.asarray(out, dtype=np.uint8)


def normalized_tensor(image: Image.Image, pp: Preprocess) -> torch.Tensor:
    """(3, crop, crop) float32 on the CPU, normalised: :func:`model_input` as a tensor."""
    x = torch.from_numpy(model_input(image, pp).copy()).permute(2, 0, 1).float().div_(255.0)
    mean = torch.tensor(pp.mean, dtype=torch.float32).view(3, 1, 1)
    std = torch.tensor(pp.std, dtype=torch.float32).view(3, 1, 1)
    return (x - mean) / std


def prepare_file(path: str | os.PathLike[str], pp: Preprocess) -> Prepared:
    """Decode ``path`` (JPEGs at reduced size where that cannot change the result) for the model."""
    decoded = images.decode(Path(path), draft_size=pp.resize_size)
    return Prepared(model_input(decoded.image, pp), decoded.size, decoded.notes)


def prepare_image(image: Image.Image, pp: Preprocess) -> Prepared:
    """An in-memory image (a pasted one) for the model."""
    rgb = images.to_rgb(image)
    return Prepared(model_input(rgb, pp), rgb.size)


__all__ = [
    "RESAMPLE",
    "Prepared",
    "apply_colour",
    "model_input",
    "normalized_tensor",
    "prepare_file",
    "prepare_image",
]
