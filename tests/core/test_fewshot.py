"""Few-shot heads that use a label hierarchy: they generalise to sub-types no training photo shows,
names alone make a classifier, cross-validation picks the head that fits, and the result is a model
file like any other."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torchvision.models import VisionTransformer

from tests.support import write_image
from vit_desktop.core.errors import VitDesktopError
from vit_desktop.core.inference.engine import Engine
from vit_desktop.core.inference.options import ClassifyOptions
from vit_desktop.core.labels.hierarchy import Hierarchy
from vit_desktop.core.training import TrainConfig, finetune
from vit_desktop.core.training.fewshot import (
    FeaturesHead,
    HeadData,
    HierarchyHead,
    NodeMatrix,
    candidates,
    select_head,
)
from vit_desktop.core.training.labelled_set import LabelledSet
from vit_desktop.core.types import Architecture, ModelCard, Preprocess

# Eight base classes, two per sub-type, in two broad groups: warm (red, orange, yellow, pink) and
# cool (blue, green, cyan, purple).
SUBTYPES = ["red", "orange", "yellow", "pink", "blue", "green", "cyan", "purple"]


def tiny_hierarchy() -> Hierarchy:
    nodes: dict[str, tuple[list[str], list[str]]] = {
        "colour": (["colour"], []),
        "warm": (["warm", "warm colour"], ["colour"]),
        "cool": (["cool", "cool colour"], ["colour"]),
    }
    for i, name in enumerate(SUBTYPES):
        nodes[name] = ([name], ["warm" if i < 4 else "cool"])
    return Hierarchy.from_edges(SUBTYPES, nodes)


def synthetic(seed: int, per_subtype: int = 6) -> tuple[HeadData, np.ndarray]:
    """Photos as a frozen base model would see them: probabilities peaked on the photo's own
    sub-type (mostly right), and features in a cluster per sub-type, far from the other clusters."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 3, (len(SUBTYPES), 16))
    sub = np.repeat(np.arange(len(SUBTYPES)), per_subtype)
    logits = rng.normal(0, 1, (len(sub), len(SUBTYPES)))
    logits[np.arange(len(sub)), sub] += 4.0
    features = centres[sub] + rng.normal(0, 0.5, (len(sub), 16))
    y = (sub >= 4).astype(int)  # 0 warm, 1 cool
    return HeadData(logits, features, y), sub


def test_the_hierarchy_head_generalises_to_sub_types_no_training_photo_shows() -> None:
    h = tiny_hierarchy()
    nm = NodeMatrix(h)
    data, sub = synthetic(0)
    seen = np.isin(sub, [0, 1, 4, 5])  # red, orange | blue, green
    train, test = data.take(np.flatnonzero(seen)), data.take(np.flatnonzero(~seen))  # yellow, pink | cyan, purple
    hierarchy = HierarchyHead(nm, [None, None]).fit(train, 2)
    features = FeaturesHead().fit(train, 2)
    acc = {name: float((p.log_proba(test).argmax(1) == test.y).mean())
           for name, p in (("hierarchy", hierarchy), ("features", features))}
    assert acc["hierarchy"] >= 0.9, acc
    assert acc["features"] <= 0.75, acc  # new clusters: the feature head is guessing
    # What the photos chose covers the sub-types they do not show: each class owns its whole group
    # ("cool", and "colour" other than cool is "warm" by the narrowest-owns rule).
    assert hierarchy.masks is not None
    assert hierarchy.masks[:, 0].tolist() == [1.0] * 4 + [0.0] * 4
    assert hierarchy.masks[:, 1].tolist() == [0.0] * 4 + [1.0] * 4


def test_cross_validation_picks_the_head_the_task_needs() -> None:
    h = tiny_hierarchy()
    data, sub = synthetic(1)
    # The hierarchy can tell warm from cool: a hierarchy head wins (names resolve, so "names" too).
    heads = candidates(2, [_resolved(h, "warm"), _resolved(h, "cool")], h)
    choice = select_head(data, 2, heads)
    assert choice.name in ("names", "hierarchy", "blend")
    assert choice.score is not None and choice.score.accuracy >= 0.9
    # Two classes inside one group ("red and yellow" vs "orange and pink"): only features can tell.
    warm = np.flatnonzero(sub < 4)
    inside = HeadData(data.logits[warm], data.features[warm], np.isin(sub[warm], [1, 3]).astype(int))
    choice = select_head(inside, 2, candidates(2, [None, None], h))
    assert choice.name in ("blend", "features", "probabilities"), choice.summary()
    assert choice.score is not None and choice.score.accuracy >= 0.9
    assert "CV accuracy" in choice.summary()


def _resolved(h: Hierarchy, name: str):  # type: ignore[no-untyped-def]
    (r,) = h.resolve_classes([name])
    return r


# --------------------------------------------------------------------------------------------
# The whole path: a tiny ViT whose 8 classes the tiny hierarchy groups


def tiny_base() -> Engine:
    torch.manual_seed(0)
    module = VisionTransformer(image_size=32, patch_size=8, num_layers=2, num_heads=2, hidden_dim=16, mlp_dim=32,
                               num_classes=len(SUBTYPES))
    torch.nn.init.normal_(module.heads.head.weight, std=0.5)
    card = ModelCard("tiny colours", "file", "", Architecture(32, 8, 2, 2, 16, 32, len(SUBTYPES)), tuple(SUBTYPES),
                     Preprocess(crop_size=32, resize_size=36))
    return Engine.from_module(module, card, device="cpu")


