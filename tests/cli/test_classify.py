"""`vit-desktop classify` and `models`: the interface scripts rely on."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.support import run_cli as run
from tests.support import write_image


def test_jsonl_has_one_object_per_image_and_errors_inline(tiny_model_file: Path, image_folder: Path, tmp_path: Path) -> None:
    target = tmp_path / "out.jsonl"
    code, _, err = run("classify", str(image_folder), "--model", str(tiny_model_file), "--top-k", "2",
                       "--batch-size", "2", "--device", "cpu", "--output", str(target))
    assert code == 0, err
    rows = [json.loads(line) for line in target.read_text().splitlines()]
    assert len(rows) == 6
    assert [Path(r["path"]).name for r in rows] == ["img0.png", "img1.png", "img2.png", "broken.jpg", "deep0.jpg", "deep1.jpg"]
    for r in rows:
        assert set(r) == {"path", "predictions", "error", "uncertain"}
        if Path(r["path"]).name == "broken.jpg":
            assert r["error"] and r["predictions"] == []
        else:
            assert r["error"] is None and len(r["predictions"]) == 2
            assert set(r["predictions"][0]) == {"label", "index", "score"}
            assert r["predictions"][0]["label"].startswith("label ")


def test_csv_and_json_formats(tiny_model_file: Path, image_folder: Path, tmp_path: Path) -> None:
    code, _, err = run("classify", str(image_folder / "img0.png"), str(image_folder / "img1.png"), "--model",
                       str(tiny_model_file), "--top-k", "3", "--output", str(tmp_path / "r.csv"))
    assert code == 0, err
    with open(tmp_path / "r.csv", newline="") as f:
        table = list(csv.reader(f))
    assert table[0] == ["path", "label_1", "score_1", "label_2", "score_2", "label_3", "score_3", "error", "uncertain"]
    assert len(table) == 3 and all(float(row[2]) >= float(row[4]) for row in table[1:])
    code, _, _ = run("classify", str(image_folder / "img0.png"), "--model", str(tiny_model_file),
                     "--output", str(tmp_path / "r.json"))
    assert code == 0
    (only,) = json.loads((tmp_path / "r.json").read_text())
    assert only["path"].endswith("img0.png") and len(only["predictions"]) == 5 - 2  # 3 classes in the model


def test_table_on_stdout_without_output(tiny_model_file: Path, image_folder: Path) -> None:
    code, out, err = run("classify", str(image_folder), "--model", str(tiny_model_file))
    assert code == 0
    lines = out.splitlines()
    assert len(lines) == 6 and any("error:" in line for line in lines)
    assert "model tiny on CPU" in err
    assert "\r" not in err  # no progress bar when stderr is not a terminal


def test_heatmaps_mirror_the_folder_layout(tiny_model_file: Path, image_folder: Path, tmp_path: Path) -> None:
    out_dir = tmp_path / "maps"
    code, _, err = run("classify", str(image_folder), "--model", str(tiny_model_file), "--heatmaps", str(out_dir),
                       "--head-fusion", "max", "--discard-ratio", "0.1", "--output", str(tmp_path / "r.jsonl"))
    assert code == 0, err
    written = sorted(str(p.relative_to(out_dir)) for p in out_dir.rglob("*") if p.is_file())
    expected = sorted(f"{n}.{ext}" for n in ["img0", "img1", "img2", "sub/deep0", "sub/deep1"] for ext in ("png", "npy"))
    assert written == expected
    grid = np.load(out_dir / "sub" / "deep0.npy")
    assert grid.shape == (4, 4) and grid.dtype == np.float32 and np.isclose(grid.max(), 1.0)
    from PIL import Image

    with Image.open(out_dir / "img0.png") as overlay, Image.open(image_folder / "img0.png") as original:
        assert overlay.size == original.size


def test_heatmap_writing_holds_back_a_fast_classifier_and_reports_problems_as_they_happen(tmp_path: Path) -> None:
    import threading
    import time

    from vit_desktop.cli.outputs import HeatmapWriter

    err = io.StringIO()
    writer = HeatmapWriter(tmp_path, overwrite=False, err=err)
    writer.max_pending = 3
    gate = threading.Event()
    writer._write = lambda path, base, heatmap, image: (gate.wait(5), f"{path}: heatmap not written: disk full")[1]  # type: ignore[method-assign]  # a slow, failing write for this writer
    submitted = []

    def classify_fast() -> None:
        for i in range(10):
            writer.submit(Path(f"p{i}.jpg"), Path(f"p{i}.jpg"), None)
            submitted.append(i)

    feeder = threading.Thread(target=classify_fast)
    feeder.start()
    try:
        deadline = time.monotonic() + 10
        while len(submitted) < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
        feeder.join(0.2)
        # The fourth submission waits for the first image to be written; three stay queued.
        assert feeder.is_alive() and len(submitted) == 3 and len(writer.pending) == 3
    finally:
        gate.set()
        feeder.join(5)
    assert "p0.jpg: heatmap not written" in err.getvalue()  # reported before the run ends
    writer.close()
    assert err.getvalue().count("disk full") == 10


def test_sort_into_copies_each_photo_into_its_label_folder(tiny_model_file: Path, image_folder: Path,
                                                          tmp_path: Path) -> None:
    dest = tmp_path / "sorted"
    target = tmp_path / "r.jsonl"
    code, _, err = run("classify", str(image_folder), "--model", str(tiny_model_file), "--output", str(target),
                       "--sort-into", str(dest))
    assert code == 0, err
    rows = [json.loads(line) for line in target.read_text().splitlines()]
    good = [r for r in rows if r["error"] is None]
    for r in good:  # copied, not moved, into its top label's folder, byte for byte
        copy = dest / r["predictions"][0]["label"] / Path(r["path"]).name
        assert copy.read_bytes() == Path(r["path"]).read_bytes()
    assert len(list(dest.rglob("*.*"))) == len(good) == 5  # the broken photo is not copied
    labels = {r["predictions"][0]["label"] for r in good}
    assert f"copied 5 photos into {len(labels)} class folder" in err
    # Again, with a threshold over every score: nothing replaced, and the unsure ones apart.
    over = str(max(r["predictions"][0]["score"] for r in good) + 1e-6)
    code, _, err = run("classify", str(image_folder), "--model", str(tiny_model_file), "--threshold", over,
                       "--sort-into", str(dest))
    assert code == 0, err
    assert sorted(p.name for p in (dest / "uncertain").iterdir()) == ["deep0.jpg", "deep1.jpg", "img0.png",
                                                                     "img1.png", "img2.png"]
    assert len(list(dest.rglob("*.*"))) == 10 and "(5 into uncertain/)" in err
    assert not [p for p in dest.rglob("*") if p.name.startswith(".")]  # no temporary file left
    # A photo that cannot be copied (here: "uncertain" is a file, not a folder) is said, the run goes
    # on, and the exit status says so.
    other = tmp_path / "other"
    other.mkdir()
    (other / "uncertain").write_text("a file of the user's")
    code, _, err = run("classify", str(image_folder), "--model", str(tiny_model_file), "--threshold", over,
                       "--sort-into", str(other), "--output", str(tmp_path / "r2.jsonl"))
    assert code == 1 and "img0.png: not copied into uncertain/" in err and "5 could not be copied" in err
    assert (other / "uncertain").read_text() == "a file of the user's"
    assert len((tmp_path / "r2.jsonl").read_text().splitlines()) == 6  # the results are written all the same


def test_sort_into_a_file_is_a_usage_error(tiny_model_file: Path, image_folder: Path, tmp_path: Path) -> None:
    (tmp_path / "taken").write_text("x")
    code, out, err = run("classify", str(image_folder), "--model", str(tiny_model_file), "--sort-into",
                         str(tmp_path / "taken"))
    assert code == 2 and "--sort-into" in err and "is a file, not a folder" in err and out == ""


def test_existing_files_are_not_overwritten(tiny_model_file: Path, image_folder: Path, tmp_path: Path) -> None:
    target = tmp_path / "keep.csv"
    target.write_text("precious")
    code, _, err = run("classify", str(image_folder), "--model", str(tiny_model_file), "--output", str(target))
    assert code == 2 and "already exists" in err and "--overwrite" in err
    assert target.read_text() == "precious"
    code, _, _ = run("classify", str(image_folder), "--model", str(tiny_model_file), "--output", str(target),
                     "--overwrite")
    assert code == 0 and target.read_text().startswith("path,")


@pytest.mark.parametrize(
    "args, message",
    [
        (["--model", "no-such-model"], "not a model name"),
        (["--output", "results.txt"], "must end in .csv, .json or .jsonl"),
        (["--top-k", "0"], "--top-k"),
        (["--discard-ratio", "1.5"], "--discard-ratio"),
        (["--threshold", "nan"], "--threshold must be a number"),
    ],
)
def test_usage_errors_exit_2_with_one_line(image_folder: Path, tiny_model_file: Path, args, message) -> None:
    if "--model" not in args:
        args = args + ["--model", str(tiny_model_file)]
    code, out, err = run("classify", str(image_folder), *args)
    assert code == 2 and message in err and out == ""
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_unreadable_model_file_exits_2(tmp_path: Path, image_folder: Path) -> None:
    bad = tmp_path / "model.safetensors"
    bad.write_bytes(b"\x00" * 100)
    code, _, err = run("classify", str(image_folder), "--model", str(bad))
    assert code == 2 and "model.safetensors" in err and "Traceback" not in err


def test_missing_input_is_a_per_file_error_not_a_crash(tiny_model_file: Path, image_folder: Path, tmp_path: Path) -> None:
    target = tmp_path / "r.jsonl"
    code, _, _ = run("classify", str(image_folder / "img0.png"), str(tmp_path / "ghost.jpg"), "--model",
                     str(tiny_model_file), "--output", str(target))
    assert code == 0
    rows = [json.loads(line) for line in target.read_text().splitlines()]
    assert [r["error"] is None for r in rows].count(False) == 1


def test_models_lists_the_registry() -> None:
    code, out, _ = run("models")
    assert code == 0
    for name in ("vit_b_16", "vit_b_32", "vit_l_16", "vit_l_32", "vit_h_14"):
        assert name in out
    assert out.endswith("\n")  # the shell prompt starts on its own line


def test_python_dash_m_entry_point(tiny_model_file: Path, image_folder: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "vit_desktop", "classify", str(image_folder / "img1.png"), "--model", str(tiny_model_file),
         "--output", "out.jsonl"],
        capture_output=True, text=True, cwd=image_folder.parent, env={**os.environ}, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert (image_folder.parent / "out.jsonl").read_text().count("\n") == 1


def test_the_command_ends_at_once_with_its_whole_output_and_status(tiny_model_file: Path, image_folder: Path) -> None:
    """A command's process ends without Python taking torch apart, and loses nothing to that: the
    table it wrote to a pipe (block-buffered) arrives whole, the exit status is the command's."""
    def vit_desktop(*argv: str) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}  # a pipe is block-buffered
        return subprocess.run([sys.executable, "-m", "vit_desktop", *argv], capture_output=True, text=True,
                              cwd=image_folder.parent, env=env, timeout=120)

    photos = [write_image(image_folder / "many" / f"{i:03d}.png", seed=i).name for i in range(40)]
    done = vit_desktop("classify", str(image_folder / "many"), "--model", str(tiny_model_file), "--top-k", "2")
    assert done.returncode == 0, done.stderr
    assert [Path(line.split()[0]).name for line in done.stdout.splitlines()] == photos
    assert "classified" in done.stderr.splitlines()[-1]  # stderr's last line too
    refused = vit_desktop("classify", str(image_folder), "--model", str(image_folder / "img0.png"))
    assert refused.returncode == 2 and "error:" in refused.stderr
    listed = vit_desktop("models")  # printed, not flushed line by line
    assert listed.returncode == 0 and listed.stdout == run("models")[1]


