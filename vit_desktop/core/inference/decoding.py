"""Photos decoded for the model ahead of the batches that read them, in a small pool of threads.

Pillow releases the GIL while it decodes and resizes, so decoding overlaps inference, and memory is
bounded by how far ahead it runs, not by the folder's size. Nothing here imports torch: a run whose
model is known from the library starts decoding while torch is imported and the model loaded, on
the core that the import leaves idle (``Decoding(..., while_loading=True)``).

Threads decode slowly then: the import holds the GIL for long stretches (loading torch's libraries
among them), and a thread that waits for it slows the import too. On Linux, a process with no
other thread decodes those first photos in a forked child into memory shared with it (:class:`_Child`):
on 2 cores torch's import took 1.26-1.34 s while the child decoded 306-310 photos, against
1.82-1.92 s and 234-286 photos with two decoding threads (and 1.24-1.34 s with none).
"""

from __future__ import annotations

import contextlib
import json
import math
import mmap
import os
import select
import signal
import sys
import threading
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from vit_desktop.core.errors import ImageError, first_line
from vit_desktop.core.models.preprocess import Prepared, prepare_file
from vit_desktop.core.types import Preprocess

#: Decoded photos at most held while the model loads (each is the model's uint8 input, about
#: 150 KB at 224 pixels): the photos the idle core decodes during torch's import, which takes
#: 1.2-2 s, at 3-5 ms a photo.
LOADING_BYTES = 64 << 20
#: The interpreter's thread switch interval while threads decode during a model's load (its
#: default is 5 ms). Importing torch holds the GIL for long stretches, and each photo needs it a
#: few times between Pillow's GIL-free steps: at 5 ms the decoders mostly wait (100 photos decoded
#: during the import, on 2 cores), at 0.2 ms they keep their core busy (200-300).
LOADING_SWITCH_S = 0.0002
#: A child that says nothing for this long is taken for stuck: ended, and the threads decode the
#: rest (one photo takes milliseconds; a 100-megapixel one about a second).
CHILD_SILENCE_S = 30.0


def decode_workers() -> int:
    """Threads that decode: one per core, at most four (more only wait for the disk and the GIL)."""
    return max(1, min(4, os.cpu_count() or 2))


class Decoding:
    """``paths`` decoded for a model with preprocessing ``pp``, at most ``ahead`` photos ahead of
    those taken; :meth:`take` hands them out in order. Close it (or use it as a context manager):
    that cancels what has not started, joins the pool and ends the child process, if any.

    ``while_loading``: started before the model is loaded, to use the core that loading leaves
    idle. The first ``ahead`` photos are decoded in a child process where that is safe (see the
    module's note), else by the threads, and :func:`loading` gives the threads the GIL more often.
    """

    def __init__(self, paths: Sequence[str | os.PathLike[str]], pp: Preprocess, *, keep_images: bool = False,
                 ahead: int, workers: int | None = None, while_loading: bool = False) -> None:
        self.paths = [Path(p) for p in paths]
        self.pp = pp
        self.keep_images = keep_images
        self.ahead = ahead
        #: Per photo not yet taken: its path, and its decoding (a thread's, or its index in the child's).
        self._pending: deque[tuple[Path, Future[Prepared] | int]] = deque()
        self._child: _Child | None = None
        if while_loading and not keep_images and _may_fork():
            # Before the pool has a thread: the child is a copy of this one-thread process.
            with contextlib.suppress(OSError):  # no fork (out of memory, process limit): threads only
                self._child = _Child(self.paths[:ahead], pp, LOADING_BYTES)
        self._pool = ThreadPoolExecutor(workers or decode_workers(), thread_name_prefix="vit-decode")
        if self._child is not None:
            self._pending.extend((path, i) for i, path in enumerate(self._child.paths))
        self._submitted = len(self._pending)
        self._taken = 0
        self._fill()

    def __enter__(self) -> Decoding:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    @property
    def in_child(self) -> bool:
        """Whether a child process decodes the first photos."""
        return self._child is not None

    @property
    def remaining(self) -> int:
        """Photos not yet taken."""
        return len(self.paths) - self._taken

    def _submit(self, path: Path) -> Future[Prepared]:
        return self._pool.submit(prepare_file, path, self.pp, keep_image=self.keep_images)

    def _fill(self) -> None:
        stop = min(len(self.paths), self._taken + self.ahead)
        while self._submitted < stop:
            p = self.paths[self._submitted]
            self._pending.append((p, self._submit(p)))
            self._submitted += 1

    def take(self, n: int) -> list[tuple[str, Prepared | str]]:
        """The next ``n`` photos (fewer at the end): each decoded, or the one-line reason it could
        not be; waits for them, and sets the ones ``ahead`` of them going first."""
        n = min(n, self.remaining)
        self._taken += n
        self._fill()
        batch = [self._pending.popleft() for _ in range(n)]
        out: list[tuple[str, Prepared | str]] = []
        for path, source in batch:
            if isinstance(source, int):
                got = self._child.take(source) if self._child is not None else None
                if got is not None:
                    out.append((str(path), got))
                    continue
                self._child_ended()  # before its share was done (killed): the threads decode the rest
                source = self._submit(path)
            out.append((str(path), _outcome(source)))
        return out

    def _child_ended(self) -> None:
        if self._child is not None:
            self._child.close()
            self._child = None
        self._pending = deque((p, self._submit(p) if isinstance(s, int) else s) for p, s in self._pending)

    def close(self) -> None:
        for _, f in self._pending:
            if not isinstance(f, int):
                f.cancel()
        self._pending.clear()
        self._pool.shutdown(wait=True, cancel_futures=True)
        if self._child is not None:
            self._child.close()
            self._child = None


