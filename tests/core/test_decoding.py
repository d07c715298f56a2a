"""Photos decoded while a model loads, in a child process: the same inputs, errors and notes as the
threads give, whatever happens to the child."""

from __future__ import annotations

import json
import struct
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from tests.support import REPO, write_image

# Run in a fresh interpreter: a child process is forked only where no other thread runs (pytest's
# process has torch's). It decodes the photos twice, in a child while "loading" and in threads
# alone, and prints both as JSON, with what became of the child.
_SCRIPT = """
import hashlib, json, os, sys
from vit_desktop.core.inference import decoding
from vit_desktop.core.types import Preprocess

paths, ahead, limit, kill_after, hang_at = json.loads(sys.argv[1])
decoding.LOADING_BYTES = limit
decoding.CHILD_SILENCE_S = 1.0
pp = Preprocess(crop_size=32, resize_size=36)
parent = os.getpid()
prepare = decoding.prepare_file

def stalling(path, *args, **kw):  # a child stuck on one photo (this process decodes it as ever)
    if os.getpid() != parent and path.name == hang_at:
        import time
        time.sleep(60)
    return prepare(path, *args, **kw)

decoding.prepare_file = stalling

def outcome(prepared):
    if isinstance(prepared, str):
        return prepared
    return [hashlib.sha256(prepared.pixels.tobytes()).hexdigest(), list(prepared.pixels.shape),
            list(prepared.size), list(prepared.notes)]

with decoding.Decoding(paths, pp, ahead=ahead, while_loading=True) as d:
    in_child = d.in_child
    pid = d._child.pid if in_child else None
    forked = []
    while d.remaining:
        forked += [outcome(p) for _, p in d.take(2)]
        if kill_after is not None and len(forked) == kill_after and d._child is not None:
            os.kill(d._child.pid, 9)
try:
    os.waitpid(pid, os.WNOHANG)
    reaped = False
except (ChildProcessError, TypeError):
    reaped = True
with decoding.Decoding(paths, pp, ahead=ahead) as d:
    threads = [outcome(p) for _, p in d.take(len(paths))]
print(json.dumps({"in_child": in_child, "reaped": reaped, "forked": forked, "threads": threads,
                  "torch": "torch" in sys.modules}))
"""


def _photos(folder: Path) -> list[Path]:
    """Good photos of several modes and sizes, one whose EXIF is damaged (a note), one that is not a
    photo and one cut short (errors)."""
    photos = [write_image(folder / f"{i}.png", size=(48 + 7 * i, 40), seed=i) for i in range(6)]
    photos.insert(2, write_image(folder / "grey.png", mode="L"))
    ifd = struct.pack("<H", 1) + struct.pack("<HHII", 0x010E, 2, 5000, 9999) + struct.pack("<I", 0)
    Image.new("RGB", (40, 30), (200, 10, 10)).save(folder / "odd.jpg", exif=b"Exif\x00\x00II*\x00"
                                                   + struct.pack("<I", 8) + ifd)
    photos.insert(4, folder / "odd.jpg")
    (folder / "text.jpg").write_bytes(b"not a photo\n")
    photos.insert(1, folder / "text.jpg")
    whole = write_image(folder / "whole.jpg", size=(200, 150)).read_bytes()
    (folder / "cut.jpg").write_bytes(whole[: len(whole) // 2])
    photos.append(folder / "cut.jpg")
    return photos


def _decode(paths: list[Path], *, ahead: int, limit: int = 64 << 20, kill_after: int | None = None,
            hang_at: str | None = None) -> dict:
    args = json.dumps([[str(p) for p in paths], ahead, limit, kill_after, hang_at])
    done = subprocess.run([sys.executable, "-c", _SCRIPT, args], capture_output=True, text=True, cwd=REPO,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    out: dict = json.loads(done.stdout)
    return out


@pytest.mark.skipif(sys.platform != "linux", reason="a child decodes on Linux only")
def test_a_child_decodes_what_the_threads_decode_and_is_ended(tmp_path: Path) -> None:
    paths = _photos(tmp_path)
    got = _decode(paths, ahead=len(paths))
    assert got["in_child"] and got["reaped"] and not got["torch"]
    assert got["forked"] == got["threads"]
    errors = [o for o in got["forked"] if isinstance(o, str)]
    assert len(errors) == 2 and "not an image" in errors[0] and "truncated" in errors[1]
    notes = [o[3] for o in got["forked"] if not isinstance(o, str) and o[3]]
    assert len(notes) == 1 and "damaged metadata" in notes[0][0]
    assert [o[1] for o in got["forked"] if not isinstance(o, str)] == [[32, 32, 3]] * 8


@pytest.mark.skipif(sys.platform != "linux", reason="a child decodes on Linux only")
def test_photos_past_the_childs_share_memory_or_life_are_decoded_by_the_threads(tmp_path: Path) -> None:
    paths = _photos(tmp_path)
    # The child's share is the first 4 photos; the memory holds 3 model inputs of 32 x 32 x 3.
    short = _decode(paths, ahead=4, limit=3 * 32 * 32 * 3)
    assert short["in_child"] and short["forked"] == short["threads"]
    # Killed after handing out 2 photos: the photos it had not handed out are decoded by threads.
    killed = _decode(paths, ahead=len(paths), kill_after=2)
    assert killed["in_child"] and killed["reaped"] and killed["forked"] == killed["threads"]
    # Stuck on the fourth photo: after a second of silence, it is ended and the threads take over.
    stuck = _decode(paths, ahead=len(paths), hang_at=paths[3].name)
    assert stuck["in_child"] and stuck["reaped"] and stuck["forked"] == stuck["threads"]


def test_a_process_with_threads_decodes_in_threads(tmp_path: Path) -> None:
    """Forking copies only the calling thread: where others run (torch's, here), no child is made."""
    import torch  # noqa: F401 - the point: a process with torch's threads

    from vit_desktop.core.inference.decoding import Decoding
    from vit_desktop.core.types import Preprocess

    photo = write_image(tmp_path / "a.png")
    with Decoding([photo], Preprocess(crop_size=32, resize_size=36), ahead=4, while_loading=True) as d:
        assert not d.in_child
        ((_, prepared),) = d.take(1)
    assert not isinstance(prepared, str) and prepared.pixels.shape == (32, 32, 3)
