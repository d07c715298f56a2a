"""The perturbation test that bench/bench_explain.py and the faithfulness tests rely on."""

from __future__ import annotations

import pytest
import torch

from vit_desktop.core.inference.faithfulness import STEPS, area, removal_masks


def test_masks_remove_the_ranked_patches_in_order() -> None:
    grid = torch.arange(16, dtype=torch.float32).view(1, 4, 4)  # patch 15 the most relevant
    keep = removal_masks(grid, STEPS, most_relevant_first=True)
    assert keep.shape == (1, 10, 4, 4)
    removed = [16 - int(k.sum()) for k in keep[0]]
    assert removed == [round(f * 16) for f in STEPS]
    assert not keep[0, 1].flatten()[14:].any() and keep[0, 1].flatten()[:14].all()  # 15 and 14 first
    least = removal_masks(grid, STEPS, most_relevant_first=False)
    assert not least[0, 1].flatten()[:2].any() and least[0, 1].flatten()[2:].all()


def test_a_flat_map_removes_patches_in_grid_order_on_every_machine() -> None:
    keep = removal_masks(torch.ones(2, 4, 4), STEPS, most_relevant_first=True)
    assert torch.equal(keep[0], keep[1])
    assert not keep[0, 2].flatten()[:3].any() and keep[0, 2].flatten()[3:].all()


def test_area_is_in_percent_of_a_curve_that_never_falls() -> None:
    assert area(torch.ones(3, 10, dtype=torch.bool)) == 100.0
    falls_at_once = torch.zeros(3, 10, dtype=torch.bool)
    falls_at_once[:, 0] = True
    assert area(falls_at_once) == pytest.approx(100.0 * 0.05 / 0.9)  # a triangle 0.1 wide over 0.9
