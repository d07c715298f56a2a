"""Model files are data from anywhere: whatever they declare or hold, the answer is one ModelError
line, given before a module is built or a size they declare is allocated."""

from __future__ import annotations

import io
import json
import os
import random
import socket
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torchvision.models import VisionTransformer

from tests.reference import ARCH, to_hf, to_timm
from tests.support import tiny_model
from vit_desktop.core.errors import ModelError
from vit_desktop.core.models import checkpoints
from vit_desktop.core.models.checkpoints import load_checkpoint
from vit_desktop.core.models.model_file import save_model

DEEP = "[" * 100_000 + "]" * 100_000  # a JSON value nested 100k deep: Python's reader recurses


@pytest.fixture
def never_built(monkeypatch: pytest.MonkeyPatch) -> None:
    """Building a module fails the test: a refusal must come before (10^9 layers would take days,
    a 99984-pixel input 30 GB)."""

    def build(*args: object, **kw: object) -> None:
        raise AssertionError("a module was built from a file that should have been refused")

    monkeypatch.setattr(checkpoints, "build_module", build)


def refused(path: Path) -> str:
    with pytest.raises(ModelError) as err:
        load_checkpoint(path)
    message = str(err.value)
    assert "\n" not in message and len(message) < 400, message
    return message


# --------------------------------------------------------------------------------------------
# The project's own files: metadata edited


@pytest.fixture
def project_file(tmp_path: Path) -> Path:
    module, card = tiny_model()
    return save_model(tmp_path / "tiny.safetensors", module, card)


def edited(path: Path, key: str, edit: Callable[[Any], Any] | str) -> Path:
    """``path`` with metadata ``vit_desktop.<key>`` changed: ``edit`` maps its JSON value, or is the new text."""
    with safe_open(str(path), "pt") as f:
        meta = dict(f.metadata())
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    name = "vit_desktop." + key
    old = json.loads(meta[name]) if name in meta else None  # a linear head has no vit_desktop.head
    meta[name] = edit if isinstance(edit, str) else json.dumps(edit(old))
    out = path.with_name(f"edited-{key}.safetensors")
    save_file(tensors, str(out), metadata=meta)
    return out


def changed(**fields: Any) -> Callable[[dict[str, Any]], dict[str, Any]]:
    return lambda d: {**d, **fields}


def nested_head(depth: int) -> dict[str, Any]:
    head: dict[str, Any] = {"base_classes": 5}
    for _ in range(depth):
        head = {"base_classes": 5, "mass": True, "base": head}
    return head


