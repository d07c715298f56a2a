"""Result files survive the file names people really have, and stay valid for the tools that read them."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import pytest

from vit_desktop.core.io.class_folders import copy_into_class_folders, safe_folder_name
from vit_desktop.core.io.results_files import write_results
from vit_desktop.core.types import ClassifyResult, Prediction

NON_UTF8 = "caf\udce9.jpg"  # b"caf\xe9.jpg" (Latin-1) as Python decodes it from a Linux folder


def _results() -> list[ClassifyResult]:
    return [ClassifyResult(path=NON_UTF8, predictions=(Prediction("cup", 3, 0.9),)),
            ClassifyResult(path="é.png", error="x")]


@pytest.mark.parametrize("suffix", [".jsonl", ".json"])
def test_json_is_valid_utf8_and_a_non_utf8_name_reads_back_to_the_same_bytes(tmp_path: Path, suffix: str) -> None:
    target = write_results(_results(), tmp_path / f"r{suffix}", top_k=1)
    text = target.read_bytes().decode("utf-8")  # strict: the whole file is UTF-8
    assert "\\udce9" in text and "é.png" in text  # readable where it can be, escaped where it must
    rows = [json.loads(line) for line in text.splitlines()] if suffix == ".jsonl" else json.loads(text)
    assert os.fsencode(rows[0]["path"]) == b"caf\xe9.jpg"
    assert rows[0]["predictions"][0]["label"] == "cup" and rows[1]["error"] == "x"


def test_csv_is_valid_utf8_with_the_undecodable_byte_shown_as_an_escape(tmp_path: Path) -> None:
    target = write_results(_results(), tmp_path / "r.csv", top_k=1)
    with target.open(encoding="utf-8", newline="") as f:  # strict decoding
        rows = list(csv.reader(f))
    assert rows[1][0] == "caf\\xe9.jpg" and rows[2][0] == "é.png"


def test_csv_cells_that_a_spreadsheet_would_run_are_neutralised_but_json_keeps_the_name(tmp_path: Path) -> None:
    results = [ClassifyResult(path=f"{c}cmd|calc.png", predictions=(Prediction("=HYPERLINK(1)", 0, 0.5),))
               for c in "=+-@"]
    with write_results(results, tmp_path / "r.csv", top_k=1).open(encoding="utf-8", newline="") as f:
        rows = list(csv.reader(f))[1:]
    assert [r[0] for r in rows] == [f"'{c}cmd|calc.png" for c in "=+-@"]
    assert all(r[1] == "'=HYPERLINK(1)" for r in rows)
    data = json.loads(write_results(results, tmp_path / "r.json", top_k=1).read_text(encoding="utf-8"))
    assert [d["path"] for d in data] == [f"{c}cmd|calc.png" for c in "=+-@"]


def test_copies_go_into_one_folder_per_label_and_never_replace_anything(tmp_path: Path) -> None:
    src = tmp_path / "in"
    src.mkdir()
    (src / "a.jpg").write_bytes(b"one")
    items = [(str(src / "a.jpg"), "cat/dog:1")]
    assert copy_into_class_folders(items, tmp_path / "out") == 1
    assert copy_into_class_folders(items, tmp_path / "out") == 1
    folder = tmp_path / "out" / safe_folder_name("cat/dog:1")
    assert sorted(p.name for p in folder.iterdir()) == ["a (1).jpg", "a.jpg"]
    assert (src / "a.jpg").read_bytes() == b"one"  # copied, not moved


def test_a_copy_that_fails_halfway_leaves_nothing_behind(tmp_path: Path, monkeypatch) -> None:
    import shutil

    from vit_desktop.core.io import class_folders

    src = tmp_path / "in" / "a.jpg"
    src.parent.mkdir()
    src.write_bytes(b"x" * 1000)

    def half_then_fail(a: str, b: str) -> None:
        Path(b).write_bytes(Path(a).read_bytes()[:500])
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(shutil, "copy2", half_then_fail)
    failed: list[str] = []
    assert class_folders.copy_into_class_folders([(str(src), "cat")], tmp_path / "out",
                                          on_error=lambda p, exc: failed.append(p)) == 0
    assert failed == [str(src)] and list((tmp_path / "out" / "cat").iterdir()) == []


def test_a_class_called_uncertain_in_any_case_is_not_the_uncertain_folder() -> None:
    from vit_desktop.core.io.class_folders import UNCERTAIN_FOLDER, class_folder_of

    def sorted_as(label: str, uncertain: bool = False) -> str | None:
        return class_folder_of(ClassifyResult(path="a.jpg", predictions=(Prediction(label, 0, 0.9),),
                                              uncertain=uncertain))

    assert sorted_as("cat", uncertain=True) == UNCERTAIN_FOLDER
    assert sorted_as("uncertain") == "uncertain (class)"
    assert sorted_as("Uncertain ") == "Uncertain (class)"  # one folder on a file system that ignores case
    assert sorted_as("cat") == "cat"
