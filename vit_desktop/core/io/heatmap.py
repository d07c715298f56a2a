"""Heatmap colouring and overlay composition in numpy (no matplotlib in the GUI process)."""

from __future__ import annotations

import functools
import os
from pathlib import Path

import numpy as np
from PIL import Image

from vit_desktop.core.files import atomic_write_bytes
from vit_desktop.core.types import Heatmap

from .png import encode_png

COLORMAPS: tuple[str, ...] = ("inferno", "viridis", "jet")

# Sixth-degree polynomial fits of matplotlib's perceptual maps (max error under 1/255 per
# channel): a few numbers instead of a 256-entry table, evaluated once into a LUT below.
_POLY = {
    "viridis": np.array(
        [
            [0.2777273272234177, 0.005407344544966578, 0.3340998053353061],
            [0.1050930431085774, 1.404613529898575, 1.384590162594685],
            [-0.3308618287255563, 0.214847559468213, 0.09509516302823659],
            [-4.634230498983486, -5.799100973351585, -19.33244095627987],
            [6.228269936347081, 14.17993336680509, 56.69055260068105],
            [4.776384997670288, -13.74514537774601, -65.35303263337234],
            [-5.435455855934631, 4.645852612178535, 26.3124352495832],
        ]
    ),
    "inferno": np.array(
        [
            [0.0002189403691192265, 0.001651004631001012, -0.01948089843709184],
            [0.1065134194856116, 0.5639564367884091, 3.932712388889277],
            [11.60249308247187, -3.972853965665698, -15.9423941062914],
            [-41.70399613139459, 17.43639888205313, 44.35414519872813],
            [77.162935699427, -33.40235894210092, -81.80730925738993],
            [-71.31942824499214, 32.62606426397723, 73.20951985803202],
            [25.13112622477341, -12.24266895238567, -23.07032500287172],
        ]
    ),
}


def _lut(name: str) -> np.ndarray:
    """(256, 3) uint8 colour table."""
    t = np.linspace(0.0, 1.0, 256)
    if name == "jet":
        # The classic piecewise-linear jet: dark blue -> cyan -> yellow -> dark red.
        r = np.clip(1.5 - np.abs(4.0 * t - 3.0), 0.0, 1.0)
        g = np.clip(1.5 - np.abs(4.0 * t - 2.0), 0.0, 1.0)
        b = np.clip(1.5 - np.abs(4.0 * t - 1.0), 0.0, 1.0)
        rgb = np.stack([r, g, b], axis=1)
    elif name in _POLY:
        powers = t[:, None] ** np.arange(7)[None, :]  # (256, 7)
        rgb = powers @ _POLY[name]
    else:
        raise ValueError(f"unknown colour map {name!r}: use {', '.join(COLORMAPS)}")
    return np.round(np.clip(rgb, 0.0, 1.0) * 255.0).astype(np.uint8)


_LUTS = {name: _lut(name) for name in COLORMAPS}
# The same tables as Pillow palettes, so that colouring a full-size heat layer runs in C.
_PALETTES = {name: lut.tobytes() for name, lut in _LUTS.items()}


def colorize(values: np.ndarray, colormap: str = "inferno") -> np.ndarray:
    """Map values in [0, 1] (any shape) to uint8 RGB (shape + (3,))."""
    lut = _LUTS.get(colormap)
    if lut is None:
        raise ValueError(f"unknown colour map {colormap!r}: use {', '.join(COLORMAPS)}")
    idx = np.clip(np.nan_to_num(values, nan=0.0) * 255.0 + 0.5, 0, 255).astype(np.uint8)
    rgb: np.ndarray = lut[idx]
    return rgb


def crop_pixels(heatmap: Heatmap, size: tuple[int, int]) -> tuple[int, int, int, int]:
    """The heatmap's crop box in whole pixels of an image of ``size`` (w, h).

    ``size`` may differ from the original (a thumbnail or a zoomed view): the box is scaled.
    """
    w, h = size
    ow, oh = heatmap.image_size
    sx, sy = w / ow, h / oh
    left, top, right, bottom = heatmap.crop_box
    x0, y0 = max(0, int(round(left * sx))), max(0, int(round(top * sy)))
    x1, y1 = min(w, int(round(right * sx))), min(h, int(round(bottom * sy)))
    return x0, y0, max(x0 + 1, x1), max(y0 + 1, y1)