@pytest.mark.skipif(sys.platform != "linux", reason="a child decodes on Linux only")
def test_the_first_photos_are_decoded_in_a_child_while_torch_loads_and_answer_as_ever(tiny_model_file: Path,
                                                                                      image_folder: Path) -> None:
    """Both a model's first run (its file's header says how photos are prepared) and the next (the
    library knows the model) decode the first photos in a child process while torch is imported; the
    results are those of a run in threads, errors included."""
    marker = image_folder.parent / "children"
    wrapper = ("import runpy, sys\n"
               "from vit_desktop.core.inference import decoding\n"
               "made = decoding._Child.__init__\n"
               "def counted(self, *a, **k):\n"
               f"    open({str(marker)!r}, 'a').write('child\\n')\n"
               "    made(self, *a, **k)\n"
               "decoding._Child.__init__ = counted\n"
               "if sys.argv[1] == 'threads':\n"
               "    decoding._may_fork = lambda: False\n"
               "sys.argv[:2] = ['vit-desktop']\n"
               "runpy.run_module('vit_desktop', run_name='__main__')\n")
    for i in range(12):
        write_image(image_folder / "more" / f"{i:02d}.jpg", size=(60 + i, 50), seed=10 + i)
    outputs = []
    for how in ("first", "known", "threads"):
        out = image_folder.parent / f"{how}.jsonl"
        done = subprocess.run([sys.executable, "-c", wrapper, how, "classify", str(image_folder), "--model",
                               str(tiny_model_file), "--fresh", "--batch-size", "4", "--output", str(out)],
                              capture_output=True, text=True, cwd=image_folder.parent, timeout=120)
        assert done.returncode == 0, done.stderr
        outputs.append(out.read_text(encoding="utf-8"))
        assert marker.read_text() == "child\n" * min(len(outputs), 2)
    first, known, threads = outputs
    assert first == known == threads and threads.count("\n") == 18 and '"error": null' in threads
    assert sum('"error": "' in line for line in threads.splitlines()) == 1  # broken.jpg


