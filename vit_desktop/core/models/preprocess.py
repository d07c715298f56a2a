"""A photo -> the model's input: one implementation for classification, explanations and training.

:func:`model_input` runs the steps of the library the checkpoint comes from, as that library runs
them on a PIL image (see :class:`~vit_desktop.core.types.Preprocess`): resize the 8-bit image with
the model's filter, take the centre crop (padding where the photo is smaller), then rescale and
normalise. ``Preprocess.crop_box`` is the same rectangle in the photo's own pixels, which is where
a heatmap is drawn.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from PIL import Image, ImageOps

from vit_desktop.core.io import images
from vit_desktop.core.types import Preprocess

RESAMPLE = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "box": Image.Resampling.BOX,
    "hamming": Image.Resampling.HAMMING,
    "lanczos": Image.Resampling.LANCZOS,
}

class Prepared(NamedTuple):
    """A photo ready for the model."""

    #: (crop, crop, 3) uint8.
    pixels: np.ndarray
    #: The original's (width, height) after EXIF orientation.
    size: tuple[int, int]
    #: What was odd about the file but did not stop it (damaged metadata).
    notes: tuple[str, ...] = ()
    #: The decoded, upright photo at full resolution, when asked for and small enough
    #: (:data:`KEEP_IMAGE_PIXELS`): what an overlay is drawn on, without decoding it again.
    image: Image.Image | None = None


#: Decoded photos up to this many pixels are kept for overlays when asked (3 MB each in RGB).
KEEP_IMAGE_PIXELS = 1_000_000


def apply_colour(image: Image.Image, pp: Preprocess) -> Image.Image:
    """The model's colour handling: grayscale ("L") and/or inverted, as ``pp`` says."""
    if pp.color_mode == "L":
        image = image.convert("L")
    if pp.invert:
        image = ImageOps.invert(image)
    return image


def model_input(image: Image.Image, pp: Preprocess) -> np.ndarray:
    """(crop, crop, 3) uint8: the resize and centre crop of ``pp``, on the 8-bit image.

    Pixels outside the photo (a crop larger than the resized photo) are 0, or the mean colour
    in timm's "border" mode, as those libraries pad.
    """
    image = apply_colour(image, pp)
    if image.mode != "RGB":
        image = image.convert("RGB")
    rw, rh = pp.resized_size(*image.size)
    if (rw, rh) != image.size:
        image = image.resize((rw, rh), RESAMPLE[pp.interpolation])
    c = pp.crop_size
    left, top = pp.crop_offset(rw), pp.crop_offset(rh)
    if pp.resize_mode == "border" and (left < 0 or top < 0):
        fill = tuple(round(255 * m) for m in pp.mean)
        canvas = Image.new("RGB", (c, c), fill)
        canvas.paste(image, (-left, -top))
        out = canvas
    else:
        out = image.crop((left, top, left + c, top + c))  # PIL fills outside the image with 0
    return np.asarray(out, dtype=np.uint8)


def normalized_tensor(image: Image.Image, pp: Preprocess) -> torch.Tensor:
    """(3, crop, crop) float32 on the CPU, normalised: :func:`model_input` as a tensor.

    Rescaled in float64 then normalised in float32, as Hugging Face's processors compute it (the
    engine's fused multiply-add on the device agrees to float32 rounding).
    """
    x = model_input(image, pp).transpose(2, 0, 1).astype(np.float64) * pp.rescale
    mean = np.asarray(pp.mean, dtype=np.float32).reshape(3, 1, 1)
    std = np.asarray(pp.std, dtype=np.float32).reshape(3, 1, 1)
    return torch.from_numpy((x.astype(np.float32) - mean) / std)


def draft_size(pp: Preprocess) -> int:
    """The shorter side a JPEG may be decoded at (by 1/2, 1/4, 1/8 in the decoder) for ``pp``:
    twice what the resize needs, so the resize still filters from a larger image."""
    return 2 * max(pp.resize_size, pp.crop_size)


def prepare_file(path: str | os.PathLike[str], pp: Preprocess, *, keep_image: bool = False) -> Prepared:
    """Decode ``path`` (large JPEGs at a reduced size, see :func:`draft_size`) for the model;
    with ``keep_image`` the decoded photo comes along when it is the full-resolution original and
    at most :data:`KEEP_IMAGE_PIXELS`."""
    decoded = images.decode(Path(path), draft_size=draft_size(pp))
    image = decoded.image
    kept = keep_image and image.size == decoded.size and image.width * image.height <= KEEP_IMAGE_PIXELS
    return Prepared(model_input(image, pp), decoded.size, decoded.notes, image if kept else None)


def prepare_image(image: Image.Image, pp: Preprocess) -> Prepared:
    """An in-memory image (a pasted one) for the model."""
    rgb = images.to_rgb(image)
    return Prepared(model_input(rgb, pp), rgb.size)


__all__ = [
    "KEEP_IMAGE_PIXELS",
    "RESAMPLE",
    "Prepared",
    "apply_colour",
    "draft_size",
    "model_input",
    "normalized_tensor",
    "prepare_file",
    "prepare_image",
]
