"""The validation photos a trained model got wrong, each with the map of the class it chose.

Made where the model is (the compute thread, or the command line's process); what comes back is
small RGB arrays that any thread may show.
"""

from __future__ import annotations

import copy
from dataclasses import replace

import numpy as np
import torch

from vit_desktop.core.errors import VitDesktopError
from vit_desktop.core.io.heatmap import render_overlay
from vit_desktop.core.io.images import load_image
from vit_desktop.core.types import Heatmap

from .results import TrainResult

#: Misclassified photos rendered with their heatmap (more would only slow the end of training).
MAX_MISTAKE_PREVIEWS = 48
PREVIEW_SIDE = 320


def scaled_box(heat: Heatmap, size: tuple[int, int]) -> tuple[float, float, float, float]:
    """The heatmap's crop box moved from the original's pixels to those of an image of ``size``."""
    sx = size[0] / heat.image_size[0]
    sy = size[1] / heat.image_size[1]
    left, top, right, bottom = heat.crop_box
    return (left * sx, top * sy, right * sx, bottom * sy)


def mistake_previews(
    result: TrainResult,
    device: torch.device | str = "cpu",
    *,
    limit: int = MAX_MISTAKE_PREVIEWS,
    side: int = PREVIEW_SIDE,
) -> dict[str, np.ndarray]:
    """path -> (h, w, 3) uint8: the photo (at most ``side`` pixels) with its predicted class's map.

    Photos that cannot be read are left out; the caller still lists them by name.
    """
    from vit_desktop.core.inference.engine import Engine

    previews: dict[str, np.ndarray] = {}
    if not result.misclassified:
        return previews
    # A private engine on a copy: the result's module stays on the CPU for whoever holds it.
    trained = Engine.from_module(copy.deepcopy(result.module), result.card, device=str(device))
    index = {c: i for i, c in enumerate(result.card.labels)}
    for mistake in result.misclassified[:limit]:
        path = mistake.path
        try:
            photo = load_image(path, draft_size=side * 2)
            heat = trained.explain_class(photo, index[mistake.predicted])
            photo.thumbnail((side, side))
            heat = replace(heat, crop_box=scaled_box(heat, photo.size), image_size=photo.size)
            previews[path] = np.asarray(render_overlay(photo, heat, opacity=0.45), dtype=np.uint8).copy()
        except (VitDesktopError, OSError, ValueError):
            continue
    return previews


__all__ = ["MAX_MISTAKE_PREVIEWS", "PREVIEW_SIDE", "mistake_previews", "scaled_box"]
