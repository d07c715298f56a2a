"""The command line given hostile model files and hostile photos: a refused model is exit status 2
with exactly one line on stderr, never a traceback or a hang; a photo of any shape classifies."""

from __future__ import annotations

import io
import json
import math
import os
import subprocess
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors import safe_open
from safetensors.torch import save_file

from tests.support import REPO, tiny_model, write_image
from tests.support import run_cli as run
from vit_desktop.core.models.model_file import save_model


def with_metadata(model: Path, key: str, text: str) -> Path:
    with safe_open(str(model), "pt") as f:
        meta = dict(f.metadata())
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    meta["vit_desktop." + key] = text
    out = model.with_name(f"{key}.safetensors")
    save_file(tensors, str(out), metadata=meta)
    return out


def nan_std(tmp: Path, model: Path) -> Path:
    pp = {"crop_size": 32, "resize_size": 36, "mean": [0.5, 0.5, 0.5], "std": [float("nan"), 0.5, 0.5]}
    return with_metadata(model, "preprocess", json.dumps(pp))


def labels_not_strings(tmp: Path, model: Path) -> Path:
    return with_metadata(model, "labels", json.dumps([1, 2, 3]))


def zip_bomb(tmp: Path, model: Path) -> Path:
    plain = io.BytesIO()
    torch.save({"w": torch.zeros(2 << 20)}, plain)  # 8 MB of zeros deflate to 8 KB
    path = tmp / "bomb.pth"
    with zipfile.ZipFile(plain) as src, zipfile.ZipFile(path, "w") as out:
        for info in src.infolist():
            out.writestr(info.filename, src.read(info.filename), compress_type=zipfile.ZIP_DEFLATED)
    return path


def pickle_that_pops_an_empty_stack(tmp: Path, model: Path) -> Path:
    """A .pth whose pickle is BUILD on an empty stack: the unpickler raised IndexError."""
    plain = io.BytesIO()
    torch.save({"w": torch.zeros(4)}, plain)
    path = tmp / "damaged.pth"
    with zipfile.ZipFile(plain) as src, zipfile.ZipFile(path, "w") as out:
        for info in src.infolist():
            data = b"\x80\x02b." if info.filename.endswith("data.pkl") else src.read(info.filename)
            out.writestr(info, data)
    return path


def deep_config(tmp: Path, model: Path) -> Path:
    folder = tmp / "hf"
    folder.mkdir()
    save_file({"vit.embeddings.patch_embeddings.projection.weight": torch.zeros(16, 3, 8, 8)},
              str(folder / "model.safetensors"))
    (folder / "config.json").write_text("[" * 100_000 + "]" * 100_000)
    return folder


def processor_not_an_object(tmp: Path, model: Path) -> Path:
    folder = deep_config(tmp, model)
    (folder / "config.json").write_text("{}")
    (folder / "preprocessor_config.json").write_text('"ViTImageProcessor"')
    return folder


def timm_input_of_99984_pixels(tmp: Path, model: Path) -> Path:
    from torchvision.models import VisionTransformer

    from tests.reference import ARCH, to_timm

    folder = tmp / "timm"
    folder.mkdir()
    save_file(to_timm(VisionTransformer(**ARCH)), str(folder / "model.safetensors"))
    config = {"architecture": "vit_tiny_patch16_224", "pretrained_cfg": {"input_size": [3, 99984, 99984]}}
    (folder / "config.json").write_text(json.dumps(config))
    return folder


CASES: list[tuple[Callable[[Path, Path], Path], str]] = [
    (nan_std, "std nan is not a finite number"),
    (labels_not_strings, "label 0 is 1, not a string"),
    (zip_bomb, "refused as a zip bomb"),
    (pickle_that_pops_an_empty_stack, "truncated or not a PyTorch weights file"),
    (deep_config, "unreadable JSON"),
    (processor_not_an_object, "preprocessor_config.json: not a JSON object"),
    (timm_input_of_99984_pixels, "input_size 99984 is out of range"),
]


