"""`vit-desktop classify --heatmaps DIR --explain rollout|class|refined`: which map is written."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.support import run_cli as run
from vit_desktop.core.errors import CancelToken
from vit_desktop.core.inference.engine import Engine
from vit_desktop.core.inference.options import ClassifyOptions
from vit_desktop.core.types import ExplainOptions


def top1(results: Path) -> dict[str, int]:
    rows = [json.loads(line) for line in results.read_text(encoding="utf-8").splitlines()]
    return {Path(r["path"]).name: r["predictions"][0]["index"] for r in rows if not r["error"]}


@pytest.mark.parametrize("method", ["class", "refined"])
def test_class_maps_are_each_photos_top1_map_batched_as_one_at_a_time(
        tiny_model_file: Path, image_folder: Path, tmp_path: Path, method: str) -> None:
    out_dir = tmp_path / "maps"
    code, _, err = run("classify", str(image_folder), "--model", str(tiny_model_file), "--heatmaps", str(out_dir),
                       "--explain", method, "--batch-size", "3", "--output", str(tmp_path / "r.jsonl"))
    assert code == 0, err
    assert "map of each photo's top-1 class" in err
    best = top1(tmp_path / "r.jsonl")
    engine = Engine.load(tiny_model_file, device="cpu")
    for name, rel in [("img0.png", "img0"), ("img2.png", "img2"), ("deep1.jpg", "sub/deep1")]:
        grid = np.load(out_dir / f"{rel}.npy")
        assert grid.dtype == np.float32 and grid.shape == (4, 4)
        assert float(grid.max()) == pytest.approx(1.0) and float(grid.min()) >= 0.0
        photo = next(image_folder.rglob(name))
        alone = engine.explain(photo, ExplainOptions(method=method), best[name]).grid
        np.testing.assert_allclose(grid, alone, atol=1e-5)
        rollout = engine.rollout(photo, ExplainOptions()).grid
        assert not np.allclose(grid, rollout, atol=1e-3)  # a different map from the default
        with Image.open(out_dir / f"{rel}.png") as overlay, Image.open(photo) as original:
            assert overlay.size == original.size


def test_rollout_stays_the_default(tiny_model_file: Path, image_folder: Path, tmp_path: Path) -> None:
    out_dir = tmp_path / "maps"
    code, _, err = run("classify", str(image_folder / "img1.png"), "--model", str(tiny_model_file),
                       "--heatmaps", str(out_dir), "--discard-ratio", "0.3")
    assert code == 0, err
    engine = Engine.load(tiny_model_file, device="cpu")
    expected = engine.rollout(image_folder / "img1.png", ExplainOptions(discard_ratio=0.3)).grid
    np.testing.assert_allclose(np.load(out_dir / "img1.npy"), expected, atol=1e-6)


def test_explain_needs_heatmaps_and_rollout_options_are_said_to_be_ignored(
        tiny_model_file: Path, image_folder: Path, tmp_path: Path) -> None:
    code, _, err = run("classify", str(image_folder), "--model", str(tiny_model_file), "--explain", "class")
    assert code == 2 and "give --heatmaps DIR too" in err
    with pytest.raises(SystemExit) as exited:  # argparse's own usage error
        run("classify", str(image_folder), "--model", str(tiny_model_file), "--explain", "gradcam",
            "--heatmaps", str(tmp_path / "h"))
    assert exited.value.code == 2
    code, _, err = run("classify", str(image_folder / "img0.png"), "--model", str(tiny_model_file),
                       "--heatmaps", str(tmp_path / "h"), "--explain", "class", "--head-fusion", "max")
    assert code == 0 and "shape rollout only" in err


def test_with_classes_the_map_is_the_top_categorys(colours_model: Path, tmp_path: Path) -> None:
    from tests.support import SUBTYPES

    photo = tmp_path / "in" / "p.png"
    photo.parent.mkdir()
    Image.fromarray(np.full((40, 48, 3), (200, 30, 30), dtype=np.uint8)).save(photo)
    code, _, err = run("classify", str(photo), "--model", str(colours_model), "--classes", "warm,cool",
                       "--heatmaps", str(tmp_path / "h"), "--explain", "class", "--output", str(tmp_path / "r.jsonl"))
    assert code == 0, err
    assert "map of each photo's top category" in err
    best = top1(tmp_path / "r.jsonl")["p.png"]
    members = [i for i, name in enumerate(SUBTYPES) if (i < 4) == (best == 0)]
    engine = Engine.load(colours_model, device="cpu")
    expected = engine.explain(photo, ExplainOptions(method="class"), best, members=members).grid
    np.testing.assert_allclose(np.load(tmp_path / "h" / "p.npy"), expected, atol=1e-5)


def test_a_class_map_run_stops_when_cancelled(tiny_model_file: Path, image_folder: Path) -> None:
    engine = Engine.load(tiny_model_file, device="cpu")
    photos = sorted(image_folder.rglob("*.png")) * 4
    token = CancelToken()
    seen = 0
    for batch in engine.classify_batches(photos, ClassifyOptions(batch_size=2, explain=ExplainOptions(method="class")), cancel=token):
        assert all(r.heatmap is not None and r.heatmap.method == "class" for r in batch)
        seen += len(batch)
        token.cancel()
    assert seen == 2


def test_class_map_batches_are_bounded_by_memory(tiny_model_file: Path) -> None:
    engine = Engine.load(tiny_model_file, device="cpu")
    assert engine.class_map_batch() > 1000  # a 4x4-patch toy costs next to nothing
    engine.class_map_budget_bytes = 1
    assert engine.class_map_batch() == 1
