"""The labelled set: folder import, editing, validation messages, the split, the project file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from vit_desktop.core.errors import VitDesktopError
from vit_desktop.core.training.labelled_set import LabelledSet


def _photo(path: Path, colour: tuple[int, int, int] = (200, 30, 30)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (12, 10), colour).save(path)
    return path


def _folder(root: Path, counts: dict[str, int]) -> Path:
    for name, n in counts.items():
        for i in range(n):
            _photo(root / name / f"{name}_{i:02d}.png")
    return root


def test_from_folder_finds_one_class_per_subfolder(tmp_path: Path) -> None:
    root = _folder(tmp_path / "data", {"cats": 3, "dogs": 2})
    _photo(root / "dogs" / "nested" / "deep.png")  # photos in sub-subfolders belong to the class
    (root / "cats" / "notes.txt").write_text("not a photo")
    data = LabelledSet.from_folder(root)
    assert data.classes == ("cats", "dogs")
    assert data.counts() == {"cats": 3, "dogs": 3}
    assert all(p.suffix == ".png" for p, _ in data.items)


def test_from_folder_without_subfolders_says_why(tmp_path: Path) -> None:
    _photo(tmp_path / "flat" / "a.png")
    with pytest.raises(VitDesktopError, match="no class subfolders"):
        LabelledSet.from_folder(tmp_path / "flat")


def test_editing_classes_and_photos(tmp_path: Path) -> None:
    a, b, c = (_photo(tmp_path / f"{n}.png") for n in "abc")
    data = LabelledSet().with_class("cat").with_class("dog")
    data = data.with_items([a, b], "cat").with_items([c], "dog")
    assert data.counts() == {"cat": 2, "dog": 1}
    data = data.with_items([b], "dog")  # dropping a labelled photo on another class moves it
    assert data.counts() == {"cat": 1, "dog": 2}
    data = data.renamed("dog", "puppy")
    assert data.classes == ("cat", "puppy") and data.counts()["puppy"] == 2
    with pytest.raises(VitDesktopError, match="already exists"):
        data.with_class("cat")
    with pytest.raises(VitDesktopError, match="already exists"):
        data.renamed("cat", "puppy")
    with pytest.raises(VitDesktopError, match="empty"):
        data.with_class("  ")
    data = data.without_class("cat")
    assert data.classes == ("puppy",) and len(data) == 2
    assert len(data.without_items([c])) == 1


def test_validate_messages(tmp_path: Path) -> None:
    one = LabelledSet.from_folder(_folder(tmp_path / "one", {"only": 3}))
    with pytest.raises(VitDesktopError, match="at least two classes"):
        one.validate()
    thin = LabelledSet.from_folder(_folder(tmp_path / "thin", {"a": 3, "b": 1}))
    with pytest.raises(VitDesktopError, match="class 'b' has 1 image; each class needs at least 2"):
        thin.validate()
    empty = thin.with_class("c")
    with pytest.raises(VitDesktopError, match="class 'b' has 1 image"):
        empty.validate()
    LabelledSet.from_folder(_folder(tmp_path / "ok", {"a": 2, "b": 2})).validate()


def test_split_is_stratified_seeded_and_automatic(tmp_path: Path) -> None:
    data = LabelledSet.from_folder(_folder(tmp_path / "d", {"a": 2, "b": 10, "c": 30}))
    train, val = data.split(None, seed=1)
    # Automatic: 20 % per class, at least one photo on each side.
    assert val.counts() == {"a": 1, "b": 2, "c": 6}
    assert train.counts() == {"a": 1, "b": 8, "c": 24}
    assert not {p for p, _ in train.items} & {p for p, _ in val.items}
    again_train, again_val = data.split(None, seed=1)
    assert again_val.items == val.items
    _, other_val = data.split(None, seed=2)
    assert other_val.items != val.items
    _, half = data.split(0.5, seed=0)
    assert half.counts() == {"a": 1, "b": 5, "c": 15}
    with pytest.raises(VitDesktopError, match="between 0 and 1"):
        data.split(1.5, seed=0)


def test_project_file_round_trip_with_relative_paths(tmp_path: Path) -> None:
    root = _folder(tmp_path / "proj" / "photos", {"a": 2, "b": 2})
    outside = _photo(tmp_path / "elsewhere" / "x.png")
    data = LabelledSet.from_folder(root).with_items([outside], "a")
    project = tmp_path / "proj" / "labels.vitlabels.json"
    data.save(project)
    doc = json.loads(project.read_text())
    assert doc["version"] == 1
    paths = [it["path"] for it in doc["items"]]
    assert "photos/a/a_00.png" in paths  # beside the project: relative, so the folder can move
    assert str(outside) in paths
    loaded, missing = LabelledSet.load(project)
    assert missing == []
    assert loaded.classes == data.classes
    assert [(p.resolve(), c) for p, c in loaded.items] == [(p.resolve(), c) for p, c in data.items]
    # Move the project folder: relative photos follow it.
    moved = tmp_path / "moved"
    (tmp_path / "proj").rename(moved)
    loaded, missing = LabelledSet.load(moved / "labels.vitlabels.json")
    assert missing == [] and len(loaded) == 5


def test_load_reports_missing_photos_without_failing(tmp_path: Path) -> None:
    root = _folder(tmp_path / "p", {"a": 3, "b": 2})
    data = LabelledSet.from_folder(root)
    project = data.save(tmp_path / "p.vitlabels.json")
    (root / "a" / "a_01.png").unlink()
    loaded, missing = LabelledSet.load(project)
    assert loaded.counts() == {"a": 2, "b": 2}
    assert missing == [str(root / "a" / "a_01.png")]


def test_load_rejects_other_files_clearly(tmp_path: Path) -> None:
    bad = tmp_path / "x.json"
    bad.write_text("{not json")
    with pytest.raises(VitDesktopError, match="invalid JSON"):
        LabelledSet.load(bad)
    bad.write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(VitDesktopError, match="not a label project"):
        LabelledSet.load(bad)
    bad.write_text(json.dumps({"format": "vit-desktop-labels", "version": 99, "classes": [], "items": []}))
    with pytest.raises(VitDesktopError, match="newer"):
        LabelledSet.load(bad)


def test_save_is_atomic_and_leaves_no_temp_files(tmp_path: Path) -> None:
    data = LabelledSet.from_folder(_folder(tmp_path / "d", {"a": 2, "b": 2}))
    target = tmp_path / "out" / "set.vitlabels.json"
    data.save(target)
    data.with_class("c").save(target)
    assert sorted(p.name for p in target.parent.iterdir()) == ["set.vitlabels.json"]
    assert LabelledSet.load(target)[0].classes == ("a", "b", "c")
