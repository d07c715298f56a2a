"""Fixtures for the command-line tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support import SUBTYPES, save_tiny_model, tiny_hierarchy


@pytest.fixture
def colours_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    import vit_desktop.core.labels.categories as categories

    tree = tiny_hierarchy()
    monkeypatch.setattr(categories, "hierarchy_for", lambda card: tree if card.labels == tuple(SUBTYPES) else None)
    return save_tiny_model(tmp_path / "colours.safetensors", tuple(SUBTYPES), "colours")
