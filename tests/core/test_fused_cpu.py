"""The engine's fp32 CPU path runs oneDNN's fused linears: the same answers as the plain forward."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.support import PHOTOS, kept, tiny_model, write_image
from vit_desktop.core.inference.engine import Engine
from vit_desktop.core.inference.options import ClassifyOptions
from vit_desktop.core.inference.rollout import RolloutAccumulator
from vit_desktop.core.models import blocks, vit
from vit_desktop.core.types import ExplainOptions

pytestmark = pytest.mark.skipif(not vit.fused_cpu_available(), reason="this torch has no oneDNN fused linear")


@pytest.mark.parametrize("layer_scale", [False, True])
def test_fused_forward_is_the_plain_forward(layer_scale: bool) -> None:
    module, card = tiny_model()
    if layer_scale:  # DeiT III's layer scale: the residual is added outside the product
        from dataclasses import replace

        module = vit.build_module(replace(card.arch, layer_scale=True))
        for block in module.encoder.layers:
            torch.nn.init.uniform_(block.ls1, 0.5, 1.5)
            torch.nn.init.uniform_(block.ls2, 0.5, 1.5)
        torch.nn.init.normal_(module.heads.head.weight, std=0.5)
        module.eval()
    x = torch.randn(3, 3, 32, 32)
    with torch.inference_mode():
        plain = vit.forward(module, x)
        fused = vit.forward(module, x, fused=True)
    assert torch.allclose(fused, plain, atol=1e-5)


def test_a_map_does_not_change_the_fused_scores() -> None:
    module, _ = tiny_model()
    x = torch.randn(2, 3, 32, 32)
    with torch.inference_mode():
        alone = vit.forward(module, x, fused=True)
        acc = RolloutAccumulator()
        with_map = vit.forward(module, x, acc, fused=True)
    assert torch.equal(alone, with_map) and acc.product is not None


def test_fused_is_ignored_where_gradients_or_autocast_are_on() -> None:
    module, _ = tiny_model()
    x = torch.randn(2, 3, 32, 32)
    plain = vit.forward(module, x)  # gradients on: the plain ops, whatever is asked
    assert torch.equal(vit.forward(module, x, fused=True), plain)
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        assert torch.equal(vit.forward(module, x, fused=True), vit.forward(module, x))


@pytest.mark.skipif(not blocks.packing_available(), reason="this torch cannot pack weights for oneDNN")
def test_packed_weights_follow_the_model_and_go_with_it() -> None:
    """Weights trained in place after a pass are packed again (the next answers are the new
    weights'); a model let go takes its packed copies with it."""
    import gc

    module, _ = tiny_model()
    weights = {id(block.self_attention.in_proj_weight) for block in module.encoder.layers}
    x = torch.randn(2, 3, 32, 32)
    with torch.inference_mode():
        assert torch.allclose(vit.forward(module, x, fused=True), vit.forward(module, x), atol=1e-5)
    assert weights <= set(blocks._packed)
    with torch.no_grad():  # what an optimiser step does to a fine-tuned block
        for block in module.encoder.layers:
            block.mlp[0].weight.mul_(1.5)
            block.self_attention.in_proj_weight.add_(0.05)
    with torch.inference_mode():
        assert torch.allclose(vit.forward(module, x, fused=True), vit.forward(module, x), atol=1e-5)
    del module, block
    gc.collect()
    assert not weights & set(blocks._packed)


def test_two_streams_give_one_streams_answers_and_leave_the_threads_as_they_were(tmp_path: Path) -> None:
    """A batch computed as two halves at once: the same probabilities; torch's thread count as it
    was after a pass and after a cancelled one; the next pass still runs."""
    from vit_desktop.core.errors import Cancelled, CancelToken

    module, card = tiny_model()
    engine = Engine.from_module(module, card, device="cpu", precision="fp32")
    assert engine.streams
    paths = [write_image(tmp_path / f"{i}.png", seed=i) for i in range(5)]
    want = ClassifyOptions(keep_probabilities=True)
    threads = torch.get_num_threads()
    two = engine.classify(paths, want)
    assert torch.get_num_threads() == threads
    engine.streams = False
    one = engine.classify(paths, want)
    for a, b in zip(two, one, strict=True):
        np.testing.assert_allclose(kept(a.probabilities), kept(b.probabilities), atol=1e-6)
    engine.streams = True
    token = CancelToken()
    token.cancel()
    with pytest.raises(Cancelled), torch.inference_mode():
        engine._forward(torch.zeros(4, 3, 32, 32), want, token)
    assert torch.get_num_threads() == threads
    again = engine.classify(paths, want)
    np.testing.assert_allclose(kept(again[0].probabilities), kept(two[0].probabilities), atol=1e-6)


def labelled() -> list[tuple[Path, int]]:
    out = []
    for folder in (PHOTOS, PHOTOS.parent / "fewshot-dev"):
        table = folder / "labels.csv"
        if table.is_file():
            with table.open(encoding="utf-8") as f:
                out += [(folder / row["file"], int(row["imagenet_index"])) for row in csv.DictReader(f)]
    return out


def test_real_deit_fused_gives_the_plain_answers_on_every_labelled_photo(deit_path: Path, photos_dir: Path) -> None:
    """Top-1 the same on every shared photo, probabilities within 1e-4, maps or not."""
    engine = Engine.load(deit_path, device="cpu", precision="fp32")
    assert engine.fused
    paths = [p for p, _ in labelled()]
    want = ClassifyOptions(keep_probabilities=True, batch_size=16)
    fused = np.stack([kept(r.probabilities) for r in engine.classify(paths, want)])
    mapped = engine.classify(paths[:16], ClassifyOptions(keep_probabilities=True, batch_size=16,
                                                         explain=ExplainOptions()))
    engine.fused = False
    plain = np.stack([kept(r.probabilities) for r in engine.classify(paths, want)])
    assert (fused.argmax(1) == plain.argmax(1)).all()
    assert float(np.abs(fused - plain).max()) < 1e-4
    assert np.array_equal(np.stack([kept(r.probabilities) for r in mapped]), fused[:16])
