"""vit-desktop similar: the nearest photos with their similarity, read from the library on a second run."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support import run_cli, scene


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """A photo outside the folder (photo.jpg), a half-size copy of it inside, and six other photos."""
    original = scene((640, 480), seed=71)
    original.save(tmp_path / "photo.jpg", quality=95)
    folder = tmp_path / "folder"
    folder.mkdir()
    original.resize((320, 240)).save(folder / "small copy.jpg", quality=85)
    for seed in range(72, 78):
        scene((640, 480), seed=seed).save(folder / f"other {seed}.jpg", quality=90)
    return folder


def test_lists_the_nearest_photos_with_their_similarity(folder: Path, tiny_model_file: Path) -> None:
    photo = folder.parent / "photo.jpg"
    code, out, err = run_cli("similar", str(photo), str(folder), "--model", str(tiny_model_file), "--top-k", "3")
    assert code == 0, err
    lines = out.splitlines()
    assert len(lines) == 3
    scores = [float(line.split()[0]) for line in lines]
    paths = [line.split(None, 1)[1] for line in lines]
    assert paths[0] == str(folder / "small copy.jpg") and scores[0] > 0.95
    assert scores == sorted(scores, reverse=True) and all(-1.0 <= s <= 1.0 for s in scores)
    assert str(photo) not in paths
    assert "0 from the library, 8 classified" in err  # the photo and the seven in the folder
    # Again: every photo's features come from the library, and the answer is the same.
    code, again, err = run_cli("similar", str(photo), str(folder), "--model", str(tiny_model_file), "--top-k", "3")
    assert code == 0, err
    assert again == out
    assert "8 from the library, 0 classified" in err


def test_the_photo_may_be_inside_the_folder(folder: Path, tiny_model_file: Path) -> None:
    inside = folder / "other 72.jpg"
    code, out, err = run_cli("similar", str(inside), str(folder), "--model", str(tiny_model_file))
    assert code == 0, err
    paths = [line.split(None, 1)[1] for line in out.splitlines()]
    assert len(paths) == 6 and str(inside) not in paths  # all the others, not itself
    assert "6 other photos to compare with" in err and "duplicate" not in err


def test_a_photo_that_cannot_be_read_is_a_usage_error(folder: Path, tiny_model_file: Path) -> None:
    (folder / "broken.jpg").write_bytes(b"not a photo")
    code, out, err = run_cli("similar", str(folder / "broken.jpg"), str(folder), "--model", str(tiny_model_file))
    assert code == 2 and out == "" and "broken.jpg: not an image" in err
    code, _, err = run_cli("similar", str(folder / "missing.jpg"), str(folder))
    assert code == 2 and "missing.jpg: file not found" in err
    code, _, err = run_cli("similar", str(folder / "small copy.jpg"), str(folder), "--top-k", "0")
    assert code == 2 and "--top-k must be at least 1" in err