PROJECT_CASES = [
    ("arch", changed(num_layers=10**9), "number of layers 1000000000 is out of range"),
    ("arch", changed(num_heads=7), "not divisible by 7 attention heads"),
    ("arch", changed(num_heads=0), "number of attention heads 0 is out of range"),
    ("arch", changed(patch_size=0), "patch size 0 is out of range"),
    ("arch", changed(image_size=200000), "input size 200000 is out of range"),
    ("arch", changed(image_size=36), "not a multiple of the patch size"),
    ("arch", changed(image_size=4096, patch_size=8), "patches"),
    ("arch", changed(reg_tokens=-1), "register tokens -1 is out of range"),
    ("arch", changed(num_classes=10**9), "number of classes 1000000000 is out of range"),
    ("arch", changed(hidden_dim="16"), "hidden size '16' is not a whole number"),
    ("arch", changed(class_token="yes"), "class_token 'yes' is not true or false"),
    ("arch", changed(layer_norm_eps=float("nan")), "layer_norm_eps nan is not a finite number"),
    ("arch", changed(layer_norm_eps=float("inf")), "layer_norm_eps inf is not a finite number"),
    ("arch", changed(layer_norm_eps=0), "layer_norm_eps 0 is out of range"),
    ("arch", changed(depth=12), "unknown field 'depth'"),
    ("arch", DEEP, "unreadable JSON"),
    ("arch", "[1, 2]", "is not a JSON object"),
    ("preprocess", changed(resize_size=200000), "resize_size 200000 is out of range"),
    ("preprocess", '{"crop_size": 32, "resize_size": 1e400}', "resize_size inf is not a number"),
    ("preprocess", changed(std=[float("nan"), 0.2, 0.2]), "std nan is not a finite number"),
    ("preprocess", changed(mean=[float("inf"), 0.4, 0.4]), "mean inf is not a finite number"),
    ("preprocess", changed(std=[0.0, 0.2, 0.2]), "std 0 is out of range"),
    ("preprocess", changed(rescale=float("nan")), "rescale nan is not a finite number"),
    ("preprocess", changed(mean=[0.5] * 1_000_000), "three numbers (RGB) expected"),
    ("labels", lambda labels: [{"name": "a"}, *labels[1:]], "label 0 is {'name': 'a'}, not a string"),
    ("labels", lambda labels: ["a" * 1_000_000, *labels[1:]], "label 0 is 1,000,000 characters long"),
    ("labels", lambda labels: [f"c{i}" for i in range(1_000_000)], "1,000,000 labels (at most 100,000 classes)"),
    ("labels", lambda labels: [labels[0], labels[1], labels[0]], "label 2 'label 0' repeats label 0"),
    ("labels", lambda labels: ["", *labels[1:]], "label 0 is empty"),
    ("labels", lambda labels: ["a\nb", *labels[1:]], "contains a control character"),
    ("labels", lambda labels: labels[:2], "2 labels for a 3-class head"),
    ("labels", DEEP, "unreadable JSON"),
    ("head", lambda _: {"base_classes": -5}, "number of base classes -5 is out of range"),
    ("head", lambda _: {"base_classes": 5, "eps": float("nan")}, "head eps nan is not a finite number"),
    ("head", lambda _: nested_head(100), "nests more than 16 base heads"),
]


@pytest.mark.usefixtures("never_built")
@pytest.mark.parametrize(("key", "edit", "message"), PROJECT_CASES,
                         ids=[f"{key}-{message[:40]}" for key, _, message in PROJECT_CASES])
def test_a_project_file_that_declares_what_cannot_be_is_refused_before_building(
        project_file: Path, key: str, edit: Callable[[Any], Any] | str, message: str) -> None:
    path = edited(project_file, key, edit)
    assert message in refused(path)


# --------------------------------------------------------------------------------------------
# Hugging Face and timm folders: configs beside the weights


@pytest.fixture
def reference() -> VisionTransformer:
    torch.manual_seed(1)
    return VisionTransformer(**ARCH).eval()


def hf_folder(root: Path, reference: VisionTransformer, config: dict[str, Any] | str | None = None,
              pre: dict[str, Any] | str | None = None) -> Path:
    folder = root / "hf"
    folder.mkdir(exist_ok=True)
    save_file(to_hf(reference), str(folder / "model.safetensors"))
    for name, content in (("config.json", config), ("preprocessor_config.json", pre)):
        if content is not None:
            (folder / name).write_text(content if isinstance(content, str) else json.dumps(content))
    return folder


def timm_folder(root: Path, reference: VisionTransformer, pretrained: dict[str, Any], **top: Any) -> Path:
    folder = root / "timm"
    folder.mkdir(exist_ok=True)
    save_file(to_timm(reference), str(folder / "model.safetensors"))
    config = {"architecture": "vit_tiny_patch8_32", "pretrained_cfg": {"input_size": [3, 32, 32], **pretrained},
              **top}
    (folder / "config.json").write_text(json.dumps(config))
    return folder


