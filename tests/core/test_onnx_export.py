"""ONNX export: the file runs in onnxruntime as the model runs here, or it is not kept."""

from __future__ import annotations

import copy
import io
import json
import os
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.support import tiny_model, write_image
from vit_desktop import cli
from vit_desktop.core.inference.engine import Engine
from vit_desktop.core.io.images import load_image
from vit_desktop.core.models import onnx as onnx_export
from vit_desktop.core.models import vit
from vit_desktop.core.models.onnx import ExportError, export_onnx, read_onnx_metadata
from vit_desktop.core.types import HeadSpec, ModelCard

ort = pytest.importorskip("onnxruntime")


def random_tiny() -> tuple[vit.ViT, ModelCard]:
    module, card = tiny_model()
    with torch.no_grad():  # torchvision zero-initialises the head: random everything, or the check is trivial
        for p in module.parameters():
            p.normal_(0, 0.3)
    return module, card


def run_onnx(path: Path, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {"pixel_values": x.astype(np.float32)})[0]


def test_export_runs_like_the_model_with_any_batch_and_carries_its_description(tmp_path: Path) -> None:
    module, card = random_tiny()
    photos = [write_image(tmp_path / f"p{i}.png", seed=i) for i in range(3)]
    report = export_onnx(module, card, tmp_path / "out" / "tiny.onnx", photos=photos)
    assert report.photos == 3 and report.top1_agree == report.photos + report.noise
    assert report.max_probability_diff < 1e-5
    x = np.random.default_rng(0).standard_normal((5, 3, 32, 32), dtype=np.float32)
    with torch.no_grad():
        expected = vit.forward(module, torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(run_onnx(report.path, x), expected, atol=1e-4)
    meta = read_onnx_metadata(report.path)
    assert json.loads(meta["labels"]) == list(card.labels)
    assert json.loads(meta["preprocess"])["crop_size"] == 32
    side = json.loads(report.sidecar.read_text(encoding="utf-8"))
    assert side["labels"] == list(card.labels) and side["verification"]["top1_agree"] == 3 + report.noise
    assert side["preprocess"]["mean"] == list(card.preprocess.mean)


def test_a_few_shot_head_exports_with_probabilities(tmp_path: Path) -> None:
    module, card = random_tiny()
    spec = HeadSpec(base_classes=card.num_classes, mass=True, logprob=True, features=True)
    head = vit.FewShotHead(spec, vit.feature_size(module), 3, base=vit.classifier(module))
    with torch.no_grad():
        for p in head.parameters():
            p.normal_(0, 0.3)
        head.masks[:2, 0] = head.masks[2:4, 1] = head.masks[4:, 2] = 1.0
    vit.set_head(module, head)
    card = replace(card, labels=("a", "b", "c"), arch=replace(card.arch, num_classes=3), head=spec)
    report = export_onnx(module, card, tmp_path / "few.onnx", outputs="probabilities")
    x = np.random.default_rng(1).standard_normal((4, 3, 32, 32), dtype=np.float32)
    got = run_onnx(report.path, x)
    with torch.no_grad():
        expected = vit.forward(module, torch.from_numpy(x)).softmax(1).numpy()
    np.testing.assert_allclose(got, expected, atol=1e-5)
    assert got.sum(1) == pytest.approx(np.ones(4), abs=1e-5)


def test_an_export_that_disagrees_is_not_kept(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    module, card = random_tiny()
    real_export = onnx_export._export

    def export_other_weights(graph, path, size, outputs):  # a broken exporter
        other = copy.deepcopy(graph.module)
        with torch.no_grad():  # other weights than the model's
            for p in other.parameters():
                p.add_(torch.randn(p.shape, generator=torch.Generator().manual_seed(1)))
        real_export(onnx_export._Graph(other, False).eval(), path, size, outputs)

    monkeypatch.setattr(onnx_export, "_export", export_other_weights)
    dest = tmp_path / "bad.onnx"
    with pytest.raises(ExportError, match="disagrees with the model"):
        export_onnx(module, card, dest)
    assert not dest.exists() and not dest.with_suffix(".json").exists()
    assert list(tmp_path.iterdir()) == []  # no temporary file left either


def test_existing_files_are_kept_unless_asked(tmp_path: Path) -> None:
    module, card = random_tiny()
    dest = tmp_path / "m.onnx"
    dest.write_bytes(b"mine")
    with pytest.raises(FileExistsError):
        export_onnx(module, card, dest)
    assert dest.read_bytes() == b"mine"


def run_cli(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = cli.main(list(argv), out=out, err=err)
    return code, out.getvalue(), err.getvalue()


def test_command_line_export(tiny_model_file: Path, image_folder: Path, tmp_path: Path) -> None:
    dest = tmp_path / "tiny.onnx"
    code, _, err = run_cli("export", str(tiny_model_file), "--onnx", str(dest), "--photos", str(image_folder))
    assert code == 0, err
    assert "checked in onnxruntime on 5 photos" in err and "broken.jpg" in err  # the bad photo is said
    code, _, err = run_cli("export", str(tiny_model_file), "--onnx", str(dest))
    assert code == 2 and "already exists; pass --overwrite" in err
    code, _, err = run_cli("export", str(tiny_model_file), "--onnx", str(tmp_path / "x.bin"))
    assert code == 2 and "must end in .onnx" in err


def test_without_the_export_extra_one_line_says_what_to_install(tiny_model_file: Path, tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(onnx_export, "missing_modules", lambda: ["onnxscript"])
    code, _, err = run_cli("export", str(tiny_model_file), "--onnx", str(tmp_path / "m.onnx"))
    assert code == 2 and "pip install 'vit-desktop[export]'" in err and err.count("\n") == 1
    assert not (tmp_path / "m.onnx").exists()


def test_real_deit_export_gives_the_engines_top1_on_every_shared_photo(deit_path: Path, photos_dir: Path,
                                                                      tmp_path: Path) -> None:
    engine = Engine.load(deit_path, device="cpu", precision="fp32")
    photos = sorted(photos_dir.glob("*.JPEG"))
    report = export_onnx(engine.module, engine.card, tmp_path / "deit.onnx", photos=photos)
    assert report.photos == len(photos) == 24
    assert report.top1_agree == report.photos + report.noise
    assert report.max_probability_diff < 1e-4
    x = torch.stack([engine.preprocess_image(load_image(p)) for p in photos])
    got = run_onnx(report.path, x.numpy()).argmax(1)
    ours = [r.predictions[0].index for r in engine.classify(photos)]
    assert got.tolist() == ours


def labels_of_pair(dest: Path) -> tuple[list[str] | None, list[str] | None]:
    """The labels the export at ``dest`` and its sidecar describe (None for a file that is not there)."""
    sidecar = dest.with_suffix(".json")
    model = json.loads(read_onnx_metadata(dest)["labels"]) if dest.exists() else None
    side = json.loads(sidecar.read_text(encoding="utf-8"))["labels"] if sidecar.exists() else None
    return model, side


def test_an_export_over_another_never_leaves_a_mismatched_pair(tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """Killed between any two renames, or failing at any of them, the model and its sidecar agree."""
    old_module, old_card = random_tiny()
    dest = tmp_path / "m.onnx"
    export_onnx(old_module, old_card, dest)
    module, card = tiny_model(5)
    real_replace = os.replace  # files' atomic writes rename with it
    seen: list[tuple[list[str] | None, list[str] | None]] = []

    def watched(src, dst):  # what a kill right after this rename would leave
        real_replace(src, dst)
        seen.append(labels_of_pair(dest))

    monkeypatch.setattr(os, "replace", watched)
    export_onnx(module, card, dest, overwrite=True)
    assert seen and all(a is None or b is None or a == b for a, b in seen), seen
    assert labels_of_pair(dest) == (list(card.labels), list(card.labels))
    new = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    assert sorted(new) == ["m.json", "m.onnx"]  # no temporary file or old copy left

    # Each rename failing in turn (a full disk, a file held by another program): all as before.
    for n in range(1, 5):
        calls = 0

        def failing(src, dst, n=n):
            nonlocal calls
            calls += 1
            if calls == n:
                raise OSError(5, "Input/output error")
            real_replace(src, dst)

        monkeypatch.setattr(os, "replace", failing)
        with pytest.raises(ExportError, match="could not write .* nothing kept"):
            export_onnx(old_module, old_card, dest, overwrite=True)
        assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == new, f"rename {n} failing"


def test_a_sidecar_that_cannot_be_written_keeps_no_export(tmp_path: Path, tiny_model_file: Path) -> None:
    module, card = random_tiny()
    dest = tmp_path / "m.onnx"
    dest.with_suffix(".json").mkdir()  # where the sidecar goes, a folder
    with pytest.raises(ExportError, match="nothing kept"):
        export_onnx(module, card, dest, overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.json", "tiny.safetensors"]
    code, _, err = run_cli("export", str(tiny_model_file), "--onnx", str(dest), "--overwrite")
    assert code == 2 and len(err.splitlines()) == 1 and "m.json is a folder" in err
    assert not dest.exists()
