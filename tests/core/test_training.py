"""Fine-tuning and training from scratch on datasets the tests generate, plus one real-model check."""

from __future__ import annotations

import csv
import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw
from torchvision.models import VisionTransformer

from tests.support import SHARED, kept
from vit_desktop.core.errors import CancelToken, VitDesktopError
from vit_desktop.core.inference.engine import Engine
from vit_desktop.core.inference.options import ClassifyOptions
from vit_desktop.core.training import (
    TrainConfig,
    TrainProgress,
    finetune,
    train_from_scratch,
)
from vit_desktop.core.training.labelled_set import LabelledSet
from vit_desktop.core.types import Architecture, ModelCard, Preprocess

COLOURS = {"red": (220, 40, 40), "green": (40, 200, 60), "blue": (40, 70, 220)}


def make_colour_set(root: Path, per_class: int = 10, size: int = 40, seed: int = 0) -> Path:
    """Class = the colour of a random shape on grey noise: one subfolder per class."""
    rng = random.Random(seed)
    nrng = np.random.default_rng(seed)
    for name, colour in COLOURS.items():
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            noise = nrng.integers(60, 180, (size, size, 1), dtype=np.uint8).repeat(3, axis=2)
            img = Image.fromarray(noise)
            d = ImageDraw.Draw(img)
            x0, y0 = rng.randint(0, size // 3), rng.randint(0, size // 3)
            x1, y1 = x0 + rng.randint(size // 2, size - 4), y0 + rng.randint(size // 2, size - 4)
            jitter = tuple(max(0, min(255, c + rng.randint(-25, 25))) for c in colour)
            (d.ellipse if rng.random() < 0.5 else d.rectangle)((x0, y0, min(x1, size - 1), min(y1, size - 1)), fill=jitter)
            img.save(root / name / f"{name}_{i:02d}.png")
    return root


def tiny_engine(num_classes: int = 3, seed: int = 0) -> Engine:
    torch.manual_seed(seed)
    module = VisionTransformer(image_size=32, patch_size=8, num_layers=2, num_heads=2, hidden_dim=16, mlp_dim=32,
                               num_classes=num_classes)
    arch = Architecture(32, 8, 2, 2, 16, 32, num_classes)
    card = ModelCard("tiny", "file", "tiny", arch, tuple(f"base_{i}" for i in range(num_classes)),
                     Preprocess(crop_size=32, resize_size=36))
    return Engine.from_module(module, card, device="cpu")


def accuracy(engine: Engine, data: LabelledSet) -> float:
    results = engine.classify([p for p, _ in data.items])
    return sum(r.top is not None and r.top.label == c for r, (_, c) in zip(results, data.items)) / len(data)


@pytest.fixture(scope="module")
def colours(tmp_path_factory: pytest.TempPathFactory) -> LabelledSet:
    return LabelledSet.from_folder(make_colour_set(tmp_path_factory.mktemp("colours")))


def test_full_finetune_goes_from_chance_to_near_perfect(colours: LabelledSet) -> None:
    base = tiny_engine()
    _, val = colours.split(None, seed=0)
    untrained = Engine.from_module(base.module, ModelCard(
        "u", "file", "u", base.card.arch, colours.classes, base.card.preprocess), device="cpu")
    assert accuracy(untrained, val) <= 0.6  # a random 3-class model is near chance
    events: list[TrainProgress] = []
    config = TrainConfig(mode="full", epochs=12, lr=3e-3, batch_size=8, patience=20)
    result = finetune(base, colours, config, progress=events.append)
    assert not result.cancelled
    assert result.val_accuracy >= 0.9
    assert result.card.labels == ("blue", "green", "red")
    # The result classifies through the engine exactly as it scored during training.
    trained = Engine.from_module(result.module, result.card, device="cpu")
    assert accuracy(trained, val) == pytest.approx(result.val_accuracy)
    # Progress: per-step train reports and one "val" report per epoch with metrics and time left.
    steps = [e for e in events if e.phase == "train"]
    epochs = [e for e in events if e.phase == "val"]
    assert steps and all(e.loss is not None and e.eta_s is not None for e in steps)
    assert len(epochs) == len(result.history) - 1  # history also holds the head-only start (epoch 0)
    assert epochs[-1].eta_s == pytest.approx(0.0, abs=1e-6) or epochs[-1].epoch < config.effective_epochs
    assert sum(sum(r) for r in result.confusion) == len(val)
    assert len(result.per_class_accuracy) == 3
    # The base model is untouched: it still has its own three classes and weights.
    assert base.card.labels == ("base_0", "base_1", "base_2")


def test_head_only_learns_colours_and_keeps_a_working_vit(colours: LabelledSet) -> None:
    result = finetune(tiny_engine(), colours, TrainConfig(mode="head", head="features"))
    assert result.val_accuracy >= 0.85
    assert isinstance(result.module, VisionTransformer)
    assert result.module.heads.head.out_features == 3
    engine = Engine.from_module(result.module, result.card, device="cpu")
    # Heatmaps work on the new model: rollout and the class-specific map.
    path = str(colours.items[0][0])
    assert engine.rollout(path, __import__("vit_desktop.core.types", fromlist=["ExplainOptions"]).ExplainOptions()).grid.shape == (4, 4)
    assert engine.explain_class(path, 1).grid.shape == (4, 4)


def test_partial_mode_trains_only_the_last_blocks(colours: LabelledSet) -> None:
    base = tiny_engine()
    before = {k: v.clone() for k, v in base.module.state_dict().items()}
    result = finetune(base, colours, TrainConfig(mode="partial", partial_blocks=1, epochs=2, batch_size=8,
                                                 ))
    after = result.module.state_dict()
    assert torch.equal(after["encoder.layers.encoder_layer_0.mlp.0.weight"],
                       before["encoder.layers.encoder_layer_0.mlp.0.weight"])
    assert torch.equal(after["conv_proj.weight"], before["conv_proj.weight"])
    if result.best_epoch > 0:  # the last block changed unless the head-only start stayed best
        assert not torch.equal(after["encoder.layers.encoder_layer_1.mlp.0.weight"],
                               before["encoder.layers.encoder_layer_1.mlp.0.weight"])
    assert all(torch.equal(v, base.module.state_dict()[k]) for k, v in before.items())


@pytest.mark.parametrize("mode", ["head", "partial"])
def test_each_mistake_says_how_sure_the_model_was(colours: LabelledSet, mode: str) -> None:
    """Two classes of the same red shapes: mistakes are certain, and each one carries the probability of
    the class predicted and of the true one, as the prediction had them (held out or on validation)."""
    reds = [p for p, c in colours.items if c == "red"]
    confusable = LabelledSet(("left", "right"), tuple((p, ("left", "right")[i % 2]) for i, p in enumerate(reds)))
    result = finetune(tiny_engine(), confusable, TrainConfig(mode=mode, epochs=2, batch_size=4))
    assert result.misclassified
    for m in result.misclassified:
        assert m.predicted != m.true and m.predicted_p is not None and m.true_p is not None
        # The class predicted is the one given the most; with two classes, the two share all of it.
        assert 0.0 <= m.true_p <= m.predicted_p <= 1.0 and m.predicted_p + m.true_p == pytest.approx(1.0, abs=1e-4)


def test_a_mislabelled_photo_is_a_mistake_the_model_is_sure_of(colours: LabelledSet) -> None:
    wrong = [p for p, c in colours.items if c == "red"][:1]
    relabelled = LabelledSet(colours.classes, tuple((p, "green" if p in wrong else c) for p, c in colours.items))
    result = finetune(tiny_engine(), relabelled, TrainConfig(mode="head", head="features"))
    sure = {m.path: m for m in result.misclassified}
    for path in map(str, wrong):  # every photo is held out once by cross-validation
        assert sure[path].predicted == "red" and sure[path].true == "green"
        assert kept(sure[path].predicted_p) > 0.5 > kept(sure[path].true_p)


def test_the_description_says_whether_the_trained_backbone_was_kept(colours: LabelledSet) -> None:
    """Partial and full training keep the backbone only when it lowered the validation loss below the
    head-only start; a run that never did hands back the base's backbone, and says so."""
    from dataclasses import replace

    from vit_desktop.core.training.results import describe

    base = tiny_engine()
    # A learning rate of 0: the epochs cannot beat the start, so the head-only model is the one kept.
    result = finetune(base, colours, TrainConfig(mode="partial", partial_blocks=1, epochs=2, lr=0.0, batch_size=8))
    assert result.best_epoch == 0 and len(result.history) == 3
    said = describe(result)
    start = result.history[0]["val_loss"]
    assert said.backbone == (f"discarded: 2 epochs of training never lowered the validation loss below the new head "
                             f"alone's ({start:.3f}), so the model is the base's backbone with the new head (epoch 0)")
    assert f"backbone: {said.backbone}" in said.details()
    assert said.status().endswith(f"; backbone {said.backbone}")
    assert all("backbone" not in line for line in said.lines())  # the lines printed before stay as they were
    # The same run had its second epoch been better: that epoch's backbone is kept.
    history = [dict(h) for h in result.history]
    history[2]["val_loss"] = 0.25
    epoch2 = describe(replace(result, history=tuple(history), best_epoch=2))
    assert epoch2.backbone == (f"kept: the weights after epoch 2 of the 2 epochs run (validation loss 0.250; "
                             f"{start:.3f} with the new head alone)")
    # Head mode trains no backbone, and scratch trains nothing else: neither says anything about it.
    assert describe(replace(result, history=())).backbone is None
    assert describe(replace(result, history=tuple(history[1:]), best_epoch=2)).backbone is None
    assert describe(replace(result, history=tuple(history[1:]), best_epoch=2)).details() == \
        [f"results: {kept(result.card.open_set).describe()}"]


def test_cancel_keeps_the_best_model_so_far_and_resume_goes_on(colours: LabelledSet) -> None:
    cancel = CancelToken()
    seen: list[TrainProgress] = []

    def on_progress(p: TrainProgress) -> None:
        seen.append(p)
        if p.phase == "val" and p.epoch == 2:
            cancel.cancel()

    config = TrainConfig(mode="full", epochs=30, lr=3e-3, batch_size=8, patience=50)
    result = finetune(tiny_engine(), colours, config, progress=on_progress, cancel=cancel)
    assert result.cancelled
    assert [h["epoch"] for h in result.history] == [0, 1, 2]
    best = min(result.history, key=lambda h: kept(h["val_loss"]))
    assert result.best_epoch == best["epoch"]
    assert result.val_accuracy == pytest.approx(best["val_acc"])
    # Resume: the cancelled model is the base; its head rows carry over by class name.
    again = finetune(Engine.from_module(result.module, result.card, device="cpu"), colours,
                     TrainConfig(mode="full", epochs=10, lr=3e-3, batch_size=8, patience=20))
    assert not again.cancelled
    assert again.val_accuracy >= max(0.9, result.val_accuracy)


def test_cancel_while_choosing_the_head_returns_a_usable_model(colours: LabelledSet) -> None:
    cancel = CancelToken()

    def on_progress(p: TrainProgress) -> None:
        if p.phase == "select" and p.step == 1:  # the first head is scored, the second is not
            cancel.cancel()

    result = finetune(tiny_engine(), colours, TrainConfig(mode="head"), progress=on_progress, cancel=cancel)
    assert result.cancelled
    scored = kept(result.metrics.selection).scores
    assert len(scored) == 1
    engine = Engine.from_module(result.module, result.card, device="cpu")
    assert len(engine.classify([colours.items[0][0]])[0].predictions) == 3


def test_saved_model_round_trips(colours: LabelledSet, tmp_path: Path) -> None:
    result = finetune(tiny_engine(), colours, TrainConfig(mode="head", epochs=20))
    out = tmp_path / "mine.safetensors"
    result.save(out)
    with pytest.raises(FileExistsError):
        result.save(out)
    named = result.save(tmp_path / "named.safetensors", name="my colours")
    assert Engine.load(named, device="cpu").card.name == "my colours"
    assert result.card.name == "tiny (3 classes)"  # the result itself keeps its name
    loaded = Engine.load(out, device="cpu")
    assert loaded.card.labels == result.card.labels
    assert loaded.card.preprocess == result.card.preprocess
    extra = dict(loaded.card.extra)
    assert extra["base_model"] == "tiny"
    assert json.loads(extra["training"])["mode"] == "head"
    assert json.loads(extra["metrics"])["val_acc"] == pytest.approx(result.val_accuracy)
    paths = [p for p, _ in colours.items[:6]]
    fresh = Engine.from_module(result.module, result.card, device="cpu").classify(paths, ClassifyOptions(top_k=3))
    again = loaded.classify(paths, ClassifyOptions(top_k=3))
    for a, b in zip(fresh, again):
        assert [p.label for p in a.predictions] == [p.label for p in b.predictions]
        assert [p.score for p in a.predictions] == pytest.approx([p.score for p in b.predictions], abs=1e-6)


def small_memory(module: VisionTransformer) -> VisionTransformer:
    """Raise CUDA's out-of-memory error for training batches above four images, as a small GPU would."""

    def check(conv: torch.nn.Module, args: tuple[torch.Tensor, ...]) -> None:  # the first step of every forward
        if conv.training and args[0].shape[0] > 4:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    module.conv_proj.register_forward_pre_hook(check)
    return module


def test_out_of_memory_halves_the_batch_and_goes_on(colours: LabelledSet) -> None:
    torch.manual_seed(0)
    module = small_memory(VisionTransformer(image_size=32, patch_size=8, num_layers=2, num_heads=2, hidden_dim=16,
                                            mlp_dim=32, num_classes=3))
    base = Engine.from_module(module, tiny_engine().card, device="cpu")
    events: list[TrainProgress] = []
    result = finetune(base, colours, TrainConfig(mode="full", epochs=2, batch_size=16),
                      progress=events.append)
    notes = [e.message for e in events if "out of" in e.message]
    assert notes == ["out of memory: batch size now 8", "out of memory: batch size now 4"]
    assert [h["epoch"] for h in result.history] == [0, 1, 2]
    assert json.loads(dict(result.card.extra)["training"])["batch_size"] == 16


def test_bad_input_is_refused_with_clear_messages(tmp_path: Path) -> None:
    root = make_colour_set(tmp_path / "d", per_class=3)
    data = LabelledSet.from_folder(root)
    with pytest.raises(VitDesktopError, match="at least two classes"):
        finetune(tiny_engine(), data.without_class("red").without_class("green"), TrainConfig())
    thin = data.without_items(data.paths_of("red")[1:])
    with pytest.raises(VitDesktopError, match="class 'red' has 1 image; each class needs at least 2"):
        finetune(tiny_engine(), thin, TrainConfig())


def test_unreadable_images_are_skipped_counted_and_listed(tmp_path: Path) -> None:
    root = make_colour_set(tmp_path / "d", per_class=5)
    (root / "red" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    data = LabelledSet.from_folder(root)
    result = finetune(tiny_engine(), data, TrainConfig(mode="head", epochs=5))
    assert [Path(p).name for p, _ in result.skipped] == ["broken.png"]
    assert result.skipped[0][1]  # with its reason
    assert result.metrics.skipped_images == 1
    # When skipping leaves a class too small to split, the message says so.
    for p in data.paths_of("green")[1:]:
        p.write_bytes(b"garbage")
    with pytest.raises(VitDesktopError, match="class 'green' has too few readable images"):
        finetune(tiny_engine(), LabelledSet.from_folder(root), TrainConfig(mode="head", epochs=5))


def _shapes(n_per: int, size: int = 28, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Grayscale: class 0 = filled square, 1 = ring, 2 = horizontal bar, at random places."""
    rng = random.Random(seed)
    xs, ys = [], []
    for c in range(3):
        for _ in range(n_per):
            img = Image.fromarray(np.random.default_rng(rng.randint(0, 10**6)).integers(0, 60, (size, size),
                                                                                         dtype=np.uint8))
            d = ImageDraw.Draw(img)
            s = rng.randint(10, 14)
            x, y = rng.randint(1, size - s - 1), rng.randint(1, size - s - 1)
            if c == 0:
                d.rectangle((x, y, x + s, y + s), fill=230)
            elif c == 1:
                d.ellipse((x, y, x + s, y + s), outline=230, width=2)
            else:
                d.rectangle((1, y, size - 2, y + 3), fill=230)
            xs.append(torch.from_numpy(np.array(img)).unsqueeze(0))
            ys.append(c)
    return torch.stack(xs), torch.tensor(ys)


def test_train_from_scratch_on_small_grayscale_tensors(tmp_path: Path) -> None:
    x, y = _shapes(30)
    vx, vy = _shapes(10, seed=1)
    config = TrainConfig(mode="scratch", epochs=8, batch_size=32, image_size=28, patch_size=7, num_layers=2,
                         num_heads=2, hidden_dim=32, mlp_dim=64, hflip=False, patience=8, lr=3e-3)
    result = train_from_scratch((x, y, ("square", "ring", "bar")), config, device="cpu", val_data=(vx, vy))
    print([round(kept(h["val_acc"]), 2) for h in result.history])
    assert kept(result.history[0]["val_acc"]) < 0.8  # one epoch in, far from solved
    assert result.val_accuracy >= 0.9
    assert result.card.preprocess.color_mode == "L"
    assert result.card.arch.image_size == 28 and result.card.arch.patch_size == 7
    out = result.save(tmp_path / "scratch.safetensors")
    engine = Engine.load(out, device="cpu")
    # A grayscale photo saved to disk classifies through the engine like in training.
    img = Image.fromarray(vx[0, 0].numpy())
    assert kept(engine.classify_image(img, "square").top).label == "square"


# --------------------------------------------------------------------------------------------
# Real model: DeiT-Tiny on the shared photos


@pytest.mark.skipif(not (SHARED / "weights" / "deit_tiny_patch16_224.safetensors").is_file(),
                    reason="shared DeiT-Tiny weights (../shared/weights) not available on this machine")
def test_few_shot_with_real_deit_reaches_high_accuracy(tmp_path: Path) -> None:
    """Six classes, each one shared photo seen through different crops and flips (8 per class)."""
    with open(SHARED / "photos" / "labels.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    chosen = [r for r in rows if r["name"] in
              ("jay", "box_turtle", "lionfish", "coffee_mug", "maze", "stethoscope")]
    rng = random.Random(0)
    for r in chosen:
        photo = Image.open(SHARED / "photos" / r["file"]).convert("RGB")
        w, h = photo.size
        for i in range(8):
            s = rng.uniform(0.55, 0.9)
            cw, ch = int(w * s), int(h * s)
            x, y = rng.randint(0, w - cw), rng.randint(0, h - ch)
            crop = photo.crop((x, y, x + cw, y + ch))
            if i % 2:
                crop = crop.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
            (tmp_path / r["name"]).mkdir(exist_ok=True)
            crop.save(tmp_path / r["name"] / f"{i}.jpg", quality=90)
    data = LabelledSet.from_folder(tmp_path)
    base = Engine.load(SHARED / "weights" / "deit_tiny_patch16_224.safetensors", device="cpu")
    result = finetune(base, data, TrainConfig(mode="head"))
    assert result.val_accuracy >= 0.9
    assert result.card.labels == tuple(sorted(r["name"] for r in chosen))


@pytest.mark.skipif(not (SHARED / "weights" / "deit_tiny_patch16_224.safetensors").is_file(),
                    reason="shared DeiT-Tiny weights (../shared/weights) not available on this machine")
def test_default_head_uses_base_knowledge_on_unseen_photos(tmp_path: Path) -> None:
    """Broad classes (three dog breeds = "dog"...), validated on crops of photos never trained on.

    A head on raw features cannot generalise from so few photos; the default head, which starts
    from what DeiT already knows about related ImageNet classes, can do much better. Two ways of
    choosing the held-out photo, averaged: one split alone is only five photos.
    """
    groups = {"dog": ["otterhound", "Border_collie", "bull_mastiff"], "fish": ["anemone_fish", "lionfish"],
              "reptile": ["box_turtle", "Indian_cobra"], "music": ["maraca", "ocarina"],
              "clothing": ["poncho", "mask"]}
    with open(SHARED / "photos" / "labels.csv", newline="") as f:
        files = {r["name"]: r["file"] for r in csv.DictReader(f)}
    rng = random.Random(0)
    crops: dict[str, list[Path]] = {}
    for cls, names in groups.items():
        (tmp_path / cls).mkdir()
        for name in names:
            photo = Image.open(SHARED / "photos" / files[name]).convert("RGB")
            w, h = photo.size
            crops[name] = []
            for i in range(3):
                s = rng.uniform(0.6, 0.9)
                x, y = rng.randint(0, int(w * (1 - s))), rng.randint(0, int(h * (1 - s)))
                path = tmp_path / cls / f"{name}_{i}.jpg"
                photo.crop((x, y, x + int(w * s), y + int(h * s))).save(path, quality=90)
                crops[name].append(path)
    classes = tuple(groups)
    base = Engine.load(SHARED / "weights" / "deit_tiny_patch16_224.safetensors", device="cpu")
    scores: dict[str, list[float]] = {"auto": [], "features": []}
    for held in (0, -1):
        train = [(p, c) for c, names in groups.items() for n in names if n != names[held] for p in crops[n]]
        val = [(p, c) for c, names in groups.items() for p in crops[names[held]]]
        for head in scores:
            result = finetune(base, LabelledSet(classes, tuple(train)), TrainConfig(mode="head", head=head),
                              val_data=LabelledSet(classes, tuple(val)))
            scores[head].append(result.val_accuracy)
    default = sum(scores["auto"]) / 2
    linear = sum(scores["features"]) / 2
    assert TrainConfig().head == "auto"
    assert default >= 0.8 and default > linear, scores
    assert default >= linear + 0.2, scores
