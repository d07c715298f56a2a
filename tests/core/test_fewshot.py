"""Few-shot heads that use a label hierarchy: they generalise to sub-types no training photo shows,
names alone make a classifier, cross-validation picks the head that fits, and the result is a model
file like any other."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torchvision.models import VisionTransformer

from tests.support import SUBTYPES, tiny_base, tiny_hierarchy, warm_cool_folder, write_image
from vit_desktop.core.errors import VitDesktopError
from vit_desktop.core.inference.engine import Engine
from vit_desktop.core.inference.options import ClassifyOptions
from vit_desktop.core.labels.hierarchy import Hierarchy
from vit_desktop.core.training import TrainConfig, finetune
from vit_desktop.core.training.fewshot import (
    FeaturesHead,
    HeadData,
    HierarchyHead,
    candidates,
    select_head,
)
from vit_desktop.core.training.labelled_set import LabelledSet
from vit_desktop.core.training.nodes import NodeMatrix, Selection, logistic_gain
from vit_desktop.core.types import Architecture, ModelCard, Preprocess

# Eight base classes, two per sub-type, in two broad groups: warm (red, orange, yellow, pink) and
# cool (blue, green, cyan, purple).


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


def test_a_node_that_separates_perfectly_is_chosen_and_the_numbers_stay_finite() -> None:
    """Nine warm photos (red, orange, yellow, pink) and one cool one: "warm" separates them exactly.

    The Newton steps used to overshoot here (exp overflowed, the best node scored -1e9 nats) and no
    node was chosen at all; pytest turns the overflow warning into a failure."""
    sub = np.r_[np.arange(9) % 4, [5]]
    logits = np.zeros((10, len(SUBTYPES)))
    logits[np.arange(10), sub] = 6.0
    log_p = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    y = np.r_[np.zeros(9, dtype=int), [1]]
    _, _, nodes = Selection(NodeMatrix(tiny_hierarchy()), [None, None]).fit(y, log_p, 2)
    assert nodes == [["warm.n.01"], []]
    # The gain itself: the separating mass beats no information (the prior alone) and noise.
    mass = np.c_[np.exp(log_p)[:, :4].sum(axis=1), np.random.default_rng(0).random(10)]
    separating, noise = logistic_gain(np.log(mass), y == 0)
    (prior,) = logistic_gain(np.zeros((10, 1)), y == 0)
    assert np.isfinite([separating, noise, prior]).all()
    assert separating > prior + 2.0 and separating > noise


def _resolved(h: Hierarchy, name: str):
    (r,) = h.resolve_classes([name])
    return r


# --------------------------------------------------------------------------------------------
# The whole path: a tiny ViT whose 8 classes the tiny hierarchy groups


def test_names_alone_make_a_model_whose_scores_are_the_base_models_mass(tmp_path: Path) -> None:
    base = tiny_base()
    data = LabelledSet(("warm", "cool"))  # no photos at all
    result = finetune(base, data, TrainConfig(mode="head"), hierarchy=tiny_hierarchy())
    assert result.metrics.selection is not None and result.metrics.selection.head == "names"
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


def test_a_model_from_names_alone_is_described_as_unmeasured() -> None:
    from vit_desktop.core.training.results import describe

    result = finetune(tiny_base(), LabelledSet(("warm", "cool")), TrainConfig(mode="head"), hierarchy=tiny_hierarchy())
    said = describe(result)
    # The command line's words: what each name was taken to mean, and no accuracy to boast of.
    assert said.lines() == ["head: names head (no photos to validate on)",
                            "  'warm' = warm.n.01 (4 classes)",
                            "  'cool' = cool.n.01 (4 classes)",
                            "validation accuracy: not measured (none: no class has two photos)"]
    # The window's one line, from the same figures.
    assert said.status() == "not validated (no photos) — names head (no photos to validate on)"


def test_the_base_models_own_hierarchy_is_the_default_and_none_turns_it_off() -> None:
    from vit_desktop.core.labels.imagenet import imagenet_classes
    from vit_desktop.core.training import FROM_BASE

    torch.manual_seed(0)
    module = VisionTransformer(image_size=32, patch_size=8, num_layers=1, num_heads=2, hidden_dim=16, mlp_dim=32,
                               num_classes=1000)
    card = ModelCard("tiny imagenet", "file", "", Architecture(32, 8, 1, 2, 16, 32, 1000), imagenet_classes(),
                     Preprocess(crop_size=32, resize_size=36))
    base = Engine.from_module(module, card, device="cpu")
    names = LabelledSet(("dog", "cat"))  # no photos: only a hierarchy can make classes of them
    default = finetune(base, names, TrainConfig(mode="head"))
    named = finetune(base, names, TrainConfig(mode="head"), hierarchy=FROM_BASE)
    for result in (default, named):
        assert result.metrics.selection is not None and result.metrics.selection.head == "names"
        assert result.card.labels == ("dog", "cat")
        assert result.card.head is not None and result.card.head.mass
    with pytest.raises(VitDesktopError, match="'dog' has 0 images"):
        finetune(base, names, TrainConfig(mode="head"), hierarchy=None)


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
    folder = warm_cool_folder(tmp_path / "data")
    data = LabelledSet.from_folder(folder)
    result = finetune(base, data, TrainConfig(mode="partial", epochs=2, batch_size=4, head="hierarchy"),
                      hierarchy=tiny_hierarchy())
    assert result.card.head is not None and result.card.head.method.startswith("hierarchy")
    assert [h["epoch"] for h in result.history][:2] == [0, 1]
    path = result.save(tmp_path / "p.safetensors")
    assert Engine.load(path, device="cpu").classify([folder / "warm" / "0.png"])[0].ok


#: The training metadata of a saved model, key by key, in order, with the type of each value: other
#: programs and older versions of this one parse these two JSON texts, so they only ever grow.
METRICS_KEYS = {"val_acc": float, "val_loss": float, "train_acc": float, "best_epoch": int, "epochs_run": int,
                "train_images": int, "val_images": int, "skipped_images": int, "seconds": float, "validation": str,
                "selection": dict, "per_class_accuracy": dict}
SELECTION_KEYS = {"head": str, "summary": str, "folds": int, "heads": dict, "names": dict, "nodes": dict,
                  "photos_per_class": dict}
TRAINING_KEYS = {"mode": str, "epochs": int, "batch_size": int, "lr": float, "weight_decay": float, "warmup": float,
                 "label_smoothing": float, "partial_blocks": int, "layer_decay": float, "augment": bool,
                 "hflip": bool, "patience": int, "seed": int, "val_fraction": type(None), "head": str,
                 "precision": str}


def _kinds(d: dict[str, object]) -> list[tuple[str, type]]:
    return [(k, type(v)) for k, v in d.items()]


def test_the_saved_training_metadata_keeps_its_keys_and_types(tmp_path: Path) -> None:
    import json

    data = LabelledSet.from_folder(warm_cool_folder(tmp_path / "data"))
    result = finetune(tiny_base(), data, TrainConfig(mode="partial", epochs=2, batch_size=4, head="hierarchy"),
                      hierarchy=tiny_hierarchy())
    extra = dict(Engine.load(result.save(tmp_path / "p.safetensors"), device="cpu").card.extra)
    metrics, training = json.loads(extra["metrics"]), json.loads(extra["training"])
    assert _kinds(metrics) == list(METRICS_KEYS.items())
    assert _kinds(training) == list(TRAINING_KEYS.items())
    assert (metrics["validation"], metrics["epochs_run"], metrics["train_images"]) == ("validation photos", 2, 10)
    assert metrics["per_class_accuracy"].keys() == {"cool", "warm"}
    assert all(type(v) is float for v in metrics["per_class_accuracy"].values())
    selection = metrics["selection"]
    assert _kinds(selection) == list(SELECTION_KEYS.items())
    assert (selection["head"], selection["folds"]) == ("hierarchy", 5)
    assert selection["summary"].startswith("hierarchy head: CV accuracy ")
    assert list(selection["heads"]) == ["hierarchy"]
    assert _kinds(selection["heads"]["hierarchy"]) == [("cv_loss", float), ("cv_accuracy", float)]
    assert selection["heads"]["hierarchy"]["cv_accuracy"] == 1.0
    assert selection["names"] == {"cool": "cool.n.01 (4 classes)", "warm": "warm.n.01 (4 classes)"}
    assert all(isinstance(c, str) and all(isinstance(n, str) for n in nodes) for c, nodes in selection["nodes"].items())
    assert selection["photos_per_class"] == {"cool": 5, "warm": 5}
    # Head mode from names alone: nothing validated, and the names say what each class is.
    names_only = finetune(tiny_base(), LabelledSet(("warm", "cool")), TrainConfig(mode="head"),
                          hierarchy=tiny_hierarchy())
    extra = dict(Engine.load(names_only.save(tmp_path / "n.safetensors"), device="cpu").card.extra)
    metrics = json.loads(extra["metrics"])
    assert _kinds(metrics) == [(k, type(None) if k in ("val_loss", "train_acc") else t)
                               for k, t in METRICS_KEYS.items()]
    assert {k: metrics[k] for k in ("val_acc", "best_epoch", "epochs_run", "val_images", "validation")} == {
        "val_acc": 0.0, "best_epoch": 0, "epochs_run": 0, "val_images": 0,
        "validation": "none: no class has two photos"}
    assert {k: metrics["selection"][k] for k in ("head", "summary", "folds", "heads", "nodes")} == {
        "head": "names", "summary": "names head (no photos to validate on)", "folds": 0, "heads": {}, "nodes": {}}
    assert json.loads(extra["training"])["mode"] == "head"


def test_a_model_trained_from_scratch_saves_its_shape_with_its_settings(tmp_path: Path) -> None:
    import json

    from vit_desktop.core.training import train_from_scratch

    x = torch.randint(0, 255, (12, 1, 14, 14), dtype=torch.uint8)
    y = torch.arange(12) % 2
    config = TrainConfig(mode="scratch", epochs=1, image_size=14, patch_size=7, num_layers=1, num_heads=2,
                         hidden_dim=8, mlp_dim=16)
    result = train_from_scratch((x, y, ("a", "b")), config, device="cpu")
    extra = dict(Engine.load(result.save(tmp_path / "s.safetensors"), device="cpu").card.extra)
    scratch = {"image_size": int, "patch_size": int, "num_layers": int, "num_heads": int, "hidden_dim": int,
               "mlp_dim": int, "grayscale": bool}
    assert _kinds(json.loads(extra["training"])) == list({**TRAINING_KEYS, **scratch}.items())
    metrics = json.loads(extra["metrics"])
    assert [k for k in metrics] == [k for k in METRICS_KEYS if k != "selection"]
    assert (metrics["validation"], metrics["epochs_run"], metrics["best_epoch"]) == ("validation photos", 1, 1)


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
    assert result.val_accuracy >= 0.95, result.metrics.selection
    # Zero-shot by the names alone, no photos.
    tree = hierarchy_for(base.card)
    assert tree is not None
    categories = Categories.from_names(data.classes, tree)
    got = base.classify([p for p, _ in test], ClassifyOptions(categories=categories))
    accuracy = np.mean([r.top is not None and r.top.label == c for r, (_, c) in zip(got, test)])
    assert accuracy >= 0.95
