"""The command line under the things that go wrong: signals, unwritable destinations, odd file
names, closed pipes, photos given instead of a command. Real subprocesses where a signal is sent."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.support import REPO, colour_folder, disk_full_for, write_image
from tests.support import run_cli as run
from vit_desktop import cli


def spawn(*argv: str, **kw: Any) -> subprocess.Popen[str]:
    env = dict(os.environ, PYTHONPATH=str(REPO), PYTHONUNBUFFERED="1")
    return subprocess.Popen([sys.executable, "-m", "vit_desktop", *argv], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kw)


def wait_for(proc: subprocess.Popen[str], condition, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not condition() and time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.05)
    assert condition(), "the child never got there"


@pytest.mark.parametrize(("signum", "status"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_during_finetune_saves_the_best_model_so_far(tmp_path: Path, tiny_model_file: Path,
                                                              signum: int, status: int) -> None:
    data = colour_folder(tmp_path / "data", per_class=6)
    out = tmp_path / "best.safetensors"
    log = tmp_path / "stdout.txt"
    with log.open("w") as stdout:
        proc = subprocess.Popen(
            [sys.executable, "-m", "vit_desktop", "finetune", str(data), "--base", str(tiny_model_file),
             "--output", str(out), "--mode", "full", "--epochs", "500", "--patience", "500", "--device", "cpu"],
            env=dict(os.environ, PYTHONPATH=str(REPO), PYTHONUNBUFFERED="1"), text=True,
            stdout=stdout, stderr=subprocess.PIPE)
        try:
            # The backbone's first epoch has ended: a model better than the head alone may exist.
            wait_for(proc, lambda: log.read_text().count("epoch") >= 2)
            proc.send_signal(signum)
            _, err = proc.communicate(timeout=120)
        finally:
            if proc.poll() is None:
                proc.kill()
    assert proc.returncode == status, err
    assert "Traceback" not in err and "terminate called" not in err
    assert "saved the best model so far" in err
    from vit_desktop.core.inference.engine import Engine

    assert Engine.load(out, device="cpu").card.labels == ("blue", "green", "red")
    assert not list(tmp_path.glob(".best.safetensors.*"))  # no temporary file left behind


def test_sigterm_during_classify_with_heatmaps_leaves_no_temporary_files(tmp_path: Path,
                                                                          tiny_model_file: Path) -> None:
    folder = tmp_path / "many"
    for i in range(400):
        write_image(folder / f"p{i:03d}.png", size=(320, 240), seed=i)
    maps = tmp_path / "maps"
    proc = spawn("classify", str(folder), "--model", str(tiny_model_file), "--heatmaps", str(maps),
                 "--batch-size", "4", "--output", str(tmp_path / "r.jsonl"), "--device", "cpu")
    try:
        wait_for(proc, lambda: maps.exists() and len(list(maps.glob("*.png"))) >= 8)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 143, err
    assert "terminated" in err and "Traceback" not in err
    left = [p.name for p in maps.iterdir() if p.name.startswith(".")]
    assert left == [], left
    assert len(list(maps.glob("*.png"))) < 400


@pytest.mark.parametrize("target", ["folder.csv", "/proc/vit-desktop-results.json"])
def test_an_unwritable_output_is_refused_before_the_run(tmp_path: Path, tiny_model_file: Path, image_folder: Path,
                                                        target: str) -> None:
    path = tmp_path / target if not target.startswith("/") else Path(target)
    if target == "folder.csv":
        path.mkdir()
    code, out, err = run("classify", str(image_folder), "--model", str(tiny_model_file), "--output", str(path),
                         "--overwrite")
    assert code == 2 and "--output" in err and len(err.strip().splitlines()) == 1, err
    assert "model tiny" not in err  # refused before the model was even loaded


def test_a_full_disk_at_the_end_keeps_the_results_in_the_data_folder(tmp_path: Path, tiny_model_file: Path,
                                                                     image_folder: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    from vit_desktop.core import paths
    target = tmp_path / "out" / "r.jsonl"
    disk_full_for(target, monkeypatch)
    code, _, err = run("classify", str(image_folder), "--model", str(tiny_model_file), "--output", str(target))
    assert code == 1 and "no space left on device" in err
    kept = list((paths.data_dir() / "unsaved results").glob("r-*.jsonl"))
    assert len(kept) == 1 and str(kept[0]) in err
    assert len(kept[0].read_text(encoding="utf-8").splitlines()) == 6


@pytest.mark.skipif(sys.platform == "win32", reason="file names are UTF-16 there")
def test_a_file_name_that_is_not_utf8_gives_a_valid_utf8_json_file(tmp_path: Path, tiny_model_file: Path) -> None:
    folder = tmp_path / "latin1"
    folder.mkdir()
    name = os.fsdecode(b"caf\xe9.png")
    write_image(folder / name)
    code, _, err = run("classify", str(folder), "--model", str(tiny_model_file), "--output",
                       str(tmp_path / "r.jsonl"))
    assert code == 0, err
    (row,) = [json.loads(line) for line in (tmp_path / "r.jsonl").read_bytes().decode("utf-8").splitlines()]
    assert os.fsencode(row["path"]).endswith(b"caf\xe9.png") and row["error"] is None


def test_a_closed_pipe_ends_the_run_quietly(tmp_path: Path, tiny_model_file: Path) -> None:
    folder = tmp_path / "many"
    for i in range(60):
        write_image(folder / f"p{i:02d}.png", seed=i)
    proc = spawn("classify", str(folder), "--model", str(tiny_model_file), "--batch-size", "1", "--device", "cpu")
    assert proc.stdout is not None
    first = proc.stdout.readline()
    proc.stdout.close()  # what `| head -1` does once it has its line
    _, err = proc.communicate(timeout=120)
    assert "p00.png" in first
    assert "Traceback" not in err and "BrokenPipe" not in err, err
    assert proc.returncode == 141


def test_photos_instead_of_a_command_open_the_window_with_them(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    import vit_desktop.gui.app as app

    opened: list[list[str]] = []

    def main(argv: list[str]) -> int:
        opened.append(list(argv))
        return 0

    monkeypatch.setattr(app, "main", main)
    photo = write_image(tmp_path / "photo.jpg")
    assert cli.main([str(photo), str(tmp_path)]) == 0
    assert opened == [[str(photo), str(tmp_path)]]
    # A mistyped command is still a usage error, not a window.
    with pytest.raises(SystemExit) as exit_:
        cli.main(["clasify", str(photo)])
    assert exit_.value.code == 2 and opened == [[str(photo), str(tmp_path)]]


def test_duplicates_and_oversized_options_are_said_once(tmp_path: Path, tiny_model_file: Path) -> None:
    photo = write_image(tmp_path / "in" / "a.png")
    (tmp_path / "in" / "link.png").symlink_to(photo)
    code, out, err = run("classify", str(tmp_path / "in"), str(photo), "--model", str(tiny_model_file),
                         "--top-k", "10", "--batch-size", "100000")
    assert code == 0, err
    assert len(out.splitlines()) == 1  # one photo, however it was reached
    assert "2 duplicates skipped" in err
    assert "--top-k 10 is more than the model's 3 classes: showing 3" in err
    assert "--batch-size 100000" in err


def test_pillow_warnings_become_the_photos_own_note(tmp_path: Path, tiny_model_file: Path) -> None:
    import struct

    from PIL import Image

    ifd = struct.pack("<H", 1) + struct.pack("<HHII", 0x010E, 2, 5000, 9999) + struct.pack("<I", 0)
    exif = b"Exif\x00\x00II*\x00" + struct.pack("<I", 8) + ifd  # a tag whose data lies past the end
    Image.new("RGB", (40, 30), (200, 10, 10)).save(tmp_path / "odd.jpg", exif=exif)
    code, out, err = run("classify", str(tmp_path / "odd.jpg"), "--model", str(tiny_model_file))
    assert code == 0 and "odd.jpg" in out
    (note,) = [line for line in err.splitlines() if "damaged metadata" in line]
    assert "odd.jpg" in note and "UserWarning" not in err


@pytest.mark.parametrize("last", ["/etc/passwd", "truncated", "deep state"])
def test_a_last_model_that_does_not_load_falls_back_with_one_line(tmp_path: Path, tiny_model_file: Path,
                                                                   monkeypatch: pytest.MonkeyPatch, last: str) -> None:
    from vit_desktop.core import paths, state
    from vit_desktop.core.models import registry

    bundled = tmp_path / "bundled"
    bundled.mkdir()
    demo = bundled / "demo.safetensors"
    demo.write_bytes(tiny_model_file.read_bytes())
    monkeypatch.setattr(registry, "bundled_models_dir", lambda: bundled)
    if last == "deep state":  # a state file nested deeper than Python recurses: as if empty
        (paths.data_dir()).mkdir(parents=True, exist_ok=True)
        (paths.data_dir() / "state.json").write_text('{"a": ' + "[" * 100_000 + "]" * 100_000 + "}")
    else:
        if last == "truncated":
            cut = tmp_path / "cut.safetensors"
            cut.write_bytes(tiny_model_file.read_bytes()[:3000])
            last = str(cut)
        elif not Path(last).is_file():
            pytest.skip(f"no {last} here")
        state.set_last_model(last)
    photo = write_image(tmp_path / "p.png")
    code, out, err = run("classify", str(photo))
    assert code == 0, err
    assert "p.png" in out and "Traceback" not in err
    assert f"no --model given, so the bundled demo model: {demo}" in err
    if last != "deep state":
        (said,) = [line for line in err.splitlines() if "cannot be loaded" in line]
        assert said.startswith(f"vit-desktop: the model used last, {last}, cannot be loaded (")
        assert said.endswith(f"; falling back to the bundled demo model, {demo}")
    # With nothing to fall back to, one line that names the model: a usage error.
    demo.unlink()
    if last != "deep state":
        code, _, err = run("classify", str(photo))
        assert code == 2 and len(err.splitlines()) == 1, err
        assert f"the model used last, {last}, cannot be loaded" in err and "no other model" in err


def test_a_home_folder_that_does_not_exist_is_never_created(tmp_path: Path, tiny_model_file: Path) -> None:
    home = tmp_path / "nonexistent"
    env = {k: v for k, v in os.environ.items()
           if k not in ("VIT_DESKTOP_DATA_DIR", "TORCH_HOME", "XDG_DATA_HOME", "XDG_CACHE_HOME", "XDG_CONFIG_HOME")}
    env.update(HOME=str(home), PYTHONPATH=str(REPO))
    photo = write_image(tmp_path / "p.png")

    def vit_desktop(*argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "vit_desktop", *argv], env=env, text=True, capture_output=True,
                              timeout=300)

    done = vit_desktop("classify", str(photo), "--model", str(tiny_model_file), "--output", str(tmp_path / "r.json"))
    assert done.returncode == 0, done.stderr
    assert json.loads((tmp_path / "r.json").read_text())[0]["error"] is None
    # Where it could not keep anything, once.
    assert done.stderr.count(f"the home folder {home} does not exist") == 1, done.stderr
    assert vit_desktop("models").returncode == 0
    assert not home.exists()
