"""Overlays: the colour map, the opacity and the crop the model saw, as a user sees them."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vit_desktop.core.io.heatmap import COLORMAPS, colorize, render_overlay, save_overlay_png
from vit_desktop.core.types import Heatmap


def hot_corner_map(image_size=(200, 100)) -> Heatmap:
    grid = np.zeros((4, 4), dtype=np.float32)
    grid[0, 0] = 1.0  # the top-left patch of the crop
    # A 100x100 centre crop of a 200x100 photo.
    return Heatmap(grid=grid, crop_box=(50.0, 0.0, 150.0, 100.0), image_size=image_size)


@pytest.mark.parametrize("name", COLORMAPS)
def test_colour_maps_run_dark_to_bright(name: str) -> None:
    lut = colorize(np.linspace(0, 1, 256), name).astype(float)
    luminance = lut @ np.array([0.2126, 0.7152, 0.0722])
    if name == "jet":  # not perceptual: dark blue to dark red via bright yellow
        assert lut[0, 2] > lut[0, 0] and lut[-1, 0] > lut[-1, 2]
    else:  # perceptual maps brighten monotonically
        assert np.all(np.diff(luminance) > -1.0) and luminance[-1] - luminance[0] > 150


def test_overlay_tints_only_inside_the_crop_and_follows_opacity() -> None:
    photo = Image.new("RGB", (200, 100), (0, 128, 0))
    hm = hot_corner_map()
    out = np.asarray(render_overlay(photo, hm, colormap="inferno", opacity=0.5)).astype(int)
    assert (out[50, 10] == (0, 128, 0)).all() and (out[50, 190] == (0, 128, 0)).all()  # outside the crop
    hot = out[5, 55]
    expected = 0.5 * np.array([0, 128, 0]) + 0.5 * colorize(np.array(1.0), "inferno")
    assert np.abs(hot - expected).max() <= 1
    assert not (out[90, 140] == (0, 128, 0)).all()  # cold but still inside: tinted dark
    clear = np.asarray(render_overlay(photo, hm, opacity=0.0))
    assert (clear == np.asarray(photo)).all()


def test_transparent_low_leaves_cold_areas_untouched() -> None:
    photo = Image.new("RGB", (200, 100), (10, 20, 30))
    out = np.asarray(render_overlay(photo, hot_corner_map(), opacity=0.8, transparent_low=True)).astype(int)
    assert (out[90, 140] == (10, 20, 30)).all()
    assert not (out[5, 55] == (10, 20, 30)).all()


def test_overlay_on_a_thumbnail_scales_the_crop() -> None:
    thumb = Image.new("RGB", (100, 50), (0, 0, 0))
    out = np.asarray(render_overlay(thumb, hot_corner_map(), opacity=1.0)).astype(int)
    assert (out[25, 10] == 0).all() and out[2, 27].sum() > 500  # crop now spans x 25..75


def test_png_export_is_atomic_and_asks_before_replacing(tmp_path: Path) -> None:
    target = tmp_path / "overlay.png"
    photo = Image.new("RGB", (200, 100), (0, 128, 0))
    save_overlay_png(target, photo, hot_corner_map())
    with Image.open(target) as img:
        assert img.size == (200, 100)
    if os.name == "posix":  # readable by others like any saved file, not private like a temp file
        assert target.stat().st_mode & 0o777 == 0o644
    with pytest.raises(FileExistsError):
        save_overlay_png(target, photo, hot_corner_map())
    assert [p.name for p in tmp_path.iterdir()] == ["overlay.png"]
