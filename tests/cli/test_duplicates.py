"""vit-desktop duplicates: groups of copies as JSON, CSV or a listing; bursts apart; photos untouched."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest

from tests.support import edited_copies, run_cli, scene


@pytest.fixture
def album(tmp_path: Path) -> Path:
    """An original, its edited copies and a byte copy, two shots of a burst, and two other photos."""
    folder = tmp_path / "album"
    folder.mkdir()
    original = scene((640, 480), seed=61)
    original.save(folder / "original.jpg", quality=95)
    edited_copies(original, folder / "edits", seed=61)
    shutil.copy2(folder / "original.jpg", folder / "edits" / "=same bytes.jpg")
    burst = scene((800, 600), seed=62)
    burst.crop((0, 30, 640, 570)).save(folder / "burst 1.jpg", quality=90)
    burst.crop((160, 30, 800, 570)).save(folder / "burst 2.jpg", quality=90)
    for seed in (63, 64):
        scene((400, 300), seed=seed).save(folder / f"other {seed}.png")
    return folder


def snapshot(folder: Path) -> dict[str, tuple[bytes, int]]:
    return {str(p.relative_to(folder)): (p.read_bytes(), p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file()}


def duplicates(*args: str) -> tuple[int, str, str]:
    return run_cli("duplicates", *args)


def test_json_groups_copies_with_paths_kind_and_score_and_a_second_run_reads_the_library(
        album: Path, tiny_model_file: Path, tmp_path: Path) -> None:
    before = snapshot(album)
    out = tmp_path / "groups.json"
    code, stdout, err = duplicates(str(album), "--model", str(tiny_model_file), "--output", str(out))
    assert code == 0, err
    assert stdout == ""
    assert "0 from the library, 13 classified; hashes: 0 from the library, 13 computed" in err
    groups = json.loads(out.read_bytes().decode("utf-8"))
    assert len(groups) == 1 and set(groups[0]) == {"paths", "kind", "score"}
    group = groups[0]
    assert group["kind"] == "edited" and 0.75 <= group["score"] <= 1.0
    # The original is the oldest of the photos with the most pixels; the byte copy (copy2) shares its time.
    assert Path(group["paths"][0]).name in {"original.jpg", "=same bytes.jpg"}
    assert {Path(p).name for p in group["paths"]} == {"original.jpg", "=same bytes.jpg"} | {
        f"copy-{k}.jpg" for k in ("reencode", "resize50", "resize25", "thumb160", "crop", "bright+15", "bright-15")}
    assert not any("burst" in p or "other" in p for p in group["paths"])  # the burst's shots are not copies
    again = tmp_path / "again.json"
    code, _, err = duplicates(str(album), "--model", str(tiny_model_file), "--output", str(again))
    assert code == 0, err
    assert "13 from the library, 0 classified; hashes: 13 from the library, 0 computed" in err
    assert again.read_bytes() == out.read_bytes()
    assert snapshot(album) == before  # nothing moved, deleted, written or touched


def test_csv_has_one_row_per_photo_with_neutralised_cells(album: Path, tiny_model_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "groups.csv"
    code, _, err = duplicates(str(album), "--model", str(tiny_model_file), "--output", str(out))
    assert code == 0, err
    rows = list(csv.reader(out.read_text(encoding="utf-8").splitlines()))
    assert rows[0] == ["group", "kind", "score", "path"]
    assert len(rows) == 1 + 9 and {r[0] for r in rows[1:]} == {"1"} and {r[1] for r in rows[1:]} == {"edited"}
    named = [r[3] for r in rows[1:] if "same bytes" in r[3]]
    assert named == [str(album / "edits" / "=same bytes.jpg")]  # a path is not a formula: starts with /


def test_a_cell_that_would_be_a_formula_is_neutralised(tmp_path: Path, tiny_model_file: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "f"
    folder.mkdir()
    scene(seed=65).save(folder / "=1+2.jpg")
    shutil.copy2(folder / "=1+2.jpg", folder / "@copy.jpg")
    monkeypatch.chdir(folder)  # the photos named as a user types them: "=1+2.jpg"
    code, _, err = duplicates("=1+2.jpg", "@copy.jpg", "--model", str(tiny_model_file), "--output",
                              str(tmp_path / "g.csv"))
    assert code == 0, err
    rows = list(csv.reader((tmp_path / "g.csv").read_text(encoding="utf-8").splitlines()))
    assert [r[1:] for r in rows[1:]] == [["identical", "1.000000", "'=1+2.jpg"], ["identical", "1.000000", "'@copy.jpg"]]
    # JSON keeps the names as they are.
    code, _, err = duplicates("=1+2.jpg", "@copy.jpg", "--model", str(tiny_model_file), "--output",
                              str(tmp_path / "g.json"))
    assert code == 0, err
    assert json.loads((tmp_path / "g.json").read_text(encoding="utf-8"))[0]["paths"] == ["=1+2.jpg", "@copy.jpg"]


def test_an_existing_output_is_not_replaced_without_overwrite(album: Path, tiny_model_file: Path,
                                                              tmp_path: Path) -> None:
    out = tmp_path / "groups.json"
    out.write_text("keep me")
    code, _, err = duplicates(str(album), "--model", str(tiny_model_file), "--output", str(out))
    assert code == 2 and "already exists; pass --overwrite" in err
    assert out.read_text() == "keep me"
    code, _, err = duplicates(str(album), "--model", str(tiny_model_file), "--output", str(out), "--overwrite")
    assert code == 0, err
    assert json.loads(out.read_text(encoding="utf-8"))[0]["kind"] == "edited"
    code, _, err = duplicates(str(album), "--output", str(tmp_path / "groups.txt"))
    assert code == 2 and ".json or .csv" in err


def test_the_listing_shows_each_group_best_copy_first(album: Path, tiny_model_file: Path) -> None:
    code, out, err = duplicates(str(album), "--model", str(tiny_model_file))
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0] == f"group 1: 9 copies of one picture (score {lines[0].rsplit(' ', 1)[1]}"
    assert lines[1].split()[0] == "best" and "640x480" in lines[1]
    assert len(lines) == 10 and "160x120" in lines[-1]
    assert "1 group of duplicates (9 photos) among 13 photos; nothing was moved or deleted" in err


def test_identical_files_alone_are_of_their_kind(tmp_path: Path, tiny_model_file: Path) -> None:
    folder = tmp_path / "f"
    folder.mkdir()
    scene(seed=66).save(folder / "a.jpg")
    shutil.copy2(folder / "a.jpg", folder / "b.jpg")
    scene(seed=67).save(folder / "c.jpg")
    out = tmp_path / "g.json"
    code, _, err = duplicates(str(folder), "--model", str(tiny_model_file), "--output", str(out))
    assert code == 0, err
    assert json.loads(out.read_text(encoding="utf-8")) == [
        {"paths": [str(folder / "a.jpg"), str(folder / "b.jpg")], "kind": "identical", "score": 1.0}]


def test_no_duplicates_is_an_empty_answer(tmp_path: Path, tiny_model_file: Path) -> None:
    folder = tmp_path / "f"
    folder.mkdir()
    burst = scene((800, 600), seed=68)
    burst.crop((0, 30, 640, 570)).save(folder / "shot 1.jpg", quality=90)
    burst.crop((160, 30, 800, 570)).save(folder / "shot 2.jpg", quality=90)
    (folder / "broken.jpg").write_bytes(b"not a photo")
    code, out, err = duplicates(str(folder), "--model", str(tiny_model_file), "--output", str(tmp_path / "g.json"))
    assert code == 0, err
    assert json.loads((tmp_path / "g.json").read_text(encoding="utf-8")) == []
    assert "broken.jpg: " in err and "1 could not be read" in err
    assert "0 groups of duplicates (0 photos) among 2 photos" in err


def test_runs_answered_from_the_library_never_import_torch(album: Path, tiny_model_file: Path) -> None:
    import os
    import subprocess
    import sys

    photo = album / "original.jpg"
    script = ("import sys\nfrom vit_desktop.cli import main\n"
              f"codes = [main(['duplicates', {str(album)!r}, '--model', {str(tiny_model_file)!r}]),\n"
              f"         main(['similar', {str(photo)!r}, {str(album)!r}, '--model', {str(tiny_model_file)!r}])]\n"
              "print('TORCH' if 'torch' in sys.modules else 'NO TORCH', codes)\n")
    runs = [subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env={**os.environ},
                           timeout=120) for _ in range(2)]
    assert runs[0].stdout.strip().endswith("TORCH [0, 0]") and "NO TORCH" not in runs[0].stdout
    assert runs[1].stdout.strip().endswith("NO TORCH [0, 0]"), runs[1].stdout + runs[1].stderr
    assert "13 from the library, 0 classified; hashes: 13 from the library, 0 computed" in runs[1].stderr