DEIT = {"image_processor_type": "DeiTImageProcessor", "crop_size": {"height": 32, "width": 32}}
HF_CASES = [
    (None, {**DEIT, "size": 200000}, "size 200000 is out of range"),
    (None, json.dumps(DEIT)[:-1] + ', "size": 1e400}', "size inf is not a number"),
    (None, {**DEIT, "size": {"height": -36, "width": -36}}, "size height -36 is out of range"),
    (None, json.dumps(DEIT)[:-1] + ', "resample": 1e400}', "resample inf is not a number"),
    (None, {"image_processor_type": "ConvNextImageProcessor", "size": {"shortest_edge": 32}, "crop_pct": 0},
     "crop_pct 0 is out of range"),
    (None, {**DEIT, "image_mean": [float("nan"), 0.5, 0.5]}, "image_mean nan is not a finite number"),
    (None, {**DEIT, "image_std": [1e-30, 0.5, 0.5]}, "std 1e-30 is out of range"),
    (None, {**DEIT, "rescale_factor": float("inf")}, "rescale_factor inf is not a finite number"),
    (None, ["not", "an", "object"], "preprocessor_config.json: not a JSON object"),
    (None, DEEP, "unreadable JSON"),
    ({"layer_norm_eps": float("nan")}, None, "layer_norm_eps nan is not a finite number"),
    ({"num_attention_heads": 7}, None, "hidden size 128 is not divisible by 7 attention heads"),
    ({"num_attention_heads": 0}, None, "number of attention heads 0 is out of range"),
    ({"num_attention_heads": 1e400}, None, "num_attention_heads inf is not a number"),
    ({"id2label": {"0": 1, "1": 2, "2": 3, "3": 4}}, None, "label 0 is 1, not a string"),
    ({"id2label": {str(i): "x" for i in range(1_000_000)}}, None, "1,000,000 labels"),
    ("[]", None, "config.json: not a JSON object"),
    (DEEP, None, "unreadable JSON"),
]


@pytest.mark.usefixtures("never_built")
@pytest.mark.parametrize(("config", "pre", "message"), HF_CASES, ids=[m[:40] for _, _, m in HF_CASES])
def test_a_hugging_face_folder_with_absurd_configs_is_refused_before_building(
        tmp_path: Path, reference: VisionTransformer, config: Any, pre: Any, message: str) -> None:
    base = {"num_attention_heads": 2}
    config = {**base, **config} if isinstance(config, dict) else config
    assert message in refused(hf_folder(tmp_path, reference, config, pre))


TIMM_CASES = [
    ({"input_size": [3, 99984, 99984]}, {}, "input_size 99984 is out of range"),
    ({"input_size": [3, 0, 0]}, {}, "input_size 0 is out of range"),
    ({"input_size": [3, -224, -224]}, {}, "input_size -224 is out of range"),
    ({"input_size": [3, 36, 36]}, {}, "input size 36 is not a multiple of the patch size 8"),
    ({"crop_pct": 1e-9}, {}, "crop_pct 1e-09 is out of range"),
    ({"crop_pct": float("nan")}, {}, "crop_pct nan is not a finite number"),
    ({"mean": [float("nan"), 0.4, 0.4]}, {}, "mean nan is not a finite number"),
    ({"std": [0.2, 0.2]}, {}, "three numbers (RGB) expected"),
    ({}, {"label_names": [None, "b", "c", "d"]}, "label 0 is None, not a string"),
    ({}, {"num_classes": 1e400}, "num_classes inf is not a number"),
]


@pytest.mark.usefixtures("never_built")
@pytest.mark.parametrize(("pretrained", "top", "message"), TIMM_CASES, ids=[m[:40] for _, _, m in TIMM_CASES])
def test_a_timm_folder_with_absurd_configs_is_refused_before_building(
        tmp_path: Path, reference: VisionTransformer, pretrained: dict[str, Any], top: dict[str, Any],
        message: str) -> None:
    assert message in refused(timm_folder(tmp_path, reference, pretrained, **top))


