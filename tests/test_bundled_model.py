"""A new user with no network and no cached weights still gets results and heatmaps."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest

from vit_desktop import cli
from vit_desktop.core.models import download, registry

REPO = Path(__file__).resolve().parents[1]
SAMPLES = REPO / "resources" / "samples" / "clothing"


def test_bundled_model_classifies_the_samples_with_no_network(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_network(*args: object, **kwargs: object) -> None:
        raise AssertionError("a download was attempted")

    monkeypatch.setattr(download, "download_file", no_network)
    monkeypatch.setattr(registry, "download_file", no_network)
    assert not any(i.cached for i in registry.list_models() if i.kind == "registry")
    bundled = [i for i in registry.list_models() if i.kind == "bundled"]
    assert bundled, "models/ ships a model"

    out, err = io.StringIO(), io.StringIO()
    target = tmp_path / "r.jsonl"
    samples = sorted(SAMPLES.glob("*.png"))
    code = cli.main(["classify", *map(str, samples), "--output", str(target), "--heatmaps", str(tmp_path / "maps")],
                    out=out, err=err)
    assert code == 0, err.getvalue()
    assert "the bundled demo model" in err.getvalue()
    rows = [json.loads(line) for line in target.read_text().splitlines()]
    right = sum(r["predictions"][0]["label"] == Path(r["path"]).stem.replace("-", " ") for r in rows)
    assert right >= len(samples) - 1, rows
    grid = np.load(tmp_path / "maps" / f"{samples[0].stem}.npy")
    assert grid.shape == (7, 7) and np.isclose(grid.max(), 1.0)
