"""classify keeps what it computes in the library: a folder classified again is read, not computed,
and reads the same to the byte; a head trained later answers from stored features."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.support import colour_folder, run_cli, write_image
from vit_desktop.core.io.xmp import read_keywords, sidecar_path


def classify(folder: Path, model: Path, out: Path, *extra: str) -> str:
    code, _, err = run_cli("classify", str(folder), "--model", str(model), "--device", "cpu", "--output", str(out),
                           "--overwrite", *extra)
    assert code == 0, err
    return err


def test_a_second_run_reads_the_library_and_writes_the_same_bytes(tiny_model_file: Path, tmp_path: Path) -> None:
    folder = tmp_path / "photos"
    for i in range(5):
        write_image(folder / f"p{i}.png", seed=i)
    write_image(folder / "sub" / "q.jpg", seed=9)
    (folder / "broken.jpg").write_bytes(b"not a photo")
    first = ""
    for fmt in ("jsonl", "csv", "json"):
        first = first or classify(folder, tiny_model_file, tmp_path / f"a.{fmt}")
        again = classify(folder, tiny_model_file, tmp_path / f"b.{fmt}")
        if fmt != "jsonl":
            classify(folder, tiny_model_file, tmp_path / f"a.{fmt}", "--fresh")
        assert (tmp_path / f"a.{fmt}").read_bytes() == (tmp_path / f"b.{fmt}").read_bytes()
        assert "6 from the library, 0 classified, 1 could not be read" in again, again
    assert "0 from the library, 6 classified, 1 could not be read" in first
    fresh = classify(folder, tiny_model_file, tmp_path / "c.jsonl", "--fresh")
    assert "0 from the library, 6 classified, 1 could not be read" in fresh
    assert (tmp_path / "c.jsonl").read_bytes() == (tmp_path / "a.jsonl").read_bytes()
    # A photo that changed is classified again, the others are read.
    write_image(folder / "p2.png", seed=77)
    changed = classify(folder, tiny_model_file, tmp_path / "d.jsonl")
    assert "5 from the library, 1 classified, 1 could not be read" in changed
    rows = {Path(r["path"]).name: r for r in map(json.loads, (tmp_path / "d.jsonl").read_text().splitlines())}
    before = {Path(r["path"]).name: r for r in map(json.loads, (tmp_path / "a.jsonl").read_text().splitlines())}
    assert rows["p2.png"] != before["p2.png"] and rows["p1.png"] == before["p1.png"]


def test_a_run_answered_from_the_library_never_imports_torch(tiny_model_file: Path, tmp_path: Path) -> None:
    folder = tmp_path / "photos"
    for i in range(3):
        write_image(folder / f"p{i}.png", seed=i)
    script = ("import sys\nfrom vit_desktop.cli import main\n"
              f"code = main(['classify', {str(folder)!r}, '--model', {str(tiny_model_file)!r}, '--device', 'cpu'])\n"
              "print('TORCH' if 'torch' in sys.modules else 'NO TORCH', code)\n")
    env = {**os.environ}
    runs = [subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120)
            for _ in range(2)]
    assert runs[0].stdout.strip().endswith("TORCH 0") and not runs[0].stdout.strip().endswith("NO TORCH 0")
    assert runs[1].stdout.strip().endswith("NO TORCH 0"), runs[1].stdout + runs[1].stderr
    assert "3 from the library, 0 classified" in runs[1].stderr


def test_two_processes_at_once_share_the_library(tiny_model_file: Path, tmp_path: Path) -> None:
    folder = tmp_path / "photos"
    for i in range(24):
        write_image(folder / f"p{i:02d}.png", seed=i)
    cmd = [sys.executable, "-m", "vit_desktop", "classify", str(folder), "--model", str(tiny_model_file),
           "--device", "cpu", "--batch-size", "2", "--output"]
    procs = [subprocess.Popen([*cmd, str(tmp_path / f"out{i}.jsonl")], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for i in range(2)]
    errs = [p.communicate(timeout=300)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], errs
    assert not any("library" in e and "without it" in e for e in errs), errs
    assert (tmp_path / "out0.jsonl").read_text() == (tmp_path / "out1.jsonl").read_text()
    third = classify(folder, tiny_model_file, tmp_path / "out2.jsonl")
    assert "24 from the library, 0 classified" in third


def test_a_head_trained_later_answers_from_stored_features(tmp_path: Path, tiny_model_file: Path) -> None:
    data = colour_folder(tmp_path / "data", per_class=6, size=32)
    head = tmp_path / "colours.safetensors"
    code, _, err = run_cli("finetune", str(data), "--base", str(tiny_model_file), "--output", str(head),
                           "--mode", "head", "--head", "features", "--device", "cpu")
    assert code == 0, err
    photos = tmp_path / "photos"
    shutil.copytree(data, photos)
    classify(photos, tiny_model_file, tmp_path / "base.jsonl")  # the base model: features stored
    err = classify(photos, head, tmp_path / "head.jsonl")
    assert "0 from the library, 18 from stored features, 0 classified" in err, err
    assert "similarity" in err  # the features head judges by the nearest training photo
    fresh = classify(photos, head, tmp_path / "fresh.jsonl", "--fresh")
    assert "18 classified" in fresh
    got = [json.loads(line) for line in (tmp_path / "head.jsonl").read_text().splitlines()]
    want = [json.loads(line) for line in (tmp_path / "fresh.jsonl").read_text().splitlines()]
    assert [g["predictions"][0]["label"] for g in got] == [w["predictions"][0]["label"] for w in want]
    np.testing.assert_allclose([p["score"] for g in got for p in g["predictions"]],
                               [p["score"] for w in want for p in w["predictions"]], atol=1e-6)
    # Its own open-set score (a similarity to the training photos, not a matter of probabilities)
    # comes out the same from the stored features and stored answers as from the photos.
    assert [g["uncertain"] for g in got] == [w["uncertain"] for w in want]
    again = classify(photos, head, tmp_path / "head2.jsonl")
    assert "18 from the library, 0 classified" in again  # the head's answers are stored too
    assert (tmp_path / "head2.jsonl").read_text() == (tmp_path / "fresh.jsonl").read_text()


def test_library_command_shows_and_empties_the_store(tiny_model_file: Path, tmp_path: Path) -> None:
    folder = tmp_path / "photos"
    write_image(folder / "a.png")
    classify(folder, tiny_model_file, tmp_path / "a.jsonl")
    code, out, err = run_cli("library")
    assert code == 0 and "1 photos, 1 answers, 1 feature sets, 1 model files" in out, out + err
    code, out, _ = run_cli("library", "--clear")
    assert code == 0 and "emptied" in out and "1 photos" in out
    assert "0 photos" in run_cli("library")[1]
    assert "0 from the library, 1 classified" in classify(folder, tiny_model_file, tmp_path / "b.jsonl")


def test_a_damaged_library_is_set_aside_in_one_line_and_the_run_goes_on(tiny_model_file: Path, tmp_path: Path) -> None:
    from vit_desktop.core.paths import data_dir

    data_dir().mkdir(parents=True, exist_ok=True)
    (data_dir() / "library.sqlite3").write_bytes(b"garbage" * 1000)
    folder = tmp_path / "photos"
    write_image(folder / "a.png")
    err = classify(folder, tiny_model_file, tmp_path / "a.jsonl")
    said = [line for line in err.splitlines() if line.startswith("vit-desktop: library ")]
    assert len(said) == 1 and "is damaged" in said[0] and "starting a new one" in said[0], err
    assert "Traceback" not in err and len((tmp_path / "a.jsonl").read_text().splitlines()) == 1


def test_xmp_keywords_are_read_by_exiftool_and_keep_what_the_sidecar_held(tiny_model_file: Path,
                                                                           tmp_path: Path) -> None:
    folder = tmp_path / "photos"
    a, b = write_image(folder / "a.jpg", seed=1), write_image(folder / "b.png", seed=2)
    photo_bytes, photo_times = a.read_bytes(), a.stat().st_mtime_ns
    # A sidecar another program wrote: a rating and the user's own keyword.
    sidecar_path(a).write_text(
        '<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
        '<rdf:Description rdf:about="" xmlns:xmp="http://ns.adobe.com/xap/1.0/" '
        'xmlns:dc="http://purl.org/dc/elements/1.1/" xmp:Rating="4">'
        '<dc:subject><rdf:Bag><rdf:li>holiday</rdf:li></rdf:Bag></dc:subject>'
        '</rdf:Description></rdf:RDF></x:xmpmeta>', encoding="utf-8")
    err = classify(folder, tiny_model_file, tmp_path / "a.jsonl", "--xmp")
    assert "wrote keywords into 2 XMP sidecars" in err
    labels = {Path(r["path"]).name: r["predictions"][0]["label"]
              for r in map(json.loads, (tmp_path / "a.jsonl").read_text().splitlines())}
    assert read_keywords(a).subjects == ("holiday", labels["a.jpg"]) and read_keywords(a).ours == (labels["a.jpg"],)
    assert read_keywords(b).subjects == (labels["b.png"],)
    assert a.read_bytes() == photo_bytes and a.stat().st_mtime_ns == photo_times  # the photo itself: untouched
    exiftool = shutil.which("exiftool")
    if exiftool is None:
        pytest.skip("exiftool is not installed (Debian: libimage-exiftool-perl; .ci/run installs it)")
    got = json.loads(subprocess.run([exiftool, "-j", "-XMP:Subject", "-XMP:HierarchicalSubject", "-XMP:Rating",
                                     str(sidecar_path(a)), str(sidecar_path(b))],
                                    capture_output=True, text=True, check=True).stdout)
    assert got[0]["Subject"] == ["holiday", labels["a.jpg"]] and got[0]["Rating"] == 4
    assert got[0]["HierarchicalSubject"] == f"vit-desktop|{labels['a.jpg']}"
    assert got[1]["Subject"] == labels["b.png"]
    # Uncertain now (a threshold nothing reaches): this program's keyword goes, the user's stays.
    classify(folder, tiny_model_file, tmp_path / "b.jsonl", "--xmp", "--threshold", "1.1")
    assert read_keywords(a).subjects == ("holiday",) and read_keywords(a).ours == ()
    got = json.loads(subprocess.run([exiftool, "-j", "-XMP:Subject", "-XMP:Rating", str(sidecar_path(a))],
                                    capture_output=True, text=True, check=True).stdout)
    assert got[0]["Subject"] == "holiday" and got[0]["Rating"] == 4


def test_the_store_is_a_plain_sqlite_database(tiny_model_file: Path, tmp_path: Path) -> None:
    """Another tool can open it: the sqlite3 shell checks it and counts what it holds."""
    from vit_desktop.core.library.store import library_path

    folder = tmp_path / "photos"
    for i in range(3):
        write_image(folder / f"p{i}.png", seed=i)
    classify(folder, tiny_model_file, tmp_path / "a.jsonl")
    shell = shutil.which("sqlite3")
    if shell is None:
        pytest.skip("the sqlite3 shell is not installed (Debian: sqlite3; .ci/run installs it)")
    out = subprocess.run([shell, str(library_path()), "PRAGMA integrity_check;",
                          "SELECT count(*) FROM files; SELECT count(*) FROM results; SELECT count(*) FROM features;"],
                         capture_output=True, text=True, check=True).stdout.split()
    assert out == ["ok", "3", "3", "3"]
