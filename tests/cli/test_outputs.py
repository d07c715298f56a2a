"""What `classify` writes never loses or destroys a file: every photo gets its own map, a photo is
never written over, names as long as a file system takes still work, and a failure says so in the
exit status."""

from __future__ import annotations

import errno
import json
import time
from pathlib import Path

import pytest
from PIL import Image

from tests.support import disk_full_for, run_cli, write_image


def size_of(image: Path) -> tuple[int, int]:
    with Image.open(image) as im:
        return im.size


def files_in(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


def test_photos_of_the_same_name_each_get_their_own_map(tmp_path: Path, tiny_model_file: Path) -> None:
    photos = [write_image(tmp_path / d / "x.jpg", size=(40 + 8 * i, 30), seed=i) for i, d in enumerate("abc")]
    maps = tmp_path / "maps"
    code, _, err = run_cli("classify", *map(str, photos), "--model", str(tiny_model_file), "--heatmaps", str(maps),
                           "--overwrite")
    assert code == 0, err
    # x.png, then x.jpg.png (the rule that keeps x.jpg's and x.png's maps apart), then numbers.
    names = ("x", "x.jpg", "x (1)")
    assert files_in(maps) == sorted(f"{n}.{ext}" for n in names for ext in ("png", "npy"))
    assert [size_of(maps / f"{n}.png") for n in names] == [size_of(p) for p in photos]  # each photo's own map
    # Folders given side by side mirror into the same place: the same rule.
    code, _, err = run_cli("classify", str(tmp_path / "a"), str(tmp_path / "b"), "--model", str(tiny_model_file),
                           "--heatmaps", str(tmp_path / "folders"))
    assert code == 0, err
    assert files_in(tmp_path / "folders") == ["x.jpg.npy", "x.jpg.png", "x.npy", "x.png"]


def test_a_map_is_never_written_over_a_photo_even_with_overwrite(tmp_path: Path, tiny_model_file: Path) -> None:
    photos = tmp_path / "holiday"
    write_image(photos / "holiday.jpg", seed=1)
    write_image(photos / "holiday.png", seed=2)
    mine = (photos / "holiday.png").read_bytes()
    code, _, err = run_cli("classify", str(photos), "--model", str(tiny_model_file), "--heatmaps", str(photos),
                           "--overwrite")
    assert code == 0, err
    assert (photos / "holiday.png").read_bytes() == mine
    assert "holiday.png is one of the photos: the map of" in err and "holiday.jpg is holiday.jpg.png instead" in err
    assert files_in(photos) == ["holiday.jpg", "holiday.jpg.npy", "holiday.jpg.png", "holiday.png",
                                "holiday.png.npy", "holiday.png.png"]


def test_names_as_long_as_a_file_system_takes_get_maps_copies_and_results(tmp_path: Path,
                                                                         tiny_model_file: Path) -> None:
    name = "é" * 125 + "e.jpg"  # 256 characters, 255 bytes: the most ext4, APFS and NTFS take
    assert len(name.encode()) == 255
    photos = [write_image(tmp_path / d / name, seed=i) for i, d in enumerate("ab")]
    output = tmp_path / ("r" * 250 + ".json")
    code, _, err = run_cli("classify", *map(str, photos), "--model", str(tiny_model_file),
                           "--heatmaps", str(tmp_path / "maps"), "--sort-into", str(tmp_path / "sorted"),
                           "--threshold", "1", "--output", str(output))
    assert code == 0, err
    maps = files_in(tmp_path / "maps")
    assert len(maps) == 4 and name.replace(".jpg", ".png") in maps
    assert all(len(m.encode()) <= 255 for m in maps) and any(m.endswith(" (1).png") for m in maps)
    copies = files_in(tmp_path / "sorted" / "uncertain")
    assert len(copies) == 2 and name in copies and any(c.endswith(" (1).jpg") for c in copies)
    assert len(json.loads(output.read_text(encoding="utf-8"))) == 2


def test_heatmaps_that_cannot_be_written_are_exit_status_1(tmp_path: Path, tiny_model_file: Path,
                                                           image_folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from vit_desktop.core.io import heatmap

    def full_disk(path, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(heatmap, "save_overlay_png", full_disk)
    code, out, err = run_cli("classify", str(image_folder), "--model", str(tiny_model_file), "--heatmaps",
                             str(tmp_path / "maps"))
    assert code == 1
    assert len(out.splitlines()) == 6  # the results themselves are all there
    assert "heatmaps not written: no space left on device" in err
    assert "the heatmaps of 5 photos could not be written" in err


def test_two_runs_that_fall_back_in_the_same_second_keep_both_results(tmp_path: Path, tiny_model_file: Path,
                                                                      image_folder: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    from vit_desktop.core import paths
    target = tmp_path / "out" / "r.jsonl"
    disk_full_for(target, monkeypatch)
    monkeypatch.setattr(time, "strftime", lambda fmt, *a: "20250101-120000")  # the same second
    said = []
    for photos in (image_folder, image_folder / "sub"):
        code, _, err = run_cli("classify", str(photos), "--model", str(tiny_model_file), "--output", str(target))
        assert code == 1 and "the results are lost" not in err, err
        said.append(err)
    kept = sorted((paths.data_dir() / "unsaved results").iterdir())
    assert [p.name for p in kept] == ["r-20250101-120000 (1).jsonl", "r-20250101-120000.jsonl"]
    assert str(kept[1]) in said[0] and str(kept[0]) in said[1]
    assert [len(p.read_text(encoding="utf-8").splitlines()) for p in kept] == [3, 6]


def test_a_class_called_uncertain_keeps_its_own_folder(tmp_path: Path) -> None:
    import torch

    from tests.support import tiny_model
    from vit_desktop.core.models.model_file import save_model

    module, card = tiny_model(3, labels=("uncertain", "pear", "plum"))
    with torch.no_grad():  # every photo is the class "uncertain", sure of it
        module.heads.head.weight.zero_()
        module.heads.head.bias.copy_(torch.tensor([8.0, 0.0, 0.0]))
    model = save_model(tmp_path / "m.safetensors", module, card)
    photos = tmp_path / "photos"
    for i in range(3):
        write_image(photos / f"p{i}.png", seed=i)
    dest = tmp_path / "sorted"
    code, _, err = run_cli("classify", str(photos), "--model", str(model), "--sort-into", str(dest))
    assert code == 0, err
    assert "copied 3 photos into 1 class folder" in err
    # The same photos, not sure of anything: the uncertain ones go apart from the class's.
    code, _, err = run_cli("classify", str(photos), "--model", str(model), "--sort-into", str(dest),
                           "--threshold", "1")
    assert code == 0, err
    assert "(3 into uncertain/)" in err
    assert files_in(dest) == sorted([*(f"uncertain (class)/p{i}.png" for i in range(3)),
                                     *(f"uncertain/p{i}.png" for i in range(3))])
