"""Fixtures for every test. Qt runs offscreen: set before anything imports PySide6."""

from __future__ import annotations

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.support import DEIT, PHOTOS, tiny_model, write_image

if TYPE_CHECKING:
    from vit_desktop.core.models.vit import ViT
    from vit_desktop.core.types import ModelCard


@pytest.fixture(autouse=True)
def _isolated_dirs(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """User models, the last-model store and downloaded weights go to a temporary folder in every test."""
    base = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("VIT_DESKTOP_DATA_DIR", str(base / "data"))
    monkeypatch.setenv("TORCH_HOME", str(base / "torch"))


@pytest.fixture(autouse=True)
def _fp32_on_every_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    """"auto" means fp32 on the CPU in tests, whatever this CPU can do, so that figures compared
    with fp32 references do not depend on the machine (tests/core/test_devices.py tests the choice)."""
    from vit_desktop.core.inference import devices

    monkeypatch.setattr(devices, "cpu_bf16", lambda: (False, "fp32 while testing"))


@pytest.fixture
def deit_path() -> Path:
    if not DEIT.is_file():
        pytest.skip(f"real DeiT-Tiny weights not found at {DEIT} (shared data is only on the development machine)")
    return DEIT


@pytest.fixture
def photos_dir() -> Path:
    if not (PHOTOS / "labels.csv").is_file():
        pytest.skip(f"shared photos not found at {PHOTOS} (shared data is only on the development machine)")
    return PHOTOS


@pytest.fixture
def tiny() -> tuple[ViT, ModelCard]:
    return tiny_model()


@pytest.fixture
def tiny_model_file(tmp_path: Path) -> Path:
    from vit_desktop.core.models.model_file import save_model

    module, card = tiny_model()
    return save_model(tmp_path / "tiny.safetensors", module, card)


@pytest.fixture
def image_folder(tmp_path: Path) -> Path:
    """photos/ with 5 images in two levels and one corrupt file."""
    root = tmp_path / "photos"
    for i in range(3):
        write_image(root / f"img{i}.png", seed=i)
    for i in range(2):
        write_image(root / "sub" / f"deep{i}.jpg", seed=10 + i)
    (root / "sub" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    return root
