"""The rules of each config format that the reference fixtures do not cover, by hand."""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import pytest
from PIL import Image

from vit_desktop.core.errors import ModelError
from vit_desktop.core.models.hub_configs import default_preprocess, hf_preprocess, timm_config, timm_preprocess
from vit_desktop.core.models.preprocess import normalized_tensor


def hand_hf(image: Image.Image, resize: tuple[int, int] | None, crop: int | None, resample: int,
            mean: list[float], std: list[float], rescale: float = 1 / 255) -> np.ndarray:
    """A PIL image processor's steps, written out: resize, floor-offset centre crop, rescale, normalise."""
    if resize is not None:
        image = image.resize((resize[1], resize[0]), resample)
    x = np.asarray(image).transpose(2, 0, 1)
    if crop is not None:
        top, left = (x.shape[1] - crop) // 2, (x.shape[2] - crop) // 2
        x = x[:, top : top + crop, left : left + crop]
    y = (x.astype(np.float64) * rescale).astype(np.float32)
    return (y - np.asarray(mean, np.float32)[:, None, None]) / np.asarray(std, np.float32)[:, None, None]


@pytest.fixture
def image() -> Image.Image:
    return Image.fromarray(np.random.default_rng(5).integers(0, 256, (45, 61, 3), dtype=np.uint8))


def test_legacy_feature_extractor_file_with_a_bare_size(image: Image.Image) -> None:
    legacy = {"feature_extractor_type": "ViTFeatureExtractor", "size": 32, "resample": 2, "do_normalize": True,
              "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5]}
    pp = hf_preprocess(legacy, None, 32)
    assert (pp.resize_mode, pp.resize_size, pp.crop_size) == ("squash", 32, 32)
    np.testing.assert_array_equal(normalized_tensor(image, pp).numpy(),
                                  hand_hf(image, (32, 32), None, 2, [0.5] * 3, [0.5] * 3))
    # For ConvNeXT a bare number is a shortest edge, and its crop_pct default applies.
    pp = hf_preprocess({"feature_extractor_type": "ConvNextFeatureExtractor", "size": 32}, None, 32)
    assert (pp.resize_mode, pp.resize_size, pp.crop_size) == ("shorter", int(32 / 0.875), 32)


def test_fast_processor_dump_with_nulls(image: Image.Image) -> None:
    fast: dict[str, Any] = {"image_processor_type": "DeiTImageProcessorFast", "crop_size": {"height": 32, "width": 32},
            "do_center_crop": True, "size": {"height": 40, "width": 40}, "resample": 3, "default_to_square": True,
            "data_format": "channels_first", "device": None, "return_tensors": None, "do_convert_rgb": None,
            "image_mean": [0.485, 0.456, 0.406], "image_std": [0.229, 0.224, 0.225]}
    pp = hf_preprocess(fast, None, 32)
    expected = hand_hf(image, (40, 40), 32, 3, fast["image_mean"], fast["image_std"])
    np.testing.assert_array_equal(normalized_tensor(image, pp).numpy(), expected)


def test_the_model_type_names_the_processor_when_the_file_does_not() -> None:
    pp = hf_preprocess({"size": {"height": 36, "width": 36}, "crop_size": {"height": 32, "width": 32}},
                       {"model_type": "deit"}, 32)
    assert (pp.resize_mode, pp.resize_size, pp.crop_size, pp.interpolation) == ("squash", 36, 32, "bicubic")


def test_rescale_and_normalise_switches(image: Image.Image) -> None:
    pp = hf_preprocess({"image_processor_type": "ViTImageProcessor", "size": {"height": 32, "width": 32},
                        "do_normalize": False}, None, 32)
    x = normalized_tensor(image, pp).numpy()
    assert 0.0 <= x.min() and x.max() <= 1.0  # rescaled, not normalised
    pp = hf_preprocess({"image_processor_type": "ViTImageProcessor", "size": {"height": 32, "width": 32},
                        "do_rescale": False, "do_normalize": False}, None, 32)
    assert normalized_tensor(image, pp).numpy().max() > 200  # pixel values as they are


@pytest.mark.parametrize(("config", "message"), [
    ({"image_processor_type": "ViTImageProcessor", "size": {"height": 224, "width": 160}}, "not square"),
    ({"image_processor_type": "ViTImageProcessor", "size": {"height": 384, "width": 384}}, "weights are for"),
    ({"image_processor_type": "ViTImageProcessor", "size": {"shortest_edge": 32}}, "every shape"),
    ({"image_processor_type": "MysteryImageProcessor", "size": 32}, "bare number"),
    ({"image_processor_type": "ViTImageProcessor", "size": {"longest_edge": 32}}, "unsupported size"),
])
def test_processors_that_cannot_be_followed_are_refused_in_one_line(config: dict, message: str) -> None:
    with pytest.raises(ModelError) as err:
        hf_preprocess(config, None, 32)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_timm_defaults_and_legacy_single_dict() -> None:
    pp = timm_preprocess(timm_config({"architecture": "vit_small_patch16_384",
                                      "pretrained_cfg": {"input_size": [3, 384, 384], "crop_pct": 1.0}}))
    assert (pp.resize_size, pp.crop_size, pp.interpolation, pp.resize_mode) == (384, 384, "bicubic", "shorter")
    legacy = {"architecture": "deit_tiny_patch16_224", "input_size": [3, 224, 224], "crop_pct": 0.9,
              "labels": ["a", "b"], "num_classes": 2}
    cfg = timm_config(legacy)
    assert cfg.labels == ("a", "b") and timm_preprocess(cfg).resize_size == math.floor(224 / 0.9) == 248
    with pytest.raises(ModelError, match="crop_mode"):
        timm_preprocess(timm_config({"architecture": "x", "pretrained_cfg": {"crop_mode": "zoom"}}))


def test_files_without_a_config_get_their_librarys_defaults() -> None:
    assert default_preprocess(224, "torchvision").resize_size == 256
    assert default_preprocess(224, "torchvision").interpolation == "bilinear"
    assert default_preprocess(384, "timm").resize_size == math.floor(384 / 0.875) == 438
    hf = default_preprocess(224, "huggingface")
    assert (hf.resize_mode, hf.mean) == ("squash", (0.5, 0.5, 0.5))


def test_round_half_even_and_floor_crops_differ_as_their_libraries_do() -> None:
    # A 203x200 photo, shortest edge 224 -> 227x224: torchvision/timm start the crop at 2, HF at 1.
    tv = timm_preprocess(timm_config({"architecture": "x", "pretrained_cfg": {"input_size": [3, 224, 224],
                                                                              "crop_pct": 1.0}}))
    assert tv.resized_size(203, 200) == (227, 224) and tv.crop_offset(227) == 2
    hf = hf_preprocess({"image_processor_type": "CLIPImageProcessor", "size": {"shortest_edge": 224},
                        "crop_size": {"height": 224, "width": 224}}, None, 224)
    assert hf.resized_size(203, 200) == (227, 224) and hf.crop_offset(227) == 1
    assert json.dumps(hf.describe()) and hf.describe() == "resize 224 (shorter side), crop 224, bicubic"