@pytest.mark.parametrize(("make", "reason"), CASES, ids=[make.__name__ for make, _ in CASES])
def test_a_refused_model_is_status_2_and_one_line(tmp_path: Path, tiny_model_file: Path,
                                                   capfd: pytest.CaptureFixture[str],
                                                   make: Callable[[Path, Path], Path], reason: str) -> None:
    model = make(tmp_path, tiny_model_file)
    photo = write_image(tmp_path / "photo.png")
    code, out, err = run("classify", str(photo), "--model", str(model), "--output", str(tmp_path / "r.json"))
    assert code == 2, err
    assert err.endswith("\n") and len(err.splitlines()) == 1, err
    assert err.startswith("vit-desktop: error: ") and reason in err, err
    assert out == "" and not (tmp_path / "r.json").exists()
    assert capfd.readouterr() == ("", "")  # nothing printed past the command's own streams (warnings)


def spawn_cli(*argv: str, code: str = "from vit_desktop import cli; import sys; sys.exit(cli.main(sys.argv[1:]))",
              timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.run([sys.executable, "-c", code, *argv], env=env, capture_output=True, text=True,
                          timeout=timeout)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="FIFOs are a POSIX thing")
def test_a_fifo_given_as_the_model_is_refused_at_once(tmp_path: Path) -> None:
    fifo = tmp_path / "model.safetensors"
    os.mkfifo(fifo)  # opening it would wait for a writer that never comes
    photo = write_image(tmp_path / "photo.png")
    proc = spawn_cli("classify", str(photo), "--model", str(fifo), timeout=60)
    assert proc.returncode == 2
    assert proc.stderr == "vit-desktop: error: model.safetensors: not a regular file (a FIFO, socket or device): " \
                          "not opened\n"
    assert proc.stdout == ""


# Classifies in a fresh interpreter whose address space may grow by 2 GiB at most: resizing a strip
# whole for a 224-pixel model (22,072,000 x 252 pixels for 89000 x 1: 16 GB) fails there.
_CAPPED = """
import re, resource, sys
from vit_desktop import cli
from vit_desktop.core.inference.engine import Engine
size = int(re.search(r"VmSize:\\s+(\\d+)", open("/proc/self/status").read()).group(1)) * 1024
resource.setrlimit(resource.RLIMIT_AS, (size + (2 << 30), resource.RLIM_INFINITY))
sys.exit(cli.main(sys.argv[1:]))
"""


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads its address space from Linux's /proc")
def test_strips_of_one_pixel_classify_in_little_memory(tmp_path: Path) -> None:
    module, card = tiny_model(image_size=224, patch_size=32)  # shorter side to 252, crop 224
    model = save_model(tmp_path / "m224.safetensors", module, card)
    folder = tmp_path / "strips"
    folder.mkdir()
    for w, h in ((89000, 1), (1, 89000), (20000, 1)):
        Image.linear_gradient("L").resize((w, h)).save(folder / f"{w}x{h}.png")  # a few hundred bytes
    out = tmp_path / "r.json"
    proc = spawn_cli("classify", str(folder), "--model", str(model), "--device", "cpu", "--precision", "fp32",
                     "--output", str(out), code=_CAPPED)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "wrote 3 results" in proc.stderr and "(0 errors)" in proc.stderr, proc.stderr
    rows = json.loads(out.read_text(), parse_constant=lambda name: pytest.fail(f"{name} in the results"))
    assert sorted(Path(r["path"]).name for r in rows) == ["1x89000.png", "20000x1.png", "89000x1.png"]
    for row in rows:
        assert row["error"] is None and len(row["predictions"]) == 3
        assert all(math.isfinite(p["score"]) and 0 <= p["score"] <= 1 for p in row["predictions"])


def test_the_model_list_shows_hostile_files_in_the_models_folder_in_short_lines(tiny_model_file: Path) -> None:
    from vit_desktop.core.paths import user_models_dir

    folder = user_models_dir(create=True)
    deep = "[" * 100_000 + "]" * 100_000
    for name, key, text in (("deep", "preprocess", deep), ("inf", "preprocess", '{"crop_size": 32, "resize_size": 1e400}'),
                            ("deeplabels", "labels", deep), ("long", "name", "a\nb " * 100_000),
                            ("biglabel", "labels", json.dumps(["x" * 1_000_000, "b", "c"]))):
        with_metadata(tiny_model_file, key, text).rename(folder / f"{name}.safetensors")
    code, out, err = run("models")
    assert code == 0, err
    rows = [line for line in out.splitlines() if " user " in line]
    assert len(rows) == 5 and all(len(row) < 600 for row in rows), out[:2000]
