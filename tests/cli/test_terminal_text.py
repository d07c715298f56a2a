"""Text a model file or a folder chose reaches the terminal as one line with no terminal codes: a
model's name cannot set the terminal's title, erase lines or forge output lines. Files (JSON) keep
the text itself."""

from __future__ import annotations

import json
from pathlib import Path

from safetensors import safe_open
from safetensors.torch import save_file

from tests.support import run_cli, save_tiny_model, write_image
from vit_desktop.core.io.results_files import format_table, to_csv, to_json
from vit_desktop.core.paths import user_models_dir
from vit_desktop.core.types import ClassifyResult, Prediction

#: Sets the window title (OSC), erases the line (CSI), rings the bell, starts a forged line, and
#: the one-byte CSI of C1.
HOSTILE = "evil\x1b]0;owned\x07\x1b[2K\rforged\nline\x9b2J"
CODES = ("\x1b", "\x07", "\x9b", "\r")


def hostile_model(folder: Path) -> Path:
    model = save_tiny_model(folder / "plain.safetensors", ("apple", "pear", "plum"), "plain")
    with safe_open(str(model), "pt") as f:
        meta = dict(f.metadata())
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    meta["vit_desktop.name"] = HOSTILE
    meta["vit_desktop.description"] = "about " + HOSTILE
    meta["vit_desktop.open_set"] = json.dumps({"score": "max_probability", "threshold": 0.2,
                                               "calibrated_on": "on " + HOSTILE})
    path = folder / "hostile.safetensors"
    save_file(tensors, str(path), metadata=meta)
    return path


def assert_clean(text: str) -> None:
    for code in CODES:
        assert code not in text, f"{code!r} reached the terminal: {text!r}"
    assert "evil\\x1b]0;owned\\x07" in text  # shown, escaped, not hidden


def test_models_lists_a_hostile_name_on_one_line_without_codes() -> None:
    hostile_model(user_models_dir())
    code, out, err = run_cli("models")
    assert code == 0, err
    assert_clean(out)
    row = [line for line in out.splitlines() if "evil" in line]
    assert len(row) == 1 and "about evil" in row[0]  # name and description on the model's one row


def test_classify_says_a_hostile_model_name_on_one_line(tmp_path: Path) -> None:
    model = hostile_model(tmp_path)
    photo = write_image(tmp_path / "photo.png")
    code, out, err = run_cli("classify", str(photo), "--model", str(model))
    assert code == 0, err
    assert_clean(err)
    model_line = [line for line in err.splitlines() if line.startswith("vit-desktop: model ")]
    assert len(model_line) == 1 and "forged\\x0aline" in model_line[0]
    assert "forged" not in out and len(out.splitlines()) == 1  # the table: one line for the photo


def test_the_table_escapes_labels_and_errors_but_json_keeps_them() -> None:
    results = [
        ClassifyResult(path="a.png", predictions=(Prediction(HOSTILE, 0, 0.9),)),
        ClassifyResult(path="b.png", error="cannot read " + HOSTILE),
    ]
    table = format_table(results, top_k=1)
    assert_clean(table)
    assert len(table.splitlines()) == 2
    back = json.loads(to_json(results))
    assert back[0]["predictions"][0]["label"] == HOSTILE  # the real text: JSON escapes it itself
    assert back[1]["error"] == "cannot read " + HOSTILE
    csv_text = to_csv(results, top_k=1)
    assert_clean(csv_text)  # a CSV read by `cat` or a spreadsheet shows the codes, not runs them
    assert len(csv_text.splitlines()) == 3


def test_a_usage_error_quoting_a_hostile_path_is_one_line(tmp_path: Path) -> None:
    taken = tmp_path / "out\x1b[2J\nforged.csv"
    taken.write_text("")
    photo = write_image(tmp_path / "photo.png")
    code, _, err = run_cli("classify", str(photo), "--output", str(taken))
    assert code == 2
    assert len(err.splitlines()) == 1 and "\x1b" not in err
