"""The library store: rows valid while the file is unchanged, and every problem one line, never a crash."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import numpy as np
import pytest

from tests.support import kept, write_image
from vit_desktop.core.library.keys import FileStamp
from vit_desktop.core.library.store import Library
from vit_desktop.core.types import ClassifyResult, Prediction


def result(path: Path, seed: int = 0) -> ClassifyResult:
    rng = np.random.default_rng(seed)
    probs = rng.random(5).astype(np.float32)
    return ClassifyResult(path=str(path), predictions=(Prediction("a", 0, float(probs[0])),), image_size=(40, 30),
                          notes=("damaged metadata: x",), probabilities=probs / probs.sum(),
                          features=rng.random(8).astype(np.float32))


def stamp(path: Path) -> FileStamp:
    s = FileStamp.of(path)
    assert s is not None
    return s


def test_what_is_stored_comes_back_while_the_file_is_unchanged(tmp_path: Path) -> None:
    lib = Library.open(tmp_path)
    assert lib is not None
    photo = write_image(tmp_path / "p" / "a.png", size=(400, 300))
    r = result(photo)
    lib.save([(stamp(photo), r)], model="m1", backbone="b1")
    got = lib.lookup([stamp(photo)], model="m1", backbone="b1")[str(photo)]
    assert np.array_equal(kept(got.probabilities), kept(r.probabilities))
    assert np.array_equal(kept(got.features), kept(r.features))
    assert got.image_size == (40, 30) and got.notes == ("damaged metadata: x",)
    # Another head on the same backbone: no answer, but the features are there.
    other = lib.lookup([stamp(photo)], model="m2", backbone="b1")[str(photo)]
    assert other.probabilities is None and np.array_equal(kept(other.features), kept(r.features))
    # The same size and time, other bytes at the end (a tool that restores the time): not valid.
    st = photo.stat()
    data = bytearray(photo.read_bytes())
    data[-5] ^= 0xFF
    photo.write_bytes(bytes(data))
    os.utime(photo, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert photo.stat().st_size == st.st_size and photo.stat().st_mtime_ns == st.st_mtime_ns
    assert lib.lookup([stamp(photo)], model="m1", backbone="b1") == {}
    # Saved again for the new content: the old content's rows are gone with it.
    lib.save([(stamp(photo), result(photo, 1))], model="m3", backbone=None)
    assert str(photo) not in lib.lookup([stamp(photo)], model="m1", backbone="b9")
    stats = lib.stats()
    assert stats is not None and (stats.photos, stats.results, stats.features) == (1, 1, 0)
    lib.close()


def test_names_that_are_not_utf8_are_stored(tmp_path: Path) -> None:
    if os.name == "nt":
        pytest.skip("Windows file names are always Unicode")
    name = os.fsdecode(b"caf\xe9.png")
    photo = write_image(tmp_path / name)
    lib = Library.open(tmp_path / "data")
    assert lib is not None
    lib.save([(stamp(photo), result(photo))], model="m", backbone="b")
    assert str(photo) in lib.lookup([stamp(photo)], model="m", backbone="b")
    lib.set_session([str(photo)])
    assert lib.session() == [str(photo)]


def test_a_damaged_store_is_set_aside_and_a_new_one_started(tmp_path: Path) -> None:
    (tmp_path / "library.sqlite3").write_bytes(b"this is not a database" * 100)
    said: list[str] = []
    lib = Library.open(tmp_path, on_problem=said.append)
    assert lib is not None and lib.usable
    assert len(said) == 1 and "damaged" in said[0] and "starting a new one" in said[0]
    kept = [p for p in tmp_path.iterdir() if ".broken-" in p.name]
    assert len(kept) == 1 and kept[0].read_bytes().startswith(b"this is not a database")
    photo = write_image(tmp_path / "a.png")
    lib.save([(stamp(photo), result(photo))], model="m", backbone="b")
    assert str(photo) in lib.lookup([stamp(photo)], model="m", backbone="b")


def test_a_store_locked_past_the_timeout_is_left_for_this_run(tmp_path: Path) -> None:
    first = Library.open(tmp_path)
    assert first is not None
    photo = write_image(tmp_path / "a.png")
    other = sqlite3.connect(str(tmp_path / "library.sqlite3"), isolation_level=None)
    other.execute("BEGIN EXCLUSIVE")  # another process in the middle of a long write
    said: list[str] = []
    lib = Library.open(tmp_path, on_problem=said.append, timeout=0.2)
    assert lib is not None
    lib.save([(stamp(photo), result(photo))], model="m", backbone="b")
    assert len(said) == 1 and "locked" in said[0] and "goes on without it" in said[0]
    # Nothing more is tried, nor said, for the rest of the run.
    assert lib.lookup([stamp(photo)], model="m", backbone="b") == {} and len(said) == 1
    other.execute("ROLLBACK")
    other.close()
    assert not [p for p in tmp_path.iterdir() if ".broken-" in p.name]  # a lock is not damage


def _open_at(folder: str, barrier, answers) -> None:
    barrier.wait()
    said: list[str] = []
    lib = Library.open(Path(folder), on_problem=said.append)
    answers.put(said[0] if lib is None else "opened")
    if lib is not None:
        lib.close()


def test_processes_that_open_a_new_store_together_all_use_it(tmp_path: Path) -> None:
    """The window and a classify starting at once on a new library: none may be left without it."""
    import multiprocessing

    context = multiprocessing.get_context("fork")
    said = []
    for i in range(20):
        barrier, answers = context.Barrier(3), context.Queue()
        procs = [context.Process(target=_open_at, args=(str(tmp_path / str(i)), barrier, answers)) for _ in range(3)]
        for p in procs:
            p.start()
        for p in procs:
            p.join(60)
        said += [answers.get(timeout=10) for _ in procs]
    assert said == ["opened"] * 60, [s for s in said if s != "opened"][:3]


def test_a_folder_that_cannot_hold_the_store_is_one_line(tmp_path: Path) -> None:
    blocker = tmp_path / "data"
    blocker.write_text("a file where the data folder should be")
    said: list[str] = []
    assert Library.open(blocker, on_problem=said.append) is None
    assert len(said) == 1 and "goes on without it" in said[0]


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root ignores permissions")
def test_a_read_only_store_is_one_line(tmp_path: Path) -> None:
    lib = Library.open(tmp_path)
    assert lib is not None
    lib.close()
    for p in tmp_path.iterdir():
        p.chmod(0o444)
    tmp_path.chmod(0o555)
    try:
        said: list[str] = []
        lib = Library.open(tmp_path, on_problem=said.append)
        photo_stamp = FileStamp("/nowhere.png", 1, 1, b"x")
        if lib is not None:
            lib.save([(photo_stamp, result(Path("/nowhere.png")))], model="m", backbone="b")
        assert len(said) == 1 and "without it" in said[0]
    finally:
        tmp_path.chmod(0o755)


def test_hashes_are_kept_per_photo_and_algorithm_while_the_file_is_unchanged(tmp_path: Path) -> None:
    lib = Library.open(tmp_path)
    assert lib is not None
    a = write_image(tmp_path / "p" / "a.png", seed=1)
    b = write_image(tmp_path / "p" / "b.png", seed=2)
    lib.save_hashes("algo 1", [(stamp(a), b"\x01" * 16, (48, 40)), (stamp(b), b"\x02" * 16, None)])
    got = lib.hashes("algo 1", [stamp(a), stamp(b)])
    assert got[str(a)].data == b"\x01" * 16 and got[str(a)].image_size == (48, 40)
    assert got[str(b)].data == b"\x02" * 16 and got[str(b)].image_size is None
    assert lib.hashes("algo 2", [stamp(a)]) == {}  # another hash is never read as this one
    # A photo classified since keeps its hashes; a photo whose file changed loses them.
    lib.save([(stamp(a), result(a))], model="m", backbone="b")
    assert str(a) in lib.hashes("algo 1", [stamp(a)])
    write_image(b, seed=3)
    assert lib.hashes("algo 1", [stamp(b)]) == {}
    lib.save([(stamp(b), result(b))], model="m", backbone="b")
    conn = sqlite3.connect(str(tmp_path / "library.sqlite3"))
    assert conn.execute("SELECT count(*) FROM hashes").fetchone()[0] == 1  # b's old hashes went with its old content
    conn.close()
    lib.clear()
    assert lib.hashes("algo 1", [stamp(a)]) == {}
    lib.close()


def test_a_store_made_before_the_hashes_table_gets_it_and_keeps_the_rest(tmp_path: Path) -> None:
    lib = Library.open(tmp_path)
    assert lib is not None
    photo = write_image(tmp_path / "a.png")
    lib.save([(stamp(photo), result(photo))], model="m", backbone="b")
    lib.close()
    conn = sqlite3.connect(str(tmp_path / "library.sqlite3"), isolation_level=None)
    conn.execute("DROP TABLE hashes")  # as a store of the first version 1 was
    conn.close()
    said: list[str] = []
    lib = Library.open(tmp_path, on_problem=said.append)
    assert lib is not None and said == []
    assert not [p for p in tmp_path.iterdir() if ".broken-" in p.name]
    assert str(photo) in lib.lookup([stamp(photo)], model="m", backbone="b")  # nothing was lost
    lib.save_hashes("algo", [(stamp(photo), b"\x07" * 8, (48, 40))])
    assert lib.hashes("algo", [stamp(photo)])[str(photo)].data == b"\x07" * 8
    lib.close()