def test_names_alone_make_a_model_whose_scores_are_the_base_models_mass(tmp_path: Path) -> None:
    base = tiny_base()
    data = LabelledSet(("warm", "cool"))  # no photos at all
    result = finetune(base, data, TrainConfig(mode="head"), hierarchy=tiny_hierarchy())
    assert result.metrics["selection"]["head"] == "names"
    assert result.card.head is not None and result.card.head.mass
    photo = write_image(tmp_path / "p.png", size=(40, 40))
    base_p = np.zeros(len(SUBTYPES))
    for pred in base.classify([photo], ClassifyOptions(top_k=len(SUBTYPES)))[0].predictions:
        base_p[pred.index] = pred.score
    warm, cool = base_p[:4].sum(), base_p[4:].sum()
    trained = Engine.from_module(result.module, result.card, device="cpu")
    (r,) = trained.classify([photo])
    got = {p.label: p.score for p in r.predictions}
    eps = result.card.head.eps
    assert got["warm"] == pytest.approx((warm + eps) / (warm + cool + 2 * eps), abs=1e-5)
    # Saved and loaded: the same answers, and maps of the user's classes work.
    path = result.save(tmp_path / "warm-cool.safetensors")
    again = Engine.load(path, device="cpu")
    assert again.card.head == result.card.head and again.card.labels == ("warm", "cool")
    (r2,) = again.classify([photo])
    assert [(p.label, round(p.score, 6)) for p in r2.predictions] == [(p.label, round(p.score, 6))
                                                                       for p in r.predictions]
    assert again.explain_class(photo, 1).grid.shape == (4, 4)


def test_a_class_without_photos_needs_a_name_the_model_knows(tmp_path: Path) -> None:
    base = tiny_base()
    folder = tmp_path / "data"
    for i in range(3):
        write_image(folder / "mine" / f"{i}.png", seed=i)
    (folder / "cool").mkdir()
    data = LabelledSet.from_folder(folder)
    result = finetune(base, data, TrainConfig(mode="head"), hierarchy=tiny_hierarchy())  # "cool" is a prior
    assert result.card.labels == ("cool", "mine")
    (folder / "nameless").mkdir()
    with pytest.raises(VitDesktopError, match="'nameless' has 0 images"):
        finetune(base, LabelledSet.from_folder(folder), TrainConfig(mode="head"), hierarchy=tiny_hierarchy())


def test_partial_training_goes_on_through_a_few_shot_head(tmp_path: Path) -> None:
    base = tiny_base()
    folder = tmp_path / "data"
    from PIL import Image

    for name, colour in (("warm", (230, 60, 30)), ("cool", (30, 80, 230))):
        (folder / name).mkdir(parents=True)
        for i in range(6):
            Image.new("RGB", (40, 40), tuple(max(0, v - 8 * i) for v in colour)).save(folder / name / f"{i}.png")
    data = LabelledSet.from_folder(folder)
    result = finetune(base, data, TrainConfig(mode="partial", epochs=2, batch_size=4, head="hierarchy"),
                      hierarchy=tiny_hierarchy())
    assert result.card.head is not None and result.card.head.method.startswith("hierarchy")
    assert [h["epoch"] for h in result.history][:2] == [0, 1]
    path = result.save(tmp_path / "p.safetensors")
    assert Engine.load(path, device="cpu").classify([folder / "warm" / "0.png"])[0].ok


# --------------------------------------------------------------------------------------------
# The real model on photos of kinds no training photo shows (../shared/fewshot-dev)


def test_real_deit_learns_broad_classes_that_hold_for_unseen_kinds(tmp_path: Path) -> None:
    from tests.support import DEIT, FEWSHOT

    if not DEIT.is_file() or not FEWSHOT.is_dir():
        pytest.skip("shared DeiT-Tiny and fewshot-dev photos not on this machine")
    from vit_desktop.core.labels.categories import Categories, hierarchy_for

    base = Engine.load(DEIT, device="cpu")
    data = LabelledSet.from_folder(FEWSHOT)
    rng = np.random.default_rng(0)
    train, test = [], []
    for c in data.classes:
        items = [it for it in data.items if it[1] == c]
        order = rng.permutation(len(items))
        train += [items[i] for i in order[: len(items) // 2]]
        test += [items[i] for i in order[len(items) // 2:]]
    result = finetune(base, LabelledSet(data.classes, tuple(train)), TrainConfig(mode="head"),
                      val_data=LabelledSet(data.classes, tuple(test)))
    assert result.val_accuracy >= 0.95, result.metrics["selection"]
    # Zero-shot by the names alone, no photos.
    tree = hierarchy_for(base.card)
    assert tree is not None
    categories = Categories.from_names(data.classes, tree)
    got = base.classify([p for p, _ in test], ClassifyOptions(categories=categories))
    accuracy = np.mean([r.top is not None and r.top.label == c for r, (_, c) in zip(got, test)])
    assert accuracy >= 0.95
