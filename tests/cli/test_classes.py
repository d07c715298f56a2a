"""`vit-desktop classify --classes`: zero-shot into named categories, in every output format."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from tests.support import run_cli as run
from tests.support import write_image


def test_categories_are_the_predictions_with_unrenormalised_scores(colours_model: Path, tmp_path: Path) -> None:
    photos = [write_image(tmp_path / "in" / f"p{i}.png", seed=i) for i in range(3)]
    code, _, err = run("classify", str(tmp_path / "in"), "--model", str(colours_model), "--classes", "warm, cool",
                       "--output", str(tmp_path / "c.jsonl"), "--top-k", "8")
    assert code == 0, err
    assert "categories: warm = warm" in err and "--top-k 8 is more than the categories 2 classes" in err
    code, _, _ = run("classify", str(tmp_path / "in"), "--model", str(colours_model), "--top-k", "8",
                     "--output", str(tmp_path / "base.jsonl"))
    base = {Path(r["path"]).name: r for r in map(json.loads, (tmp_path / "base.jsonl").read_text().splitlines())}
    rows = [json.loads(line) for line in (tmp_path / "c.jsonl").read_text().splitlines()]
    assert len(rows) == len(photos)
    for row in rows:
        preds = row["predictions"]
        assert {p["label"] for p in preds} == {"warm", "cool"}
        assert {p["label"]: p["index"] for p in preds} == {"warm": 0, "cool": 1}
        mass = {"warm": 0.0, "cool": 0.0}
        for p in base[Path(row["path"]).name]["predictions"]:
            mass["warm" if p["index"] < 4 else "cool"] += p["score"]
        for p in preds:
            assert p["score"] == pytest.approx(mass[p["label"]], abs=1e-5)


def test_a_photo_of_none_of_them_is_uncertain_and_csv_and_files_work(colours_model: Path, tmp_path: Path) -> None:
    photo = write_image(tmp_path / "p.png")
    names = tmp_path / "names.txt"
    names.write_text("# my categories\nred\nblue\n", encoding="utf-8")
    code, out, err = run("classify", str(photo), "--model", str(colours_model), "--classes-file", str(names),
                         "--threshold", "0.99")
    assert code == 0, err
    assert "(uncertain)" in out and ("red" in out or "blue" in out)
    code, _, err = run("classify", str(photo), "--model", str(colours_model), "--classes", "red,blue",
                       "--output", str(tmp_path / "r.csv"))
    assert code == 0, err
    with (tmp_path / "r.csv").open(newline="", encoding="utf-8") as f:
        (header, row) = list(csv.reader(f))
    assert header == ["path", "label_1", "score_1", "label_2", "score_2", "error", "uncertain"]
    assert {row[1], row[3]} == {"red", "blue"}
    assert float(row[2]) + float(row[4]) < 1.0  # two of eight classes: not renormalised to 1


def test_names_and_models_that_cannot_be_used_are_refused_with_the_reason(colours_model: Path, tmp_path: Path,
                                                                         tiny_model_file: Path) -> None:
    photo = write_image(tmp_path / "p.png")
    code, out, err = run("classify", str(photo), "--model", str(tiny_model_file), "--classes", "dog,cat")
    assert code == 2 and out == ""
    assert "--classes: tiny has no label hierarchy" in err and "ImageNet" in err
    code, _, err = run("classify", str(photo), "--model", str(colours_model), "--classes", "wram,cool")
    assert code == 2 and "nearest known names: warm" in err
    code, _, err = run("classify", str(photo), "--model", str(colours_model), "--classes", "a", "--classes-file", "x")
    assert code == 2 and "not both" in err


def test_an_edited_name_takes_a_class_away(colours_model: Path, tmp_path: Path) -> None:
    photos = [write_image(tmp_path / "in" / f"p{i}.png", seed=i) for i in range(3)]
    code, _, err = run("classify", str(tmp_path / "in"), "--model", str(colours_model), "--classes",
                       "warm = warm - red, cool", "--output", str(tmp_path / "e.jsonl"))
    assert code == 0, err
    assert "warm = warm.n.01 - red.n.01 (3 classes)" in err
    code, _, _ = run("classify", str(tmp_path / "in"), "--model", str(colours_model), "--top-k", "8",
                     "--output", str(tmp_path / "base.jsonl"))
    base = {Path(r["path"]).name: r for r in map(json.loads, (tmp_path / "base.jsonl").read_text().splitlines())}
    for row in map(json.loads, (tmp_path / "e.jsonl").read_text().splitlines()):
        warm = {p["label"]: p["score"] for p in row["predictions"]}["warm"]
        mass = sum(p["score"] for p in base[Path(row["path"]).name]["predictions"] if p["index"] in (1, 2, 3))
        assert warm == pytest.approx(mass, abs=1e-5)  # orange, yellow, pink: red no longer counts
    assert len(photos) == 3
