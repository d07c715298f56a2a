"""``vit-desktop finetune`` end to end on a generated folder, then ``classify`` with the new model."""

from __future__ import annotations

import io
import random
from pathlib import Path

import pytest
import torch
from PIL import Image, ImageDraw
from torchvision.models import VisionTransformer

from tests.support import colour_folder
from vit_desktop import cli
from vit_desktop.core.inference.engine import Engine
from vit_desktop.core.models.model_file import save_model
from vit_desktop.core.types import Architecture, ModelCard, Preprocess


def _colour_folder(root: Path, per_class: int = 8, size: int = 40) -> Path:
    return colour_folder(root, per_class, size, seed=1)


@pytest.fixture()
def base_model(tmp_path: Path) -> Path:
    """A tiny random ViT saved in the project format, used as --base."""
    torch.manual_seed(0)
    module = VisionTransformer(image_size=32, patch_size=8, num_layers=2, num_heads=2, hidden_dim=16, mlp_dim=32,
                               num_classes=4)
    card = ModelCard("tiny", "file", "tiny", Architecture(32, 8, 2, 2, 16, 32, 4), ("a", "b", "c", "d"),
                     Preprocess(crop_size=32, resize_size=36))
    return save_model(tmp_path / "base.safetensors", module, card)


_capture: pytest.CaptureFixture[str] | None = None


@pytest.fixture(autouse=True)
def _capsys(capsys: pytest.CaptureFixture[str]) -> None:
    global _capture
    _capture = capsys


def _run(*argv: str) -> tuple[int, str, str]:
    """Exit status, stdout and stderr of one command (whether written to the streams or sys.std*)."""
    assert _capture is not None
    _capture.readouterr()
    out, err = io.StringIO(), io.StringIO()
    code = cli.main(list(argv), out=out, err=err)
    captured = _capture.readouterr()
    return code, out.getvalue() + captured.out, err.getvalue() + captured.err


def test_finetune_then_classify_with_the_new_model(tmp_path: Path, base_model: Path) -> None:
    data = _colour_folder(tmp_path / "data")
    out_file = tmp_path / "colours.safetensors"
    code, out, err = _run("finetune", str(data), "--base", str(base_model), "--output", str(out_file),
                          "--mode", "head", "--seed", "3", "--device", "cpu")
    assert code == 0, err
    # The tiny base knows no hierarchy: cross-validation chooses between the other heads and says so.
    (head,) = [ln for ln in out.splitlines() if ln.startswith("head: ")]
    assert "CV accuracy" in head and ("probabilities" in head and "features" in head)
    assert "5-fold cross-validation" in out and "flatter this estimate" in out
    final = next(ln for ln in out.splitlines() if ln.startswith("validation accuracy"))
    accuracy = float(final.split()[2].rstrip("%")) / 100
    assert accuracy >= 0.8
    assert out_file.is_file()
    engine = Engine.load(out_file, device="cpu")
    assert engine.card.labels == ("blue", "green", "red")
    assert engine.card.name == "colours"
    # classify uses the new model and its labels.
    code, out, err = _run("classify", str(data / "red" / "0.png"), "--model", str(out_file), "--device", "cpu")
    assert code == 0, err
    assert any(lbl in out for lbl in ("red", "green", "blue"))


def test_refuses_to_overwrite_without_force(tmp_path: Path, base_model: Path) -> None:
    data = _colour_folder(tmp_path / "data", per_class=3)
    out_file = tmp_path / "exists.safetensors"
    out_file.write_bytes(b"keep me")
    code, out, err = _run("finetune", str(data), "--base", str(base_model), "--output", str(out_file),
                          "--epochs", "2", "--device", "cpu")
    assert code == 2
    assert "already exists" in err and "--force" in err
    assert out_file.read_bytes() == b"keep me"
    code, _, err = _run("finetune", str(data), "--base", str(base_model), "--output", str(out_file),
                        "--epochs", "2", "--device", "cpu", "--force")
    assert code == 0, err
    assert Engine.load(out_file, device="cpu").card.num_classes == 3