def test_the_hubs_imagenet_labels_with_two_cranes_still_load(tmp_path: Path, reference: VisionTransformer) -> None:
    labels = {"0": "crane", "1": "goldfish", "2": "crane", "3": "maillot"}  # as google/vit-base-patch16-224 has
    _, card = load_checkpoint(hf_folder(tmp_path, reference, {"num_attention_heads": 2, "id2label": labels}))
    assert card.labels == ("crane", "goldfish", "crane", "maillot")


# --------------------------------------------------------------------------------------------
# Weights files: what they are and what their bytes say


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="FIFOs are a POSIX thing")
def test_a_fifo_beside_a_checkpoint_is_refused_without_being_opened(tmp_path: Path,
                                                                   reference: VisionTransformer) -> None:
    folder = hf_folder(tmp_path, reference, {"num_attention_heads": 2})
    os.mkfifo(folder / "preprocessor_config.json")  # reading it would wait for a writer forever
    assert "preprocessor_config.json: not a regular file" in refused(folder)


@pytest.mark.skipif(not hasattr(socket, "AF_UNIX"), reason="needs Unix sockets")
def test_a_socket_given_as_the_model_is_refused_without_being_read(tmp_path: Path) -> None:
    path = tmp_path / "model.safetensors"
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(path))
        assert "model.safetensors: not a regular file (a FIFO, socket or device)" in refused(path)


def zip_bomb(path: Path, megabytes: int) -> Path:
    """A .pth holding ``megabytes`` of zeros, deflated: torch reads compressed entries, and a
    2.9 MB file of this kind held a 3 GB tensor."""
    plain = io.BytesIO()
    torch.save({"w": torch.zeros(megabytes << 18)}, plain)
    with zipfile.ZipFile(plain) as src, zipfile.ZipFile(path, "w") as out:
        for info in src.infolist():
            out.writestr(info.filename, src.read(info.filename), compress_type=zipfile.ZIP_DEFLATED)
    return path


def test_a_zip_bomb_pth_is_refused_before_torch_reads_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = zip_bomb(tmp_path / "bomb.pth", 8)
    assert path.stat().st_size < 64 << 10
    reads: list[object] = []
    real_load = torch.load

    def load(*a, **kw):
        reads.append(a)
        return real_load(*a, **kw)

    monkeypatch.setattr(torch, "load", load)
    message = refused(path)
    assert "unpack to 8 MB" in message and "zip bomb" in message and not reads


def test_an_ordinary_pth_is_read_whatever_its_size(tmp_path: Path, reference: VisionTransformer) -> None:
    path = tmp_path / "vit.pth"
    torch.save(reference.state_dict(), path)
    _, card = load_checkpoint(path)
    assert card.arch.hidden_dim == 128


def mutations(data: bytes, rng: random.Random, count: int) -> list[bytes]:
    out = []
    for _ in range(count):
        b = bytearray(data)
        kind = rng.choice(("truncate", "flip", "header"))
        if kind == "truncate":
            b = b[: rng.randrange(len(b))]
        else:
            reach = len(b) if kind == "flip" else min(len(b), 2000)  # the header: pickle opcodes, JSON
            for _ in range(rng.randint(1, 8)):
                b[rng.randrange(reach)] = rng.randrange(256)
        out.append(bytes(b))
    return out


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_damaged_files_are_refused_in_one_line_whatever_bytes_changed(tmp_path: Path, suffix: str) -> None:
    module, card = tiny_model()
    source = tmp_path / f"source{suffix}"
    if suffix == ".pth":
        torch.save(module.state_dict(), source)
    else:
        save_model(source, module, card)
    loaded = refusals = 0
    for i, data in enumerate(mutations(source.read_bytes(), random.Random(4), 300)):
        path = tmp_path / f"m{i}{suffix}"
        path.write_bytes(data)
        try:
            load_checkpoint(path)
            loaded += 1  # a flip inside a weight: still a model
        except ModelError as exc:
            assert "\n" not in str(exc) and str(exc).startswith(path.name), str(exc)
            refusals += 1
        path.unlink()
    assert refusals > 100 and loaded > 10