@contextlib.contextmanager
def loading(decoding: Decoding) -> Iterator[None]:
    """Around loading a model while ``decoding`` runs: its threads get the GIL when they need it
    (see :data:`LOADING_SWITCH_S`; a child process needs no GIL); the interval is put back afterwards."""
    before = sys.getswitchinterval()
    if not decoding.in_child:
        sys.setswitchinterval(min(before, LOADING_SWITCH_S))
    try:
        yield
    finally:
        sys.setswitchinterval(before)


# The child process


def _may_fork() -> bool:
    """Whether a child may decode: on Linux, in a process with no other Python thread and before
    torch or Qt start threads of their own. A fork copies only the calling thread, so a lock that
    another one held (the import lock, a stream's) would stay held in the child for good. (numpy's
    OpenBLAS stops its threads itself before a fork.) The command line, until torch is imported,
    qualifies; the window and the tests do not."""
    return (sys.platform == "linux" and threading.active_count() == 1
            and not any(m in sys.modules for m in ("torch", "PySide6.QtCore")))


class _Child:
    """``paths`` decoded in a forked child process: each photo's pixels written into anonymous memory
    shared with it, and one JSON line per photo, in order, on a pipe (where its pixels are, or why it
    could not be decoded). Stops early when the memory (``limit`` bytes) is full."""

    def __init__(self, paths: Sequence[Path], pp: Preprocess, limit: int) -> None:
        self.paths = list(paths)
        self._memory = mmap.mmap(-1, limit)  # MAP_SHARED | MAP_ANONYMOUS: the child writes, this process reads
        parent = os.getpid()
        read, write = os.pipe()
        try:
            pid = os.fork()
        except OSError:
            os.close(read)
            os.close(write)
            self._memory.close()
            raise
        if pid == 0:  # the child: whatever happens, it ends here, running nothing of the parent's
            try:
                os.close(read)
                _child_main(self.paths, pp, self._memory, write, parent)
            finally:
                os._exit(0)
        os.close(write)
        self.pid = pid
        self._fd = read
        self._unread = b""
        self._ready: dict[int, Prepared | str] = {}
        self._read = 0
        self._ended = False

    def take(self, index: int) -> Prepared | str | None:
        """Photo ``index``: decoded, or the reason it could not be; None when the child ended before
        it (the memory was full, it was killed, or it said nothing for :data:`CHILD_SILENCE_S`).
        Waits for it."""
        while index >= self._read and not self._ended:
            line = self._line()
            if line is None:
                self._ended = True
                break
            self._ready[self._read] = self._parse(json.loads(line))
            self._read += 1
        return self._ready.pop(index, None)

    def _line(self) -> bytes | None:
        while b"\n" not in self._unread:
            ready, _, _ = select.select([self._fd], [], [], CHILD_SILENCE_S)
            chunk = os.read(self._fd, 1 << 16) if ready else b""
            if not chunk:
                return None
            self._unread += chunk
        line, self._unread = self._unread.split(b"\n", 1)
        return line

    def _parse(self, info: dict[str, Any]) -> Prepared | str:
        if "error" in info:
            return str(info["error"])
        shape = tuple(int(d) for d in info["shape"])
        view = np.frombuffer(self._memory, dtype=np.uint8, count=math.prod(shape), offset=int(info["at"]))
        pixels = view.reshape(shape).copy()  # the memory is unmapped when the run ends
        del view
        width, height = info["size"]
        return Prepared(pixels, (int(width), int(height)), tuple(str(n) for n in info["notes"]))

    def close(self) -> None:
        """End the child (finished or not) and free what was shared with it."""
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGKILL)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(self.pid, 0)
        os.close(self._fd)
        self._ready.clear()
        self._memory.close()


def _child_main(paths: Sequence[Path], pp: Preprocess, memory: mmap.mmap, fd: int, parent: int) -> None:
    """The child's work: decode ``paths`` in order into ``memory``, a line each on ``fd``."""
    # Ctrl-C reaches the whole process group: the child just ends (the parent reports it). And it
    # ends with its parent, should the parent be killed.
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    with contextlib.suppress(Exception):
        import ctypes

        ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    if os.getppid() != parent:
        return
    offset = 0
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        for path in paths:
            line: dict[str, Any]
            try:
                prepared = prepare_file(path, pp)
            except Exception as exc:  # noqa: BLE001 - reported for that photo, as a thread reports it
                line = {"error": _reason(exc)}
            else:
                pixels = np.ascontiguousarray(prepared.pixels, dtype=np.uint8)
                end = offset + pixels.nbytes
                if end > len(memory):
                    return  # the rest is decoded by the threads
                memory[offset:end] = pixels.tobytes()
                line = {"at": offset, "shape": list(pixels.shape), "size": list(prepared.size),
                        "notes": list(prepared.notes)}
                offset = end
            out.write(json.dumps(line) + "\n")
            out.flush()


def loading_ahead(pp: Preprocess) -> int:
    """How many photos to decode while the model loads, within :data:`LOADING_BYTES`."""
    return max(1, LOADING_BYTES // (3 * pp.crop_size * pp.crop_size))


def _outcome(future: Future[Prepared]) -> Prepared | str:
    """The prepared image, or the one-line reason it could not be prepared."""
    try:
        return future.result()
    except Exception as exc:  # noqa: BLE001 - a decoder bug must not end a folder run
        return _reason(exc)


def _reason(exc: Exception) -> str:
    """Why a photo could not be prepared, in one line."""
    if isinstance(exc, ImageError):
        return str(exc)
    return first_line(f"could not read image: {type(exc).__name__}: {exc}")


__all__ = ["LOADING_BYTES", "LOADING_SWITCH_S", "Decoding", "decode_workers", "loading", "loading_ahead"]