def test_bad_data_exits_2_with_one_line(tmp_path: Path, base_model: Path) -> None:
    data = _colour_folder(tmp_path / "data", per_class=3)
    for p in list((data / "green").iterdir())[1:]:
        p.unlink()
    code, _, err = _run("finetune", str(data), "--base", str(base_model), "--output", str(tmp_path / "o.safetensors"),
                        "--device", "cpu")
    assert code == 2
    assert err.strip().splitlines()[-1] == \
        "vit-desktop: error: class 'green' has 1 image; each class needs at least 2"
    code, _, err = _run("finetune", str(tmp_path / "nowhere"), "--base", str(base_model), "--output",
                        str(tmp_path / "o.safetensors"))
    assert code == 2 and "no such folder" in err
    code, _, err = _run("finetune", str(data), "--output", str(tmp_path / "o.safetensors"))
    assert code == 2 and "--base MODEL is required" in err
    code, _, err = _run("finetune", str(data), "--base", str(base_model), "--output", str(tmp_path / "o.pth"))
    assert code == 2 and ".safetensors" in err
    code, _, err = _run("finetune", str(data), "--base", str(base_model), "--output", str(tmp_path / "o.safetensors"),
                        "--val-split", "1.5")
    assert code == 2 and "between 0 and 1" in err
    assert not (tmp_path / "o.safetensors").exists()


def test_unreadable_photos_are_listed_and_training_goes_on(tmp_path: Path, base_model: Path) -> None:
    data = _colour_folder(tmp_path / "data", per_class=4)
    (data / "red" / "broken.png").write_bytes(b"not an image")
    code, out, err = _run("finetune", str(data), "--base", str(base_model), "--output", str(tmp_path / "o.safetensors"),
                          "--epochs", "3", "--device", "cpu")
    assert code == 0, err
    assert "broken.png" in err and "1 unreadable photo skipped" in err
    assert "saved" in out


def test_partial_training_says_which_backbone_was_saved(tmp_path: Path, base_model: Path) -> None:
    data = _colour_folder(tmp_path / "data", per_class=6)
    code, out, err = _run("finetune", str(data), "--base", str(base_model), "--output", str(tmp_path / "o.safetensors"),
                          "--mode", "partial", "--epochs", "2", "--lr", "0", "--device", "cpu")
    assert code == 0, err
    lines = out.splitlines()
    (backbone,) = [ln for ln in lines if ln.startswith("backbone: ")]
    assert backbone.startswith("backbone: discarded: 2 epochs of training never lowered the validation loss")
    # After the summary the command line always printed, before the file it saved.
    assert lines.index(backbone) > lines.index(next(ln for ln in lines if ln.startswith("note: ")))
    assert lines[-1].startswith("saved ")


def test_scratch_mode_trains_a_small_grayscale_vit(tmp_path: Path) -> None:
    """Bars versus rings, grayscale: a small ViT from random weights, no base model needed."""
    rng = random.Random(0)
    root = tmp_path / "shapes"
    for cls in ("bar", "ring"):
        (root / cls).mkdir(parents=True)
        for i in range(16):
            img = Image.new("L", (28, 28), rng.randint(0, 40))
            d = ImageDraw.Draw(img)
            y = rng.randint(3, 20)
            if cls == "bar":
                d.rectangle((2, y, 25, y + 4), fill=220)
            else:
                x = rng.randint(2, 12)
                d.ellipse((x, y - 3 if y > 5 else y, x + 13, (y - 3 if y > 5 else y) + 13), outline=220, width=2)
            img.save(root / cls / f"{i}.png")
    out_file = tmp_path / "shapes.safetensors"
    code, out, err = _run("finetune", str(root), "--mode", "scratch", "--output", str(out_file),
                          "--epochs", "12", "--image-size", "28", "--patch-size", "7", "--depth", "2", "--width", "32",
                          "--heads", "2", "--device", "cpu")
    assert code == 0, err
    engine = Engine.load(out_file, device="cpu")
    assert engine.card.preprocess.color_mode == "L"
    assert engine.card.arch.image_size == 28 and engine.card.arch.num_layers == 2
    assert engine.card.labels == ("bar", "ring")
    final = next(ln for ln in out.splitlines() if ln.startswith("validation accuracy"))
    assert float(final.split()[2].rstrip("%")) >= 80
