"""Whether a photo is one of the model's classes: every result says so, by the model's own rule."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tests.support import SUBTYPES, kept, tiny_base, tiny_hierarchy, tiny_model, warm_cool_folder, write_image
from vit_desktop.core.inference.engine import Engine
from vit_desktop.core.inference.open_set import KEEP, NAMES_THRESHOLD, calibrate
from vit_desktop.core.inference.options import ClassifyOptions
from vit_desktop.core.labels.categories import Categories
from vit_desktop.core.models.checkpoints import load_checkpoint
from vit_desktop.core.models.model_file import save_model
from vit_desktop.core.models.open_set import BASE_RULE
from vit_desktop.core.training import TrainConfig, finetune
from vit_desktop.core.training.labelled_set import LabelledSet
from vit_desktop.core.types import NONE_OF_THESE, NOT_SURE, ExplainOptions, OpenSetRule


def _photos(tmp_path: Path, n: int = 4) -> list[Path]:
    return [write_image(tmp_path / "in" / f"p{i}.png", size=(40, 40), seed=i) for i in range(n)]


@pytest.fixture(scope="module")
def warm_cool(tmp_path_factory: pytest.TempPathFactory):
    """A model fine-tuned (head mode) on warm and cool photos over the tiny colour hierarchy."""
    folder = warm_cool_folder(tmp_path_factory.mktemp("data") / "d")
    return finetune(tiny_base(), LabelledSet.from_folder(folder), TrainConfig(mode="head", head="hierarchy"),
                    hierarchy=tiny_hierarchy())


def test_a_model_without_a_rule_marks_unsure_answers_by_the_default(tmp_path: Path) -> None:
    module, card = tiny_model(3)
    engine = Engine.from_module(module, card, device="cpu")
    assert engine.card.open_set is None and engine.open_set_rule() == BASE_RULE
    results = engine.classify(_photos(tmp_path, 6))
    for r in results:
        assert r.top is not None and r.known_score == pytest.approx(r.top.score, abs=1e-6)
        assert r.uncertain == (r.top.score < BASE_RULE.threshold)
    # A threshold given by hand replaces the rule: the best score under it, as before.
    high = engine.classify(_photos(tmp_path, 6), ClassifyOptions(threshold=0.999))
    assert all(r.uncertain for r in high)
    assert not any(r.uncertain for r in engine.classify(_photos(tmp_path, 6), ClassifyOptions(threshold=0.0)))
    assert engine.open_set_rule(ClassifyOptions(threshold=0.5)).verdict == NOT_SURE


def test_a_hierarchy_head_keeps_the_mass_its_softmax_throws_away(warm_cool, tmp_path: Path) -> None:
    head = warm_cool.module.heads
    assert head.spec.mass
    f = torch.randn(5, 16)
    base_p = torch.softmax(head.base(f), dim=-1)
    covered = (head.masks.sum(dim=1) > 0).float()
    assert torch.allclose(head.known(f), base_p @ covered, atol=1e-6)
    # Shrink what the classes cover: the user's softmax still sums to one, the known mass drops.
    kept = head.masks.clone()
    with torch.no_grad():
        head.masks[:3] = 0.0
    try:
        assert torch.softmax(head.classify(f), dim=-1).sum(dim=1).allclose(torch.ones(5))
        assert (head.known(f) < base_p @ covered - 1e-4).all()
    finally:
        with torch.no_grad():
            head.masks.copy_(kept)


def test_fine_tuning_stores_its_calibrated_rule_and_classify_applies_it(warm_cool, tmp_path: Path) -> None:
    rule = warm_cool.card.open_set
    assert rule is not None and rule.score == "known_mass" and rule.verdict == NONE_OF_THESE
    assert rule.keeps is not None and rule.keeps >= KEEP and "cross-validation" in rule.calibrated_on
    path = warm_cool.save(tmp_path / "wc.safetensors")
    _, card = load_checkpoint(path)
    assert card.open_set == rule  # read back from the file
    engine = Engine.load(path, device="cpu")
    photos = _photos(tmp_path)
    results = engine.classify(photos)
    for r in results:
        assert r.known_score is not None and r.uncertain == (r.known_score < rule.threshold)
        assert rule.explain(r.known_score).startswith(NONE_OF_THESE if r.uncertain else "one of")
    # The known score is the base model's mass under what the classes cover (all 8 colours here).
    base = tiny_base()
    base_results = base.classify(photos, ClassifyOptions(top_k=len(SUBTYPES)))
    covered = engine.module.heads.masks.sum(dim=1).clamp(max=1).numpy()
    for r, b in zip(results, base_results):
        p = np.zeros(len(SUBTYPES))
        for pred in b.predictions:
            p[pred.index] = pred.score
        assert r.known_score == pytest.approx(float(p @ covered), abs=1e-5)
    # Class maps compute the score in their own pass: the same answer.
    mapped = engine.classify(photos, ClassifyOptions(explain=ExplainOptions(method="class")))
    assert [round(r.known_score or 0, 5) for r in mapped] == [round(r.known_score or 0, 5) for r in results]
    # A rule saved with a threshold nobody reaches marks every photo; --threshold overrides it.
    strict = replace(engine.card, open_set=OpenSetRule("known_mass", 1.01))
    saved = save_model(tmp_path / "strict.safetensors", engine.module, strict)
    strict_engine = Engine.load(saved, device="cpu")
    assert all(r.uncertain for r in strict_engine.classify(photos))
    assert not any(r.uncertain for r in strict_engine.classify(photos, ClassifyOptions(threshold=0.0)))


def test_a_features_head_remembers_its_training_photos(tmp_path: Path) -> None:
    folder = warm_cool_folder(tmp_path / "d")
    result = finetune(tiny_base(), LabelledSet.from_folder(folder), TrainConfig(mode="head", head="features"),
                      hierarchy=tiny_hierarchy())
    rule = result.card.open_set
    assert rule is not None and rule.score == "nearest_photo" and rule.references is not None
    assert rule.references.shape == (12, 16)
    np.testing.assert_allclose(np.linalg.norm(rule.references, axis=1), 1.0, atol=1e-5)
    path = result.save(tmp_path / "f.safetensors")
    _, card = load_checkpoint(path)
    assert card.open_set == rule and card.open_set.references is not None
    np.testing.assert_array_equal(card.open_set.references, rule.references)
    engine = Engine.load(path, device="cpu")
    # A training photo is its own nearest photo; noise is far from all of them.
    (own,) = engine.classify([next((folder / "warm").iterdir())])
    assert own.known_score == pytest.approx(1.0, abs=1e-4) and not own.uncertain
    noise = engine.classify(_photos(tmp_path))
    assert all(r.known_score is not None and r.known_score < 1.0 for r in noise)


def test_named_categories_are_uncertain_by_the_mass_on_all_of_them(tmp_path: Path) -> None:
    base = tiny_base()
    categories = Categories.from_names(["red", "blue"], tiny_hierarchy())
    photos = _photos(tmp_path, 6)
    options = ClassifyOptions(categories=categories)
    assert base.open_set_rule(options).threshold == NAMES_THRESHOLD
    full = base.classify(photos, ClassifyOptions(top_k=len(SUBTYPES), keep_probabilities=True))
    for r, f in zip(base.classify(photos, options), full):
        assert f.probabilities is not None
        mass = float(f.probabilities[[0, 4]].sum())  # red and blue
        assert r.known_score == pytest.approx(mass, abs=1e-5)
        assert r.uncertain == (mass < NAMES_THRESHOLD)


def test_calibration_keeps_the_share_asked_for() -> None:
    scores = np.arange(100) / 100.0
    t = calibrate(scores, 0.97)
    assert (scores >= t).mean() == 0.97
    assert calibrate(np.array([0.5, 0.7]), 0.97) == 0.5  # too few photos to let one go


def test_an_onnx_export_carries_the_rule_and_its_score(warm_cool, tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    import onnxruntime as ort

    from vit_desktop.core.models.onnx import export_onnx, read_onnx_metadata

    photos = _photos(tmp_path)
    report = export_onnx(warm_cool.module, warm_cool.card, tmp_path / "wc.onnx", photos=photos)
    meta = json.loads(read_onnx_metadata(report.path)["open_set"])
    rule = warm_cool.card.open_set
    assert (meta["score"], meta["threshold"]) == (rule.score, rule.threshold)
    assert meta["rule"] == "uncertain when known_score < threshold"
    engine = Engine.from_module(warm_cool.module, warm_cool.card, device="cpu")
    x = torch.stack([engine.preprocess_image(Image.open(p)) for p in photos]).numpy()
    session = ort.InferenceSession(str(report.path), providers=["CPUExecutionProvider"])
    _, known = session.run(None, {"pixel_values": x})
    ours = [kept(r.known_score) for r in engine.classify(photos)]
    np.testing.assert_allclose(known, ours, atol=1e-4)


def test_a_mass_that_does_not_describe_the_photos_gives_way_to_the_nearest_photo() -> None:
    from vit_desktop.core.training.fewshot import HeadData, Params, known_kind

    rng = np.random.default_rng(0)
    logits = np.full((6, 4), -5.0)
    logits[:, 0] = 5.0  # every photo is base class 0
    data = HeadData(logits, rng.normal(size=(6, 3)), np.array([0, 0, 0, 1, 1, 1]))
    covering = Params(bias=np.zeros(2), masks=np.array([[1, 0], [0, 1], [0, 0], [0, 0]], dtype=np.float32))
    assert known_kind(covering, data) == "known_mass"
    # The classes chose what their photos only resemble (base classes 2 and 3): little of their mass.
    beside = Params(bias=np.zeros(2), masks=np.array([[0, 0], [0, 0], [1, 0], [0, 1]], dtype=np.float32))
    assert known_kind(beside, data) == "nearest_photo"
    # A class with nothing under it: the mass says nothing about it.
    empty = Params(bias=np.zeros(2), masks=np.array([[1, 0], [0, 0], [0, 0], [0, 0]], dtype=np.float32))
    assert known_kind(empty, data) == "nearest_photo"


def test_a_model_whose_backbone_trained_is_calibrated_on_its_validation_photos(tmp_path: Path) -> None:
    folder = warm_cool_folder(tmp_path / "d")
    result = finetune(tiny_base(), LabelledSet.from_folder(folder),
                      TrainConfig(mode="partial", epochs=1, batch_size=4, head="hierarchy"), hierarchy=tiny_hierarchy())
    rule = result.card.open_set
    assert rule is not None and rule.calibrated_on == "2 validation photos" and rule.keeps == 1.0
    engine = Engine.from_module(result.module, result.card, device="cpu")
    photos = [str(p) for p in sorted((folder / "warm").iterdir())]
    assert all(r.known_score is not None for r in engine.classify(photos))


def test_the_summary_states_the_rule_that_chose_the_head() -> None:
    from vit_desktop.core.training.fewshot import Choice, HeadScore, Params

    scores = [HeadScore("hierarchy", 0.061, 0.97), HeadScore("blend", 0.053, 0.98), HeadScore("features", 0.9, 0.7)]
    said = Choice("hierarchy", Params(bias=np.zeros(2)), scores, None, 5).summary()
    assert said.startswith("hierarchy head: CV accuracy 97% vs blend 98%, features 70%")
    assert "CV log-loss: 0.061, within 0.02 of blend's 0.053, and more constrained" in said
    said = Choice("blend", Params(bias=np.zeros(2)), scores, None, 5).summary()
    assert "chosen on CV log-loss: the lowest, 0.053" in said


def test_what_the_command_line_says_after_fine_tuning(warm_cool) -> None:
    from vit_desktop.core.training.results import describe

    details = describe(warm_cool).details()
    assert details[-1] == f"results: {warm_cool.card.open_set.describe()}"
    for line in details[:-1]:  # the nodes the photos chose, and why
        assert "photos point there" in line and "nats" in line


def _half(y: np.ndarray, seed: int) -> np.ndarray:
    """bench/bench_finetune.py's split: half of every category to train."""
    rng = np.random.default_rng(seed)
    train: list[int] = []
    for i, c in enumerate(np.unique(y)):
        idx = rng.permutation(np.flatnonzero(y == c))
        train += idx[: (len(idx) + (i + seed) % 2) // 2].tolist()
    return np.array(sorted(train))


def test_real_deit_marks_photos_of_categories_it_was_not_taught(tmp_path: Path) -> None:
    """Three fewshot-dev categories taught, two left out. The split where the hierarchy head used to
    choose entity.n.01 for 'furniture' (and so called every other photo furniture)."""
    from tests.support import DEIT, FEWSHOT

    if not DEIT.is_file() or not FEWSHOT.is_dir():
        pytest.skip("shared DeiT-Tiny and fewshot-dev photos not on this machine")
    base = Engine.load(DEIT, device="cpu")
    everything = LabelledSet.from_folder(FEWSHOT)
    known = ("furniture", "musical instrument", "vehicle")
    inside = [it for it in everything.items if it[1] in known]
    y = np.array([known.index(c) for _, c in inside])
    train = set(_half(y, 2).tolist())
    unknown = [p for p, c in everything.items if c not in known]
    for head in ("hierarchy", "auto"):
        result = finetune(base, LabelledSet(known, tuple(inside[i] for i in sorted(train))),
                          TrainConfig(mode="head", head=head, seed=2))
        assert result.metrics.selection is not None
        for c in result.metrics.selection.classes:
            assert all(n.name not in ("entity.n.01", "whole.n.02", "artifact.n.01") for n in c.chosen), c
        engine = Engine.from_module(result.module, result.card, device="cpu")
        test = [inside[i] for i in range(len(inside)) if i not in train]
        got = engine.classify([p for p, _ in test], ClassifyOptions(top_k=1))
        right_kept = np.mean([r.top is not None and r.top.label == c and not r.uncertain for r, (_, c) in zip(got, test)])
        marked = np.mean([r.uncertain for r in engine.classify(unknown, ClassifyOptions(top_k=1))])
        assert right_kept >= 0.9 and marked >= 0.9, (head, right_kept, marked, result.card.open_set)
