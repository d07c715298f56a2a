"""How faithful a relevance map is: the patch-perturbation test of Chefer et al. (2021).

Remove the patches a map ranks most relevant first (set them to the dataset mean, which is 0 after
normalisation), 0 %, 10 %, ... 90 % of them, and count how often the model still gives its original
top-1 answer. A faithful map finds what the answer rests on, so the answer falls fast: the area
under that curve (in %, over 0-90 % removed) is low. Removing the least relevant first is the
reverse test: a faithful map leaves the answer standing, so that area is high. A random order
scores about the same both ways.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from vit_desktop.core.models import vit
from vit_desktop.core.models.vit import ViT

#: Fractions of the patches removed at each step of the test.
STEPS: tuple[float, ...] = tuple(i / 10 for i in range(10))


@dataclass(frozen=True)
class Faithfulness:
    """Areas under the perturbation curves, in % (0-100)."""

    #: Most relevant removed first: lower is more faithful.
    positive: float
    #: Least relevant removed first: higher is more faithful.
    negative: float


def removal_masks(grids: torch.Tensor, steps: Sequence[float], *, most_relevant_first: bool) -> torch.Tensor:
    """(n, g, g) relevance -> (n, steps, g, g) masks, 1 where a patch is kept.

    At step ``f`` the ``round(f * g²)`` patches ranked first are removed; ties keep the grid order,
    so a map and its ranking give the same masks on every machine.
    """
    n, g, _ = grids.shape
    flat = grids.reshape(n, g * g).float()
    # Stable sort: equal scores (a flat map) fall back to patch order, not to chance.
    order = torch.sort(flat, dim=1, descending=most_relevant_first, stable=True).indices
    # rank[i, p]: where patch p comes in image i's removal order.
    rank = torch.empty_like(order)
    rank.scatter_(1, order, torch.arange(g * g).expand(n, -1).contiguous())
    counts = torch.tensor([round(f * g * g) for f in steps])
    # (n, 1, g²) >= (1, steps, 1): a patch is kept while fewer than its rank have been removed.
    keep = rank[:, None, :] >= counts[None, :, None]
    return keep.reshape(n, len(steps), g, g)


@torch.inference_mode()
def still_top1(
    module: ViT,
    x: torch.Tensor,
    grids: torch.Tensor,
    targets: torch.Tensor,
    *,
    most_relevant_first: bool,
    steps: Sequence[float] = STEPS,
    batch_size: int = 64,
) -> torch.Tensor:
    """(n, steps) bool: whether the model's top-1 answer is still ``targets[i]`` with the patches
    ranked first by ``grids[i]`` removed (``x`` normalised, so 0 is the mean colour)."""
    n, _, h, w = x.shape
    g = grids.shape[-1]
    patch = h // g
    if g * patch != h or h != w:
        raise ValueError(f"a {g}x{g} grid does not tile a {h}x{w} input")
    keep = removal_masks(grids.cpu(), steps, most_relevant_first=most_relevant_first)
    out = torch.empty(n, len(steps), dtype=torch.bool)
    pairs = [(i, s) for i in range(n) for s in range(len(steps))]
    for start in range(0, len(pairs), batch_size):
        chunk = pairs[start : start + batch_size]
        idx = torch.tensor([i for i, _ in chunk])
        # (b, g, g) -> (b, 1, h, w): each grid cell covers one patch of pixels
        mask = torch.stack([keep[i, s] for i, s in chunk]).to(x.device, x.dtype)
        mask = mask.repeat_interleave(patch, dim=1).repeat_interleave(patch, dim=2)[:, None]
        logits = vit.forward(module, x[idx.to(x.device)] * mask)
        answer = logits.argmax(dim=1).cpu()
        for (i, s), a in zip(chunk, answer.tolist()):
            out[i, s] = a == int(targets[i])
    return out


def area(kept: torch.Tensor, steps: Sequence[float] = STEPS) -> float:
    """Area under the mean curve of ``kept`` ((n, steps) bool), in % of the area of a perfect 1."""
    curve = kept.float().mean(dim=0).numpy()
    xs = np.asarray(steps, dtype=np.float64)
    return float(np.trapezoid(curve, xs) / (xs[-1] - xs[0]) * 100.0)


def faithfulness(
    module: ViT,
    x: torch.Tensor,
    grids: torch.Tensor,
    targets: torch.Tensor,
    *,
    steps: Sequence[float] = STEPS,
    batch_size: int = 64,
) -> Faithfulness:
    """Both perturbation areas of one kind of map over a set of images."""
    pos = still_top1(module, x, grids, targets, most_relevant_first=True, steps=steps, batch_size=batch_size)
    neg = still_top1(module, x, grids, targets, most_relevant_first=False, steps=steps, batch_size=batch_size)
    return Faithfulness(area(pos, steps), area(neg, steps))


__all__ = ["STEPS", "Faithfulness", "area", "faithfulness", "removal_masks", "still_top1"]