def test_without_model_uses_the_last_used_then_says_which(tiny_model_file: Path, image_folder: Path) -> None:
    img = str(image_folder / "img0.png")
    code, _, err = run("classify", img, "--model", str(tiny_model_file))
    assert code == 0 and "no --model" not in err
    code, out, err = run("classify", img)
    assert code == 0 and "no --model given, so the model used last" in err and str(tiny_model_file) in err
    assert "label " in out
    tiny_model_file.unlink()  # gone: the last-used model is no longer a choice
    code, _, err = run("classify", img)
    assert code in (0, 2) and "the model used last" not in err


def test_without_model_or_cache_the_bundled_model_is_used(tiny_model_file: Path, image_folder: Path, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    from vit_desktop.core.models import registry

    bundled = tmp_path / "bundled"
    bundled.mkdir()
    tiny_model_file.rename(bundled / "demo.safetensors")
    monkeypatch.setattr(registry, "bundled_models_dir", lambda: bundled)
    code, out, err = run("classify", str(image_folder / "img1.png"))
    assert code == 0, err
    assert "the bundled demo model" in err and "demo.safetensors" in err
    assert "label " in out


def test_overlays_drawn_on_the_kept_photo_are_those_of_a_fresh_decode(tiny_model_file: Path, image_folder: Path,
                                                                      tmp_path: Path, monkeypatch) -> None:
    from vit_desktop.core.models import preprocess

    kept, fresh = tmp_path / "kept", tmp_path / "fresh"
    assert run("classify", str(image_folder), "--model", str(tiny_model_file), "--heatmaps", str(kept))[0] == 0
    monkeypatch.setattr(preprocess, "KEEP_IMAGE_PIXELS", 0)  # every overlay decodes its photo again
    assert run("classify", str(image_folder), "--model", str(tiny_model_file), "--heatmaps", str(fresh))[0] == 0
    written = sorted(p.relative_to(kept) for p in kept.rglob("*.png"))
    assert len(written) == 5
    for rel in written:
        assert (kept / rel).read_bytes() == (fresh / rel).read_bytes()


def test_every_result_says_whether_it_is_one_of_the_models_classes(tiny_model_file: Path, image_folder: Path,
                                                                     tmp_path: Path) -> None:
    """No --threshold: a model without a rule of its own marks unsure answers by the default."""
    from vit_desktop.core.models.open_set import BASE_THRESHOLD

    code, _, err = run("classify", str(image_folder), "--model", str(tiny_model_file), "--output",
                       str(tmp_path / "r.json"))
    assert code == 0, err
    assert "uncertain (not sure) when its best class is under 24%" in err
    rows = json.loads((tmp_path / "r.json").read_text())
    for r in rows:
        if r["error"]:
            assert r["uncertain"] is None
        else:
            assert r["uncertain"] is (r["predictions"][0]["score"] < BASE_THRESHOLD)
    code, _, err = run("classify", str(image_folder), "--model", str(tiny_model_file), "--output",
                       str(tmp_path / "r.csv"), "--top-k", "1")
    with (tmp_path / "r.csv").open(newline="", encoding="utf-8") as f:
        table = list(csv.reader(f))
    assert table[0][-2:] == ["error", "uncertain"]
    assert {row[-1] for row in table[1:]} <= {"true", "false", ""} and "" in {row[-1] for row in table[1:]}


def test_a_fine_tuned_models_own_rule_is_the_default_and_threshold_overrides_it(tmp_path: Path) -> None:
    from dataclasses import replace

    from tests.support import tiny_base, tiny_hierarchy, warm_cool_folder
    from vit_desktop.core.models.model_file import save_model
    from vit_desktop.core.training import TrainConfig, finetune
    from vit_desktop.core.training.labelled_set import LabelledSet
    from vit_desktop.core.types import OpenSetRule

    folder = warm_cool_folder(tmp_path / "data")
    result = finetune(tiny_base(), LabelledSet.from_folder(folder), TrainConfig(mode="head", head="hierarchy"),
                      hierarchy=tiny_hierarchy())
    # A rule no photo passes: every result is "none of these", unless --threshold says otherwise.
    card = replace(result.card, open_set=OpenSetRule("known_mass", 1.01, keeps=0.97, calibrated_on="a test"))
    model = save_model(tmp_path / "m.safetensors", result.module, card)
    code, _, err = run("classify", str(folder), "--model", str(model), "--output", str(tmp_path / "own.jsonl"),
                       "--sort-into", str(tmp_path / "sorted"))
    assert code == 0, err
    assert "uncertain (none of these) when under 101% of the probability is on its classes" in err
    rows = [json.loads(line) for line in (tmp_path / "own.jsonl").read_text().splitlines()]
    assert len(rows) == 12 and all(r["uncertain"] is True for r in rows)
    assert len(list((tmp_path / "sorted" / "uncertain").iterdir())) == 12
    code, _, err = run("classify", str(folder), "--model", str(model), "--output", str(tmp_path / "asked.jsonl"),
                       "--threshold", "0")
    assert code == 0, err
    rows = [json.loads(line) for line in (tmp_path / "asked.jsonl").read_text().splitlines()]
    assert all(r["uncertain"] is False for r in rows)


def test_a_model_named_by_its_saved_name_is_remembered_as_its_file(tmp_path: Path) -> None:
    """`--model cats` stores the file it stood for: the next run without --model finds it again
    (it stored "cats", which nothing resolved, and fell back to the demo model)."""
    from tests.support import save_tiny_model, write_image
    from vit_desktop.core import state
    from vit_desktop.core.paths import user_models_dir

    saved = save_tiny_model(user_models_dir() / "cats.safetensors", ("tabby", "siamese", "lion"), "cats")
    photo = write_image(tmp_path / "p.png")
    code, _, err = run("classify", str(photo), "--model", "cats", "--device", "cpu")
    assert code == 0, err
    assert state.last_model() == str(saved.resolve())
    code, out, err = run("classify", str(photo), "--device", "cpu")
    assert code == 0 and "model cats" in err and "the model used last" in err
    assert any(label in out for label in ("tabby", "siamese", "lion"))
    saved.unlink()
    code, _, err = run("classify", str(photo), "--device", "cpu")
    assert "the last model" in err and "is no longer there" in err
