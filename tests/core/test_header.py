"""The preprocessing read off a model file's header without torch is the loaded model's, for every
layout and config the loader reads; where only loading can tell, there is none."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from torchvision.models import VisionTransformer

from tests.reference import ARCH, to_hf, to_timm
from tests.support import DEIT, REPO
from vit_desktop.core.models.checkpoints import load_checkpoint
from vit_desktop.core.models.header import preprocess_hint

REF = Path(__file__).resolve().parents[1] / "data" / "reference"


#: The reference variants the loader refuses (test_reference_layouts): no card to compare with.
REFUSED = {"distilled", "clip_pre_norm"}


@pytest.mark.parametrize("folder", sorted(p for kind in ("timm", "hf") for p in (REF / kind).iterdir()
                                          if p.name not in REFUSED), ids=lambda p: f"{p.parent.name}-{p.name}")
def test_the_hint_is_the_loaded_models_preprocessing(folder: Path, tmp_path: Path) -> None:
    """Every reference checkpoint of timm and transformers, with its configs and without them."""
    bare = tmp_path / "bare"
    bare.mkdir()
    shutil.copy(folder / "model.safetensors", bare / "model.safetensors")
    for source in (folder, folder / "model.safetensors", bare):
        hint = preprocess_hint(source)
        assert hint is not None and hint == load_checkpoint(source)[1].preprocess, source


def test_torchvision_files_project_files_and_the_real_deit(tmp_path: Path, tiny_model_file: Path) -> None:
    torch.manual_seed(0)
    reference = VisionTransformer(**ARCH)
    layouts = {"torchvision.safetensors": reference.state_dict(), "timm.safetensors": to_timm(reference),
               "hf.safetensors": to_hf(reference)}
    sources = [tiny_model_file]
    for name, tensors in layouts.items():
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp_path / name))
        sources.append(tmp_path / name)
    if DEIT.is_file():  # the shared real weights, where this machine has them
        sources.append(DEIT)
    for source in sources:
        assert preprocess_hint(source) == load_checkpoint(source)[1].preprocess, source.name


def test_no_hint_where_only_loading_can_tell(tmp_path: Path) -> None:
    torch.save(VisionTransformer(**ARCH).state_dict(), tmp_path / "vit.pth")  # only torch reads it
    (tmp_path / "text.safetensors").write_text("not a model")
    (tmp_path / "empty").mkdir()
    for source in ("vit.pth", "text.safetensors", "empty", "missing.safetensors"):
        assert preprocess_hint(tmp_path / source) is None


def test_the_hint_needs_no_torch(tiny_model_file: Path) -> None:
    script = ("import sys\nfrom vit_desktop.core.models.header import preprocess_hint\n"
              f"print(preprocess_hint({str(tiny_model_file)!r}).crop_size, 'torch' in sys.modules)\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["32", "False"]
