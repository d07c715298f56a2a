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
from typing import TYPE_CHECKING, NamedTuple

import numpy as np
from PIL import Image, ImageOps

from vit_desktop.core.io import images
from vit_desktop.core.types import Preprocess

if TYPE_CHECKING:  # decoding needs no torch: a run decodes its first photos while torch is imported
    import torch

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

#: The whole photo is resized, then cropped, as the libraries do, while the resized photo has at most
#: this many times the pixels of the model's square input (a 16:1 panorama): results are theirs to
#: the bit. Past it (an 89000 x 1 strip resized to 22,072,000 x 248 pixels is 16 GB) only the part
#: the crop keeps is resized, so memory follows the model's input, not the photo's shape.
EXACT_RESIZE_AREA = 16


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
    in timm's "border" mode, as those libraries pad. Memory is bounded by the model's input
    whatever the photo's shape (see :data:`EXACT_RESIZE_AREA`).
    """
    image = apply_colour(image, pp)
    if image.mode != "RGB":
        image = image.convert("RGB")
    rw, rh = pp.resized_size(*image.size)
    c = pp.crop_size
    left, top = pp.crop_offset(rw), pp.crop_offset(rh)
    if (rw, rh) != image.size and rw * rh > EXACT_RESIZE_AREA * max(pp.resize_size, c) ** 2:
        return np.asarray(_resized_crop(image, pp, (rw, rh), (left, top)), dtype=np.uint8)
    if (rw, rh) != image.size:
        image = image.resize((rw, rh), RESAMPLE[pp.interpolation])
    if pp.resize_mode == "border" and (left < 0 or top < 0):
        canvas = Image.new("RGB", (c, c), _border_fill(pp))
        canvas.paste(image, (-left, -top))
        out = canvas
    else:
        out = image.crop((left, top, left + c, top + c))  # PIL fills outside the image with 0
    return np.asarray(out, dtype=np.uint8)


def _border_fill(pp: Preprocess) -> tuple[int, int, int]:
    """What the crop pads with: the mean colour in timm's "border" mode, else black (PIL's crop)."""
    if pp.resize_mode != "border":
        return (0, 0, 0)
    r, g, b = (round(255 * m) for m in pp.mean)
    return (r, g, b)


def _resized_crop(image: Image.Image, pp: Preprocess, resized: tuple[int, int],
                  offset: tuple[int, int]) -> Image.Image:
    """The centre crop of ``image`` resized to ``resized``, resizing only the region the crop keeps.

    PIL's resize of a source box samples the same places as the whole resize (output pixel x at
    (x + 0.5) * width / resized width) with the same filter support. The box's float rounding
    moves a weight by a bit now and then, and Pillow may run the two passes in the other order,
    which clips a filter's overshoot differently: a level of 255 here and there on photos, more on
    pixel noise. Only photos past :data:`EXACT_RESIZE_AREA` come this way.
    """
    (rw, rh), (left, top) = resized, offset
    c = pp.crop_size
    w, h = image.size
    canvas = Image.new("RGB", (c, c), _border_fill(pp))
    # The crop's rectangle in the resized photo, where the two overlap.
    x0, y0, x1, y1 = max(left, 0), max(top, 0), min(left + c, rw), min(top + c, rh)
    if x1 > x0 and y1 > y0:
        box = (x0 * w / rw, y0 * h / rh, min(w, x1 * w / rw), min(h, y1 * h / rh))
        canvas.paste(image.resize((x1 - x0, y1 - y0), RESAMPLE[pp.interpolation], box=box), (x0 - left, y0 - top))
    return canvas


def normalized_tensor(image: Image.Image, pp: Preprocess) -> torch.Tensor:
    """(3, crop, crop) float32 on the CPU, normalised: :func:`model_input` as a tensor.

    Rescaled in float64 then normalised in float32, as Hugging Face's processors compute it (the
    engine's fused multiply-add on the device agrees to float32 rounding).
    """
    x = model_input(image, pp).transpose(2, 0, 1).astype(np.float64) * pp.rescale
    mean = np.asarray(pp.mean, dtype=np.float32).reshape(3, 1, 1)
    std = np.asarray(pp.std, dtype=np.float32).reshape(3, 1, 1)
    import torch

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
    "EXACT_RESIZE_AREA",
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
