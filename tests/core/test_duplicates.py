"""Duplicates: copies of one picture are grouped, best copy first; other shots and other photos are not.

Photos are generated with structure (tests.support.scene); features are made up here, so that each
test says what the features claim and the rule's answer can be checked against it.
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from tests.support import edited_copies, scene
from vit_desktop.core.errors import Cancelled, CancelToken
from vit_desktop.core.io.image_hash import photo_hashes
from vit_desktop.core.library.duplicate_files import format_groups, to_csv, to_json, write_groups
from vit_desktop.core.library.duplicates import (
    CROPPED,
    EDITED,
    IDENTICAL,
    SAME_PICTURE,
    DuplicateGroup,
    DuplicateRule,
    duplicate_groups,
    duplicate_pairs,
    duplicates_of,
)
from vit_desktop.core.library.prints import PhotoPrints

KINDS = ("reencode", "resize50", "resize25", "thumb160", "crop", "bright+15", "bright-15")


def prints_of(paths: list[Path], features: dict[str, np.ndarray] | None = None,
              digests: dict[str, bytes] | None = None) -> PhotoPrints:
    """Prints of ``paths`` as the library would have them, with the features given by file name."""
    hashes, shapes = [], []
    for p in paths:
        codes, size = photo_hashes(p)
        hashes.append(codes)
        shapes.append(size)
    feats = None
    if features is not None:
        feats = np.stack([features.get(p.name, np.zeros(8, np.float32)) for p in paths])
    return PhotoPrints.of([str(p) for p in paths], hashes=np.stack(hashes), features=feats, shapes=shapes,
                          sizes=[p.stat().st_size for p in paths], mtimes=[p.stat().st_mtime_ns for p in paths],
                          digests=[(digests or {}).get(p.name) for p in paths])


def vector(seed: int, near: np.ndarray | None = None, cosine: float = 0.95) -> np.ndarray:
    """A feature vector: random, or at about ``cosine`` from ``near``."""
    rng = np.random.default_rng(seed)
    v = rng.standard_normal(8).astype(np.float32)
    v /= np.linalg.norm(v)
    if near is None:
        return v
    v -= (v @ near) * near
    v /= np.linalg.norm(v)
    return (cosine * near + np.sqrt(1 - cosine**2) * v).astype(np.float32)


@pytest.fixture
def album(tmp_path: Path) -> tuple[Path, dict[str, Path], list[Path]]:
    """An original (old), its edited copies, and three other photos."""
    original = scene((640, 480), seed=11)
    folder = tmp_path / "album"
    folder.mkdir()
    path = folder / "original.jpg"
    original.save(path, quality=95)
    os.utime(path, ns=(1_000_000_000_000_000_000, 1_000_000_000_000_000_000))  # taken long ago
    copies = edited_copies(original, folder, seed=11)
    others = []
    for seed in (21, 22, 23):
        others.append(folder / f"other{seed}.jpg")
        scene((400, 300), seed=seed).save(others[-1], quality=90)
    return path, copies, others


@pytest.mark.parametrize("kind", KINDS)
def test_each_kind_of_copy_is_grouped_with_its_original(album, kind: str) -> None:
    original, copies, others = album
    base = vector(0)
    features = {original.name: base, copies[kind].name: vector(1, base, 0.9)}
    features.update({p.name: vector(10 + i) for i, p in enumerate(others)})
    prints = prints_of([original, copies[kind], *others], features)
    groups = duplicate_groups(prints)
    assert groups == [DuplicateGroup((str(original), str(copies[kind])), EDITED, groups[0].score)]
    assert 0.75 <= groups[0].score <= 1.0
    how = {m.how for m in duplicate_pairs(prints)}
    assert how == ({CROPPED} if kind == "crop" else {SAME_PICTURE})


def test_all_copies_make_one_group_led_by_the_original(album) -> None:
    original, copies, others = album
    base = vector(0)
    features = {p.name: vector(i, base, 0.9) for i, p in enumerate(copies.values(), 1)}
    features[original.name] = base
    paths = [*copies.values(), *others, original]
    groups = duplicate_groups(prints_of(paths, features))
    assert len(groups) == 1
    # The most pixels first, and of those (the original, its re-encode, its brightness edits) the oldest.
    assert groups[0].paths[0] == str(original)
    assert set(groups[0].paths) == {str(original), *map(str, copies.values())}
    assert set(groups[0].paths[-2:]) == {str(copies["resize25"]), str(copies["thumb160"])}  # 160x120: the fewest pixels


def test_a_light_crop_needs_the_features_to_agree(album) -> None:
    original, copies, others = album
    crop = copies["crop"]
    base = vector(0)
    # Features that disagree (another subject, for all they say): not one picture.
    prints = prints_of([original, crop], {original.name: base, crop.name: vector(5, base, 0.2)})
    assert duplicate_groups(prints) == []
    # No features at all: light crops are not looked for.
    assert duplicate_groups(prints_of([original, crop])) == []


def test_shots_of_a_burst_are_not_duplicates_even_where_the_features_agree(tmp_path: Path) -> None:
    # Two shots of one scene, the camera moved a fifth of the frame: similar, not the same picture.
    hidden = scene((800, 600), seed=12)
    first, second = tmp_path / "shot1.jpg", tmp_path / "shot2.jpg"
    hidden.crop((0, 30, 640, 570)).save(first, quality=90)
    hidden.crop((160, 30, 800, 570)).save(second, quality=90)
    same = vector(0)
    features = {first.name: same, second.name: same}
    assert duplicate_groups(prints_of([first, second], features)) == []
    # Frames of one size that differ by a shift are never taken for a crop, however loose the limit ...
    assert duplicate_groups(prints_of([first, second], features), DuplicateRule(crop_bits=30)) == []
    # ... and a smaller copy of the second shot is kept apart by the limit on the windows' bits.
    small = tmp_path / "shot2 small.jpg"
    hidden.crop((160, 30, 800, 570)).resize((480, 405)).save(small, quality=90)
    features[small.name] = same
    assert duplicate_groups(prints_of([first, small], features)) == []
    assert duplicate_groups(prints_of([first, small], features), DuplicateRule(crop_bits=30)) != []


def test_byte_for_byte_copies_are_identical_and_the_oldest_comes_first(tmp_path: Path) -> None:
    src = tmp_path / "a.jpg"
    scene(seed=13).save(src, quality=90)
    copy = tmp_path / "b.jpg"
    shutil.copyfile(src, copy)
    os.utime(src, ns=(2_000_000_000_000_000_000, 2_000_000_000_000_000_000))  # a is the newer one
    os.utime(copy, ns=(1_000_000_000_000_000_000, 1_000_000_000_000_000_000))
    other = tmp_path / "c.jpg"
    scene(seed=14).save(other)
    digest = b"same bytes"
    groups = duplicate_groups(prints_of([src, copy, other], digests={"a.jpg": digest, "b.jpg": digest}))
    assert groups == [DuplicateGroup((str(copy), str(src)), IDENTICAL, 1.0)]


def test_duplicates_of_one_photo(album) -> None:
    original, copies, others = album
    base = vector(0)
    features = {p.name: vector(i, base, 0.9) for i, p in enumerate(copies.values(), 1)}
    features[original.name] = base
    prints = prints_of([original, *copies.values(), *others], features)
    found = duplicates_of(prints, str(copies["thumb160"]))
    assert {d.path for d in found} >= {str(original), str(copies["resize50"])}
    assert str(copies["thumb160"]) not in {d.path for d in found}
    assert not {str(p) for p in others} & {d.path for d in found}
    assert [d.score for d in found] == sorted((d.score for d in found), reverse=True)
    assert duplicates_of(prints, str(others[0])) == []


def test_progress_is_reported_and_cancel_stops_between_blocks(album, monkeypatch: pytest.MonkeyPatch) -> None:
    from vit_desktop.core.library import duplicates

    monkeypatch.setattr(duplicates, "_BLOCK_ENTRIES", 20)  # a few rows per block
    original, copies, others = album
    prints = prints_of([original, *copies.values(), *others])
    seen: list[tuple[int, int]] = []
    duplicate_pairs(prints, progress=lambda done, total: seen.append((done, total)))
    assert len(seen) > 2 and seen[-1] == (len(prints), len(prints))
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)
    token = CancelToken()
    token.cancel()
    with pytest.raises(Cancelled):
        duplicate_groups(prints, cancel=token)


def test_the_search_in_blocks_finds_what_one_block_finds(album, monkeypatch: pytest.MonkeyPatch) -> None:
    from vit_desktop.core.library import duplicates

    original, copies, others = album
    base = vector(0)
    features = {p.name: vector(i, base, 0.9) for i, p in enumerate(copies.values(), 1)}
    features[original.name] = base
    prints = prints_of([original, *copies.values(), *others], features)
    whole = duplicate_pairs(prints)
    monkeypatch.setattr(duplicates, "_BLOCK_ENTRIES", 1)
    assert duplicate_pairs(prints) == whole


GROUPS = [
    DuplicateGroup(("/photos/a.jpg", "/photos/=a copy.jpg"), IDENTICAL, 1.0),
    DuplicateGroup(("/photos/caf\udce9.jpg", "/photos/café small.jpg", "/photos/b.jpg"), EDITED, 0.8125),
]


def test_json_lists_groups_with_paths_kind_and_score() -> None:
    text = to_json(GROUPS)
    raw = text.encode("utf-8")  # valid UTF-8, a name that is not UTF-8 included
    got = json.loads(raw.decode("utf-8"))
    assert got == [{"paths": list(g.paths), "kind": g.kind, "score": g.score} for g in GROUPS]
    assert "café small" in text  # readable, not escaped
    assert os.fsencode(got[1]["paths"][0]) == b"/photos/caf\xe9.jpg"


def test_csv_has_a_row_per_photo_and_neutralised_cells() -> None:
    rows = list(csv.reader(io.StringIO(to_csv(GROUPS))))
    assert rows[0] == ["group", "kind", "score", "path"]
    assert rows[1:3] == [["1", "identical", "1.000000", "/photos/a.jpg"],
                         ["1", "identical", "1.000000", "/photos/=a copy.jpg"]]
    assert [r[0] for r in rows[3:]] == ["2", "2", "2"] and rows[3][3] == "/photos/caf\\xe9.jpg"
    cells = list(csv.reader(io.StringIO(to_csv([DuplicateGroup(("=1+2", "@x"), EDITED, 0.9)]))))
    assert [r[3] for r in cells[1:]] == ["'=1+2", "'@x"]


def test_the_listing_names_each_group_and_its_best_copy() -> None:
    text = format_groups(GROUPS, lambda path: "640x480" if path.endswith("a.jpg") else "")
    lines = text.splitlines()
    assert lines[0] == "group 1: 2 identical files (score 1.000)"
    assert lines[1].split() == ["best", "/photos/a.jpg", "640x480"]
    assert lines[3].startswith("group 2: 3 copies of one picture (score 0.812)")
    assert "caf\\xe9.jpg" in lines[4]


def test_an_existing_file_is_not_replaced_without_overwrite(tmp_path: Path) -> None:
    out = tmp_path / "groups.json"
    out.write_text("keep me")
    with pytest.raises(FileExistsError):
        write_groups(GROUPS, out)
    assert out.read_text() == "keep me"
    write_groups(GROUPS, out, overwrite=True)
    assert json.loads(out.read_text(encoding="utf-8"))[0]["kind"] == "identical"
    with pytest.raises(ValueError):
        write_groups(GROUPS, tmp_path / "groups.txt")
