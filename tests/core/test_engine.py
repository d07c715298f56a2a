"""The engine classifies what a user drops: batches, errors per file, cancel, heatmaps."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tests.support import as_torchvision, kept, tiny_model, write_image
from vit_desktop.core.errors import CancelToken, ModelError
from vit_desktop.core.inference.devices import resolve_device
from vit_desktop.core.inference.engine import Engine
from vit_desktop.core.inference.options import ClassifyOptions
from vit_desktop.core.io import images
from vit_desktop.core.io.scan import scan
from vit_desktop.core.types import ExplainOptions


@pytest.fixture
def engine() -> Engine:
    module, card = tiny_model()
    return Engine.from_module(module, card, device="cpu")


def files_of(folder: Path) -> list[Path]:
    return list(scan([folder]).files)


def test_folder_results_in_order_with_per_file_errors(engine: Engine, image_folder: Path) -> None:
    paths = files_of(image_folder)
    results = engine.classify(paths, ClassifyOptions(top_k=2, batch_size=2))
    assert [r.path for r in results] == [str(p) for p in paths]
    broken = [r for r in results if r.path.endswith("broken.jpg")]
    assert len(broken) == 1 and broken[0].error and not broken[0].predictions
    good = [r for r in results if r.ok]
    assert len(good) == 5
    for r in good:
        assert len(r.predictions) == 2
        assert r.predictions[0].score >= r.predictions[1].score
        assert r.predictions[0].label == engine.card.labels[r.predictions[0].index]


def test_batching_does_not_change_scores(engine: Engine, image_folder: Path) -> None:
    paths = [p for p in files_of(image_folder) if p.name != "broken.jpg"]
    one = engine.classify(paths, ClassifyOptions(batch_size=1, top_k=3))
    many = engine.classify(paths, ClassifyOptions(batch_size=8, top_k=3))
    for a, b in zip(one, many):
        assert [p.index for p in a.predictions] == [p.index for p in b.predictions]
        assert np.allclose([p.score for p in a.predictions], [p.score for p in b.predictions], atol=1e-5)
    # Different pictures get different scores (the model is not constant).
    assert len({round(r.predictions[0].score, 6) for r in one}) > 1


def test_threshold_marks_uncertain(engine: Engine, image_folder: Path) -> None:
    paths = [p for p in files_of(image_folder) if p.name != "broken.jpg"]
    results = engine.classify(paths, ClassifyOptions(threshold=1.01))
    assert all(r.uncertain for r in results)
    assert not any(r.uncertain for r in engine.classify(paths, ClassifyOptions(threshold=0.0)))


def test_cancel_stops_between_batches(engine: Engine, tmp_path: Path) -> None:
    paths = [write_image(tmp_path / f"{i:03}.png", seed=i) for i in range(12)]
    token = CancelToken()
    seen = []
    for batch in engine.classify_batches(paths, ClassifyOptions(batch_size=3), cancel=token):
        seen.extend(batch)
        token.cancel()
    assert len(seen) == 3


class CancelledAfter(CancelToken):
    """Set by the ``n``-th look: a user pressing Cancel while a batch is in the model. Counts the
    looks of each thread (the engine's fp32 CPU pass computes two halves of a batch at once)."""

    def __init__(self, n: int) -> None:
        super().__init__()
        self.looks, self.n = 0, n
        self.by_thread: dict[str, int] = {}

    def raise_if_cancelled(self) -> None:
        import threading

        self.looks += 1
        name = threading.current_thread().name
        self.by_thread[name] = self.by_thread.get(name, 0) + 1
        if self.looks >= self.n:
            self.cancel()
        super().raise_if_cancelled()


@pytest.mark.parametrize("explain", [None, ExplainOptions()])
def test_cancel_stops_inside_a_batch_within_one_layer(tmp_path: Path, explain) -> None:
    import dataclasses

    from vit_desktop.core.models.vit import build_module

    _, card = tiny_model()
    card = dataclasses.replace(card, arch=dataclasses.replace(card.arch, num_layers=4))
    engine = Engine.from_module(build_module(card.arch).eval(), card, device="cpu")
    paths = [write_image(tmp_path / f"{i:03}.png", seed=i) for i in range(8)]
    token = CancelledAfter(2)  # pressed after the first layer of the first batch
    assert list(engine.classify_batches(paths, ClassifyOptions(batch_size=8, explain=explain), cancel=token)) == []
    # Each look comes before a layer: no part of the batch ran its second layer (of four).
    assert token.by_thread and max(token.by_thread.values()) <= 2, token.by_thread
    assert len(engine.classify(paths, ClassifyOptions(batch_size=8, explain=explain))) == 8  # the engine is fine after


def fits_at_most(engine: Engine, limit: int, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Make the engine's device run out of memory above ``limit`` images; returns the sizes tried."""
    tried: list[int] = []
    real = engine._forward

    def forward(x, explain, cancel=None):
        tried.append(x.shape[0])
        if x.shape[0] > limit:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real(x, explain, cancel)

    monkeypatch.setattr(engine, "_forward", forward)
    return tried


@pytest.mark.parametrize("explain", [None, ExplainOptions()])
def test_a_batch_too_big_for_the_gpu_is_split_and_gives_the_same_results(
    engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, explain
) -> None:
    paths = [write_image(tmp_path / f"{i:03}.png", seed=i) for i in range(11)]
    expected = engine.classify(paths, ClassifyOptions(batch_size=8, explain=explain))
    tried = fits_at_most(engine, 3, monkeypatch)
    got = engine.classify(paths, ClassifyOptions(batch_size=8, explain=explain))
    assert [r.path for r in got] == [r.path for r in expected] and all(r.ok for r in got)
    for a, b in zip(got, expected):
        assert [p.index for p in a.predictions] == [p.index for p in b.predictions]
        assert np.allclose([p.score for p in a.predictions], [p.score for p in b.predictions], atol=1e-5)
        if explain is not None:
            assert np.allclose(kept(a.heatmap).grid, kept(b.heatmap).grid, atol=1e-5)
    # 8 failed, then 4, then 2 fitted and is kept: later batches are not tried whole again.
    assert tried[:3] == [8, 4, 2] and max(tried[3:]) == 2 and sum(n for n in tried if n <= 3) == 11


def test_an_image_too_big_even_alone_is_an_error_and_the_run_goes_on(
    engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    paths = [write_image(tmp_path / f"{i:03}.png", seed=i) for i in range(3)]
    fits_at_most(engine, 0, monkeypatch)
    results = engine.classify(paths, ClassifyOptions(batch_size=2))
    assert len(results) == 3 and not any(r.ok for r in results)
    assert all("not enough CPU memory" in kept(r.error) and "smaller model" in kept(r.error) for r in results)


def test_other_errors_are_not_taken_for_lack_of_memory(engine: Engine, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(engine, "_forward", lambda x, explain, cancel=None: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        engine.classify([write_image(tmp_path / "a.png")])


def test_what_counts_as_running_out_of_memory() -> None:
    from vit_desktop.core.inference.devices import is_out_of_memory

    cpu, cuda, mps = torch.device("cpu"), torch.device("cuda"), torch.device("mps")
    assert is_out_of_memory(torch.cuda.OutOfMemoryError("CUDA out of memory"), cuda)
    assert is_out_of_memory(RuntimeError("MPS backend out of memory (MPS allocated: 7 GB)"), mps)
    assert is_out_of_memory(RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory"), cpu)
    assert is_out_of_memory(RuntimeError("CUDA error: CUBLAS_STATUS_ALLOC_FAILED when calling `cublasCreate(handle)`"),
                            cuda)
    assert not is_out_of_memory(RuntimeError("CUDA error: CUBLAS_STATUS_EXECUTION_FAILED"), cuda)
    assert not is_out_of_memory(RuntimeError("mat1 and mat2 shapes cannot be multiplied"), cuda)
    assert not is_out_of_memory(ValueError("out of memory"), cuda)


def test_heatmap_lies_on_the_crop_the_model_saw(engine: Engine, tmp_path: Path) -> None:
    wide = write_image(tmp_path / "wide.png", size=(90, 36))
    (result,) = engine.classify([wide], ClassifyOptions(explain=ExplainOptions("max", 0.2)))
    hm = result.heatmap
    assert hm is not None and hm.grid.shape == (4, 4) and hm.grid.dtype == np.float32
    assert math.isclose(float(hm.grid.max()), 1.0, rel_tol=1e-5)
    assert hm.image_size == (90, 36) and hm.head_fusion == "max"
    left, top, right, bottom = hm.crop_box
    # Shorter side 36 -> resized to 36, crop 32 of it: a centred 32x32 (original pixels) square.
    assert math.isclose(right - left, 32.0, rel_tol=1e-6) and math.isclose(bottom - top, 32.0, rel_tol=1e-6)
    assert math.isclose(left + right, 90.0) and math.isclose(top + bottom, 36.0)
    # The same scores as without the heatmap: it is the same forward pass.
    (plain,) = engine.classify([wide])
    assert np.isclose(plain.predictions[0].score, result.predictions[0].score, atol=1e-5)


def test_exif_rotated_photo_reports_oriented_size(engine: Engine, tmp_path: Path) -> None:
    path = tmp_path / "rotated.jpg"
    img = Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 80, 3), dtype=np.uint8))
    exif = img.getexif()
    exif[0x0112] = 6  # rotate 90° when shown
    img.save(path, exif=exif)
    (r,) = engine.classify([path], ClassifyOptions(explain=ExplainOptions()))
    assert r.image_size == (40, 80) and r.heatmap is not None and r.heatmap.image_size == (40, 80)


def test_classify_pasted_image_and_grayscale_preprocessing(tmp_path: Path) -> None:
    from dataclasses import replace

    module, card = tiny_model()
    gray = replace(card, preprocess=replace(card.preprocess, color_mode="L", invert=True))
    eng = Engine.from_module(module, gray, device="cpu")
    img = Image.new("RGBA", (50, 50), (255, 0, 0, 0))  # fully transparent: white after compositing
    r = eng.classify_image(img, "clipboard")
    assert r.ok and r.path == "clipboard"
    # Transparency is composited on white before the grayscale inversion.
    white = eng.classify_image(Image.new("RGB", (50, 50), (255, 255, 255)), "white")
    black = eng.classify_image(Image.new("RGB", (50, 50)), "black")
    assert np.isclose(r.predictions[0].score, white.predictions[0].score, atol=1e-6)
    assert not np.isclose(r.predictions[0].score, black.predictions[0].score, atol=1e-4)


def test_class_specific_maps_differ_per_class(engine: Engine, tmp_path: Path) -> None:
    path = write_image(tmp_path / "a.png", seed=3)
    a = engine.explain_class(path, 0)
    b = engine.explain_class(path, 2)
    assert a.class_index == 0 and b.class_index == 2 and a.grid.shape == (4, 4)
    assert not np.allclose(a.grid, b.grid)
    with pytest.raises(ValueError):
        engine.explain_class(path, 99)
    assert engine.rollout(path, ExplainOptions("min")).head_fusion == "min"


def test_unavailable_device_is_a_clear_error() -> None:
    if not torch.cuda.is_available():
        with pytest.raises(ModelError, match="no CUDA GPU"):
            resolve_device("cuda")
    with pytest.raises(ModelError, match="unknown device"):
        resolve_device("tpu:9")
    assert resolve_device("cpu").type == "cpu"


def test_load_unknown_name_says_what_exists() -> None:
    with pytest.raises(ModelError, match="vit_b_16"):
        Engine.load("vit_nonexistent", device="cpu")


def read_labels(photos: Path) -> dict[str, dict[str, str]]:
    with open(photos / "labels.csv", newline="") as f:
        return {row["file"]: row for row in csv.DictReader(f)}


def test_real_deit_knows_the_shared_photos(deit_path: Path, photos_dir: Path) -> None:
    from torchvision import transforms as T

    eng = Engine.load(deit_path, device="cpu")
    labels = read_labels(photos_dir)
    paths = sorted(photos_dir / name for name in labels)
    results = eng.classify(paths, ClassifyOptions(top_k=5, batch_size=8, explain=ExplainOptions()))
    truth = [int(labels[p.name]["imagenet_index"]) for p in paths]
    top1 = sum(r.predictions[0].index == t for r, t in zip(results, truth))
    top5 = sum(t in [p.index for p in r.predictions] for r, t in zip(results, truth))
    # DeiT-Tiny scores 72 % / 91 % on ImageNet; these weights' rounded LayerNorms cost a little more.
    assert top1 >= 0.65 * len(paths), f"top-1 {top1}/{len(paths)}"
    assert top5 >= 0.8 * len(paths), f"top-5 {top5}/{len(paths)}"
    # The engine's one-step resize+crop predicts what timm's reference pipeline predicts.
    reference = T.Compose(
        [
            T.Resize(256, interpolation=T.InterpolationMode.BICUBIC),
            T.CenterCrop(224),
            T.ToTensor(),
            T.Normalize(eng.card.preprocess.mean, eng.card.preprocess.std),
        ]
    )
    x = torch.stack([reference(Image.open(p).convert("RGB")) for p in paths])
    with torch.no_grad():
        ref_top1 = as_torchvision(eng.module)(x).argmax(1).tolist()  # torchvision's own forward
    assert [r.predictions[0].index for r in results] == ref_top1


def test_real_deit_rollout_matches_plain_implementation(deit_path: Path, photos_dir: Path) -> None:
    from tests.reference import attention_by_hooks, plain_rollout

    eng = Engine.load(deit_path, device="cpu")
    paths = sorted(photos_dir.glob("*.JPEG"))[:3]
    results = eng.classify(paths, ClassifyOptions(explain=ExplainOptions()))
    x = torch.stack([eng.preprocess_image(images.load_image(p)) for p in paths])
    _, maps = attention_by_hooks(as_torchvision(eng.module), x)
    expected = plain_rollout(maps)
    for r, ref in zip(results, expected):
        assert r.heatmap is not None
        np.testing.assert_allclose(r.heatmap.grid, ref, atol=2e-3)


def test_kept_features_are_what_the_head_reads(engine: Engine, image_folder: Path) -> None:
    """A head run on the kept features gives the run's own probabilities: stored features can
    stand in for the photo for any head on this backbone."""
    paths = [p for p in files_of(image_folder) if not p.name.startswith("broken")]
    results = engine.classify(paths, ClassifyOptions(batch_size=4, keep_features=True, keep_probabilities=True))
    feats = np.stack([kept(r.features) for r in results])
    assert feats.dtype == np.float32 and feats.shape == (len(paths), engine.card.arch.hidden_dim)
    with torch.inference_mode():
        again = engine.module.heads(torch.from_numpy(feats)).softmax(dim=-1).numpy()
    np.testing.assert_allclose(again, np.stack([kept(r.probabilities) for r in results]), atol=1e-6)
    assert all(r.features is None for r in engine.classify(paths[:2]))  # only when asked