@functools.lru_cache(maxsize=64)
def _alpha_table(opacity: float, transparent_low: bool) -> tuple[int, ...]:
    """Per heat value (0..255) the overlay's alpha (0..255)."""
    opacity = float(np.clip(opacity, 0.0, 1.0))
    v = np.arange(256) / 255.0
    alpha = np.full(256, opacity)
    if transparent_low:
        # Fade out the low end so that only what the model attended to is tinted.
        ramp = np.clip((v - 0.15) / 0.45, 0.0, 1.0)
        alpha *= ramp * ramp * (3.0 - 2.0 * ramp)
    return tuple(int(round(a * 255)) for a in alpha)


def render_overlay(
    image: Image.Image,
    heatmap: Heatmap,
    *,
    colormap: str = "inferno",
    opacity: float = 0.5,
    transparent_low: bool = False,
) -> Image.Image:
    """The photo with its heatmap blended over the crop the model saw, as RGB of the photo's size.

    Composition runs in Pillow's C code (a 256-entry colour table and an alpha mask), a few
    milliseconds for a 12-megapixel photo; outside the crop the photo is untouched.
    """
    out = image.convert("RGB")  # always a new image, even from RGB: the caller's photo is untouched
    x0, y0, x1, y1 = crop_pixels(heatmap, out.size)
    grid = np.clip(np.nan_to_num(heatmap.grid, nan=0.0), 0.0, 1.0)
    # 8-bit heat upsampled bilinearly: 256 levels is all a colour table can show anyway.
    heat = Image.fromarray(np.round(grid * 255.0).astype(np.uint8), mode="L").resize(
        (x1 - x0, y1 - y0), Image.Resampling.BILINEAR
    )
    palette = _PALETTES.get(colormap)
    if palette is None:
        raise ValueError(f"unknown colour map {colormap!r}: use {', '.join(COLORMAPS)}")
    colour = heat.copy()
    colour.putpalette(palette)
    colour = colour.convert("RGB")
    mask = heat.point(_alpha_table(opacity, transparent_low))
    region = out.crop((x0, y0, x1, y1))
    out.paste(Image.composite(colour, region, mask), (x0, y0))
    return out


def save_overlay_png(
    path: str | os.PathLike[str],
    image: Image.Image,
    heatmap: Heatmap,
    *,
    colormap: str = "inferno",
    opacity: float = 0.5,
    transparent_low: bool = False,
    overwrite: bool = False,
    caption: str | None = None,
) -> Path:
    """Render the overlay and save it as PNG, atomically; never replaces a file unless asked.
    ``caption``: a strip under the photo with this line of text."""
    overlay = render_overlay(image, heatmap, colormap=colormap, opacity=opacity, transparent_low=transparent_low)
    if caption:
        overlay = with_caption(overlay, caption)
    return atomic_write_bytes(path, encode_png(overlay), overwrite=overwrite)


def with_caption(image: Image.Image, text: str) -> Image.Image:
    """``image`` above a white strip holding ``text`` in dark grey, sized to the image's width."""
    from PIL import ImageDraw, ImageFont

    w, h = image.size
    size = max(10, min(48, w // 40))
    try:
        font: ImageFont.FreeTypeFont | ImageFont.ImageFont = ImageFont.load_default(size=size)
    except TypeError:  # Pillow before 10.1 has only its fixed bitmap font
        font = ImageFont.load_default()
    # One line, cut with an ellipsis to the image's width.
    draw = ImageDraw.Draw(image)
    line = text
    while len(line) > 1 and draw.textlength(line, font=font) > w - 2 * size:
        line = line[:-2] + "…"
    strip = int(size * 1.8)
    out = Image.new("RGB", (w, h + strip), (255, 255, 255))
    out.paste(image, (0, 0))
    ImageDraw.Draw(out).text((size, h + (strip - size) // 2), line, fill=(40, 40, 40), font=font)
    return out
