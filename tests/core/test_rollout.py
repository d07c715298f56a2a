"""Rollout maths against a plain implementation, and a trained model's rollout finding the object."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torchvision.models import VisionTransformer

from tests.reference import attention_by_hooks, plain_rollout
from vit_desktop.core.inference.faithfulness import faithfulness
from vit_desktop.core.inference.rollout import (
    REFINE_FRACTION,
    RolloutAccumulator,
    class_relevance,
    class_targets,
    discard_lowest,
    relevance,
)
from vit_desktop.core.models.vit import forward


@pytest.fixture
def model() -> VisionTransformer:
    torch.manual_seed(0)
    m = VisionTransformer(image_size=32, patch_size=8, num_layers=3, num_heads=4, hidden_dim=32, mlp_dim=64, num_classes=5)
    with torch.no_grad():
        for p in m.parameters():
            p.normal_(0, 0.3)
    return m.eval()


def test_forward_with_attention_is_the_models_own_forward(model: VisionTransformer) -> None:
    x = torch.randn(3, 3, 32, 32)
    seen: list[tuple[int, tuple[int, ...]]] = []
    with torch.no_grad():
        ours = forward(model, x, lambda i, p: seen.append((i, tuple(p.shape))))
        fused = forward(model, x)  # what plain classification runs on the CPU
        ref = model(x)
    assert torch.allclose(ours, ref, atol=1e-5)
    assert torch.allclose(fused, ref, atol=1e-5)
    assert seen == [(i, (3, 4, 17, 17)) for i in range(3)]


@pytest.mark.parametrize("fusion, discard", [("mean", 0.0), ("max", 0.0), ("min", 0.0), ("mean", 0.5)])
def test_rollout_matches_plain_implementation_for_every_batch_item(model, fusion: str, discard: float) -> None:
    x = torch.randn(3, 3, 32, 32)
    _, maps = attention_by_hooks(model, x)
    acc = RolloutAccumulator(fusion, discard)
    with torch.no_grad():
        forward(model, x, acc)
    ours = acc.grid().double().numpy()
    assert ours.shape == (3, 4, 4)
    np.testing.assert_allclose(ours, plain_rollout(maps, fusion, discard), atol=1e-4)
    # Batch items are independent: each differs from the others.
    assert not np.allclose(ours[0], ours[1])


def test_rollout_product_stays_fp32_under_half_precision_autocast(model) -> None:
    x = torch.randn(2, 3, 32, 32)
    reference = RolloutAccumulator()
    with torch.no_grad():
        forward(model, x, reference)
    acc = RolloutAccumulator()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):  # what a GPU runs under fp16
        forward(model, x, acc)
    assert acc.product is not None and acc.product.dtype == torch.float32
    assert torch.allclose(acc.grid(), reference.grid(), atol=0.05)


def test_class_relevance_is_accumulated_in_fp32_under_half_precision_autocast() -> None:
    torch.manual_seed(0)
    kept = [torch.rand(2, 3, 17, 17).softmax(-1) for _ in range(12)]
    grads = [torch.randn(2, 3, 17, 17) for _ in range(12)]
    reference = relevance(kept, grads)
    with torch.autocast("cpu", dtype=torch.bfloat16):  # what a GPU runs under fp16
        under_autocast = relevance(kept, grads)
    assert under_autocast.dtype == torch.float32
    assert torch.allclose(under_autocast, reference, rtol=1e-5, atol=1e-6)


def test_discard_keeps_the_cls_column() -> None:
    fused = torch.rand(2, 5, 5)
    fused[:, :, 0] = 0.0  # the lowest values of all, and still kept
    out = discard_lowest(fused, 0.5)
    assert torch.equal(out[:, :, 0], fused[:, :, 0])
    for s in range(2):
        rest = fused[s, :, 1:].flatten()
        zeroed = out[s, :, 1:].flatten() == 0
        assert int(zeroed.sum()) == int(25 * 0.5)
        assert rest[zeroed].max() <= rest[~zeroed].min()  # exactly the lowest ones


def test_class_maps_are_per_sample_and_class_specific(model) -> None:
    x = torch.randn(2, 3, 32, 32)
    _, _, both = class_relevance(model, x, class_targets(torch.tensor([1, 3]), 5))
    _, _, first = class_relevance(model, x[:1], class_targets(torch.tensor([1]), 5))
    _, _, other_class = class_relevance(model, x[:1], class_targets(torch.tensor([4]), 5))
    assert torch.allclose(both[0], first[0], atol=1e-5)
    assert not torch.allclose(first[0], other_class[0], atol=1e-3)
    assert float(both.min()) >= 0.0 and torch.allclose(both.flatten(1).amax(1), torch.ones(2))
    assert all(p.grad is None for p in model.parameters())  # weights untouched


def test_class_map_of_the_top1_is_picked_in_the_same_pass(model) -> None:
    x = torch.randn(3, 3, 32, 32)
    logits, targets, maps = class_relevance(model, x)
    top = logits.argmax(1)
    assert torch.equal(targets.argmax(1), top) and torch.equal(targets.sum(1), torch.ones(3))
    _, _, asked = class_relevance(model, x, class_targets(top, 5))
    assert torch.allclose(maps, asked, atol=1e-6)


def test_a_category_map_weighs_its_members(model) -> None:
    x = torch.randn(1, 3, 32, 32)
    group = torch.tensor([[1.0, 1.0, 0.0, 0.0, 0.0]])
    _, _, of_group = class_relevance(model, x, group)
    _, _, of_one = class_relevance(model, x, class_targets(torch.tensor([0]), 5))
    assert of_group.shape == (1, 4, 4) and not torch.allclose(of_group, of_one, atol=1e-4)


def test_refined_map_keeps_the_first_pass_top_patches_on_top(model) -> None:
    x = torch.randn(2, 3, 32, 32)
    _, _, plain = class_relevance(model, x)
    _, _, refined = class_relevance(model, x, refine=True)
    k = max(1, round(REFINE_FRACTION * 16))
    for s in range(2):
        top = set(plain[s].flatten().topk(k).indices.tolist())
        assert set(refined[s].flatten().topk(k).indices.tolist()) == top
        rest = [i for i in range(16) if i not in top]
        assert float(refined[s].flatten()[rest].max()) < float(refined[s].flatten()[list(top)].min())
        assert torch.allclose(refined[s].flatten()[list(top)], plain[s].flatten()[list(top)])


def make_object_images(n: int, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
    """32x32 noise with one 8x8 coloured square on the patch grid; class = its colour."""
    colours = np.array([[1.0, -1.0, -1.0], [-1.0, 1.0, -1.0], [-1.0, -1.0, 1.0]])
    x = rng.normal(0.0, 0.6, size=(n, 3, 32, 32))
    labels = rng.integers(0, 3, size=n)
    cells = rng.integers(0, 16, size=n)
    for i in range(n):
        r, c = divmod(int(cells[i]), 4)
        x[i, :, r * 8 : r * 8 + 8, c * 8 : c * 8 + 8] = colours[labels[i]][:, None, None] * 1.5
    return torch.tensor(x, dtype=torch.float32), torch.tensor(labels), cells


@pytest.fixture(scope="module")
def trained() -> VisionTransformer:
    """A tiny ViT that learnt to name the colour of a square on noise (a few seconds on a CPU)."""
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    m = VisionTransformer(image_size=32, patch_size=8, num_layers=2, num_heads=2, hidden_dim=32, mlp_dim=64, num_classes=3)
    x, y, _ = make_object_images(512, rng)
    opt = torch.optim.AdamW(m.parameters(), lr=3e-3)
    m.train()
    for _ in range(6):
        perm = torch.randperm(len(x))
        for i in range(0, len(x), 64):
            idx = perm[i : i + 64]
            loss = torch.nn.functional.cross_entropy(m(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return m.eval()


def test_rollout_of_a_trained_model_lands_on_the_object(trained: VisionTransformer) -> None:
    m = trained
    xt, yt, cells = make_object_images(200, np.random.default_rng(1))
    acc = RolloutAccumulator()
    with torch.no_grad():
        pred = forward(m, xt, acc).argmax(1)
    assert (pred == yt).float().mean() > 0.9  # it learnt the task
    peaks = acc.grid().flatten(1).argmax(1).numpy()
    hit_rate = float((peaks == cells).mean())
    assert hit_rate > 0.5, f"rollout peak on the object in {hit_rate:.0%} of images (chance is 6%)"


def make_majority_images(n: int, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """32x32 noise with three 8x8 squares on the patch grid, two of one colour and one of another;
    class = the colour of the two. The answer rests on two squares, while the model must look at all
    three: what a class map should tell apart from where the model looked."""
    colours = np.array([[1.0, -1.0, -1.0], [-1.0, 1.0, -1.0], [-1.0, -1.0, 1.0]])
    x = rng.normal(0.0, 0.6, size=(n, 3, 32, 32))
    major = rng.integers(0, 3, size=n)
    minor = (major + rng.integers(1, 3, size=n)) % 3
    for i in range(n):
        cells = rng.choice(16, 3, replace=False)
        for colour, cell in zip((major[i], major[i], minor[i]), cells):
            r, c = divmod(int(cell), 4)
            x[i, :, r * 8 : r * 8 + 8, c * 8 : c * 8 + 8] = colours[colour][:, None, None] * 1.5
    return torch.tensor(x, dtype=torch.float32), torch.tensor(major)


def test_class_map_is_more_faithful_than_rollout_and_far_more_than_random() -> None:
    """The perturbation test: removing what a map ranks first should topple the answer fastest."""
    torch.manual_seed(0)
    m = VisionTransformer(image_size=32, patch_size=8, num_layers=2, num_heads=2, hidden_dim=32, mlp_dim=64, num_classes=3)
    x, y = make_majority_images(2048, np.random.default_rng(0))
    opt = torch.optim.AdamW(m.parameters(), lr=3e-3)
    for _ in range(8):
        perm = torch.randperm(len(x))
        for i in range(0, len(x), 64):
            idx = perm[i : i + 64]
            loss = torch.nn.functional.cross_entropy(m(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    m.eval()
    xt, yt = make_majority_images(120, np.random.default_rng(1))
    acc = RolloutAccumulator()
    with torch.no_grad():
        targets = forward(m, xt, acc).argmax(1)
    assert (targets == yt).float().mean() > 0.9  # it learnt the task
    _, _, class_maps = class_relevance(m, xt)
    random_maps = torch.rand(120, 4, 4, generator=torch.Generator().manual_seed(0))
    scores = {name: faithfulness(m, xt, grids, targets)
              for name, grids in (("class", class_maps), ("rollout", acc.grid()), ("random", random_maps))}
    pos = {k: round(v.positive, 1) for k, v in scores.items()}
    assert pos["class"] < pos["rollout"] - 5 and pos["rollout"] < pos["random"] - 20, pos
    assert scores["class"].negative > scores["random"].negative, scores
