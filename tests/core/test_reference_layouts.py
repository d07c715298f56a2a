"""Checkpoints and preprocessing read the way their own libraries read them.

The references in ``tests/data/reference`` were made by timm and transformers themselves
(``make_reference.py`` there): tiny random models of every ViT variant with their logits, and the
``pixel_values`` their image processors and eval transforms make of one photo.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from vit_desktop.core.errors import ModelError
from vit_desktop.core.inference.engine import Engine
from vit_desktop.core.inference.options import ClassifyOptions
from vit_desktop.core.models import vit
from vit_desktop.core.models.checkpoints import load_checkpoint
from vit_desktop.core.models.hub_configs import hf_preprocess, timm_config, timm_preprocess
from vit_desktop.core.models.preprocess import model_input, normalized_tensor
from vit_desktop.core.types import ExplainOptions

REF = Path(__file__).resolve().parents[1] / "data" / "reference"
PROCESSORS = json.loads((REF / "processors.json").read_text(encoding="utf-8"))
PIXELS = np.load(REF / "processors.npz")


def photo() -> Image.Image:
    with Image.open(REF / "photo.png") as im:
        return im.convert("RGB")


def run(module: vit.ViT, folder: Path) -> torch.Tensor:
    x = torch.from_numpy(np.load(folder / "input.npy"))
    with torch.no_grad():
        return vit.forward(module, x)


@pytest.mark.parametrize("variant", ["plain", "no_qkv_bias", "layer_scale", "reg4_gap", "cls_reg4", "cls_gap_fc_norm",
                                     "gap_no_fc_norm"])
def test_timm_variants_give_timms_logits(variant: str) -> None:
    folder = REF / "timm" / variant
    module, card = load_checkpoint(folder)
    expected = np.load(folder / "logits.npy")
    np.testing.assert_allclose(run(module, folder).numpy(), expected, atol=2e-5, rtol=1e-5)
    assert card.description.startswith("timm vit_tiny_patch16_224")
    # Every map reads the patches only: register tokens take part in the product, not in the grid.
    engine = Engine.from_module(module, card, device="cpu")
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 40, 3), dtype=np.uint8))
    for method in ("rollout", "class"):
        heat = engine.explain(image, ExplainOptions(method=method))
        assert heat.grid.shape == (4, 4) and float(heat.grid.max()) == pytest.approx(1.0)


def test_variants_are_named_in_the_description() -> None:
    _, card = load_checkpoint(REF / "timm" / "reg4_gap")
    assert "4 register tokens" in card.description and "average pooling + fc_norm" in card.description
    assert card.arch.reg_tokens == 4 and not card.arch.class_token and not card.arch.pos_embed_prefix
    _, card = load_checkpoint(REF / "timm" / "layer_scale")
    assert "layer scale" in card.description


def test_a_config_for_another_size_resamples_the_position_embedding_as_timm_does() -> None:
    folder = REF / "timm" / "plain_at48"
    module, card = load_checkpoint(folder)
    assert card.arch.image_size == 48 and card.preprocess.crop_size == 48
    np.testing.assert_allclose(run(module, folder).numpy(), np.load(folder / "logits.npy"), atol=2e-5, rtol=1e-5)


@pytest.mark.parametrize(("variant", "feature"), [("clip_pre_norm", "norm_pre"), ("distilled", "distilled DeiT")])
def test_variants_out_of_reach_are_refused_naming_the_feature(variant: str, feature: str) -> None:
    with pytest.raises(ModelError) as err:
        load_checkpoint(REF / "timm" / variant)
    assert feature in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("model", ["vit", "deit"])
def test_hugging_face_folders_give_transformers_logits(model: str) -> None:
    folder = REF / "hf" / model
    module, card = load_checkpoint(folder)
    np.testing.assert_allclose(run(module, folder).numpy(), np.load(folder / "logits.npy"), atol=2e-5, rtol=1e-5)
    assert card.labels == ("cat", "dog", "bird")


@pytest.mark.parametrize("case", sorted(k for k in PROCESSORS if not k.startswith("timm_")))
def test_hugging_face_processors_make_their_exact_pixel_values(case: str) -> None:
    pp = hf_preprocess(PROCESSORS[case], None, 32)
    ours = normalized_tensor(photo(), pp).numpy()
    np.testing.assert_array_equal(ours, PIXELS[case])


@pytest.mark.parametrize("case", sorted(k for k in PROCESSORS if k.startswith("timm_")))
def test_timm_eval_transforms_make_their_pixel_values(case: str) -> None:
    pp = timm_preprocess(timm_config({"architecture": "vit_tiny_patch16_224", **PROCESSORS[case]}))
    ours = normalized_tensor(photo(), pp).numpy()
    # timm divides by 255 in float32, the processors in float64: one float32 rounding apart at most.
    np.testing.assert_allclose(ours, PIXELS[case], atol=1e-6, rtol=0)


def test_a_hugging_face_folder_classifies_what_its_processor_makes(tmp_path: Path) -> None:
    folder = tmp_path / "deit"
    shutil.copytree(REF / "hf" / "deit", folder)
    (folder / "preprocessor_config.json").write_text(json.dumps(PROCESSORS["deit_36_crop32_bicubic"]),
                                                     encoding="utf-8")
    engine = Engine.load(folder, device="cpu")
    result = engine.classify_image(photo(), "photo.png", ClassifyOptions(keep_probabilities=True))
    x = torch.from_numpy(PIXELS["deit_36_crop32_bicubic"])[None]
    with torch.no_grad():
        expected = vit.forward(engine.module, x).softmax(1)[0].numpy()
    assert result.probabilities is not None
    np.testing.assert_allclose(result.probabilities, expected, atol=1e-5)
    # The map lies over the region the processor kept: 36x36 squashed, then the centre 32.
    left, top, right, bottom = result.heatmap.crop_box if result.heatmap else engine.rollout(
        photo(), ExplainOptions()).crop_box
    assert (left, top) == pytest.approx((2 * 71 / 36, 2 * 53 / 36))
    assert (right, bottom) == pytest.approx((34 * 71 / 36, 34 * 53 / 36))


def test_a_squashed_photos_map_covers_the_whole_photo() -> None:
    pp = hf_preprocess(PROCESSORS["vit_32_bilinear"], None, 32)
    assert pp.crop_box(71, 53) == (0.0, 0.0, 71.0, 53.0)
    assert model_input(photo(), pp).shape == (32, 32, 3)
