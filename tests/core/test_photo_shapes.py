"""Photos of any shape cost memory bounded by the model's input, not by their aspect ratio."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.support import REPO
from vit_desktop.core.models.preprocess import EXACT_RESIZE_AREA, RESAMPLE, model_input
from vit_desktop.core.types import Preprocess

# Runs in a fresh interpreter whose address space may grow by 1 GiB at most: a resize of the whole
# strip (22,072,000 x 248 pixels for 89000 x 1: 16 GB) fails there instead of taking the machine
# down. It prints how far the peak resident memory rose above where it was, in MB (Linux resets
# the peak on request: what importing torch took and gave back does not count).
_MEASURE = """
import os, re, resource, sys
from vit_desktop.core.models.preprocess import prepare_file
from vit_desktop.core.types import Preprocess
def kib(field):
    return int(re.search(field + r":\\s+(\\d+)", open("/proc/self/status").read()).group(1))
resource.setrlimit(resource.RLIMIT_AS, (kib("VmSize") * 1024 + (1 << 30), resource.RLIM_INFINITY))
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")
start = kib("VmRSS")
for path in sys.argv[1:]:
    assert prepare_file(path, Preprocess()).pixels.shape == (224, 224, 3), path
print((kib("VmHWM") - start) / 1024)
"""


def gradient(width: int, height: int) -> Image.Image:
    """A smooth, photo-like picture (noise would make the filters overshoot and clip)."""
    x = np.linspace(0, 255, width)[None, :]
    y = np.linspace(255, 0, height)[:, None]
    grey = ((x + y) / 2).astype(np.uint8)
    return Image.fromarray(np.stack([grey, 255 - grey, grey // 2], axis=2))


def whole_resize_then_crop(image: Image.Image, pp: Preprocess) -> np.ndarray:
    """What the libraries do: resize the whole photo, then take the centre crop."""
    rw, rh = pp.resized_size(*image.size)
    left, top, c = pp.crop_offset(rw), pp.crop_offset(rh), pp.crop_size
    return np.asarray(image.resize((rw, rh), RESAMPLE[pp.interpolation]).crop((left, top, left + c, top + c)))


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="measures memory through Linux's /proc")
def test_strips_of_one_pixel_take_the_memory_of_the_models_input(tmp_path: Path) -> None:
    paths = []
    for w, h in ((89000, 1), (1, 89000), (20000, 1)):
        path = tmp_path / f"strip_{w}x{h}.png"
        Image.linear_gradient("L").resize((w, h)).save(path)  # a few hundred bytes each
        paths.append(str(path))
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.run([sys.executable, "-c", _MEASURE, *paths], env=env, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert float(proc.stdout) < 64  # MB; resizing 89000 x 1 whole would take 16 GB


@pytest.mark.parametrize("interpolation", sorted(RESAMPLE))
@pytest.mark.parametrize("size", [(2000, 20), (20, 2000), (5000, 3), (31, 900)])
def test_a_strips_crop_is_the_crop_of_the_whole_resize(interpolation: str, size: tuple[int, int]) -> None:
    pp = Preprocess(crop_size=32, resize_size=36, interpolation=interpolation)
    rw, rh = pp.resized_size(*size)
    assert rw * rh > EXACT_RESIZE_AREA * 36**2  # the photo is past the exact path's budget
    image = gradient(*size)
    ours = model_input(image, pp).astype(int)
    # The same region, sampled at the same places: the filter weights differ in their last bits.
    assert np.abs(ours - whole_resize_then_crop(image, pp)).max() <= 1


@pytest.mark.parametrize("interpolation", sorted(RESAMPLE))
def test_a_panorama_within_the_budget_is_the_libraries_result_to_the_bit(interpolation: str) -> None:
    pp = Preprocess(crop_size=32, resize_size=36, interpolation=interpolation)
    noise = Image.fromarray(np.random.default_rng(3).integers(0, 256, (40, 600, 3), dtype=np.uint8))  # 15:1
    rw, rh = pp.resized_size(*noise.size)
    assert rw * rh <= EXACT_RESIZE_AREA * 36**2
    np.testing.assert_array_equal(model_input(noise, pp), whole_resize_then_crop(noise, pp))


def test_a_strip_with_padding_keeps_black_outside_the_photo() -> None:
    # The resize is 36 high, the crop 48: rows above and below the photo are black, as PIL's crop pads.
    pp = Preprocess(crop_size=48, resize_size=36, interpolation="bilinear")
    image = gradient(4000, 4)
    out = model_input(image, pp)
    assert out.shape == (48, 48, 3)
    assert (out[:6] == 0).all() and (out[-6:] == 0).all()
    np.testing.assert_allclose(out.astype(int), whole_resize_then_crop(image, pp).astype(int), atol=1)
