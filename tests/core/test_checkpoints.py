"""Every checkpoint layout loads into the same torchvision ViT; bad files are refused in one line."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from torchvision.models import VisionTransformer

from tests.reference import ARCH, to_hf, to_timm
from vit_desktop.core.errors import ModelError
from vit_desktop.core.models.checkpoints import load_checkpoint
from vit_desktop.core.models.model_file import save_model

# hidden 128 with 2 heads: the standard 64-wide heads, so files without metadata infer it right.


@pytest.fixture
def reference() -> VisionTransformer:
    torch.manual_seed(1)
    m = VisionTransformer(**ARCH).eval()
    # Random everything (torchvision zero-initialises the head) so any mix-up shows in the logits.
    with torch.no_grad():
        for p in m.parameters():
            p.normal_(0, 0.2)
    return m


def logits(m: torch.nn.Module, seed: int = 0) -> torch.Tensor:
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        return m(x)


def test_torchvision_pth_loads_with_inferred_architecture(tmp_path: Path, reference: VisionTransformer) -> None:
    path = tmp_path / "vit.pth"
    torch.save({"model": reference.state_dict(), "epoch": 3}, path)  # a training checkpoint nests it
    module, card = load_checkpoint(path)
    assert card.arch.hidden_dim == 128 and card.arch.num_heads == 2 and card.arch.image_size == 32
    assert card.labels == tuple(f"class_{i}" for i in range(4))
    assert torch.allclose(logits(module), logits(reference), atol=1e-5)


def test_timm_layout_gives_identical_logits(tmp_path: Path, reference: VisionTransformer) -> None:
    path = tmp_path / "deit_like.safetensors"
    save_file(to_timm(reference), str(path))
    module, card = load_checkpoint(path)
    assert card.preprocess.interpolation == "bicubic"  # timm's training recipe
    assert torch.allclose(logits(module), logits(reference), atol=1e-5)


def test_huggingface_folder_with_config_gives_labels_and_identical_logits(
    tmp_path: Path, reference: VisionTransformer
) -> None:
    folder = tmp_path / "hf-model"
    folder.mkdir()
    save_file(to_hf(reference), str(folder / "model.safetensors"))
    labels = ["cat", "dog", "fox", "owl"]
    config = {"num_attention_heads": 2, "layer_norm_eps": 1e-6, "id2label": {str(i): n for i, n in enumerate(labels)}}
    (folder / "config.json").write_text(json.dumps(config))
    module, card = load_checkpoint(folder)
    assert card.labels == tuple(labels)
    assert card.preprocess.mean == (0.5, 0.5, 0.5)  # ViTImageProcessor's default
    assert torch.allclose(logits(module), logits(reference), atol=1e-5)


def test_project_format_round_trips(tmp_path: Path) -> None:
    from tests.support import tiny_model

    module, card = tiny_model(num_classes=3)
    card = replace(card, labels=("äpfel", "pear", "plum"))
    path = save_model(tmp_path / "mine.safetensors", module, card, extra={"base_model": "vit_b_16"})
    loaded, got = load_checkpoint(path)
    assert got.arch == card.arch and got.labels == card.labels and got.preprocess == card.preprocess
    assert dict(got.extra)["base_model"] == "vit_b_16"
    assert torch.equal(logits(loaded), logits(module))


def test_save_never_overwrites_without_being_asked(tmp_path: Path) -> None:
    from tests.support import tiny_model

    module, card = tiny_model()
    path = tmp_path / "m.safetensors"
    path.write_bytes(b"the user's file")
    with pytest.raises(FileExistsError):
        save_model(path, module, card)
    assert path.read_bytes() == b"the user's file"
    save_model(path, module, card, overwrite=True)
    assert load_checkpoint(path)[1].labels == card.labels
    assert [p.name for p in tmp_path.iterdir()] == ["m.safetensors"]  # no temporary left behind


class NotATensor:
    pass


@pytest.mark.parametrize(
    "make, expected",
    [
        (lambda p, m: p.write_bytes(p.with_suffix(".src").read_bytes()[:5000]), "not a valid safetensors"),
        (lambda p, m: p.write_bytes(b"hello"), "not a valid safetensors"),
    ],
)
def test_broken_safetensors_is_refused_in_one_line(tmp_path: Path, reference, make, expected) -> None:
    path = tmp_path / "model.safetensors"
    save_file(to_timm(reference), str(path.with_suffix(".src")))
    make(path, reference)
    with pytest.raises(ModelError) as err:
        load_checkpoint(path)
    assert expected in str(err.value) and "\n" not in str(err.value)


def test_pickled_code_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "evil.pth"
    torch.save({"weights": torch.zeros(2), "payload": NotATensor()}, path)
    with pytest.raises(ModelError, match="refused"):
        load_checkpoint(path)


def test_truncated_pth_is_refused(tmp_path: Path, reference) -> None:
    path = tmp_path / "cut.pth"
    torch.save(reference.state_dict(), path)
    path.write_bytes(path.read_bytes()[:20000])
    with pytest.raises(ModelError, match="truncated"):
        load_checkpoint(path)


def test_mismatched_shape_names_key_and_shapes(tmp_path: Path, reference) -> None:
    sd = to_timm(reference)
    sd["blocks.1.mlp.fc2.weight"] = torch.zeros(128, 50)  # fc1 says 96 wide
    path = tmp_path / "bad.safetensors"
    save_file(sd, str(path))
    with pytest.raises(ModelError) as err:
        load_checkpoint(path)
    msg = str(err.value)
    assert "encoder_layer_1.mlp.3.weight" in msg and "(128, 50)" in msg and "(128, 96)" in msg


def test_missing_block_and_foreign_models_are_refused(tmp_path: Path, reference) -> None:
    sd = {k: v for k, v in to_timm(reference).items() if not k.startswith("blocks.0.")}
    save_file(sd, str(tmp_path / "hole.safetensors"))
    with pytest.raises(ModelError, match="block 0 is missing"):
        load_checkpoint(tmp_path / "hole.safetensors")
    save_file({"conv1.weight": torch.zeros(8, 3, 3, 3), "fc.weight": torch.zeros(10, 8)}, str(tmp_path / "cnn.safetensors"))
    with pytest.raises(ModelError, match="not a Vision Transformer"):
        load_checkpoint(tmp_path / "cnn.safetensors")
    with pytest.raises(ModelError, match="no such file"):
        load_checkpoint(tmp_path / "nothing.pth")


def test_distilled_deit_is_refused_with_reason(tmp_path: Path, reference) -> None:
    sd = to_timm(reference)
    sd["dist_token"] = torch.zeros(1, 1, 128)
    save_file(sd, str(tmp_path / "distilled.safetensors"))
    with pytest.raises(ModelError, match="distilled"):
        load_checkpoint(tmp_path / "distilled.safetensors")


def test_real_deit_loads_with_imagenet_labels(deit_path: Path) -> None:
    module, card = load_checkpoint(deit_path)
    assert (card.arch.num_heads, card.arch.hidden_dim, card.arch.num_layers) == (3, 192, 12)
    assert card.arch.image_size == 224 and card.arch.patch_size == 16
    assert len(card.labels) == 1000 and card.labels[1] == "goldfish"


@pytest.mark.parametrize("check_elements", [1 << 24, 1000, 10])
@pytest.mark.parametrize("where", ["encoder.layers.encoder_layer_1.mlp.3.weight", "heads.head.bias", "conv_proj.weight"])
def test_weights_with_nan_or_infinity_are_refused_naming_the_tensor(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                    where: str, check_elements: int) -> None:
    """Checked a few large groups at a time (any group size): the tensor is named wherever it is."""
    import torch
    from safetensors import safe_open
    from safetensors.torch import save_file

    from tests.support import tiny_model
    from vit_desktop.core.errors import ModelError
    from vit_desktop.core.models import checkpoints
    from vit_desktop.core.models.model_file import save_model

    monkeypatch.setattr(checkpoints, "_CHECK_ELEMENTS", check_elements)
    module, card = tiny_model()
    good = save_model(tmp_path / "good.safetensors", module, card)
    assert checkpoints.load_checkpoint(good)[1].name == card.name
    with safe_open(str(good), framework="pt") as f:
        meta = f.metadata()
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    for value in (float("nan"), float("inf")):
        bad = {**tensors, where: tensors[where].clone()}
        bad[where].view(-1)[-1] = value
        path = tmp_path / "bad.safetensors"
        save_file(bad, str(path), metadata=meta)
        with pytest.raises(ModelError, match=f"{where.replace('.', '[.]')} contains NaN or infinite values"):
            checkpoints.load_checkpoint(path)
    assert torch.isfinite(tensors[where]).all()
